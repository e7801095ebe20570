"""`RelaxLossModel`: RelaxLoss (Chen, Yu & Fritz, ICLR 2022) from ``model.fit``.

Plain training drives the members' loss towards 0 while non-members keep a larger loss, and
membership attacks read that difference. RelaxLoss aims the mean training loss at a level
``alpha > 0`` instead. Per batch, with ``CE`` the batch's mean cross-entropy:

- ``CE > alpha``: a normal gradient-descent step on ``CE``;
- otherwise, alternating by epoch (as the paper does; epochs counted from 0):

  - even epochs, **gradient ascent**: a step on ``alpha - CE`` (that is, on ``|CE - alpha|``),
    pushing the loss back up to ``alpha``;
  - odd epochs, **posterior flattening**: a descent step on the cross-entropy against soft
    targets, built from the current outputs and treated as constants. A correctly classified
    example keeps its true-class probability ``p_y`` (clamped to at most ``upper``) and shares
    ``1 - min(p_y, upper)`` equally among the other classes; a misclassified one keeps its
    one-hot target. The wrong classes' probabilities are levelled, and with ``upper < 1`` the
    true-class confidence is capped, so members' output vectors look less distinctive.

The epoch counter (`epochs_seen`, saved with the model) advances at the end of every epoch run by
``fit``, so parity carries across successive ``fit`` calls; training loops that call
``train_step`` themselves advance it with ``model.epochs_seen.assign_add(1)``.

>>> import numpy as np
>>> from tfmi.models import build_model
>>> rng = np.random.default_rng(0)
>>> x, y = rng.random((64, 5), np.float32), np.arange(64) % 2
>>> model = RelaxLossModel(build_model("mlp", (5,), 2), alpha=0.5)
>>> model.compile(optimizer="adam", metrics=["accuracy"])
>>> history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
>>> sorted(k for k in history.history if k.endswith("_fraction"))
['ascent_fraction', 'flatten_fraction']
>>> int(model.epochs_seen.numpy())
2
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfmi import compat
from tfmi.defenses.base import DefendedModel, inner_from_config
from tfmi.validation import check_number


@keras.saving.register_keras_serializable(package="tfmi")
class RelaxLossModel(DefendedModel):
    """A Keras classifier trained with RelaxLoss: mean training loss held near ``alpha``.

    Args:
        model: the classifier to defend; outputs logits or probabilities, one per class.
        alpha: the target level of the mean training cross-entropy (> 0). Larger: more privacy,
            less accuracy.
        upper: cap on the true-class confidence kept in the flattened targets, in (0, 1]
            (1: confidence kept as it is, only the other classes are levelled).
        outputs: ``"auto"``, ``"logits"`` or ``"probabilities"``.
        seed: recorded for symmetry with the other defenses (RelaxLoss draws nothing at random).

    Metrics: ``loss`` (the objective of the step that ran), ``ce_loss`` (the mean one-hot
    cross-entropy), ``ascent_fraction`` and ``flatten_fraction`` (fraction of the epoch's steps that
    ran gradient ascent and posterior flattening; the rest were plain descent).
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        alpha: float = 1.0,
        upper: float = 1.0,
        outputs: str = "auto",
        seed: int = 0,
        **kwargs: Any,
    ):
        alpha = check_number("alpha (the target training loss)", alpha, low=0, low_inclusive=False)
        upper = check_number("upper (a confidence cap)", upper, low=0, high=1, low_inclusive=False)
        super().__init__(model, outputs=outputs, seed=seed, **kwargs)
        self.alpha = float(alpha)
        self.upper = float(upper)
        self.epochs_seen = self.add_weight(
            name="epochs_seen", shape=(), dtype=tf.int32, initializer="zeros", trainable=False,
            aggregation=compat.only_first_replica(),
        )
        self.ascent_tracker = keras.metrics.Mean(name="ascent_fraction")
        self.flatten_tracker = keras.metrics.Mean(name="flatten_fraction")

    def flattened_targets(self, y: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        """Soft targets of posterior flattening (constants: no gradient flows through them)."""
        probs = tf.stop_gradient(self.probabilities(outputs))
        onehot = tf.one_hot(y, self.num_classes)
        kept = tf.minimum(tf.reduce_sum(probs * onehot, axis=-1, keepdims=True), self.upper)
        soft = onehot * kept + (1.0 - onehot) * (1.0 - kept) / (self.num_classes - 1)
        correct = tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), y)[:, None]
        return tf.where(correct, soft, onehot)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        targets = self.weighted_targets(y, sample_weight)
        even_epoch = tf.equal(self.epochs_seen % 2, 0)
        with tf.GradientTape() as tape:
            outputs = self.inner(x, training=True)
            ce = self.cross_entropy(targets, outputs)
            descend = self._global_mean(tf.stop_gradient(ce)) > self.alpha
            soft = self.flattened_targets(y, outputs)
            if sample_weight is not None:
                soft *= tf.reshape(tf.cast(sample_weight, soft.dtype), [-1, 1])
            flatten_loss = self.cross_entropy(soft, outputs)
            objective = tf.where(descend, ce, tf.where(even_epoch, self.alpha - ce, flatten_loss))
            total = objective + tf.add_n(self.inner.losses) if self.inner.losses else objective
        self.apply_gradients(tape, total)
        relaxed = tf.logical_not(descend)
        self.loss_tracker.update_state(total)
        self.ce_tracker.update_state(ce)
        self.ascent_tracker.update_state(tf.cast(relaxed & even_epoch, tf.float32))
        self.flatten_tracker.update_state(tf.cast(relaxed & tf.logical_not(even_epoch), tf.float32))
        compat.update_compiled_metrics(self, y, outputs)
        return compat.metric_results(self)

    @staticmethod
    def _global_mean(value: tf.Tensor) -> tf.Tensor:
        """Mean over replicas, so that all replicas of a step take the same branch."""
        if tf.distribute.get_strategy().num_replicas_in_sync == 1:
            return value
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, value)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, *, callbacks=None, **kwargs):
        """`keras.Model.fit`, counting epochs for the ascent / flattening alternation."""
        callbacks = [*(callbacks or []), _CountEpochs(self)]
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha, "upper": self.upper}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> RelaxLossModel:
        inner, config = inner_from_config(config, custom_objects)
        return cls(inner, **config)


class _CountEpochs(keras.callbacks.Callback):
    def __init__(self, model: RelaxLossModel):
        super().__init__()
        self.defended = model

    def on_epoch_end(self, epoch, logs=None):
        self.defended.epochs_seen.assign_add(1)
