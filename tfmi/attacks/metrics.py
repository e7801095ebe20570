"""Metrics for membership inference attacks: ROC, AUC, advantage, TPR at low FPR, bootstrap intervals.

Pure numpy: no TensorFlow. A membership score is a number per example where higher means "more
likely a member". Conventions:

* **ROC start point.** `roc_curve` returns one point per distinct score plus a leading ``(0, 0)`` point
  with threshold ``+inf`` (predict nobody a member), exactly like
  ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``. Point ``i`` means "member iff
  ``score >= thresholds[i]``"; thresholds decrease and the last point is ``(1, 1)``.
* **TPR at a fixed FPR** is the largest TPR among ROC points whose FPR is ``<=`` the target (the
  conservative convention: no interpolation between points). It is ``None`` when the target FPR is
  below ``1 / num_non_members``: with fewer non-members than that, the FPR cannot be measured.
* **Bootstrap.** Members and non-members are resampled separately with replacement (their counts stay
  fixed) with a seeded ``numpy.random.Generator``; intervals are percentile intervals.
* **Two advantages.** ``advantage`` is max over thresholds of TPR - FPR, the threshold-free summary
  tensorflow-privacy calls "attacker advantage": the threshold is picked with the target's own labels,
  so it is what the scores allow, not what an attacker gets. ``achieved_advantage`` is TPR - FPR at
  the attack's own threshold or decision rule (shadow-calibrated, or fixed), on every non-oracle row.
* **Empirical epsilon.** `epsilon_lower_bound` turns TPR and FPR at the attack's own threshold into the
  largest epsilon the evidence proves for a delta (Jagielski et al. 2020), with Clopper-Pearson
  intervals: a (epsilon, delta)-DP model cannot be attacked better than that.

>>> import numpy as np
>>> r = evaluate_scores(np.array([0.9, 0.8, 0.4]), np.array([0.5, 0.3, 0.1]), attack="loss")
>>> r.summary()
'loss (oracle): acc 0.833, adv 0.667, AUC 0.889, TPR@0.1% n/a, TPR@1% n/a, TPR@10% n/a'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfmi.errors import TfmiError
from tfmi.validation import check_number

__all__ = [
    "DEFAULT_DELTA",
    "FPR_TARGETS",
    "THRESHOLD_SOURCES",
    "AttackResult",
    "check_membership",
    "epsilon_lower_bound",
    "evaluate_scores",
    "roc_curve",
    "tpr_at_fpr",
]

FPR_TARGETS: tuple[float, ...] = (0.001, 0.01, 0.1)
THRESHOLD_SOURCES: tuple[str, ...] = ("shadow", "oracle", "none")
MAX_STORED_ROC_POINTS = 1000
#: delta of the empirical epsilon lower bound when none is given (tensorflow-privacy's usual 1e-5)
DEFAULT_DELTA = 1e-5
#: joint confidence of the two Clopper-Pearson bounds behind an epsilon lower bound
EPSILON_CONFIDENCE = 0.95

# --------------------------------------------------------------------------------------------- checks


def _check_scores(scores: Any, what: str) -> np.ndarray:
    """Return ``scores`` as a float64 1-D array after checking it is non-empty, numeric and finite."""
    x = np.asarray(scores)
    if x.ndim != 1:
        raise TfmiError(f"{what} must be a 1-D array with one score per example, got shape {x.shape}")
    if x.size == 0:
        raise TfmiError(f"{what} is empty: give at least one example")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TfmiError(f"{what} must be numeric, got dtype {x.dtype}: give one number per example "
                        "(higher = more likely a member)")
    x = x.astype(np.float64, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        raise TfmiError(
            f"{what} contain {int(bad.sum())} NaN or infinite value(s), first at index "
            f"{int(np.argmax(bad))}: fix the signal (e.g. clip log-probabilities) before scoring"
        )
    return x


def check_membership(is_member: Any, n: int | None = None, what: str = "is_member") -> np.ndarray:
    """``is_member`` as a 1-D boolean array (0/1 numbers accepted), of length ``n`` when given.

    >>> check_membership([1, 0, 1]).tolist()
    [True, False, True]
    """
    y = np.asarray(is_member)
    if y.ndim != 1:
        raise TfmiError(f"{what} must be a 1-D boolean array (one flag per example), got shape {y.shape}")
    if y.size == 0:
        raise TfmiError(f"{what} is empty: give at least one example")
    if n is not None and len(y) != n:
        raise TfmiError(f"scores have {n} entries but {what} has {len(y)}: they must match (one flag each)")
    if y.dtype != bool:
        if not np.issubdtype(y.dtype, np.number):
            detail = f"dtype {y.dtype}"
        elif not np.all((y == 0) | (y == 1)):
            detail = f"the value {y[(y != 0) & (y != 1)][0].item()!r}"
        else:
            return y.astype(bool)
        raise TfmiError(
            f"{what} must be boolean (or 0/1): True for members, False for non-members; got {detail}: "
            "convert the flags first (e.g. flags == 'member')"
        )
    return y


def _check_is_member(is_member: Any, n: int) -> np.ndarray:
    y = check_membership(is_member, n)
    if y.all() or not y.any():
        which = "non-members" if y.all() else "members"
        raise TfmiError(f"is_member has no {which}: the ROC needs at least one member and one non-member")
    return y


def _check_fpr(fpr: float) -> float:
    return check_number("a target FPR", fpr, low=0, high=1, low_inclusive=False)


def _check_curve(values: Any, what: str) -> np.ndarray:
    """An ROC coordinate array (fpr or tpr): 1-D, numeric, within [0, 1]."""
    x = np.asarray(values)
    if x.ndim != 1 or x.size == 0 or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TfmiError(
            f"{what} must be a non-empty 1-D array of rates in [0, 1], got {x.dtype} of shape {x.shape}: "
            "pass the arrays roc_curve returns"
        )
    x = x.astype(np.float64)
    if not np.all((x >= 0) & (x <= 1)):
        raise TfmiError(f"{what} must hold rates in [0, 1]: pass the arrays roc_curve returns")
    return x


# ------------------------------------------------------------------------------------------------ ROC


def _roc_counts(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive counts, true positive counts, thresholds), with the (0, 0, +inf) start point."""
    return _roc_counts_split(scores[is_member], scores[~is_member])


