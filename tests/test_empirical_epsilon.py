"""The empirical epsilon of an attack: positive where a model leaks, never above a DP-SGD proof."""

from __future__ import annotations

import numpy as np
import pytest

from tfmi.attacks.shadow import train_shadows
from tfmi.attacks.suite import run_attacks, shadow_pool
from tfmi.data import load_dataset, membership_split
from tfmi.defenses.config import DefenseConfig
from tfmi.training import TrainConfig, train_target


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_a_memorizing_model_proves_a_positive_epsilon(digits):
    """A "model" that knows its members' labels and guesses elsewhere: the gap attack proves eps > 1."""
    split = membership_split(digits.y, 300, seed=0)
    known = {row.tobytes(): label for row, label in zip(digits.x[split.members], digits.y[split.members],
                                                         strict=True)}
    rng = np.random.default_rng(0)

    def memorizer(batch):
        labels = [known.get(row.tobytes(), rng.integers(10)) for row in batch]
        return np.eye(10)[labels] * 20.0  # confident logits

    report = run_attacks(memorizer, digits, split.members, split.non_members, attacks="gap")
    gap = report.result("gap")
    assert gap.achieved_advantage == pytest.approx(report.train_accuracy - report.test_accuracy)
    assert gap.epsilon_lower_bound() > 1.5


def test_no_attack_proves_more_than_dp_sgd_guarantees(digits):
    split = membership_split(digits.y, 300, seed=1)
    config = TrainConfig("mlp", epochs=4, batch_size=32, learning_rate=1e-2, seed=1)
    target = train_target(digits, split, config, DefenseConfig("dp-sgd", noise_multiplier=0.8), verbose=0)
    accounting = target.defense["accounting"]
    epsilon, delta = accounting["epsilon"], accounting["delta"]
    shadows = train_shadows(digits, shadow_pool(split, "online"), config, num_shadows=4, seed=2)
    report = run_attacks(target.model, digits, split.members, split.non_members, shadows=shadows, seed=1)
    realistic = [r for r in report.results if r.threshold_source != "oracle"]
    assert len(realistic) >= 8
    for result in realistic:
        bound = result.epsilon_lower_bound(delta)
        assert 0 <= bound <= epsilon, (result.attack, bound, epsilon)
