"""The few places where Keras 2 (the reference stack: TensorFlow 2.15, ``tf.keras`` 2.15) and Keras 3
(the current stack: TensorFlow >= 2.16 with the ``keras`` 3 package, TensorFlow backend) differ.

Everything else in tfmi is one code path written against ``import keras``, which is the same module on
both stacks. Each helper here names what differs, so a defense's ``train_step`` reads the same on both:

>>> import keras
>>> KERAS_3 == (int(keras.__version__.split(".")[0]) >= 3)
True
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

KERAS_VERSION: str = keras.__version__
#: True on the current stack (Keras 3), False on the reference stack (Keras 2, tf.keras 2.15)
KERAS_3: bool = int(KERAS_VERSION.split(".")[0]) >= 3


def only_first_replica() -> Any:
    """The ``aggregation=`` of a non-trainable bookkeeping weight that every replica holds the same value
    of (Keras 3 takes a string, Keras 2 a ``tf.VariableAggregation``)."""
    return "only_first_replica" if KERAS_3 else tf.VariableAggregation.ONLY_FIRST_REPLICA


def own_loss_tracker(model: keras.Model) -> None:
    """After ``compile``: drop the ``loss`` tracker Keras 3 adds, so that a model that logs its own
    ``loss`` (a `keras.metrics.Mean` named "loss") has it once in ``model.metrics`` and in the logs.
    Keras 2 adds no tracker when ``compile`` gets no loss."""
    if KERAS_3:
        model._loss_tracker = None


def update_compiled_metrics(model: keras.Model, y_true: tf.Tensor, y_pred: tf.Tensor,
                            sample_weight: tf.Tensor | None = None) -> None:
    """Update the metrics given to ``compile(metrics=...)``, and only those (no loss)."""
    if KERAS_3:
        if model._compile_metrics is not None:
            model._compile_metrics.update_state(y_true, y_pred, sample_weight)
    else:
        model.compiled_metrics.update_state(y_true, y_pred, sample_weight)


def metric_results(model: keras.Model, metrics: list | None = None) -> dict[str, tf.Tensor]:
    """``{name: value}`` of ``metrics`` (default: all of ``model.metrics``), with the compiled metrics
    spread out under their own names (Keras 3 groups them in one container): a ``train_step``'s logs."""
    results: dict[str, tf.Tensor] = {}
    for metric in model.metrics if metrics is None else metrics:
        value = metric.result()
        if isinstance(value, dict):
            results.update(value)
        else:
            results[metric.name] = value
    return results


def compiled_metrics(model: keras.Model) -> list:
    """The metric objects given to ``compile(metrics=...)``, for a result dict of one's own choosing."""
    if KERAS_3:
        return [] if model._compile_metrics is None else [model._compile_metrics]
    return list(model.compiled_metrics.metrics) if model.compiled_metrics is not None else []


def is_optimizer(value: Any) -> bool:
    """Whether ``value`` is a Keras optimizer instance (either Keras 2 family on the reference stack)."""
    if KERAS_3:
        return isinstance(value, keras.optimizers.Optimizer)
    return isinstance(value, keras.optimizers.Optimizer | keras.optimizers.legacy.Optimizer)


def is_functional(model: keras.Model) -> bool:
    """Whether ``model`` is a graph of layers (``keras.Model(inputs, outputs)`` or ``Sequential``), not a
    subclassed model whose ``call`` is arbitrary code."""
    if KERAS_3:
        from keras.src.models.functional import Functional

        return isinstance(model, Functional | keras.Sequential)
    return bool(getattr(model, "_is_graph_network", False))


def load_hdf5_model(handle: Any, safe_mode: bool = True) -> keras.Model:
    """A model from an open ``h5py.File`` (the legacy ``.h5`` format), without compiling it. Keras 3's
    public ``load_model`` only takes a path ending in ``.h5``; its legacy loader takes the handle."""
    if KERAS_3:
        from keras.src.legacy.saving import legacy_h5_format

        return legacy_h5_format.load_model_from_hdf5(handle, compile=False, safe_mode=safe_mode)
    return keras.models.load_model(handle, compile=False)


def keras_major_of_zip(metadata: dict) -> int | None:
    """The Keras major version that wrote a ``.keras`` file, from its ``metadata.json`` (None if absent)."""
    version = str(metadata.get("keras_version", ""))
    head = version.split(".")[0]
    return int(head) if head.isdigit() else None


def other_stack_hint(file_major: int) -> str:
    """What to run instead, for a file written by Keras ``file_major`` that this stack cannot read."""
    if file_major >= 3:
        return ("it was saved by Keras 3: audit it on tfmi's current stack (Python 3.12/3.13, TensorFlow "
                ">= 2.16; see the README's support table)")
    return ("it was saved by Keras 2: audit it on tfmi's reference stack (Python 3.11, TensorFlow 2.15; "
            "`make`), or export it as a SavedModel, which both stacks read")


def rank(shape: Any) -> int | None:
    """The number of dimensions of a Keras tensor's shape: a ``tf.TensorShape`` under Keras 2 (None when
    unknown), a tuple under Keras 3."""
    if isinstance(shape, tuple | list):
        return len(shape)
    return shape.rank
