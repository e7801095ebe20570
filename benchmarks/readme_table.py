"""The README's compact table of a published frontier run (docs/frontiers/SETTING/results.json): one line
per defense, its swept settings joined by " / ", with the frontier's coordinates (mean test accuracy, the
best attack's mean TPR@1%FPR and max advantage) and the gap and epsilon of the summary.

    python benchmarks/readme_table.py location30-defaults

tests/test_published_results.py checks that every table the README marks with
``<!-- table: docs/frontiers/SETTING -->`` is exactly what this prints.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: defense name -> (row title, the swept parameter)
TITLES = {
    "none": ("none", None),
    "mmd": ("MMD λ", "mmd_weight"),
    "mmd-mixup": ("MMD + mixup λ", "mmd_weight"),
    "dp-sgd": ("DP-SGD noise", "noise_multiplier"),
    "advreg": ("AdvReg λ", "adv_weight"),
    "relaxloss": ("RelaxLoss α", "relax_alpha"),
}
HEADER = ("| defense setting | test acc | gap | TPR@1%FPR (best attack) | max adv. | epsilon |\n"
          "|---|---|---|---|---|---|")


def _mean(text: str) -> float:
    return float(text.split(" ")[0])


def _short_float(value: float) -> str:
    """``1e-05`` -> ``1e-5``, as the README writes it."""
    return re.sub(r"e([+-])0+(\d)", r"e\1\2", f"{value:g}").replace("e+", "e")


def readme_table(setting: str) -> str:
    results = json.loads((ROOT / "docs" / "frontiers" / setting / "results.json").read_text())
    summary = {row["defense"]: row for row in results["summary"]}
    groups: dict[str, list[tuple[str, dict, dict]]] = {}
    for point in results["frontier"]["points"]:
        value = re.search(r"=([^)]+)\)$", point["label"])
        groups.setdefault(point["defense"], []).append(
            (value.group(1) if value else "", point, summary[point["label"]]))
    lines = [HEADER]
    for name, rows in groups.items():
        title, param = TITLES[name]
        rows.sort(key=lambda r: float(r[0]) if r[0] else 0.0)
        join = " / ".join
        test = (rows[0][2]["test acc"] if len(rows) == 1
                else join(f"{p['test_accuracy']:.3f}" for _, p, _ in rows))
        eps = ""
        if name == "dp-sgd":
            deltas = {re.search(r"δ ([^)]+)", s["epsilon"]).group(1) for _, _, s in rows}
            delta = _short_float(float(deltas.pop()))
            eps = join(f"{_mean(s['epsilon']):.3g}" for _, _, s in rows) + f" (δ {delta})"
        cells = [f"{title} {join(v for v, _, _ in rows)}" if param else title, test,
                 join(f"{_mean(s['gap']):.2f}" for _, _, s in rows),
                 join(f"{p['tpr_at_1pct']:.3f}" for _, p, _ in rows),
                 join(f"{p['advantage']:.2f}" for _, p, _ in rows), eps]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(readme_table(sys.argv[1] if len(sys.argv) > 1 else "location30-defaults"))
