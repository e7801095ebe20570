"""MMD strength by target: lambda adapted after every epoch so the train/reference gap settles at a target."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from tfmi.data import load_dataset, make_dataset, membership_split
from tfmi.defenses.config import DefenseConfig
from tfmi.defenses.mmd_mixup import MMD_WEIGHT_BOUNDS, TARGET_GAP_GAINS, MMDMixupModel, MMDSchedule
from tfmi.errors import TfmiError
from tfmi.inference import accuracy
from tfmi.training import TrainConfig, plan_training, train_target


def pi_trajectory(gaps, target, start):
    """The documented controller, written out: log lambda = log start + k_p e_t + k_i sum(e), the sum
    from the first gap at or above the target on, clipped, the sum frozen while it pushes past a bound."""
    k_p, k_i = TARGET_GAP_GAINS
    low, high = np.log(MMD_WEIGHT_BOUNDS)
    total, weights, reached = 0.0, [], False
    for gap in gaps:
        error = gap - target
        reached = reached or gap >= target
        summed = error if reached else 0.0
        log_weight = np.log(start) + k_p * error + k_i * (total + summed)
        if not ((log_weight > high and error > 0) or (log_weight < low and error < 0)):
            total += summed
        weights.append(float(np.exp(np.clip(log_weight, low, high))))
    return weights


def _schedule(target_gap=0.2, mmd_weight=6.5):
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 4), np.float32), np.arange(32) % 2
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model = MMDMixupModel(inner, (x[:8], y[:8]), mmd_weight=mmd_weight, target_gap=target_gap)
    schedule = MMDSchedule(model, x, y, batch_size=16, epochs=40)
    schedule.on_train_begin()
    return model, schedule


def _lambdas_after(gaps: list[float]) -> list[float]:
    """Lambda after each of the controller's steps on ``gaps``, from a fresh schedule."""
    model, schedule = _schedule()
    got = []
    for gap in gaps:
        schedule._control(gap)
        got.append(model.current_mmd_weight)
    return got


def test_controller_follows_the_documented_law_with_clipping_and_anti_windup():
    gaps = [0.5, 0.45, 0.3, 0.2, 0.1, 0.15] + [0.99] * 40 + [0.15] + [0.0] * 200 + [0.3]
    got = _lambdas_after(gaps)
    np.testing.assert_allclose(got, pi_trajectory(gaps, 0.2, 6.5), rtol=1e-5)
    assert got[45] == pytest.approx(1e4) and got[-2] == pytest.approx(1e-3)  # both bounds reached
    # one epoch on the other side of the target leaves a bound at once: no wound-up sum holds it there
    assert got[46] < 1e4 and got[-1] > 1e-3


def test_errors_are_summed_only_once_the_gap_has_reached_the_target():
    gaps = [0.02, 0.05, 0.1, 0.15, 0.25, 0.1, 0.1]
    got = _lambdas_after(gaps)
    np.testing.assert_allclose(got, pi_trajectory(gaps, 0.2, 6.5), rtol=1e-5)
    k_p, k_i = TARGET_GAP_GAINS
    np.testing.assert_allclose(got[:4], 6.5 * np.exp(k_p * (np.array(gaps[:4]) - 0.2)), rtol=1e-5)
    assert got[5] == pytest.approx(6.5 * np.exp(k_p * -0.1 + k_i * (0.05 - 0.1)), rel=1e-5)


def test_gap_above_the_target_raises_lambda_and_below_lowers_it():
    for gap, direction in ((0.4, 1), (0.05, -1)):
        model, schedule = _schedule()
        schedule._control(gap)
        assert np.sign(model.current_mmd_weight - 6.5) == direction


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data, membership_split(data.y, 300, seed=0)


def test_lambda_trajectory_follows_the_measured_gaps_and_reaches_the_record(digits):
    data, split = digits
    trained = train_target(data, split, TrainConfig("mlp", epochs=6, seed=0),
                           DefenseConfig("mmd", target_gap=0.0), verbose=0)
    history = trained.history
    assert len(history["mmd_weight"]) == 6
    np.testing.assert_allclose(history["mmd_weight"], pi_trajectory(history["mmd_gap"], 0.0, 6.5), rtol=1e-5)
    assert history["mmd_weight"][-1] > 6.5  # a positive gap, above the target 0: lambda grew
    assert trained.defense["target_gap"] == 0.0
    assert trained.defense["mmd_weight_trajectory"] == history["mmd_weight"]
    assert json.loads(json.dumps(trained.defense)) == trained.defense  # fit for the sidecar
    # the gap is the final model's, measured cleanly on members and the reference set
    reference_accuracy = accuracy(trained.model, data.x[split.reference], data.y[split.reference])
    assert history["mmd_gap"][-1] == pytest.approx(trained.train_accuracy - reference_accuracy, abs=1e-6)


def test_the_controller_never_sees_the_non_members(digits):
    data, split = digits
    mislabelled = data.y.copy()
    mislabelled[split.non_members] = (mislabelled[split.non_members] + 1) % 10
    runs = [train_target(dataset, split, TrainConfig("mlp", epochs=4, seed=0),
                         DefenseConfig("mmd", target_gap=0.05), verbose=0)
            for dataset in (data, dataclasses.replace(data, y=mislabelled))]
    assert runs[1].test_accuracy < 0.2 < runs[0].test_accuracy  # the non-members did change
    assert runs[0].history["mmd_weight"] == runs[1].history["mmd_weight"]
    assert runs[0].history["mmd_gap"] == runs[1].history["mmd_gap"]


