"""`tfmi benchmark`: cells cached by configuration, resumed after an interruption, summarized per defense."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import tfmi.benchmark as benchmark_module
from cli.main import cli
from tests.fixtures import random_binary
from tfmi.benchmark import BenchmarkSpec, Stat, summarize
from tfmi.defenses.config import DefenseConfig
from tfmi.errors import TfmiError
from tfmi.safe_write import MARKER_FILE
from tfmi.training import TrainConfig

TINY = ["benchmark", "--model", "mlp", "--epochs", "3", "--target-size", "200", "--shadows", "2",
        "--attacks", "gap,loss,lira_online", "--defenses", "none,l2"]


def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


class CountingRunCell:
    """Wraps the real `run_cell`, counting calls; raises KeyboardInterrupt on call ``interrupt_at``."""

    def __init__(self, real, interrupt_at=None):
        self.real, self.interrupt_at, self.calls = real, interrupt_at, []

    def __call__(self, data, cell, **kwargs):
        self.calls.append((cell.defense.name, cell.seed))
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.real(data, cell, **kwargs)


def test_interrupted_benchmark_resumes_without_retraining_finished_cells(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    real = benchmark_module.run_cell
    first = CountingRunCell(real, interrupt_at=2)
    monkeypatch.setattr(benchmark_module, "run_cell", first)
    result = run([*TINY, "--out", str(out)])
    assert result.exit_code == 130
    assert "run the same command again" in result.output
    saved = sorted((out / "cells").glob("*.json"))
    assert len(saved) == 1 and not (out / "results.md").exists()
    finished = json.loads(saved[0].read_text())
    assert finished["defense"] == "none"

    second = CountingRunCell(real)
    monkeypatch.setattr(benchmark_module, "run_cell", second)
    result = run([*TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert second.calls == [("l2", 0)]  # only the unfinished cell ran
    assert "1 cached" in result.output
    results = json.loads((out / "results.json").read_text())
    cells = {c["defense"]: c for c in results["cells"]}
    assert cells["none"] == finished  # the cached record, untouched
    for cell in cells.values():  # the gap attack is 0.5 + gap / 2 on the balanced evaluation set
        gap_result = next(r for r in cell["report"]["results"] if r["attack"] == "gap")
        assert gap_result["accuracy"] == pytest.approx(0.5 + cell["generalization_gap"] / 2, abs=1e-12)
        assert any(r["attack"].startswith("LiRA online") for r in cell["report"]["results"])
        assert cell["shadows_retrained"] == [0, 0]  # both shadows trained (none failed)
        in_accuracy = [a for a, _ in cell["shadow_accuracies"]]
        assert len(in_accuracy) == 2 and cell["report"]["shadow_train_accuracy"] == pytest.approx(
            np.mean(in_accuracy), abs=1e-5)
    for name in ("results.md", "privacy_utility.png", "roc_none.png", "roc_l2.png"):
        assert (out / name).is_file()
    assert "| none |" in (out / "results.md").read_text()
    assert not list(out.glob("**/*.tmp*"))
    assert not [p for p in out.glob("**/.*") if p.name != MARKER_FILE]

    third = CountingRunCell(real)
    monkeypatch.setattr(benchmark_module, "run_cell", third)
    assert run([*TINY, "--out", str(out)]).exit_code == 0 and third.calls == []


def test_more_settings_or_seeds_reuse_the_cells_a_folder_holds(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    real = benchmark_module.run_cell
    base = ["benchmark", "--model", "mlp", "--epochs", "1", "--target-size", "100", "--shadows", "0",
            "--attacks", "gap,loss", "--out", str(out)]
    assert run([*base, "--defenses", "none"]).exit_code == 0
    first = json.loads((out / "results.json").read_text())["cells"]

    wider = CountingRunCell(real)
    monkeypatch.setattr(benchmark_module, "run_cell", wider)
    result = run([*base, "--defenses", "none,l2", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert sorted(wider.calls) == [("l2", 0), ("l2", 1), ("none", 1)]
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert next(c for c in cells if c["label"] == "none" and c["seed"] == 0) == first[0]  # reused as is
    assert len(cells) == 4 and (out / "roc_none.png").is_file()

    narrower = CountingRunCell(real)
    monkeypatch.setattr(benchmark_module, "run_cell", narrower)
    assert (out / "roc_l2.png").is_file()
    result = run([*base, "--defenses", "none"])
    assert result.exit_code == 0, result.output
    assert narrower.calls == []
    assert "| l2" not in (out / "results.md").read_text()
    assert not (out / "roc_l2.png").exists()  # the earlier run's plot of a row no longer listed
    assert (out / "roc_none.png").is_file()
    assert len(list((out / "cells").glob("*.json"))) == 4  # cached for a later, wider run


def test_a_different_configuration_is_refused_unless_forced(tmp_path):
    out = tmp_path / "bench"
    args = ["benchmark", "--model", "mlp", "--epochs", "1", "--target-size", "100", "--shadows", "0",
            "--attacks", "threshold", "--defenses", "none", "--out", str(out)]
    assert run(args).exit_code == 0
    changed = [*args[:-2], "--epochs", "2", "--out", str(out)]
    result = run(changed)
    assert result.exit_code == 2
    assert result.output.count("Error:") == 1 and "different benchmark" in result.output
    assert "train" in result.output  # names what differs
    assert run([*changed, "--force"]).exit_code == 0
    assert json.loads((out / "benchmark.json").read_text())["train"]["epochs"] == 2


def test_default_rows_follow_the_kind_of_data(tmp_path, monkeypatch):
    """Mixup only on images, as the authors ran it: tabular data get MMD without mixup."""
    features, labels = random_binary(300, 20, 3)
    table = tmp_path / "table.npz"
    np.savez(table, x=features.astype("float32"), y=labels - 1)
    common = ["benchmark", "--epochs", "1", "--target-size", "80", "--shadows", "0", "--attacks", "gap"]
    cases = ((str(table), [], ["none", "mmd", "dp-sgd"]), ("digits", [], ["none", "mmd-mixup", "dp-sgd"]),
             (str(table), ["--defenses", "none,mmd-mixup"], ["none", "mmd-mixup"]))
    for i, (dataset, extra, rows) in enumerate(cases):
        stop = CountingRunCell(benchmark_module.run_cell, interrupt_at=1)  # the rows are chosen by then
        monkeypatch.setattr(benchmark_module, "run_cell", stop)
        out = tmp_path / f"bench{i}"
        result = run([*common, "--dataset", dataset, *extra, "--out", str(out)])
        assert result.exit_code == 130, result.output
        assert [d["name"] for d in json.loads((out / "benchmark.json").read_text())["defenses"]] == rows
        assert stop.calls == [(rows[0], 0)]


@pytest.mark.parametrize("extra, message", [
    (["--defenses", "none,bogus"], "unknown defense 'bogus'"),
    (["--attacks", "loss,nope"], "unknown attack 'nope'"),
    (["--defenses", "none,none"], "listed twice"),
    (["--shadows", "0", "--attacks", "lira"], "need at least 2 shadow models"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--target-size", "5000"], "needs 10000 records"),
])
def test_bad_benchmark_options_fail_cleanly(tmp_path, extra, message):
    out = tmp_path / "bench"
    result = run(["benchmark", "--epochs", "1", "--out", str(out), *extra])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.output
    assert not out.exists()


def spec(**changes):
    base = {"dataset": "digits", "data_fingerprint": "f", "train": TrainConfig("mlp", epochs=2),
            "defenses": (DefenseConfig("none"), DefenseConfig("mmd-mixup")), "seeds": (0, 1),
            "attacks": ("gap", "loss"), "num_shadows": 0, "target_size": 200}
    return BenchmarkSpec(**{**base, **changes})


def test_cell_keys_follow_every_setting_but_not_the_other_cells():
    key = spec().cells()[2].key()  # mmd-mixup, seed 0
    assert spec(defenses=(DefenseConfig("mmd-mixup"),), seeds=(0,)).cells()[0].key() == key
    for changed in (spec(train=TrainConfig("mlp", epochs=3)), spec(data_fingerprint="g"),
                    spec(attacks=("gap",)), spec(target_size=201),
                    spec(defenses=(DefenseConfig("none"), DefenseConfig("mmd-mixup", mmd_weight=2.0)))):
        assert changed.cells()[2].key() != key
    with pytest.raises(TfmiError, match="no defense"):
        spec(defenses=())


def test_a_revised_defense_gets_new_cell_keys_and_the_others_keep_theirs(monkeypatch):
    """A defense whose training changed (`DEFENSE_REVISIONS`) invalidates its cached cells only."""
    from tfmi.defenses import config as defense_config

    cells = spec(defenses=(DefenseConfig("none"), DefenseConfig("mmd-mixup"), DefenseConfig("dp-sgd")),
                 seeds=(0,)).cells()
    assert cells[2].to_dict()["defense_revision"] == 2  # dp-sgd: partial batches noised as full ones
    assert "defense_revision" not in cells[0].to_dict() and "defense_revision" not in cells[1].to_dict()
    before = [cell.key() for cell in cells]
    monkeypatch.setitem(defense_config.DEFENSE_REVISIONS, "mmd-mixup", 2)
    after = [cell.key() for cell in cells]
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]

    from tfmi.data import load_dataset
    from tfmi.shadow_chunks import ShadowChunkStore

    digits, pool = load_dataset("digits"), np.arange(40)

    def chunk_key(name):
        return ShadowChunkStore("unused", digits, pool, TrainConfig("mlp"), digits.x[pool], num_shadows=2,
                                seed=0, per_task=1, defense=DefenseConfig(name)).key

    keys = {name: chunk_key(name) for name in ("none", "dp-sgd")}
    monkeypatch.setitem(defense_config.DEFENSE_REVISIONS, "dp-sgd", 3)
    assert chunk_key("dp-sgd") != keys["dp-sgd"] and chunk_key("none") == keys["none"]


def test_a_cell_that_may_hold_a_given_up_shadow_is_recomputed_unless_it_left_it_out(tmp_path):
    """Records from before given-up shadows were left out of the attacks: recomputed only when a shadow
    was retrained the maximum number of times (it may have failed every time)."""
    from tfmi.attacks.shadow import MAX_RETRAINS
    from tfmi.benchmark import CellStore

    cell = spec(seeds=(0,)).cells()[0]
    store = CellStore(tmp_path)
    store.cells_dir.mkdir(parents=True)

    def stored(retrained, **report):
        store.save(cell, {"cell": cell.to_dict(), "shadows_retrained": retrained, "report": report})
        return store.load(cell)

    assert stored([0, 1, 0]) is not None  # every retrained shadow got a working retraining
    assert stored([]) is not None  # no shadows
    assert stored([0, MAX_RETRAINS]) is None
    assert stored([0, MAX_RETRAINS], shadows_left_out=[1]) is not None
    assert stored([0, MAX_RETRAINS], shadows_left_out=[]) is not None  # its last retraining worked


def record(defense, seed, train, test, auc, epsilon=None):
    from tfmi.attacks.metrics import evaluate_scores
    from tfmi.attacks.suite import AttackReport

    rng = np.random.default_rng(seed)
    result = evaluate_scores(rng.normal(auc, 1, 300), rng.normal(0, 1, 300), attack="loss",
                             threshold=0.0, threshold_source="shadow")
    report = AttackReport([result], 300, 300, train, test, "logits")
    return {"defense": defense, "seed": seed, "train_accuracy": train, "test_accuracy": test,
            "generalization_gap": train - test, "epsilon": epsilon, "delta": 1e-5 if epsilon else None,
            "report": report.to_dict(), "result": result}


def test_summaries_are_means_and_sample_spreads_over_seeds():
    records = [record("none", 0, 1.0, 0.6, 1.0), record("none", 1, 0.9, 0.7, 1.2),
               record("dp-sgd", 0, 0.5, 0.5, 0.1, epsilon=3.0)]
    rows = summarize(records)
    assert [r.defense for r in rows] == ["none", "dp-sgd"]
    none = rows[0]
    assert none.seeds == 2 and none.gap.mean == pytest.approx(0.3)
    assert none.gap.spread == pytest.approx(np.std([0.4, 0.2], ddof=1))
    advantages = [records[0]["result"].advantage, records[1]["result"].advantage]
    assert none.attacks[0].advantage.mean == pytest.approx(np.mean(advantages))
    assert rows[1].epsilon.mean == 3.0 and rows[1].epsilon.spread == 0.0
    achieved = [records[0]["result"].achieved_advantage, records[1]["result"].achieved_advantage]
    assert none.attacks[0].achieved_advantage.mean == pytest.approx(np.mean(achieved))
    bounds = [r["result"].epsilon_lower_bound(1e-5) for r in records[:2]]
    assert none.epsilon_lower_bound.mean == pytest.approx(np.mean(bounds)) and max(bounds) > 0
    assert Stat.of([None, None]).format() is None
    assert Stat(0.5, 0.0).format() == "0.500" and Stat(0.5, 0.01).format() == "0.500 ± 0.010"


def test_a_killed_benchmark_process_resumes_from_its_saved_cells(tmp_path):
    """A real crash: SIGKILL the `tfmi` process once its first cell is on disk, then run it again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "bench"
    args = [sys.executable, "-c", "from cli.main import main; main()", *TINY[:-2],
            "--defenses", "none,l2,dropout", "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((out / "cells").glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    survivors = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert 1 <= len(survivors) < 3, "the kill should land while cells remain to run"
    assert not (out / "results.md").exists()

    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(survivors)} cached" in rerun.stdout
    cells = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert len(cells) == 3 and all(cells[name] == data for name, data in survivors.items())
    # no half-written temp files; the one hidden file is the output marker
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.name != MARKER_FILE]
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in ("none", "l2", "dropout"))


