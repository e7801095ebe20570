"""`DefendedModel`: the base of every defense that changes how a Keras classifier is trained.

A defended model wraps the user's classifier (the *inner* model). ``predict``, ``evaluate`` and
calling it behave as the inner model does; ``fit`` runs the defense's own ``train_step``;
``export`` writes the plain inner network as a SavedModel for serving. The loss is owned by the
defense (cross-entropy on integer labels), so ``compile`` takes an optimizer and metrics only.
"""

from __future__ import annotations

import copy
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmi import compat
from tfmi.data.dataset import check_features, check_labels
from tfmi.errors import TfmiError
from tfmi.inference import export_saved_model
from tfmi.outputs import log_probabilities, probabilities, resolve_output_kind
from tfmi.validation import check_number


def classifier_shape(model: keras.Model) -> tuple[tuple[int, ...], int]:
    """``(input shape, class count)`` of a Keras classifier; raises unless it outputs (batch, classes)."""
    if not isinstance(model, keras.Model):
        raise TfmiError(f"expected a Keras model to defend, got {type(model).__name__}")
    if model.outputs is not None and len(model.outputs) != 1:
        raise TfmiError("the model must have a single output (class logits or probabilities)")
    output_shape = tuple(model.output_shape)
    if len(output_shape) != 2:
        raise TfmiError(
            f"the model outputs shape {output_shape}: a classifier must output (batch, classes) "
            "logits or probabilities"
        )
    if output_shape[1] is None or output_shape[1] < 2:
        raise TfmiError(f"the model outputs {output_shape[1]} value(s) per example: need >= 2 classes")
    return tuple(model.input_shape[1:]), int(output_shape[1])


