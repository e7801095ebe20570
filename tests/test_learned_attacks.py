"""Learned shadow-model attacks (Shokri per-class, ML-Leaks top-3) on synthetic outputs with known answers."""

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from tfmi.attacks.learned import ShokriAttack, Top3Attack
from tfmi.attacks.metrics import evaluate_scores
from tfmi.attacks.signals import ModelOutputs
from tfmi.errors import TfmiError

K = 4
ROWS = np.arange(K)


def sample(rng, n, member_shift, base_margin=2.0, member_rate=0.5):
    """Logits with unit Gaussian noise, ``base_margin`` on the true class, plus ``member_shift[y]``
    (a (K, K) array: the shift of a class-y member's logits) for members."""
    y = rng.integers(K, size=n)
    member = rng.random(n) < member_rate
    logits = rng.normal(size=(n, K))
    logits[np.arange(n), y] += base_margin
    logits += member[:, None] * member_shift[y]
    return logits, y, member


def class_dependent_shift():
    # class c members: logit c up and logit c+1 down by a_c; each row sums to zero, so the log-likelihood
    # ratio is a function of the log-probabilities alone
    shift = np.zeros((K, K))
    for c, a in enumerate([1.0, 1.5, 2.0, 2.5]):
        shift[c, c] += a
        shift[c, (c + 1) % K] -= a
    return shift


def auc_of(attack, logits, y, member):
    return attack.evaluate(logits[member], logits[~member], y[member], y[~member]).auc


def test_shokri_approaches_the_bayes_optimal_attack():
    rng = np.random.default_rng(0)
    shift = class_dependent_shift()
    attack = ShokriAttack().fit(*sample(rng, 4000, shift))
    logits, y, member = sample(rng, 4000, shift)
    auc = auc_of(attack, logits, y, member)
    # Gaussian log-likelihood ratio given the true class: the best possible score
    mean_out = np.where(ROWS == y[:, None], 2.0, 0.0)
    llr = np.sum(shift[y] * (logits - mean_out), axis=1) - 0.5 * np.sum(shift[y] ** 2, axis=1)
    bayes = evaluate_scores(llr[member], llr[~member], attack="bayes").auc
    assert bayes > 0.9
    assert auc > 0.8
    assert auc > bayes - 0.05  # measured: 0.926 vs 0.951


def test_identical_member_and_non_member_outputs_give_chance_auc():
    rng = np.random.default_rng(1)
    no_shift = np.zeros((K, K))
    for attack in (ShokriAttack(), Top3Attack()):
        attack.fit(*sample(rng, 3000, no_shift))
        assert abs(auc_of(attack, *sample(rng, 4000, no_shift)) - 0.5) < 0.05


def reversed_margins(rng, n):
    """Even classes: members have margin 4, non-members 1; odd classes the other way round. The sorted
    probabilities of members and non-members then have the same distribution."""
    logits, y, member = sample(rng, n, np.zeros((K, K)), base_margin=0.0)
    confident = member == (y % 2 == 0)
    logits[np.arange(n), y] += np.where(confident, 4.0, 1.0)
    return logits, y, member


def test_per_class_shokri_beats_label_blind_top3_when_patterns_reverse_between_classes():
    rng = np.random.default_rng(2)
    shadow, target = reversed_margins(rng, 4000), reversed_margins(rng, 4000)
    shokri = auc_of(ShokriAttack().fit(*shadow), *target)
    top3 = auc_of(Top3Attack().fit(*shadow), *target)
    assert shokri > 0.85
    assert top3 < 0.58
    assert shokri > top3 + 0.25


