"""The likelihood-ratio attack, LiRA (Carlini et al. 2022), on per-example shadow statistics.

For every example the attacker evaluates, shadow models trained with it (IN) and without it (OUT)
give samples of its logit-scaled confidence ``phi = log p_y - log(1 - p_y)``
(`tfmi.attacks.signals.Signals.logit_confidence`). LiRA fits a Gaussian to each, per example:

- **online**: score = ``log N(phi; mu_in, sd_in) - log N(phi; mu_out, sd_out)``, the log likelihood
  ratio; its natural decision rule is ``score >= 0``;
- **offline** (OUT shadows only): the one-sided test ``score = log Phi(z)``, ``z = (phi - mu_out) /
  sd_out``: how far the target's confidence lies above what models that never saw the example give
  it; its decision rule is ``score >= log 0.5``, i.e. ``z >= 0``, i.e. ``phi >= mu_out``.

With several queries per example (augmentations such as a horizontal flip), ``phi`` has a last axis
of queries and each query gets its own Gaussians. Online, the score is the mean over queries of the
log likelihood ratios (the log of their geometric mean), so ``score >= 0`` still means "the IN
hypothesis is at least as likely". Offline, the standardized distances are averaged first and the
score is ``log Phi(mean_q z_q)``: ``score >= log 0.5`` exactly when ``mean_q z_q >= 0``, i.e. the
target's confidence lies above the OUT means on average, in standard deviations. (Averaging
``log Phi(z_q)`` instead would break that rule: ``log Phi`` is concave, so such a mean falls below
``log 0.5`` for, e.g., ``z = (3, -1)``.) ``Phi(mean z)`` treats the queries as fully correlated, the
conservative choice for augmentations of one image; the ranking does not depend on it.

``fixed_variance=True`` uses one standard deviation for all examples and queries (IN and OUT
separately), which is more stable with few shadows. It is the pooled within-example estimate:
``sd^2 = sum_i sum_q sum_k (phi_kiq - mean_iq)^2 / sum_i sum_q (n_i - 1)`` over the example's
``n_i`` IN (or OUT) shadows, so an example with a single value contributes neither a residual nor a
degree of freedom. Where a side has no degree of freedom (every example has at most one value there,
as with 2 or 3 shadows), in this order:

1. the other side's pooled estimate, when it has degrees of freedom: the spread of ``phi`` across
   shadows is assumed to be the same with and without the example (Carlini et al.'s reference code
   even uses the IN spread for both sides); offline LiRA uses IN shadows, when given, for this only;
2. paired differences, when every example has at most one IN and one OUT value (2 shadows):
   ``phi_in - phi_out`` varies across examples with variance ``2 sd^2`` plus the spread of the
   membership effect itself, so ``sd^2 = var_i(phi_in - phi_out) / 2`` is (in expectation) an upper
   bound, never an over-confident guess;
3. the spread of ``phi`` across examples (one OUT value each, no IN value: a single offline shadow),
   the estimate of the reference code, also an upper bound (it adds the spread of difficulty).

With one shared standard deviation the ranking of online (equal IN and OUT sd) and single-query
offline scores does not depend on its value, so an upper bound costs nothing there; it keeps the
scores and the decision rule meaningful. `sd_sources_` names the estimate used per side; an estimate
of zero (identical values everywhere) is an error, never silently floored.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> k, n = 16, 400
>>> in_mask = rng.permuted(np.tile(np.arange(k) < k // 2, (n, 1)), axis=1).T    # (K, N)
>>> base = rng.normal(0, 3, n)                                                   # per-example difficulty
>>> shadow_phi = base + 2.0 * in_mask + rng.normal(0, 1, (k, n))
>>> is_member = rng.random(n) < 0.5
>>> target_phi = base + 2.0 * is_member + rng.normal(0, 1, n)
>>> result = LiRA().fit(shadow_phi, in_mask).evaluate(target_phi, is_member)
>>> result.auc > 0.85
True
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from tfmi.attacks.metrics import AttackResult, check_membership, evaluate_scores
from tfmi.errors import TfmiError

_MIN_SD = 1e-6


class LiRA:
    """Likelihood-ratio membership inference from shadow-model confidences.

    scikit-learn conventions: `fit` on shadow statistics returns ``self``; `score_samples` and
    `evaluate` on the target model's statistics for the same examples, in the same order.

    Args:
        online: use IN and OUT shadows (True) or OUT shadows only (False).
        fixed_variance: one global standard deviation instead of one per example.
    """

    def __init__(self, online: bool = True, fixed_variance: bool = False):
        self.online = online
        self.fixed_variance = fixed_variance

    @property
    def name(self) -> str:
        variant = "online" if self.online else "offline"
        return f"LiRA {variant}{', fixed variance' if self.fixed_variance else ''}"

    def fit(self, shadow_statistics: np.ndarray, in_mask: np.ndarray) -> LiRA:
        """Fit the per-example Gaussians.

        Args:
            shadow_statistics: ``phi`` of every shadow on every example, shape (K, N) or (K, N, Q)
                for Q queries (augmentations) per example.
            in_mask: (K, N) booleans, True where the example was in that shadow's training set.
        """
        phi = _as_statistics(shadow_statistics, "shadow statistics")
        if phi.ndim == 2:
            phi = phi[..., None]
        in_mask = _check_mask(in_mask)
        if phi.ndim != 3 or in_mask.shape != phi.shape[:2]:
            raise TfmiError(
                f"shadow statistics of shape {phi.shape} and an IN mask of shape {in_mask.shape} do not "
                "match: give (shadows, examples[, queries]) statistics and a (shadows, examples) mask"
            )
        num_shadows = phi.shape[0]
        if self.online and num_shadows < 2:
            raise TfmiError(f"online LiRA needs at least 2 shadow models (IN and OUT), got {num_shadows}")
        in_counts, out_counts = in_mask.sum(axis=0), (~in_mask).sum(axis=0)
        needed = 1 if self.fixed_variance else 2
        short = (out_counts < needed) | ((in_counts < needed) if self.online else False)
        if short.any():
            alternative = "" if self.fixed_variance else ", or use fixed_variance=True"
            raise TfmiError(
                f"{int(short.sum())} example(s) have fewer than {needed} "
                f"{'IN and OUT' if self.online else 'OUT'} shadow model(s): train more shadows "
                f"(each example is IN for about half of them){alternative}"
            )
        sides = {"out": _Side(phi, ~in_mask)}
        if self.online or self.fixed_variance:  # offline fixed variance may borrow the IN spread
            sides["in"] = _Side(phi, in_mask)
        used = ("out", "in") if self.online else ("out",)
        if self.fixed_variance:
            self.sd_sources_ = {}
            for side in used:
                sd, self.sd_sources_[side] = _fixed_sd(sides, side, phi, in_mask)
                setattr(self, f"sd_{side}_", np.full_like(sides[side].mean, sd))
        else:
            self.sd_sources_ = dict.fromkeys(used, "per example")
            for side in used:
                setattr(self, f"sd_{side}_", sides[side].per_example_sd())
        for side in used:
            setattr(self, f"mean_{side}_", sides[side].mean)
        self.num_examples_, self.num_queries_ = phi.shape[1], phi.shape[2]
        return self

    def score_samples(self, target_statistics: np.ndarray) -> np.ndarray:
        """Membership scores (higher = member) for the target's ``phi`` on the fitted examples."""
        if not hasattr(self, "mean_out_"):
            raise TfmiError(f"{self.name} is not fitted: call fit on shadow statistics first")
        phi = _as_statistics(target_statistics, "target statistics")
        if phi.ndim == 1:
            phi = phi[:, None]
        if phi.shape != (self.num_examples_, self.num_queries_):
            raise TfmiError(
                f"target statistics have shape {phi.shape}, but the shadows were fitted on "
                f"{self.num_examples_} examples x {self.num_queries_} queries: use the same examples"
            )
        if self.online:
            score = (_log_normal(phi, self.mean_in_, self.sd_in_)
                     - _log_normal(phi, self.mean_out_, self.sd_out_))
            return score.mean(axis=1)  # the log of the geometric mean of the likelihood ratios
        # offline: the mean standardized distance above the OUT means, then its one-sided test, so
        # that score >= log 0.5 exactly when mean_q z_q >= 0 (see the module docstring)
        return log_ndtr(((phi - self.mean_out_) / self.sd_out_).mean(axis=1))

    def evaluate(
        self, target_statistics: np.ndarray, is_member: np.ndarray, *, bootstrap: int = 0, seed: int = 0
    ) -> AttackResult:
        """Score the target's examples and report against their true membership.

        The decision threshold is LiRA's own rule, not chosen on the target's labels
        (``threshold_source="none"``): online ``score >= 0`` (likelihood ratio at least 1, geometric
        mean over queries), offline ``score >= log 0.5``, i.e. ``mean_q (phi_q - mu_out_q) / sd_out_q
        >= 0`` (``phi >= mu_out`` for one query).
        """
        scores = self.score_samples(target_statistics)
        is_member = check_membership(is_member, None, "membership flags")
        if len(is_member) != len(scores):
            raise TfmiError(
                f"{len(is_member)} membership flags for {len(scores)} examples: give one flag per example"
            )
        threshold = 0.0 if self.online else float(np.log(0.5))
        return evaluate_scores(scores[is_member], scores[~is_member], attack=self.name,
                               threshold=threshold, threshold_source="none", bootstrap=bootstrap,
                               seed=seed)


