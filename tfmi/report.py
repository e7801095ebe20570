"""Text formatting of attack reports: terminal tables, markdown tables and the audit's report.md.

Every function returns strings; nothing is printed. The generic helpers (`format_table`,
`markdown_table`) know nothing about attacks and serve any tabular result.
Importing this module is cheap: TensorFlow is not loaded.

Cells are rendered as given, except ``None`` (``"n/a"``); callers format their floats. A column whose
cells all look like numbers (or are ``None``) is right-aligned, any other left-aligned.

>>> print(format_table(["attack", "AUC"], [["loss", "0.712"], ["lira_online", None]]))
attack         AUC
-----------  -----
loss         0.712
lira_online    n/a
>>> print(markdown_table(["attack", "AUC"], [["a|b", "0.5"], ["c", None]]))
| attack | AUC |
|---|---:|
| a\\|b | 0.5 |
| c | n/a |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tfmi.attacks.metrics import DEFAULT_DELTA
from tfmi.errors import TfmiError

if TYPE_CHECKING:  # the attack suite imports TensorFlow: keep this module cheap to import
    from tfmi.attacks.metrics import AttackResult
    from tfmi.attacks.suite import AttackReport
    from tfmi.exposure import ExposureTable

__all__ = [
    "ATTACK_COLUMNS", "attack_rows", "audit_markdown", "audit_summary_lines", "format_table",
    "markdown_table",
]

MISSING = "n/a"
ATTACK_COLUMNS = ("attack", "threshold", "accuracy", "max adv.", "achieved adv.", "AUC", "TPR@0.1%FPR",
                  "TPR@1%FPR", "eps LB")
#: the low false-positive rates of the table's TPR columns, in column order
TABLE_FPRS = (0.001, 0.01)


# ------------------------------------------------------------------------------------ generic tables


def _cell(value: object) -> str:
    if value is None:
        return MISSING
    return " ".join(str(value).split("\n"))


def _is_numeric(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return value is None
    if isinstance(value, int | float):
        return True
    try:
        float(str(value).strip().rstrip("%"))
    except ValueError:
        return str(value).strip() == MISSING
    return True


def _column_alignment(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None) -> str:
    width = len(headers)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise TfmiError(f"table row {i} has {len(row)} cells but there are {width} headers")
    if align is not None:
        if len(align) != width or set(align) - {"l", "r"}:
            raise TfmiError(f"align must be one 'l' or 'r' per column ({width}), got {align!r}")
        return align
    chosen = []
    for j in range(width):
        column = [row[j] for row in rows]
        numeric = bool(column) and all(_is_numeric(v) for v in column)
        chosen.append("r" if numeric else "l")
    return "".join(chosen)


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, align: str | None = None
) -> str:
    """A fixed-width text table: header, dashed rule, one line per row, columns two spaces apart.

    ``align`` is one ``"l"`` or ``"r"`` per column; by default numeric columns are right-aligned.
    ``None`` cells show as ``n/a``.

    >>> print(format_table(["name", "n"], [["a", 1], ["bb", 22]], align="rl"))
    name  n
    ----  --
       a  1
      bb  22
    """
    align = _column_alignment(headers, rows, align)
    cells = [[_cell(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if a == "r" else v.ljust(w)
                 for v, w, a in zip(values, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _markdown_cell(value: object) -> str:
    return _cell(value).replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (numeric columns right-aligned, ``None`` as ``n/a``, ``|`` escaped).

    >>> print(markdown_table(["k", "v"], [["x", 1]]))
    | k | v |
    |---|---:|
    | x | 1 |
    """
    align = _column_alignment(headers, rows, None)
    lines = ["| " + " | ".join(_markdown_cell(h) for h in headers) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(_markdown_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- audits


def _num(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def attack_rows(report: AttackReport) -> list[list[object]]:
    """One `ATTACK_COLUMNS` row per result of ``report``: numbers as ``"%.3f"``, unmeasurable TPRs
    ``None`` (shown as ``n/a``)."""
    return [
        [r.attack, r.threshold_source, _num(r.accuracy), _num(r.advantage), _num(r.achieved_advantage),
         _num(r.auc), *(_num(r.tpr_at_fpr.get(f)) for f in TABLE_FPRS), _eps(r.epsilon_lower_bound())]
        for r in report.results
    ]


def _eps(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _best_realistic(report: AttackReport) -> AttackResult | None:
    """The realistic attack with the highest max advantage (threshold-free: see `RANKED_BY`)."""
    if not any(r.threshold_source != "oracle" for r in report.results):
        return None
    return report.best()


#: how "best attack" is chosen, said wherever it is shown
RANKED_BY = "highest max advantage (max TPR - FPR over thresholds: threshold-free)"


def _describe(result: AttackResult) -> str:
    text = f"{result.attack} ({result.threshold_source}): max advantage {result.advantage:.3f}"
    if result.achieved_advantage is not None:
        text += f", achieved {result.achieved_advantage:.3f}"
    text += f", AUC {result.auc:.3f}"
    if result.auc_ci is not None:
        text += f" (95% CI {result.auc_ci[0]:.3f}-{result.auc_ci[1]:.3f})"
    tpr = result.tpr_at_fpr.get(0.01)
    text += ", TPR@1%FPR " + (MISSING if tpr is None else f"{tpr:.3f}")
    bound = result.epsilon_lower_bound()
    return text + ("" if bound is None else f", proves epsilon >= {bound:.2f} at delta {DEFAULT_DELTA:g}")


def _model_line(meta: Mapping) -> str:
    details = [str(meta["format"])] if meta.get("format") else []
    if meta.get("signature"):
        details.append(f"signature {meta['signature']}")
    if meta.get("unsafe_load"):
        details.append("LOADED WITH --unsafe-load: safety checks skipped")
    text = str(meta.get("model", "model"))
    return text + (f" ({', '.join(details)})" if details else "")


def audit_summary_lines(report: AttackReport, meta: Mapping) -> list[str]:
    """The audit's summary for a terminal or report, one fact per line.

    ``meta`` may hold ``model`` (path), ``format``, ``signature``, ``data`` (where the records
    came from) and ``warnings`` (one line each); missing keys are left out.
    """
    lines = [f"model      {_model_line(meta)}, outputs {report.output_kind}"]
    data = f"{meta['data']}: " if meta.get("data") else ""
    lines.append(f"records    {data}{report.num_members} members, {report.num_non_members} non-members")
    lines += [f"warning    {warning}" for warning in meta.get("warnings") or ()]
    lines.append(f"accuracy   train (members) {report.train_accuracy:.3f}, test (non-members) "
                 f"{report.test_accuracy:.3f}, gap {report.generalization_gap:.3f}")
    if report.num_shadows:
        model = f" {meta['shadow_model']}" if meta.get("shadow_model") else ""
        shadow = (f"shadows    {report.num_shadows}{model} shadow models, accuracy train "
                  f"{_num(report.shadow_train_accuracy) or MISSING}, test "
                  f"{_num(report.shadow_test_accuracy) or MISSING}")
        if meta.get("shadow_pool"):
            shadow += f", pool: {meta['shadow_pool']}"
        lines.append(shadow)
    else:
        lines.append("shadows    none: only the gap attack and oracle upper bounds can run "
                     "(train shadow models for calibrated attacks and LiRA)")
    best = _best_realistic(report)
    lines.append("best       " + (_describe(best) if best else "no realistic attack ran (oracle rows only)"))
    if best:
        lines.append(f"           (best = {RANKED_BY})")
    lines += [f"note       {note}" for note in report.notes]
    if any(r.threshold_source == "oracle" for r in report.results):
        lines.append("oracle     rows marked 'oracle' pick their threshold on the target's own membership "
                     "labels: upper bounds, not attacks an adversary can run")
    return lines


_COLUMN_NOTES = """\
- **attack**: the membership signal or attack model. `gap` predicts "member" when the model
  classifies the record correctly; threshold attacks (`loss`, `confidence`, `entropy`,
  `modified_entropy`, ...) threshold a per-record statistic of the model's output; `shokri` and
  `top3` are attack classifiers trained on shadow models' outputs; `lira_online` / `lira_offline`
  are likelihood-ratio attacks (Carlini et al. 2022) built from the shadows' output distributions.
- **threshold**: where the decision threshold comes from. `shadow`: calibrated on shadow models,
  a realistic attack. `oracle`: chosen on the target's own membership labels, which no attacker
  has: an **upper bound** on what that signal can reveal. `none`: a fixed rule (the gap attack) or
  a score-based attack without a tuned threshold.
- **accuracy**: balanced accuracy (TPR + TNR) / 2 at the chosen threshold; 0.5 is chance.
- **max adv.**: the best TPR - FPR over all thresholds (Yeom et al.; tensorflow-privacy's "attacker
  advantage"). The threshold is picked with the target's own labels, so this is a threshold-free
  summary of what the scores allow, not what the attack achieves: 0 means nothing leaks, 1 that
  members are identified perfectly. *Best attack* ranks realistic rows by it.
- **achieved adv.**: TPR - FPR at the attack's own threshold or decision rule (shadow-calibrated or
  fixed): what the attack really gets. n/a on oracle rows.
- **AUC**: area under the ROC curve; 0.5 is chance.
- **TPR@0.1%FPR, TPR@1%FPR**: the share of members identified while wrongly flagging at most
  0.1% / 1% of non-members: how reliably an attack can single out *some* members with
  confidence, which averages such as accuracy hide.
- **eps LB**: the epsilon this attack proves at delta 1e-5: from its TPR and FPR at its own threshold,
  with 95% Clopper-Pearson intervals (Jagielski et al. 2020), no (epsilon, delta)-DP training could
  allow this attack, so the model's true epsilon is at least this. 0 proves nothing.
- **n/a**: the false-positive rate is below 1 / (number of non-members), so it cannot be measured
  on this data (e.g. 0.1% needs at least 1000 non-members)."""


def audit_markdown(report: AttackReport, meta: Mapping, plots: Mapping[str, str],
                   exposure: ExposureTable | None = None) -> str:
    """A self-contained ``report.md``: title, summary, result table, plots and what the columns mean.

    ``plots`` maps a caption to a file name relative to the report (e.g. ``{"ROC curves": "roc.png"}``);
    with ``exposure`` the most exposed records are named (the whole table is ``exposure.csv``).
    """
    name = Path(str(meta.get("model", "model"))).name or str(meta.get("model", "model"))
    parts = [f"# Membership inference audit: {name}", ""]
    parts += ["## Summary", "", "```", *audit_summary_lines(report, meta), "```", ""]
    parts += ["## Attacks", "", markdown_table(ATTACK_COLUMNS, attack_rows(report)), ""]
    if report.num_shadows == 0:
        parts += ["No shadow models were trained, so only the gap attack is realistic; the oracle rows "
                  "are upper bounds.", ""]
    if exposure is not None:
        from tfmi.exposure import most_exposed_lines

        parts += ["## Most exposed records", "", "```", *most_exposed_lines(exposure), "```", "",
                  "Every audited record, with each realistic attack's score, is in `exposure.csv`.", ""]
    for caption, file in plots.items():
        parts += [f"## {caption}", "", f"![{caption}]({file})", ""]
    parts += ["## What the columns mean", "", _COLUMN_NOTES, ""]
    extra = {k: v for k, v in meta.items() if k in ("command", "seed", "tfmi_version", "created")
             and v is not None}
    if extra:
        parts += ["## Run", ""] + [f"- {k}: `{v}`" for k, v in extra.items()] + [""]
    return "\n".join(parts)
