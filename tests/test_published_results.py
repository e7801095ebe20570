"""The README's Location30 tables quote the published benchmark (docs/frontiers/...), not hand-copied figures.

A row such as ``| MMD λ 0.5 / 2 | 0.568 / 0.546 | gap | 0.658 / 0.280 | 0.87 / 0.70 | |`` must equal the
frontier points of ``results.json`` (test accuracy, the best realistic attack's mean TPR@1%FPR and max
advantage), rounded as printed; the frontier summary's areas must equal the published summary.
"""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: README row titles -> (defense name in results.json, swept parameter)
ROW_TITLES = {
    "none": ("none", None),
    "MMD λ": ("mmd", "mmd_weight"),
    "MMD + mixup λ": ("mmd-mixup", "mmd_weight"),
    "DP-SGD noise": ("dp-sgd", "noise_multiplier"),
    "AdvReg λ": ("advreg", "adv_weight"),
    "RelaxLoss α": ("relaxloss", "relax_alpha"),
}
SUMMARY_NAMES = {"DP-SGD": "dp-sgd", "MMD": "mmd", "RelaxLoss": "relaxloss", "MMD + mixup": "mmd-mixup",
                 "AdvReg": "advreg"}


def section(heading: str) -> str:
    text = README.read_text()
    start = text.index(heading)
    end = text.index("\n### ", start)
    return text[start:end]


def table_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text[text.index(header_start):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def values(cell: str) -> list[str]:
    return [v.split(" ± ")[0].strip() for v in cell.split(" / ")]


def published(setting: str) -> dict:
    return json.loads((ROOT / "docs" / "frontiers" / setting / "results.json").read_text())


def readme_points(rows: list[list[str]]) -> dict[str, tuple[str, str, str]]:
    """label -> (test acc, TPR@1%FPR, max adv.) as the README prints them."""
    out = {}
    for title_cell, test, _gap, tpr, adv, _eps in rows:
        title = next(t for t in sorted(ROW_TITLES, key=len, reverse=True) if title_cell.startswith(t))
        name, param = ROW_TITLES[title]
        settings = title_cell[len(title):].split("(")[0].split(" / ") if param else [None]
        for i, setting in enumerate(settings):
            label = name if param is None else f"{name} ({param}={setting.strip()})"
            out[label] = (values(test)[i], values(tpr)[i], values(adv)[i])
    return out


def test_location30_defaults_table_is_the_published_frontier():
    text = section("## Results: privacy/utility frontiers on Location30")
    shown = readme_points(table_rows(text, "| defense setting | test acc |"))
    points = {p["label"]: p for p in published("location30-defaults")["frontier"]["points"]}
    assert set(shown) == set(points)
    for label, (test, tpr, adv) in shown.items():
        p = points[label]
        assert test == f"{p['test_accuracy']:.3f}", label
        assert tpr == f"{p['tpr_at_1pct']:.3f}", label
        assert adv == f"{p['advantage']:.2f}", label


def test_location30_defaults_summary_is_the_published_summary():
    text = section("## Results: privacy/utility frontiers on Location30")
    rows = table_rows(text, "| defense | area (TPR@1%) |")
    summary = {r["defense"]: r for r in published("location30-defaults")["frontier"]["table"]}
    assert {SUMMARY_NAMES[r[0]] for r in rows} == set(summary) - {"none"}
    for title, area_tpr, area_adv, best in rows:
        row = summary[SUMMARY_NAMES[title]]
        assert area_tpr == row["frontier area (TPR@1%)"], title
        assert area_adv == row["frontier area (max adv.)"], title
        published_best = row["best test acc @ TPR@1% <= 5%"]
        assert best == (published_best if published_best != "-" else "none reaches it"), title


def test_location30_defaults_equal_utility_table_is_the_published_one():
    readme = section("## Results: privacy/utility frontiers on Location30")
    results = (ROOT / "docs" / "frontiers" / "location30-defaults" / "results.md").read_text()
    published = results[results.index("Lowest best attack's TPR@1%FPR:"):]
    table = published[published.index("| test acc at least"):].split("\n\n")[0]
    assert table.count("\n") == 7 and table in readme


@pytest.mark.parametrize("cell, expected", [("0.568 / 0.546", ["0.568", "0.546"]),
                                            ("0.552 ± 0.004", ["0.552"])])
def test_values_reads_the_printed_figures(cell, expected):
    assert values(cell) == expected


def test_a_hand_edited_figure_would_be_caught():
    rows = [["MMD λ 0.5 / 2", "0.568 / 0.546", "0.43 / 0.45", "0.658 / 0.289", "0.87 / 0.70", ""]]
    points = {p["label"]: p for p in published("location30-defaults")["frontier"]["points"]}
    shown = readme_points(rows)
    assert shown["mmd (mmd_weight=2)"][1] != f"{points['mmd (mmd_weight=2)']['tpr_at_1pct']:.3f}"
    assert shown["mmd (mmd_weight=0.5)"][0] == f"{points['mmd (mmd_weight=0.5)']['test_accuracy']:.3f}"
