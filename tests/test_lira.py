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


# --- fixed variance: the pooled within-example standard deviation ------------------------------------

def auc_of(scores, is_member):
    return evaluate_scores(scores[is_member], scores[~is_member], attack="reference").auc


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("queries", [None, 2])
def test_fixed_variance_is_the_pooled_within_example_sd(k, queries):
    # true sd 1.0; with 3 or 4 shadows most records have 1 or 2 values per side: the old
    # samples - 1 denominator gave 0.59-0.71 (and the 1e-6 floor where a side had 1 value each)
    shadow, in_mask, _, _ = synthetic(k=k, n=4000, queries=queries)
    attack = LiRA(online=True, fixed_variance=True).fit(shadow, in_mask)
    assert attack.sd_out_.flat[0] == pytest.approx(1.0, abs=0.05)
    assert attack.sd_in_.flat[0] == pytest.approx(1.0, abs=0.05)
    assert np.all(attack.sd_out_ == attack.sd_out_.flat[0])
    expected_in = "pooled within-example" if k == 4 else "pooled within-example, OUT shadows"
    assert attack.sd_sources_ == {"out": "pooled within-example", "in": expected_in}  # k=3: 1 IN each


def test_fixed_variance_counts_degrees_of_freedom_per_record():
    # random designs: records have 1 to 3 values per side; single values add no residual and no dof
    rng = np.random.default_rng(3)
    k, n = 4, 4000
    in_mask = rng.random((k, n)) < 0.5
    in_mask[0], in_mask[1] = True, False  # every record has an IN and an OUT value
    base = rng.normal(0, 3, n)
    shadow = base + 2.0 * in_mask + rng.normal(0, 1, (k, n))
    for online in (True, False):
        attack = LiRA(online=online, fixed_variance=True).fit(shadow, in_mask)
        assert attack.sd_out_[0, 0] == pytest.approx(1.0, abs=0.05)
    assert attack.sd_sources_ == {"out": "pooled within-example"}
    # the same numbers by hand: residuals around each record's mean over (n_i - 1) per record
    out = np.where(~in_mask, shadow, np.nan)
    n_out = (~in_mask).sum(axis=0)
    squares = np.nansum((out - np.nanmean(out, axis=0)) ** 2)
    assert attack.sd_out_[0, 0] == pytest.approx(np.sqrt(squares / (n_out - 1).sum()), rel=1e-12)


def test_two_shadows_use_paired_differences_not_the_floor():
    # 2 shadows: every record has one IN and one OUT value, no within-record dof at all
    shadow, in_mask, target, is_member = synthetic(k=2, n=4000)
    for online in (True, False):
        attack = LiRA(online=online, fixed_variance=True).fit(shadow, in_mask)
        assert attack.sd_out_[0, 0] == pytest.approx(1.0, abs=0.05)  # var(phi_in - phi_out) / 2
        assert set(attack.sd_sources_.values()) == {"paired IN-OUT differences"}
    offline = LiRA(online=False, fixed_variance=True).fit(shadow, in_mask)
    reference = auc_of(target - offline.mean_out_[:, 0], is_member)  # ranking by phi - mu_out: 0.84
    assert offline.evaluate(target, is_member).auc >= reference - 1e-12  # was 0.72 (sd at 1e-6)


def test_one_offline_shadow_per_record_uses_the_spread_across_records():
    shadow, in_mask, target, is_member = synthetic(k=2, n=4000)
    out_only = np.where(in_mask, shadow[::-1], shadow)[:1]  # one OUT value per record, no IN value
    attack = LiRA(online=False, fixed_variance=True).fit(out_only, np.zeros((1, 4000), bool))
    assert attack.sd_sources_ == {"out": "spread across examples"}
    assert attack.sd_out_[0, 0] == pytest.approx(np.sqrt(3.0**2 + 1.0), abs=0.15)  # an upper bound
    assert attack.evaluate(target, is_member).auc == pytest.approx(
        auc_of(target - out_only[0], is_member), abs=1e-12)
    with pytest.raises(TfmiError, match="do not vary"):
        LiRA(online=False, fixed_variance=True).fit(np.ones((1, 50)), np.zeros((1, 50), bool))
    with pytest.raises(TfmiError, match="do not vary"):
        LiRA(online=True, fixed_variance=True).fit(np.ones((2, 50)), np.array([[True] * 50, [False] * 50]))


# --- offline decision rule with several queries -----------------------------------------------------

def test_offline_decision_rule_with_two_queries_is_a_nonnegative_mean_z():
    shadow, in_mask, _, _ = synthetic(k=8, n=200, queries=2)
    attack = LiRA(online=False).fit(shadow, in_mask)
    mu, sd = attack.mean_out_, attack.sd_out_

    def at(z):
        return mu + sd * np.asarray(z, float)
    # z = (3, -1): on average 1 sd above the OUT means, a member; the mean of log Phi(z_q) (-0.92)
    # was below log 0.5 and called it a non-member. z = (-1, 0.8): mean -0.1, a non-member.
    members, non_members = at([3.0, -1.0]), at([-1.0, 0.8])
    np.testing.assert_allclose(attack.score_samples(members), norm.logcdf(1.0), rtol=1e-9)
    np.testing.assert_allclose(attack.score_samples(non_members), norm.logcdf(-0.1), rtol=1e-9)
    half = len(mu) // 2
    target = np.concatenate([members[:half], non_members[half:]])
    is_member = np.arange(len(mu)) < half
    result = attack.evaluate(target, is_member)
    assert result.threshold == pytest.approx(np.log(0.5))
    assert result.accuracy == 1.0  # every member called a member, every non-member not
    # the boundary: mean z = 0 scores log 0.5
    assert attack.score_samples(at([0.5, -0.5]))[0] == pytest.approx(np.log(0.5), abs=1e-12)


