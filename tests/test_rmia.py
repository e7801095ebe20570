"""RMIA: the scores and the offline-a tuning re-derived with deliberately naive loops, the binary-search
count against the pairwise count (ties included), leaky and non-leaky synthetic targets, tuning that
never sees the target, input checks, and `run_attacks` rows on a real digits target."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tfmi.attacks.rmia import DEFAULT_OFFLINE_A, OFFLINE_A_GRID, RMIA, _beaten
from tfmi.attacks.shadow import train_shadows
from tfmi.attacks.signals import compute_signals, model_outputs
from tfmi.attacks.suite import RMIA_ATTACK_NAMES, parse_attacks, run_attacks, shadow_pool
from tfmi.data import load_dataset, membership_split
from tfmi.errors import TfmiError
from tfmi.training import TrainConfig, train_target


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def synthetic(k=8, n=600, z=500, shift=2.0, leaky=True, seed=0):
    """True-class probabilities: each record has a difficulty; training on it raises its logit by
    ``shift``. The population is OUT for every shadow and for the target."""
    rng = np.random.default_rng(seed)
    in_mask = rng.permuted(np.tile(np.arange(k) < k // 2, (n, 1)), axis=1).T
    base, base_z = rng.normal(0, 2, n), rng.normal(0, 2, z)
    shadow = sigmoid(base + shift * in_mask + rng.normal(0, 1, (k, n)))
    is_member = rng.random(n) < 0.5
    target = sigmoid(base + shift * (is_member if leaky else 0) + rng.normal(0, 1, n))
    pop_target = sigmoid(base_z + rng.normal(0, 1, z))
    pop_shadow = sigmoid(base_z + rng.normal(0, 1, (k, z)))
    return shadow, in_mask, target, is_member, pop_target, pop_shadow


# --- naive re-derivation ---------------------------------------------------------------------------

def naive_p(values, ins, online, a):
    """p(r) of one record from its shadow values and IN flags, with explicit loops."""
    if online:
        total = 0.0
        for v in values:
            total += v
        return total / len(values)
    total, count = 0.0, 0
    for v, inside in zip(values, ins, strict=True):
        if not inside:
            total += v
            count += 1
    return ((1 + a) * (total / count) + (1 - a)) / 2


def naive_scores(target, shadow, in_mask, pop_target, pop_shadow, pop_in, online, a, gamma):
    """score(x) = fraction of z with LR(x, z) > gamma, LR computed literally for every pair; p(z) is
    the mean over all shadows in both variants."""
    k, n = shadow.shape
    z = len(pop_target)
    scores = []
    for i in range(n):
        px = naive_p([shadow[s][i] for s in range(k)], [in_mask[s][i] for s in range(k)], online, a)
        beaten = 0
        for j in range(z):
            pz = naive_p([pop_shadow[s][j] for s in range(k)], [pop_in[s][j] for s in range(k)], True, None)
            lr = (target[i] / px) / (pop_target[j] / pz)
            if lr > gamma:
                beaten += 1
        scores.append(beaten / z)
    return np.array(scores)


def naive_auc(pos, neg):
    wins = 0.0
    for p in pos:
        for q in neg:
            wins += 1.0 if p > q else (0.5 if p == q else 0.0)
    return wins / (len(pos) * len(neg))


def naive_tuning(shadow, in_mask, pop_shadow, pop_in, gamma):
    """Each shadow j as the target, the others as references, on every record whose membership in j
    is known; compared with the population records j did not train on (never with themselves)."""
    k, n = shadow.shape
    z = pop_shadow.shape[1]
    rows = [(shadow[:, i], in_mask[:, i], False) for i in range(n)]
    rows += [(pop_shadow[:, j], pop_in[:, j], True) for j in range(z)]
    per_shadow = []
    for held in range(k):
        others = [s for s in range(k) if s != held]
        usable = [r for r in range(len(rows)) if any(not rows[r][1][s] for s in others)]
        comparison = [r for r in range(len(rows)) if rows[r][2] and not rows[r][1][held]]
        labels = [bool(rows[r][1][held]) for r in usable]
        if len(comparison) < 2 or all(labels) or not any(labels):
            continue

        def z_ratio(r, others=others, held=held):
            values, ins, _ = rows[r]
            return values[held] / naive_p([values[s] for s in others], [ins[s] for s in others], True, None)

        aucs = []
        for a in OFFLINE_A_GRID:
            def x_ratio(r, a=a, others=others, held=held):
                values, ins, _ = rows[r]
                return values[held] / naive_p([values[s] for s in others], [ins[s] for s in others], False, a)
            scores = []
            for r in usable:
                beaten = sum(1 for c in comparison if c != r and (x_ratio(r) / z_ratio(c)) > gamma)
                scores.append(beaten / (len(comparison) - (1 if r in comparison else 0)))
            pos = [s for s, label in zip(scores, labels, strict=True) if label]
            neg = [s for s, label in zip(scores, labels, strict=True) if not label]
            aucs.append(naive_auc(pos, neg))
        per_shadow.append(aucs)
    means = [sum(col) / len(col) for col in zip(*per_shadow, strict=True)]
    return OFFLINE_A_GRID[int(np.argmax(means))], means


@pytest.mark.parametrize("gamma", [1.0, 1.7, 0.6])
def test_online_scores_match_the_naive_formula(gamma):
    shadow, in_mask, target, _, pop_target, pop_shadow = synthetic(k=4, n=30, z=25, seed=1)
    pop_in = np.zeros(pop_shadow.shape, bool)
    rmia = RMIA(online=True, gamma=gamma).fit(shadow, in_mask, pop_target, pop_shadow)
    expected = naive_scores(target, shadow, in_mask, pop_target, pop_shadow, pop_in, True, None, gamma)
    np.testing.assert_allclose(rmia.score_samples(target), expected, rtol=0, atol=1e-12)
    assert len(set(expected.tolist())) > 5  # the test is not vacuous


@pytest.mark.parametrize("gamma,a", [(1.0, 0.3), (2.0, 0.0), (0.8, 1.0), (1.0, 0.55)])
def test_offline_scores_with_a_given_a_match_the_naive_formula(gamma, a):
    shadow, in_mask, target, _, pop_target, pop_shadow = synthetic(k=5, n=30, z=25, seed=2)
    pop_in = np.random.default_rng(3).random(pop_shadow.shape) < 0.3  # some population in the pool
    pop_in[:, pop_in.all(axis=0)] = False
    rmia = RMIA(online=False, gamma=gamma, offline_a=a).fit(shadow, in_mask, pop_target, pop_shadow,
                                                            population_in_mask=pop_in)
    assert rmia.offline_a_ == a and rmia.offline_a_source_ == "given"
    expected = naive_scores(target, shadow, in_mask, pop_target, pop_shadow, pop_in, False, a, gamma)
    np.testing.assert_allclose(rmia.score_samples(target), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 1.5])
def test_offline_tuning_matches_the_naive_tuning(gamma):
    shadow, in_mask, target, _, pop_target, pop_shadow = synthetic(k=4, n=24, z=20, seed=4)
    pop_in = np.zeros(pop_shadow.shape, bool)
    pop_in[:, :6] = np.random.default_rng(5).random((4, 6)) < 0.5  # a few population records in the pool
    pop_in[:, pop_in.all(axis=0)] = False
    rmia = RMIA(online=False, gamma=gamma).fit(shadow, in_mask, pop_target, pop_shadow,
                                               population_in_mask=pop_in)
    a, means = naive_tuning(shadow, in_mask, pop_shadow, pop_in, gamma)
    assert rmia.offline_a_source_ == "tuned" and rmia.offline_a_ == a
    np.testing.assert_allclose([rmia.tuning_auc_[g] for g in OFFLINE_A_GRID], means, rtol=0, atol=1e-12)
    assert len(set(np.round(means, 12))) > 1  # a matters here
    expected = naive_scores(target, shadow, in_mask, pop_target, pop_shadow, pop_in, False, a, gamma)
    np.testing.assert_allclose(rmia.score_samples(target), expected, rtol=0, atol=1e-12)


def test_two_shadows_tune_on_the_population_one_shadow_uses_the_default():
    shadow, in_mask, target, is_member, pop_target, pop_shadow = synthetic(k=2, n=40, z=30, seed=6)
    # two balanced shadows: records OUT for one are IN for the other, so only the population gives
    # the tuning its OUT records
    assert set(in_mask.sum(axis=0).tolist()) == {1}
    two = RMIA(online=False).fit(shadow, in_mask, pop_target, pop_shadow)
    a, _ = naive_tuning(shadow, in_mask, pop_shadow, np.zeros(pop_shadow.shape, bool), 1.0)
    assert two.offline_a_source_ == "tuned" and two.offline_a_ == a
    one = RMIA(online=False).fit(shadow[:1, ~in_mask[0]], in_mask[:1, ~in_mask[0]], pop_target,
                                 pop_shadow[:1])
    assert one.offline_a_source_ == "default" and one.offline_a_ == DEFAULT_OFFLINE_A == 0.3
    assert one.tuning_auc_ is None and one.name == two.name == "RMIA offline"  # a is fitted, not named


# --- the binary-search count -----------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.5, 1.3])
def test_binary_search_count_equals_the_pairwise_count_with_ties(gamma):
    rng = np.random.default_rng(7)
    levels = np.array([0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 0.1 / 3])  # exact multiples of each other
    population = rng.choice(levels, 200)
    ratios = np.r_[rng.choice(levels, 300), levels, levels * gamma, rng.random(50) * 3]
    naive = [sum(1 for rz in population if rz < rx / gamma) for rx in ratios]
    np.testing.assert_array_equal(_beaten(np.sort(population), ratios, gamma),
                                  np.array(naive) / len(population))
    assert any(sum(1 for rz in population if rz == rx / gamma) for rx in ratios)  # ties do occur


def test_equal_ratios_do_not_count_and_records_beat_the_strictly_lower():
    # the population is three copies of one record and a lower one; x equal to the copies
    rmia = RMIA(online=True).fit([[0.5, 0.5], [0.7, 0.6]], [[True, False], [False, True]],
                                 [0.6, 0.6, 0.6, 0.3], [[0.5] * 4, [0.7] * 4])
    scores = rmia.score_samples([0.6, 0.61])
    assert scores.tolist() == [0.25, 1.0]


# --- leaky and non-leaky targets -------------------------------------------------------------------

@pytest.mark.parametrize("online", [True, False])
def test_leaky_target_high_auc_non_leaky_chance(online):
    shadow, in_mask, target, is_member, pop_target, pop_shadow = synthetic(n=3000, z=2000, seed=8)
    leaky = RMIA(online=online).fit(shadow, in_mask, pop_target, pop_shadow).evaluate(target, is_member)
    assert leaky.auc > 0.8  # measured 0.87 online, 0.84 offline
    assert leaky.threshold_source == "none" and leaky.tpr_at_fpr[0.01] > 0.1
    shadow, in_mask, target, is_member, pop_target, pop_shadow = synthetic(n=3000, z=2000, leaky=False,
                                                                           seed=9)
    flat = RMIA(online=online).fit(shadow, in_mask, pop_target, pop_shadow).evaluate(target, is_member)
    assert abs(flat.auc - 0.5) < 0.04
    assert abs(flat.advantage) < 0.06


@pytest.mark.parametrize("online", [True, False])
def test_decision_rule_is_beating_half_the_population(online):
    shadow, in_mask, target, is_member, pop_target, pop_shadow = synthetic(n=1000, z=800, seed=10)
    rmia = RMIA(online=online).fit(shadow, in_mask, pop_target, pop_shadow)
    scores = rmia.score_samples(target)
    result = rmia.evaluate(target, is_member)
    assert result.threshold == 0.5 and result.threshold_source == "none"
    assert result.true_positives == int(np.sum(scores[is_member] >= 0.5))
    assert result.false_positives == int(np.sum(scores[~is_member] >= 0.5))
    assert 0.65 < result.accuracy < 0.9  # measured 0.80 online, 0.75 offline


# --- tuning never sees the target ------------------------------------------------------------------

def test_tuning_ignores_the_target_labels_and_outputs():
    shadow, in_mask, target, is_member, pop_target, pop_shadow = synthetic(n=500, z=400, seed=11)
    rmia = RMIA(online=False).fit(shadow, in_mask, pop_target, pop_shadow)
    chosen, aucs = rmia.offline_a_, dict(rmia.tuning_auc_)
    rng = np.random.default_rng(12)
    for _ in range(3):
        rmia.evaluate(target, rng.permutation(is_member))
        assert rmia.offline_a_ == chosen
        # the target's outputs, on the records or the population, are not used either
        again = RMIA(online=False).fit(shadow, in_mask, rng.random(len(pop_target)), pop_shadow)
        assert again.offline_a_ == chosen and again.tuning_auc_ == aucs
    assert rmia.offline_a_source_ == "tuned" and chosen in OFFLINE_A_GRID


# --- bad input -------------------------------------------------------------------------------------

def one_line_error(call, *fragments):
    with pytest.raises(TfmiError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_input():
    shadow, in_mask, target, is_member, pop_target, pop_shadow = synthetic(k=4, n=20, z=10)
    for gamma in (0, -1.0, float("nan"), True, "1"):
        one_line_error(lambda g=gamma: RMIA(gamma=g), "gamma must be a positive number")
    for a in (-0.1, 1.5):
        one_line_error(lambda a=a: RMIA(online=False, offline_a=a), "offline_a must be in [0, 1]")
    one_line_error(lambda: RMIA(online="no"), "online must be True or False")
    fit = RMIA().fit
    one_line_error(lambda: fit(shadow, in_mask[:, :-1], pop_target, pop_shadow), "IN mask has shape")
    one_line_error(lambda: fit(shadow, in_mask, pop_target, pop_shadow[:3]), "expected (4, 10)")
    one_line_error(lambda: fit(shadow, in_mask, pop_target[:-1], pop_shadow), "expected (4, 9)")
    one_line_error(lambda: fit(shadow[0], in_mask, pop_target, pop_shadow), "shape (shadows, records)")
    one_line_error(lambda: fit(shadow, in_mask, pop_target[:0], pop_shadow[:, :0]),
                   "population target probabilities are empty")
    one_line_error(lambda: fit(shadow, in_mask, pop_target, pop_shadow, population_in_mask=in_mask),
                   "population IN mask has shape")
    one_line_error(lambda: fit(shadow, in_mask * 2, pop_target, pop_shadow), "boolean (or 0/1)")
    for bad in (1.2, -0.1, np.nan, np.inf):
        worse = shadow.copy()
        worse[1, 3] = bad
        one_line_error(lambda w=worse: fit(w, in_mask, pop_target, pop_shadow), "probabilities in [0, 1]")
        one_line_error(lambda b=bad: fit(shadow, in_mask, np.r_[pop_target[:-1], b], pop_shadow),
                       "population target probabilities must be probabilities in [0, 1]")
    one_line_error(lambda: fit(np.log(shadow), in_mask, pop_target, pop_shadow), "not logits")
    one_line_error(lambda: fit(shadow.astype(str), in_mask, pop_target, pop_shadow), "must be numbers")
    one_line_error(lambda: RMIA().score_samples(target), "not fitted")
    fitted = fit(shadow, in_mask, pop_target, pop_shadow)
    one_line_error(lambda: fitted.score_samples(target[:-1]), "fitted on 20 records")
    one_line_error(lambda: fitted.score_samples(target + 1), "[0, 1]")
    one_line_error(lambda: fitted.evaluate(target, is_member[:-1]), "19 membership flags for 20")
    # online needs IN and OUT shadows for every record; offline an OUT shadow for every record
    one_line_error(lambda: fit(shadow[:1], in_mask[:1], pop_target, pop_shadow[:1]), "at least 2 shadow")
    none_in = np.zeros_like(in_mask)
    one_line_error(lambda: fit(shadow, none_in, pop_target, pop_shadow), "20 record(s) lack IN or OUT")
    all_in = in_mask.copy()
    all_in[:, 0] = True
    one_line_error(lambda: RMIA(online=False).fit(shadow, all_in, pop_target, pop_shadow),
                   "1 record(s) trained every shadow")
    # population records in every shadow's training set are fine (p(z) uses what the shadows give);
    # the tuning then has no population to compare with and falls back to the default a
    everywhere = RMIA(online=False).fit(shadow, in_mask, pop_target, pop_shadow,
                                        population_in_mask=np.ones(pop_shadow.shape, bool))
    assert everywhere.offline_a_source_ == "default"


# --- run_attacks on a real target ------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def split(digits):
    return membership_split(digits.y, target_size=200, seed=0)


@pytest.fixture(scope="module")
def target(digits, split):
    return train_target(digits, split, TrainConfig("mlp", epochs=15), verbose=0)


@pytest.fixture(scope="module")
def shadows(digits, split):
    return train_shadows(digits, shadow_pool(split, "online"), TrainConfig("mlp", epochs=15),
                         num_shadows=4, seed=1)


def true_class_probs(logits_or_probs, y, kind):
    return compute_signals(logits_or_probs, y, kind=kind).true_class_probability


def test_parse_attacks_knows_rmia():
    assert parse_attacks("rmia") == RMIA_ATTACK_NAMES == ("rmia_online", "rmia_offline")
    assert parse_attacks("all")[-2:] == RMIA_ATTACK_NAMES


def test_run_attacks_rmia_rows_match_a_direct_computation(digits, split, target, shadows):
    population = split.reference
    report = run_attacks(target.model, digits, split.members, split.non_members, shadows=shadows,
                         population=population, attacks="loss,rmia")
    rows = {r.attack: r for r in report.results if r.attack.startswith("RMIA")}
    assert set(rows) == {"RMIA online", "RMIA offline"}
    assert len(report.notes) == 1 and re.fullmatch(r"RMIA offline: a=[0-9.]+, tuned on the shadows",
                                                   report.notes[0])
    # the same numbers from the models directly
    evaluated = np.r_[split.members, split.non_members]
    is_member = np.r_[np.ones(len(split.members), bool), np.zeros(len(split.non_members), bool)]
    y, y_pop = digits.y[evaluated], digits.y[population]
    pos = np.argsort(shadows.pool)[np.searchsorted(shadows.pool, evaluated, sorter=np.argsort(shadows.pool))]
    assert np.array_equal(shadows.pool[pos], evaluated)
    in_mask = shadows.masks[:, pos]
    shadow_p = np.stack([true_class_probs(lg, y, "logits") for lg in shadows.logits(digits.x[evaluated])])
    pop_shadow_p = np.stack([true_class_probs(lg, y_pop, "logits")
                             for lg in shadows.logits(digits.x[population])])
    # the target's outputs through tfmi's batched inference: Keras predict batches differently, which
    # moves logits by ~1e-6 and can flip a comparison of two ratios
    target_p = true_class_probs(model_outputs(target.model, digits.x[evaluated]), y, None)
    pop_target_p = true_class_probs(model_outputs(target.model, digits.x[population]), y_pop, None)
    for online, name in ((True, "RMIA online"), (False, "RMIA offline")):
        expected = RMIA(online=online).fit(shadow_p, in_mask, pop_target_p, pop_shadow_p).evaluate(
            target_p, is_member)
        got = rows[name]
        assert got.attack == expected.attack and got.threshold_source == "none"
        assert got.auc == pytest.approx(expected.auc, abs=1e-6)
        assert got.accuracy == pytest.approx(expected.accuracy, abs=1e-6)
        assert got.tpr_at_fpr == pytest.approx(expected.tpr_at_fpr, abs=1e-6)
        assert got.auc > 0.55  # the digits MLP overfits
    assert rows["RMIA offline"].auc >= report.result("loss", "shadow").auc - 0.05


def test_run_attacks_population_defaults_and_errors(digits, split, target, shadows):
    members, non_members = split.members, split.non_members
    # the online pool holds only evaluated records: no default population
    with pytest.raises(TfmiError, match="pass population=record indices"):
        run_attacks(target.model, digits, members, non_members, shadows=shadows, attacks="rmia_offline")
    report = run_attacks(target.model, digits, members, non_members, shadows=shadows, attacks="all",
                         oracle=False, learned_classifier="logistic")
    assert not any(r.attack.startswith("RMIA") for r in report.results)
    assert any(n.startswith("skipped rmia_online, rmia_offline") for n in report.notes)
    for bad, message in ((np.r_[split.reference, non_members[:1]], "shares records"),
                         (np.r_[split.reference, split.reference[:1]], "repeats records"),
                         (np.zeros(0, np.int64), "population must be a non-empty"),
                         (np.r_[split.reference, len(digits)], "outside the dataset")):
        with pytest.raises(TfmiError, match=message):
            run_attacks(target.model, digits, members, non_members, shadows=shadows, population=bad,
                        attacks="gap")


def test_run_attacks_offline_pool_is_the_default_population(digits, split, target):
    offline = train_shadows(digits, shadow_pool(split, "offline"), TrainConfig("mlp", epochs=15),
                            num_shadows=2, seed=2)
    report = run_attacks(target.model, digits, split.members, split.non_members, shadows=offline,
                         attacks="rmia_offline")
    assert [r.attack for r in report.results] == ["RMIA offline"]
    assert report.results[0].auc > 0.55
    with pytest.raises(TfmiError, match="RMIA online needs shadows"):
        run_attacks(target.model, digits, split.members, split.non_members, shadows=offline,
                    attacks="rmia_online")
