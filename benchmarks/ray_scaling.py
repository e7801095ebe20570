"""Ray against the local executor, measured side by side in one run (issue 13).

    python benchmarks/ray_scaling.py [--data-dir ../shared/data] [--repeats 2]

1. **Overhead**: a small benchmark (digits, mlp, 3 epochs, 2 shadows per cell; none and l2 at two
   strengths; 2 seeds: 6 cells) run by the local executor and by a private Ray cluster with one
   worker process (1 CPU). Both run the cells one at a time, so the ratio is Ray's cost: starting the
   cluster, a worker importing TensorFlow, moving the data and the records. Alternating runs;
   ratio of the medians.
2. **Scaling**: audit shadow chunks (digits, 8 shadows with the l2 defense, so each trains with its own
   `model.fit`; one shadow per task) on a private Ray cluster of one worker process and of two (1 CPU
   each), after a warm-up task; units per second of each and their ratio. On 2 cores, two
   workers compete with TensorFlow's own intra-op threads, so the ratio shows what process-level
   parallelism adds on top of them.
3. **On paper**: the measured cost of one CIFAR-10 shadow (the frontier setting: small CNN, 2,500 IN
   records of a 5,000-record pool, 30 epochs; timed for ``--cifar-epochs`` and scaled) and the wall time
   of a 64-shadow LiRA audit with one shadow per task on N workers of that speed: ceil(64 / N) x t,
   plus the measured per-task Ray overhead. The figure is for workers as fast as these CPU cores;
   a GPU worker's per-shadow time has to be measured on that GPU and replaces t.

Measured (2 CPU cores, nothing else running): 1. local 25.7 s, Ray 32.4 s, 1.26x (1.1 s per cell);
2. 0.67 vs 1.15 units/s, 1.71x; 3. 1.0 min per CIFAR-10 shadow, so 64 shadows take 1.13 h on one worker,
0.28 h on 4, 0.07 h on 16.

Needs Ray (`pip install 'tfmi[ray]'`). Part 3 needs the CIFAR-10 tarball under --data-dir (skipped
without it). Prints ratios; asserts nothing about times.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

from tfmi.attacks.suite import shadow_queries  # noqa: E402
from tfmi.benchmark import (  # noqa: E402
    BenchmarkSpec,
    data_fingerprint,
    expand_sweeps,
    parse_sweep,
    run_cell_task,
)
from tfmi.data import load_dataset  # noqa: E402
from tfmi.defenses.config import DefenseConfig  # noqa: E402
from tfmi.executors import ExecutorConfig, LocalExecutor, RayExecutor  # noqa: E402
from tfmi.shadow_chunks import train_shadows_on  # noqa: E402
from tfmi.training import TrainConfig  # noqa: E402


def small_benchmark_cells(data):
    defenses = expand_sweeps([DefenseConfig("none")], [parse_sweep("l2:l2=1e-4,1e-2")])
    spec = BenchmarkSpec(dataset=data.name, data_fingerprint=data_fingerprint(data),
                         train=TrainConfig("mlp", epochs=3), defenses=defenses, seeds=(0, 1),
                         attacks=("gap", "loss", "lira_online"), num_shadows=2, target_size=200)
    return spec.cells()


def timed(executor_factory, fn, shared, units) -> float:
    start = time.perf_counter()
    executor = executor_factory()
    try:
        executor.map(fn, shared, units)
    finally:
        executor.close()
    return time.perf_counter() - start


def overhead(data, repeats: int) -> tuple[float, float]:
    cells = small_benchmark_cells(data)
    local, ray = [], []
    one_worker = ExecutorConfig("ray", local_cpus=1)
    for _ in range(repeats):
        local.append(timed(LocalExecutor, run_cell_task, data, cells))
        ray.append(timed(lambda: RayExecutor(one_worker), run_cell_task, data, cells))
    return statistics.median(local), statistics.median(ray)


def scaling(data) -> dict[int, float]:
    pool = np.arange(300)
    queries = shadow_queries(data, pool, pool[:150], pool[150:])
    config, defense = TrainConfig("mlp", epochs=5), DefenseConfig("l2")
    rates = {}
    for workers in (1, 2):
        executor = RayExecutor(ExecutorConfig("ray", local_cpus=workers))
        try:  # warm-up: start the worker processes and import TensorFlow in them
            train_shadows_on(executor, data, pool, config, queries, num_shadows=workers, seed=9, per_task=1,
                             defense=defense)
            start = time.perf_counter()
            train_shadows_on(executor, data, pool, config, queries, num_shadows=8, seed=0, per_task=1,
                             defense=defense)
            rates[workers] = 8 / (time.perf_counter() - start)
        finally:
            executor.close()
    return rates


def cifar_shadow_seconds(data_dir: str, epochs: int) -> float | None:
    try:
        data = load_dataset("cifar10", data_dir)
    except Exception as error:  # noqa: BLE001 - part 3 is optional
        print(f"part 3 skipped: {error}")
        return None
    pool = np.arange(5000)
    queries = data.x[pool]
    start = time.perf_counter()
    train_shadows_on(LocalExecutor(), data, pool, TrainConfig("cnn", epochs=epochs), queries, num_shadows=2,
                     seed=0, per_task=1, defense=DefenseConfig("l2"), chunks=[(0, 1)])
    return (time.perf_counter() - start) * 30 / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cifar-epochs", type=int, default=2)
    args = parser.parse_args()
    digits = load_dataset("digits")

    local, ray = overhead(digits, args.repeats)
    cells = len(small_benchmark_cells(digits))
    print(f"1. overhead, {cells} cells: local {local:.1f} s, Ray (1 worker) {ray:.1f} s: "
          f"ratio {ray / local:.2f}; {(ray - local) / cells:.1f} s per cell")

    rates = scaling(digits)
    print(f"2. scaling, 8 shadow tasks: 1 worker {rates[1]:.3f} units/s, 2 workers {rates[2]:.3f} units/s: "
          f"ratio {rates[2] / rates[1]:.2f}")

    per_task = max(0.0, (ray - local) / cells)
    seconds = cifar_shadow_seconds(args.data_dir, args.cifar_epochs)
    if seconds is not None:
        print(f"3. one CIFAR-10 cnn shadow, 30 epochs (from {args.cifar_epochs}): {seconds / 60:.1f} min "
              "on this machine")
        for workers in (1, 4, 16, 64):
            wall = math.ceil(64 / workers) * (seconds + per_task)
            print(f"   64-shadow LiRA audit on {workers:2d} worker(s) of this speed: {wall / 3600:5.2f} h")


if __name__ == "__main__":
    main()