def _roc_counts_split(
    members: np.ndarray, non_members: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_roc_counts` from the two score sets: each is sorted on its own (numpy's fast unstable sort),
    then a stable argsort of the two sorted runs merges them in linear time (timsort finds the runs),
    about twice as fast as one stable argsort of all scores. Ties need no order: only run ends count."""
    descending = np.concatenate([np.sort(-members), np.sort(-non_members)])
    order = np.argsort(descending, kind="stable")
    s = -descending[order]
    y = order < len(members)
    last = np.flatnonzero(np.diff(s))  # last index of each run of equal scores, except the final one
    last = np.append(last, len(s) - 1)
    tps = np.cumsum(y, dtype=np.int64)[last]
    fps = (last + 1) - tps
    return (
        np.concatenate([[0], fps]),
        np.concatenate([[0], tps]),
        np.concatenate([[np.inf], s[last]]),
    )


def roc_curve(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of a membership score: ``(fpr, tpr, thresholds)``, one point per distinct score.

    Point ``i`` predicts "member" iff ``score >= thresholds[i]``. The first point is ``(0, 0)`` with
    threshold ``+inf``, as in ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``, which this
    matches exactly. One sort, then cumulative sums: O(n log n).

    >>> fpr, tpr, thr = roc_curve(np.array([0.9, 0.5, 0.5, 0.1]), np.array([True, True, False, False]))
    >>> fpr.tolist(), tpr.tolist(), thr.tolist()
    ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0], [inf, 0.9, 0.5, 0.1])
    """
    s = _check_scores(scores, "scores")
    y = _check_is_member(is_member, len(s))
    fps, tps, thresholds = _roc_counts(s, y)
    return fps / fps[-1], tps / tps[-1], thresholds


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoid rule along the last axis (the same sum as ``np.trapz``)."""
    return (np.diff(x, axis=-1) * (y[..., 1:] + y[..., :-1]) / 2.0).sum(axis=-1)


def _tpr_at_fpr_counts(
    fps: np.ndarray, tps: np.ndarray, n_non: int, n_mem: int, target: float
) -> float | None:
    """Largest TPR among points with FPR <= target, or None when target < 1 / n_non."""
    allowed = math.floor(target * n_non + 1e-9)  # max false positives with FPR <= target
    if allowed < 1:
        return None
    k = int(np.searchsorted(fps, allowed, side="right")) - 1  # fps and tps are nondecreasing
    return float(tps[k] / n_mem)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float, num_non_members: int) -> float | None:
    """TPR at a target FPR: the largest TPR among ROC points with FPR <= target.

    ``None`` when ``target < 1 / num_non_members`` (that FPR cannot be measured on so few non-members).

    >>> tpr_at_fpr(np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0, 1.0]), 0.5, 2)
    1.0
    >>> tpr_at_fpr(np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0, 1.0]), 0.1, 2) is None
    True
    """
    target = _check_fpr(target)
    num_non_members = check_number("num_non_members", num_non_members, low=1, integer=True)
    fpr, tpr = _check_curve(fpr, "fpr"), _check_curve(tpr, "tpr")
    if len(fpr) != len(tpr):
        raise TfmiError(
            f"fpr has {len(fpr)} points but tpr has {len(tpr)}: pass the arrays roc_curve returns"
        )
    if target * num_non_members + 1e-9 < 1:
        return None
    k = int(np.searchsorted(fpr, target * (1 + 1e-12), side="right")) - 1
    return float(tpr[max(k, 0)])


def _downsample(
    fpr: np.ndarray, tpr: np.ndarray, n_non: int, max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points ROC points: half evenly spaced by index, half at log-spaced FPRs."""
    n = len(fpr)
    if n <= max_points:
        return fpr.copy(), tpr.copy()
    half = max_points // 2
    even = np.linspace(0, n - 1, half).round().astype(np.int64)
    log_targets = np.logspace(np.log10(1.0 / n_non), 0.0, max_points - half)
    at_log = np.clip(np.searchsorted(fpr, log_targets, side="right") - 1, 0, n - 1)
    keep = np.unique(np.concatenate([even, at_log, [0, n - 1]]))
    return fpr[keep], tpr[keep]


# ------------------------------------------------------------------------------- empirical epsilon


def epsilon_lower_bound(
    true_positives: int,
    num_members: int,
    false_positives: int,
    num_non_members: int,
    *,
    delta: float = DEFAULT_DELTA,
    confidence: float = EPSILON_CONFIDENCE,
) -> float:
    """The largest epsilon an attack's counts prove, at ``confidence``, for a given ``delta``.

    An (epsilon, delta)-DP training algorithm bounds every membership test: TPR <= e^eps FPR + delta
    and TNR <= e^eps FNR + delta (Kairouz et al. 2015; Jagielski et al. 2020). With a Clopper-Pearson
    lower bound on TPR and upper bound on FPR, each at level (1 - confidence) / 2, both inequalities
    give an epsilon that the model's guarantee cannot be below; the larger one (or 0) is returned.
    The threshold must not be chosen on the same labels (use the attack's own rule), or the bound
    is optimistic.

    >>> round(epsilon_lower_bound(1000, 1000, 0, 1000), 2)       # a perfect attack on 1,000 + 1,000
    5.6
    >>> epsilon_lower_bound(500, 1000, 500, 1000)                # a coin flip proves nothing
    0.0
    """
    from scipy.stats import beta

    n_m = check_number("num_members", num_members, low=1, integer=True)
    n_n = check_number("num_non_members", num_non_members, low=1, integer=True)
    tp = check_number("true_positives", true_positives, low=0, high=n_m, integer=True)
    fp = check_number("false_positives", false_positives, low=0, high=n_n, integer=True)
    delta = check_number("delta", delta, low=0, high=1, high_inclusive=False)
    confidence = check_number("confidence", confidence, low=0, high=1, low_inclusive=False,
                              high_inclusive=False)
    tail = (1 - confidence) / 2
    tpr_low = 0.0 if tp == 0 else float(beta.ppf(tail, tp, n_m - tp + 1))
    fpr_high = 1.0 if fp == n_n else float(beta.ppf(1 - tail, fp + 1, n_n - fp))
    bounds = [0.0]
    if tpr_low - delta > 0:
        bounds.append(math.log((tpr_low - delta) / fpr_high))
    if 1 - fpr_high - delta > 0:
        bounds.append(math.log((1 - fpr_high - delta) / (1 - tpr_low)))
    return max(bounds)


# ------------------------------------------------------------------------------------------ the result


def _fpr_label(f: float) -> str:
    return f"{f * 100:g}%"


@dataclass(frozen=True, eq=False)
class AttackResult:
    """How well one attack separates members from non-members.

    ``accuracy`` is balanced accuracy ``(TPR + TNR) / 2`` at ``threshold`` (member iff score >= threshold),
    chosen per ``threshold_source``: "shadow" (calibrated on shadow models), "oracle" (chosen on the
    target's own membership labels: an upper bound) or "none" (a fixed rule such as correctness).
    ``advantage`` is max over thresholds of TPR - FPR (threshold-free, picked with the target's
    labels); ``achieved_advantage`` is TPR - FPR at ``threshold``, what the attack itself achieves
    (``None`` on oracle rows); ``auc`` is exact even when ``roc`` (the stored ``(fpr, tpr)`` arrays)
    is downsampled; ``tpr_at_fpr`` maps 0.001, 0.01, 0.1 to a TPR or ``None``. ``true_positives`` and
    ``false_positives`` count predicted members at ``threshold``, for `epsilon_lower_bound`.

    >>> r = evaluate_scores(np.array([1.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0]), attack="gap",
    ...                     threshold=1.0, threshold_source="none")
    >>> round(r.accuracy, 4), round(r.advantage, 4)
    (0.6667, 0.3333)
    >>> AttackResult.from_json(r.to_json()) == r
    True
    """

    attack: str
    accuracy: float
    threshold: float
    threshold_source: str
    advantage: float
    auc: float
    tpr_at_fpr: dict[float, float | None]
    roc: tuple[np.ndarray, np.ndarray]
    num_members: int
    num_non_members: int
    auc_ci: tuple[float, float] | None = None
    tpr_at_fpr_ci: dict[float, tuple[float, float] | None] | None = None
    true_positives: int | None = None
    false_positives: int | None = None

    @property
    def achieved_advantage(self) -> float | None:
        """TPR - FPR at the attack's own threshold; None for oracle rows (not an attack)."""
        if self.threshold_source == "oracle" or self.true_positives is None or self.false_positives is None:
            return None
        return self.true_positives / self.num_members - self.false_positives / self.num_non_members

    def epsilon_lower_bound(self, delta: float = DEFAULT_DELTA,
                            confidence: float = EPSILON_CONFIDENCE) -> float | None:
        """`epsilon_lower_bound` at the attack's own threshold; None for oracle rows."""
        if self.achieved_advantage is None:
            return None
        return epsilon_lower_bound(self.true_positives, self.num_members, self.false_positives,
                                   self.num_non_members, delta=delta, confidence=confidence)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (arrays as lists, FPR keys as strings) that `from_dict` inverts exactly."""
        return {
            "attack": self.attack,
            "accuracy": float(self.accuracy),
            "threshold": float(self.threshold),
            "threshold_source": self.threshold_source,
            "advantage": float(self.advantage),
            "auc": float(self.auc),
            "tpr_at_fpr": {
                repr(float(f)): (None if v is None else float(v)) for f, v in self.tpr_at_fpr.items()
            },
            "roc": {
                "fpr": np.asarray(self.roc[0], float).tolist(),
                "tpr": np.asarray(self.roc[1], float).tolist(),
            },
            "num_members": int(self.num_members),
            "num_non_members": int(self.num_non_members),
            "true_positives": None if self.true_positives is None else int(self.true_positives),
            "false_positives": None if self.false_positives is None else int(self.false_positives),
            "achieved_advantage": self.achieved_advantage,
            "epsilon_lower_bound": self.epsilon_lower_bound(),
            "epsilon_lower_bound_delta": DEFAULT_DELTA,
            "auc_ci": None if self.auc_ci is None else [float(v) for v in self.auc_ci],
            "tpr_at_fpr_ci": None
            if self.tpr_at_fpr_ci is None
            else {
                repr(float(f)): (None if ci is None else [float(v) for v in ci])
                for f, ci in self.tpr_at_fpr_ci.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AttackResult:
        """Rebuild a result written by `to_dict`."""
        if not isinstance(d, Mapping):
            raise TfmiError(
                f"not a saved AttackResult: expected a dict written by to_dict(), got {type(d).__name__}"
            )
        try:
            ci = d.get("tpr_at_fpr_ci")
            return cls(
                attack=str(d["attack"]),
                accuracy=float(d["accuracy"]),
                threshold=float(d["threshold"]),
                threshold_source=str(d["threshold_source"]),
                advantage=float(d["advantage"]),
                auc=float(d["auc"]),
                tpr_at_fpr={float(f): (None if v is None else float(v)) for f, v in d["tpr_at_fpr"].items()},
                roc=(np.asarray(d["roc"]["fpr"], np.float64), np.asarray(d["roc"]["tpr"], np.float64)),
                num_members=int(d["num_members"]),
                num_non_members=int(d["num_non_members"]),
                true_positives=None if d.get("true_positives") is None else int(d["true_positives"]),
                false_positives=None if d.get("false_positives") is None else int(d["false_positives"]),
                auc_ci=None if d.get("auc_ci") is None else (float(d["auc_ci"][0]), float(d["auc_ci"][1])),
                tpr_at_fpr_ci=None
                if ci is None
                else {float(f): (None if v is None else (float(v[0]), float(v[1]))) for f, v in ci.items()},
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise TfmiError(
                f"not a saved AttackResult ({type(e).__name__}: {e}): write it with to_dict()"
            ) from None

    def to_json(self, **kwargs: Any) -> str:
        """`to_dict` as a JSON string (keyword arguments go to `json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> AttackResult:
        """Rebuild a result written by `to_json`."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise TfmiError(f"not valid JSON for an AttackResult: {e}") from None
        if not isinstance(d, dict):
            raise TfmiError("not a saved AttackResult: expected a JSON object written by to_json()")
        return cls.from_dict(d)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttackResult):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def summary(self) -> str:
        """One line: ``loss (shadow): acc 0.712, adv 0.424, AUC 0.781, TPR@0.1% n/a, TPR@1% 0.052, ...``."""
        parts = [f"acc {self.accuracy:.3f}", f"adv {self.advantage:.3f}"]
        if self.achieved_advantage is not None:
            parts.append(f"achieved adv {self.achieved_advantage:.3f}")
        parts.append(f"AUC {self.auc:.3f}")
        for f, v in self.tpr_at_fpr.items():
            parts.append(f"TPR@{_fpr_label(f)} " + ("n/a" if v is None else f"{v:.3f}"))
        return f"{self.attack} ({self.threshold_source}): " + ", ".join(parts)


# -------------------------------------------------------------------------------------------- evaluate


def _bootstrap(
    members: np.ndarray, non_members: np.ndarray, b: int, confidence: float, seed: int
) -> tuple[tuple[float, float], dict[float, tuple[float, float] | None]]:
    """Percentile intervals for AUC and TPR@FPR from b resamples, vectorized over chunks of resamples."""
    n_m, n_n = len(members), len(non_members)
    uniq = np.unique(np.concatenate([members, non_members]))
    g = len(uniq)
    # group index in *descending* score order, so cumulative sums walk the ROC from (0, 0)
    gm = (g - 1 - np.searchsorted(uniq, members)).astype(np.int64)
    gn = (g - 1 - np.searchsorted(uniq, non_members)).astype(np.int64)
    rng = np.random.default_rng(seed)
    measurable = [f for f in FPR_TARGETS if math.floor(f * n_n + 1e-9) >= 1]
    aucs = np.empty(b)
    tprs = np.empty((len(measurable), b))
    chunk = max(1, min(b, 4_000_000 // max(n_m + n_n, g)))
    for start in range(0, b, chunk):
        c = min(chunk, b - start)
        offsets = (np.arange(c, dtype=np.int64) * g)[:, None]
        im = gm[rng.integers(0, n_m, size=(c, n_m))] + offsets
        inn = gn[rng.integers(0, n_n, size=(c, n_n))] + offsets
        tp = np.bincount(im.ravel(), minlength=c * g).reshape(c, g).cumsum(axis=1)
        fp = np.bincount(inn.ravel(), minlength=c * g).reshape(c, g).cumsum(axis=1)
        zeros = np.zeros((c, 1), np.int64)
        tp = np.concatenate([zeros, tp], axis=1)
        fp = np.concatenate([zeros, fp], axis=1)
        aucs[start : start + c] = _trapezoid(tp / n_m, fp / n_n)
        for j, f in enumerate(measurable):
            allowed = math.floor(f * n_n + 1e-9)
            k = (fp <= allowed).sum(axis=1) - 1  # last point with at most `allowed` false positives
            tprs[j, start : start + c] = tp[np.arange(c), k] / n_m
    lo, hi = (1 - confidence) / 2, 1 - (1 - confidence) / 2

    def interval(v: np.ndarray) -> tuple[float, float]:
        q = np.quantile(v, [lo, hi])
        return float(q[0]), float(q[1])

    tpr_ci: dict[float, tuple[float, float] | None] = {f: None for f in FPR_TARGETS}
    for j, f in enumerate(measurable):
        tpr_ci[f] = interval(tprs[j])
    return interval(aucs), tpr_ci


def evaluate_scores(
    member_scores: Any,
    non_member_scores: Any,
    *,
    attack: str,
    threshold: float | None = None,
    threshold_source: str = "oracle",
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    max_roc_points: int = MAX_STORED_ROC_POINTS,
) -> AttackResult:
    """Score an attack from the membership scores of members and non-members (higher = member).

    With ``threshold=None`` the threshold is the oracle one maximizing balanced accuracy on these very
    labels (``threshold_source`` must be "oracle"); otherwise predict member iff ``score >= threshold``.
    ``bootstrap=B > 0`` adds percentile intervals at level ``confidence`` from B resamples.

    >>> rng = np.random.default_rng(0)
    >>> r = evaluate_scores(rng.normal(1, 1, 2000), rng.normal(0, 1, 2000), attack="loss",
    ...                     bootstrap=200)
    >>> 0.7 < r.auc < 0.8, r.auc_ci[0] < r.auc < r.auc_ci[1], r.tpr_at_fpr[0.001] is not None
    (True, True, True)
    """
    if not isinstance(attack, str) or not attack:
        raise TfmiError(f"attack must be a non-empty name such as 'loss', got {attack!r}")
    if threshold_source not in THRESHOLD_SOURCES:
        raise TfmiError(
            f"unknown threshold_source {threshold_source!r}: use one of {', '.join(THRESHOLD_SOURCES)}"
        )
    if threshold is None and threshold_source != "oracle":
        raise TfmiError(
            f"threshold_source={threshold_source!r} needs the threshold itself: pass threshold=..., "
            "or leave threshold=None with threshold_source='oracle'"
        )
    if threshold is not None:
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise TfmiError(f"threshold must be a number, got {threshold!r}") from None
        if not math.isfinite(threshold):
            raise TfmiError(f"threshold must be finite, got {threshold!r}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 0:
        raise TfmiError(f"bootstrap must be an integer >= 0 (0 turns it off), got {bootstrap!r}")
    check_number("confidence", confidence, low=0, high=1, low_inclusive=False, high_inclusive=False,
                 hint="0.95 is usual")
    check_number("seed", seed, integer=True)
    if isinstance(max_roc_points, bool) or not isinstance(max_roc_points, int) or max_roc_points < 4:
        raise TfmiError(f"max_roc_points must be an integer >= 4, got {max_roc_points!r}")

    m = _check_scores(member_scores, "member_scores")
    nm = _check_scores(non_member_scores, "non_member_scores")
    n_m, n_n = len(m), len(nm)
    fps, tps, thresholds = _roc_counts_split(m, nm)
    fpr, tpr = fps / n_n, tps / n_m
    auc = float(_trapezoid(tpr, fpr))
    gain = tpr - fpr
    advantage = float(gain.max())

    if threshold is None:
        best = 1 + int(np.argmax(gain[1:]))  # skip the +inf start point: ties go to the highest threshold
        threshold = float(thresholds[best])
        tp, fp = int(tps[best]), int(fps[best])
    else:
        tp, fp = int(np.count_nonzero(m >= threshold)), int(np.count_nonzero(nm >= threshold))
    accuracy = float((tp / n_m + 1.0 - fp / n_n) / 2.0)

    tpr_fixed = {f: _tpr_at_fpr_counts(fps, tps, n_n, n_m, f) for f in FPR_TARGETS}
    auc_ci = tpr_ci = None
    if bootstrap > 0:
        auc_ci, tpr_ci = _bootstrap(m, nm, int(bootstrap), float(confidence), seed)

    return AttackResult(
        attack=attack,
        accuracy=accuracy,
        threshold=threshold,
        threshold_source=threshold_source,
        advantage=advantage,
        auc=auc,
        tpr_at_fpr=tpr_fixed,
        roc=_downsample(fpr, tpr, n_n, max_roc_points),
        num_members=n_m,
        num_non_members=n_n,
        auc_ci=auc_ci,
        tpr_at_fpr_ci=tpr_ci,
        true_positives=tp,
        false_positives=fp,
    )
