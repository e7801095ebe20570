"""The likelihood-ratio attack, LiRA (Carlini et al. 2022), on per-example shadow statistics.

For every example the attacker evaluates, shadow models trained with it (IN) and without it (OUT)
give samples of its logit-scaled confidence ``phi = log p_y - log(1 - p_y)``
(`tfmi.attacks.signals.Signals.logit_confidence`). LiRA fits a Gaussian to each, per example:

- **online**: score = ``log N(phi; mu_in, sd_in) - log N(phi; mu_out, sd_out)``, the log likelihood
  ratio; its natural decision rule is ``score >= 0``;
- **offline** (OUT shadows only): the one-sided test ``score = log Phi((phi - mu_out) / sd_out)``:
  how far the target's confidence lies above what models that never saw the example give it; its
  decision rule is ``phi >= mu_out``.

``fixed_variance=True`` uses one standard deviation for all examples (IN and OUT separately),
estimated from every shadow value, which is more stable with few shadows. With several queries per
example (augmentations such as a horizontal flip), ``phi`` has a last axis of queries; each gets its
own Gaussians and the scores are averaged.

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
        self.mean_out_, self.sd_out_ = _gaussians(phi, ~in_mask, self.fixed_variance)
        if self.online:
            self.mean_in_, self.sd_in_ = _gaussians(phi, in_mask, self.fixed_variance)
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
        else:
            score = log_ndtr((phi - self.mean_out_) / self.sd_out_)
        return score.mean(axis=1)

    def evaluate(
        self, target_statistics: np.ndarray, is_member: np.ndarray, *, bootstrap: int = 0, seed: int = 0
    ) -> AttackResult:
        """Score the target's examples and report against their true membership.

        The decision threshold is LiRA's own rule (likelihood ratio 1 online, ``phi >= mu_out``
        offline), not chosen on the target's labels: ``threshold_source="none"``.
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


def _gaussians(phi: np.ndarray, mask: np.ndarray, fixed_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-example (and per-query) mean, and per-example or global standard deviation, over masked shadows."""
    weights = mask[..., None].astype(np.float64)  # (K, N, 1)
    counts = weights.sum(axis=0)  # (N, 1)
    mean = (phi * weights).sum(axis=0) / counts
    squares = ((phi - mean) ** 2) * weights
    if fixed_variance:
        sd = np.sqrt(squares.sum() / max(weights.sum() * phi.shape[2] - 1, 1))
        sd = np.full_like(mean, sd)
    else:
        sd = np.sqrt(squares.sum(axis=0) / (counts - 1))
    return mean, np.maximum(sd, _MIN_SD)


def _log_normal(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)
