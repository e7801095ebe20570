"""`tfmi compare`: frontiers of benchmarks with different training recipes, merged on one privacy axis."""

import json
import math

import pytest
from click.testing import CliRunner

from cli.main import cli
from tfmi.errors import TfmiError
from tfmi.frontier import frontier_area
from tfmi.frontier_comparison import compare_frontiers
from tfmi.plots import _frontier_figure
from tfmi.safe_write import MARKER_FILE, read_marker

BASE = ["benchmark", "--model", "mlp", "--target-size", "100", "--shadows", "2", "--attacks", "gap,loss",
        "--defenses", "none", "--sweep", "l2:l2=0.001,0.1"]


def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def two_recipes(tmp_path_factory):
    """Two real benchmarks of the digits data that differ only in their training recipe."""
    root = tmp_path_factory.mktemp("recipes")
    for name, epochs in (("short", "1"), ("long", "4")):
        result = run([*BASE, "--epochs", epochs, "--out", str(root / name)])
        assert result.exit_code == 0, result.output
    return root


def dominated(p, by):
    return (by.tpr_at_1pct <= p.tpr_at_1pct and by.test_accuracy >= p.test_accuracy
            and (by.tpr_at_1pct < p.tpr_at_1pct or by.test_accuracy > p.test_accuracy))


