"""``tfmi benchmark``: every defense against every attack, over seeds, resumable cell by cell."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from cli.options import data_dir_option, defense_parameter_options, defense_parameters
from tfmi.training_config import TRAIN_DEFAULTS

DEFAULT_DEFENSES = "none,mmd-mixup,dp-sgd"
DEFAULT_OUT = Path("tfmi-benchmarks")


@click.command()
@click.option("--dataset", default="digits", show_default=True,
              help="Dataset name (see `tfmi datasets`) or path to a .npz/.csv file.")
@data_dir_option
@click.option("--label-column", default="label", show_default=True,
              help="Label column of a .csv dataset.")
@click.option("--model", "model_name", default=None,
              help="mlp, cnn, alexnet or resnet20 [default: the dataset's usual model].")
@click.option("--defenses", default=DEFAULT_DEFENSES, show_default=True,
              help="Comma list of defenses (see `tfmi train --help`); their parameters are the "
                   "options below.")
@click.option("--attacks", default="all", show_default=True,
              help="Comma list of attacks or groups: all, threshold, learned, lira, or names such as "
                   "loss,lira_online.")
@click.option("--shadows", "num_shadows", type=int, default=8, show_default=True,
              help="Shadow models per cell, trained like the target (0: oracle threshold attacks only).")
@click.option("--seeds", type=int, default=1, show_default=True,
              help="Seeds 0..N-1; each draws its own split and initialization.")
@click.option("--epochs", type=int, default=TRAIN_DEFAULTS["epochs"], show_default=True)
@click.option("--batch-size", type=int, default=TRAIN_DEFAULTS["batch_size"], show_default=True)
@click.option("--lr", "learning_rate", type=float, default=TRAIN_DEFAULTS["learning_rate"],
              show_default=True,
              help="Learning rate.")
@click.option("--target-size", type=int, default=None,
              help="Members (and as many non-members) [default: per dataset].")
@click.option("--reference-size", type=int, default=None,
              help="Held-out reference records for MMD [default: min(target size, half the rest)].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help=f"Output directory [default: {DEFAULT_OUT}/<dataset>-<model>]. Finished cells are "
                   "cached there: re-running the same command continues where it stopped.")
@click.option("--force", is_flag=True,
              help="Discard results of a different benchmark in --out (only what tfmi wrote there).")
@defense_parameter_options
def benchmark(dataset, data_dir, label_column, model_name, defenses, attacks, num_shadows, seeds, epochs,
              batch_size, learning_rate, target_size, reference_size, out, force, **defense_values) -> None:
    """Compare defenses against membership-inference attacks: one row per defense.

    For each defense and seed: train the target on the split's members, train the shadow models the
    same way on random halves of the members and non-members, run the attacks, and cache the cell.
    Prints the table and writes results.json, results.md, privacy_utility.png and one ROC plot per
    defense into --out. With no options it runs the embedded digits data in a few minutes.
    """
    from tfmi.attacks.suite import parse_attacks
    from tfmi.benchmark import BenchmarkSpec, CellStore, data_fingerprint
    from tfmi.data import load_dataset, membership_split
    from tfmi.defenses.config import DefenseConfig
    from tfmi.errors import TfmiError
    from tfmi.models import check_model_name
    from tfmi.safe_write import check_output_dir, output_lock
    from tfmi.training import TrainConfig, check_batch_size

    # every option is checked before the data is read, and all of them before --out is touched
    if seeds < 1:
        raise TfmiError(f"--seeds must be at least 1, got {seeds}")
    parameters = defense_parameters(defense_values)
    defense_configs = tuple(DefenseConfig(name.strip(), **parameters)
                            for name in defenses.split(",") if name.strip())
    chosen_attacks = parse_attacks(attacks)
    TrainConfig(model_name or "mlp", epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                seed=seeds - 1)
    if out is not None:
        check_output_dir(out, "benchmark", force=force, reuse=True)
    data = load_dataset(dataset, data_dir, label_column=label_column)
    model_name = check_model_name(model_name or data.default_model)
    spec = BenchmarkSpec(
        dataset=data.name, data_fingerprint=data_fingerprint(data),
        train=TrainConfig(model_name, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate),
        defenses=defense_configs, seeds=tuple(range(seeds)), attacks=chosen_attacks,
        num_shadows=num_shadows, target_size=data.default_target_size if target_size is None else target_size,
        reference_size=reference_size,
    )
    for seed in spec.seeds:  # the split's own checks (sizes), for every seed, before any training
        membership_split(data.y, spec.target_size, spec.reference_size, seed=seed)
    check_batch_size(batch_size, spec.target_size)
    out = check_output_dir(out or DEFAULT_OUT / f"{data.name}-{model_name}", "benchmark", force=force,
                           reuse=True)
    with output_lock(out):
        store = CellStore(out)
        store.open(spec, force=force)
        cells = spec.cells()
        records = {c.key(): store.load(c) for c in cells}
        todo = [c for c in cells if records[c.key()] is None]
        names = ", ".join(d.name for d in defense_configs)
        click.echo(f"benchmark {data.name} ({len(data)} records), {model_name}, {epochs} epochs; defenses "
                   f"{names}; {seeds} seed(s); {num_shadows} shadows per cell")
        click.echo(f"cells     {len(cells)} ({len(cells) - len(todo)} cached in {out}, {len(todo)} to run)")
        if todo:
            _run_cells(data, todo, store, records, num_shadows)
        _finish(spec, [records[c.key()] for c in cells], store)


def _run_cells(data, todo, store, records, num_shadows) -> None:
    import tensorflow as tf

    from tfmi.benchmark import run_cell

    tf.config.experimental.enable_op_determinism()
    units_per_cell = num_shadows + 1
    finished = 0
    try:
        with click.progressbar(length=len(todo) * units_per_cell, label="training and attacking",
                               file=sys.stderr, show_pos=True,
                               item_show_func=lambda c: c and f"{c.defense.name} seed {c.seed}") as bar:
            for cell in todo:
                bar.update(0, cell)
                done_shadows = [0]

                def shadow_progress(done, bar=bar, done_shadows=done_shadows):
                    bar.update(done - done_shadows[0])
                    done_shadows[0] = done

                record = run_cell(data, cell, shadow_progress=shadow_progress)
                store.save(cell, record)
                records[cell.key()] = record
                finished += 1
                bar.update(units_per_cell - done_shadows[0])
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: {finished} more cell(s) saved in {store.out}; run the same command "
                   "again to continue", err=True)
        raise click.exceptions.Exit(130) from None


def _finish(spec, records, store) -> None:
    from tfmi.attacks.suite import AttackReport
    from tfmi.benchmark import (
        ATTACK_HEADERS,
        SUMMARY_HEADERS,
        attack_table_rows,
        summarize,
        summary_table_rows,
    )
    from tfmi.environment import library_versions
    from tfmi.plots import PrivacyUtilityPoint, plot_privacy_utility, plot_roc
    from tfmi.report import format_table
    from tfmi.safe_write import write_text_atomic

    out = store.out
    rows = summarize(records)
    summary = summary_table_rows(rows)
    attack_rows = attack_table_rows(rows)
    click.echo("")
    click.echo(format_table(SUMMARY_HEADERS, summary))

    points = []
    for row in rows:
        best = row.best_attack()
        if best is not None and row.test_accuracy.mean is not None:
            points.append(PrivacyUtilityPoint(row.defense, best.advantage.mean, row.test_accuracy.mean,
                                              best.advantage.spread, row.test_accuracy.spread))
    plots = {}
    if points:
        plots["privacy_utility"] = plot_privacy_utility(
            points, out / "privacy_utility.png",
            title=f"{spec.dataset}: test accuracy vs best realistic attack").name
    for row in rows:
        first = next(r for r in records if r["defense"] == row.defense)
        report = AttackReport.from_dict(first["report"])
        results = [r for r in report.results if r.threshold_source != "oracle"]
        if results:
            plots[f"roc_{row.defense}"] = plot_roc(
                results, out / f"roc_{row.defense}.png",
                title=f"{spec.dataset}, {row.defense}, seed {first['seed']}").name

    command = shlex.join(["tfmi", *sys.argv[1:]]) if Path(sys.argv[0]).name == "tfmi" else None
    meta = {
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": spec.to_dict(),
        "versions": library_versions(),
        "seconds_per_cell": {r["key"]: round(r["seconds"], 1) for r in records},
    }
    results = {
        "meta": meta,
        "summary": [dict(zip(SUMMARY_HEADERS, r, strict=True)) for r in summary],
        "attacks": [dict(zip(ATTACK_HEADERS, r, strict=True)) for r in attack_rows],
        "cells": records,
    }
    write_text_atomic(out / "results.json", json.dumps(results, indent=1))
    write_text_atomic(out / "results.md", _markdown(spec, meta, summary, attack_rows, plots))
    store.record_written(["results.json", "results.md", *plots.values()])
    click.echo(f"\nsaved     {out}/ (results.md, results.json, {', '.join(plots.values())})")


def _markdown(spec, meta, summary, attack_rows, plots) -> str:
    from tfmi.benchmark import ATTACK_HEADERS, SUMMARY_HEADERS
    from tfmi.report import markdown_table

    train = spec.train
    lines = [
        f"# Membership-inference benchmark: {spec.dataset}",
        "",
        f"Command: `{meta['command']}`" if meta["command"] else "",
        "",
        f"Model {train.model}, {train.epochs} epochs, batch {train.batch_size}, {train.optimizer} lr "
        f"{train.learning_rate:g}; {spec.target_size} members and as many non-members per seed; seeds "
        f"{', '.join(map(str, spec.seeds))}; {spec.num_shadows} shadow models per cell, trained like the "
        "target (same model, training and defense) on random halves of its members and non-members.",
        "",
        "Values are mean ± sample standard deviation over seeds. *Best attack* is the realistic attack "
        "(thresholds calibrated on shadow models, learned attack models, LiRA or RMIA) with the highest "
        "*max adv.*: max TPR - FPR over thresholds, a threshold-free summary whose threshold is picked "
        "with the target's labels. *Achieved adv.* is TPR - FPR at the attack's own threshold or decision "
        "rule: what the attack really gets. *eps LB* is the largest epsilon any realistic attack proves "
        "(95% Clopper-Pearson, at the row's DP delta, else 1e-5): a DP-SGD row's proven *epsilon* must "
        "not be below it. Rows marked *(oracle)* choose their threshold on the target's own membership "
        "labels: an upper bound, not an attack. TPR at a fixed FPR is *n/a* when that FPR is below "
        "1 / (number of non-members).",
        "",
        markdown_table(SUMMARY_HEADERS, summary),
        "",
    ]
    if "privacy_utility" in plots:
        lines += [f"![privacy/utility]({plots['privacy_utility']})", ""]
    lines += ["## Every attack", "", markdown_table(ATTACK_HEADERS, attack_rows), ""]
    for name, file in plots.items():
        if name.startswith("roc_"):
            lines += [f"![{name}]({file})", ""]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines += [f"Produced {meta['created']} with {versions}.", ""]
    return "\n".join(lines)
