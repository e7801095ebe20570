"""`AdvRegModel`: adversarial regularization (Nasr, Shokri & Houmansadr, CCS 2018) from ``model.fit``.

A min-max game between the classifier ``f`` and an inference model ``h`` that sees what a black-box
attacker sees, the softmax vector ``f(x)`` and the true label ``y``, and outputs P(member). Every
training step (one batch of members):

(a) ``attack_steps`` Adam steps of ``h`` on binary cross-entropy: the batch's outputs are labelled
    member (1), the outputs on an equal-size batch of reference records drawn uniformly at random
    (held-out data, never trained on) non-member (0); the classifier is constant here;
(b) one step of the classifier on ``CE + adv_weight * gain``, where ``gain`` is the mean
    log-likelihood ``log h(f(x), y)`` that ``h`` assigns to "member" on the batch: the classifier
    is penalized as far as the attacker recognizes its members (``h`` is constant here).

``h`` (`attack_model`, its optimizer and the reference set) is saved with the wrapper;
``export()`` writes only the classifier.

>>> import numpy as np
>>> from tfmi.models import build_model
>>> rng = np.random.default_rng(0)
>>> x, y = rng.random((64, 5), np.float32), np.arange(64) % 2
>>> ref_x, ref_y = rng.random((32, 5), np.float32), np.arange(32) % 2
>>> model = AdvRegModel(build_model("mlp", (5,), 2), (ref_x, ref_y), adv_weight=1.0, attack_steps=2)
>>> model.compile(optimizer="adam", metrics=["accuracy"])
>>> history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
>>> sorted(k for k in history.history if k in ("ce_loss", "adv_gain", "attack_accuracy"))
['adv_gain', 'attack_accuracy', 'ce_loss']
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmi import compat
from tfmi.defenses.base import DefendedModel, inner_from_config, resolve_reference
from tfmi.errors import TfmiError
from tfmi.validation import check_number

layers = keras.layers
_SEED_STREAM = 7  # step_seed stream of the reference draws (MMDMixupModel uses 1-3)


@keras.saving.register_keras_serializable(package="tfmi")
class AdvRegModel(DefendedModel):
    """A Keras classifier trained with adversarial regularization against a learned inference model.

    Args:
        model: the classifier to defend; outputs logits or probabilities, one per class.
        reference_data: ``(x_ref, y_ref)``, held-out records disjoint from the training data (a
            membership split's ``reference`` part), the inference model's non-members; every class
            must occur in it.
        adv_weight: lambda, the weight of the attacker's gain in the classifier's loss (0: plain
            training, with the attacker still trained and reported).
        attack_steps: k, gradient steps of the inference model per classifier step.
        attack_hidden: widths of the inference model's softmax branch (ReLU); the label branch and
            the combining layer have ``attack_hidden[-1]`` units.
        attack_learning_rate: learning rate of the inference model's Adam optimizer.
        outputs: ``"auto"``, ``"logits"`` or ``"probabilities"``.
        seed: seeds the inference model's initial weights and the reference draws (stateless).
        reference_size: used by ``from_config`` only (the reference set is restored with the weights).

    Metrics: ``loss`` (``CE + adv_weight * gain``), ``ce_loss``, ``adv_gain`` (the mean member
    log-likelihood, <= 0; near ``log 0.5 = -0.69`` when the attacker cannot tell) and
    ``attack_accuracy`` (the inference model on the member + reference batch of its last step).
    """

    def __init__(
        self,
        model: keras.Model,
        reference_data: tuple[np.ndarray, np.ndarray] | None = None,
        *,
        adv_weight: float = 1.0,
        attack_steps: int = 1,
        attack_hidden: int | Sequence[int] = (64, 64),
        attack_learning_rate: float = 1e-3,
        outputs: str = "auto",
        seed: int = 0,
        reference_size: int | None = None,
        **kwargs: Any,
    ):
        adv_weight = check_number("adv_weight", adv_weight, low=0, hint="1.0 is usual")
        attack_steps = check_number("attack_steps", attack_steps, low=1, integer=True)
        attack_hidden = _check_hidden(attack_hidden)
        attack_learning_rate = check_number("attack_learning_rate", attack_learning_rate, low=0,
                                            low_inclusive=False, hint="1e-3 is usual")
        ref_x, ref_y = resolve_reference(
            model, reference_data, reference_size,
            needs="the inference model would flag every record of a class it never saw as a member",
        )
        super().__init__(model, outputs=outputs, sample_x=ref_x, seed=seed, **kwargs)
        self.adv_weight = float(adv_weight)
        self.attack_steps = int(attack_steps)
        self.attack_hidden = attack_hidden
        self.attack_learning_rate = float(attack_learning_rate)
        self.store_reference(ref_x, ref_y)
        self.attack_model = build_attack_model(self.num_classes, attack_hidden, self.seed)
        self.attack_optimizer = keras.optimizers.Adam(self.attack_learning_rate)
        self.attack_optimizer.build(self.attack_model.trainable_variables)
        self.gain_tracker = keras.metrics.Mean(name="adv_gain")
        self.attack_accuracy_tracker = keras.metrics.Mean(name="attack_accuracy")

    # --- training ------------------------------------------------------------------------------

    def membership_logits(self, probabilities: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """The inference model's logit of P(member) for softmax vectors and integer labels."""
        onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), self.num_classes)
        return tf.squeeze(self.attack_model([probabilities, onehot], training=False), axis=-1)

    def _train_attack(self, member_probs: tf.Tensor, member_onehot: tf.Tensor) -> tf.Tensor:
        """``attack_steps`` steps of the inference model; returns its accuracy in the last step."""
        n = tf.shape(member_probs)[0]
        draws = tf.random.stateless_uniform(
            [self.attack_steps * n], seed=self.step_seed(stream=_SEED_STREAM),
            minval=0, maxval=tf.shape(self.reference_y)[0], dtype=tf.int32,
        )
        # one forward pass for all k reference batches; same training flag as the member outputs
        ref_outputs = self.inner(tf.gather(self.reference_x, draws), training=True)
        ref_probs = tf.stop_gradient(self.probabilities(ref_outputs))
        ref_onehot = tf.one_hot(tf.gather(self.reference_y, draws), self.num_classes)
        is_member = tf.concat([tf.ones([n]), tf.zeros([n])], axis=0)
        accuracy = tf.constant(0.0)
        # unrolled, not a tf.while_loop: the optimizer's cross-replica merge_call is not allowed in
        # one under MirroredStrategy (attack_steps is small; tracing time grows with it)
        for step in range(self.attack_steps):
            probs = tf.concat([member_probs, ref_probs[step * n:(step + 1) * n]], axis=0)
            onehot = tf.concat([member_onehot, ref_onehot[step * n:(step + 1) * n]], axis=0)
            with tf.GradientTape() as tape:
                logits = tf.squeeze(self.attack_model([probs, onehot], training=True), axis=-1)
                loss = tf.reduce_mean(
                    tf.nn.sigmoid_cross_entropy_with_logits(labels=is_member, logits=logits)
                )
            self.apply_gradients(tape, loss, self.attack_model.trainable_variables, self.attack_optimizer)
            guessed = tf.cast(logits > 0, tf.float32)
            accuracy = tf.reduce_mean(tf.cast(tf.equal(guessed, is_member), tf.float32))
        return accuracy

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        targets = self.weighted_targets(y, sample_weight)
        onehot = tf.one_hot(y, self.num_classes)
        with tf.GradientTape() as tape:
            outputs = self.inner(x, training=True)
            probs = self.probabilities(outputs)
            with tape.stop_recording():
                attack_accuracy = self._train_attack(tf.stop_gradient(probs), onehot)
            # the inference model after its update (step a) scores this batch's members (step b)
            member_logits = tf.squeeze(self.attack_model([probs, onehot], training=False), axis=-1)
            gain = tf.reduce_mean(tf.math.log_sigmoid(member_logits))
            ce = self.cross_entropy(targets, outputs)
            total = ce + self.adv_weight * gain
            if self.inner.losses:
                total += tf.add_n(self.inner.losses)
        self.apply_gradients(tape, total)
        self.loss_tracker.update_state(total)
        self.ce_tracker.update_state(ce)
        self.gain_tracker.update_state(gain)
        self.attack_accuracy_tracker.update_state(attack_accuracy)
        compat.update_compiled_metrics(self, y, outputs)
        return compat.metric_results(self)

    # --- serialization -------------------------------------------------------------------------

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "adv_weight": self.adv_weight,
            "attack_steps": self.attack_steps,
            "attack_hidden": list(self.attack_hidden),
            "attack_learning_rate": self.attack_learning_rate,
            "reference_size": int(self.reference_x.shape[0]),
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> AdvRegModel:
        inner, config = inner_from_config(config, custom_objects)
        return cls(inner, None, **config)