def test_compare_merges_two_recipes_on_one_privacy_axis(two_recipes, tmp_path):
    out = tmp_path / "compared"
    result = run(["compare", f"short={two_recipes / 'short'}", f"long={two_recipes / 'long'}",
                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "mlp, adam lr 0.001, batch 64, 1 epochs, 1 seed" in result.output
    assert "4 epochs" in result.output

    saved = json.loads((out / "comparison.json").read_text())
    assert [p["label"] for p in saved["points"]] == [
        "none@short", "l2@short (l2=0.001)", "l2@short (l2=0.1)", "none@long", "l2@long (l2=0.001)",
        "l2@long (l2=0.1)"]
    for name in ("short", "long"):  # every point is the benchmark's own, renamed, values untouched
        own = json.loads((two_recipes / name / "results.json").read_text())["frontier"]["points"]
        mine = [p for p in saved["points"] if p["defense"].endswith(f"@{name}")]
        kept = [{k: v for k, v in p.items() if k not in ("label", "defense")} for p in mine]
        assert kept == [{k: v for k, v in p.items() if k not in ("label", "defense")} for p in own]
        assert all(p["tpr_at_1pct_attack"] and p["advantage_attack"] for p in mine)

    comparison = compare_frontiers({"short": two_recipes / "short", "long": two_recipes / "long"})
    front = comparison.overall_front
    assert [p.label for p in front] == saved["overall_frontier_tpr_at_1pct"]
    for p in comparison.points:  # the overall front: nothing beats a front point, everything else is beaten
        if p in front:
            assert not any(dominated(p, q) for q in comparison.points)
        else:
            assert any(dominated(p, q) for q in front)
    x_max = max(p.tpr_at_1pct for p in comparison.points)
    for f in comparison.frontiers:  # areas share the privacy axis of all runs, not each run's own
        assert f.area == pytest.approx(frontier_area(f.points, x_max=x_max))

    assert (out / "frontier.png").stat().st_size > 1000
    assert read_marker(out)["kind"] == "comparison"
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE, "comparison.json", "comparison.md",
                                                     "frontier.png"]
    markdown = (out / "comparison.md").read_text()
    assert "## Overall frontier by TPR@1%FPR" in markdown
    assert "## Overall frontier by max advantage" in markdown
    equal = saved["equal_utility"]["tpr_at_1pct"]  # costs count from the best undefended model of all runs
    best_undefended = max(p.test_accuracy for p in comparison.points if p.defense.startswith("none@"))
    assert equal[0]["test acc at least"] == f"{best_undefended:.3f} (undefended)"
    assert set(equal[0]) == {"test acc at least", *(f.defense for f in comparison.frontiers)}
    assert "## Lowest best attack's TPR@1%FPR at equal test accuracy" in markdown
    for p in comparison.overall_front_advantage:
        assert f"| {p.label} | {p.test_accuracy:.3f} |" in markdown
        assert f"| {p.advantage:.3f} | {p.advantage_attack} |" in markdown

    again = run(["compare", f"short={two_recipes / 'short'}", f"long={two_recipes / 'long'}",
                 "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    forced = run(["compare", f"short={two_recipes / 'short'}", f"long={two_recipes / 'long'}",
                  "--rows", "l2", "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    kept = json.loads((out / "comparison.json").read_text())
    assert [p["defense"] for p in kept["points"]] == ["l2@short", "l2@short", "l2@long", "l2@long"]


def test_rows_pick_one_runs_defense_or_every_runs(two_recipes):
    runs = {"short": two_recipes / "short", "long": two_recipes / "long"}
    picked = compare_frontiers(runs, ["none@short", "l2"])
    assert [f.defense for f in picked.frontiers] == ["none@short", "l2@short", "l2@long"]
    assert [len(f.points) for f in picked.frontiers] == [1, 2, 2]
    with pytest.raises(TfmiError, match="no defense 'dp-sgd'.*none@short, l2@short"):
        compare_frontiers(runs, ["dp-sgd"])


def test_undefended_points_of_each_run_are_markers_and_defenses_keep_one_colour(two_recipes):
    comparison = compare_frontiers({"short": two_recipes / "short", "long": two_recipes / "long"})
    fig = _frontier_figure(comparison.points)
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines()}
    assert lines["none@short:points"].get_marker() != lines["none@long:points"].get_marker()
    assert lines["none@short:points"].get_linestyle() == "None"
    short, long = lines["l2@short:frontier"], lines["l2@long:frontier"]
    assert short.get_color() == long.get_color() and short.get_linestyle() != long.get_linestyle()


def test_benchmarks_that_measured_privacy_differently_are_refused(two_recipes, tmp_path):
    other = tmp_path / "other"  # the long run's results, as a run with 120 members would have written them
    other.mkdir()
    results = json.loads((two_recipes / "long" / "results.json").read_text())
    results["meta"]["spec"]["target_size"] = 120
    (other / "results.json").write_text(json.dumps(results))
    out = tmp_path / "compared"
    result = run(["compare", f"short={two_recipes / 'short'}", f"big={other}", "--out", str(out)])
    assert result.exit_code == 2
    assert "target_size: short 100, big 120" in result.output
    assert not out.exists()


# ---------------------------------------------------------------------------------------- bad input


def results(tmp_path, name, points=None, **spec_changes):
    """A results.json as `tfmi benchmark` writes it (meta.spec, frontier.points), in its own folder."""
    spec = {"dataset": "digits", "data_fingerprint": "abc", "target_size": 100, "attacks": ["gap"],
            "num_shadows": 0, "seeds": [0], "train": {"model": "mlp"}} | spec_changes
    points = points if points is not None else [
        {"label": "none", "defense": "none", "test_accuracy": 0.9, "tpr_at_1pct": 0.3, "advantage": 0.4}]
    folder = tmp_path / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"meta": {"spec": spec}, "frontier": {"points": points}}))
    return folder


def damaged(tmp_path, content):
    folder = results(tmp_path, "b")
    file = folder / "results.json"
    file.write_bytes(content) if isinstance(content, bytes) else file.write_text(content)
    return folder


def bad_point(**changes):
    return [{"label": "none", "defense": "none", "test_accuracy": 0.9, "tpr_at_1pct": 0.3, "advantage": 0.4}
            | changes]


