"""tfmi.attacks.metrics: ROC, AUC, advantage, TPR@FPR, bootstrap intervals and AttackResult."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import auc, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from tfmi.attacks.metrics import AttackResult, evaluate_scores, roc_curve, tpr_at_fpr
from tfmi.errors import TfmiError


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("levels", [3, 20, None])
def test_roc_matches_sklearn_with_ties(seed, levels):
    rng = np.random.default_rng(seed)
    n = 2000
    y = rng.random(n) < 0.3
    s = rng.integers(0, levels, n).astype(float) if levels else rng.normal(size=n)
    s = s + 0.5 * y * (levels or 1) / 10  # some signal, ties kept
    fpr, tpr, thr = roc_curve(s, y)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, sk_fpr)
    np.testing.assert_array_equal(tpr, sk_tpr)
    np.testing.assert_array_equal(thr, sk_thr)
    assert (fpr[0], tpr[0], thr[0]) == (0.0, 0.0, np.inf)
    assert len(thr) == len(np.unique(s)) + 1  # one point per distinct score, plus the start
    assert abs(auc(fpr, tpr) - roc_auc_score(y, s)) <= 1e-12
    r = evaluate_scores(s[y], s[~y], attack="t")
    assert abs(r.auc - roc_auc_score(y, s)) <= 1e-12
    assert r.advantage == pytest.approx(np.max(sk_tpr - sk_fpr), abs=1e-15)


def test_roc_accepts_zero_one_labels():
    fpr, tpr, _ = roc_curve([0.2, 0.8, 0.5], [0, 1, 0])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0] and tpr.tolist() == [0.0, 1.0, 1.0, 1.0]


def test_perfect_separation():
    r = evaluate_scores(np.linspace(2, 3, 100), np.linspace(0, 1, 300), attack="perfect")
    assert r.auc == 1.0 and r.advantage == 1.0 and r.accuracy == 1.0
    assert r.threshold == 2.0 and r.threshold_source == "oracle"
    assert r.tpr_at_fpr[0.01] == 1.0 and r.tpr_at_fpr[0.1] == 1.0
    assert r.tpr_at_fpr[0.001] is None  # 300 non-members cannot measure FPR 0.1%


def test_identical_distributions_give_chance():
    rng = np.random.default_rng(3)
    r = evaluate_scores(rng.normal(size=100_000), rng.normal(size=100_000), attack="null")
    assert abs(r.auc - 0.5) < 0.01
    assert r.advantage < 0.02
    assert abs(r.tpr_at_fpr[0.1] - 0.1) < 0.01


def test_two_gaussians_known_auc():
    rng = np.random.default_rng(4)
    d = 1.0
    r = evaluate_scores(rng.normal(d, 1, 50_000), rng.normal(0, 1, 50_000), attack="gauss")
    assert r.auc == pytest.approx(_phi(d / math.sqrt(2)), abs=0.006)  # 0.7602; sd of estimate ~0.002
    # best balanced accuracy for equal-variance Gaussians: threshold d/2, accuracy Phi(d/2)
    assert r.accuracy == pytest.approx(_phi(d / 2), abs=0.01)
    assert r.threshold == pytest.approx(d / 2, abs=0.1)
    assert r.advantage == pytest.approx(2 * _phi(d / 2) - 1, abs=0.02)
    # TPR at FPR 10%: Phi(d - z_0.9)
    assert r.tpr_at_fpr[0.1] == pytest.approx(_phi(d - 1.2815515655446004), abs=0.015)


@pytest.mark.parametrize(
    ("n_train", "c_train", "n_test", "c_test"), [(1000, 1000, 1000, 554), (800, 900, 1000, 0)]
)
def test_gap_attack_identity(n_train, c_train, n_test, c_test):
    c_train = min(c_train, n_train)
    member = np.zeros(n_train)
    member[:c_train] = 1.0
    non_member = np.zeros(n_test)
    non_member[:c_test] = 1.0
    a, b = c_train / n_train, c_test / n_test
    r = evaluate_scores(member, non_member, attack="gap", threshold=1, threshold_source="none")
    assert r.threshold == 1.0 and r.threshold_source == "none"
    assert r.accuracy == pytest.approx(0.5 + (a - b) / 2, abs=1e-15)
    assert r.advantage == a - b
    oracle = evaluate_scores(member, non_member, attack="gap")
    assert oracle.threshold == 1.0 and oracle.accuracy == r.accuracy


def test_shadow_threshold_is_applied_not_reoptimized():
    m, nm = np.array([0.1, 0.6, 0.9, 0.95]), np.array([0.05, 0.2, 0.7, 0.3])
    r = evaluate_scores(m, nm, attack="loss", threshold=0.65, threshold_source="shadow")
    assert r.threshold == 0.65
    assert r.accuracy == (2 / 4 + 3 / 4) / 2  # TPR 2/4, TNR 3/4
    assert r.accuracy < evaluate_scores(m, nm, attack="loss").accuracy


def test_tpr_at_fpr_measurability_and_rule():
    rng = np.random.default_rng(5)
    r = evaluate_scores(rng.normal(1, 1, 500), rng.normal(0, 1, 500), attack="t")
    assert r.tpr_at_fpr[0.001] is None  # 500 non-members: smallest measurable FPR is 0.002
    assert isinstance(r.tpr_at_fpr[0.01], float) and isinstance(r.tpr_at_fpr[0.1], float)
    r = evaluate_scores(rng.normal(1, 1, 500), rng.normal(0, 1, 1000), attack="t")
    assert isinstance(r.tpr_at_fpr[0.001], float)  # 1000 non-members: exactly one false positive allowed
    # conservative rule: the largest TPR among points with FPR <= target, no interpolation
    fpr = np.array([0.0, 0.05, 0.1, 0.15, 1.0])
    tpr = np.array([0.0, 0.3, 0.4, 0.9, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.1, 20) == 0.4
    assert tpr_at_fpr(fpr, tpr, 0.12, 20) == 0.4
    assert tpr_at_fpr(fpr, tpr, 0.01, 20) is None


def test_tpr_at_fpr_against_brute_force():
    rng = np.random.default_rng(6)
    m, nm = rng.integers(0, 300, 3000).astype(float), rng.integers(0, 280, 2000).astype(float)
    r = evaluate_scores(m, nm, attack="t")
    for f, got in r.tpr_at_fpr.items():
        best = max(np.mean(m >= t) for t in np.unique(np.r_[m, nm, np.inf]) if np.mean(nm >= t) <= f)
        assert got == best


def test_bootstrap_contains_estimate_and_narrows():
    rng = np.random.default_rng(7)
    small = evaluate_scores(rng.normal(1, 1, 300), rng.normal(0, 1, 300), attack="t", bootstrap=400)
    big = evaluate_scores(rng.normal(1, 1, 5000), rng.normal(0, 1, 5000), attack="t", bootstrap=400)
    for r in (small, big):
        lo, hi = r.auc_ci
        assert lo < r.auc < hi
        for f in (0.01, 0.1):
            lo, hi = r.tpr_at_fpr_ci[f]
            assert lo <= r.tpr_at_fpr[f] <= hi
    assert small.tpr_at_fpr_ci[0.001] is None and big.tpr_at_fpr_ci[0.001] is not None
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(big.auc_ci) < width(small.auc_ci) / 2  # ~sqrt(16.7) = 4x narrower
    assert width(big.tpr_at_fpr_ci[0.1]) < width(small.tpr_at_fpr_ci[0.1])
    # seeded: same seed, same intervals; 95% interval inside the 99% one
    again = evaluate_scores(rng.normal(1, 1, 300), rng.normal(0, 1, 300), attack="t", bootstrap=0)
    assert again.auc_ci is None and again.tpr_at_fpr_ci is None
    m, nm = rng.normal(1, 1, 400), rng.normal(0, 1, 400)
    a = evaluate_scores(m, nm, attack="t", bootstrap=300, seed=11)
    b = evaluate_scores(m, nm, attack="t", bootstrap=300, seed=11)
    c = evaluate_scores(m, nm, attack="t", bootstrap=300, seed=11, confidence=0.99)
    assert a == b
    assert c.auc_ci[0] <= a.auc_ci[0] and a.auc_ci[1] <= c.auc_ci[1]


def test_bootstrap_auc_matches_direct_computation_on_one_resample():
    """The vectorized bootstrap computes the same AUC as resampling by hand (B=1, same Generator draws)."""
    rng = np.random.default_rng(8)
    m, nm = rng.integers(0, 30, 200).astype(float), rng.integers(0, 25, 150).astype(float)
    r = evaluate_scores(m, nm, attack="t", bootstrap=1, seed=5)
    g = np.random.default_rng(5)
    mb, nb = m[g.integers(0, 200, size=(1, 200))[0]], nm[g.integers(0, 150, size=(1, 150))[0]]
    expected = roc_auc_score(np.r_[np.ones(200), np.zeros(150)], np.r_[mb, nb])
    assert r.auc_ci[0] == pytest.approx(expected, abs=1e-12)


def test_json_round_trip_and_summary():
    rng = np.random.default_rng(9)
    r = evaluate_scores(rng.normal(0.7, 1, 20_000), rng.normal(0, 1, 20_000), attack="loss", bootstrap=50)
    assert len(r.roc[0]) <= 1010 and r.roc[0][0] == 0.0 and r.roc[0][-1] == 1.0
    text = r.to_json()
    back = AttackResult.from_json(text)
    assert back == r
    assert back.to_json() == text
    assert back.tpr_at_fpr == r.tpr_at_fpr and back.tpr_at_fpr_ci == r.tpr_at_fpr_ci
    np.testing.assert_array_equal(back.roc[0], r.roc[0])
    assert AttackResult.from_dict(json.loads(text)) == r
    assert isinstance(json.loads(text)["roc"]["fpr"], list)
    small = evaluate_scores(
        [0.9, 0.8, 0.4], [0.5, 0.3, 0.1], attack="loss", threshold=0.6, threshold_source="shadow"
    )
    assert AttackResult.from_json(small.to_json()) == small
    assert small.summary() == (
        "loss (shadow): acc 0.833, adv 0.667, achieved adv 0.667, AUC 0.889, TPR@0.1% n/a, TPR@1% n/a, "
        "TPR@10% n/a"
    )
    s = r.summary()
    assert s.startswith("loss (oracle): acc ") and "TPR@0.1% " in s and "\n" not in s
    with pytest.raises(TfmiError):
        AttackResult.from_json('{"attack": "x"}')
    with pytest.raises(TfmiError):
        AttackResult.from_json("not json")


def test_downsampled_roc_keeps_auc_exact():
    rng = np.random.default_rng(10)
    m, nm = rng.normal(1, 1, 30_000), rng.normal(0, 1, 30_000)
    r = evaluate_scores(m, nm, attack="t")
    exact = roc_auc_score(np.r_[np.ones(30_000), np.zeros(30_000)], np.r_[m, nm])
    assert abs(r.auc - exact) <= 1e-12
    assert len(r.roc[0]) <= 1002
    assert np.all(np.diff(r.roc[0]) >= 0) and np.all(np.diff(r.roc[1]) >= 0)
    assert abs(auc(r.roc[0], r.roc[1]) - exact) < 2e-3  # the stored curve is close to the full one


@pytest.mark.parametrize(
    ("member", "non_member", "kwargs", "match"),
    [
        ([], [0.1], {}, "member_scores is empty"),
        ([0.1], [], {}, "non_member_scores is empty"),
        ([0.1, np.nan], [0.2], {}, "NaN or infinite"),
        ([0.1], [0.2, np.inf], {}, "NaN or infinite"),
        ([[0.1, 0.2]], [0.2], {}, "1-D"),
        ([0.1], np.zeros((2, 1)), {}, "1-D"),
        (["a"], [0.2], {}, "numeric"),
        ([0.1], [0.2], {"threshold_source": "magic"}, "unknown threshold_source"),
        ([0.1], [0.2], {"threshold_source": "shadow"}, "needs the threshold"),
        ([0.1], [0.2], {"threshold_source": "none"}, "needs the threshold"),
        ([0.1], [0.2], {"threshold": np.nan, "threshold_source": "shadow"}, "finite"),
        ([0.1], [0.2], {"bootstrap": -1}, "bootstrap"),
        ([0.1], [0.2], {"bootstrap": 2.5}, "bootstrap"),
        ([0.1], [0.2], {"confidence": 1.0}, "confidence"),
        ([0.1], [0.2], {"attack": ""}, "attack"),
    ],
)
def test_bad_input_raises(member, non_member, kwargs, match):
    kwargs = {"attack": "t", **kwargs}
    with pytest.raises(TfmiError, match=match) as info:
        evaluate_scores(np.asarray(member), np.asarray(non_member), **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("scores", "is_member", "match"),
    [
        ([0.1, 0.2], [True, True], "no non-members"),
        ([0.1, 0.2], [False, False], "no members"),
        ([0.1, 0.2], [True], "must match"),
        ([0.1, 0.2], [0, 2], "boolean"),
        ([[0.1, 0.2]], [True, False], "1-D"),
        ([0.1, np.nan], [True, False], "NaN"),
    ],
)
def test_roc_bad_input_raises(scores, is_member, match):
    with pytest.raises(TfmiError, match=match):
        roc_curve(np.asarray(scores), np.asarray(is_member))


def test_no_tensorflow_import():
    import subprocess
    import sys

    code = "import sys, tfmi.attacks.metrics; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------- achieved advantage and empirical epsilon


def test_achieved_advantage_is_tpr_minus_fpr_at_the_attacks_own_threshold():
    rng = np.random.default_rng(5)
    members, others = rng.normal(1.0, 1.0, 3000), rng.normal(0.0, 1.0, 3000)
    calibrated = 1.4  # a threshold set elsewhere (shadows), not the best one for these labels
    r = evaluate_scores(members, others, attack="loss", threshold=calibrated, threshold_source="shadow")
    expected = np.mean(members >= calibrated) - np.mean(others >= calibrated)
    assert r.achieved_advantage == pytest.approx(expected, abs=1e-12)
    assert r.achieved_advantage < r.advantage - 0.02  # max over thresholds, chosen with the labels
    d = r.to_dict()
    assert d["achieved_advantage"] == pytest.approx(expected)
    assert d["true_positives"] == np.sum(members >= 1.4)
    oracle = evaluate_scores(members, others, attack="loss")
    assert oracle.achieved_advantage is None and oracle.epsilon_lower_bound() is None
    assert oracle.to_dict()["achieved_advantage"] is None


def _independent_lower_bound(tp, n_m, fp, n_n, delta, confidence=0.95):
    """Jagielski et al. 2020, re-derived: Clopper-Pearson via the beta quantiles, both DP inequalities."""
    from scipy.stats import beta

    a = (1 - confidence) / 2
    tpr_lo = beta.ppf(a, tp, n_m - tp + 1) if tp > 0 else 0.0
    fpr_hi = beta.ppf(1 - a, fp + 1, n_n - fp) if fp < n_n else 1.0
    candidates = [0.0]
    if tpr_lo > delta:
        candidates.append(np.log((tpr_lo - delta) / fpr_hi))
    fnr_hi, tnr_lo = 1 - tpr_lo, 1 - fpr_hi
    if tnr_lo > delta:
        candidates.append(np.log((tnr_lo - delta) / fnr_hi))
    return max(candidates)


@pytest.mark.parametrize(("tp", "n_m", "fp", "n_n"), [
    (1000, 1000, 0, 1000), (900, 1000, 100, 1000), (30, 1000, 0, 1000), (1000, 1000, 900, 1000),
    (500, 1000, 500, 1000), (0, 10, 0, 10), (7, 10, 1, 10),
])
@pytest.mark.parametrize("delta", [0.0, 1e-5, 0.01])
def test_epsilon_lower_bound_matches_an_independent_derivation(tp, n_m, fp, n_n, delta):
    from tfmi.attacks.metrics import epsilon_lower_bound

    ours = epsilon_lower_bound(tp, n_m, fp, n_n, delta=delta)
    assert ours == pytest.approx(_independent_lower_bound(tp, n_m, fp, n_n, delta), abs=1e-12)
    assert ours >= 0
    assert epsilon_lower_bound(tp, n_m, fp, n_n, delta=delta, confidence=0.5) >= ours  # less sure, more eps


def test_epsilon_lower_bound_refuses_impossible_counts():
    from tfmi.attacks.metrics import epsilon_lower_bound

    for args in [(11, 10, 0, 10), (1, 10, -1, 10), (1, 0, 0, 10)]:
        with pytest.raises(TfmiError):
            epsilon_lower_bound(*args)
    with pytest.raises(TfmiError, match="delta"):
        epsilon_lower_bound(5, 10, 1, 10, delta=1.5)
