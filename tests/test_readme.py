"""The README's quick-start example runs as written and prints what the README says it prints."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_code() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start in Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_start_example_runs_and_audits_the_defended_model():
    code = quick_start_code()
    assert "MMDMixupModel" in code and "audit(" in code and len(code.splitlines()) <= 23
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)
    report = namespace["report"]
    lines = printed.getvalue().splitlines()
    assert lines[0] == f"train {report.train_accuracy:.3f}, test {report.test_accuracy:.3f}"
    assert len(lines) == 1 + len(report.results)
    names = {r.attack for r in report.results}
    assert {"gap", "loss", "shokri (mlp)", "top3 (mlp)", "LiRA online, fixed variance"} <= names
    assert report.test_accuracy > 0.7  # the defended model still learns digits
    gap = next(r for r in report.results if r.attack == "gap")
    assert abs(gap.accuracy - (0.5 + report.generalization_gap / 2)) < 1e-12

