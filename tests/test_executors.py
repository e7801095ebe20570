"""Where benchmark cells run: in this process, as Ray tasks, or split over job-array shards; the same
cells come out of each (all but the measured seconds), and shards share one cache safely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from tfmi.errors import TfmiError
from tfmi.executors import ExecutorConfig, LocalExecutor, RayExecutor, Shard, make_executor
from tfmi.safe_write import output_lock

TINY = ["benchmark", "--model", "mlp", "--epochs", "2", "--target-size", "100", "--shadows", "2",
        "--attacks", "gap,loss,lira_online,rmia_offline", "--defenses", "none", "--sweep", "l2:l2=1e-3",
        "--seeds", "1"]
REPO = Path(__file__).resolve().parents[1]


def run(args, catch=False):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=catch)


def cells_of(out: Path) -> dict[str, dict]:
    """Each cached cell's record without its wall time, by file name."""
    cells = {}
    for path in sorted((out / "cells").glob("*.json")):
        record = json.loads(path.read_text())
        assert record.pop("seconds") > 0
        cells[path.name] = record
    return cells


@pytest.fixture(scope="module")
def local_cells(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("local") / "b"
    result = run([*TINY, "--out", out])
    assert result.exit_code == 0, result.output
    cells = cells_of(out)
    assert len(cells) == 2  # none and l2
    return cells


# --------------------------------------------------------------------------------------- units


def test_shard_takes_every_nth_unit_and_refuses_malformed_text():
    units = list(range(7))
    shards = [Shard.parse(f"{i}/3") for i in range(3)]
    assert [s.select(units) for s in shards] == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(u for s in shards for u in s.select(units)) == units  # each unit exactly once
    assert Shard.parse(" 0/1 ").select(units) == units
    for text, message in (("3/3", "not in 0..2"), ("1/0", "shard count must be an integer >= 1"),
                          ("a/2", "takes I/N"), ("1", "takes I/N"), ("-1/2", "takes I/N"), ("1/2/3", "I/N")):
        with pytest.raises(TfmiError, match=message):
            Shard.parse(text)


def test_executor_config_checks_each_field():
    assert ExecutorConfig().name == "local" and ExecutorConfig("ray", gpus_per_task=0.5).gpus_per_task == 0.5
    for kwargs, message in (({"name": "dask"}, "unknown executor 'dask'"),
                            ({"cpus_per_task": 0}, "cpus-per-task must be a number > 0"),
                            ({"gpus_per_task": -1}, "gpus-per-task must be a number >= 0"),
                            ({"cpus_per_task": float("nan")}, "cpus-per-task"),
                            ({"max_retries": -1}, "max-retries must be an integer >= 0"),
                            ({"address": "10.0.0.1:6379"}, "add --executor ray")):
        with pytest.raises(TfmiError, match=message):
            ExecutorConfig(**kwargs)


def test_local_executor_hands_back_each_result_in_order():
    seen = []
    results = LocalExecutor().map(lambda shared, unit: shared + unit, "x", ["a", "b"],
                                  on_done=lambda unit, result: seen.append((unit, result)))
    assert results == ["xa", "xb"] and seen == [("a", "xa"), ("b", "xb")]
    assert make_executor(ExecutorConfig()).name == "local"


# ------------------------------------------------------------------------------------ CLI, shards


def test_shards_fill_one_cache_and_the_final_run_assembles_the_same_cells(local_cells, tmp_path):
    out = tmp_path / "b"
    first = run([*TINY, "--out", out, "--shard", "0/2"])
    assert first.exit_code == 0, first.output
    assert "shard 0/2 takes 1, 1 to run" in first.output and "1 left for the other shards" in first.output
    assert not (out / "results.json").exists()  # a shard writes cells only
    second = run([*TINY, "--out", out, "--shard", "1/2"])
    assert "run the command without --shard to assemble" in second.output
    again = run([*TINY, "--out", out, "--shard", "1/2"])  # a rerun shard has nothing left to do
    assert "0 to run" in again.output
    final = run([*TINY, "--out", out])
    assert final.exit_code == 0 and "(2 cached in" in final.output and "0 to run" in final.output
    assert (out / "results.json").exists()
    assert cells_of(out) == local_cells


@pytest.mark.parametrize("extra, message", [
    (["--shard", "2/2"], "shard index 2 is not in 0..1"),
    (["--shard", "0/2", "--force"], "--force with --shard"),
    (["--ray-address", "127.0.0.1:1"], "add --executor ray"),
    (["--executor", "ray", "--cpus-per-task", "0"], "cpus-per-task must be a number > 0"),
])
def test_bad_executor_options_are_refused_before_any_work(tmp_path, extra, message):
    result = run([*TINY, "--out", tmp_path / "b", *extra], catch=True)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "b").exists()


