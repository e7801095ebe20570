"""``tfmi benchmark``: every defense against every attack, over seeds, resumable cell by cell."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from cli.options import (
    DEFENSE_OPTIONS,
    dataset_options,
    defense_parameter_options,
    defense_parameters,
    executor_from_options,
    executor_options,
    recipe_options,
)
from tfmi.attacks.names import ATTACK_LIST
from tfmi.defenses.config import DEFAULT_DEFENSES

DEFAULT_OUT = Path("tfmi-benchmarks")


@click.command()
@dataset_options
@click.option("--defenses", default=None,
              help="Comma list of defenses (see `tfmi train --help`); their parameters are the options "
                   f"below [default: {','.join(DEFAULT_DEFENSES['images'])} on images, "
                   f"{','.join(DEFAULT_DEFENSES['tabular'])} on tabular data, where the authors used no "
                   "mixup and it costs accuracy].")
@click.option("--sweep", "sweeps", multiple=True, metavar="DEFENSE:PARAM=V1,V2,...",
              help="One row per value of a defense parameter (an option name below, e.g. "
                   "mmd-mixup:mmd-weight=0.5,2,6.5); replaces the defense's row, or adds the defense if "
                   "--defenses lacks it. Repeatable: sweeps of one defense combine as a grid. Each value "
                   "costs a cell per seed (target and shadows); frontier.png and the frontier table "
                   "compare the defenses over their settings.")
@click.option("--attacks", default="all", show_default=True,
              help=f"Comma list of attacks or groups ({ATTACK_LIST}), or names such as loss,lira_online.")
@click.option("--shadows", "num_shadows", type=int, default=8, show_default=True,
              help="Shadow models per cell, trained like the target (0: oracle threshold attacks only).")
@click.option("--shadows-per-task", type=click.IntRange(min=1), default=None,
              help="Train each cell's shadows in chunks of this many; with --executor ray each chunk is "
                   "a Ray task of its own [default: all in one piece]. Recorded in the cells: batched "
                   "(undefended mlp/cnn) shadows depend on the chunking.")
@click.option("--seeds", type=int, default=1, show_default=True,
              help="Seeds 0..N-1; each draws its own split and initialization.")
@recipe_options
@click.option("--target-size", type=int, default=None,
              help="Members (and as many non-members) [default: per dataset].")
@click.option("--reference-size", type=int, default=None,
              help="Held-out reference records for MMD [default: min(target size, half the rest)].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help=f"Output directory [default: {DEFAULT_OUT}/<dataset>-<model>]. Finished cells are "
                   "cached there: re-running the same command continues where it stopped.")
@click.option("--force", is_flag=True,
              help="Discard results of a different benchmark in --out (only what tfmi wrote there).")
@executor_options
@defense_parameter_options
def benchmark(dataset, data_dir, label_column, model_name, defenses, sweeps, attacks, num_shadows,
              shadows_per_task, seeds,
              epochs, batch_size, learning_rate, preset, optimizer, momentum, weight_decay, lr_milestones,
              target_size, reference_size, out, force, **defense_values) -> None:
    """Compare defenses against membership-inference attacks: one row per defense setting.

    For each defense setting and seed: train the target on the split's members, train the shadow
    models the same way (same defense setting) on random halves of the members and non-members, run
    the attacks, and cache the cell. Prints the tables and writes results.json, results.md,
    privacy_utility.png, frontier.png and one ROC plot per row into --out. With no options it runs
    the embedded digits data in a few minutes; every --sweep value costs one such row. With
    --preset paper every row trains with the authors' recipe for the dataset, and the MMD rows with
    their lambda and MMD-step settings (default defenses: none, theirs, dp-sgd). The cells run here,
    as Ray tasks (--executor ray), or split over a job array (--shard I/N).
    """
    started = time.perf_counter()
    from tfmi.attacks.suite import parse_attacks
    from tfmi.benchmark import BenchmarkSpec, CellStore, data_fingerprint, expand_sweeps, parse_sweep
    from tfmi.data import load_dataset, membership_split
    from tfmi.defenses.config import DefenseConfig, default_defenses
    from tfmi.errors import TfmiError
    from tfmi.models import check_model_name
    from tfmi.safe_write import check_output_dir, output_lock
    from tfmi.training import TrainConfig, check_batch_size

    # every option is checked before the data is read, and all of them before --out is touched
    if seeds < 1:
        raise TfmiError(f"--seeds must be at least 1, got {seeds}")
    executor_config, shard = executor_from_options(defense_values)
    if shard is not None and force:
        raise TfmiError("--force with --shard would discard the other shards' cells: start the benchmark "
                        "afresh with one run of --force (or a new --out), then run the shards")
    if executor_config.name == "ray":
        from tfmi.executors import check_ray_installed

        check_ray_installed()
    from cli.options import given, resolve_recipe

    recipe = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
              "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay,
              "lr_milestones": lr_milestones}
    model_name, settings, chosen_preset = resolve_recipe(preset, dataset, model_name, recipe)
    parameters = defense_parameters(defense_values)
    if chosen_preset is not None:  # its MMD settings; fields other defenses do not read are ignored
        parameters = {k: v for k, v in chosen_preset.defense.items() if k != "name"} | parameters
        if not given("defenses"):
            defenses = ",".join(dict.fromkeys(["none", chosen_preset.defense["name"], "dp-sgd"]))
        if target_size is None and chosen_preset.target_size is not None:
            target_size = chosen_preset.target_size
    aliases = {flag.lstrip("-"): field for flag, field, _, _ in DEFENSE_OPTIONS}
    parsed_sweeps = [parse_sweep(text, aliases) for text in sweeps]

    def defense_settings(listed: str):
        names = [name.strip() for name in listed.split(",") if name.strip()]
        names += [n for n in dict.fromkeys(s.defense for s in parsed_sweeps) if n not in names]
        return expand_sweeps([DefenseConfig(name, **parameters) for name in names], parsed_sweeps)

    # without --defenses the rows follow the data's kind, known once it is read: check both now
    candidates = [defenses] if defenses is not None else [",".join(d) for d in DEFAULT_DEFENSES.values()]
    defense_configs = [defense_settings(listed) for listed in candidates][0]
    chosen_attacks = parse_attacks(attacks)
    TrainConfig(model_name or "mlp", seed=seeds - 1, **settings)
    if out is not None:
        check_output_dir(out, "benchmark", force=force, reuse=True)
    data = load_dataset(dataset, data_dir, label_column=label_column)
    model_name = check_model_name(model_name or data.default_model)
    if defenses is None:
        defense_configs = defense_settings(",".join(default_defenses(data.input_shape)))
    spec = BenchmarkSpec(
        dataset=data.name, data_fingerprint=data_fingerprint(data),
        train=TrainConfig(model_name, **settings),
        defenses=defense_configs, seeds=tuple(range(seeds)), attacks=chosen_attacks,
        num_shadows=num_shadows, target_size=data.default_target_size if target_size is None else target_size,
        reference_size=reference_size, shadows_per_task=shadows_per_task,
    )
    for seed in spec.seeds:  # the split's own checks (sizes), for every seed, before any training
        membership_split(data.y, spec.target_size, spec.reference_size, seed=seed)
    check_batch_size(spec.train.batch_size, spec.target_size)
    epochs = spec.train.epochs
    out = check_output_dir(out or DEFAULT_OUT / f"{data.name}-{model_name}", "benchmark", force=force,
                           reuse=True)
    with output_lock(out, shared=shard is not None):
        store = CellStore(out)
        store.open(spec, force=force)
        cells = spec.cells()
        records = {c.key(): store.load(c) for c in cells}
        mine = cells if shard is None else shard.select(cells)
        todo = [c for c in mine if records[c.key()] is None]
        click.echo(f"benchmark {data.name} ({len(data)} records), {model_name}, {epochs} epochs; defenses "
                   f"{', '.join(spec.labels)}; {seeds} seed(s); {num_shadows} shadows per cell")
        of_shard = "" if shard is None else f", shard {shard.text()} takes {len(mine)}"
        cached = sum(r is not None for r in records.values())
        click.echo(f"cells     {len(cells)} ({cached} cached in {out}{of_shard}, {len(todo)} to run)")
        if todo:
            _run_cells(data, todo, store, records, num_shadows, executor_config)
        if shard is not None:
            left = sum(records[c.key()] is None for c in cells)
            then = ("run the command without --shard to assemble the results" if not left
                    else f"{left} left for the other shards")
            click.echo(f"shard {shard.text()} done: {len(cells) - left} of {len(cells)} cells cached in "
                       f"{out}; {then}")
            return
        for cell in cells:  # the row's label follows the spec (records cached before labels had none)
            records[cell.key()]["label"] = cell.label
        _finish(spec, [records[c.key()] for c in cells], store, started, ran=len(todo))


def _run_cells(data, todo, store, records, num_shadows, executor_config) -> None:
    """Run the cells on the chosen executor, saving each as it finishes; the progress bar counts cells
    and, when they run in this process, their shadows."""
    from tfmi.benchmark import run_cell_task
    from tfmi.executors import make_executor

    local = executor_config.name == "local"
    units_per_cell = num_shadows + 1 if local else 1
    finished = [0]
    executor = make_executor(executor_config)
    try:
        with click.progressbar(length=len(todo) * units_per_cell, label="training and attacking",
                               file=sys.stderr, show_pos=True,
                               item_show_func=lambda c: c and f"{c.label} seed {c.seed}") as bar:
            shown = [0]  # units of the cell in progress already shown (its shadows, locally)

            def save(cell, record):
                store.save(cell, record)
                records[cell.key()] = record
                finished[0] += 1
                bar.update(units_per_cell - shown[0], cell)
                shown[0] = 0

            def shadow_progress(done):
                bar.update(done - shown[0])
                shown[0] = done

            def cell_with_progress(data, cell):  # in this process: the bar follows the shadows
                bar.update(0, cell)
                return run_cell_task(data, cell, shadow_progress=shadow_progress)

            executor.map(cell_with_progress if local else run_cell_task, data, todo, on_done=save,
                         describe=lambda c: f"cell {c.label} seed {c.seed}")
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: {finished[0]} more cell(s) saved in {store.out}; run the same command "
                   "again to continue", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        executor.close()


def _finish(spec, records, store, started, ran) -> None:
    from tfmi.attacks.suite import AttackReport
    from tfmi.benchmark import (
        ATTACK_HEADERS,
        SUMMARY_HEADERS,
        attack_table_rows,
        summarize,
        summary_table_rows,
    )
    from tfmi.environment import library_versions
    from tfmi.frontier import (
        FRONTIER_HEADERS,
        METRICS,
        equal_utility_headers,
        equal_utility_rows,
        frontier_point_rows,
        frontier_points,
        frontier_table_rows,
        summarize_frontiers,
    )
    from tfmi.plots import PrivacyUtilityPoint, plot_frontier, plot_privacy_utility, plot_roc
    from tfmi.report import format_table
    from tfmi.safe_write import write_text_atomic

    out = store.out
    rows = summarize(records)
    summary = summary_table_rows(rows)
    attack_rows = attack_table_rows(rows)
    click.echo("")
    click.echo(format_table(SUMMARY_HEADERS, summary))
    fpoints = frontier_points(rows)
    frontiers = summarize_frontiers(fpoints)
    frontier_rows = frontier_table_rows(frontiers)
    equal_headers = equal_utility_headers(frontiers)
    equal_rows = {metric: equal_utility_rows(frontiers, metric) for metric in METRICS}
    if frontier_rows:
        click.echo("")
        click.echo(format_table(FRONTIER_HEADERS, frontier_rows))
    if equal_rows["tpr_at_1pct"] and len(frontiers) > 1:
        click.echo(f"\nlowest {METRICS['tpr_at_1pct']} at equal test accuracy")
        click.echo(format_table(equal_headers, equal_rows["tpr_at_1pct"]))

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
    if any(p.tpr_at_1pct is not None or p.advantage is not None for p in fpoints):
        plots["frontier"] = plot_frontier(
            fpoints, out / "frontier.png",
            title=f"{spec.dataset}: privacy-utility frontiers (mean over seeds)").name
    for row, name in zip(rows, _file_names(row.defense for row in rows), strict=True):
        first = next(r for r in records if r["label"] == row.defense)
        report = AttackReport.from_dict(first["report"])
        results = [r for r in report.results if r.threshold_source != "oracle"]
        if results:
            plots[f"roc_{name}"] = plot_roc(
                results, out / f"roc_{name}.png",
                title=f"{spec.dataset}, {row.defense}, seed {first['seed']}").name

    command = shlex.join(["tfmi", *sys.argv[1:]]) if Path(sys.argv[0]).name == "tfmi" else None
    meta = {
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": spec.to_dict(),
        "versions": library_versions(),
        "seconds_per_cell": {r["key"]: round(r["seconds"], 1) for r in records},
        # the benchmark's cost: every cell's training and attack time (cached cells included), and
        # this command's own wall time
        "cell_seconds_total": round(sum(r["seconds"] for r in records), 1),
        "cells_run": ran,
        "elapsed_seconds": round(time.perf_counter() - started, 1),
    }
    results = {
        "meta": meta,
        "summary": [dict(zip(SUMMARY_HEADERS, r, strict=True)) for r in summary],
        "attacks": [dict(zip(ATTACK_HEADERS, r, strict=True)) for r in attack_rows],
        "frontier": {
            "table": [dict(zip(FRONTIER_HEADERS, r, strict=True)) for r in frontier_rows],
            "defenses": [f.to_dict() for f in frontiers],
            "points": [dataclasses.asdict(p) for p in fpoints],
            "equal_utility": {metric: [dict(zip(equal_headers, r, strict=True)) for r in rows]
                              for metric, rows in equal_rows.items()},
        },
        "cells": records,
    }
    write_text_atomic(out / "results.json", json.dumps(results, indent=1))
    write_text_atomic(out / "results.md", _markdown(spec, meta, summary, attack_rows, frontier_rows,
                                                       frontier_point_rows(frontiers),
                                                       (equal_headers, equal_rows), plots))
    store.record_written(["results.json", "results.md", *plots.values()])
    click.echo(f"\ntime      {_time_line(meta)}")
    click.echo(f"saved     {out}/ (results.md, results.json, {', '.join(plots.values())})")


def _time_line(meta) -> str:
    cells = len(meta["seconds_per_cell"])
    return (f"{_duration(meta['cell_seconds_total'])} of training and attacks over {cells} cells "
            f"({meta['cells_run']} run now, {cells - meta['cells_run']} cached); this run "
            f"{_duration(meta['elapsed_seconds'])} elapsed")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def _file_names(labels) -> list[str]:
    """File-name parts for row labels: ``l2 (l2=0.01)`` -> ``l2_l2-0.01``, made unique if they clash."""
    names: list[str] = []
    for label in labels:
        base = re.sub(r"[^A-Za-z0-9.+-]+", "_", label.replace("=", "-")).strip("_") or "row"
        name, i = base, 2
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.append(name)
    return names


def _markdown(spec, meta, summary, attack_rows, frontier_rows, point_rows, equal_utility, plots) -> str:
    from tfmi.benchmark import ATTACK_HEADERS, SUMMARY_HEADERS
    from tfmi.frontier import ACCURACY_COSTS, FRONTIER_HEADERS, FRONTIER_POINT_HEADERS, METRICS
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
    if frontier_rows:
        lines += [
            "## Privacy-utility frontiers", "",
            "Per defense, over its settings (rows; means over seeds). A setting is on the frontier when no "
            "other setting of the defense is at least as accurate with at most the same best-attack "
            "TPR@1%FPR (the highest TPR at 1% FPR of any realistic attack), and strictly better in one. "
            "*Best test acc @ TPR@1% <= x* is the best accuracy among settings that keep that TPR at most "
            "x (- if none does). *Frontier area* is the area under the step function \"best test "
            "accuracy among settings with metric <= x\" for x from 0 to the largest value of the metric "
            "in this benchmark, divided by that value: the mean best accuracy over privacy budgets below "
            "the worst leakage measured, comparable within this benchmark only (by TPR@1%FPR, and by max "
            "advantage). Settings at that worst value add nothing: the undefended model scores 0.",
            "",
            markdown_table(FRONTIER_HEADERS, frontier_rows),
            "",
            "Every setting's coordinates, as `frontier.png` plots them: its mean test accuracy, and for each "
            "privacy axis the realistic attack with the highest mean over the seeds (± that attack's "
            "standard deviation), which need not be the *best attack* above (chosen by max adv.).",
            "",
            markdown_table(FRONTIER_POINT_HEADERS, point_rows),
            "",
        ]
        equal_headers, equal_rows = equal_utility
        if equal_rows["tpr_at_1pct"]:
            costs = ", ".join(f"{c:g}" for c in ACCURACY_COSTS)
            lines += [
                "### Privacy at equal test accuracy", "",
                "The same frontiers read the other way: for each test accuracy the undefended model "
                f"keeps, or loses by {costs}, each defense's lowest leakage among its settings at least "
                "that accurate (and the setting), means over seeds; - where no setting is that accurate.",
                "",
            ]
            for metric, rows in equal_rows.items():
                lines += [f"Lowest {METRICS[metric]}:", "", markdown_table(equal_headers, rows), ""]
        if "frontier" in plots:
            lines += [f"![frontier]({plots['frontier']})", ""]
    lines += ["## Every attack", "", markdown_table(ATTACK_HEADERS, attack_rows), ""]
    for name, file in plots.items():
        if name.startswith("roc_"):
            lines += [f"![{name}]({file})", ""]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines += [f"Time: {_time_line(meta)}.", "", f"Produced {meta['created']} with {versions}.", ""]
    return "\n".join(lines)
