"""End-to-end `tfmi` commands, run in-process with click's runner and once as a real console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli.main import cli
from tests.fixtures import write_tgz
from tfmi.data import MembershipSplit, load_dataset, membership_split
from tfmi.inference import accuracy


def run(args, **kwargs):
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kwargs)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "digits"
    result = run(["train", "--dataset", "digits", "--epochs", "8", "--target-size", "300",
                  "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    return out, result.stdout


def test_train_writes_every_artifact_and_a_complete_sidecar(digits_model):
    out, output = digits_model
    assert sorted(p.name for p in out.iterdir()) == [
        ".tfmi-output", "model.keras", "saved_model", "split.npz", "tfmi.json"]
    sidecar = json.loads((out / "tfmi.json").read_text())
    assert sidecar["dataset"]["name"] == "digits" and sidecar["dataset"]["num_classes"] == 10
    assert sidecar["model"] == {"name": "cnn", "outputs": "logits"}
    assert sidecar["training"]["epochs"] == 8 and sidecar["training"]["seed"] == 3
    assert sidecar["split"]["sizes"]["members"] == 300 and sidecar["split"]["file"] == "split.npz"
    assert set(sidecar["versions"]) >= {"tensorflow", "keras", "tensorflow-privacy", "numpy", "python"}
    assert len(sidecar["history"]["val_accuracy"]) == 8
    metrics = sidecar["metrics"]
    assert metrics["train_accuracy"] > 0.8
    assert metrics["generalization_gap"] == pytest.approx(
        metrics["train_accuracy"] - metrics["test_accuracy"])
    assert f"train {metrics['train_accuracy']:.4f}" in output


def test_saved_model_reproduces_the_recorded_accuracies(digits_model):
    out, _ = digits_model
    sidecar = json.loads((out / "tfmi.json").read_text())
    data = load_dataset("digits")
    split = MembershipSplit.load(out / "split.npz")
    expected = membership_split(data.y, 300, seed=3)
    np.testing.assert_array_equal(split.members, expected.members)
    serving = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    test_acc = accuracy(serving, data.x[split.non_members], data.y[split.non_members])
    train_acc = accuracy(serving, data.x[split.members], data.y[split.members])
    assert test_acc == sidecar["metrics"]["test_accuracy"]
    assert train_acc == sidecar["metrics"]["train_accuracy"]
    keras_model = keras.models.load_model(out / "model.keras")
    assert accuracy(keras_model, data.x[split.non_members], data.y[split.non_members]) == test_acc


def test_training_is_reproducible_by_seed(tmp_path, digits_model):
    out, _ = digits_model
    again = tmp_path / "again"
    result = run(["train", "--dataset", "digits", "--epochs", "8", "--target-size", "300",
                  "--seed", "3", "--out", str(again)])
    assert result.exit_code == 0
    first = json.loads((out / "tfmi.json").read_text())["metrics"]
    second = json.loads((again / "tfmi.json").read_text())["metrics"]
    assert first == second


def test_existing_output_is_refused_then_replaced_with_force(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["train", "--dataset", "digits", "--epochs", "1", "--target-size", "100", "--out", str(out)]
    for extra in ([], ["--force"]):  # a folder tfmi did not write is never replaced
        refused = run([*args, *extra])
        assert refused.exit_code == 2 and "not written by tfmi" in refused.stderr
        assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert run(args).exit_code == 0
    refused = run(args)
    assert refused.exit_code == 2 and "already exists" in refused.stderr
    replaced = run([*args, "--force", "--seed", "2"])
    assert replaced.exit_code == 0
    assert json.loads((out / "tfmi.json").read_text())["training"]["seed"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging or retired copies left


def test_a_failure_while_saving_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    result = run(["train", "--dataset", "digits", "--epochs", "1", "--target-size", "100",
                  "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and result.stderr.count("Error:") == 1
    assert "cannot write" in result.stderr and "disk full" in result.stderr
    assert list(tmp_path.iterdir()) == []


def _corrupt_location(folder: Path) -> Path:
    path = write_tgz(folder / "dataset_location.tgz", {"bangkok": b'"1",' + b"0," * 445 + b"1\n" * 50})
    path.write_bytes(path.read_bytes()[:40])
    return folder


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "mnist"], "unknown dataset 'mnist': use one of digits, location30"),
        (["--model", "vgg"], "unknown model 'vgg': use one of mlp, mlp3, cnn, alexnet, resnet20"),
        (["--target-size", "1000"], "needs 2000 records .* use --target-size 898 or less"),
        (["--epochs", "0"], "epochs must be a positive integer"),
        (["--lr", "-1"], "learning rate must be a positive number"),
        (["--dataset", "location30", "--data-dir", "{tmp}/absent"], "does not exist"),
        (["--dataset", "location30", "--data-dir", "{tmp}"], "place dataset_location.tgz"),
        (["--dataset", "location30", "--data-dir", "{corrupt}"], "corrupt or truncated"),
        (["--dataset", "{tmp}/bad.npz"], "expected 'x' and 'y'"),
        (["--dataset", "{tmp}/labels.npz"], "must be class indices >= 0"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    _corrupt_location(corrupt)
    np.savez(tmp_path / "bad.npz", a=np.zeros((4, 2)))
    np.savez(tmp_path / "labels.npz", x=np.zeros((4, 2)), y=[0, 1, -1, 0])
    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path, corrupt=corrupt) for a in args]
    result = run(["train", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not out.exists()


def test_datasets_command_lists_availability(shared_data_dir):
    result = run(["datasets", "--data-dir", str(shared_data_dir)])
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1] for line in result.output.splitlines()
            if line and not line.startswith(" ") and len(line.split()) > 1}
    assert rows["digits"] == "yes" and rows["location30"] == "yes" and rows["cifar10"] == "yes"
    assert rows["cifar100"] == "no"


def test_console_script_exit_code_and_no_traceback(tmp_path):
    script = Path(sys.executable).with_name("tfmi")
    if not script.exists():
        pytest.skip("tfmi console script not installed next to this Python")
    env = {**os.environ, "TFMI_OFFLINE": "1"}
    ok = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "train" in ok.stdout and "datasets" in ok.stdout
    bad = subprocess.run([str(script), "train", "--dataset", "nope", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("Error: unknown dataset 'nope'")
    assert "Traceback" not in bad.stderr


def test_location30_target_overfits_like_the_paper(shared_data_dir, tmp_path):
    out = tmp_path / "loc"
    result = run(["train", "--dataset", "location30", "--data-dir", str(shared_data_dir),
                  "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "tfmi.json").read_text())["metrics"]
    assert metrics["train_accuracy"] > 0.98
    assert 0.4 < metrics["test_accuracy"] < 0.7
    assert metrics["generalization_gap"] > 0.3
