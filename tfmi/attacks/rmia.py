"""The relative membership inference attack, RMIA (Zarifzadeh et al., ICML 2024, "Low-Cost High-Power
Membership Inference Attacks").

RMIA tests a record x against population records z: records the attacker holds that the target did
not train on (never the target's evaluated non-members). With ``p(r | model)`` the probability a model
gives record r's true class (`tfmi.attacks.signals.Signals.true_class_probability`) and ``p(r)`` its
estimate over reference (shadow) models::

    LR(x, z) = [p(x | target) / p(x)] / [p(z | target) / p(z)]
    score(x) = fraction of the population z with LR(x, z) > gamma

For an evaluated record x:

- **online**: ``p(x)`` is the mean over all shadows, IN and OUT (with balanced shadows
  ``(p_IN + p_OUT) / 2``); every evaluated record needs IN and OUT shadows;
- **offline**: ``p(x) = ((1 + a) * p_OUT(x) + (1 - a)) / 2`` with ``p_OUT`` the mean over the shadows
  that did not train x: the paper's linear correction for ``p_OUT`` underestimating ``p``.

For a population record z, in both variants, ``p(z)`` is the mean over all shadows, whatever they
give: OUT values for records outside their pool, IN and OUT ones for records in it. (ML Privacy
Meter's ``run_rmia`` applies the offline correction to ``p(z)`` too. That caps the population's
ratios at ``2 / (1 - a)``, so the strongest members beat every z and tie at score 1 with a few
non-members: on Location30 with 8 shadows, ~300 members and 4 to 6 non-members, TPR at
0.1 % FPR 0 instead of 0.18. For a fixed population only the order of x's ratio decides the ROC, so
``p(z)`` matters for such ties and for the scores' scale, not otherwise.)

**Offline a**, when not given, is tuned on the shadows alone (never the target's labels or outputs):
each shadow in turn plays the target and the other shadows the references, on every record whose
membership in that shadow is known (the fitted records and the population), compared with the
population records it did not train on (a record never with itself). The a of
`OFFLINE_A_GRID` with the best mean AUC wins (the smallest on ties). This follows ML Privacy Meter's
``tune_offline_a`` (same grid 0, 0.1, ..., 1), which attacks one paired model. With one shadow, or
when no shadow can be attacked (it needs 2 population records it did not train on, and IN and OUT
records with OUT references among the others), a = `DEFAULT_OFFLINE_A` = 0.3: ML Privacy
Meter's default (``get_out_ref_signals(..., offline_a=0.3)``) and the value of the authors' CIFAR-10
configurations (``research/2024_rmia/attack_configs/cifar10/rmia_offline_*.yaml``).

**Decision rule**: member iff ``score >= 0.5``: x's ratio beats (by the factor gamma) at least half
the population, i.e. x looks more like a member than the median population record (a majority of
the pairwise tests), akin to LiRA offline's ``phi >= mu_out``. It uses no labels:
``threshold_source="none"``.

**Cost**: the population ratios are sorted once; each x counts ``z`` with ``ratio_z < ratio_x / gamma``
(the pairwise test, strict) by binary search: ``O((N + Z) log Z)``; tuning a repeats that for each
shadow and each of the 11 values of a.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> k, n, z = 8, 400, 300
>>> in_mask = rng.permuted(np.tile(np.arange(k) < k // 2, (n, 1)), axis=1).T    # (K, N)
>>> def sigmoid(t):
...     return 1 / (1 + np.exp(-t))
>>> base, base_z = rng.normal(0, 2, n), rng.normal(0, 2, z)                     # per-record difficulty
>>> shadow_p = sigmoid(base + 2.0 * in_mask + rng.normal(0, 1, (k, n)))
>>> is_member = rng.random(n) < 0.5
>>> target_p = sigmoid(base + 2.0 * is_member + rng.normal(0, 1, n))
>>> pop_target_p = sigmoid(base_z + rng.normal(0, 1, z))                       # population: OUT for all
>>> pop_shadow_p = sigmoid(base_z + rng.normal(0, 1, (k, z)))
>>> rmia = RMIA(online=False).fit(shadow_p, in_mask, pop_target_p, pop_shadow_p)
>>> rmia.offline_a_source_, 0.0 <= rmia.offline_a_ <= 1.0
('tuned', True)
>>> rmia.evaluate(target_p, is_member).auc > 0.8
True
"""

