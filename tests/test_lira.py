"""LiRA on synthetic shadow statistics with a known answer."""

import numpy as np
import pytest
from scipy.stats import norm

from tfmi.attacks.lira import LiRA
from tfmi.attacks.metrics import evaluate_scores
from tfmi.errors import TfmiError


def synthetic(k=16, n=3000, shift=2.0, queries=None, seed=0):
    """Each example has its own difficulty; training on it shifts its confidence by ``shift`` sd."""
    rng = np.random.default_rng(seed)
    in_mask = rng.permuted(np.tile(np.arange(k) < k // 2, (n, 1)), axis=1).T
    base = rng.normal(0, 3, n)
    extra = () if queries is None else (queries,)
    shadow = (base + shift * in_mask)[..., None] if queries else base + shift * in_mask
    shadow = shadow + rng.normal(0, 1, (k, n, *extra))
    is_member = rng.random(n) < 0.5
    target = (base + shift * is_member)[:, None] if queries else base + shift * is_member
    target = target + rng.normal(0, 1, (n, *extra))
    return shadow, in_mask, target, is_member


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("fixed_variance", [True, False])
def test_lira_reaches_the_known_auc_and_beats_a_global_threshold(online, fixed_variance):
    shadow, in_mask, target, is_member = synthetic()
    attack = LiRA(online=online, fixed_variance=fixed_variance).fit(shadow, in_mask)
    result = attack.evaluate(target, is_member)
    optimal_auc = norm.cdf(2.0 / np.sqrt(2))  # two unit Gaussians 2 sd apart: 0.921
    assert result.auc == pytest.approx(optimal_auc, abs=0.03)
    global_threshold = evaluate_scores(target[is_member], target[~is_member], attack="global")
    assert result.auc > global_threshold.auc + 0.2  # per-example calibration is the point of LiRA
    assert result.tpr_at_fpr[0.01] > 5 * global_threshold.tpr_at_fpr[0.01]
    assert result.threshold_source == "none"


def test_online_decision_rule_is_the_likelihood_ratio():
    shadow, in_mask, target, is_member = synthetic(k=32)
    attack = LiRA(online=True).fit(shadow, in_mask)
    np.testing.assert_allclose(attack.mean_in_[:, 0] - attack.mean_out_[:, 0], 2.0, atol=1.5)
    assert np.median(attack.sd_in_) == pytest.approx(1.0, abs=0.1)
    scores = attack.score_samples(target)
    manual = (norm.logpdf(target, attack.mean_in_[:, 0], attack.sd_in_[:, 0])
              - norm.logpdf(target, attack.mean_out_[:, 0], attack.sd_out_[:, 0]))
    np.testing.assert_allclose(scores, manual, rtol=1e-10)
    # equal variances: ratio >= 1 exactly when phi is past the midpoint of the two means
    result = attack.evaluate(target, is_member)
    assert 0.8 < result.accuracy < 0.9


def test_offline_score_is_the_one_sided_out_test():
    shadow, in_mask, target, _ = synthetic()
    attack = LiRA(online=False).fit(shadow, in_mask)
    manual = norm.logcdf(target, attack.mean_out_[:, 0], attack.sd_out_[:, 0])
    np.testing.assert_allclose(attack.score_samples(target), manual, rtol=1e-8)


def test_several_queries_per_example_are_averaged():
    shadow, in_mask, target, is_member = synthetic(queries=2)
    single = LiRA().fit(shadow[..., 0], in_mask).evaluate(target[:, 0], is_member)
    both = LiRA().fit(shadow, in_mask).evaluate(target, is_member)
    assert both.auc > single.auc


def test_bad_inputs():
    shadow, in_mask, target, _ = synthetic(k=4, n=50)
    with pytest.raises(TfmiError, match="at least 2 shadow models"):
        LiRA().fit(shadow[:1], in_mask[:1])
    with pytest.raises(TfmiError, match="fewer than 2 IN and OUT shadow"):
        LiRA().fit(shadow[:2], np.array([[True] * 50, [False] * 50]))
    LiRA(fixed_variance=True).fit(shadow[:2], np.array([[True] * 50, [False] * 50]))  # one each is enough
    with pytest.raises(TfmiError, match="do not match"):
        LiRA().fit(shadow, in_mask[:, :10])
    bad = shadow.copy()
    bad[0, 0] = np.nan
    with pytest.raises(TfmiError, match="NaN or infinity"):
        LiRA().fit(bad, in_mask)
    with pytest.raises(TfmiError, match="not fitted"):
        LiRA().score_samples(target)
    with pytest.raises(TfmiError, match="use the same examples"):
        LiRA().fit(shadow, in_mask).score_samples(target[:10])