def test_executor_ray_without_ray_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    result = run([*TINY, "--out", tmp_path / "b", "--executor", "ray"], catch=True)
    assert result.exit_code == 2 and "pip install 'tfmi[ray]'" in result.output
    assert not (tmp_path / "b").exists()


LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from tfmi.safe_write import output_lock
    with output_lock(sys.argv[1], shared=sys.argv[2] == "shared"):
        print("held", flush=True)
        sys.stdin.readline()
""")


def hold_lock(out: Path, mode: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out), mode], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    return holder


def release(holder: subprocess.Popen) -> None:
    holder.communicate("\n", timeout=60)
    assert holder.returncode == 0


def test_shards_share_the_output_lock_and_a_whole_run_waits_for_them(tmp_path):
    out = tmp_path / "b"
    shard = hold_lock(out, "shared")
    try:
        with output_lock(out, shared=True):  # a second shard runs beside the first
            pass
        with pytest.raises(TfmiError, match="being written by another tfmi process"), output_lock(out):
            pass
    finally:
        release(shard)
    whole = hold_lock(out, "exclusive")
    try:
        with pytest.raises(TfmiError, match="being written by another tfmi process"), \
                output_lock(out, shared=True):
            pass
    finally:
        release(whole)
    with output_lock(out):  # all released: the lock file is gone, a whole run proceeds
        pass
    assert not list(tmp_path.glob(".*tfmi-lock"))


def test_two_shard_processes_writing_one_cache_at_once_leave_every_cell_whole(local_cells, tmp_path):
    out = tmp_path / "b"
    command = [sys.executable, "-c", "from cli.main import main; main()", *TINY, "--out", str(out)]
    shards = [subprocess.Popen([*command, "--shard", f"{i}/2"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [s.communicate(timeout=600)[0] for s in shards]
    assert [s.returncode for s in shards] == [0, 0], outputs
    assert cells_of(out) == local_cells  # every cell parses and equals the local run's
    assert not list((out / "cells").glob("*.tmp*")) and not list(tmp_path.glob(".*tfmi-lock"))


# ---------------------------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster():
    """A private Ray on 127.0.0.1 with 2 CPUs for this module, or a skip saying why it cannot start."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'tfmi[ray]')")
    warnings.filterwarnings("ignore", ".*accelerator visible devices.*", FutureWarning)  # Ray's notice
    try:
        # the workers import this module's task functions: give them the tests folder too
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}})
    except Exception as error:  # noqa: BLE001 - any failure to start is a reason to skip
        pytest.skip(f"Ray cannot start here: {type(error).__name__}: {error}")
    yield ray
    ray.shutdown()


def _crash_on_first_attempt(marker_dir: str, unit: int) -> int:
    """Kills its own worker process the first time it sees ``unit`` 1; answers on the retry."""
    marker = Path(marker_dir) / f"attempt-{unit}"
    if unit == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return unit * unit


def _cell_killed_once(shared, cell):
    """A benchmark cell whose worker dies half-way through its first attempt (after the target trained)."""
    data, marker_dir = shared
    marker = Path(marker_dir) / f"cell-{cell.seed}"
    import tfmi.attacks.shadow as shadow_module

    if not marker.exists():
        def die(*args, **kwargs):
            marker.write_text(str(os.getpid()))
            os._exit(1)
        shadow_module.train_shadows = die  # run_cell imports it at call time: the kill lands mid-cell
    from tfmi.benchmark import run_cell_task

    return run_cell_task(data, cell)


