"""Every defense through the shared training entry point and through `tfmi train`."""

import json

import keras
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli.main import cli
from tfmi.data import load_dataset, membership_split
from tfmi.defenses.config import DEFENSE_NAMES, DefenseConfig
from tfmi.errors import TfmiError
from tfmi.training import TrainConfig, plan_training, train_target


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data, membership_split(data.y, 300, seed=0)


FAST = {
    "dp-sgd": {"noise_multiplier": 0.5, "l2_norm_clip": 1.0},
    "early-stopping": {"patience": 1},
}


@pytest.mark.parametrize("name", DEFENSE_NAMES)
def test_every_defense_trains_and_returns_the_plain_network(digits, name):
    data, split = digits
    config = TrainConfig("mlp", epochs=3, batch_size=50, seed=0)
    trained = train_target(data, split, config, DefenseConfig(name, **FAST.get(name, {})), verbose=0)
    assert trained.defense["name"] == name
    assert trained.train_accuracy > 0.3, trained  # well above chance (0.1) after 3 epochs
    inner = trained.model
    assert inner.name == "mlp" and inner.output_shape == (None, 10)
    assert not any(isinstance(layer, keras.Model) for layer in inner.layers)  # no wrapper inside
    assert json.dumps(trained.defense)  # the record is JSON-serializable for the sidecar


def test_regularizing_defenses_change_the_network(digits):
    data, split = digits
    config = TrainConfig("mlp", epochs=1, seed=0)
    dropout = plan_training(data, split, config, DefenseConfig("dropout", dropout=0.3)).inner
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in dropout.layers) == 4
    assert plan_training(data, split, config, DefenseConfig("l2", l2=1e-2)).inner.losses
    smoothing = plan_training(data, split, config, DefenseConfig("label-smoothing", label_smoothing=0.2))
    assert smoothing.one_hot_labels and smoothing.trainable.loss.get_config()["label_smoothing"] == 0.2


def test_early_stopping_watches_the_reference_set_not_the_non_members(digits):
    data, split = digits
    plan = plan_training(data, split, TrainConfig("mlp", epochs=1), DefenseConfig("early-stopping"))
    assert plan.validate_on_reference
    trained = train_target(data, split, TrainConfig("mlp", epochs=60, seed=0),
                           DefenseConfig("early-stopping", patience=1), verbose=0)
    assert len(trained.history["loss"]) < 60


def test_mmd_defense_records_the_resolved_weight(digits):
    data, split = digits
    trained = train_target(data, split, TrainConfig("mlp", epochs=2),
                           DefenseConfig("mmd-mixup", mmd_schedule="joint"), verbose=0)
    assert trained.defense == {"name": "mmd-mixup", "mmd_weight": 5.0, "mmd_schedule": "joint",
                               "mmd_bandwidths": [1.0], "gap_threshold": 0.03, "mixup_alpha": 1.0}
    assert "mmd_gap" in trained.history


@pytest.mark.parametrize(
    "kwargs, message",
    [({"name": "memguard"}, "unknown defense 'memguard': use one of none, mmd"),
     ({"name": "l2", "l2": 0.0}, "l2 must be a positive number"),
     ({"name": "dropout", "dropout": 1.0}, r"dropout must be in \(0, 1\)"),
     ({"name": "label-smoothing", "label_smoothing": -0.1}, "label_smoothing"),
     ({"name": "early-stopping", "patience": 0}, "patience must be a positive integer"),
     ({"name": "advreg", "adv_weight": -1.0}, "adv_weight must be a number >= 0"),
     ({"name": "relaxloss", "relax_alpha": 0.0}, "relax_alpha must be a positive number"),
     ({"name": "mmd", "mmd_schedule": "cosine"}, "unknown MMD schedule 'cosine'"),
     ({"name": "dp-sgd", "noise_multiplier": 1.0, "target_epsilon": 3.0}, "not both")],
)
def test_bad_defense_configurations(kwargs, message):
    with pytest.raises(TfmiError, match=message):
        DefenseConfig(**kwargs)


def test_defense_fails_before_training(digits, monkeypatch):
    data, split = digits
    calls = []
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: calls.append(1))
    with pytest.raises(TfmiError, match="mmd_weight must be a number >= 0"):
        train_target(data, split, TrainConfig("mlp"), DefenseConfig("mmd", mmd_weight=-2.0))
    assert calls == []


def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_cli_train_with_a_defense_records_it(tmp_path):
    out = tmp_path / "m"
    result = run(["train", "--defense", "mmd", "--mmd-weight", "3", "--mmd-bandwidth", "0.5",
                  "--mmd-bandwidth", "2", "--epochs", "2", "--target-size", "200", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    sidecar = json.loads((out / "tfmi.json").read_text())
    assert sidecar["defense"]["name"] == "mmd" and sidecar["defense"]["mmd_weight"] == 3.0
    assert sidecar["defense"]["mmd_bandwidths"] == [0.5, 2.0]
    assert "defense  name mmd, mmd_weight 3.0" in result.stdout
    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    data = load_dataset("digits")
    assert served(tf.constant(data.x[:4]))["output_0"].shape == (4, 10)


def test_cli_default_output_names_the_defense(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(["train", "--defense", "l2", "--epochs", "1", "--target-size", "100"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "saved_models" / "digits-cnn-l2-seed0" / "tfmi.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [(["--defense", "memguard"], "unknown defense 'memguard'"),
     (["--defense", "mmd", "--mmd-weight", "-1"], "mmd_weight must be a number >= 0"),
     (["--defense", "mixup", "--mixup-alpha", "0"], "mixup_alpha must be a positive number"),
     (["--defense", "dp-sgd", "--microbatches", "7"], "divisible|divide"),
     (["--defense", "dp-sgd", "--noise-multiplier", "1", "--target-epsilon", "2"], "not both"),
     (["--defense", "dropout", "--dropout", "1.5"], r"dropout must be in \(0, 1\)")],
)
def test_cli_bad_defense_options_exit_2_before_training(tmp_path, args, message):
    out = tmp_path / "out"
    result = run(["train", *args, "--epochs", "1", "--target-size", "100", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and __import__("re").search(message, lines[0]), lines
    assert not out.exists()
    assert "Epoch" not in result.stdout


@pytest.mark.parametrize("schedule", ["paper", "joint"])
def test_default_mmd_weights_do_not_collapse_training_on_digits(digits, schedule):
    data, split = digits
    trained = train_target(data, split, TrainConfig("cnn", epochs=15, seed=0),
                           DefenseConfig("mmd-mixup", mmd_schedule=schedule), verbose=0)
    assert trained.defense["mmd_weight"] == {"paper": 6.5, "joint": 5.0}[schedule]
    assert trained.train_accuracy > 0.8 and trained.test_accuracy > 0.75, trained