from __future__ import annotations

import numpy as np

from tfmi.attacks.metrics import AttackResult, check_membership, evaluate_scores
from tfmi.errors import TfmiError
from tfmi.validation import check_number

#: the values of a tried when tuning (ML Privacy Meter's grid)
OFFLINE_A_GRID = tuple(i / 10 for i in range(11))
#: a with a single shadow (ML Privacy Meter's default; the authors' CIFAR-10 setting)
DEFAULT_OFFLINE_A = 0.3
#: the decision rule: member iff score >= this
DECISION_THRESHOLD = 0.5
#: floor of p(r) so a record every shadow gives probability 0 keeps a finite ratio
_MIN_REFERENCE = np.finfo(np.float64).tiny


class RMIA:
    """Relative membership inference from true-class probabilities of the target and shadow models.

    scikit-learn conventions: `fit` on the shadows' probabilities (and both the target's and the
    shadows' on the population) returns ``self``; `score_samples` and `evaluate` take the target's
    probabilities on the fitted records, in the same order.

    Args:
        online: use IN and OUT shadows (True) or only the shadows that did not train a record (False).
        gamma: the pairwise test's threshold, ``LR(x, z) > gamma``; > 0 (the paper uses 1 to 2).
        offline_a: a for the offline estimate of ``p(r)``, in [0, 1]; None tunes it on the shadows
            (`DEFAULT_OFFLINE_A` with one shadow). Ignored online.

    >>> rmia = RMIA(online=False, offline_a=0.5).fit(
    ...     [[0.5, 0.9]], [[False, False]], [0.4, 0.6], [[0.5, 0.5]])
    >>> rmia.score_samples([0.5, 0.95]).tolist()     # ratios 0.8 and ~1.03; population 0.8 and 1.2
    [0.0, 0.5]
    """

    def __init__(self, online: bool = True, gamma: float = 1.0, offline_a: float | None = None):
        if not isinstance(online, bool | np.bool_):
            raise TfmiError(f"online must be True or False, got {online!r}")
        self.online = bool(online)
        self.gamma = check_number("RMIA gamma", gamma, low=0, low_inclusive=False,
                                  hint="the likelihood-ratio threshold; 1 is usual")
        self.offline_a = None if offline_a is None else check_number(
            "RMIA offline_a", offline_a, low=0, high=1, hint="or None to tune it on the shadows")

    @property
    def name(self) -> str:
        parts = [f"RMIA {'online' if self.online else 'offline'}"]
        if self.gamma != 1.0:
            parts.append(f"gamma={self.gamma:g}")
        return ", ".join(parts)  # the fitted offline a is not part of the name: seeds may tune it apart

    def fit(
        self,
        shadow_probs: np.ndarray,
        in_mask: np.ndarray,
        population_target_probs: np.ndarray,
        population_shadow_probs: np.ndarray,
        *,
        population_in_mask: np.ndarray | None = None,
    ) -> RMIA:
        """Estimate ``p(x)`` for the evaluated records and sort the population's ratios.

        Args:
            shadow_probs: true-class probability of every shadow on every evaluated record, (K, N).
            in_mask: (K, N) booleans, True where the record trained that shadow.
            population_target_probs: the target's true-class probabilities on the population, (Z,).
            population_shadow_probs: the shadows' true-class probabilities on the population, (K, Z).
            population_in_mask: (K, Z) booleans for population records in the shadows' pool; default
                all False (OUT for every shadow). Only the tuning of offline a uses it.
        """
        probs = _probabilities(shadow_probs, "shadow probabilities", ndim=2)
        num_shadows, num_records = probs.shape
        in_mask = _mask(in_mask, probs.shape, "the IN mask", "shadow probabilities")
        pop_target = _probabilities(population_target_probs, "population target probabilities", ndim=1)
        pop_shadow = _probabilities(population_shadow_probs, "population shadow probabilities", ndim=2)
        if pop_shadow.shape != (num_shadows, len(pop_target)):
            raise TfmiError(
                f"population shadow probabilities have shape {pop_shadow.shape}, expected "
                f"({num_shadows}, {len(pop_target)}): one row per shadow, one column per population record"
            )
        if population_in_mask is None:
            pop_in = np.zeros(pop_shadow.shape, bool)
        else:
            pop_in = _mask(population_in_mask, pop_shadow.shape, "the population IN mask",
                           "population shadow probabilities")
        if self.online:
            if num_shadows < 2:
                raise TfmiError(f"online RMIA needs at least 2 shadow models (IN and OUT), got "
                                f"{num_shadows}: train more shadows or use online=False")
            short = ~in_mask.any(axis=0) | in_mask.all(axis=0)
            if short.any():
                raise TfmiError(
                    f"{int(short.sum())} record(s) lack IN or OUT shadow models: online RMIA needs both for "
                    "every record; train the shadows on a pool holding these records, or use online=False"
                )
            a = None
        else:
            short = in_mask.all(axis=0)
            if short.any():
                raise TfmiError(f"{int(short.sum())} record(s) trained every shadow: offline RMIA needs at "
                                "least one OUT shadow per record; train more shadows (each record is OUT "
                                "for about half)")
            if self.offline_a is not None:
                a, self.offline_a_source_, self.tuning_auc_ = self.offline_a, "given", None
            else:
                a, self.offline_a_source_, self.tuning_auc_ = _tune_offline_a(
                    probs, in_mask, pop_shadow, pop_in, self.gamma)
            self.offline_a_ = a
        self.reference_ = _reference(probs, in_mask, a)
        self.population_ratios_ = np.sort(_ratios(pop_target, pop_shadow.mean(axis=0)))
        self.num_shadows_, self.num_records_ = num_shadows, num_records
        return self

    def score_samples(self, target_probs: np.ndarray) -> np.ndarray:
        """Membership scores in [0, 1] (higher = member): the fraction of the population each record beats."""
        if not hasattr(self, "population_ratios_"):
            raise TfmiError(f"{self.name} is not fitted: call fit on the shadows' probabilities first")
        target = _probabilities(target_probs, "target probabilities", ndim=1)
        if len(target) != self.num_records_:
            raise TfmiError(
                f"{len(target)} target probabilities, but the shadows were fitted on {self.num_records_} "
                "records: give the target's probabilities on the same records, in the same order"
            )
        return _beaten(self.population_ratios_, _ratios(target, self.reference_), self.gamma)

    def evaluate(
        self, target_probs: np.ndarray, is_member: np.ndarray, *, bootstrap: int = 0, seed: int = 0
    ) -> AttackResult:
        """Score the target's records and report against their true membership.

        The decision rule is ``score >= 0.5`` (`DECISION_THRESHOLD`), chosen without labels:
        ``threshold_source="none"``.
        """
        scores = self.score_samples(target_probs)
        is_member = check_membership(is_member, None, "membership flags")
        if len(is_member) != len(scores):
            raise TfmiError(
                f"{len(is_member)} membership flags for {len(scores)} records: give one flag per record"
            )
        return evaluate_scores(scores[is_member], scores[~is_member], attack=self.name,
                               threshold=DECISION_THRESHOLD, threshold_source="none",
                               bootstrap=bootstrap, seed=seed)