def _refuse(shared, unit):
    raise TfmiError(f"unit {unit} is bad: fix it")


def test_ray_executor_retries_a_killed_worker_with_the_same_result(ray_cluster, tmp_path):
    from tfmi.benchmark import BenchmarkSpec, data_fingerprint, run_cell_task
    from tfmi.data import load_dataset
    from tfmi.defenses.config import DefenseConfig
    from tfmi.training import TrainConfig

    data = load_dataset("digits")
    spec = BenchmarkSpec(dataset=data.name, data_fingerprint=data_fingerprint(data),
                         train=TrainConfig("mlp", epochs=2), defenses=(DefenseConfig("none"),), seeds=(0,),
                         attacks=("gap", "loss", "lira_online"), num_shadows=2, target_size=100)
    uninterrupted = LocalExecutor().map(run_cell_task, data, spec.cells())
    executor = RayExecutor(ExecutorConfig("ray", max_retries=2))
    seen = []
    killed = executor.map(_cell_killed_once, (data, str(tmp_path)), spec.cells(),
                          on_done=lambda cell, record: seen.append(cell.seed))
    assert seen == [0] and (tmp_path / "cell-0").exists()  # it died once
    for a, b in zip(uninterrupted, killed, strict=True):
        a.pop("seconds"), b.pop("seconds")
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    with pytest.raises(TfmiError, match="worker died 1 time"):
        RayExecutor(ExecutorConfig("ray", max_retries=0)).map(_crash_on_first_attempt, str(tmp_path), [1],
                                                              describe=lambda unit: f"unit {unit}")
    with pytest.raises(TfmiError, match="unit 3 is bad: fix it"):  # the task's own error, not retried
        executor.map(_refuse, None, [3])
    executor.close()
    assert ray_cluster.is_initialized()  # it joined the cluster it found: not its own to shut down


def test_benchmark_on_ray_gives_the_local_cells(ray_cluster, local_cells, tmp_path):
    out = tmp_path / "b"
    result = run([*TINY, "--out", out, "--executor", "ray"])
    assert result.exit_code == 0, result.output
    assert cells_of(out) == local_cells
    assert (out / "results.json").exists()


# ------------------------------------------------------------------------- audits: shadows in chunks


@pytest.fixture(scope="module")
def digits_pool():
    import numpy as np
    import tensorflow as tf

    from tfmi.data import load_dataset

    tf.config.experimental.enable_op_determinism()  # as every executor unit runs
    data = load_dataset("digits")
    pool = np.arange(120)
    return data, pool, np.arange(60), np.arange(60, 120)


def test_shadows_trained_in_chunks_answer_like_shadows_trained_in_one_piece(digits_pool):
    import numpy as np

    from tfmi.attacks.shadow import assemble_shadows, train_shadow_outputs, train_shadows
    from tfmi.attacks.suite import run_attacks, shadow_queries
    from tfmi.defenses.config import DefenseConfig
    from tfmi.models import build_model
    from tfmi.training import TrainConfig

    data, pool, members, non_members = digits_pool
    queries = shadow_queries(data, pool, members, non_members, population=np.arange(120, 150))
    config = TrainConfig("mlp", epochs=2)
    # shadows trained one by one (a defense) depend only on their own seed: any chunking gives them
    l2 = DefenseConfig("l2")
    whole = train_shadows(data, pool, config, num_shadows=4, seed=3, defense=l2)
    parts = [train_shadow_outputs(data, pool, config, queries, num_shadows=4, seed=3, chunk=c, defense=l2)
             for c in ((2, 4), (0, 1), (1, 2))]
    chunked = assemble_shadows(data, pool, config, queries, num_shadows=4, seed=3, parts=parts, defense=l2)
    assert np.array_equal(chunked.logits(data.x[pool]), whole.logits(data.x[pool]))
    assert np.array_equal(chunked.masks, whole.masks) and chunked.seeds == whole.seeds
    assert np.array_equal(chunked.train_accuracy, whole.train_accuracy)
    # batched shadows: the one chunk 0..K is the whole batched set, and the attacks read it alike
    batched = train_shadows(data, pool, config, num_shadows=4, seed=3)
    one = assemble_shadows(data, pool, config, queries, num_shadows=4, seed=3, parts=[
        train_shadow_outputs(data, pool, config, queries, num_shadows=4, seed=3, chunk=(0, 4))])
    assert np.array_equal(one.logits(queries), batched.logits(queries))
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.x[members], data.y[members], epochs=3, verbose=0)
    kwargs = {"attacks": "loss,lira_online,rmia_online", "population": np.arange(120, 150), "seed": 0}
    live = run_attacks(model, data, members, non_members, shadows=batched, **kwargs)
    stored = run_attacks(model, data, members, non_members, shadows=one, **kwargs)
    assert live.to_dict() == stored.to_dict()
    # what the stored outputs cannot answer is refused, not guessed
    with pytest.raises(TfmiError, match="kept only their outputs"):
        one.logits(data.x[500:502])
    with pytest.raises(TfmiError, match="only their outputs came back"):
        one.shadow_model(0)
    with pytest.raises(TfmiError, match=r"do not tile the 4 shadows"):
        assemble_shadows(data, pool, config, queries, num_shadows=4, seed=3, parts=parts[:2])
    with pytest.raises(TfmiError, match="shadow chunk 3:5 is not within the 4 shadows"):
        train_shadows(data, pool, config, num_shadows=4, seed=3, chunk=(3, 5))


