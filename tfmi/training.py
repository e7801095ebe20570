"""Train a target model on its members, with or without a defense: the one training entry point
the CLI and the benchmarks share."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from tfmi import compat
from tfmi.data.dataset import Dataset
from tfmi.data.splits import MembershipSplit
from tfmi.defenses.config import DEFAULT_NOISE_MULTIPLIER, DefenseConfig
from tfmi.errors import TfmiError
from tfmi.inference import accuracy
from tfmi.models import build_model
from tfmi.training_config import TrainConfig, check_batch_size

__all__ = [
    "LearningRateMilestones", "TrainConfig", "TrainedTarget", "TrainingPlan", "check_batch_size",
    "make_optimizer", "plan_training", "train_target",
]



@dataclass
class TrainedTarget:
    """A trained target model with its accuracy on members (train) and non-members (test)."""

    model: keras.Model
    config: TrainConfig
    train_accuracy: float
    test_accuracy: float
    history: dict[str, list[float]] = field(default_factory=dict)
    defense: dict = field(default_factory=lambda: {"name": "none"})

    @property
    def generalization_gap(self) -> float:
        return self.train_accuracy - self.test_accuracy


def make_optimizer(config: TrainConfig, *, legacy: bool = False) -> keras.optimizers.Optimizer:
    """The optimizer ``config`` names, with its learning rate, momentum and weight decay.

    ``legacy=True`` gives, on Keras 2, Keras's legacy (fused) implementation of the same update rule,
    which the batched shadows use; it has no weight decay, so it refuses a config that asks for one.
    Keras 3 has one optimizer family: ``legacy`` changes nothing there.

    >>> make_optimizer(TrainConfig("mlp", optimizer="sgd", learning_rate=0.1)).momentum
    0.9
    """
    if legacy and not compat.KERAS_3:
        if config.weight_decay:
            raise TfmiError("the legacy optimizers have no weight decay: train these models one by one")
        if config.optimizer == "sgd":
            return keras.optimizers.legacy.SGD(config.learning_rate, momentum=config.momentum)
        return keras.optimizers.legacy.Adam(config.learning_rate)
    decay = {"weight_decay": config.weight_decay} if config.weight_decay else {}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.learning_rate, momentum=config.momentum, **decay)
    return keras.optimizers.Adam(config.learning_rate, **decay)


_optimizer = make_optimizer


class LearningRateMilestones(keras.callbacks.Callback):
    """Divides the optimizer's learning rate by 10 at each of ``config.lr_milestones`` (0-based epochs).

    Every optimizer the model owns drops from its own starting rate, a separate one for the MMD
    steps included.
    """

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config

    def on_train_begin(self, logs: dict | None = None) -> None:
        # each optimizer keeps its own base rate (an MMD optimizer may have its own) and drops with it
        self._base = [(o, float(o.learning_rate.numpy())) for o in _optimizers_of(self.model)]

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        factor = self.config.learning_rate_at(epoch) / self.config.learning_rate
        for optimizer, base in self._base:
            optimizer.learning_rate.assign(base * factor)


def _optimizers_of(model: keras.Model) -> list:
    found = [model.optimizer] if getattr(model, "optimizer", None) is not None else []
    extra = getattr(model, "mmd_optimizer", None)
    if extra is not None and extra is not model.optimizer:
        found.append(extra)
    return found


@dataclass
class TrainingPlan:
    """What `fit` is called on, and how, for one defense: the compiled trainable model (a wrapper
    for MMD, AdvReg, RelaxLoss, a DP model for DP-SGD), the plain network inside it, and what to
    record about the defense."""

    trainable: keras.Model
    inner: keras.Model
    one_hot_labels: bool = False
    validate_on_reference: bool = False
    callbacks: list = field(default_factory=list)
    record: dict = field(default_factory=dict)


def plan_training(
    data: Dataset, split: MembershipSplit, config: TrainConfig, defense: DefenseConfig
) -> TrainingPlan:
    """Build and compile the model ``defense`` trains, without training it."""
    name = defense.name
    inner = build_model(
        config.model, data.input_shape, data.num_classes, seed=config.seed,
        dropout=defense.dropout if name == "dropout" else config.dropout,
        l2=defense.l2 if name == "l2" else 0.0,
    )
    reference = (data.x[split.reference], data.y[split.reference])
    plan = TrainingPlan(trainable=inner, inner=inner, record=defense.to_dict())
    if name in ("mmd", "mixup", "mmd-mixup"):
        from tfmi.defenses.mmd_mixup import MMDMixupModel, MMDWeightRecorder

        mmd_options = {}
        if name != "mixup":
            mmd_options = {"reference_refresh": defense.reference_refresh, "mmd_batches": defense.mmd_batches,
                           "target_gap": defense.target_gap}
            if defense.mmd_optimizer == "sgd":  # the authors' own optimizer for the MMD steps
                mmd_options["mmd_optimizer"] = keras.optimizers.SGD(
                    defense.mmd_learning_rate or config.learning_rate, momentum=0.9)
        plan.trainable = MMDMixupModel(
            inner, reference,
            mmd_weight=0.0 if name == "mixup" else defense.mmd_weight,
            mixup_alpha=None if name == "mmd" else defense.mixup_alpha,
            bandwidths=defense.mmd_bandwidths, schedule=defense.mmd_schedule,
            gap_threshold=defense.gap_threshold, seed=config.seed, **mmd_options,
        )
        plan.record["mmd_weight"] = plan.trainable.mmd_weight
        if defense.target_gap is not None and name != "mixup":  # lambda per epoch, into the record
            plan.callbacks.append(MMDWeightRecorder(plan.record))
        plan.trainable.compile(optimizer=_optimizer(config), metrics=["accuracy"])
    elif name == "advreg":
        from tfmi.defenses.advreg import AdvRegModel

        plan.trainable = AdvRegModel(inner, reference, adv_weight=defense.adv_weight,
                                     attack_steps=defense.attack_steps, seed=config.seed)
        plan.trainable.compile(optimizer=_optimizer(config), metrics=["accuracy"])
    elif name == "relaxloss":
        from tfmi.defenses.relaxloss import RelaxLossModel

        plan.trainable = RelaxLossModel(inner, alpha=defense.relax_alpha, seed=config.seed)
        plan.trainable.compile(optimizer=_optimizer(config), metrics=["accuracy"])
    elif name == "dp-sgd":
        from tfmi.defenses.dp_sgd import DPSGDConfig, make_dp_model

        noise = defense.noise_multiplier
        if noise is None and defense.target_epsilon is None:
            noise = DEFAULT_NOISE_MULTIPLIER
        dp_config = DPSGDConfig(
            l2_norm_clip=defense.l2_norm_clip, noise_multiplier=noise,
            target_epsilon=defense.target_epsilon, delta=defense.delta, optimizer=config.optimizer,
            path=defense.dp_path, num_microbatches=defense.microbatches,
        )
        plan.trainable, accounting = make_dp_model(
            inner, dp_config, num_examples=len(split.members), batch_size=config.batch_size,
            epochs=config.epochs, learning_rate=config.learning_rate,
        )
        plan.record["accounting"] = accounting.to_dict()
    elif name == "label-smoothing":
        inner.compile(
            optimizer=_optimizer(config),
            loss=keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=defense.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
        plan.one_hot_labels = True
    else:  # none, l2, dropout, early-stopping: plain training of the (regularized) network
        inner.compile(
            optimizer=_optimizer(config),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    if name == "early-stopping":
        plan.validate_on_reference = True
        plan.callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=defense.patience, restore_best_weights=True))
    if config.lr_milestones:
        plan.callbacks.append(LearningRateMilestones(config))
    return plan


def train_target(
    data: Dataset,
    split: MembershipSplit,
    config: TrainConfig,
    defense: DefenseConfig | None = None,
    *,
    verbose: int | str = "auto",
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainedTarget:
    """Train ``config.model`` on the split's members with a defense; report train and test accuracy.

    Seeds Python, NumPy and TensorFlow with ``config.seed``. The non-members serve as Keras
    validation data (so the progress bar shows the generalization gap opening), except under
    early stopping, which monitors the held-out reference set: the non-members never steer training.
    The returned model is always the plain network (logits), whatever defense trained it.

    >>> from tfmi.data import load_dataset, membership_split
    >>> data = load_dataset("digits")
    >>> split = membership_split(data.y, target_size=200, seed=0)
    >>> trained = train_target(data, split, TrainConfig("cnn", epochs=2), DefenseConfig("l2"), verbose=0)
    >>> 0.0 <= trained.test_accuracy <= 1.0, trained.defense["name"]
    (True, 'l2')
    """
    defense = defense or DefenseConfig()
    for value, kind, fix in ((data, Dataset, "tfmi.data.load_dataset or make_dataset"),
                             (split, MembershipSplit, "tfmi.data.membership_split"),
                             (config, TrainConfig, "TrainConfig(model_name, ...)"),
                             (defense, DefenseConfig, "DefenseConfig(name, ...)")):
        if not isinstance(value, kind):
            raise TfmiError(f"expected a {kind.__name__}, got {type(value).__name__}: make one with {fix}")
    if len(split.members) == 0 or len(split.non_members) == 0:
        raise TfmiError("the split has no members or no non-members: increase the target size")
    split.check(len(data))
    plan = plan_training(data, split, config, defense)
    x_train, y_train = data.x[split.members], data.y[split.members]
    x_test, y_test = data.x[split.non_members], data.y[split.non_members]
    x_val, y_val = (data.x[split.reference], data.y[split.reference]) if plan.validate_on_reference \
        else (x_test, y_test)
    if plan.one_hot_labels:
        y_fit, y_val = (keras.utils.to_categorical(v, data.num_classes) for v in (y_train, y_val))
    else:
        y_fit = y_train
    history = plan.trainable.fit(
        x_train, y_fit,
        validation_data=(x_val, y_val),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=verbose,
        callbacks=[*plan.callbacks, *(callbacks or [])],
    )
    return TrainedTarget(
        model=plan.inner,
        config=config,
        train_accuracy=accuracy(plan.inner, x_train, y_train),
        test_accuracy=accuracy(plan.inner, x_test, y_test),
        history={k: [float(v) for v in values] for k, values in history.history.items()},
        defense=plan.record,
    )