def build_attack_model(num_classes: int, hidden: Sequence[int] = (64, 64), seed: int = 0) -> keras.Model:
    """Nasr et al.'s inference model: (softmax vector, one-hot label) -> logit of P(member).

    The softmax vector passes through ReLU layers of widths ``hidden``, the label through one ReLU
    layer of ``hidden[-1]`` units; the two are concatenated and combined by a ReLU layer and a
    linear output unit. Initial weights are seeded by ``seed``.

    >>> build_attack_model(10, (32, 16)).output_shape
    (None, 1)
    """
    hidden = _check_hidden(hidden)
    seeds = iter(range(1_000 * int(seed), 1_000 * int(seed) + 1_000))

    def dense(units: int, name: str, activation: str | None = "relu") -> layers.Dense:
        init = keras.initializers.GlorotUniform(seed=next(seeds))
        return layers.Dense(units, activation=activation, kernel_initializer=init, name=name)

    probabilities = keras.Input((num_classes,), name="probabilities")
    labels = keras.Input((num_classes,), name="labels")
    h = probabilities
    for i, width in enumerate(hidden):
        h = dense(width, f"softmax_{i}")(h)
    g = dense(hidden[-1], "label_0")(labels)
    z = dense(hidden[-1], "combine_0")(layers.Concatenate(name="concat")([h, g]))
    return keras.Model([probabilities, labels], dense(1, "member_logit", None)(z), name="attack")


def _check_hidden(hidden: int | Sequence[int]) -> tuple[int, ...]:
    try:
        values = (hidden,) if isinstance(hidden, Integral) else tuple(hidden)
    except TypeError:
        values = ()
    valid = all(isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in values)
    if isinstance(hidden, str) or not values or not valid:
        raise TfmiError(f"attack_hidden must be positive layer widths such as (64, 64), got {hidden!r}")
    return tuple(int(v) for v in values)
