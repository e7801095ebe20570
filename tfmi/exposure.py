"""Per-record exposure: which audited records leak, not only how much the model leaks on average.

Every realistic attack of an `AttackReport` scores every audited record (`AttackReport.record_scores`).
A record's **risk** is read off the strongest realistic attack (highest max advantage, as the report's
"best attack"): the share of non-members that attack scores below the record (ties count half). A
member with risk 0.999 stands out from 99.9 % of the records the model never saw: an attacker can
single it out. LiRA online's score is a log likelihood ratio; ``p_member_lira`` turns it into the
posterior probability of membership at even prior odds, ``1 / (1 + exp(-score))``.

>>> import numpy as np
>>> from tfmi.attacks.metrics import evaluate_scores
>>> from tfmi.attacks.suite import AttackReport
>>> scores = np.array([3.0, 0.2, 0.1, -1.0])
>>> result = evaluate_scores(scores[:2], scores[2:], attack="loss", threshold=0.0,
...                          threshold_source="shadow")
>>> report = AttackReport([result], 2, 2, 1.0, 0.5, "logits", record_scores={"loss": scores})
>>> table = exposure_table(report, ["m0", "m1", "n0", "n1"], np.array([1, 0, 2, 0]))
>>> [(row["record"], row["risk"]) for row in table.rows[:2]]
[('m0', 1.0), ('m1', 1.0)]
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tfmi.errors import TfmiError

if TYPE_CHECKING:
    from tfmi.attacks.suite import AttackReport

LIRA_ONLINE_PREFIX = "LiRA online"
#: how many records the report names
TOP_RECORDS = 10


@dataclass
class ExposureTable:
    """One row per audited record, most exposed first; ``ranked_by`` names the attack behind ``risk``."""

    headers: list[str]
    rows: list[dict[str, Any]]
    ranked_by: str

    def to_csv(self) -> str:
        """The table as CSV text (floats with 6 significant digits)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.headers, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        return buffer.getvalue()

    def most_exposed(self, count: int = TOP_RECORDS) -> list[dict[str, Any]]:
        return self.rows[:count]


def exposure_table(report: AttackReport, record_ids: Sequence[str], labels: np.ndarray) -> ExposureTable:
    """The per-record exposure of the records ``report`` evaluated, in its order (members, then non-members).

    ``record_ids`` names each record (e.g. its index in the input file); ``labels`` are their classes.
    """
    n = report.num_members + report.num_non_members
    if len(record_ids) != n or len(labels) != n:
        raise TfmiError(f"exposure needs one id and label per audited record ({n}), got {len(record_ids)} "
                        f"ids and {len(labels)} labels")
    realistic = [r for r in report.results
                 if r.threshold_source != "oracle" and r.attack in report.record_scores]
    if not realistic:
        raise TfmiError("no realistic attack kept per-record scores: run the attacks with run_attacks")
    best = max(realistic, key=lambda r: r.advantage)
    is_member = np.r_[np.ones(report.num_members, bool), np.zeros(report.num_non_members, bool)]
    risk = _share_of_non_members_below(report.record_scores[best.attack], is_member)
    lira = next((r.attack for r in realistic if r.attack.startswith(LIRA_ONLINE_PREFIX)), None)
    headers = ["rank", "record", "label", "member", "risk"]
    if lira:
        headers.append("p_member_lira")
    headers += [r.attack for r in realistic]
    order = np.lexsort((-report.record_scores[best.attack], -risk))
    rows = []
    for rank, i in enumerate(order, start=1):
        row: dict[str, Any] = {"rank": rank, "record": record_ids[i], "label": int(labels[i]),
                               "member": bool(is_member[i]), "risk": float(risk[i])}
        if lira:
            log_ratio = np.clip(report.record_scores[lira][i], -700, 700)
            row["p_member_lira"] = float(1.0 / (1.0 + np.exp(-log_ratio)))
        for r in realistic:
            row[r.attack] = float(report.record_scores[r.attack][i])
        rows.append(row)
    return ExposureTable(headers, rows, best.attack)


def _share_of_non_members_below(scores: np.ndarray, is_member: np.ndarray) -> np.ndarray:
    """For every record, the share of non-member scores below its own (ties count half)."""
    reference = np.sort(scores[~is_member])
    below = np.searchsorted(reference, scores, side="left")
    not_above = np.searchsorted(reference, scores, side="right")
    return (below + 0.5 * (not_above - below)) / len(reference)


def most_exposed_lines(table: ExposureTable, count: int = TOP_RECORDS) -> list[str]:
    """Text lines naming the most exposed records, for the terminal and report.md."""
    lines = [f"most exposed records (risk = share of non-members {table.ranked_by} scores below them):"]
    for row in table.most_exposed(count):
        member = "member" if row["member"] else "non-member"
        extra = f", LiRA P(member) {row['p_member_lira']:.3f}" if "p_member_lira" in row else ""
        lines.append(f"  {row['rank']:>2}. {row['record']} (label {row['label']}, {member}): "
                     f"risk {row['risk']:.4f}{extra}")
    return lines