@pytest.mark.parametrize("make_b, message", [
    (lambda t: t / "missing", "no such file or folder"),
    (lambda t: t / "A", "has no results.json: let `tfmi benchmark` finish"),
    (lambda t: damaged(t, "{not json"), "not a readable tfmi results file"),
    (lambda t: damaged(t, "[" * 100_000), "not a readable tfmi results file"),
    (lambda t: damaged(t, b"\xff\xfe{}"), "not a readable tfmi results file"),
    (lambda t: damaged(t, '{"meta": {}}'), "no benchmark spec or frontier points"),
    (lambda t: results(t, "b", bad_point(test_accuracy=math.nan)), "test_accuracy nan; it must be a number"),
    (lambda t: results(t, "b", bad_point(tpr_at_1pct=1.5)), "tpr_at_1pct 1.5; it must be a number in"),
    (lambda t: results(t, "b", bad_point(advantage="high")), "advantage 'high'"),
    (lambda t: results(t, "b", bad_point(label=None)), "has no label or defense name"),
    (lambda t: results(t, "b", bad_point(tpr_at_1pct_spread=-0.1)), "tpr_at_1pct_spread -0.1; it must be a"),
    (lambda t: results(t, "b", bad_point(advantage_attack=3)), "advantage_attack 3; it must be an attack's"),
    (lambda t: results(t, "b", ["none"]), "frontier point 0 is not an object"),
    (lambda t: results(t, "b", []), "holds no frontier points"),
    (lambda t: results(t, "b", dataset="cifar10"), "dataset: a digits, b cifar10"),
    (lambda t: results(t, "b", attacks=["gap", "loss"]), "did not measure privacy the same way (attacks"),
])
def test_unusable_benchmarks_fail_with_one_line_and_write_nothing(tmp_path, make_b, message):
    a = results(tmp_path, "a")
    (tmp_path / "A").mkdir()  # a folder without results.json: a benchmark that has not finished
    b = make_b(tmp_path)
    out = tmp_path / "compared"
    result = run(["compare", f"a={a}", f"b={b}", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not out.exists()


def test_a_device_is_not_read(tmp_path):
    a = results(tmp_path, "a")
    result = run(["compare", f"a={a}", "b=/dev/zero"])
    assert result.exit_code == 2 and "is not a regular file" in result.output


@pytest.mark.parametrize("args, message", [
    (["a"], "is not NAME=FOLDER"),
    (["=x"], "is not NAME=FOLDER"),
    (["a=A", "a=A"], "run name 'a' is given twice"),
    (["a=A"], "compare needs at least two benchmarks"),
    (["a b=A", "c=A"], "run name 'a b' must be"),
    (["a=A", "c@d=A"], "run name 'c@d' must be"),
    (["a=A", "b=A"], "runs a and b are the same benchmark"),
    (["a=A", "b=B", "--rows", " , "], "--rows is empty"),
    (["a=A", "b=B", "--rows", "mmd"], "no defense 'mmd' in the runs compared"),
])
def test_bad_arguments_fail_cleanly(tmp_path, args, message):
    folders = {"=A": results(tmp_path, "A"), "=B": results(tmp_path, "B")}
    args = [next((a.replace(k, f"={v}") for k, v in folders.items() if a.endswith(k)), a) for a in args]
    result = run(["compare", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_out_is_checked_before_reading_and_never_takes_a_foreign_folder(tmp_path):
    a, b = results(tmp_path, "a"), results(tmp_path, "b")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for force in ([], ["--force"]):
        result = run(["compare", f"a={a}", f"b={b}", "--out", str(foreign), *force])
        assert result.exit_code == 2 and "was not written by tfmi" in result.output
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # checked before the inputs are read: a bad --out is reported even when an input is missing too
    result = run(["compare", f"a={a}", f"b={tmp_path / 'missing'}", "--out", str(foreign)])
    assert "was not written by tfmi" in result.output
    result = run(["compare", f"a={a}", f"b={b}", "--out", str(a), "--force"])  # a benchmark's folder
    assert result.exit_code == 2 and "is not empty and was not written by tfmi" in result.output
    assert sorted(p.name for p in a.iterdir()) == ["results.json"]
