"""Privacy/utility trade-off of every defense on one dataset, seed and split: train, test, gap.

    python benchmarks/defense_tradeoff.py --data-dir ../shared/data --out /tmp/tradeoff [--quick]

Trains the target (Location30 tanh MLP, 1,500 members, Adam 1e-3, batch 64, 30 epochs, seed 0 by
default) once per configuration with `tfmi.training.train_target`, the entry point `tfmi train`
uses, and writes ``results.json`` (appended as runs finish; a re-run skips finished ones),
``table.md`` and ``tradeoff.png`` (test accuracy against the generalization gap, which is the
membership advantage of the gap attack). Results are re-read on every run, so an interrupted
sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfmi.data import load_dataset, membership_split  # noqa: E402
from tfmi.defenses.config import DefenseConfig  # noqa: E402
from tfmi.training import TrainConfig, train_target  # noqa: E402


def grid(quick: bool) -> list[tuple[str, DefenseConfig]]:
    def sweep(name, field, values, **fixed):
        return [(f"{name}{'' if not fixed else ' ' + ' '.join(map(str, fixed.values()))} {field}={v}",
                 DefenseConfig(name, **{field: v}, **fixed)) for v in values]

    if quick:
        return [("none", DefenseConfig("none")),
                *sweep("mmd", "mmd_weight", [6.5], mmd_schedule="paper"),
                *sweep("dp-sgd", "noise_multiplier", [1.0])]
    return [
        ("none", DefenseConfig("none")),
        ("mixup alpha=1.0", DefenseConfig("mixup")),
        *sweep("mmd", "mmd_weight", [1, 6.5, 20, 50, 200, 500], mmd_schedule="paper"),
        *sweep("mmd-mixup", "mmd_weight", [1, 6.5, 20, 50, 200], mmd_schedule="paper"),
        *sweep("mmd", "mmd_weight", [1, 5, 8, 10, 20], mmd_schedule="joint"),
        *sweep("mmd-mixup", "mmd_weight", [5, 20, 50, 200], mmd_schedule="joint"),
        *sweep("dp-sgd", "noise_multiplier", [0.3, 0.5, 1.0, 2.0]),
        *sweep("l2", "l2", [1e-4, 1e-3, 1e-2]),
        *sweep("dropout", "dropout", [0.2, 0.5, 0.8]),
        *sweep("label-smoothing", "label_smoothing", [0.1, 0.3, 0.5]),
        *sweep("early-stopping", "patience", [1, 3, 5]),
        *sweep("advreg", "adv_weight", [0.5, 1.0, 3.0]),
        *sweep("relaxloss", "relax_alpha", [0.5, 1.0, 2.0]),
    ]


def family(label: str) -> str:
    return label.split(" ")[0] + (" " + label.split(" ")[1] if label.startswith("mmd") else "")


def write_table(results: list[dict], path: Path, header: str) -> None:
    lines = [header, "", "| configuration | train acc | test acc | gap | epsilon | s |",
             "|---|---|---|---|---|---|"]
    for r in results:
        eps = r["defense"].get("accounting", {}).get("epsilon")
        lines.append(f"| {r['label']} | {r['train_accuracy']:.3f} | {r['test_accuracy']:.3f} | "
                     f"{r['gap']:.3f} | {'' if eps is None else f'{eps:.3g}'} | {r['seconds']:.0f} |")
    path.write_text("\n".join(lines) + "\n")


def write_plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    families = sorted({family(r["label"]) for r in results})
    markers, colors = "osD^v<>pP*Xh", plt.get_cmap("tab20").colors
    for i, fam in enumerate(families):
        points = sorted((r for r in results if family(r["label"]) == fam), key=lambda r: r["gap"])
        ax.plot([r["gap"] for r in points], [r["test_accuracy"] for r in points], markers[i % 12],
                color=colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20],
                linestyle="-" if len(points) > 1 else "", label=fam, alpha=0.85)
    ax.set_xlabel("generalization gap (train - test accuracy) = gap-attack advantage")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("TFMI_DATA_DIR", "../shared/data"))
    parser.add_argument("--dataset", default="location30")
    parser.add_argument("--model", default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--target-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tradeoff"))
    parser.add_argument("--quick", action="store_true", help="three configurations only")
    parser.add_argument("--only", default=None, help="run configurations whose label starts with this")
    args = parser.parse_args()

    data = load_dataset(args.dataset, args.data_dir)
    split = membership_split(data.y, args.target_size or data.default_target_size, seed=args.seed)
    config = TrainConfig(args.model or data.default_model, epochs=args.epochs, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {r["label"] for r in results}
    for label, defense in grid(args.quick):
        if label in done or (args.only and not label.startswith(args.only)):
            continue
        started = time.perf_counter()
        trained = train_target(data, split, config, defense, verbose=0)
        record = {
            "label": label, "defense": trained.defense, "train_accuracy": trained.train_accuracy,
            "test_accuracy": trained.test_accuracy, "gap": trained.generalization_gap,
            "seconds": time.perf_counter() - started, "epochs_run": len(trained.history["loss"]),
        }
        results.append(record)
        partial = results_path.with_suffix(".part")
        partial.write_text(json.dumps(results, indent=1))
        partial.replace(results_path)
        print(f"{label:<36} train {record['train_accuracy']:.3f} test {record['test_accuracy']:.3f} "
              f"gap {record['gap']:.3f} ({record['seconds']:.0f} s)", flush=True)
    header = (f"{args.dataset}, {config.model}, {len(split.members)} members, {config.epochs} epochs, "
              f"batch {config.batch_size}, Adam {config.learning_rate:g}, seed {args.seed}")
    write_table(results, args.out / "table.md", header)
    write_plot(results, args.out / "tradeoff.png", header)
    print(f"wrote {args.out}/results.json, table.md, tradeoff.png")


if __name__ == "__main__":
    main()
