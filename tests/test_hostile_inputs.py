"""Hostile and mistaken input to the `tfmi` commands and the model loader, case by case.

Every refused case asserts the whole contract: exit code 2, exactly one ``Error:`` line, no
traceback, and the state of the disk afterwards (nothing new written, a user's files kept, code in
a model file never run). The Python API's half of these cases is in ``test_hostile_api.py``.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli.main import cli
from tfmi.errors import TfmiError
from tfmi.model_loading import load_model
from tfmi.safe_write import MARKER_FILE, output_lock

REPO = Path(__file__).resolve().parents[1]
TFMI = [sys.executable, "-c", "from cli.main import main; main()"]
QUICK_TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--target-size", "200"]


def invoke(args, cwd: Path | None = None):
    """Run the CLI in-process; returns click's Result (exceptions are caught as a real run would)."""
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args])
    finally:
        os.chdir(old)


def assert_refused(result, pattern: str) -> None:
    """Exit 2, one ``Error:`` line matching ``pattern``, and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    import re

    assert re.search(pattern, errors[0]), errors[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its content (None for folders)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


# ----------------------------------------------------------------------------- hostile model files


def _marker_lambda(marker: Path) -> Callable:
    """A lambda whose code writes ``marker``: marshalled into the file, run by an unsafe load."""
    return eval(f"lambda t: (open({str(marker)!r}, 'w').write('pwned'), t)[1]")  # noqa: S307


def _lambda_model(marker: Path) -> keras.Model:
    return keras.Sequential([keras.Input((64,)), keras.layers.Lambda(_marker_lambda(marker)),
                                keras.layers.Dense(10)])


class _ServesWithSideEffect(tf.Module):
    """A SavedModel-able classifier whose serving signature also runs ``side_effect``'s ops."""

    def __init__(self, side_effect: Callable[[], object]):
        super().__init__()
        self.side_effect = side_effect

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32)])
    def serve(self, x):
        self.side_effect()
        return {"logits": tf.concat([x[:, :5], -x[:, :5]], axis=1)}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Hostile model files, each of which writes ``marker`` if its code or ops ever run."""
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "MARKER"
    model = _lambda_model(marker)  # building the model runs the lambda once, here, in the test
    files = {"h5": folder / "lambda.h5", "keras": folder / "lambda.keras"}
    model.save(files["h5"])
    model.save(files["keras"])
    files["h5_renamed_keras"] = folder / "really_h5.keras"
    files["h5_renamed_keras"].write_bytes(files["h5"].read_bytes())
    files["keras_renamed_h5"] = folder / "really_zip.h5"
    files["keras_renamed_h5"].write_bytes(files["keras"].read_bytes())
    # a .keras whose config imports a function from another module (Keras would import it)
    benign = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    benign.save(folder / "benign.keras")
    files["foreign_module"] = folder / "foreign_module.keras"
    with zipfile.ZipFile(folder / "benign.keras") as source, \
            zipfile.ZipFile(files["foreign_module"], "w") as target:
        for item in source.infolist():
            payload = source.read(item)
            if item.filename == "config.json":
                config = json.loads(payload)
                config["config"]["layers"][-1]["config"]["activation"] = {
                    "module": "os", "class_name": "function", "config": "system", "registered_name": None}
                payload = json.dumps(config).encode()
            target.writestr(item, payload)
    for name, side_effect in (
        ("saved_model_write_file", lambda: tf.io.write_file(str(marker), "pwned")),
        ("saved_model_print_to_file", lambda: tf.print("pwned", output_stream=f"file://{marker}")),
    ):
        module = _ServesWithSideEffect(side_effect)
        tf.saved_model.save(module, str(folder / name), signatures={"serving_default": module.serve})
        files[name] = folder / name
    marker.unlink()
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 64)).astype("float32"), np.arange(40) % 10
    np.savez(folder / "members.npz", x=x[:20], y=y[:20])
    np.savez(folder / "non_members.npz", x=x[20:], y=y[20:])
    return folder, marker, files


HOSTILE_MODELS = [
    ("h5", r"refusing to load .*lambda\.h5: layer 'lambda' \(Lambda\) stores Python code"),
    ("keras", r"refusing to load .*lambda\.keras: layer 'lambda' \(Lambda\) stores Python code"),
    ("h5_renamed_keras", r"refusing to load .*really_h5\.keras: layer 'lambda' \(Lambda\)"),
    ("keras_renamed_h5", r"refusing to load .*really_zip\.h5: layer 'lambda' \(Lambda\)"),
    ("foreign_module", r"a function 'system' imported from module 'os'"),
    ("saved_model_write_file", r"op WriteFile \(reads or writes files\)"),
    ("saved_model_print_to_file", r"op PrintV2 \(writes to file://"),
]


@pytest.mark.parametrize(("name", "pattern"), HOSTILE_MODELS, ids=[c[0] for c in HOSTILE_MODELS])
def test_audit_refuses_model_files_that_would_run_code(hostile, tmp_path, name, pattern):
    folder, marker, files = hostile
    out = tmp_path / "audit"
    result = invoke(["audit", files[name], "--members", folder / "members.npz",
                     "--non-members", folder / "non_members.npz", "--out", out])
    assert_refused(result, pattern + r".*(--unsafe-load)")
    assert not marker.exists(), "the file's code ran"
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "pattern"), HOSTILE_MODELS, ids=[c[0] for c in HOSTILE_MODELS])
def test_load_model_refuses_the_same_files(hostile, name, pattern):
    _, marker, files = hostile
    with pytest.raises(TfmiError, match=pattern) as info:
        load_model(files[name])
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["h5", "h5_renamed_keras", "saved_model_write_file"])
def test_the_hostile_files_really_run_code_when_trusted(hostile, name):
    """The refusals above guard something real: trusted, these files write the marker."""
    folder, marker, files = hostile
    try:
        loaded = load_model(files[name], unsafe_load=True)
        loaded.predict(np.load(folder / "members.npz")["x"])
        assert marker.exists()
    finally:
        marker.unlink(missing_ok=True)


def test_format_is_read_from_content_not_name(hostile, tmp_path):
    folder, _, _ = hostile
    disguised = tmp_path / "model.h5"  # a zip (.keras) under an HDF5 name loads as what it is
    disguised.write_bytes((folder / "benign.keras").read_bytes())
    assert load_model(disguised).format == "keras"
    garbage = tmp_path / "model.keras"
    garbage.write_text("not a model\n")
    with pytest.raises(TfmiError, match="neither a Keras zip"):
        load_model(garbage)


def test_unsafe_load_is_explicit_and_recorded(tmp_path):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Lambda(lambda t: 2 * t),
                                 keras.layers.Dense(10)])
    path = tmp_path / "trusted_lambda.h5"
    model.save(path)
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 64)).astype("float32"), np.arange(40) % 10
    np.savez(tmp_path / "m.npz", x=x[:20], y=y[:20])
    np.savez(tmp_path / "n.npz", x=x[20:], y=y[20:])
    out = tmp_path / "audit"
    args = ["audit", path, "--members", tmp_path / "m.npz", "--non-members", tmp_path / "n.npz",
            "--attacks", "gap,loss", "--out", out]
    assert_refused(invoke(args), r"Lambda.*--unsafe-load")
    result = invoke([*args, "--unsafe-load"])
    assert result.exit_code == 0, result.output
    assert "--unsafe-load" in result.stderr
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert meta["unsafe_load"] is True
    assert "--unsafe-load" in (out / "report.md").read_text()


def test_ordinary_saved_models_pass_the_op_check(tmp_path):
    """Keras export, tf.saved_model.save of a Keras model, and a lookup table (its init op) all load."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.export(str(tmp_path / "export"))
    tf.saved_model.save(model, str(tmp_path / "tfsave"))

    class WithTable(tf.Module):
        def __init__(self):
            super().__init__()
            init = tf.lookup.KeyValueTensorInitializer([0, 1], [2.0, 3.0])
            self.table = tf.lookup.StaticHashTable(init, 0.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            return {"y": x[:, :3] * self.table.lookup(tf.constant(1))}

    module = WithTable()
    tf.saved_model.save(module, str(tmp_path / "table"), signatures={"serving_default": module.serve})
    for name in ("export", "tfsave", "table"):
        assert load_model(tmp_path / name).predict(np.ones((2, 4), np.float32)).shape == (2, 3)


# ------------------------------------------------------------------------- options and output paths


@dataclass
class Case:
    """One refused command: its arguments (``{tmp}`` is the test's folder), the error, the disk after."""

    id: str
    args: list[str]
    pattern: str
    setup: Callable[[Path], None] | None = None
    kept: dict[str, str] = field(default_factory=dict)  # files that must survive, with their content
    cwd: str | None = None


def _user_file(name: str, text: str = "my thesis\n") -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    return setup


def _csv_with_target_column(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["a,b,target"] + [f"{rng.random():.3f},{rng.random():.3f},{i % 2}" for i in range(40)]
    (tmp / "data.csv").write_text("\n".join(rows) + "\n")


CASES = [
    Case("train-negative-seed", [*QUICK_TRAIN, "--seed", "-1", "--out", "{tmp}/o"], r"seed must be"),
    Case("train-huge-seed", [*QUICK_TRAIN, "--seed", str(2**32), "--out", "{tmp}/o"], r"seed must be"),
    Case("train-batch-larger-than-data", [*QUICK_TRAIN, "--batch-size", "100000", "--out", "{tmp}/o"],
         r"--batch-size 100000 is larger than the 200 training records"),
    Case("train-target-size-0", [*QUICK_TRAIN[:-2], "--target-size", "0", "--out", "{tmp}/o"],
         r"target size must be a positive integer"),
    Case("train-epochs-0", [*QUICK_TRAIN, "--epochs", "0", "--out", "{tmp}/o"], r"epochs must be"),
    Case("train-negative-mmd-weight", [*QUICK_TRAIN, "--defense", "mmd-mixup", "--mmd-weight", "-1",
                                       "--out", "{tmp}/o"], r"mmd_weight must be"),
    Case("train-out-under-a-file", [*QUICK_TRAIN, "--out", "{tmp}/file.txt/o"], r"which is a file",
         setup=_user_file("file.txt"), kept={"file.txt": "my thesis\n"}),
    Case("train-out-unwritable", [*QUICK_TRAIN, "--out", "/proc/tfmi-test-out"], r"not writable"),
    Case("train-out-is-cwd", [*QUICK_TRAIN, "--out", "."], r"current directory",
         setup=_user_file("notes.txt"), kept={"notes.txt": "my thesis\n"}, cwd="."),
    Case("train-force-on-user-folder", [*QUICK_TRAIN, "--force", "--out", "{tmp}/mine"],
         r"not written by tfmi", setup=_user_file("mine/thesis.tex"),
         kept={"mine/thesis.tex": "my thesis\n"}),
    Case("train-out-is-user-folder", [*QUICK_TRAIN, "--out", "{tmp}/mine"], r"not written by tfmi",
         setup=_user_file("mine/thesis.tex"), kept={"mine/thesis.tex": "my thesis\n"}),
    Case("benchmark-negative-mmd-weight", ["benchmark", "--mmd-weight", "-1", "--out", "{tmp}/b"],
         r"mmd_weight must be"),
    Case("benchmark-negative-noise", ["benchmark", "--noise-multiplier", "-1", "--out", "{tmp}/b"],
         r"noise_multiplier must be"),
    Case("benchmark-seeds-0", ["benchmark", "--seeds", "0", "--out", "{tmp}/b"], r"--seeds must be"),
    Case("benchmark-force-on-user-folder", ["benchmark", "--force", "--out", "{tmp}"], r"not written by tfmi",
         setup=_user_file("results.md", "mine\n"), kept={"results.md": "mine\n"}),
    Case("benchmark-out-is-cwd", ["benchmark", "--force", "--out", "."], r"current directory",
         setup=_user_file("notes.txt"), kept={"notes.txt": "my thesis\n"}, cwd="."),
    Case("benchmark-batch-larger-than-data", ["benchmark", "--batch-size", "5000", "--out", "{tmp}/b"],
         r"--batch-size 5000 is larger than the 450 training records"),
    Case("benchmark-target-size-0", ["benchmark", "--target-size", "0", "--out", "{tmp}/b"],
         r"target size must be a positive integer"),
    Case("benchmark-csv-without-label-column",
         ["benchmark", "--dataset", "{tmp}/data.csv", "--out", "{tmp}/b"],
         r"no column 'label'.*--label-column", setup=_csv_with_target_column),
    Case("audit-shadow-epochs-0", ["audit", "{tmp}/none", "--shadows", "2", "--shadow-epochs", "0",
                                   "--out", "{tmp}/a"], r"epochs must be"),
    Case("audit-shadow-batch-0", ["audit", "{tmp}/none", "--shadows", "2", "--shadow-batch-size", "0",
                                  "--out", "{tmp}/a"], r"batch size must be"),
    Case("audit-negative-seed", ["audit", "{tmp}/none", "--seed", "-5", "--out", "{tmp}/a"], r"seed must be"),
    Case("audit-force-on-user-folder", ["audit", "{tmp}/none", "--force", "--out", "{tmp}/mine"],
         r"not written by tfmi", setup=_user_file("mine/data.csv"), kept={"mine/data.csv": "my thesis\n"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_before_any_work_and_nothing_written(tmp_path, case):
    if case.setup:
        case.setup(tmp_path)
    before = snapshot(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]
    result = invoke(args, cwd=tmp_path if case.cwd else None)
    assert_refused(result, case.pattern)
    assert snapshot(tmp_path) == before  # nothing created, nothing removed, nothing changed
    for name, text in case.kept.items():
        assert (tmp_path / name).read_text() == text


def test_benchmark_with_label_column_runs_on_a_csv(tmp_path):
    _csv_with_target_column(tmp_path)
    result = invoke(["benchmark", "--dataset", tmp_path / "data.csv", "--label-column", "target",
                     "--model", "mlp", "--epochs", "1", "--defenses", "none", "--shadows", "0",
                     "--attacks", "gap,loss", "--target-size", "10", "--batch-size", "8",
                     "--out", tmp_path / "b"])
    assert result.exit_code == 0, result.output + result.stderr
    assert (tmp_path / "b" / "results.json").is_file()


# ------------------------------------------------------------------- --force replaces only tfmi's work


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A quick `tfmi train` output, written under umask 022."""
    out = tmp_path_factory.mktemp("trained") / "model"
    previous = os.umask(0o022)
    try:
        result = invoke([*QUICK_TRAIN, "--out", out])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output + result.stderr
    return out


def test_outputs_respect_the_umask(trained_dir):
    assert stat.S_IMODE(trained_dir.stat().st_mode) == 0o755
    for name in ("tfmi.json", "split.npz", "model.keras", MARKER_FILE):
        assert stat.S_IMODE((trained_dir / name).stat().st_mode) == 0o644, name
    marker = json.loads((trained_dir / MARKER_FILE).read_text())
    assert marker["kind"] == "train"
    assert marker["written"] == ["model.keras", "saved_model", "split.npz", "tfmi.json"]


def test_force_replaces_a_tfmi_output_but_not_one_holding_a_users_file(trained_dir, tmp_path):
    copy = tmp_path / "model"
    subprocess.run(["cp", "-a", str(trained_dir), str(copy)], check=True)
    assert_refused(invoke([*QUICK_TRAIN, "--out", copy]), r"already exists.*--force")
    (copy / "my_notes.txt").write_text("keep me\n")
    assert_refused(invoke([*QUICK_TRAIN, "--force", "--out", copy]), r"entries tfmi did not write \(my_notes")
    assert (copy / "my_notes.txt").read_text() == "keep me\n"
    (copy / "my_notes.txt").unlink()
    result = invoke([*QUICK_TRAIN, "--force", "--seed", "1", "--out", copy])
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads((copy / "tfmi.json").read_text())["training"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or .old left


def test_outputs_of_earlier_tfmi_versions_are_recognised_without_a_marker(trained_dir, tmp_path):
    copy = tmp_path / "model"
    subprocess.run(["cp", "-a", str(trained_dir), str(copy)], check=True)
    (copy / MARKER_FILE).unlink()  # as `tfmi train` wrote it before markers existed
    (copy / "extra.txt").write_text("mine\n")
    assert_refused(invoke([*QUICK_TRAIN, "--force", "--out", copy]), r"not written by tfmi")
    (copy / "extra.txt").unlink()
    result = invoke([*QUICK_TRAIN, "--force", "--out", copy])
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads((copy / MARKER_FILE).read_text())["kind"] == "train"


def test_another_kind_of_tfmi_output_is_not_replaced(trained_dir, tmp_path):
    copy = tmp_path / "model"
    subprocess.run(["cp", "-a", str(trained_dir), str(copy)], check=True)
    result = invoke(["benchmark", "--force", "--out", copy])
    assert_refused(result, r"holds a tfmi train output, not a benchmark output")
    assert (copy / "tfmi.json").is_file()


def test_benchmark_force_removes_only_what_it_wrote(tmp_path):
    out = tmp_path / "b"
    tiny = ["benchmark", "--model", "mlp", "--epochs", "1", "--target-size", "100", "--shadows", "0",
            "--attacks", "gap,loss", "--out", out]
    assert invoke([*tiny, "--defenses", "none"]).exit_code == 0
    (out / "analysis.ipynb").write_text("mine\n")
    (out / "cells" / "mine.txt").write_text("mine too\n")
    assert_refused(invoke([*tiny, "--defenses", "l2", "--epochs", "2"]), r"different benchmark.*--force")
    result = invoke([*tiny, "--defenses", "l2", "--epochs", "2", "--force"])
    assert result.exit_code == 0, result.output + result.stderr
    assert (out / "analysis.ipynb").read_text() == "mine\n"
    assert (out / "cells" / "mine.txt").read_text() == "mine too\n"
    cells = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert [c["defense"] for c in cells] == ["l2"]


def test_audit_of_a_tfmi_directory_with_a_damaged_split(trained_dir, tmp_path):
    copy = tmp_path / "model"
    subprocess.run(["cp", "-a", str(trained_dir), str(copy)], check=True)
    with np.load(copy / "split.npz") as stored:
        parts = dict(stored)
    parts["members"] = parts["members"] + 10_000  # indices beyond the 1,797 digits
    np.savez(copy / "split.npz", **parts)
    result = invoke(["audit", copy, "--out", tmp_path / "a"])
    assert_refused(result, r"split\.npz")
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------ valid files an audit must accept


@pytest.fixture(scope="module")
def logits_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logits")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    model.save(folder / "m.keras")
    for activation in ("sigmoid",):
        twin = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation=activation)])
        twin.set_weights(model.get_weights())
        twin.export(str(folder / activation))
    return folder


@pytest.mark.parametrize(("members_labels", "what"), [
    ([2, 2, 2, 2], "one class, no class 0"),
    ([1], "one record"),
])
def test_audit_checks_labels_against_the_model_not_file_by_file(logits_model, tmp_path, members_labels, what):
    rng = np.random.default_rng(1)
    members_labels = np.array(members_labels)
    np.savez(tmp_path / "m.npz", x=rng.random((len(members_labels), 8), dtype=np.float32), y=members_labels)
    np.savez(tmp_path / "n.npz", x=rng.random((6, 8), dtype=np.float32), y=np.array([0, 1, 2, 0, 1, 2]))
    base = ["audit", logits_model / "m.keras", "--members", tmp_path / "m.npz", "--non-members",
            tmp_path / "n.npz", "--attacks", "gap,loss"]
    result = invoke([*base, "--out", tmp_path / "a"])
    assert result.exit_code == 0, (what, result.output, result.stderr)
    np.savez(tmp_path / "m.npz", x=rng.random((1, 8), dtype=np.float32), y=np.array([3]))
    assert_refused(invoke([*base, "--out", tmp_path / "b"]), r"labels go up to 3 but the model outputs 3")


def test_outputs_that_are_neither_logits_nor_probabilities_are_refused(logits_model, tmp_path):
    rng = np.random.default_rng(2)
    for name in ("m", "n"):
        np.savez(tmp_path / f"{name}.npz", x=rng.random((9, 8), dtype=np.float32), y=np.arange(9) % 3)
    base = ["audit", logits_model / "sigmoid", "--members", tmp_path / "m.npz",
            "--non-members", tmp_path / "n.npz", "--attacks", "gap,loss"]
    assert_refused(invoke([*base, "--out", tmp_path / "a"]), r"lie in \[0, 1\].*--outputs logits")
    assert invoke([*base, "--outputs", "logits", "--out", tmp_path / "b"]).exit_code == 0


def test_members_identical_to_non_members_are_warned_about(logits_model, tmp_path):
    rng = np.random.default_rng(3)
    x, y = rng.random((12, 8), dtype=np.float32), np.arange(12) % 3
    np.savez(tmp_path / "m.npz", x=x, y=y)
    np.savez(tmp_path / "n.npz", x=x, y=y)
    result = invoke(["audit", logits_model / "m.keras", "--members", tmp_path / "m.npz", "--non-members",
                     tmp_path / "n.npz", "--attacks", "gap,loss", "--out", tmp_path / "a"])
    assert result.exit_code == 0, result.output
    assert "12 distinct records (100% of the smaller set) are both members and non-members" in result.stderr
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["meta"]["warnings"]
    assert "both members and non-members" in (tmp_path / "a" / "report.md").read_text()


# -------------------------------------------------------------- concurrency and failed final writes


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return env | {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.mark.parametrize("command", ["train", "benchmark", "audit"])
def test_a_second_process_on_a_locked_out_fails_at_once(hostile, tmp_path, command):
    folder, _, _ = hostile
    out = tmp_path / "model"
    args = {
        "train": QUICK_TRAIN,
        "benchmark": ["benchmark", "--epochs", "1", "--shadows", "0", "--attacks", "gap"],
        "audit": ["audit", folder / "benign.keras", "--members", folder / "members.npz",
                  "--non-members", folder / "non_members.npz"],
    }[command]
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from tfmi.safe_write import output_lock
            with output_lock({str(out)!r}):
                print("locked", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = invoke([*args, "--out", out])
        assert_refused(result, rf"{out} is being written by another tfmi process \(pid {holder.pid}\)")
        assert time.monotonic() - started < 30  # refused, not trained and then refused
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out):  # the lock dies with its holder
        pass
    assert not out.exists()


def test_two_real_trains_on_one_out_never_overwrite_each_other(tmp_path):
    out = tmp_path / "model"
    runs = [subprocess.Popen([*TFMI, *QUICK_TRAIN, "--seed", str(seed), "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                             cwd=tmp_path)
            for seed in (0, 1)]
    finished = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in finished)
    assert codes == [0, 2], finished
    loser = next(err for code, err in finished if code == 2)
    assert "Traceback" not in loser
    assert "being written by another tfmi process" in loser or "already exists" in loser
    winner_seed = next(seed for seed, (code, _) in zip((0, 1), finished, strict=True) if code == 0)
    assert json.loads((out / "tfmi.json").read_text())["training"]["seed"] == winner_seed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_final_write_is_one_error_and_leaves_nothing(tmp_path):
    """Under `ulimit -f 64` (KiB) the SavedModel cannot be written: one Error: line, nothing left."""
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    out = tmp_path / "outputs" / "model"
    run = subprocess.run([*TFMI, "train", "--dataset", "digits", "--epochs", "1", "--target-size", "200",
                          "--out", str(out)],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, preexec_fn=limit_file_size,
                         timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "cannot write" in errors[0] and "ulimit -f" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even the parent folder it created
