"""RMIA vs LiRA with few shadow models: Location30, undefended MLP target, offline and online shadows.

    python benchmarks/rmia_vs_lira.py [--data-dir /work/shared/data] [--shadows 8]

Target: ``train_target`` with ``TrainConfig("mlp")`` defaults on ``membership_split(data.y, 1500,
seed=0)``: 1,500 members, evaluated against 1,500 non-members; the split leaves 1,005 reference and
1,005 shadow-pool records.

**Offline table** (RMIA's setting: few reference models, none trained on the evaluated records). 8
shadows trained once with `train_shadows` on ``shadow_pool(split, "offline")`` (the 1,005 disjoint
shadow-pool records; each shadow trains on a random half, ~502 records, a third of the target's
1,500): every evaluated record is OUT for every shadow. For k = 1, 2, 4, 8 the first k shadows (a
sliced `ShadowSet`) go to `run_attacks` once per attack, each call timed alone (the fastest of
`REPEATS`; it includes the target's and the shadows' inference that call needs):

- ``loss``: the loss threshold calibrated on the shadows' pool records (its AUC and TPRs need no
  threshold, so they do not change with k; only its decision threshold does);
- ``lira_offline``: LiRA offline, fixed variance (`run_attacks` picks it below 64 shadows);
- ``rmia_offline`` with ``population=split.reference``: records the attacker holds that the target
  never trained on and that are not evaluated, and that no shadow trained on either. Their membership
  in every model is "OUT", so `tfmi.attacks.rmia`'s tuning of offline ``a`` (which attacks each shadow
  with the others, on records whose membership in it is known, IN and OUT) has no IN record and
  falls back to ``a = 0.3`` (`DEFAULT_OFFLINE_A`) at every k;
- ``rmia_offline`` with the default population (`run_attacks`: the shadows' pool records not
  evaluated, here the whole shadow pool): the paper's population may overlap the reference models'
  training data, and these records' IN/OUT masks let ``a`` be tuned on the shadows (k >= 2).

**Online table** (the earlier benchmark, k = 2, 4, 8). 8 other shadows on ``shadow_pool(split,
"online")`` (the evaluated records) in complementary pairs (shadows 2i and 2i+1 split the pool in
two halves), so the first k shadows hold each record IN for exactly k/2 of them. Attacks run on
arrays computed once (`RMIA`/`LiRA` classes, not `run_attacks`); "seconds" is fitting and scoring
only, "RMIA extra s" adds the population inference RMIA alone needs and subtracts LiRA's seconds.
RMIA's population: reference and shadow-pool records (2,010). With one shadow nothing can run there
(the records it trained on have no OUT value), hence k >= 2.

Measured (2 shared CPU cores; target train/test accuracy 1.000/0.554; offline shadows 1.000/0.406,
online shadows 1.000/0.553). Offline, k = 1/2/4/8: LiRA offline AUC 0.911/0.933/0.939/0.949, TPR@0.1%
0.013/0.055/0.063/0.074, TPR@1% 0.314/0.300/0.378/0.469; RMIA offline (reference population, a = 0.3
untuned) AUC 0.853/0.862/0.865/0.872, TPR@0.1% 0.012/0.040/0.023/0.033, TPR@1% 0.193/0.186/0.162/0.158;
RMIA offline (shadow-pool population, a = 0.3 at k = 1, tuned a = 0 for k >= 2) AUC
0.853/0.885/0.888/0.894, TPR@0.1% 0.021/0.025/0.035/0.018, TPR@1% 0.131/0.215/0.183/0.215; loss 0.930,
0.002, 0.021. RMIA offline does not beat LiRA offline at any k here (at k = 1 the 0.1 % FPR TPRs tie
within noise: 1,500 non-members allow one false positive). Calls take 0.1 to 1.1 s, RMIA 0 to 0.2 s
more than LiRA (the population's inference). Online, k = 2/4/8: RMIA (a = 0, so offline = online)
AUC 0.907/0.914/0.923, LiRA offline 0.907/0.931/0.946, LiRA online 0.964/0.989/0.990. This target
memorizes every member (p_y ~ 1), where LiRA's logit scale separates 1 - 1e-5 from 1 - 1e-3 and
RMIA's probability ratio cannot; the offline shadows also train on a third of the target's data
(1,005-record pool), so their OUT probabilities run low, which hurts both attacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tfmi.attacks.lira import LiRA  # noqa: E402
from tfmi.attacks.metrics import evaluate_scores  # noqa: E402
from tfmi.attacks.rmia import RMIA  # noqa: E402
from tfmi.attacks.shadow import ShadowSet, sample_shadow_masks, train_shadows  # noqa: E402
from tfmi.attacks.signals import compute_signals, model_outputs  # noqa: E402
from tfmi.attacks.suite import run_attacks, shadow_pool  # noqa: E402
from tfmi.data import load_dataset, membership_split  # noqa: E402
from tfmi.errors import TfmiError  # noqa: E402
from tfmi.training import TrainConfig, train_target  # noqa: E402

OFFLINE_COUNTS = (1, 2, 4, 8)
ONLINE_COUNTS = (2, 4, 8)
#: each offline run_attacks call is timed this many times; the fastest counts (the first pays warm-up)
REPEATS = 3


def cell(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def result_cells(result) -> tuple[str, str, str]:
    return f"{result.auc:.3f}", cell(result.tpr_at_fpr[0.001]), cell(result.tpr_at_fpr[0.01])


# --- offline: shadows on the disjoint shadow pool, attacks through run_attacks --------------------

def first_shadows(shadows: ShadowSet, models: list, k: int) -> ShadowSet:
    """The first ``k`` shadows of a batched `ShadowSet` as a sequential one over their Keras models
    (``shadows.shadow_model(i)``, built once and shared by every k, so every k sees the same logits)."""
    return dataclasses.replace(
        shadows, masks=shadows.masks[:k], batched=False, train_accuracy=shadows.train_accuracy[:k],
        test_accuracy=shadows.test_accuracy[:k], seeds=shadows.seeds[:k], _network=None,
        _models=models[:k])


def timed_report(target, data, split, shadows, attack, population):
    """``(report, seconds)``: the fastest of `REPEATS` identical `run_attacks` calls."""
    best, report = float("inf"), None
    for _ in range(REPEATS):
        start = time.perf_counter()
        report = run_attacks(target, data, split.members, split.non_members, shadows=shadows,
                             attacks=attack, population=population, oracle=False)
        best = min(best, time.perf_counter() - start)
    return report, best


def offline_table(data, split, config, target, num_shadows: int) -> None:
    pool = shadow_pool(split, "offline")
    start = time.perf_counter()
    shadows = train_shadows(data, pool, config, num_shadows=num_shadows, seed=1)
    shadow_seconds = time.perf_counter() - start
    models = [shadows.shadow_model(i) for i in range(num_shadows)]
    reference = np.asarray(split.reference)
    print(f"OFFLINE: {num_shadows} shadows on the disjoint shadow pool ({len(pool)} records, "
          f"~{int(shadows.masks.sum(axis=1).mean())} IN each; {shadow_seconds:.0f} s), mean train/test "
          f"accuracy {np.mean(shadows.train_accuracy):.3f}/{np.mean(shadows.test_accuracy):.3f}; RMIA "
          f"population: split.reference ({len(reference)} records) or the default, the shadow pool "
          f"({len(pool)})\n")
    print(row("k", "attack", "RMIA population", "AUC", "TPR@0.1%", "TPR@1%", "seconds"))
    print(row(*["---"] * 7))
    runs = (("loss", "", reference), ("lira_offline", "", reference),
            ("rmia_offline", "reference", reference), ("rmia_offline", "shadow pool (default)", None))
    notes = []
    for k in (c for c in OFFLINE_COUNTS if c <= num_shadows):
        sub = first_shadows(shadows, models, k)
        for attack, population_name, population in runs:
            report, seconds = timed_report(target.model, data, split, sub, attack, population)
            (result,) = report.results
            print(row(k, result.attack, population_name, *result_cells(result), f"{seconds:.2f}"))
            notes += [f"k={k}, {attack}{f' ({population_name})' if population_name else ''}: {note}"
                      for note in report.notes]
    if notes:
        print("\nnotes from run_attacks:")
        for note in notes:
            print(f"- {note}")


# --- online: shadows on the evaluated records, attacks on precomputed arrays ----------------------

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


def online_table(data, split, config, target, num_shadows: int) -> None:
    pool = shadow_pool(split, "online")
    start = time.perf_counter()
    shadows = train_shadows(data, pool, config, num_shadows=num_shadows, seed=1,
                            masks=sample_shadow_masks(len(pool), num_shadows, seed=1))
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
    print(f"\nONLINE: {num_shadows} shadows on the evaluated records ({len(pool)}, {shadow_seconds:.0f} s), "
          f"mean train/test accuracy {np.mean(shadows.train_accuracy):.3f}/"
          f"{np.mean(shadows.test_accuracy):.3f}; population {len(population)} records (inference "
          f"{population_seconds:.2f} s)\n")
    print(row("k", "attack", "AUC", "TPR@0.1%", "TPR@1%", "seconds", "RMIA extra s vs LiRA"))
    print(row(*["---"] * 7))
    reasons = {}
    for k in (c for c in ONLINE_COUNTS if c <= num_shadows):
        mask, p, phi = in_mask[:k], shadow_p[:k], shadow_phi[:k]
        for online in (False, True):
            variant = "online" if online else "offline"
            r, r_s, r_why = timed(rmia, online, p, mask, pop_target_p, pop_shadow_p[:k],
                                  target_signals.true_class_probability, is_member)
            lr, lr_s, lr_why = timed(lira, online, phi, mask, target_signals.logit_confidence, is_member)
            extra = f"{r_s + population_seconds - lr_s:+.2f}" if r is not None and lr is not None else "n/a"
            for name, result, seconds, why in ((f"RMIA {variant}", r, r_s, r_why),
                                              (f"LiRA {variant}, fixed variance", lr, lr_s, lr_why)):
                if result is None:
                    reasons[(k, name)] = why
                    print(row(k, name, "n/a", "n/a", "n/a", "n/a", ""))
                    continue
                print(row(k, result.attack, *result_cells(result), f"{seconds:.2f}",
                          extra if name.startswith("RMIA") else ""))
        print(row(k, "loss (no threshold needed)", *result_cells(loss_result), "", ""))
    if reasons:
        print()
        for (k, name), why in reasons.items():
            print(f"n/a, k={k}, {name}: {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--shadows", type=int, default=max(OFFLINE_COUNTS),
                        help="shadows trained per setting (offline and online)")
    args = parser.parse_args()

    data = load_dataset("location30", args.data_dir)
    split = membership_split(data.y, 1500, seed=0)
    config = TrainConfig("mlp")
    start = time.perf_counter()
    target = train_target(data, split, config, verbose=0)
    target_seconds = time.perf_counter() - start
    evaluated = np.r_[split.members, split.non_members]
    correct = compute_signals(model_outputs(target.model, data.x[evaluated]), data.y[evaluated]).correct
    print(f"location30 mlp target: train/test accuracy {correct[:len(split.members)].mean():.3f}/"
          f"{correct[len(split.members):].mean():.3f} ({target_seconds:.0f} s)\n")
    offline_table(data, split, config, target, args.shadows)
    online_table(data, split, config, target, args.shadows)


if __name__ == "__main__":
    main()