def _probabilities(values: np.ndarray, what: str, ndim: int) -> np.ndarray:
    """Numbers in [0, 1] of ``ndim`` dimensions, none of them zero-length, as float64."""
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise TfmiError(f"{what} must be numbers, got dtype {values.dtype}: use the true-class "
                        "probabilities (tfmi.attacks.signals, true_class_probability)")
    if values.ndim != ndim:
        shape = "(records,)" if ndim == 1 else "(shadows, records)"
        raise TfmiError(f"{what} must have shape {shape}, got {values.shape}")
    if values.size == 0:
        raise TfmiError(f"{what} are empty (shape {values.shape}): give at least one record"
                        + (" and one shadow" if ndim == 2 else ""))
    values = values.astype(np.float64)
    if not np.all((values >= 0) & (values <= 1)):  # False for NaN too
        bad = values[~((values >= 0) & (values <= 1))][0]
        raise TfmiError(f"{what} must be probabilities in [0, 1], found {bad.item()!r}: pass the true-class "
                        "probability p_y, not logits or losses")
    return values


def _mask(mask: np.ndarray, shape: tuple[int, ...], what: str, of: str) -> np.ndarray:
    """A boolean (or 0/1) mask of ``shape``."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number) or not np.all((mask == 0) | (mask == 1)):
            raise TfmiError(f"{what} must be boolean (or 0/1), True where the record trained that shadow; "
                            f"got dtype {mask.dtype}: pass the ShadowSet's masks")
        mask = mask.astype(bool)
    if mask.shape != shape:
        raise TfmiError(f"{what} has shape {mask.shape} but the {of} have shape {shape}: "
                        "give one entry per (shadow, record)")
    return mask


def _out_mean(probs: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Per record (column), the mean of ``probs`` over the rows where ``out``; NaN where none."""
    count = out.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(out, probs, 0.0).sum(axis=0) / count


