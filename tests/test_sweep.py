"""`tfmi benchmark --sweep`: parsing, expansion into labelled rows, Pareto frontiers, frontier.png, resume."""

import json
import math

import pytest
from click.testing import CliRunner

import tfmi.benchmark as benchmark_module
from cli.main import cli
from tfmi.benchmark import BenchmarkSpec, Sweep, expand_sweeps, parse_sweep, summarize, variant_labels
from tfmi.defenses.config import DefenseConfig
from tfmi.errors import TfmiError
from tfmi.frontier import (
    FRONTIER_HEADERS,
    FrontierPoint,
    best_accuracy_at,
    frontier_area,
    frontier_table_rows,
    pareto_front,
    summarize_frontiers,
)
from tfmi.plots import _frontier_figure, plot_frontier
from tfmi.safe_write import read_marker
from tfmi.training import TrainConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_SWEEP = ["benchmark", "--model", "mlp", "--epochs", "2", "--target-size", "100", "--shadows", "2",
              "--attacks", "gap,loss,lira_online", "--defenses", "none", "--sweep", "l2:l2=1e-4,1e-2",
              "--seeds", "1"]


def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


# ------------------------------------------------------------------------------- parsing, expansion


def test_parse_sweep_takes_option_or_field_names_and_the_fields_types():
    assert parse_sweep("mmd-mixup:mmd-weight=0.5,2,20") == parse_sweep("mmd-mixup:mmd_weight=0.5,2,20")
    assert parse_sweep("mmd-mixup:mmd-weight=0.5,2,20").values == (0.5, 2.0, 20.0)
    patience = parse_sweep("early-stopping:patience=2,5")
    assert patience.field == "patience" and patience.values == (2, 5)
    assert all(type(v) is int for v in patience.values)
    assert parse_sweep("mmd:mmd-schedule=paper,joint").values == ("paper", "joint")
    bandwidths = parse_sweep("mmd:mmd-bandwidth=0.5+2,1", aliases={"mmd-bandwidth": "mmd_bandwidths"})
    assert bandwidths == Sweep("mmd", "mmd_bandwidths", ((0.5, 2.0), (1.0,)))
    with pytest.raises(TfmiError, match="unknown parameter 'mmd-bandwidth'"):
        parse_sweep("mmd:mmd-bandwidth=1")  # only through the CLI's aliases


def test_expansion_replaces_the_listed_row_in_place_and_adds_unlisted_defenses_as_a_grid():
    listed = [DefenseConfig("none"), DefenseConfig("mmd-mixup", mmd_schedule="joint"), DefenseConfig("l2")]
    sweeps = [parse_sweep("mmd-mixup:mmd-weight=0.5,20"), parse_sweep("dp-sgd:noise-multiplier=0.5,1"),
              parse_sweep("dp-sgd:l2-norm-clip=1,2")]
    rows = expand_sweeps(listed, sweeps)
    assert rows == (
        DefenseConfig("none"),
        DefenseConfig("mmd-mixup", mmd_schedule="joint", mmd_weight=0.5),  # the listed row's other settings
        DefenseConfig("mmd-mixup", mmd_schedule="joint", mmd_weight=20.0),
        DefenseConfig("l2"),
        DefenseConfig("dp-sgd", noise_multiplier=0.5, l2_norm_clip=1.0),  # first sweep varies slowest
        DefenseConfig("dp-sgd", noise_multiplier=0.5, l2_norm_clip=2.0),
        DefenseConfig("dp-sgd", noise_multiplier=1.0, l2_norm_clip=1.0),
        DefenseConfig("dp-sgd", noise_multiplier=1.0, l2_norm_clip=2.0),
    )
    assert variant_labels(rows) == (
        "none", "mmd-mixup (mmd_weight=0.5)", "mmd-mixup (mmd_weight=20)", "l2",
        "dp-sgd (l2_norm_clip=1, noise_multiplier=0.5)", "dp-sgd (l2_norm_clip=2, noise_multiplier=0.5)",
        "dp-sgd (l2_norm_clip=1, noise_multiplier=1)", "dp-sgd (l2_norm_clip=2, noise_multiplier=1)",
    )
    assert expand_sweeps(listed, []) == tuple(listed)


