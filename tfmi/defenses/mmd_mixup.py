"""`MMDMixupModel`: train any Keras classifier with the MMD set regularizer and mixup from `fit`.

The defense of Li, Li & Ribeiro (2021): add ``mmd_weight * MMD^2(train outputs, reference outputs)``
between the softmax outputs on a training batch and on a class-matched batch of held-out reference
records (constants: no gradient flows through them), and train on mixup batches.

Two schedules:

- ``"paper"`` (default): the authors' schedule. Each epoch runs a (mixup) cross-entropy pass; then, if
  the train/reference accuracy gap is at least ``gap_threshold`` and it is not the last epoch, a
  second pass over class-sorted clean training batches takes steps on ``mmd_weight * MMD^2`` alone.
- ``"joint"``: every step minimizes ``CE_mixup + mmd_weight * gate * MMD^2`` in one optimizer step.
  With mixup the MMD term compares the mixed batch's outputs with those on the class-matched
  reference batch mixed the same way (same coefficient and partner positions), so one extra forward
  pass (no backward) pays for it; ``mmd_inputs="clean"`` compares clean training outputs (from the
  same forward call, twice the rows) with clean reference outputs instead. ``gate`` is 0 (MMD
  measured but not in the loss) until the gap between accuracy on the training data and on the
  reference data reaches ``gap_threshold`` (re-measured after every epoch): matching an untrained
  network's near-uniform reference outputs is an easy minimum that collapses training.

Options of the MMD steps: ``mmd_optimizer`` gives the paper schedule's MMD pass an optimizer (and
optimizer state) of its own, as the authors' follow-up code does (SGD, momentum 0.9); by default the
compiled optimizer takes those steps too. ``reference_refresh="per_batch"`` recomputes the reference
outputs for every MMD batch with the current weights (the authors' way) instead of once per pass.
``target_gap`` adapts lambda after every epoch so the train/reference accuracy gap settles at a
target (`MMDMixupModel` explains the controller).

The gap: joint, at no extra pass, the running accuracies,
over the epoch, of the very batches MMD compares (training and reference, both clean or both mixed
alike, scored against the dominant label); the reference forward pass therefore runs while the gate
is shut too. Paper: one inference pass over the training data, as the authors measure it (the running
accuracy of the cross-entropy pass would lag behind: it starts from the weights the previous MMD pass
moved), and the reference accuracy from the reference outputs the MMD pass needs anyway, computed
once per pass in inference mode (they are constants to the gradient either way).

>>> import numpy as np, tensorflow as tf
>>> from tfmi.models import build_model
>>> rng = np.random.default_rng(0)
>>> x, y = rng.random((64, 5), np.float32), np.arange(64) % 2
>>> ref_x, ref_y = rng.random((32, 5), np.float32), np.arange(32) % 2
>>> model = MMDMixupModel(build_model("mlp", (5,), 2), (ref_x, ref_y), mmd_weight=1.0, mixup_alpha=1.0)
>>> model.compile(optimizer="adam", metrics=["accuracy"])
>>> history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
>>> sorted(k for k in history.history if k.startswith("mmd"))
['mmd', 'mmd_active', 'mmd_gap', 'mmd_pass', 'mmd_weight']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmi import compat
from tfmi.data.dataset import check_features, check_labels
from tfmi.defenses.base import DefendedModel, inner_from_config, resolve_reference
from tfmi.defenses.config import DEFAULT_MMD_WEIGHT
from tfmi.defenses.mixup import check_alpha, mix, sample_mixup
from tfmi.defenses.mmd import ESTIMATORS, ClassMatchedSampler, check_bandwidths, mmd2
from tfmi.errors import TfmiError
from tfmi.inference import accuracy, predict_in_batches
from tfmi.validation import check_number

SCHEDULES = tuple(DEFAULT_MMD_WEIGHT)
REFERENCE_REFRESH = ("per_pass", "per_batch")
#: how the paper schedule's MMD pass batches the training data
MMD_BATCHES = ("class_sorted", "shuffled")
EVAL_BATCH_SIZE = 4096
#: the target-gap controller's gains on log(lambda), per unit of gap error (gap - target_gap):
#: proportional, and integral (summed over epochs)
TARGET_GAP_GAINS = (2.0, 5.0)
#: the range lambda is clipped to under the target-gap controller
MMD_WEIGHT_BOUNDS = (1e-3, 1e4)


@keras.saving.register_keras_serializable(package="tfmi")
class MMDMixupModel(DefendedModel):
    """A Keras classifier trained with the MMD set regularizer, mixup, or both.

    Args:
        model: the classifier to defend; outputs logits or probabilities, one per class.
        reference_data: ``(x_ref, y_ref)``, held-out records disjoint from the training data
            (a membership split's ``reference`` part); every training class must occur in it.
        mmd_weight: lambda, the weight of MMD^2 (0 turns MMD off: mixup alone). Default by
            schedule: paper 6.5 (the authors' Location30 value), joint 5.0.
        mixup_alpha: Beta(alpha, alpha) of mixup; None turns mixup off (MMD alone).
        bandwidths: Gaussian kernel bandwidth(s) sigma, summed over when several.
        schedule: ``"joint"`` or ``"paper"`` (module docstring).
        gap_threshold: train/reference accuracy gap that switches MMD on (0.03 = 3 points).
        estimator: ``"biased"`` (the authors') or ``"unbiased"`` MMD^2.
        mmd_inputs: joint schedule with mixup: ``"mixed"`` or ``"clean"`` training outputs for MMD.
        outputs: ``"auto"``, ``"logits"`` or ``"probabilities"``.
        seed: seeds mixup and reference sampling (stateless, reproducible).
        mmd_optimizer: a Keras optimizer for the paper schedule's MMD steps alone (its own learning
            rate and state; the compiled optimizer's step count does not advance during them), or
            None: the compiled optimizer takes them (its moments then mix both passes' gradients).
        reference_refresh: ``"per_pass"``: the paper schedule's MMD pass compares with reference
            outputs computed once, in inference mode, before the pass; ``"per_batch"``: each MMD step
            recomputes the outputs on its class-matched reference batch with the current weights
            (training mode, as the authors do), one extra forward pass of a batch per step.
        mmd_batches: how the paper schedule's MMD pass batches the members: ``"class_sorted"`` (one
            or two classes per batch, as the CODASPY code sorts its training data) or ``"shuffled"``
            (classes mixed, as the authors' later MIST code feeds its training partition; on Location30
            with lambda 6.5 and SGD at 0.1 the sorted pass collapses training to chance, the shuffled
            one does not).
        target_gap: None (lambda stays ``mmd_weight``) or the train/reference accuracy gap to settle
            at. After every epoch the gap is measured in inference mode on the training data and the
            reference set (never on other data; not from running accuracies, which lag behind the
            model the epoch ends with) and lambda, starting from ``mmd_weight``, follows a
            proportional-integral controller on ``log lambda``::

                e_t = gap_t - target_gap
                log lambda_t = log mmd_weight + k_p * e_t + k_i * (e_s + ... + e_t)

            where ``s`` is the first epoch whose gap reached the target (until then the network has
            not overfit that much yet: summing those errors would only wind lambda down), clipped to
            `MMD_WEIGHT_BOUNDS`; while clipped the sum stops growing (anti-windup).
            The gains ``(k_p, k_i)`` are `TARGET_GAP_GAINS` (2, 5), tuned on Location30 (MLP, Adam,
            paper schedule, lambda from 6.5, 30 epochs; targets 0.1, 0.2 and 0.3 on 5 splits each: the
            final train/test gap within 0.05 of the target, 0.014 off on average; a larger k_p or k_i
            makes lambda, and the gap, oscillate from epoch to epoch, a smaller k_i lags behind the
            growing overfit). The paper schedule uses lambda_t in the MMD pass that follows the
            measurement, the joint one in the next epoch's steps. The gate (``gap_threshold``)
            still applies: a target below it is not reached. A starting ``mmd_weight`` so large
            that the gap never reaches the target leaves the sum off and lambda near it: start lower.

    Epoch logs (and so `History`) get, besides ``loss``, ``ce_loss`` and the metrics: ``mmd`` (the
    mean MMD^2 over the epoch's MMD steps; 0.0 on paper-schedule epochs whose pass did not run),
    ``mmd_gap`` (the gap that gated MMD), ``mmd_active`` (1.0 if MMD acted this epoch), ``mmd_pass``
    (paper schedule: 1.0 if the MMD pass ran) and ``mmd_weight`` (the lambda that acted).
    """

    def __init__(
        self,
        model: keras.Model,
        reference_data: tuple[np.ndarray, np.ndarray] | None = None,
        *,
        mmd_weight: float | None = None,
        mixup_alpha: float | None = 1.0,
        bandwidths: float | Sequence[float] = (1.0,),
        schedule: str = "paper",
        gap_threshold: float = 0.03,
        estimator: str = "biased",
        mmd_inputs: str = "mixed",
        outputs: str = "auto",
        seed: int = 0,
        reference_size: int | None = None,
        mmd_optimizer: keras.optimizers.Optimizer | None = None,
        reference_refresh: str = "per_pass",
        target_gap: float | None = None,
        mmd_batches: str = "class_sorted",
        **kwargs: Any,
    ):
        if schedule not in SCHEDULES:
            raise TfmiError(f"unknown MMD schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
        if mmd_weight is None:
            mmd_weight = DEFAULT_MMD_WEIGHT[schedule]
        mmd_weight = check_number("mmd_weight", mmd_weight, low=0)
        if mixup_alpha is not None:
            mixup_alpha = check_alpha(mixup_alpha)
        if estimator not in ESTIMATORS:
            raise TfmiError(f"unknown MMD estimator {estimator!r}: use one of {', '.join(ESTIMATORS)}")
        if mmd_inputs not in ("clean", "mixed"):
            raise TfmiError(f"mmd_inputs must be 'clean' or 'mixed', got {mmd_inputs!r}")
        gap_threshold = check_number("gap_threshold", gap_threshold, low=0, high=1, high_inclusive=False)
        if mmd_batches not in MMD_BATCHES:
            raise TfmiError(f"mmd_batches must be one of {', '.join(MMD_BATCHES)}, got {mmd_batches!r}")
        if reference_refresh not in REFERENCE_REFRESH:
            raise TfmiError(f"reference_refresh must be one of {', '.join(REFERENCE_REFRESH)}, "
                            f"got {reference_refresh!r}")
        if mmd_optimizer is not None and not compat.is_optimizer(mmd_optimizer):
            raise TfmiError(
                f"mmd_optimizer must be a Keras optimizer or None, got {type(mmd_optimizer).__name__}")
        if target_gap is not None:
            target_gap = check_number("target_gap", target_gap, low=0, high=1, high_inclusive=False)
            if mmd_weight == 0:
                raise TfmiError("target_gap adapts lambda from mmd_weight: give mmd_weight > 0")
        ref_x, ref_y = resolve_reference(
            model, reference_data, reference_size,
            needs="class-matched MMD batches need every class in the reference set",
        )
        super().__init__(model, outputs=outputs, sample_x=ref_x, seed=seed, **kwargs)
        self.mmd_weight = float(mmd_weight)
        self.mixup_alpha = mixup_alpha
        self.bandwidths = check_bandwidths(bandwidths)
        self.schedule = schedule
        self.gap_threshold = float(gap_threshold)
        self.estimator = estimator
        self.mmd_inputs = mmd_inputs
        self.reference_refresh = reference_refresh
        self.mmd_batches = mmd_batches
        self.target_gap = target_gap
        self.mmd_optimizer = mmd_optimizer
        self.store_reference(ref_x, ref_y)
        self.sampler = ClassMatchedSampler(self.reference_y, self.num_classes)
        self.mmd_gate = self.add_weight(
            name="mmd_gate", shape=(), initializer="zeros", trainable=False,
            aggregation=compat.only_first_replica(),
        )
        if target_gap is not None:  # lambda as a variable: the steps read its current value
            self.mmd_lambda = self.add_weight(
                name="mmd_lambda", shape=(), trainable=False,
                initializer=keras.initializers.Constant(np.clip(mmd_weight, *MMD_WEIGHT_BOUNDS)),
                aggregation=compat.only_first_replica(),
            )
        self.mmd_tracker = keras.metrics.Mean(name="mmd")
        # joint schedule: accuracies its steps measure anyway, reused by the gate's gap
        if self.joint_mmd:
            self.train_accuracy_tracker = keras.metrics.Mean(name="mmd_train_accuracy")
            self.reference_accuracy_tracker = keras.metrics.Mean(name="mmd_reference_accuracy")

    # --- reference set -------------------------------------------------------------------------

    def _reference_batch(self, y: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.reference_x, self.sampler.sample(y, seed))

    # --- training ------------------------------------------------------------------------------

    @property
    def current_mmd_weight(self) -> float:
        """The lambda in effect now: ``mmd_weight``, or where ``target_gap`` adapts it, its current value."""
        return float(self.mmd_lambda.numpy()) if self.target_gap is not None else self.mmd_weight

    def _lambda(self) -> tf.Tensor | float:
        return self.mmd_lambda if self.target_gap is not None else self.mmd_weight

    def _mmd_step_seed(self) -> tf.Tensor:
        """The MMD step's sampling seed, unique per step also when its optimizer is a separate one."""
        seed = self.step_seed(stream=3)
        if self.mmd_optimizer is None:
            return seed
        return tf.stack([seed[0], tf.cast(self.mmd_optimizer.iterations, tf.int64)])

    @property
    def joint_mmd(self) -> bool:
        return self.schedule == "joint" and self.mmd_weight > 0

    @property
    def mixes_reference(self) -> bool:
        """Joint schedule with mixup on mixed outputs: reference batches are mixed like training ones."""
        return self.joint_mmd and self.mixup_alpha is not None and self.mmd_inputs == "mixed"

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        targets = self.weighted_targets(y, sample_weight)
        metric_labels = y
        inputs = x
        if self.mixup_alpha is not None:
            draw = sample_mixup(tf.shape(x)[0], self.mixup_alpha, self.step_seed(stream=1))
            inputs, targets = mix(x, draw), mix(targets, draw)
            metric_labels = tf.where(draw.lam >= 0.5, y, tf.gather(y, draw.perm))
        # joint with mixup and clean MMD inputs: clean outputs come from the same forward call
        extra_clean = self.joint_mmd and self.mixup_alpha is not None and not self.mixes_reference
        if self.joint_mmd:
            reference = self._reference_batch(y, self.step_seed(stream=2))
            if self.mixes_reference:
                reference = mix(reference, draw)  # row i: the classes and mixing of training row i
            # a constant to the gradient: computed outside the tape (forward only). It runs while
            # the gate is shut too, so the gate's gap comes from these batches at no extra cost.
            reference_probabilities = self._reference_probabilities(reference)
        with tf.GradientTape() as tape:
            if extra_clean:
                both = self.inner(tf.concat([inputs, x], axis=0), training=True)
                outputs, mmd_outputs = both[: tf.shape(x)[0]], both[tf.shape(x)[0]:]
            else:
                outputs = mmd_outputs = self.inner(inputs, training=True)
            ce = self.cross_entropy(targets, outputs)
            total = ce + tf.add_n(self.inner.losses) if self.inner.losses else ce
            if self.joint_mmd:
                mmd = mmd2(self.probabilities(mmd_outputs), reference_probabilities,
                           self.bandwidths, self.estimator)
                total += self._lambda() * self.mmd_gate * mmd
            else:
                mmd = tf.constant(0.0)
        self.apply_gradients(tape, total)
        self.loss_tracker.update_state(total)
        self.ce_tracker.update_state(ce)
        self.mmd_tracker.update_state(mmd)
        if self.joint_mmd:
            # accuracy of the batches MMD compares: clean, or (mixed reference) the dominant label
            compared = metric_labels if self.mixes_reference else y
            self.train_accuracy_tracker.update_state(_correct(mmd_outputs, compared))
            self.reference_accuracy_tracker.update_state(_correct(reference_probabilities, compared))
        compat.update_compiled_metrics(self, metric_labels, outputs)
        return compat.metric_results(self)

    def _reference_probabilities(self, reference_inputs: tf.Tensor) -> tf.Tensor:
        return tf.stop_gradient(self.probabilities(self.inner(reference_inputs, training=True)))

    def mmd_step(
        self, x: tf.Tensor, y: tf.Tensor, reference_probabilities: tf.Tensor | None = None
    ) -> tf.Tensor:
        """One step of ``mmd_optimizer`` (default: the compiled one) on ``lambda * MMD^2`` alone (the
        paper schedule's second pass); returns the batch's MMD^2, measured before the step.

        The batch's outputs are compared with a class-matched sample of reference outputs: rows of
        ``reference_probabilities`` (the outputs on the whole reference set, see
        `reference_probabilities`) under ``reference_refresh="per_pass"``, else (or when it is None)
        outputs on the sampled reference records computed now, with the current weights.
        """
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        indices = self.sampler.sample(y, self._mmd_step_seed())
        if self.reference_refresh == "per_batch" or reference_probabilities is None:
            reference = self._reference_probabilities(tf.gather(self.reference_x, indices))
        else:
            reference = tf.gather(reference_probabilities, indices)
        with tf.GradientTape() as tape:
            outputs = self.probabilities(self.inner(x, training=True))
            mmd = mmd2(outputs, reference, self.bandwidths, self.estimator)
            loss = self._lambda() * mmd
        self.apply_gradients(tape, loss, optimizer=self.mmd_optimizer)
        return mmd

    @tf.function(reduce_retracing=True)
    def mmd_pass(self, x, y, order, starts, batch_size: int, reference_probabilities=None):
        """`mmd_step` over the batches ``order[s:s + batch_size]`` for ``s`` in ``starts``, in-graph;
        returns the mean of the batches' MMD^2."""
        total = tf.constant(0.0)
        for start in starts:
            batch = order[start:start + batch_size]
            total += self.mmd_step(tf.gather(x, batch), tf.gather(y, batch), reference_probabilities)
        return total / tf.cast(tf.size(starts), tf.float32)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, *, callbacks=None, **kwargs):
        """`keras.Model.fit`, with the schedule's per-epoch gap measurement added.

        The schedules measure accuracy on the training data after every epoch, so ``x`` and ``y``
        must be arrays (not a ``tf.data.Dataset``) unless MMD is off.
        """
        callbacks = list(callbacks or [])
        if self.mmd_weight > 0:
            if not isinstance(x, np.ndarray) or y is None:
                raise TfmiError(
                    "MMDMixupModel.fit needs x and y as numpy arrays: the MMD schedule measures "
                    "accuracy on the training data after every epoch"
                )
            x = check_features(x, "training features")
            y = check_labels(y, self.num_classes, "training labels")
            callbacks.append(MMDSchedule(self, x, y, batch_size or 32, epochs))
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, **kwargs)

    # --- measurement ---------------------------------------------------------------------------

    def accuracy_on(self, x: np.ndarray | tf.Tensor, y: np.ndarray | tf.Tensor) -> float:
        """Clean (inference-mode) accuracy of the inner model, computed in large batches."""
        return accuracy(self._predict, x, np.asarray(y).reshape(-1), EVAL_BATCH_SIZE)

    def reference_probabilities(self) -> tf.Tensor:
        """Inference-mode class probabilities on the whole reference set (n_ref x classes)."""
        outputs = predict_in_batches(self._predict, self.reference_x, EVAL_BATCH_SIZE)
        return self.probabilities(tf.constant(outputs))

    @tf.function(reduce_retracing=True)
    def _predict(self, x):
        return self.inner(x, training=False)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "mmd_weight": self.mmd_weight,
            "mixup_alpha": self.mixup_alpha,
            "bandwidths": list(self.bandwidths),
            "schedule": self.schedule,
            "gap_threshold": self.gap_threshold,
            "estimator": self.estimator,
            "mmd_inputs": self.mmd_inputs,
            "reference_size": int(self.reference_x.shape[0]),
            "reference_refresh": self.reference_refresh,
            "mmd_batches": self.mmd_batches,
            "target_gap": self.target_gap,
            "mmd_optimizer": (None if self.mmd_optimizer is None
                              else keras.optimizers.serialize(self.mmd_optimizer)),
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> MMDMixupModel:
        inner, config = inner_from_config(config, custom_objects)
        if config.get("mmd_optimizer") is not None:
            config["mmd_optimizer"] = keras.optimizers.deserialize(config["mmd_optimizer"])
        return cls(inner, None, **config)


class MMDSchedule(keras.callbacks.Callback):
    """Measures the train/reference accuracy gap after every epoch and applies the schedule (and,
    with ``target_gap``, the lambda controller).

    Adds ``mmd_gap``, ``mmd_active``, ``mmd_weight`` and, under the paper schedule, ``mmd_pass`` and
    the pass's ``mmd`` to the epoch logs (see `MMDMixupModel`), so `History`, TensorBoard and early
    stopping see them.
    """

    def __init__(self, model: MMDMixupModel, x: np.ndarray, y: np.ndarray, batch_size: int, epochs: int):
        super().__init__()
        self.defended = model
        self.x, self.y = tf.constant(x), tf.constant(y.astype(np.int32))
        self.batch_size = int(batch_size)
        self.epochs = int(epochs)
        self._rng = np.random.default_rng(model.seed)
        self._distributed_step = None
        self._active = 0.0
        self._weight = 0.0
        self._log_base = 0.0
        self._error_sum = 0.0
        self._integrating = False

    def on_train_begin(self, logs=None):
        self.defended.mmd_gate.assign(0.0)
        if self.defended.target_gap is not None:  # the controller starts from the current lambda
            self._log_base, self._error_sum = float(np.log(self.defended.current_mmd_weight)), 0.0
            self._integrating = False

    def on_epoch_begin(self, epoch, logs=None):
        self._active = float(self.defended.mmd_gate.numpy()) if self.defended.joint_mmd else 0.0
        self._weight = self.defended.current_mmd_weight  # what the joint steps of this epoch use

    def on_epoch_end(self, epoch, logs=None):
        model, logs = self.defended, logs if logs is not None else {}
        adaptive = model.target_gap is not None
        if model.schedule == "joint":
            if adaptive:  # the controller needs the clean gap the final model will show
                gap = self._clean_gap(model.reference_probabilities())
            else:  # running accuracies of the batches the MMD term compares
                gap = float(logs["mmd_train_accuracy"]) - float(logs["mmd_reference_accuracy"])
            model.mmd_gate.assign(1.0 if gap >= model.gap_threshold else 0.0)
            if adaptive:
                self._control(gap)  # for the next epoch's steps
        else:
            reference = model.reference_probabilities()
            if adaptive:
                gap = self._clean_gap(reference)
                self._control(gap)  # for the pass that follows
                self._weight = model.current_mmd_weight
            else:  # in inference mode, as the authors gate: running accuracies lag an MMD pass
                gap = self._clean_gap(reference)
            ran = gap >= model.gap_threshold and epoch < self.epochs - 1
            if ran:
                per_batch = model.reference_refresh == "per_batch"
                logs["mmd"] = self._run_mmd_pass(None if per_batch else reference)
                self._active = 1.0
            else:
                logs["mmd"] = 0.0
            logs["mmd_pass"] = 1.0 if ran else 0.0
        logs["mmd_gap"] = gap
        logs["mmd_active"] = self._active
        logs["mmd_weight"] = self._weight

    def _clean_gap(self, reference_probabilities: tf.Tensor) -> float:
        """Inference-mode accuracy on the training data minus that on the reference set."""
        model = self.defended
        return model.accuracy_on(self.x, self.y) - _reference_accuracy(reference_probabilities, model)

    def _control(self, gap: float) -> None:
        """One step of the target-gap controller (`MMDMixupModel`, ``target_gap``)."""
        model = self.defended
        error = gap - model.target_gap
        k_p, k_i = TARGET_GAP_GAINS
        low, high = np.log(MMD_WEIGHT_BOUNDS)
        self._integrating = self._integrating or error >= 0  # from the first gap at the target on
        step = error if self._integrating else 0.0
        log_weight = self._log_base + k_p * error + k_i * (self._error_sum + step)
        if low <= log_weight <= high or (log_weight > high) != (error > 0):
            self._error_sum += step  # anti-windup: no summing further into a bound
        model.mmd_lambda.assign(float(np.exp(np.clip(log_weight, low, high))))

    def _run_mmd_pass(self, reference_probabilities: tf.Tensor | None) -> float:
        """Steps on MMD^2 alone over clean training batches (paper schedule), class-sorted or
        shuffled (``mmd_batches``); returns the mean MMD^2 over the batches."""
        model = self.defended
        order, starts = mmd_pass_batches(self.y.numpy(), self.batch_size, model.mmd_batches, self._rng)
        strategy = model.distribute_strategy
        if strategy.num_replicas_in_sync == 1:
            return float(model.mmd_pass(self.x, self.y, tf.constant(order), tf.constant(starts),
                                        self.batch_size, reference_probabilities))
        if self._distributed_step is None:
            @tf.function(reduce_retracing=True)
            def step(xb, yb, reference):
                values = strategy.run(model.mmd_step, args=(xb, yb, reference))
                return strategy.reduce(tf.distribute.ReduceOp.MEAN, values, axis=None)

            self._distributed_step = step
        values = []
        for start in starts:
            batch = np.sort(order[start:start + self.batch_size])
            dataset = tf.data.Dataset.from_tensors((tf.gather(self.x, batch), tf.gather(self.y, batch)))
            for dist_x, dist_y in strategy.experimental_distribute_dataset(dataset):
                values.append(float(self._distributed_step(dist_x, dist_y, reference_probabilities)))
        return float(np.mean(values))


def mmd_pass_batches(labels: np.ndarray, batch_size: int, mode: str,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(order, starts)``: the MMD pass's batches are ``order[s:s + batch_size]`` for ``s`` in ``starts``
    (in a random order); every record is in exactly one. ``mode`` is ``mmd_batches``: ``"class_sorted"``
    (records sorted by class, random within a class) or ``"shuffled"`` (a random order).

    >>> order, starts = mmd_pass_batches(np.arange(8) % 2, 4, "class_sorted", np.random.default_rng(0))
    >>> sorted(sorted((np.arange(8) % 2)[order[s:s + 4]].tolist()) for s in starts)
    [[0, 0, 0, 0], [1, 1, 1, 1]]
    """
    if mode == "class_sorted":
        order = np.lexsort((rng.random(len(labels)), labels)).astype(np.int32)
    else:
        order = rng.permutation(len(labels)).astype(np.int32)
    starts = np.arange(0, len(order), batch_size, dtype=np.int32)
    rng.shuffle(starts)
    return order, starts


class MMDWeightRecorder(keras.callbacks.Callback):
    """Copies the epochs' ``mmd_weight`` (lambda) from the training history into ``record`` as
    ``mmd_weight_trajectory`` when training ends, e.g. into the defense record of a sidecar.

    >>> import numpy as np, tensorflow as tf
    >>> from tfmi.models import build_model
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((64, 5), np.float32), np.arange(64) % 2
    >>> model = MMDMixupModel(build_model("mlp", (5,), 2), (x[:16], y[:16]), target_gap=0.1)
    >>> model.compile(optimizer="adam")
    >>> record = {"name": "mmd"}
    >>> _ = model.fit(x, y, epochs=3, verbose=0, callbacks=[MMDWeightRecorder(record)])
    >>> len(record["mmd_weight_trajectory"])
    3
    """

    def __init__(self, record: dict):
        super().__init__()
        self.record = record

    def on_train_end(self, logs=None):
        history = getattr(self.model, "history", None)
        trajectory = getattr(history, "history", {}).get("mmd_weight")
        if trajectory is not None:
            self.record["mmd_weight_trajectory"] = [float(v) for v in trajectory]


def _reference_accuracy(reference_probabilities: tf.Tensor, model: MMDMixupModel) -> float:
    return float(tf.reduce_mean(_correct(reference_probabilities, model.reference_y)))


def _correct(outputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """1.0 where the arg-max class equals the label, else 0.0."""
    predicted = tf.argmax(outputs, axis=1, output_type=tf.int32)
    return tf.cast(tf.equal(predicted, tf.cast(tf.reshape(labels, [-1]), tf.int32)), tf.float32)
