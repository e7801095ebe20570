"""`--preset paper` and the optimizer recipe: SGD momentum, weight decay and learning-rate drops."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from tfmi.attacks.shadow import train_shadows
from tfmi.data import load_dataset, membership_split
from tfmi.errors import TfmiError
from tfmi.presets import PAPER_DEFAULT_MODEL, paper_preset, paper_presets
from tfmi.training import TrainConfig, make_optimizer, train_target


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_every_recipe_is_attributed_and_builds_valid_configs():
    from tfmi.defenses.config import DefenseConfig

    assert set(PAPER_DEFAULT_MODEL) == {"location30", "texas100", "purchase100", "cifar10", "cifar100"}
    for preset in paper_presets():
        assert "colaalex111/MIST" in preset.source and "exp.sh" in preset.source
        config = TrainConfig(preset.model, **preset.train)
        assert config.optimizer == "sgd" and config.momentum == 0.9 and config.weight_decay == 1e-5
        assert config.batch_size == 100
        DefenseConfig(**preset.defense)  # every field exists and is valid
    location = paper_preset("location30")
    assert (location.model, location.defense["name"], location.defense["mmd_weight"]) == ("mlp3", "mmd", 6.5)
    assert location.train["learning_rate"] == 0.1 and location.train["epochs"] == 100
    assert location.train["lr_milestones"] == ()  # --schedule 300 never triggers within 100 epochs
    cifar = paper_preset("cifar10")
    assert cifar.defense["name"] == "mmd-mixup" and cifar.defense["mmd_weight"] == 0.25
    assert cifar.train["lr_milestones"] == (100,) and cifar.train["learning_rate"] == 0.01


@pytest.mark.parametrize(("dataset", "model", "message"), [
    ("digits", None, r"no recipe for dataset 'digits'"),
    ("location30", "cnn", r"no recipe for model 'cnn' on location30: the authors used mlp3"),
])
def test_datasets_and_models_without_a_recipe_are_refused(dataset, model, message):
    with pytest.raises(TfmiError, match=message):
        paper_preset(dataset, model)
    args = ["train", "--preset", "paper", "--dataset", dataset, *(["--model", model] if model else [])]
    result = run(args)
    assert result.exit_code == 2 and result.stderr.count("Error:") == 1


def test_train_config_checks_the_recipe():
    for bad, message in [({"momentum": 1.0}, "momentum"), ({"weight_decay": -1e-5}, "weight decay"),
                         ({"lr_milestones": (5, 3)}, "increasing"), ({"lr_milestones": (0,)}, "milestone")]:
        with pytest.raises(TfmiError, match=message):
            TrainConfig("mlp", **bad)
    assert TrainConfig("mlp", lr_milestones=(3, 5)).to_dict()["lr_milestones"] == [3, 5]


def test_learning_rate_drops_tenfold_at_each_milestone_and_weight_decay_reaches_the_optimizer():
    data = load_dataset("digits")
    split = membership_split(data.y, 150, seed=0)
    config = TrainConfig("mlp", epochs=4, batch_size=50, optimizer="sgd", learning_rate=0.1, momentum=0.5,
                         weight_decay=1e-3, lr_milestones=(1, 3))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(self.model.optimizer.learning_rate.numpy()))

    train_target(data, split, config, verbose=0, callbacks=[Record()])
    assert seen == pytest.approx([0.1, 0.01, 0.01, 0.001])
    optimizer = make_optimizer(config)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.momentum == 0.5 and optimizer.weight_decay == pytest.approx(1e-3)


def test_shadows_with_weight_decay_train_one_by_one():
    data = load_dataset("digits")
    config = TrainConfig("mlp", epochs=1, optimizer="sgd", learning_rate=0.05, weight_decay=1e-5)
    shadows = train_shadows(data, np.arange(200), config, num_shadows=2)
    assert not shadows.batched
    with pytest.raises(TfmiError, match="weight decay|batched"):
        train_shadows(data, np.arange(200), config, num_shadows=2, batched=True)


def test_train_with_the_paper_preset_on_location30(shared_data_dir, tmp_path):
    """The recipe reaches the sidecar; options given explicitly (here --epochs) win over the preset."""
    out = tmp_path / "paper"
    result = run(["train", "--preset", "paper", "--dataset", "location30", "--data-dir", shared_data_dir,
                  "--epochs", "2", "--out", out])
    assert result.exit_code == 0, result.output + result.stderr
    sidecar = json.loads((out / "tfmi.json").read_text())
    training = sidecar["training"]
    assert (training["model"], training["optimizer"], training["learning_rate"], training["momentum"],
            training["weight_decay"], training["batch_size"], training["epochs"]) == (
        "mlp3", "sgd", 0.1, 0.9, 1e-5, 100, 2)
    assert sidecar["defense"]["name"] == "mmd" and sidecar["defense"]["mmd_weight"] == 6.5
    assert sidecar["options"]["preset"] == "paper" and sidecar["split"]["sizes"]["members"] == 1500
    assert "sgd lr 0.1 momentum 0.9, weight decay 1e-05" in result.output


def test_recipe_options_from_the_cli_reach_the_sidecar(tmp_path):
    out = tmp_path / "m"
    result = run(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--target-size", "200",
                  "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.5", "--weight-decay", "1e-4",
                  "--lr-drop-at", "1", "--defense", "mmd", "--mmd-optimizer", "sgd",
                  "--mmd-learning-rate", "0.02", "--mmd-batches", "shuffled", "--out", out])
    assert result.exit_code == 0, result.output + result.stderr
    sidecar = json.loads((out / "tfmi.json").read_text())
    assert sidecar["defense"]["mmd_batches"] == "shuffled"
    training = sidecar["training"]
    assert (training["optimizer"], training["learning_rate"], training["momentum"], training["weight_decay"],
            training["lr_milestones"]) == ("sgd", 0.05, 0.5, 1e-4, [1])
    assert sidecar["defense"]["mmd_optimizer"] == "sgd" and sidecar["defense"]["mmd_learning_rate"] == 0.02
    assert "lr / 10 at epochs 1" in result.output


def test_benchmark_with_the_paper_preset_trains_every_row_with_the_recipe(shared_data_dir, tmp_path):
    out = tmp_path / "b"
    result = run(["benchmark", "--preset", "paper", "--dataset", "location30", "--data-dir", shared_data_dir,
                  "--epochs", "1", "--shadows", "0", "--attacks", "gap", "--defenses", "none,mmd",
                  "--out", out])
    assert result.exit_code == 0, result.output + result.stderr
    spec = json.loads((out / "results.json").read_text())["meta"]["spec"]
    train = spec["train"]
    recipe = tuple(train[k] for k in ("model", "optimizer", "learning_rate", "batch_size", "epochs"))
    assert recipe == ("mlp3", "sgd", 0.1, 100, 1)
    mmd = next(d for d in spec["defenses"] if d["name"] == "mmd")
    assert mmd["mmd_weight"] == 6.5 and mmd["mmd_optimizer"] == "sgd"
    assert mmd["reference_refresh"] == "per_batch" and mmd["mmd_batches"] == "shuffled"
    assert spec["target_size"] == 1500
