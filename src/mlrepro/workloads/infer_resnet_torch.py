"""Placeholder for the infer_resnet_torch workload; replaced by its implementation."""


def add_arguments(parser):
    pass


def run(args, record):
    raise NotImplementedError("infer_resnet_torch is not written yet")