def check_reference(
    reference_data, input_shape: tuple, num_classes: int, needs: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(x_ref, y_ref)`` against a model's input shape and class count; return arrays.

    Every class must have reference records; ``needs`` says why, in the error.
    """
    try:
        ref_x, ref_y = reference_data
    except (TypeError, ValueError):
        raise TfmiError("reference_data must be a pair (x_ref, y_ref) of arrays") from None
    ref_x = check_features(ref_x, "reference features")
    ref_y = check_labels(ref_y, None, "reference labels")
    if len(ref_x) != len(ref_y):
        raise TfmiError(f"reference features have {len(ref_x)} rows but reference labels {len(ref_y)}")
    if tuple(ref_x.shape[1:]) != tuple(input_shape):
        raise TfmiError(
            f"reference features have shape {tuple(ref_x.shape[1:])} per example but the model takes "
            f"{tuple(input_shape)}: use reference records from the same dataset"
        )
    if int(ref_y.max()) >= num_classes:
        raise TfmiError(
            f"reference labels go up to {int(ref_y.max())} but the model has {num_classes} classes: "
            "use reference records from the same dataset"
        )
    if len(ref_x) < 2:
        raise TfmiError("the reference set needs at least 2 records")
    missing = np.setdiff1d(np.arange(num_classes), ref_y)
    if len(missing):
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise TfmiError(
            f"classes {shown} have no reference records: {needs} (draw the reference set with a "
            "stratified split, e.g. tfmi.data.membership_split)"
        )
    return ref_x, ref_y


def resolve_reference(
    model: keras.Model, reference_data, reference_size: int | None, needs: str
) -> tuple[np.ndarray, np.ndarray]:
    """Checked reference arrays, or (``from_config``) placeholders of ``reference_size`` rows that
    the saved weights overwrite when they are loaded."""
    input_shape, num_classes = classifier_shape(model)
    if reference_data is not None:
        return check_reference(reference_data, input_shape, num_classes, needs)
    if reference_size is None:
        raise TfmiError("give reference_data=(x_ref, y_ref): held-out records from the training data's "
                        "distribution, disjoint from it")
    placeholder = np.zeros((int(reference_size), *input_shape), np.float32)
    return placeholder, np.arange(int(reference_size)) % num_classes


def inner_from_config(config: dict, custom_objects=None) -> tuple[keras.Model, dict]:
    """``(inner model, the other options)`` of a defended model's ``get_config()``, for ``from_config``.

    Works on a deep copy: Keras 3 rewrites the dicts it deserializes, and the caller's config must
    stay as it was.
    """
    config = copy.deepcopy(config)
    return keras.saving.deserialize_keras_object(config.pop("model"), custom_objects), config


class DefendedModel(keras.Model):
    """Base class: holds the inner classifier, its output kind, seeds, loss and evaluation.

    Subclasses implement ``train_step``; they call `cross_entropy`, `step_seed` and
    `apply_gradients` and update `loss_tracker` / `ce_tracker`.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        outputs: str = "auto",
        sample_x: np.ndarray | None = None,
        seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        _, self.num_classes = classifier_shape(model)
        self.inner = model
        if sample_x is None:
            sample_x = np.zeros((2, *model.input_shape[1:]), np.float32)
        self.output_kind = resolve_output_kind(model, sample_x[:8], self.num_classes, outputs)
        self.seed = check_number("seed", seed, integer=True)
        self.built = True  # the inner model is built; Keras would otherwise warn when saving
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")

    # --- behaves like the inner model ---------------------------------------------------------

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        if loss is not None:
            raise TfmiError(
                f"{type(self).__name__} owns its loss (cross-entropy on integer labels): "
                "call compile without loss="
            )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        compat.own_loss_tracker(self)  # the defense logs its own loss

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        outputs = self.inner(x, training=False)
        targets = self.weighted_targets(y, sample_weight)
        self.loss_tracker.update_state(self.cross_entropy(targets, outputs))
        compat.update_compiled_metrics(self, y, outputs)
        return compat.metric_results(self, [self.loss_tracker, *compat.compiled_metrics(self)])

    def export(self, filepath) -> None:
        """Write the plain inner network (no defense machinery) as a SavedModel for serving."""
        export_saved_model(self.inner, filepath)

    # --- helpers for subclasses ----------------------------------------------------------------

    def store_reference(self, ref_x: np.ndarray, ref_y: np.ndarray) -> None:
        """Keep the reference set as non-trainable weights (saved, mirrored under strategies)."""
        self.reference_x = self.add_weight(
            name="reference_x", shape=ref_x.shape, dtype=tf.float32, trainable=False,
            initializer=keras.initializers.Constant(ref_x),
        )
        self.reference_y = self.add_weight(
            name="reference_y", shape=ref_y.shape, dtype=tf.int32, trainable=False,
            initializer=keras.initializers.Constant(ref_y.astype(np.int32)),
        )

    @property
    def from_logits(self) -> bool:
        return self.output_kind == "logits"

    def probabilities(self, outputs: tf.Tensor) -> tf.Tensor:
        return probabilities(outputs, self.output_kind)

    def weighted_targets(self, y: tf.Tensor, sample_weight: tf.Tensor | None) -> tf.Tensor:
        """One-hot targets scaled by per-example weights (from ``sample_weight``/``class_weight``)."""
        targets = tf.one_hot(y, self.num_classes)
        if sample_weight is None:
            return targets
        return targets * tf.reshape(tf.cast(sample_weight, targets.dtype), [-1, 1])

    def cross_entropy(self, targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        """Mean over the batch of ``-sum(targets * log p)``: soft and weighted targets allowed."""
        log_p = log_probabilities(outputs, self.output_kind)
        return tf.reduce_mean(-tf.reduce_sum(targets * log_p, axis=-1))

    def step_seed(self, stream: int = 0) -> tf.Tensor:
        """A stateless seed unique to (model seed, stream, replica, optimizer step)."""
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        step = tf.cast(self.optimizer.iterations, tf.int64)
        offset = tf.cast(replica_id, tf.int64) * 1_000_003 + stream
        return tf.stack([tf.cast(self.seed, tf.int64) + offset, step])

    def apply_gradients(
        self,
        tape: tf.GradientTape,
        loss: tf.Tensor,
        variables: list[tf.Variable] | None = None,
        optimizer: keras.optimizers.Optimizer | None = None,
    ) -> None:
        """Step ``optimizer`` (default: the compiled one) on ``loss``, a per-replica mean, for
        ``variables`` (default: the inner model's); gradients are scaled for distribution strategies."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.inner.trainable_variables if variables is None else variables
        gradients = tape.gradient(loss, variables)
        if replicas > 1:  # replicas' gradients are summed: make the sum a mean
            gradients = [g / replicas if g is not None else None for g in gradients]
        (optimizer or self.optimizer).apply_gradients(zip(gradients, variables, strict=True))

    def get_config(self) -> dict:
        return {
            "model": keras.saving.serialize_keras_object(self.inner),
            "outputs": self.output_kind,
            "seed": self.seed,
            "name": self.name,
        }
