"""LiRA's fixed variance with few shadows: the old pooled formula against the pooled within-record one.

    nice python benchmarks/lira_variance.py --data-dir ../shared/data

One undefended Location30 target (TrainConfig("mlp") defaults, ``membership_split(data.y, 1500,
seed=0)``) and 8 shadows trained once on ``shadow_pool(split, "online")`` (the 3,000 evaluated
records). The shadows come in complementary pairs (`sample_shadow_masks`: shadow 2j+1 trains on exactly
the records shadow 2j leaves out), so the first 2, 4 and 8 shadows give every record 1, 2 and 4 IN and
OUT values, and online LiRA can score every record with any even prefix. For k = 2, 4, 8 (the first k
shadows) it reports online and offline LiRA with ``fixed_variance=True``, the standard deviation
estimated

- **old**: squared residuals around each record's mean, summed over every masked shadow value and
  divided by (number of values - 1), floored at 1e-6 (reimplemented here for comparison only);
- **new**: `tfmi.attacks.lira` (the same residuals over the sum of per-record degrees of freedom
  ``n_i - 1``, with its documented fallbacks where there are none).

Means, scores and decision rules are the same; only the standard deviations differ. "accuracy at
LiRA's rule" is the balanced accuracy of LiRA's own decision (``score >= 0`` online, ``>= log 0.5``
offline), which, unlike the ranking, depends on the standard deviations' scale.

Measured (2 CPU cores, ~1 min): with 2 shadows the old sd was the 1e-6 floor; offline AUC 0.735 ->
0.909, TPR at 1 % FPR 0.0 -> 42.0 %. With 4 and 8 shadows every record has the same n_i, so the old
sd was the new one times sqrt((n - 1) / n) on both sides: identical ranking (AUC, TPRs), online
accuracy at LiRA's rule 0.935 -> 0.942 (4) and 0.941 -> 0.945 (8).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tfmi.attacks.lira import LiRA  # noqa: E402
from tfmi.attacks.shadow import sample_shadow_masks, train_shadows  # noqa: E402
from tfmi.attacks.signals import lira_phi, model_outputs, shadow_lira_phi  # noqa: E402
from tfmi.attacks.suite import shadow_pool  # noqa: E402
from tfmi.data import load_dataset, membership_split  # noqa: E402
from tfmi.training import TrainConfig, train_target  # noqa: E402

SHADOW_COUNTS = (2, 4, 8)


def old_fixed_sd(phi: np.ndarray, mask: np.ndarray) -> float:
    """The formula tfmi used before: all squared residuals over (all masked values - 1)."""
    weights = mask[..., None].astype(np.float64)
    mean = (phi * weights).sum(axis=0) / weights.sum(axis=0)
    squares = ((phi - mean) ** 2 * weights).sum()
    return max(float(np.sqrt(squares / max(weights.sum() * phi.shape[2] - 1, 1))), 1e-6)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    start = time.perf_counter()

    data = load_dataset("location30", args.data_dir)
    split = membership_split(data.y, target_size=1500, seed=0)
    config = TrainConfig("mlp")
    target = train_target(data, split, config, verbose=0)
    pool = shadow_pool(split, "online")
    shadows = train_shadows(data, pool, config, num_shadows=max(SHADOW_COUNTS), seed=1,
                            masks=sample_shadow_masks(len(pool), max(SHADOW_COUNTS), seed=1))

    evaluated = np.concatenate([split.members, split.non_members])
    is_member = np.r_[np.ones(len(split.members), bool), np.zeros(len(split.non_members), bool)]
    x, y = data.x[evaluated], np.asarray(data.y[evaluated])
    target_out = model_outputs(target.model, x)
    target_phi = lira_phi(target_out, y)
    shadow_phi = shadow_lira_phi(shadows.logits(x), y, target_out)[..., None]  # (K, n, 1)
    in_mask = shadows.masks[:, np.searchsorted(pool, evaluated)]  # the pool is sorted
    print(f"Location30 mlp ({config.epochs} epochs): target train/test accuracy "
          f"{target.train_accuracy:.3f}/{target.test_accuracy:.3f}; 8 shadows "
          f"{np.mean(shadows.train_accuracy):.3f}/{np.mean(shadows.test_accuracy):.3f}; "
          f"{len(split.members)} members + {len(split.non_members)} non-members\n")

    print("| shadows | LiRA | sd OUT old / new | sd IN old / new | AUC old / new | TPR@0.1% old / new "
          "| TPR@1% old / new | accuracy at LiRA's rule old / new | new sd from |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in SHADOW_COUNTS:
        phi, mask = shadow_phi[:k], in_mask[:k]
        for online in (True, False):
            new = LiRA(online=online, fixed_variance=True).fit(phi, mask)
            old = LiRA(online=online, fixed_variance=True).fit(phi, mask)
            old.sd_out_ = np.full_like(old.mean_out_, old_fixed_sd(phi, ~mask))
            sides = [("out", ~mask)] + ([("in", mask)] if online else [])
            if online:
                old.sd_in_ = np.full_like(old.mean_in_, old_fixed_sd(phi, mask))
            results = {name: attack.evaluate(target_phi, is_member) for name, attack in
                       (("old", old), ("new", new))}
            sds = {side: f"{getattr(old, f'sd_{side}_')[0, 0]:.3g} / {getattr(new, f'sd_{side}_')[0, 0]:.3g}"
                   for side, _ in sides}
            sources = "; ".join(f"{side.upper()}: {new.sd_sources_[side]}" for side, _ in sides)
            row = [
                str(k), "online" if online else "offline", sds["out"], sds.get("in", "-"),
                " / ".join(f"{results[v].auc:.3f}" for v in ("old", "new")),
                " / ".join(percent(results[v].tpr_at_fpr[0.001]) for v in ("old", "new")),
                " / ".join(percent(results[v].tpr_at_fpr[0.01]) for v in ("old", "new")),
                " / ".join(f"{results[v].accuracy:.3f}" for v in ("old", "new")),
                sources,
            ]
            print("| " + " | ".join(row) + " |")
    print(f"\nTPR in %. {time.perf_counter() - start:.0f} s in all.")


if __name__ == "__main__":
    main()
