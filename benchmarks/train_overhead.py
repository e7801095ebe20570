"""Per-epoch training time of each defense divided by plain `model.fit`, measured side by side.

    python benchmarks/train_overhead.py --data-dir ../shared/data [--epochs 4] [--only location30]

Two workloads: the Location30 tanh MLP (1,500 members) and the small CNN on 5,000 CIFAR-10 images,
batch 64, Adam 1e-3. Each configuration trains for ``--epochs`` epochs; the first (graph tracing)
and the last (where the paper schedule never runs its MMD pass) are dropped and the median of the
others is its per-epoch time, which includes any per-epoch work the
defense does (the MMD schedules' gap measurement and the paper schedule's MMD pass, which the
benchmark forces on every epoch with gap_threshold=0, the worst case). No validation data.
Targets (issue 3): joint MMD + mixup <= 1.5x, paper schedule <= 2.3x, default DP-SGD path <= 5x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from tfmi.data import load_dataset, membership_split  # noqa: E402
from tfmi.defenses.config import DefenseConfig  # noqa: E402
from tfmi.training import TrainConfig, plan_training  # noqa: E402

FORCED = {"gap_threshold": 0.0}
CONFIGURATIONS = [
    ("none", DefenseConfig("none")),
    ("l2", DefenseConfig("l2")),
    ("dropout", DefenseConfig("dropout")),
    ("label-smoothing", DefenseConfig("label-smoothing")),
    ("mixup", DefenseConfig("mixup")),
    ("mmd joint", DefenseConfig("mmd", mmd_schedule="joint", **FORCED)),
    ("mmd-mixup joint", DefenseConfig("mmd-mixup", mmd_schedule="joint", **FORCED)),
    ("mmd paper", DefenseConfig("mmd", mmd_schedule="paper", **FORCED)),
    ("mmd-mixup paper", DefenseConfig("mmd-mixup", mmd_schedule="paper", **FORCED)),
    # the authors' MMD step: its own SGD, reference outputs recomputed for every MMD batch
    ("mmd paper authors-step", DefenseConfig("mmd", mmd_schedule="paper", mmd_optimizer="sgd",
                                               reference_refresh="per_batch", **FORCED)),
    ("advreg", DefenseConfig("advreg")),
    ("relaxloss", DefenseConfig("relaxloss")),
    ("dp-sgd auto (default)", DefenseConfig("dp-sgd", noise_multiplier=1.0)),
    ("dp-sgd fast", DefenseConfig("dp-sgd", noise_multiplier=1.0, dp_path="fast")),
    ("dp-sgd vectorized", DefenseConfig("dp-sgd", noise_multiplier=1.0, dp_path="vectorized")),
    ("dp-sgd microbatched", DefenseConfig("dp-sgd", noise_multiplier=1.0, dp_path="microbatched")),
]
WORKLOADS = {
    "location30": {"model": "mlp", "target_size": 1500},
    "cifar10": {"model": "cnn", "target_size": 5000},
}


class EpochTimer(keras.callbacks.Callback):
    """Wall time from each epoch's start to the next one's (so later callbacks' work counts)."""

    def __init__(self):
        super().__init__()
        self.starts: list[float] = []
        self.end = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()

    def per_epoch(self) -> float:
        """Median over the epochs but the first (tracing) and the last (no MMD pass by design)."""
        marks = [*self.starts, self.end]
        durations = [b - a for a, b in zip(marks, marks[1:], strict=False)]
        return statistics.median(durations[1:-1])


def time_configuration(data, split, workload, defense, epochs: int) -> float:
    config = TrainConfig(workload["model"], epochs=epochs, batch_size=64, seed=0)
    plan = plan_training(data, split, config, defense)
    timer = EpochTimer()
    y = data.y[split.members]
    if plan.one_hot_labels:
        y = keras.utils.to_categorical(y, data.num_classes)
    callbacks = [timer]
    if plan.validate_on_reference:  # early stopping's validation is part of its cost
        plan.trainable.fit(data.x[split.members], y, batch_size=64, epochs=epochs, verbose=0,
                           callbacks=callbacks + plan.callbacks,
                           validation_data=(data.x[split.reference], data.y[split.reference]))
    else:
        plan.trainable.fit(data.x[split.members], y, batch_size=64, epochs=epochs, verbose=0,
                           callbacks=callbacks)
    return timer.per_epoch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("TFMI_DATA_DIR", "../shared/data"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--only", choices=sorted(WORKLOADS), default=None)
    parser.add_argument("--configs", default=None, help="comma-separated names to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated names to leave out")
    parser.add_argument("--reference-size", type=int, default=None,
                        help="reference records for the MMD defenses [default: the target size]")
    args = parser.parse_args()
    wanted = set(args.configs.split(",")) if args.configs else None
    skipped = set(filter(None, args.skip.split(",")))
    for name, workload in WORKLOADS.items():
        if args.only and name != args.only:
            continue
        data = load_dataset(name, args.data_dir)
        reference_size = args.reference_size or workload["target_size"]
        split = membership_split(data.y, workload["target_size"], reference_size, seed=0)
        print(f"\n{name}: {workload['model']}, {workload['target_size']} members, "
              f"{reference_size} reference records, batch 64, "
              f"{args.epochs} epochs (first and last dropped)", flush=True)
        print(f"{'defense':<24}{'s/epoch':>10}{'x plain':>10}", flush=True)
        baseline = None
        for label, defense in CONFIGURATIONS:
            if (wanted and label not in wanted and label != "none") or label in skipped:
                continue
            try:
                seconds = time_configuration(data, split, workload, defense, args.epochs)
            except Exception as exc:  # a path that does not support this model: say so, go on
                print(f"{label:<24}{'failed':>10}  {type(exc).__name__}: {str(exc)[:80]}", flush=True)
                continue
            baseline = baseline or seconds
            print(f"{label:<24}{seconds:>10.3f}{seconds / baseline:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