def test_audit_shadows_on_ray_equal_the_same_chunks_trained_here(ray_cluster, digits_pool):
    import numpy as np

    from tfmi.attacks.suite import shadow_queries
    from tfmi.audit import audit
    from tfmi.shadow_chunks import train_shadows_on
    from tfmi.training import TrainConfig

    data, pool, members, non_members = digits_pool
    queries = shadow_queries(data, pool, members, non_members)
    config = TrainConfig("mlp", epochs=2)
    here = train_shadows_on(LocalExecutor(), data, pool, config, queries, num_shadows=4, seed=1, per_task=2)
    finished = []
    executor = RayExecutor(ExecutorConfig("ray"))
    there = train_shadows_on(executor, data, pool, config, queries, num_shadows=4, seed=1, per_task=2,
                             on_done=lambda chunk, outputs: finished.append(chunk))
    assert sorted(finished) == [(0, 2), (2, 4)]
    assert np.array_equal(here.logits(queries), there.logits(queries))
    # through tfmi.audit.audit: the report of Ray-trained chunks is the report of local ones
    def model(batch):  # a fixed "classifier": the first 10 pixels as logits
        return np.asarray(batch).reshape(len(batch), -1)[:, :10]

    reports = [audit(model, (data.x[members], data.y[members]), (data.x[non_members], data.y[non_members]),
                     attacks="loss,lira_online", shadows=4, shadow_config=config, seed=1, shadows_per_task=2,
                     executor=chosen) for chosen in (ExecutorConfig(), ExecutorConfig("ray"))]
    assert reports[0].to_dict() == reports[1].to_dict()


def test_audit_cli_refuses_chunk_options_without_shadows(tmp_path):
    result = run(["audit", tmp_path / "m.keras", "--members", tmp_path / "a.npz", "--non-members",
                  tmp_path / "b.npz", "--shadows-per-task", "2", "--out", tmp_path / "out"], catch=True)
    assert result.exit_code == 2 and "pass --shadows K too" in result.output
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "m"
    result = run(["train", "--epochs", "2", "--target-size", "150", "--out", out])
    assert result.exit_code == 0, result.output
    return out


