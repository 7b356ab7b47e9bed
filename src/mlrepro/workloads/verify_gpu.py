"""Placeholder for the verify_gpu workload; replaced by its implementation."""


def add_arguments(parser):
    pass


def run(args, record):
    raise NotImplementedError("verify_gpu is not written yet")
