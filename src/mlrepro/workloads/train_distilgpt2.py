"""Placeholder for the train_distilgpt2 workload; replaced by its implementation."""


def add_arguments(parser):
    pass


def run(args, record):
    raise NotImplementedError("train_distilgpt2 is not written yet")