def _offline(mean_out: np.ndarray, a: float) -> np.ndarray:
    return ((1 + a) * mean_out + (1 - a)) / 2


def _reference(probs: np.ndarray, in_mask: np.ndarray, a: float | None) -> np.ndarray:
    """p(r) per record: the mean over all shadows (online, ``a`` None) or the offline estimate."""
    if a is None:
        return probs.mean(axis=0)
    return _offline(_out_mean(probs, ~in_mask), a)


def _ratios(target: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return target / np.maximum(reference, _MIN_REFERENCE)


def _beaten(sorted_population: np.ndarray, ratios: np.ndarray, gamma: float) -> np.ndarray:
    """For each ratio, the fraction of population ratios strictly below ``ratio / gamma``."""
    return np.searchsorted(sorted_population, ratios / gamma, side="left") / len(sorted_population)


def _auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(positive > negative) + P(tie) / 2, from exact counts."""
    negatives = np.sort(negatives)
    below = np.searchsorted(negatives, positives, side="left")
    ties = np.searchsorted(negatives, positives, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (len(positives) * len(negatives)))


def _tune_offline_a(
    probs: np.ndarray, in_mask: np.ndarray, pop_probs: np.ndarray, pop_in: np.ndarray, gamma: float
) -> tuple[float, str, dict[float, float] | None]:
    """The a of `OFFLINE_A_GRID` with the best mean AUC attacking each shadow with the others.

    Returns ``(a, source, {a: mean AUC})``; source "default" (and no AUCs) when no shadow can be
    attacked: fewer than 2 shadows, or none with 2 population records it did not train on and IN and
    OUT records that have OUT references.
    """
    num_shadows = probs.shape[0]
    if num_shadows < 2:
        return DEFAULT_OFFLINE_A, "default", None
    num_records = probs.shape[1]
    everything = np.concatenate([probs, pop_probs], axis=1)  # the fitted records, then the population
    membership = np.concatenate([in_mask, pop_in], axis=1)
    aucs: list[list[float]] = []
    for held_out in range(num_shadows):
        others = np.arange(num_shadows) != held_out
        target, label = everything[held_out], membership[held_out]
        comparison = np.flatnonzero(~pop_in[held_out]) + num_records  # population it did not train on
        mean_out = _out_mean(everything[others], ~membership[others])
        scored = np.flatnonzero(~np.isnan(mean_out))  # at least one OUT reference among the others
        member = label[scored]
        if len(comparison) < 2 or member.all() or not member.any():
            continue
        z_ratios = _ratios(target, everything[others].mean(axis=0))  # p(z): mean over all references
        population = np.sort(z_ratios[comparison])
        own = np.isin(scored, comparison)  # population records compared with the others only
        sizes = np.where(own, len(comparison) - 1, len(comparison))
        per_a = []
        for a in OFFLINE_A_GRID:
            thresholds = _ratios(target[scored], _offline(mean_out[scored], a)) / gamma
            counts = np.searchsorted(population, thresholds, side="left")
            counts = counts - (own & (z_ratios[scored] < thresholds))
            scores = counts / sizes
            per_a.append(_auc(scores[member], scores[~member]))
        aucs.append(per_a)
    if not aucs:
        return DEFAULT_OFFLINE_A, "default", None
    mean_auc = np.mean(np.asarray(aucs), axis=0)
    best = int(np.argmax(mean_auc))
    return OFFLINE_A_GRID[best], "tuned", {a: float(v) for a, v in zip(OFFLINE_A_GRID, mean_auc, strict=True)}
