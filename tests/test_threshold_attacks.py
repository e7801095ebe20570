"""Threshold attacks on synthetic signals with known answers, and on a real overfit model."""

from dataclasses import fields

import numpy as np
import pytest

from tfmi.attacks.signals import Signals
from tfmi.attacks.threshold import THRESHOLD_ATTACKS, ThresholdAttack
from tfmi.errors import TfmiError


def make_signals(n, **values):
    base = {f.name: np.zeros(n) for f in fields(Signals)}
    base.update({k: np.asarray(v, dtype=np.float64) for k, v in values.items()})
    return Signals(**base)


def test_gap_attack_accuracy_is_half_plus_half_the_gap():
    rng = np.random.default_rng(0)
    train_acc, test_acc, n = 0.96, 0.62, 5000
    members = make_signals(n, correct=(rng.random(n) < train_acc).astype(float))
    others = make_signals(n, correct=(rng.random(n) < test_acc).astype(float))
    gap = members.correct.mean() - others.correct.mean()
    result = ThresholdAttack("gap").fit_on_membership(members, others).evaluate(members, others)
    assert result.accuracy == pytest.approx(0.5 + gap / 2, abs=1e-12)
    assert result.advantage == pytest.approx(gap, abs=1e-12)
    assert result.threshold_source == "none"


def test_shadow_threshold_transfers_to_the_target():
    rng = np.random.default_rng(1)

    def losses(n):  # members: small losses; non-members: larger
        return make_signals(n, loss=rng.exponential(0.1, n)), make_signals(n, loss=rng.exponential(1.0, n))

    shadow_members, shadow_others = losses(4000)
    target_members, target_others = losses(4000)
    attack = ThresholdAttack("loss").fit_on_membership(shadow_members, shadow_others)
    shadow_result = attack.evaluate(target_members, target_others)
    oracle = attack.evaluate_oracle(target_members, target_others)
    # known answer: the best threshold between Exp(0.1) and Exp(1) is t = ln(10) / 9 = 0.2558
    assert attack.threshold_ == pytest.approx(-np.log(10) / 9, abs=0.03)
    expected_advantage = np.exp(-np.log(10) / 9) - np.exp(-10 * np.log(10) / 9)  # TPR - FPR at t
    assert shadow_result.advantage == pytest.approx(expected_advantage, abs=0.03)
    assert shadow_result.threshold_source == "shadow" and oracle.threshold_source == "oracle"
    assert oracle.accuracy >= shadow_result.accuracy - 1e-12
    assert shadow_result.accuracy == pytest.approx(oracle.accuracy, abs=0.02)


def test_per_class_thresholds_beat_a_global_one_when_classes_differ():
    rng = np.random.default_rng(2)
    n = 3000
    labels = np.repeat([0, 1], n // 2)
    scale = np.where(labels == 0, 0.1, 10.0)  # class 1's losses are 100x larger, members and others
    member_loss = rng.exponential(1.0, n) * scale * 0.2
    other_loss = rng.exponential(1.0, n) * scale
    signals = make_signals(2 * n, loss=np.r_[member_loss, other_loss])
    all_labels, is_member = np.r_[labels, labels], np.r_[np.ones(n, bool), np.zeros(n, bool)]
    global_attack = ThresholdAttack("loss").fit(signals, all_labels, is_member)
    per_class = ThresholdAttack("loss", per_class=True).fit(signals, all_labels, is_member)
    assert set(per_class.class_thresholds_) == {0, 1}
    members, others = make_signals(n, loss=member_loss), make_signals(n, loss=other_loss)
    g = global_attack.evaluate(members, others, labels, labels)
    p = per_class.evaluate(members, others, labels, labels)
    assert p.accuracy > g.accuracy + 0.05


@pytest.mark.parametrize("attack", [a for a in THRESHOLD_ATTACKS if a != "gap"])
def test_every_signal_attack_separates_an_overfit_model(attack, overfit_signals):
    members, others = overfit_signals
    result = ThresholdAttack(attack).evaluate_oracle(members, others)
    assert result.auc > 0.6, result.summary()


@pytest.fixture(scope="module")
def overfit_signals():
    from tfmi.attacks.signals import signals_for
    from tfmi.data import load_dataset, membership_split
    from tfmi.training import TrainConfig, train_target

    data = load_dataset("digits")
    split = membership_split(data.y, 150, seed=0)
    trained = train_target(data, split, TrainConfig("mlp", epochs=60, seed=0), verbose=0)
    members = signals_for(trained.model, data.x[split.members], data.y[split.members])
    others = signals_for(trained.model, data.x[split.non_members], data.y[split.non_members])
    return members, others


def test_bad_use_is_refused():
    with pytest.raises(TfmiError, match="unknown threshold attack 'magic'"):
        ThresholdAttack("magic")
    signals = make_signals(4, loss=[0.1, 0.2, 0.3, 0.4])
    with pytest.raises(TfmiError, match="not fitted"):
        ThresholdAttack("loss").evaluate(signals, signals)
    with pytest.raises(TfmiError, match="both members and non-members"):
        ThresholdAttack("loss").fit(signals, np.zeros(4), np.ones(4, bool))
    with pytest.raises(TfmiError, match="one entry per example"):
        ThresholdAttack("loss").fit(signals, np.zeros(3), np.ones(4, bool))
    fitted = ThresholdAttack("loss", per_class=True).fit(signals, np.array([0, 0, 1, 1]),
                                                         np.array([1, 0, 1, 0], bool))
    with pytest.raises(TfmiError, match="needs the examples' labels"):
        fitted.evaluate(signals, signals)
