"""The model zoo's names, without Keras: `tfmi.models.MODEL_BUILDERS` builds them, in this order, and
the CLI lists them in its help without importing TensorFlow.

>>> "mlp3" in MODEL_NAMES
True
"""

MODEL_NAMES: tuple[str, ...] = ("mlp", "mlp3", "cnn", "alexnet", "resnet20")