def spec(defenses, **changes):
    base = {"dataset": "digits", "data_fingerprint": "f", "train": TrainConfig("mlp", epochs=2),
            "defenses": tuple(defenses), "seeds": (0, 1), "attacks": ("gap", "loss"), "num_shadows": 0,
            "target_size": 200}
    return BenchmarkSpec(**{**base, **changes})


def test_spec_rows_are_variants_keyed_by_label_and_cells_by_their_full_setting():
    swept = spec(expand_sweeps([DefenseConfig("none")], [parse_sweep("l2:l2=1e-4,1e-2")]))
    assert swept.labels == ("none", "l2 (l2=0.0001)", "l2 (l2=0.01)")
    assert [(c.label, c.seed) for c in swept.cells()][2:4] == [("l2 (l2=0.0001)", 0), ("l2 (l2=0.0001)", 1)]
    # a sweep point is the very cell a plain run of that setting computes: the cache is shared
    plain = spec([DefenseConfig("l2", l2=1e-2)])
    assert plain.labels == ("l2",) and plain.cells()[0].key() == swept.cells()[4].key()
    assert len({c.key() for c in swept.cells()}) == 6
    with pytest.raises(TfmiError, match=r"the defense setting l2 \(l2=0.01\) is listed twice"):
        spec([DefenseConfig("l2", l2=0.01), DefenseConfig("l2", l2=1e-2, dropout=0.2)])  # dropout unused


def record(defense, seed, test_accuracy, shift):
    import numpy as np

    from tfmi.attacks.metrics import evaluate_scores
    from tfmi.attacks.suite import AttackReport

    rng = np.random.default_rng(seed)
    result = evaluate_scores(rng.normal(shift, 1, 200), rng.normal(0, 1, 200), attack="loss", threshold=0.0,
                             threshold_source="shadow")
    report = AttackReport([result], 200, 200, 1.0, test_accuracy, "logits")
    return {"defense": defense, "seed": seed, "train_accuracy": 1.0, "test_accuracy": test_accuracy,
            "generalization_gap": 1.0 - test_accuracy, "report": report.to_dict(), "seconds": 2.0}


def test_summarize_keys_rows_by_label():
    records = [{**record("l2", 0, 0.6, 1.0), "label": "l2 (l2=0.1)"},
               {**record("l2", 1, 0.8, 1.0), "label": "l2 (l2=0.1)"},
               {**record("l2", 0, 0.7, 0.5), "label": "l2 (l2=1)"},
               record("none", 0, 0.9, 2.0)]  # a record cached before labels: its defense's name
    rows = summarize(records)
    assert [(r.defense, r.name, r.seeds, r.seconds) for r in rows] == [
        ("l2 (l2=0.1)", "l2", 2, 4.0), ("l2 (l2=1)", "l2", 1, 2.0), ("none", "none", 1, 2.0)]
    assert rows[0].test_accuracy.mean == pytest.approx(0.7)


BAD_SWEEPS = [
    (["--sweep", "bogus:l2=1"], "unknown defense 'bogus'"),
    (["--sweep", "l2:nope=1"], "unknown parameter 'nope'"),
    (["--sweep", "l2:mmd-weight=1"], "l2 does not use mmd_weight; sweep one of its parameters: l2"),
    (["--sweep", "none:l2=1"], "none has no parameters to sweep"),
    (["--sweep", "l2"], "is not DEFENSE:PARAM=V1,V2,..."),
    (["--sweep", "l2:l2="], "no values"),
    (["--sweep", "l2:l2=1,,2"], "an empty value between commas"),
    (["--sweep", "l2:l2=abc"], "'abc' is not a number"),
    (["--sweep", "early-stopping:patience=2.5"], "'2.5' is not an integer"),
    (["--sweep", "l2:l2=0.01,-1"], "--sweep l2 (l2=-1): l2: l2 must be a positive number, got -1.0"),
    (["--sweep", "l2:l2=nan"], "l2 must be a positive number, got nan"),
    (["--sweep", "dropout:dropout=0.2,1"], "dropout must be in (0, 1), got 1.0"),
    (["--sweep", "l2:l2=0.01,1e-2"], "the value 1e-2 is listed twice"),
    (["--sweep", "l2:l2=0.1", "--sweep", "l2:l2=0.2"], "already swept by --sweep l2:l2=0.1"),
    (["--sweep", "dp-sgd:target-epsilon=1,8", "--noise-multiplier", "0.5"], "not both"),
    (["--sweep", "mmd-mixup:mmd-schedule=paper,bogus"], "unknown MMD schedule 'bogus'"),
    (["--defenses", "none,l2,l2", "--sweep", "l2:l2=0.1"], "l2 is swept but listed 2 times"),
]


