"""Placeholder for the train_resnet_tf workload; replaced by its implementation."""


def add_arguments(parser):
    pass


def run(args, record):
    raise NotImplementedError("train_resnet_tf is not written yet")