def _check_mask(in_mask: np.ndarray) -> np.ndarray:
    """A (shadows, examples) IN mask as booleans; 0/1 numbers accepted."""
    mask = np.asarray(in_mask)
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number) or not np.all((mask == 0) | (mask == 1)):
            raise TfmiError(
                f"the IN mask must be boolean (or 0/1): True where the example trained that shadow; got "
                f"dtype {mask.dtype}: pass the ShadowSet's masks"
            )
        mask = mask.astype(bool)
    return mask


def _as_statistics(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise TfmiError(
            f"{what} must be numbers, got dtype {values.dtype}: compute them with tfmi.attacks.signals "
            "(the logit_confidence signal)"
        )
    values = values.astype(np.float64)
    if values.size == 0:
        raise TfmiError(f"{what} are empty")
    if not np.all(np.isfinite(values)):
        raise TfmiError(f"{what} contain NaN or infinity: compute them with tfmi.attacks.signals, "
                        "which keeps the logit-scaled confidence finite")
    return values


class _Side:
    """The IN or OUT shadow values of every example: per-example (and per-query) means, and the
    residual sum of squares and degrees of freedom that pool into one within-example variance."""

    def __init__(self, phi: np.ndarray, mask: np.ndarray):
        weights = mask[..., None].astype(np.float64)  # (K, N, 1)
        self.counts = weights.sum(axis=0)  # (N, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean = (phi * weights).sum(axis=0) / self.counts  # NaN where an example has no value
        residuals = np.where(weights > 0, phi - np.nan_to_num(self.mean), 0.0)
        self.squares = (residuals**2).sum(axis=0)  # (N, Q)
        # an example with n values gives n - 1 degrees of freedom per query; one value gives none
        self.dof = float(np.maximum(self.counts - 1, 0).sum() * phi.shape[2])
        self.sum_squares = float(self.squares.sum())

    def per_example_sd(self) -> np.ndarray:
        return np.maximum(np.sqrt(self.squares / (self.counts - 1)), _MIN_SD)

    def pooled_variance(self) -> float | None:
        return self.sum_squares / self.dof if self.dof > 0 else None


def _fixed_sd(sides: dict[str, _Side], side: str, phi: np.ndarray, in_mask: np.ndarray) -> tuple[float, str]:
    """One standard deviation for ``side`` ("in" or "out") and where it came from; the rule and its
    fallbacks are in the module docstring."""
    other = "in" if side == "out" else "out"
    candidates = [(sides[side].pooled_variance(), "pooled within-example")]
    if other in sides:
        candidates.append((sides[other].pooled_variance(), f"pooled within-example, {other.upper()} shadows"))
    if all(s.dof == 0 for s in sides.values()):
        candidates.append((_paired_variance(phi, in_mask), "paired IN-OUT differences"))
        candidates.append((_across_examples_variance(phi, sides[side]), "spread across examples"))
    for variance, source in candidates:
        if variance is not None and np.isfinite(variance) and np.sqrt(variance) >= _MIN_SD:
            return float(np.sqrt(variance)), source
    raise TfmiError(
        f"cannot estimate LiRA's fixed standard deviation of the {side.upper()} shadows: their phi values "
        "do not vary (identical within and across examples); check that the shadows were trained"
    )


def _paired_variance(phi: np.ndarray, in_mask: np.ndarray) -> float | None:
    """``var(phi_in - phi_out) / 2`` over the examples with one IN and one OUT value (with 2 shadows),
    centred per query and averaged over queries; None for fewer than 2 such examples."""
    paired = in_mask.sum(axis=0) == 1
    if phi.shape[0] != 2 or paired.sum() < 2:
        return None
    sign = np.where(in_mask[:, paired], 1.0, -1.0)[..., None]  # (2, M, 1)
    differences = (sign * phi[:, paired]).sum(axis=0)  # (M, Q): phi_in - phi_out
    return float(differences.var(axis=0, ddof=1).mean() / 2)


def _across_examples_variance(phi: np.ndarray, values: _Side) -> float | None:
    """The variance of the side's per-example means across examples, per query, then averaged;
    None for fewer than 2 examples with a value."""
    has = values.counts[:, 0] > 0
    if has.sum() < 2:
        return None
    return float(values.mean[has].var(axis=0, ddof=1).mean())


def _log_normal(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)