@pytest.mark.parametrize("extra, message", BAD_SWEEPS)
def test_bad_sweeps_fail_with_one_error_line_and_write_nothing(tmp_path, monkeypatch, extra, message):
    monkeypatch.setattr(benchmark_module, "run_cell", None)  # no cell may run
    out = tmp_path / "bench"
    result = run(["benchmark", "--epochs", "1", "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ frontier


def point(label, accuracy, tpr, advantage=None, defense="d"):
    return FrontierPoint(label, defense, accuracy, tpr, advantage)


POINTS = [point("a", 0.5, 0.1), point("b", 0.8, 0.2), point("c", 0.7, 0.3), point("d", 0.9, 0.4),
          point("e", 0.9, 0.45), point("f", 0.95, None)]


def test_pareto_front_keeps_the_undominated_points_by_increasing_metric():
    assert [p.label for p in pareto_front(POINTS)] == ["a", "b", "d"]  # c: b beats it; e: d; f: unmeasured
    assert [p.label for p in pareto_front(list(reversed(POINTS)))] == ["a", "b", "d"]
    tied = [point("x", 0.8, 0.2), point("y", 0.8, 0.2), point("z", 0.6, 0.2)]
    assert [p.label for p in pareto_front(tied)] == ["x", "y"]
    by_advantage = [point("p", 0.9, 0.0, 0.3), point("q", 0.6, 0.5, 0.1)]
    assert [p.label for p in pareto_front(by_advantage, "advantage")] == ["q", "p"]
    assert [p.label for p in pareto_front(by_advantage)] == ["p"]
    assert pareto_front([point("u", 0.5, None)]) == []
    with pytest.raises(TfmiError, match="unknown privacy metric 'auc'"):
        pareto_front(POINTS, "auc")


def test_best_accuracy_at_a_limit():
    assert best_accuracy_at(POINTS, 0.05) is None
    assert best_accuracy_at(POINTS, 0.1) == 0.5  # the limit itself is reachable
    assert best_accuracy_at(POINTS, 0.35) == 0.8
    assert best_accuracy_at(POINTS, 1.0) == 0.9


def test_frontier_area_is_the_normalized_area_under_the_step_function():
    # f = 0 on [0, .1), .5 on [.1, .2), .8 on [.2, .4), .9 on [.4, .5]: (.05 + .16 + .09) / .5
    assert frontier_area(POINTS, x_max=0.5) == pytest.approx(0.6)
    # default x_max: the largest metric (0.45): (.05 + .16 + .9 * .05) / .45
    assert frontier_area(POINTS) == pytest.approx(0.255 / 0.45)
    # a point beyond x_max does not count; the perfect defense has area 1
    assert frontier_area(POINTS, x_max=0.15) == pytest.approx(0.5 * 0.05 / 0.15)
    assert frontier_area([point("perfect", 1.0, 0.0)], x_max=0.3) == 1.0
    assert frontier_area([point("p", 0.7, 0.0)], x_max=0.0) == 0.7
    assert frontier_area([point("u", 0.7, None)], x_max=0.3) is None
    with pytest.raises(TfmiError, match="x_max"):
        frontier_area(POINTS, x_max=math.nan)


def test_frontier_summary_per_defense_shares_one_range():
    points = [point("none", 0.9, 0.10, 0.40, "none"),
              point("l2 (l2=1)", 0.6, 0.01, 0.05, "l2"), point("l2 (l2=0.1)", 0.8, 0.04, 0.20, "l2"),
              point("l2 (l2=0.01)", 0.75, 0.06, 0.30, "l2"), point("dp", 0.5, 0.03, None, "dp-sgd")]
    none, l2, dp = summarize_frontiers(points)
    assert [p.label for p in l2.front] == ["l2 (l2=1)", "l2 (l2=0.1)"]
    assert l2.best_at == {0.05: 0.8, 0.02: 0.6} and dp.best_at == {0.05: 0.5, 0.02: None}
    assert l2.area == pytest.approx((0.03 * 0.6 + 0.06 * 0.8) / 0.10)  # x_max 0.10: the undefended TPR
    assert l2.area_advantage == pytest.approx((0.15 * 0.6 + 0.20 * 0.8) / 0.40)
    assert none.area == pytest.approx(0.0) and dp.area_advantage is None
    rows = frontier_table_rows([none, l2, dp])
    assert [len(r) for r in rows] == [len(FRONTIER_HEADERS)] * 3
    assert rows[1] == ["l2", 3, 2, "0.800", "0.600", "0.660", "0.625"]
    assert rows[2][3:5] == ["0.500", "-"] and rows[2][6] == "-"


def test_each_frontier_point_names_the_attack_behind_each_axis_with_its_spread():
    from tfmi.benchmark import AttackSummary, DefenseRow, Stat
    from tfmi.frontier import FRONTIER_POINT_HEADERS, frontier_point_rows, frontier_points

    def attack(name, source, advantage, tpr):
        none = Stat(None, 0.0)
        return AttackSummary(name, source, none, advantage, none, none, tpr, none)

    # over two seeds: LiRA has the highest mean TPR@1%FPR, RMIA the highest max advantage, and the
    # oracle row, higher on both, is no attack
    attacks = [attack("LiRA online", "lira", Stat(0.30, 0.02), Stat(0.085, 0.036)),
               attack("RMIA online", "rmia", Stat(0.39, 0.006), Stat(0.070, 0.010)),
               attack("loss", "oracle", Stat(0.90, 0.0), Stat(0.5, 0.0))]
    row = DefenseRow("dp-sgd (noise_multiplier=0.5)", 2, Stat(0.7, 0.01), Stat(0.512, 0.013), Stat(0.2, 0.0),
                     Stat(None, 0.0), None, attacks=attacks, name="dp-sgd")
    undefended = DefenseRow("none", 2, Stat(1.0, 0.0), Stat(0.55, 0.004), Stat(0.45, 0.0), Stat(None, 0.0),
                            None, attacks=[attack("LiRA online", "lira", Stat(0.9, 0.0), Stat(0.8, 0.03))],
                            name="none")
    dp, none = frontier_points([row, undefended])
    assert (dp.tpr_at_1pct, dp.tpr_at_1pct_attack, dp.tpr_at_1pct_spread) == (0.085, "LiRA online", 0.036)
    assert (dp.advantage, dp.advantage_attack, dp.advantage_spread) == (0.39, "RMIA online", 0.006)
    assert dp.test_accuracy_spread == 0.013 and none.tpr_at_1pct_attack == "LiRA online"
    rows = frontier_point_rows(summarize_frontiers([dp, none]))
    assert [len(r) for r in rows] == [len(FRONTIER_POINT_HEADERS)] * 2
    assert rows[0] == ["dp-sgd (noise_multiplier=0.5)", "0.512 ± 0.013", "0.085 ± 0.036", "LiRA online",
                       "0.390 ± 0.006", "RMIA online", "TPR, adv."]
    assert rows[1][2] == "0.800 ± 0.030"


def test_equal_utility_gives_each_defense_its_least_leaky_setting_at_each_accuracy():
    from tfmi.frontier import equal_utility_headers, equal_utility_rows

    points = [point("none", 0.60, 0.80, 0.90, "none"),
              point("dp (noise=0.3)", 0.61, 0.15, 0.50, "dp"), point("dp (noise=1)", 0.45, 0.04, 0.20, "dp"),
              point("mmd (w=2)", 0.58, 0.30, 0.60, "mmd"), point("mmd (w=20)", 0.50, 0.07, 0.30, "mmd"),
              point("mmd (w=50)", 0.20, 0.01, 0.05, "mmd")]
    frontiers = summarize_frontiers(points)
    assert equal_utility_headers(frontiers) == ("test acc at least", "none", "dp", "mmd")
    rows = equal_utility_rows(frontiers, costs=(0.0, 0.05, 0.10, 0.15, 0.5))
    assert rows == [
        ["0.600 (undefended)", "0.800", "0.150 (noise=0.3)", "-"],             # only dp is as accurate
        ["0.550 (undefended - 0.05)", "0.800", "0.150 (noise=0.3)", "0.300 (w=2)"],
        ["0.500 (undefended - 0.1)", "0.800", "0.150 (noise=0.3)", "0.070 (w=20)"],  # 0.50 counts
        ["0.450 (undefended - 0.15)", "0.800", "0.040 (noise=1)", "0.070 (w=20)"],
        ["0.100 (undefended - 0.5)", "0.800", "0.040 (noise=1)", "0.010 (w=50)"]]
    by_advantage = equal_utility_rows(frontiers, "advantage", costs=(0.1,))
    assert by_advantage == [["0.500 (undefended - 0.1)", "0.900", "0.500 (noise=0.3)", "0.300 (w=20)"]]
    # without an undefended row the costs count from the most accurate setting
    assert equal_utility_rows(summarize_frontiers(points[1:]), costs=(0.0,)) == [
        ["0.610 (best)", "0.150 (noise=0.3)", "-"]]
    assert equal_utility_rows([]) == []


def lines_by_gid(ax):
    return {line.get_gid(): line for line in ax.lines if line.get_gid()}


def test_frontier_figure_draws_every_point_and_joins_the_frontier(tmp_path):
    points = [point("none", 0.9, 0.10, 0.40, "none"), point("l2 (l2=1)", 0.6, 0.01, 0.05, "l2"),
              point("l2 (l2=0.1)", 0.8, 0.04, 0.20, "l2"), point("l2 (l2=0.01)", 0.75, 0.06, 0.10, "l2")]
    fig = _frontier_figure(points, title="t")
    tpr_ax, adv_ax = fig.axes
    assert tpr_ax.get_xlabel().startswith("best attack's TPR@1%FPR")
    assert adv_ax.get_xlabel().startswith("best attack's max advantage")
    lines = lines_by_gid(tpr_ax)
    assert set(lines) == {"none:points", "l2:points", "l2:frontier"}
    assert list(lines["l2:points"].get_xdata()) == [0.01, 0.04, 0.06]
    assert list(lines["l2:frontier"].get_xdata()) == [0.01, 0.04]
    assert list(lines["l2:frontier"].get_ydata()) == [0.6, 0.8]
    assert lines["none:points"].get_marker() == "*" and list(lines["none:points"].get_ydata()) == [0.9]
    adv = lines_by_gid(adv_ax)  # by advantage l2 (l2=0.01) is on the frontier
    assert list(adv["l2:frontier"].get_xdata()) == [0.05, 0.10, 0.20]
    assert [t.get_text() for t in tpr_ax.get_legend().get_texts()] == ["none (undefended)", "l2"]
    assert sorted((t.get_text(), t.xy) for t in tpr_ax.texts) == [
        ("l2=0.01", (0.06, 0.75)), ("l2=0.1", (0.04, 0.8)), ("l2=1", (0.01, 0.6))]
    out = plot_frontier(points, tmp_path / "frontier.png")
    assert out.read_bytes()[:8] == PNG_MAGIC and [p.name for p in tmp_path.iterdir()] == ["frontier.png"]


@pytest.mark.parametrize("points", [[], [point("a", math.nan, 0.1)], [point("a", 0.5, math.inf)], [object()]])
def test_plot_frontier_bad_input_writes_nothing(tmp_path, points):
    with pytest.raises(TfmiError):
        plot_frontier(points, tmp_path / "sub" / "frontier.png")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------- a real sweep


class CountingRunCell:
    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, data, cell, **kwargs):
        self.calls.append(cell.label)
        return self.real(data, cell, **kwargs)


def test_a_tiny_sweep_on_digits_gives_rows_frontier_and_plot_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    first = CountingRunCell(benchmark_module.run_cell)
    monkeypatch.setattr(benchmark_module, "run_cell", first)
    result = run([*TINY_SWEEP, "--out", str(out)])
    assert result.exit_code == 0, result.output
    labels = ["none", "l2 (l2=0.0001)", "l2 (l2=0.01)"]
    assert first.calls == labels
    results = json.loads((out / "results.json").read_text())
    assert [row["defense"] for row in results["summary"]] == labels
    assert [c["cell"]["defense"] for c in results["cells"]] == [
        {"name": "none"}, {"name": "l2", "l2": 1e-4}, {"name": "l2", "l2": 1e-2}]
    assert {row["defense"] for row in results["attacks"]} == set(labels)

    frontier = results["frontier"]
    assert [row["defense"] for row in frontier["table"]] == ["none", "l2"]
    assert [row["points"] for row in frontier["table"]] == [1, 2]
    l2 = frontier["defenses"][1]
    assert l2["points"] == labels[1:] and 1 <= len(l2["frontier_tpr_at_1pct"]) <= 2
    assert set(l2["best_test_accuracy_at_tpr_at_1pct"]) == {"0.05", "0.02"}
    # each point: the row's test accuracy and its strongest realistic attack (one seed: the cell's values)
    points = [FrontierPoint(**p) for p in frontier["points"]]
    for p, cell in zip(points, results["cells"], strict=True):
        realistic = [r for r in cell["report"]["results"] if r["threshold_source"] != "oracle"]
        assert p.label == cell["label"] and p.test_accuracy == pytest.approx(cell["test_accuracy"])
        assert p.tpr_at_1pct == pytest.approx(max(r["tpr_at_fpr"]["0.01"] for r in realistic))
        assert p.advantage == pytest.approx(max(r["advantage"] for r in realistic))
    lines = lines_by_gid(_frontier_figure(points).axes[0])
    assert list(lines["l2:points"].get_xdata()) == [p.tpr_at_1pct for p in points[1:]]
    assert list(lines["none:points"].get_ydata()) == [points[0].test_accuracy]

    assert (out / "frontier.png").read_bytes()[:8] == PNG_MAGIC
    written = read_marker(out)["written"]
    for name in ("frontier.png", "results.json", "results.md", "roc_none.png", "roc_l2_l2-0.0001.png",
                 "roc_l2_l2-0.01.png"):
        assert name in written and (out / name).is_file()
    markdown = (out / "results.md").read_text()
    assert "| l2 (l2=0.01) |" in markdown and "## Privacy-utility frontiers" in markdown
    assert "![frontier](frontier.png)" in markdown
    for p in points:  # every point in the table of coordinates, with the attack behind each axis
        coordinates = f"| {p.label} | {p.test_accuracy:.3f} | {p.tpr_at_1pct:.3f} | {p.tpr_at_1pct_attack} |"
        assert coordinates in markdown
        assert p.advantage_attack in {r["attack"] for r in results["cells"][0]["report"]["results"]}
    equal = frontier["equal_utility"]["tpr_at_1pct"]
    assert [list(r)[1:] for r in equal][0] == ["none", "l2"] and len(equal) == 6
    assert "### Privacy at equal test accuracy" in markdown
    meta = results["meta"]
    assert meta["cell_seconds_total"] == pytest.approx(sum(c["seconds"] for c in results["cells"]), abs=0.2)
    assert meta["cells_run"] == 3 and meta["elapsed_seconds"] >= meta["cell_seconds_total"] - 0.2
    assert "best test acc @ TPR@1% <= 5%" in result.output and "3 run now" in result.output

    second = CountingRunCell(benchmark_module.run_cell.real)
    monkeypatch.setattr(benchmark_module, "run_cell", second)
    again = run([*TINY_SWEEP, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert second.calls == [] and "3 cached" in again.output and "0 to run" in again.output
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["frontier"]["points"] == frontier["points"] and rerun["meta"]["cells_run"] == 0
