"""`TrainConfig`: how a target or shadow model is trained, validated where it is made.

It imports no TensorFlow, so the CLI reads its defaults (`TRAIN_DEFAULTS`) for option help and checks
options with it before anything heavy is loaded.

>>> TrainConfig("mlp", epochs=5).to_dict()["epochs"]
5
>>> TrainConfig("mlp", seed=-1)
Traceback (most recent call last):
...
tfmi.errors.TfmiError: seed must be an integer in [0, 4294967295], got -1 (seeds are unsigned 32-bit integers)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from tfmi.errors import TfmiError
from tfmi.validation import check_number

#: the largest seed NumPy and TensorFlow accept everywhere tfmi passes one
MAX_SEED = 2**32 - 1
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one target-training run (recorded in the model's sidecar).

    ``momentum`` applies to ``optimizer="sgd"``; ``weight_decay`` is the optimizer's weight decay
    (Keras's decoupled form: ``w -= lr * weight_decay * w`` each step); ``lr_milestones`` are the
    epochs at which the learning rate is divided by 10 (the authors' ``--schedule``).
    """

    model: str
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    dropout: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TfmiError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        check_number("learning rate", self.learning_rate, low=0, low_inclusive=False, hint="1e-3 is usual")
        check_number("dropout", self.dropout, low=0, high=1, high_inclusive=False)
        check_number("seed", self.seed, low=0, high=MAX_SEED, integer=True,
                     hint="seeds are unsigned 32-bit integers")
        if self.optimizer not in OPTIMIZERS:
            raise TfmiError(f"unknown optimizer {self.optimizer!r}: use {' or '.join(OPTIMIZERS)}")
        check_number("momentum", self.momentum, low=0, high=1, high_inclusive=False, hint="0.9 is usual")
        check_number("weight decay", self.weight_decay, low=0, hint="1e-5 is the authors' value")
        milestones = tuple(self.lr_milestones)
        for epoch in milestones:
            check_number("a learning-rate milestone", epoch, low=1, integer=True,
                         hint="the epochs at which the learning rate drops 10x")
        if list(milestones) != sorted(set(milestones)):
            raise TfmiError(f"learning-rate milestones must be increasing epochs, got {list(milestones)}")
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in milestones))

    def to_dict(self) -> dict:
        record = asdict(self)
        record["lr_milestones"] = list(self.lr_milestones)  # what JSON gives back, so records compare equal
        return record

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate of 0-based ``epoch``: divided by 10 at every milestone passed.

        >>> TrainConfig("mlp", learning_rate=0.1, lr_milestones=(2, 4)).learning_rate_at(3)
        0.01
        """
        drops = sum(epoch >= m for m in self.lr_milestones)
        return float(self.learning_rate / 10**drops)


#: TrainConfig's defaults by field, for option help texts (one source of truth)
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.name != "model"}


def check_batch_size(batch_size: int, training_records: int, option: str = "--batch-size") -> None:
    """Refuse a batch larger than the training set, before anything is allocated for it.

    >>> check_batch_size(64, 450)
    >>> check_batch_size(5000, 450)
    Traceback (most recent call last):
    ...
    tfmi.errors.TfmiError: --batch-size 5000 is larger than the 450 training records: use at most 450
    """
    if batch_size > training_records:
        raise TfmiError(f"{option} {batch_size} is larger than the {training_records} training records: "
                        f"use at most {training_records}")
