"""The README's result tables quote the published benchmarks (docs/frontiers/...), not hand-copied figures.

Every compact table the README marks with ``<!-- table: docs/frontiers/SETTING ... -->`` must be exactly
what ``benchmarks/readme_table.py SETTING`` prints from that run's results.json (the frontier's points:
mean test accuracy, the best realistic attack's mean TPR@1%FPR and max advantage). The Location30
defaults' frontier summary and equal-accuracy table must be the published ones.
"""

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- table: docs/frontiers/([\w.-]+)[^>]*-->\n")
SUMMARY_NAMES = {"DP-SGD": "dp-sgd", "MMD": "mmd", "RelaxLoss": "relaxloss", "MMD + mixup": "mmd-mixup",
                 "AdvReg": "advreg"}


def readme_table_module():
    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "benchmarks" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def marked_tables(text: str) -> list[tuple[str, str]]:
    """(setting, the table after its marker) for every marked table."""
    tables = []
    for match in MARKER.finditer(text):
        rest = text[match.end():]
        lines = []
        for line in rest.splitlines():
            if not line.startswith("|"):
                break
            lines.append(line)
        tables.append((match.group(1), "\n".join(lines)))
    return tables


def section(heading: str) -> str:
    text = README.read_text()
    start = text.index(heading)
    return text[start:text.index("\n### ", start)]


def test_every_marked_readme_table_is_what_the_published_results_give():
    tables = marked_tables(README.read_text())
    assert "location30-defaults" in [setting for setting, _ in tables]
    generate = readme_table_module().readme_table
    for setting, table in tables:
        assert table == generate(setting), f"README table of {setting}: see benchmarks/readme_table.py"


def test_a_hand_edited_figure_is_caught():
    generated = readme_table_module().readme_table("location30-defaults")
    edited = generated.replace("0.280", "0.289", 1)
    assert edited != generated
    readme = f"text\n<!-- table: docs/frontiers/location30-defaults -->\n{edited}\n\nmore"
    assert marked_tables(readme) == [("location30-defaults", edited)]


def test_the_generated_rows_are_the_frontier_points():
    results = json.loads((ROOT / "docs/frontiers/location30-defaults/results.json").read_text())
    points = {p["label"]: p for p in results["frontier"]["points"]}
    rows = readme_table_module().readme_table("location30-defaults").splitlines()
    dp = next(r for r in rows if r.startswith("| DP-SGD noise 0.3 / 0.5 / 1 / 2 |")).split(" | ")
    assert dp[3].split(" / ")[1] == f"{points['dp-sgd (noise_multiplier=0.5)']['tpr_at_1pct']:.3f}"
    assert dp[1].split(" / ")[0] == f"{points['dp-sgd (noise_multiplier=0.3)']['test_accuracy']:.3f}"


def table_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text[text.index(header_start):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_location30_defaults_summary_is_the_published_summary():
    text = section("## Results: privacy/utility frontiers on Location30")
    rows = table_rows(text, "| defense | area (TPR@1%) |")
    results = json.loads((ROOT / "docs/frontiers/location30-defaults/results.json").read_text())
    summary = {r["defense"]: r for r in results["frontier"]["table"]}
    assert {SUMMARY_NAMES[r[0]] for r in rows} == set(summary) - {"none"}
    for title, area_tpr, area_adv, best in rows:
        row = summary[SUMMARY_NAMES[title]]
        assert area_tpr == row["frontier area (TPR@1%)"], title
        assert area_adv == row["frontier area (max adv.)"], title
        published_best = row["best test acc @ TPR@1% <= 5%"]
        assert best == (published_best if published_best != "-" else "none reaches it"), title


@pytest.mark.parametrize("setting", ["location30-defaults"])
def test_equal_utility_table_is_the_published_one(setting):
    readme = README.read_text()
    results = (ROOT / "docs" / "frontiers" / setting / "results.md").read_text()
    published = results[results.index("Lowest best attack's TPR@1%FPR:"):]
    table = published[published.index("| test acc at least"):].split("\n\n")[0]
    assert table.count("\n") == 7 and table in readme