@pytest.mark.parametrize("num_classes", [2, 10])
def test_top3_detects_more_confident_members(num_classes):
    rng = np.random.default_rng(3)

    def draw(n):
        y, member = rng.integers(num_classes, size=n), rng.random(n) < 0.5
        logits = rng.normal(size=(n, num_classes))
        logits[np.arange(n), y] += np.where(member, 4.0, 1.0)
        return softmax(logits, axis=1), y, member

    attack = Top3Attack().fit(*draw(3000))
    assert attack.model_.n_features_in_ == 2 * min(3, num_classes)  # sorted top-k and their logs
    assert auc_of(attack, *draw(3000)) > 0.85


@pytest.mark.parametrize("cls", [ShokriAttack, Top3Attack])
def test_logistic_and_mlp_names_determinism_and_output_kinds(cls):
    rng = np.random.default_rng(4)
    shift = class_dependent_shift()
    logits, y, member = sample(rng, 1200, shift)
    test_logits, test_y, _ = sample(rng, 300, shift)
    probs, test_probs = softmax(logits, axis=1), softmax(test_logits, axis=1)
    for classifier in ("logistic", "mlp"):
        attack = cls(classifier, seed=7)
        assert attack.fit(logits, y, member) is attack
        assert attack.name == f"{cls._attack_name} ({classifier})"
        scores = attack.score_samples(test_logits, test_y)
        assert scores.shape == (300,) and np.all((scores >= 0) & (scores <= 1))
        # probabilities (auto-detected or declared) give the same scores as the equivalent logits
        np.testing.assert_allclose(attack.score_samples(test_probs, test_y), scores, atol=1e-9)
        declared = ModelOutputs(test_probs, "probabilities")
        np.testing.assert_allclose(attack.score_samples(declared, test_y), scores, atol=1e-9)
        # same seed, same data: same scores; fitting on probabilities gives the same attack
        again = cls(classifier, seed=7).fit(ModelOutputs(logits, "logits"), y, member)
        np.testing.assert_array_equal(again.score_samples(test_logits, test_y), scores)
        from_probs = cls(classifier, seed=7).fit(probs, y, member)
        np.testing.assert_allclose(from_probs.score_samples(test_logits, test_y), scores, atol=1e-6)


def test_shokri_falls_back_to_a_global_classifier_for_classes_missing_members_or_non_members():
    rng = np.random.default_rng(5)
    logits, y, member = sample(rng, 1500, class_dependent_shift())
    member[y == 2] = True  # class 2: members only
    keep = y != 3  # class 3: absent
    attack = ShokriAttack("logistic").fit(logits[keep], y[keep], member[keep])
    assert sorted(attack.class_models_) == [0, 1]
    assert attack.fallback_classes_ == (2, 3)
    assert attack.global_model_ is not None
    test_logits, test_y, _ = sample(rng, 400, class_dependent_shift())
    scores = attack.score_samples(test_logits, test_y)
    features = log_softmax(test_logits, axis=1)
    fallback = np.isin(test_y, [2, 3])
    np.testing.assert_allclose(scores[fallback], attack.global_model_.predict_proba(features[fallback])[:, 1])
    in_zero = test_y == 0
    class_zero = attack.class_models_[0].predict_proba(features[in_zero])[:, 1]
    np.testing.assert_allclose(scores[in_zero], class_zero)
    # with every class complete there is no global model
    full = ShokriAttack("logistic").fit(*sample(rng, 800, class_dependent_shift()))
    assert full.global_model_ is None and full.fallback_classes_ == ()


def test_max_train_rows_subsamples_deterministically():
    rng = np.random.default_rng(6)
    data = sample(rng, 1000, class_dependent_shift())
    test_logits, test_y, _ = sample(rng, 200, class_dependent_shift())
    small = [Top3Attack("logistic", seed=3, max_train_rows=300).fit(*data) for _ in range(2)]
    np.testing.assert_array_equal(small[0].score_samples(test_logits, test_y),
                                  small[1].score_samples(test_logits, test_y))
    full = Top3Attack("logistic", seed=3, max_train_rows=None).fit(*data)
    full_scores = full.score_samples(test_logits, test_y)
    assert not np.allclose(full_scores, small[0].score_samples(test_logits, test_y))