def test_audit_shards_fill_the_chunk_cache_and_the_final_run_reports_as_a_whole_run(trained_dir, tmp_path):
    audit = ["audit", trained_dir, "--shadows", "4", "--shadows-per-task", "1", "--attacks",
             "loss,lira_online"]
    whole = run([*audit, "--out", tmp_path / "whole"])
    assert whole.exit_code == 0 and "4 to train on local" in whole.output
    out = tmp_path / "sharded"
    first = run([*audit, "--shard", "0/2", "--out", out])
    assert first.exit_code == 0 and "2 left for the other shards" in first.output
    assert sorted(p.name for p in out.iterdir()) == [".tfmi-output", "shadow-chunks"]  # no report yet
    assert "run the command without --shard" in run([*audit, "--shard", "1/2", "--out", out]).output
    final = run([*audit, "--out", out])
    assert final.exit_code == 0 and "(4 cached in" in final.output and "0 to train" in final.output
    reports = [json.loads((d / "report.json").read_text())["report"] for d in (tmp_path / "whole", out)]
    assert reports[0] == reports[1]
    assert len(list((out / "shadow-chunks").glob("*.npz"))) == 4  # the cache stays with the report
    again = run([*audit, "--out", out], catch=True)  # a finished audit is not overwritten silently
    assert again.exit_code == 2 and "already exists" in again.output
    refused = run([*audit, "--shard", "0/2", "--force", "--out", tmp_path / "x"], catch=True)
    assert refused.exit_code == 2 and "--force with --shard" in refused.output
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # the slowest test of the file (nested Ray tasks): `make test-all` runs it
def test_benchmark_cells_with_shadow_chunks_on_ray_equal_the_local_ones(ray_cluster, local_cells, tmp_path):
    from tfmi.benchmark import _inside_ray

    # a cell on Ray sends its chunks out as Ray tasks: it knows it runs inside one
    assert not _inside_ray() and ray_cluster.get(ray_cluster.remote(_inside_ray).remote())
    chunked = [*TINY, "--shadows-per-task", "1"]
    here, there = tmp_path / "here", tmp_path / "there"
    assert run([*chunked, "--out", here]).exit_code == 0
    result = run([*chunked, "--out", there, "--executor", "ray"])  # each cell's shadows as nested tasks
    assert result.exit_code == 0, result.output
    assert cells_of(here) == cells_of(there)
    # the chunking is part of the cells; the l2 row's shadows train one by one, so its report is the
    # unchunked run's
    by_label = {r["label"]: r for r in cells_of(here).values()}
    unchunked = {r["label"]: r for r in local_cells.values()}
    assert all(r["cell"]["shadows_per_task"] == 1 for r in by_label.values())
    assert "shadows_per_task" not in next(iter(unchunked.values()))["cell"]
    assert by_label["l2"]["report"] == unchunked["l2"]["report"]
    refused = run([*TINY, "--shadows", "0", "--attacks", "gap", "--shadows-per-task", "2",
                   "--out", tmp_path / "x"], catch=True)
    assert refused.exit_code == 2 and "pass --shadows K" in refused.output and not (tmp_path / "x").exists()


class _StopAtExecutor(Exception):
    pass


@pytest.mark.parametrize("command", ["benchmark", "audit"])
def test_ray_options_reach_the_executor_from_the_command_line(tmp_path, monkeypatch, command):
    """--ray-address, --cpus-per-task, --gpus-per-task and --max-retries end up in the executor the
    command makes, unchanged (the executor itself is tested above with a real Ray)."""
    import tfmi.executors as executors

    seen = []

    def capture(config):
        seen.append(config)
        raise _StopAtExecutor

    monkeypatch.setattr(executors, "make_executor", capture)
    monkeypatch.setattr(executors, "check_ray_installed", lambda: None)  # Ray need not be installed
    options = ["--executor", "ray", "--ray-address", "10.0.0.5:6379", "--cpus-per-task", "2",
               "--gpus-per-task", "0.25", "--max-retries", "5"]
    if command == "benchmark":
        args = [*TINY, *options, "--out", tmp_path / "bench"]
    else:
        trained = tmp_path / "model"
        assert run(["train", "--model", "mlp", "--epochs", "1", "--target-size", "100", "--out", trained]
                   ).exit_code == 0
        args = ["audit", trained, "--shadows", "2", "--attacks", "loss", *options,
                "--out", tmp_path / "audit"]
    with pytest.raises(_StopAtExecutor):
        run(args)
    assert [(c.name, c.address, c.cpus_per_task, c.gpus_per_task, c.max_retries) for c in seen] == \
        [("ray", "10.0.0.5:6379", 2.0, 0.25, 5)]
