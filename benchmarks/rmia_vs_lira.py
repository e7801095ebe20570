"""RMIA vs LiRA with few shadow models: Location30, undefended MLP target, 1, 2, 4 and 8 shadows.

    python benchmarks/rmia_vs_lira.py [--data-dir /work/shared/data] [--shadows 8]

Target: ``train_target`` with ``TrainConfig("mlp")`` defaults on ``membership_split(data.y, 1500,
seed=0)``: 1,500 members, evaluated against 1,500 non-members. Shadows: 8, trained once on
``shadow_pool(split, "online")`` (the evaluated records) with `train_shadows`, in complementary pairs
(shadows 2i and 2i+1 split the pool in two halves), so the first k shadows, for every even k, hold each
record IN for exactly k/2 of them and OUT for the other k/2. Every k uses the first k shadows' arrays,
computed once. RMIA's population: the split's reference and shadow-pool records, which the target
never saw and the attack does not evaluate (2,010 records).

Rows per k: RMIA offline (a tuned on the shadows, `tfmi.attacks.rmia`) and LiRA offline (fixed
variance), the online variants of both, and the loss attack (its AUC and TPRs need no threshold, so
they do not depend on the shadows). "n/a": the attack cannot run with these shadows (with one shadow
half the records were IN for it, so they have no OUT value, and online attacks need IN and OUT).
"seconds": fitting and scoring on precomputed probabilities / logit confidences; "RMIA extra s":
RMIA's seconds plus the population inference it alone needs (the target and the 8 stacked shadows on
the population, measured once), minus LiRA's seconds for the same variant.

Measured (2 shared CPU cores; target train/test accuracy 1.000/0.554): with k = 2, 4, 8 shadows RMIA
offline (tuned a = 0: the shadows fit their IN records perfectly, p_IN ~ 1, so p(x) = (p_OUT + 1) / 2)
reaches AUC 0.907/0.914/0.923, TPR@0.1% 0.162/0.137/0.184, TPR@1% 0.257/0.270/0.325; LiRA offline
0.907/0.931/0.946, 0.089/0.215/0.331, 0.397/0.494/0.614; loss 0.930, 0.002, 0.021. RMIA online
matches RMIA offline (a = 0 makes them the same estimate here); LiRA online reaches AUC 0.96 to 0.99.
RMIA costs ~0.25 to 0.3 s more than LiRA (0.24 s of it the population inference). k = 1: no attack can
run on the online pool (1,516 records were IN for the only shadow). This target memorizes every
member (p_y ~ 1), where LiRA's logit scale separates 1 - 1e-5 from 1 - 1e-3 and RMIA's probability
ratio cannot, so RMIA's AUC stays below the loss attack's while its low-FPR TPRs are far above it.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tfmi.attacks.lira import LiRA  # noqa: E402
from tfmi.attacks.metrics import evaluate_scores  # noqa: E402
from tfmi.attacks.rmia import RMIA  # noqa: E402
from tfmi.attacks.shadow import sample_shadow_masks, train_shadows  # noqa: E402
from tfmi.attacks.signals import compute_signals, model_outputs  # noqa: E402
from tfmi.attacks.suite import shadow_pool  # noqa: E402
from tfmi.data import load_dataset, membership_split  # noqa: E402
from tfmi.errors import TfmiError  # noqa: E402
from tfmi.training import TrainConfig, train_target  # noqa: E402

COUNTS = (1, 2, 4, 8)


def paired_masks(num_records: int, num_shadows: int, seed: int) -> np.ndarray:
    """Complementary pairs of random halves: any even prefix is balanced."""
    pairs = [sample_shadow_masks(num_records, 2, seed=seed + p) for p in range(-(-num_shadows // 2))]
    return np.concatenate(pairs)[:num_shadows]


def shadow_signals(logits: np.ndarray, labels: np.ndarray):
    """(K, n) true-class probabilities and logit confidences of (K, n, C) shadow logits."""
    signals = [compute_signals(lg, labels, kind="logits") for lg in logits]
    return (np.stack([s.true_class_probability for s in signals]),
            np.stack([s.logit_confidence for s in signals]))


def rmia(online, probs, mask, pop_target, pop_shadow, target, is_member):
    return RMIA(online=online).fit(probs, mask, pop_target, pop_shadow).evaluate(target, is_member)


def lira(online, phi, mask, target, is_member):
    return LiRA(online=online, fixed_variance=True).fit(phi, mask).evaluate(target, is_member)


def timed(run, *args):
    """``(result, seconds, "")``, or ``(None, seconds, reason)`` when the attack cannot run."""
    start = time.perf_counter()
    try:
        result = run(*args)
    except TfmiError as error:
        return None, time.perf_counter() - start, str(error)
    return result, time.perf_counter() - start, ""


def cell(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--shadows", type=int, default=max(COUNTS))
    args = parser.parse_args()

    data = load_dataset("location30", args.data_dir)
    split = membership_split(data.y, 1500, seed=0)
    config = TrainConfig("mlp")
    start = time.perf_counter()
    target = train_target(data, split, config, verbose=0)
    target_seconds = time.perf_counter() - start
    pool = shadow_pool(split, "online")
    start = time.perf_counter()
    shadows = train_shadows(data, pool, config, num_shadows=args.shadows, seed=1,
                            masks=paired_masks(len(pool), args.shadows, seed=1))
    shadow_seconds = time.perf_counter() - start

    evaluated = np.r_[split.members, split.non_members]
    is_member = np.r_[np.ones(len(split.members), bool), np.zeros(len(split.non_members), bool)]
    population = np.r_[split.reference, split.shadow_pool]
    y, y_pop = data.y[evaluated], data.y[population]
    position = np.searchsorted(pool, evaluated)  # the online pool is sorted
    assert np.array_equal(pool[position], evaluated)
    in_mask = shadows.masks[:, position]
    target_signals = compute_signals(model_outputs(target.model, data.x[evaluated]), y)
    shadow_p, shadow_phi = shadow_signals(shadows.logits(data.x[evaluated]), y)
    start = time.perf_counter()
    pop_target_p = compute_signals(model_outputs(target.model, data.x[population]),
                                   y_pop).true_class_probability
    pop_shadow_p, _ = shadow_signals(shadows.logits(data.x[population]), y_pop)
    population_seconds = time.perf_counter() - start

    loss = -target_signals.loss
    loss_result = evaluate_scores(loss[is_member], loss[~is_member], attack="loss")
    print(f"location30 mlp: target train/test accuracy {target_signals.correct[is_member].mean():.3f}/"
          f"{target_signals.correct[~is_member].mean():.3f} ({target_seconds:.0f} s); {args.shadows} shadows "
          f"({shadow_seconds:.0f} s); population {len(population)} records (inference "
          f"{population_seconds:.2f} s)\n")
    print("| k | attack | AUC | TPR@0.1% | TPR@1% | seconds | RMIA extra s vs LiRA |")
    print("|---|---|---|---|---|---|---|")
    reasons = {}
    for k in (c for c in COUNTS if c <= args.shadows):
        mask, p, phi = in_mask[:k], shadow_p[:k], shadow_phi[:k]
        for online in (False, True):
            variant = "online" if online else "offline"
            r, r_s, r_why = timed(rmia, online, p, mask, pop_target_p, pop_shadow_p[:k],
                                  target_signals.true_class_probability, is_member)
            lr, lr_s, lr_why = timed(lira, online, phi, mask, target_signals.logit_confidence, is_member)
            extra = f"{r_s + population_seconds - lr_s:+.2f}" if r is not None and lr is not None else "n/a"
            for name, result, seconds, why in ((f"RMIA {variant}", r, r_s, r_why),
                                              (f"LiRA {variant}, fixed variance", lr, lr_s, lr_why)):
                label = result.attack if result is not None else name
                if result is None:
                    reasons[(k, name)] = why
                    print(f"| {k} | {label} | n/a | n/a | n/a | n/a | |")
                    continue
                print(f"| {k} | {label} | {result.auc:.3f} | {cell(result.tpr_at_fpr[0.001])} | "
                      f"{cell(result.tpr_at_fpr[0.01])} | {seconds:.2f} | "
                      f"{extra if name.startswith('RMIA') else ''} |")
        print(f"| {k} | loss | {loss_result.auc:.3f} | {cell(loss_result.tpr_at_fpr[0.001])} | "
              f"{cell(loss_result.tpr_at_fpr[0.01])} | | |")
    if reasons:
        print()
        for (k, name), why in reasons.items():
            print(f"n/a, k={k}, {name}: {why}")


if __name__ == "__main__":
    main()
