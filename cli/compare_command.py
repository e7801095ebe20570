"""``tfmi compare``: the frontiers of several finished benchmarks (one per training recipe) side by side."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from tfmi.errors import TfmiError

OVERALL_HEADERS = ("setting on the overall frontier", "test acc", "TPR@1%FPR", "its attack", "max adv.",
                   "its attack")


def _parse_runs(values: tuple[str, ...]) -> dict[str, Path]:
    runs: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise TfmiError(f"{value!r} is not NAME=FOLDER: name each benchmark, e.g. "
                            "defaults=tfmi-benchmarks/location30-mlp")
        if name in runs:
            raise TfmiError(f"run name {name!r} is given twice: give each benchmark its own name")
        runs[name] = Path(path)
    return runs


@click.command()
@click.argument("runs", nargs=-1, metavar="NAME=FOLDER...")
@click.option("--rows", default=None, metavar="DEFENSE@NAME,...",
              help="Comma list of the defenses to keep, each DEFENSE@NAME (one run's) or DEFENSE (every "
                   "run's), e.g. none@paper,mmd@paper,dp-sgd [default: all].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write comparison.md, comparison.json and frontier.png into this new folder.")
@click.option("--force", is_flag=True, help="Replace an earlier `tfmi compare` output in --out.")
def compare(runs, rows, out, force) -> None:
    """Compare the privacy/utility frontiers of finished benchmarks of the same data.

    Each NAME=FOLDER is a folder `tfmi benchmark` finished in (or its results.json); one benchmark has
    one training recipe, so this is how each defense is judged at its own best recipe, e.g.

        tfmi compare defaults=tfmi-benchmarks/location30-mlp paper=tfmi-benchmarks/location30-mlp3

    Defenses are named DEFENSE@NAME. Prints each one's frontier summary, with the privacy axis shared
    by all runs so the areas compare, and the overall frontier: the settings of any defense and run
    that nothing else beats on both test accuracy and the best attack's TPR at 1 % FPR. The runs must
    have measured privacy the same way: same dataset, members, attacks and shadow count.
    """
    from tfmi.frontier_comparison import compare_frontiers
    from tfmi.report import format_table
    from tfmi.safe_write import check_output_dir

    parsed = _parse_runs(runs)
    row_list = [r.strip() for r in rows.split(",") if r.strip()] if rows is not None else None
    if row_list is not None and not row_list:
        raise TfmiError("--rows is empty: list defenses such as mmd@paper,dp-sgd, or drop --rows")
    if out is not None:
        check_output_dir(out, "comparison", force=force)
    comparison = compare_frontiers(parsed, row_list)
    tables = _tables(comparison)
    for title, headers, table in tables:
        click.echo(f"\n{title}")
        click.echo(format_table(headers, table))
    if out is not None:
        _write(comparison, tables, out, force)
        click.echo(f"\nsaved     {out}/ (comparison.md, comparison.json, frontier.png)")


def _tables(comparison):
    from tfmi.frontier import (
        FRONTIER_HEADERS,
        METRICS,
        equal_utility_headers,
        equal_utility_rows,
        frontier_table_rows,
        with_spread,
    )

    runs = [[r.name, r.recipe(), str(r.path)] for r in comparison.runs]

    def listed(front):
        return [[p.label, with_spread(p.test_accuracy, p.test_accuracy_spread),
                 with_spread(p.tpr_at_1pct, p.tpr_at_1pct_spread), p.tpr_at_1pct_attack or "-",
                 with_spread(p.advantage, p.advantage_spread), p.advantage_attack or "-"] for p in front]

    return [("runs", ("run", "recipe", "results"), runs),
            ("frontiers (privacy axis shared by all runs)", FRONTIER_HEADERS,
             frontier_table_rows(comparison.frontiers)),
            ("overall frontier by TPR@1%FPR (every other setting is beaten on both axes by one of these)",
             OVERALL_HEADERS, listed(comparison.overall_front)),
            ("overall frontier by max advantage", OVERALL_HEADERS,
             listed(comparison.overall_front_advantage)),
            *((f"lowest {METRICS[metric]} at equal test accuracy (each defense's least leaky setting at "
               "least that accurate)", equal_utility_headers(comparison.frontiers),
               equal_utility_rows(comparison.frontiers, metric)) for metric in METRICS)]


def _write(comparison, tables, out: Path, force: bool) -> None:
    from tfmi.environment import library_versions
    from tfmi.plots import plot_frontier
    from tfmi.report import markdown_table
    from tfmi.safe_write import atomic_directory, write_text_atomic

    command = shlex.join(["tfmi", *sys.argv[1:]]) if Path(sys.argv[0]).name == "tfmi" else None
    meta = {"command": command, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": library_versions()}
    dataset = comparison.runs[0].spec.get("dataset")
    lines = [f"# Privacy-utility frontiers compared: {dataset}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += ["Each defense is named DEFENSE@RUN. Values are the benchmarks' means over their seeds; the "
              "privacy metric is the highest TPR at 1 % FPR (or max advantage) of any realistic attack. "
              "The frontier areas share one privacy axis, from 0 to the largest TPR@1%FPR of all runs, so "
              "they compare across runs (they differ from each benchmark's own areas).", ""]
    for title, headers, table in tables:
        lines += [f"## {title[0].upper()}{title[1:]}", "", markdown_table(headers, table), ""]
    lines += ["![frontier](frontier.png)", "", f"Produced {meta['created']} with "
              + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", ""]
    with atomic_directory(out, "comparison", force=force) as staging:
        plot_frontier(comparison.points, staging / "frontier.png",
                      title=f"{dataset}: privacy-utility frontiers of {len(comparison.runs)} benchmarks")
        write_text_atomic(staging / "comparison.json",
                          json.dumps({"meta": meta, **comparison.to_dict()}, indent=1))
        write_text_atomic(staging / "comparison.md", "\n".join(lines))