def noisy_clusters():
    """10 Gaussian clusters in 20 dimensions, 30 % of labels redrawn at random: an MLP memorizes its
    members and the gap opens wide (~0.27 at the default lambda), in seconds."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.0, (10, 20))
    y = rng.integers(0, 10, 2400)
    x = (centers[y] + rng.normal(0, 1.0, (2400, 20))).astype(np.float32)
    y = np.where(rng.random(2400) < 0.3, rng.integers(0, 10, 2400), y)
    return make_dataset(x, y, 10)


def test_gap_lands_near_the_target_where_a_fixed_lambda_misses_it():
    data = noisy_clusters()
    split = membership_split(data.y, 600, seed=0)
    config = TrainConfig("mlp", epochs=20, seed=0)
    fixed = train_target(data, split, config, DefenseConfig("mmd"), verbose=0)
    adaptive = train_target(data, split, config, DefenseConfig("mmd", target_gap=0.1), verbose=0)
    assert fixed.generalization_gap > 0.2, fixed
    assert abs(adaptive.generalization_gap - 0.1) < 0.05, adaptive
    assert adaptive.history["mmd_weight"][-1] > 3 * 6.5


def test_location30_final_gap_lands_near_the_target(shared_data_dir):
    data = load_dataset("location30", str(shared_data_dir))
    split = membership_split(data.y, 1500, seed=0)
    trained = train_target(data, split, TrainConfig("mlp"), DefenseConfig("mmd", target_gap=0.2), verbose=0)
    assert abs(trained.generalization_gap - 0.2) <= 0.05, trained  # undefended: ~0.45
    trajectory = trained.defense["mmd_weight_trajectory"]
    assert len(trajectory) == 30 and trajectory[-1] > 2 * 6.5  # the controller raised lambda to get there


def test_target_gap_options_in_the_defense_config(digits):
    data, split = digits
    config = TrainConfig("mlp", epochs=1, learning_rate=0.01)
    defense = DefenseConfig("mmd-mixup", target_gap=0.1, mmd_optimizer="sgd", reference_refresh="per_batch")
    plan = plan_training(data, split, config, defense)
    model = plan.trainable
    assert model.target_gap == 0.1 and model.reference_refresh == "per_batch"
    assert isinstance(model.mmd_optimizer, keras.optimizers.SGD)
    assert model.mmd_optimizer is not model.optimizer
    assert float(model.mmd_optimizer.learning_rate.numpy()) == pytest.approx(0.01)  # the training rate
    assert model.mmd_optimizer.momentum == 0.9
    own_rate = DefenseConfig("mmd", mmd_optimizer="sgd", mmd_learning_rate=0.1)
    assert float(plan_training(data, split, config, own_rate).trainable.mmd_optimizer.learning_rate.numpy()) \
        == pytest.approx(0.1)
    shared = plan_training(data, split, config, DefenseConfig("mmd")).trainable
    assert shared.mmd_optimizer is None and shared.target_gap is None
    assert shared.reference_refresh == "per_pass"
    assert DefenseConfig("mmd").to_dict() == {"name": "mmd", "mmd_weight": 6.5, "mmd_schedule": "paper",
                                              "mmd_bandwidths": [1.0], "gap_threshold": 0.03}
    assert DefenseConfig("mmd", target_gap=0.1, mmd_optimizer="sgd", mmd_learning_rate=0.1).to_dict() \
        == {"name": "mmd", "mmd_weight": 6.5, "mmd_schedule": "paper", "mmd_bandwidths": [1.0],
            "gap_threshold": 0.03, "mmd_optimizer": "sgd", "mmd_learning_rate": 0.1, "target_gap": 0.1}


@pytest.mark.parametrize(
    "kwargs, message",
    [({"target_gap": 1.2}, r"mmd: target_gap must be in \[0, 1\)"),
     ({"target_gap": "0.2"}, "target_gap must be"),
     ({"target_gap": 0.2, "mmd_weight": 0.0}, "target_gap adapts lambda starting from mmd_weight"),
     ({"mmd_optimizer": "adam"}, "mmd_optimizer must be one of shared, sgd, got 'adam'"),
     ({"reference_refresh": "sometimes"}, "reference_refresh must be one of per_pass, per_batch"),
     ({"mmd_learning_rate": 0.1}, "mmd_learning_rate is the learning rate of mmd_optimizer sgd"),
     ({"mmd_optimizer": "sgd", "mmd_learning_rate": 0.0}, "mmd_learning_rate must be a positive number"),
     ({"mmd_schedule": "joint", "mmd_optimizer": "sgd"}, "the joint schedule has none")],
)
def test_bad_mmd_options_in_the_defense_config(kwargs, message):
    with pytest.raises(TfmiError, match=message):
        DefenseConfig("mmd", **kwargs)


def test_target_gap_from_the_cli_reaches_the_sidecar(tmp_path):
    import json

    from click.testing import CliRunner

    from cli.main import cli

    out = tmp_path / "m"
    result = CliRunner().invoke(cli, ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "3",
                                      "--target-size", "200", "--defense", "mmd", "--target-gap", "0.05",
                                      "--mmd-optimizer", "sgd", "--reference-refresh", "per_batch",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    defense = json.loads((out / "tfmi.json").read_text())["defense"]
    assert defense["target_gap"] == 0.05 and defense["mmd_optimizer"] == "sgd"
    assert defense["reference_refresh"] == "per_batch" and len(defense["mmd_weight_trajectory"]) == 3
