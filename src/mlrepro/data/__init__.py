"""Dataset loaders: CIFAR-100 in its python format, and text for causal language modelling."""
