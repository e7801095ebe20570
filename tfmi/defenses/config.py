"""`DefenseConfig`: one defense and its strengths, as the training entry point and the CLI take it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from numbers import Real

from tfmi.errors import TfmiError
from tfmi.validation import check_number

# lambda when none is given: the authors' Location30 value for their schedule; for the joint step a
# value below the collapse point measured on Location30 (see README, "Defenses")
DEFAULT_MMD_WEIGHT = {"paper": 6.5, "joint": 5.0}
#: DP-SGD's noise multiplier when neither it nor a target epsilon is given
DEFAULT_NOISE_MULTIPLIER = 1.0

DEFENSE_NAMES = (
    "none", "mmd", "mixup", "mmd-mixup", "dp-sgd", "l2", "dropout", "label-smoothing",
    "early-stopping", "advreg", "relaxloss",
)

# which fields of DefenseConfig each defense reads (recorded in the model's sidecar)
_MMD_FIELDS = ("mmd_weight", "mmd_schedule", "mmd_bandwidths", "gap_threshold", "mmd_optimizer",
               "mmd_learning_rate", "reference_refresh", "mmd_batches", "target_gap")
_RELEVANT = {
    "none": (),
    "mmd": _MMD_FIELDS,
    "mixup": ("mixup_alpha",),
    "mmd-mixup": (*_MMD_FIELDS, "mixup_alpha"),
    "dp-sgd": ("l2_norm_clip", "noise_multiplier", "target_epsilon", "delta", "microbatches", "dp_path"),
    "l2": ("l2",),
    "dropout": ("dropout",),
    "label-smoothing": ("label_smoothing",),
    "early-stopping": ("patience",),
    "advreg": ("adv_weight", "attack_steps"),
    "relaxloss": ("relax_alpha",),
}

# the valid range of every numeric field (tfmi.validation.check_number keywords) and a usual value
_RANGES = {
    "mmd_weight": {"low": 0},
    "mmd_bandwidths": {"low": 0, "low_inclusive": False},
    "gap_threshold": {"low": 0, "high": 1, "high_inclusive": False},
    "mmd_learning_rate": {"low": 0, "low_inclusive": False},
    "target_gap": {"low": 0, "high": 1, "high_inclusive": False, "usual": "0.1"},
    "mixup_alpha": {"low": 0, "low_inclusive": False, "usual": "1.0"},
    "l2": {"low": 0, "low_inclusive": False},
    "dropout": {"low": 0, "high": 1, "low_inclusive": False, "high_inclusive": False},
    "label_smoothing": {"low": 0, "high": 1, "low_inclusive": False, "high_inclusive": False},
    "patience": {"low": 1, "integer": True},
    "l2_norm_clip": {"low": 0, "low_inclusive": False, "usual": "1.0"},
    "noise_multiplier": {"low": 0},
    "target_epsilon": {"low": 0, "low_inclusive": False},
    "delta": {"low": 0, "high": 1, "low_inclusive": False, "high_inclusive": False},
    "microbatches": {"low": 1, "integer": True},
    "adv_weight": {"low": 0},
    "attack_steps": {"low": 1, "integer": True},
    "relax_alpha": {"low": 0, "low_inclusive": False},
}
# fields whose None means "the default" (noise or epsilon, delta of n, one example per microbatch)
_OPTIONAL = ("noise_multiplier", "target_epsilon", "delta", "microbatches", "mmd_learning_rate", "target_gap")
# what None means for a field, in words
_NONE_MEANS = {
    "mmd_learning_rate": "the training learning rate",
    "target_gap": "off: lambda stays --mmd-weight",
    "target_epsilon": "none: the noise multiplier decides",
    "delta": "min(1e-5, 1/(10 n)) for n training records",
    "microbatches": "one per example",
}
# command-line flags whose name is not the field's
_FLAGS = {"mmd_bandwidths": "--mmd-bandwidth"}
DP_PATHS: tuple[str, ...] = ("auto", "fast", "dpmodel", "vectorized", "microbatched")
# fields with a fixed set of values
_CHOICES = {
    "dp_path": DP_PATHS,
    "mmd_optimizer": ("shared", "sgd"),
    "reference_refresh": ("per_pass", "per_batch"),
    "mmd_batches": ("class_sorted", "shuffled"),
}
# MMD options added later: recorded (to_dict) only when they differ from their default, so the records
# of runs without them, and the benchmark cells keyed on those records, stay as they were
_RECORDED_WHEN_SET = ("mmd_optimizer", "mmd_learning_rate", "reference_refresh", "mmd_batches", "target_gap")


@dataclass(frozen=True)
class DefenseConfig:
    """A defense by name with its parameters; fields that the defense does not use are ignored.

    >>> DefenseConfig("mmd-mixup", mmd_weight=6.5).to_dict()["mmd_weight"]
    6.5
    >>> DefenseConfig("l2").to_dict()
    {'name': 'l2', 'l2': 0.001}
    >>> DefenseConfig("mmd", target_gap=0.2, mmd_optimizer="sgd").to_dict()["target_gap"]
    0.2
    """

    name: str = "none"
    # MMD set regularizer and mixup (Li et al. 2021); mmd_weight None: the schedule's default
    mmd_weight: float | None = None
    mmd_schedule: str = "paper"
    mmd_bandwidths: tuple[float, ...] = (1.0,)
    gap_threshold: float = 0.03
    mixup_alpha: float = 1.0
    # the paper schedule's MMD steps: "shared" (the training optimizer) or "sgd" (their own SGD with
    # momentum 0.9 at mmd_learning_rate; None: the training learning rate); reference outputs computed
    # "per_pass" or "per_batch"; target_gap: adapt lambda so the train/reference gap settles there
    mmd_optimizer: str = "shared"
    mmd_learning_rate: float | None = None
    reference_refresh: str = "per_pass"
    mmd_batches: str = "class_sorted"
    target_gap: float | None = None
    # simple baselines
    l2: float = 1e-3
    dropout: float = 0.5
    label_smoothing: float = 0.1
    patience: int = 5
    # DP-SGD (tensorflow-privacy): noise_multiplier or target_epsilon
    l2_norm_clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None
    microbatches: int | None = None
    dp_path: str = "auto"
    # adversarial regularization (Nasr et al. 2018) and RelaxLoss (Chen et al. 2022)
    adv_weight: float = 1.0
    attack_steps: int = 1
    relax_alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in DEFENSE_NAMES:
            raise TfmiError(f"unknown defense {self.name!r}: use one of {', '.join(DEFENSE_NAMES)}")
        if not isinstance(self.mmd_schedule, str) or self.mmd_schedule not in DEFAULT_MMD_WEIGHT:
            raise TfmiError(f"unknown MMD schedule {self.mmd_schedule!r}: use paper or joint")
        if self.mmd_weight is None and "mmd_weight" in self.relevant_fields():
            object.__setattr__(self, "mmd_weight", DEFAULT_MMD_WEIGHT[self.mmd_schedule])
        if self.name == "dp-sgd" and self.noise_multiplier is not None and self.target_epsilon is not None:
            raise TfmiError(
                "dp-sgd: give a noise multiplier (--noise-multiplier) or a target epsilon "
                "(--target-epsilon), not both"
            )
        for field in self.relevant_fields():
            if field != "mmd_schedule":
                object.__setattr__(self, field, self._checked(field, getattr(self, field)))
        if "target_gap" in self.relevant_fields():
            self._check_mmd_options()

    def _check_mmd_options(self) -> None:
        if self.target_gap is not None and self.mmd_weight == 0:
            raise TfmiError(f"{self.name}: target_gap adapts lambda starting from mmd_weight: give "
                            "--mmd-weight > 0")
        if self.mmd_learning_rate is not None and self.mmd_optimizer != "sgd":
            raise TfmiError(f"{self.name}: mmd_learning_rate is the learning rate of mmd_optimizer sgd: "
                            "give --mmd-optimizer sgd too, or drop it")
        pass_options = (self.mmd_optimizer, self.reference_refresh, self.mmd_batches)
        if self.mmd_schedule == "joint" and pass_options != ("shared", "per_pass", "class_sorted"):
            raise TfmiError(f"{self.name}: mmd_optimizer, reference_refresh and mmd_batches set the paper "
                            "schedule's MMD pass; the joint schedule has none")

    def _checked(self, field: str, value):
        """``value`` of ``field`` after its range check (None kept where it means the default)."""
        name = f"{self.name}: {field}"
        flag = _FLAGS.get(field, "--" + field.replace("_", "-"))
        if field in _CHOICES:
            if value not in _CHOICES[field]:
                raise TfmiError(f"{name} must be one of {', '.join(_CHOICES[field])}, got {value!r} ({flag})")
            return value
        ranges = dict(_RANGES[field])
        usual = ranges.pop("usual", None)
        hint = f"{flag}; {usual} is usual" if usual else flag
        if field == "mmd_bandwidths":
            values = (value,) if isinstance(value, Real) else value
            if not isinstance(values, tuple | list) or not values:
                raise TfmiError(f"{name} must be one or more numbers > 0, got {value!r} ({hint})")
            return tuple(check_number(name, v, hint=hint, **ranges) for v in values)
        if value is None and field in _OPTIONAL:
            return None
        return check_number(name, value, hint=hint, **ranges)

    def relevant_fields(self) -> tuple[str, ...]:
        return _RELEVANT[self.name]

    @staticmethod
    def default_text(field: str) -> str:
        """The default of ``field`` in words, for help texts (the one place defaults are stated).

        >>> DefenseConfig.default_text("mmd_weight"), DefenseConfig.default_text("l2")
        ('paper schedule 6.5, joint 5', '0.001')
        """
        if field == "mmd_weight":
            names = {"paper": "paper schedule"}
            return ", ".join(f"{names.get(k, k)} {v:g}" for k, v in DEFAULT_MMD_WEIGHT.items())
        if field == "noise_multiplier":
            return f"{DEFAULT_NOISE_MULTIPLIER:g} unless --target-epsilon is given"
        if field in _NONE_MEANS:
            return _NONE_MEANS[field]
        value = next(f.default for f in fields(DefenseConfig) if f.name == field)
        if isinstance(value, tuple):
            return " + ".join(f"{v:g}" for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    def to_dict(self) -> dict:
        """The defense's name and the parameters it uses (the later MMD options only where set)."""
        record = {"name": self.name}
        for field in fields(self):
            if field.name in self.relevant_fields():
                value = getattr(self, field.name)
                if field.name in _RECORDED_WHEN_SET and value == field.default:
                    continue
                record[field.name] = list(value) if isinstance(value, tuple) else value
        return record


