"""mlrepro: TensorFlow and PyTorch demo workloads, run reproducibly from locked environments."""

__version__ = "0.1.0"