def test_training_and_defense_options_reach_every_cell(tmp_path):
    from tfmi.defenses.dp_sgd import dp_epsilon

    out = tmp_path / "bench"
    result = run(["benchmark", "--model", "mlp", "--epochs", "2", "--batch-size", "32", "--lr", "0.01",
                  "--target-size", "100", "--reference-size", "50", "--shadows", "0",
                  "--attacks", "threshold", "--defenses", "mmd-mixup,dp-sgd", "--mmd-weight", "2.0",
                  "--noise-multiplier", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "benchmark.json").read_text())
    assert manifest["train"]["batch_size"] == 32 and manifest["train"]["learning_rate"] == 0.01
    assert manifest["reference_size"] == 50
    defenses = {d["name"]: d for d in manifest["defenses"]}
    assert defenses["mmd-mixup"]["mmd_weight"] == 2.0 and defenses["dp-sgd"]["noise_multiplier"] == 0.5
    cells = {c["defense"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert cells["mmd-mixup"]["defense_record"]["mmd_weight"] == 2.0
    dp = cells["dp-sgd"]  # the epsilon reported is the one this batch size, epoch count and noise spend
    assert dp["epsilon"] == pytest.approx(dp_epsilon(100, 32, 2, 0.5, dp["delta"]), rel=1e-9)
