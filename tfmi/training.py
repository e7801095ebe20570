"""Train a target model on its members: the one training entry point the CLI and benchmarks share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import tensorflow as tf

from tfmi.data.dataset import Dataset
from tfmi.data.splits import MembershipSplit
from tfmi.errors import TfmiError
from tfmi.models import build_model

PREDICT_BATCH_SIZE = 1024


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one target-training run (recorded in the model's sidecar)."""

    model: str
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    dropout: float = 0.0
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TfmiError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        if not (self.learning_rate > 0 and np.isfinite(self.learning_rate)):
            raise TfmiError(f"learning rate must be a positive number, got {self.learning_rate}")
        if self.optimizer not in ("adam", "sgd"):
            raise TfmiError(f"unknown optimizer {self.optimizer!r}: use adam or sgd")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainedTarget:
    """A trained target model with its accuracy on members (train) and non-members (test)."""

    model: tf.keras.Model
    config: TrainConfig
    train_accuracy: float
    test_accuracy: float
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def generalization_gap(self) -> float:
        return self.train_accuracy - self.test_accuracy


def accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> float:
    """Fraction of ``x`` whose arg-max output equals ``y`` (works on logits or probabilities).

    ``model`` is anything callable on a batch: a Keras model or a SavedModel's serving function.
    """
    outputs = predict_in_batches(model, x, batch_size)
    return float(np.mean(np.argmax(outputs, axis=1) == y))


def predict_in_batches(model, x: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Outputs of ``model`` on ``x``, computed batch by batch in inference mode."""
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = tf.constant(x[start:start + batch_size])
        out = model(batch, training=False) if isinstance(model, tf.keras.Model) else model(batch)
        if isinstance(out, dict):  # SavedModel signatures return {name: tensor}
            out = next(iter(out.values()))
        chunks.append(np.asarray(out))
    return np.concatenate(chunks)


def _optimizer(config: TrainConfig) -> tf.keras.optimizers.Optimizer:
    if config.optimizer == "sgd":
        return tf.keras.optimizers.SGD(config.learning_rate, momentum=0.9)
    return tf.keras.optimizers.Adam(config.learning_rate)


def train_target(
    data: Dataset,
    split: MembershipSplit,
    config: TrainConfig,
    *,
    verbose: int | str = "auto",
    callbacks: list[tf.keras.callbacks.Callback] | None = None,
) -> TrainedTarget:
    """Train ``config.model`` on the split's members; report accuracy on members and non-members.

    Seeds Python, NumPy and TensorFlow with ``config.seed``. The non-members serve as Keras
    validation data, so the progress bar shows the generalization gap opening epoch by epoch.

    >>> from tfmi.data import load_dataset, membership_split
    >>> data = load_dataset("digits")
    >>> split = membership_split(data.y, target_size=200, seed=0)
    >>> trained = train_target(data, split, TrainConfig("cnn", epochs=2), verbose=0)
    >>> 0.0 <= trained.test_accuracy <= 1.0
    True
    """
    if len(split.members) == 0 or len(split.non_members) == 0:
        raise TfmiError("the split has no members or no non-members: increase the target size")
    if max(split.members.max(), split.non_members.max()) >= len(data):
        raise TfmiError(
            f"the split indexes records beyond the dataset's {len(data)}: it was drawn for other data"
        )
    x_train, y_train = data.x[split.members], data.y[split.members]
    x_test, y_test = data.x[split.non_members], data.y[split.non_members]
    model = build_model(
        config.model, data.input_shape, data.num_classes, dropout=config.dropout, seed=config.seed
    )
    model.compile(
        optimizer=_optimizer(config),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train, y_train,
        validation_data=(x_test, y_test),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=verbose,
        callbacks=callbacks,
    )
    return TrainedTarget(
        model=model,
        config=config,
        train_accuracy=accuracy(model, x_train, y_train),
        test_accuracy=accuracy(model, x_test, y_test),
        history={k: [float(v) for v in values] for k, values in history.history.items()},
    )
