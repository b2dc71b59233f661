"""The paper's qualitative claims, tested on our numbers (DESIGN: "What the demo must show").

A table row's accuracy is a mean over runs (training seeds, or splits) with a standard error that
combines the binomial term of the test videos with the spread of the runs (:func:`accuracy_row`).
A :class:`Claim` compares two rows; :func:`check_claims` turns each into a :class:`Finding`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twostream_lib import tables
from twostream_lib.evaluate import VideoScores, accuracy

__all__ = ["Claim", "Finding", "check_claims", "format_findings", "accuracy_row"]


@dataclass(frozen=True)
class Claim:
    """``a`` beats (">") or matches-or-beats (">=") ``b`` by more than one standard error of the difference."""

    a: str
    relation: str  # ">" | ">="
    b: str
    text: str


@dataclass
class Finding:
    text: str
    held: bool | None  # None: a row it needs was not run
    detail: str


def check_claims(claims: tuple[Claim, ...], rows: dict[str, tables.ResultRow]) -> list[Finding]:
    """Test each claim on measured rows (accuracy and stderr in percent)."""
    findings = []
    for c in claims:
        a, b = rows.get(c.a), rows.get(c.b)
        if a is None or b is None or a.accuracy is None or b.accuracy is None:
            findings.append(Finding(c.text, None, "not run"))
            continue
        diff = a.accuracy - b.accuracy
        se = math.hypot(a.stderr or 0.0, b.stderr or 0.0)
        held = diff > se if c.relation == ">" else diff > -se
        findings.append(Finding(c.text, held, f"{a.accuracy:.1f} vs {b.accuracy:.1f} (difference "
                                              f"{diff:+.1f}, one standard error {se:.1f})"))
    return findings


def format_findings(findings: list[Finding]) -> str:
    """One line per claim: HELD / NOT HELD / NOT RUN, the claim, and the numbers behind the verdict."""
    word = {True: "HELD", False: "NOT HELD", None: "NOT RUN"}
    return "\n".join(f"- {word[f.held]:8} {f.text}: {f.detail}" for f in findings)


def accuracy_row(key: str, label: str, runs: list[VideoScores], *, extra: dict | None = None) -> tables.ResultRow:
    """Mean accuracy over runs (seeds or splits); uncertainty = binomial SE over the test videos
    combined with the spread of the runs (their standard error), in percent.

    Runs on the same test videos (training seeds) share one binomial term; runs on different splits
    measure on disjoint test sets, so their videos add up."""
    accs = np.array([100.0 * accuracy(r) for r in runs])
    distinct = {tuple(r.videos) for r in runs}
    n = sum(len(v) for v in distinct)
    mean = float(accs.mean())
    se = tables.binomial_stderr(mean, n)
    how = f"binomial over {n} test videos"
    if len(runs) > 1:
        se = math.hypot(se, float(accs.std(ddof=1)) / math.sqrt(len(runs)))
        how += f" and spread over {len(runs)} runs"
    return tables.ResultRow(key, label, mean, se, n, how, extra or {})
