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
_RELEVANT = {
    "none": (),
    "mmd": ("mmd_weight", "mmd_schedule", "mmd_bandwidths", "gap_threshold"),
    "mixup": ("mixup_alpha",),
    "mmd-mixup": ("mmd_weight", "mmd_schedule", "mmd_bandwidths", "gap_threshold", "mixup_alpha"),
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
_OPTIONAL = ("noise_multiplier", "target_epsilon", "delta", "microbatches")
# what None means for a field, in words
_NONE_MEANS = {
    "target_epsilon": "none: the noise multiplier decides",
    "delta": "min(1e-5, 1/(10 n)) for n training records",
    "microbatches": "one per example",
}
# command-line flags whose name is not the field's
_FLAGS = {"mmd_bandwidths": "--mmd-bandwidth"}
DP_PATHS: tuple[str, ...] = ("auto", "fast", "dpmodel", "vectorized", "microbatched")


@dataclass(frozen=True)
class DefenseConfig:
    """A defense by name with its parameters; fields that the defense does not use are ignored.

    >>> DefenseConfig("mmd-mixup", mmd_weight=6.5).to_dict()["mmd_weight"]
    6.5
    >>> DefenseConfig("l2").to_dict()
    {'name': 'l2', 'l2': 0.001}
    """

    name: str = "none"
    # MMD set regularizer and mixup (Li et al. 2021); mmd_weight None: the schedule's default
    mmd_weight: float | None = None
    mmd_schedule: str = "paper"
    mmd_bandwidths: tuple[float, ...] = (1.0,)
    gap_threshold: float = 0.03
    mixup_alpha: float = 1.0
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

    def _checked(self, field: str, value):
        """``value`` of ``field`` after its range check (None kept where it means the default)."""
        name = f"{self.name}: {field}"
        flag = _FLAGS.get(field, "--" + field.replace("_", "-"))
        if field == "dp_path":
            if value not in DP_PATHS:
                raise TfmiError(f"{name} must be one of {', '.join(DP_PATHS)}, got {value!r} ({flag})")
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
        """The defense's name and the parameters it uses."""
        record = {"name": self.name}
        for field in fields(self):
            if field.name in self.relevant_fields():
                value = getattr(self, field.name)
                record[field.name] = list(value) if isinstance(value, tuple) else value
        return record
