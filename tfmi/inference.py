"""Running a trained classifier: outputs in batches, accuracy, and export as a SavedModel for serving.

Sits at the models layer: the defenses, training, attacks and artifact writing all use it, and it
imports nothing of theirs. TensorFlow is imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

PREDICT_BATCH_SIZE = 1024


def predict_in_batches(model, x: np.ndarray | tf.Tensor, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Outputs of ``model`` on ``x`` (an array, tensor or variable), batch by batch in inference mode.

    ``model`` is anything callable on a batch: a Keras model or a SavedModel's serving function.

    >>> predict_in_batches(lambda b: b * 2, np.arange(5.0)[:, None], batch_size=2).ravel().tolist()
    [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    import keras
    import tensorflow as tf

    chunks = []
    for start in range(0, int(x.shape[0]), batch_size):
        batch = tf.convert_to_tensor(x[start:start + batch_size])
        out = model(batch, training=False) if isinstance(model, keras.Model) else model(batch)
        if isinstance(out, dict):  # SavedModel signatures return {name: tensor}
            out = next(iter(out.values()))
        chunks.append(np.asarray(out))
    return np.concatenate(chunks)


def accuracy(model, x: np.ndarray | tf.Tensor, y: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> float:
    """Fraction of ``x`` whose arg-max output equals ``y`` (works on logits or probabilities).

    ``model`` is anything callable on a batch: a Keras model or a SavedModel's serving function.
    """
    outputs = predict_in_batches(model, x, batch_size)
    return float(np.mean(np.argmax(outputs, axis=1) == y))


def export_saved_model(model: keras.Model, path: str | os.PathLike) -> None:
    """Export a Keras model as an inference SavedModel (signature ``serving_default``), silently."""
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the endpoint listing
        model.export(str(path))