#: defenses whose training changed after results of theirs were cached, and why; the revision enters
#: the cache keys of benchmark cells and shadow chunks (`defense_cache_fields`), so older results are
#: recomputed while every other defense keeps its keys
DEFENSE_REVISIONS = {
    "dp-sgd": 2,  # 2: a partial batch's noise is divided by the nominal batch size, not its own size
}


def defense_cache_fields(defense: DefenseConfig) -> dict:
    """What a cached result computed with ``defense`` is keyed by: its settings, and its training's
    revision (`DEFENSE_REVISIONS`) once that has changed.

    >>> defense_cache_fields(DefenseConfig("dp-sgd"))["defense_revision"]
    2
    >>> defense_cache_fields(DefenseConfig("none"))
    {'defense': {'name': 'none'}}
    """
    revision = DEFENSE_REVISIONS.get(defense.name)
    return {"defense": defense.to_dict(), **({"defense_revision": revision} if revision else {})}


#: the rows `default_defenses` picks: no defense, the paper's, DP-SGD. Mixup only on images, as its
#: authors ran it (MIST exp.sh: mixup on CIFAR, not on Location, Texas or Purchase); on Location30 it
#: lowers test accuracy at every MMD strength measured (README, Results)
DEFAULT_DEFENSES = {"images": ("none", "mmd-mixup", "dp-sgd"), "tabular": ("none", "mmd", "dp-sgd")}


def default_defenses(input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The defenses a benchmark compares when none are named: by the records' shape (flat: tabular).

    >>> default_defenses((8, 8, 1)), default_defenses((446,))
    (('none', 'mmd-mixup', 'dp-sgd'), ('none', 'mmd', 'dp-sgd'))
    """
    return DEFAULT_DEFENSES["tabular" if len(input_shape) == 1 else "images"]
