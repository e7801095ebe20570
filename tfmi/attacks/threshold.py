"""Threshold attacks: predict *member* when one per-example signal passes a threshold.

Each attack turns a signal into a membership score (higher = more likely member) and picks its
threshold on shadow models, whose membership the attacker knows (``threshold_source="shadow"``),
globally or per class. `ThresholdAttack.evaluate_oracle` instead picks the threshold on the target's
own membership labels: an upper bound no real attacker reaches, labelled ``"oracle"``. The gap attack
(Yeom et al. 2018: member iff correctly classified) needs no threshold.

>>> import numpy as np
>>> from tfmi.attacks.signals import compute_signals
>>> rng = np.random.default_rng(0)
>>> members = compute_signals(rng.normal(size=(200, 3)) + [4, 0, 0], np.zeros(200, int), kind="logits")
>>> others = compute_signals(rng.normal(size=(200, 3)), np.zeros(200, int), kind="logits")
>>> attack = ThresholdAttack("loss").fit_on_membership(members, others)
>>> attack.evaluate(members, others).auc > 0.9
True
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from tfmi.attacks.metrics import AttackResult, check_membership, evaluate_scores
from tfmi.attacks.names import THRESHOLD_ATTACK_NAMES
from tfmi.attacks.signals import Signals
from tfmi.data.dataset import check_labels
from tfmi.errors import TfmiError


@dataclass(frozen=True)
class _Rule:
    signal: str  # field of Signals
    sign: float  # +1: higher signal = member; -1: lower signal = member


THRESHOLD_ATTACKS: dict[str, _Rule] = {
    "gap": _Rule("correct", 1.0),
    "loss": _Rule("loss", -1.0),
    "confidence": _Rule("max_confidence", 1.0),
    "true_class_confidence": _Rule("true_class_probability", 1.0),
    "entropy": _Rule("entropy", -1.0),
    "modified_entropy": _Rule("modified_entropy", -1.0),
}
assert tuple(THRESHOLD_ATTACKS) == THRESHOLD_ATTACK_NAMES, "tfmi.attacks.names lists the threshold attacks"


class ThresholdAttack:
    """One signal, one threshold (or one per class), fitted on shadow-model signals.

    Follows scikit-learn conventions: hyper-parameters in ``__init__``, `fit` returns ``self``,
    learned state in attributes ending in ``_``.

    Args:
        attack: one of `THRESHOLD_ATTACKS` (``"gap"``, ``"loss"``, ``"confidence"``,
            ``"true_class_confidence"``, ``"entropy"``, ``"modified_entropy"``).
        per_class: one threshold per class (classes unseen in the shadow data use the global one).
    """

    def __init__(self, attack: str = "loss", per_class: bool = False):
        if attack not in THRESHOLD_ATTACKS:
            raise TfmiError(f"unknown threshold attack {attack!r}: use one of {', '.join(THRESHOLD_ATTACKS)}")
        self.attack = attack
        self.per_class = per_class

    @property
    def name(self) -> str:
        return f"{self.attack}{' per class' if self.per_class else ''}"

    def raw_scores(self, signals: Signals) -> np.ndarray:
        """The signal turned into a membership score (higher = more likely member)."""
        _check_signals(signals)
        rule = THRESHOLD_ATTACKS[self.attack]
        return rule.sign * np.asarray(getattr(signals, rule.signal), dtype=np.float64)

    def fit(self, signals: Signals, labels: np.ndarray, is_member: np.ndarray) -> ThresholdAttack:
        """Choose thresholds maximizing balanced accuracy on shadow signals with known membership."""
        scores = self.raw_scores(signals)
        labels = check_labels(labels, None, "shadow labels")
        is_member = check_membership(is_member, None, "shadow membership flags")
        if not (len(scores) == len(labels) == len(is_member)):
            raise TfmiError(
                f"shadow signals ({len(scores)}), labels ({len(labels)}) and membership flags "
                f"({len(is_member)}) must have one entry per example"
            )
        if self.attack == "gap":
            self.threshold_ = 1.0  # a fixed rule: member iff correct
            self.class_thresholds_ = {}
            return self
        self.threshold_ = _best_threshold(scores, is_member, self.name)
        self.class_thresholds_ = {}
        if self.per_class:
            for cls in np.unique(labels):
                in_class = labels == cls
                if is_member[in_class].any() and (~is_member[in_class]).any():
                    self.class_thresholds_[int(cls)] = _best_threshold(
                        scores[in_class], is_member[in_class], self.name)
        return self

    def fit_on_membership(self, member_signals: Signals, non_member_signals: Signals) -> ThresholdAttack:
        """`fit` on shadow signals already split into members and non-members (global threshold)."""
        if self.per_class:
            raise TfmiError(
                "per-class thresholds need the shadow labels: use fit(signals, labels, is_member)"
            )
        _check_signals(member_signals)
        _check_signals(non_member_signals)
        both = _concat(member_signals, non_member_signals)
        is_member = np.r_[np.ones(_size(member_signals), bool), np.zeros(_size(non_member_signals), bool)]
        return self.fit(both, np.zeros(len(is_member), int), is_member)

    def score_samples(self, signals: Signals, labels: np.ndarray | None = None) -> np.ndarray:
        """Membership scores; with per-class thresholds, the score minus the example's class threshold."""
        scores = self.raw_scores(signals)
        if not self.per_class or not getattr(self, "class_thresholds_", None):
            return scores
        if labels is None:
            raise TfmiError("a per-class threshold attack needs the examples' labels to score them")
        labels = check_labels(labels)
        if len(labels) != len(scores):
            raise TfmiError(f"{len(scores)} signals but {len(labels)} labels: give one label per example")
        offsets = np.array([self.class_thresholds_.get(int(c), self.threshold_) for c in labels])
        return scores - offsets + self.threshold_

    def evaluate(
        self,
        member_signals: Signals,
        non_member_signals: Signals,
        member_labels: np.ndarray | None = None,
        non_member_labels: np.ndarray | None = None,
        *,
        bootstrap: int = 0,
        seed: int = 0,
    ) -> AttackResult:
        """The attack on the target's members and non-members with the fitted (shadow) threshold."""
        if not hasattr(self, "threshold_"):
            raise TfmiError(f"{self.name} attack is not fitted: call fit on shadow-model signals first")
        members = self.score_samples(member_signals, member_labels)
        others = self.score_samples(non_member_signals, non_member_labels)
        source = "none" if self.attack == "gap" else "shadow"
        return evaluate_scores(members, others, attack=self.name, threshold=self.threshold_,
                               threshold_source=source, bootstrap=bootstrap, seed=seed)

    def evaluate_oracle(
        self, member_signals: Signals, non_member_signals: Signals, *, bootstrap: int = 0, seed: int = 0
    ) -> AttackResult:
        """Upper bound: the threshold chosen on the target's own membership labels (``"oracle"``)."""
        return evaluate_scores(self.raw_scores(member_signals), self.raw_scores(non_member_signals),
                               attack=self.name, threshold=None, threshold_source="oracle",
                               bootstrap=bootstrap, seed=seed)


def _best_threshold(scores: np.ndarray, is_member: np.ndarray, name: str) -> float:
    if is_member.all() or not is_member.any():
        raise TfmiError(f"{name}: the shadow data needs both members and non-members to set a threshold")
    return float(evaluate_scores(scores[is_member], scores[~is_member], attack=name).threshold)


def _check_signals(signals: Signals) -> None:
    if not isinstance(signals, Signals):
        raise TfmiError(
            f"threshold attacks take Signals, got {type(signals).__name__}: compute them with "
            "tfmi.attacks.compute_signals(outputs, labels) or signals_for(model, x, y)"
        )


def _size(signals: Signals) -> int:
    return len(signals.loss)


def _concat(a: Signals, b: Signals) -> Signals:
    return Signals(**{f.name: np.concatenate([getattr(a, f.name), getattr(b, f.name)]) for f in fields(a)})