# --- one phi pipeline for the target and its shadows -------------------------------------------------

@pytest.fixture(scope="module")
def digits_setup():
    """An over-confident digits MLP as a logits model and two softmax twins with the same weights."""
    import keras

    from tfmi.attacks.shadow import ShadowSet, train_shadows
    from tfmi.attacks.suite import shadow_pool
    from tfmi.data import load_dataset, membership_split
    from tfmi.training import TrainConfig, train_target

    data = load_dataset("digits")
    split = membership_split(data.y, target_size=300, seed=0)
    config = TrainConfig("mlp", epochs=30)
    target = train_target(data, split, config, verbose=0)
    trained = train_shadows(data, shadow_pool(split, "online"), config, num_shadows=4, seed=1)

    def over_confident(model):
        """The model with its logits scaled 10x: phi of 40-80, far past where float32 probabilities
        saturate (phi ~ 25); the MLP alone reaches about 8."""
        weights = model.get_weights()
        weights[-2:] = [w * 10.0 for w in weights[-2:]]
        scaled = keras.models.clone_model(model)
        scaled.set_weights(weights)
        return scaled, weights
    shadows = ShadowSet(pool=trained.pool, masks=trained.masks, config=config, batched=False,
                        train_accuracy=trained.train_accuracy, test_accuracy=trained.test_accuracy,
                        _models=[over_confident(trained.shadow_model(k))[0] for k in range(4)])
    logits_twin, weights = over_confident(target.model)
    inputs = keras.Input(data.input_shape)
    softmax_layer_twin = keras.Model(inputs, keras.layers.Softmax()(logits_twin(inputs)))

    def to_softmax(layer):
        config = layer.get_config()
        if layer.name == target.model.layers[-1].name:
            config["activation"] = "softmax"
        return layer.__class__.from_config(config)
    dense_softmax_twin = keras.models.clone_model(target.model, clone_function=to_softmax)
    dense_softmax_twin.set_weights(weights)
    return data, split, shadows, logits_twin, softmax_layer_twin, dense_softmax_twin


def test_softmax_target_and_its_logits_twin_give_the_same_lira(digits_setup):
    from tfmi.attacks.suite import run_attacks

    data, split, shadows, logits_twin, *softmax_twins = digits_setup
    reference = run_attacks(logits_twin, data, split.members, split.non_members, shadows=shadows,
                            attacks="lira")
    assert reference.output_kind == "logits"
    for twin in softmax_twins:
        report = run_attacks(twin, data, split.members, split.non_members, shadows=shadows, attacks="lira")
        assert report.output_kind == "probabilities"
        for expected, got in zip(reference.results, report.results, strict=True):
            assert got.attack == expected.attack
            # with phi from its probabilities (capped near 25) online LiRA had AUC 0.58, not 0.70
            assert got.auc == pytest.approx(expected.auc, abs=1e-9)
            assert got.tpr_at_fpr == pytest.approx(expected.tpr_at_fpr, abs=1e-9)
            assert got.accuracy == pytest.approx(expected.accuracy, abs=1e-9)


def test_target_and_shadow_phi_follow_one_rule(digits_setup):
    from tfmi.attacks.signals import lira_phi, model_outputs, shadow_lira_phi

    data, split, _, logits_twin, softmax_layer_twin, dense_softmax_twin = digits_setup
    x, y = data.x[split.members], data.y[split.members]
    logits = model_outputs(logits_twin, x).values
    assert np.median(lira_phi(model_outputs(logits_twin, x), y)) > 40  # over-confident
    as_shadow = logits.astype(np.float32)[None]  # the target itself as the only shadow
    # Keras softmax models: the pre-softmax logits are recovered, the target's phi is the logits' phi
    for twin in (softmax_layer_twin, dense_softmax_twin):
        out = model_outputs(twin, x)
        assert out.kind == "probabilities" and out.dtype == np.float32
        np.testing.assert_allclose(out.logits, logits, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(lira_phi(out, y), shadow_lira_phi(as_shadow, y, out)[0],
                                   rtol=1e-5, atol=1e-4)
    # a callable giving float32 probabilities only: the shadows' softmax is taken in float32 too, so
    # a shadow identical to the target gets exactly the target's (saturated) phi
    out = model_outputs(lambda b: softmax_layer_twin(b).numpy(), x)
    assert out.logits is None and out.dtype == np.float32
    target_phi = lira_phi(out, y)
    assert target_phi.max() < 28  # saturated
    np.testing.assert_allclose(shadow_lira_phi(as_shadow, y, out)[0], target_phi, rtol=1e-6, atol=1e-6)
    from_logits = shadow_lira_phi(as_shadow, y, model_outputs(logits_twin, x))[0]
    assert np.mean(np.abs(from_logits - target_phi) > 1.0) > 0.5  # what mixing the two rules gave
