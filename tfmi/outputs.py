"""Logits or probabilities: telling which a classifier outputs, and converting stably."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfmi.errors import TfmiError

OUTPUT_KINDS = ("logits", "probabilities")
_PROBABILITY_TOLERANCE = 1e-3


def last_activation(model: keras.Model) -> str | None:
    """Name of the activation applied by the model's last layer, if it declares one."""
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def looks_like_probabilities(outputs: np.ndarray) -> bool:
    """True if every row is non-negative and sums to 1 (within float tolerance)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    return bool(
        np.all(outputs >= -1e-6)
        and np.allclose(outputs.sum(axis=1), 1.0, atol=_PROBABILITY_TOLERANCE)
    )


def resolve_output_kind(
    model: keras.Model, sample_x: np.ndarray, num_classes: int, declared: str = "auto"
) -> str:
    """Check ``model`` maps a batch to one score per class and say whether they are logits.

    ``declared`` is ``"auto"``, ``"logits"`` or ``"probabilities"``; ``"auto"`` reads the last
    layer's activation (linear: logits, softmax: probabilities) and otherwise the outputs themselves.

    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    >>> resolve_output_kind(m, np.zeros((4, 3), np.float32), num_classes=2)
    'probabilities'
    """
    if declared not in ("auto", *OUTPUT_KINDS):
        raise TfmiError(f"outputs must be 'auto', 'logits' or 'probabilities', got {declared!r}")
    outputs = np.asarray(model(tf.constant(sample_x), training=False))
    if outputs.ndim != 2 or outputs.shape[1] != num_classes:
        raise TfmiError(
            f"the model outputs shape {outputs.shape} for a batch of {len(sample_x)}; a classifier "
            f"over {num_classes} classes must output (batch, {num_classes}) logits or probabilities"
        )
    if not np.all(np.isfinite(outputs)):
        raise TfmiError("the model outputs NaN or infinity on the reference data: check its weights")
    is_distribution = looks_like_probabilities(outputs)
    if declared == "probabilities" and not is_distribution:
        raise TfmiError(
            "outputs='probabilities' but the model's output rows do not sum to 1 "
            "(they look like logits: pass outputs='logits')"
        )
    if declared != "auto":
        return declared
    activation = last_activation(model)
    if activation == "softmax":
        return "probabilities"
    if activation in (None, "linear"):
        return "logits"
    raise TfmiError(
        f"the model's last layer applies {activation!r}, so its outputs are not a class distribution: "
        "end it in a linear layer (logits) or a softmax"
    )


def log_probabilities(outputs: tf.Tensor, kind: str) -> tf.Tensor:
    """Log class probabilities, computed stably from either kind of output."""
    if kind == "logits":
        return tf.nn.log_softmax(outputs, axis=-1)
    return tf.math.log(tf.clip_by_value(outputs, 1e-12, 1.0))


def probabilities(outputs: tf.Tensor, kind: str) -> tf.Tensor:
    """Class probabilities from either kind of output."""
    return tf.nn.softmax(outputs, axis=-1) if kind == "logits" else outputs
