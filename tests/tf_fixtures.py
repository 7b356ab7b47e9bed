"""A fixture that runs tf.functions eagerly, for tests that would otherwise trace ResNet50's training step.

Tracing that step costs about 20 s on a 2-core CPU, and eager steps of a few
tiny batches take about a second each.
"""

import pytest


@pytest.fixture
def tf_functions_eager():
    """Run tf.functions eagerly during the test, and as graphs again afterwards.

    What a seeded run draws does not change. Keras draws the initial weights
    when the model is built and shuffles with tf.data, both outside the
    training step, and the step contains no random op (ResNet50 has no
    dropout). tf.data keeps running its own functions as graphs, and warns
    that it does.
    """
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)