def test_bad_inputs_raise_one_line_errors():
    rng = np.random.default_rng(7)
    logits, y, member = sample(rng, 200, class_dependent_shift())
    with pytest.raises(TfmiError, match="unknown attack classifier 'svm'"):
        ShokriAttack("svm")
    with pytest.raises(TfmiError, match="not fitted"):
        Top3Attack().score_samples(logits, y)
    with pytest.raises(TfmiError, match="not fitted"):
        ShokriAttack().evaluate(logits, logits, y, y)
    with pytest.raises(TfmiError, match="one entry per example"):
        ShokriAttack().fit(logits, y[:-1], member[:-1])
    with pytest.raises(TfmiError, match="one entry per example"):
        Top3Attack().fit(logits, y, member[:-1])
    with pytest.raises(TfmiError, match="no non-members"):
        ShokriAttack().fit(logits, y, np.ones(200, bool))
    with pytest.raises(TfmiError, match="no members"):
        Top3Attack().fit(logits, y, np.zeros(200, bool))
    with pytest.raises(TfmiError, match="membership flags must be boolean"):
        Top3Attack().fit(logits, y, np.full(200, 2))
    bad = logits.copy()
    bad[5, 1] = np.nan
    with pytest.raises(TfmiError, match="NaN or infinity"):
        ShokriAttack().fit(bad, y, member)
    with pytest.raises(TfmiError, match="empty"):
        ShokriAttack().fit(np.empty((0, K)), np.empty(0, int), np.empty(0, bool))
    with pytest.raises(TfmiError, match="labels must be in 0..3"):
        Top3Attack().fit(logits, np.full(200, 4), member)
    attack = ShokriAttack("logistic").fit(logits, y, member)
    with pytest.raises(TfmiError, match="outputs have 3 classes but the attack was fitted on 4"):
        attack.score_samples(logits[:, :3], np.zeros(200, int))
    with pytest.raises(TfmiError, match="outputs have 200 rows but labels have 199"):
        attack.score_samples(logits, y[:-1])
    with pytest.raises(TfmiError, match="NaN or infinity"):
        attack.score_samples(bad, y)
    with pytest.raises(TfmiError, match="empty"):
        attack.score_samples(np.empty((0, K)), np.empty(0, int))
    with pytest.raises(TfmiError, match="max_train_rows"):
        Top3Attack(max_train_rows=0)


def test_top3_on_an_overfit_numpy_model_of_digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    rng = np.random.default_rng(8)

    def train_softmax_regression(idx):
        """A tiny numpy softmax regression fitted to memorize ``idx`` (no regularization)."""
        w = np.zeros((x.shape[1], 10))
        onehot = np.eye(10)[y[idx]]
        for _ in range(300):
            w -= 2.0 * x[idx].T @ (softmax(x[idx] @ w, axis=1) - onehot) / len(idx)
        return lambda rows: x[rows] @ w

    def member_split(pool):
        pool = rng.permutation(pool)
        return pool[: len(pool) // 2], pool[len(pool) // 2:]

    order = rng.permutation(len(x))
    shadow_pool, target_pool = order[:900], order[900:]
    shadow_in, shadow_out = member_split(shadow_pool)
    shadow_in, shadow_out = shadow_in[:120], shadow_out  # few training rows: the model overfits
    shadow = train_softmax_regression(shadow_in)
    rows = np.r_[shadow_in, shadow_out]
    is_member = np.r_[np.ones(len(shadow_in), bool), np.zeros(len(shadow_out), bool)]
    attack = Top3Attack("logistic").fit(shadow(rows), y[rows], is_member)
    target_in, target_out = member_split(target_pool)
    target_in = target_in[:120]
    target = train_softmax_regression(target_in)
    result = attack.evaluate(target(target_in), target(target_out), y[target_in], y[target_out])
    assert result.auc > 0.6  # measured: 0.66
