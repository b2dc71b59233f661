"""The paper's qualitative claims, tested on our numbers (DESIGN: "What the demo must show").

A row of a table is measured by *runs*: one :class:`~twostream_lib.evaluate.VideoScores` per training
seed (and per split, for the tables over three splits). Its accuracy is the mean over the runs; its
standard error combines the two sources of chance (:func:`accuracy_row`):

* the test sample: the binomial term p (1 - p) / n over the n test videos;
* training: the spread of the accuracy over seeds (pooled within each split), divided by the runs.

A :class:`Claim` compares two rows ("a > b", "a >= b", "a ~ b"); :func:`check_claims` gives each a
verdict with three values, decided by the difference D of the two accuracies and its standard error:

* the test term is *paired*: both rows are measured on the same videos, so the standard error is that
  of the per-video differences of correctness (averaged over seeds), as in McNemar's test; the
  training term adds both rows' seed spreads;
* ``">"`` (beats): HELD when D > 2 SE, CONTRADICTED when D < -2 SE, UNRESOLVED in between;
* ``">="`` (matches or beats; non-inferiority with the margin :data:`MARGIN`): HELD when D - 2 SE >
  -margin, CONTRADICTED when D + 2 SE < -margin, UNRESOLVED otherwise;
* ``"~"`` (matches; equivalence within the margin): HELD when the whole interval D +- 2 SE lies within
  +-margin, CONTRADICTED when it lies wholly outside, UNRESOLVED otherwise.

"Not significantly worse" is therefore never reported as reproduced: a matching claim needs the
interval to exclude a loss larger than the margin.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from twostream_lib import tables
from twostream_lib.errors import ConfigError
from twostream_lib.evaluate import VideoScores, accuracy

__all__ = ["MARGIN", "RELATIONS", "VERDICTS", "Claim", "Finding", "check_claims", "format_findings",
           "accuracy_row", "correctness", "training_variance"]

#: Points of accuracy within which a "matches" claim counts as matched (stated once, for every table).
MARGIN = 3.0
RELATIONS = {">": "beats", ">=": "matches or beats", "~": "matches"}
VERDICTS = ("HELD", "UNRESOLVED", "CONTRADICTED", "NOT RUN")


@dataclass(frozen=True)
class Claim:
    """Row ``a`` beats (">"), matches or beats (">=") or matches ("~") row ``b``."""

    a: str
    relation: str
    b: str
    text: str

    def __post_init__(self):
        if self.relation not in RELATIONS:
            raise ConfigError(f"claim {self.text!r}: relation must be one of {list(RELATIONS)}, got {self.relation!r}")


@dataclass
class Finding:
    """A claim's verdict and the numbers behind it (percent)."""

    claim: Claim
    verdict: str  # one of VERDICTS
    a: float | None = None  # accuracy of row a
    b: float | None = None
    difference: float | None = None  # a - b
    stderr: float | None = None  # standard error of the difference
    paired_videos: int = 0  # videos both rows were tested on (0: unpaired)

    @property
    def text(self) -> str:
        return self.claim.text

    @property
    def held(self) -> bool | None:
        return {"HELD": True, "CONTRADICTED": False}.get(self.verdict)

    @property
    def detail(self) -> str:
        if self.verdict == "NOT RUN":
            return "not run"
        rule = {">": "needs > 0", ">=": f"needs > -{MARGIN:g}", "~": f"needs within ±{MARGIN:g}"}[self.claim.relation]
        lo, hi = self.difference - 2 * self.stderr, self.difference + 2 * self.stderr
        return (f"{self.a:.1f} vs {self.b:.1f}, difference {self.difference:+.1f} "
                f"(95% interval {lo:+.1f} to {hi:+.1f}; {rule})")


def correctness(runs: list[VideoScores]) -> dict[str, float]:
    """Per video, the fraction of runs that classify it correctly (runs on other splits add their videos)."""
    hits: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        for v, ok in zip(r.videos, r.predictions() == r.labels):
            hits[v].append(float(ok))
    return {v: float(np.mean(h)) for v, h in hits.items()}


def training_variance(runs: list[VideoScores]) -> tuple[float, int]:
    """Variance (percent^2) of the accuracy over training seeds, pooled over the test sets (splits) the
    runs were measured on, and the number of runs; (0, runs) when no test set has two runs."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in runs:
        groups[tuple(r.videos)].append(100.0 * accuracy(r))
    dof = sum(len(g) - 1 for g in groups.values())
    if dof == 0:
        return 0.0, len(runs)
    ss = sum(float(np.sum((np.array(g) - np.mean(g)) ** 2)) for g in groups.values())
    return ss / dof, len(runs)


def accuracy_row(key: str, label: str, runs: list[VideoScores], *, extra: dict | None = None) -> tables.ResultRow:
    """Mean accuracy (percent) over runs with its standard error: binomial over the distinct test videos
    combined with the seed spread (see the module docstring). Runs on the same test videos (seeds) share
    one binomial term; runs on different splits measure disjoint test sets, so their videos add up."""
    accs = np.array([100.0 * accuracy(r) for r in runs])
    n = len(correctness(runs))
    mean = float(accs.mean())
    var, k = training_variance(runs)
    se = math.sqrt(tables.binomial_stderr(mean, n) ** 2 + var / k)
    seeds = len(runs) // len({tuple(r.videos) for r in runs})
    how = f"binomial over {n} test videos" + (f" and spread over {seeds} training seeds" if var > 0 else "")
    return tables.ResultRow(key, label, mean, se, n, how, extra or {}, runs=list(runs))


def _difference(a: tables.ResultRow, b: tables.ResultRow) -> tuple[float, float, int]:
    """(difference, its standard error, paired videos) of two rows' accuracies, in percent."""
    diff = a.accuracy - b.accuracy
    ca, cb = correctness(a.runs), correctness(b.runs)
    common = sorted(set(ca) & set(cb))
    if a.runs and b.runs and len(common) == len(ca) == len(cb):  # measured on the same videos: paired
        d = 100.0 * np.array([ca[v] - cb[v] for v in common])
        test_var = float(d.var(ddof=1)) / len(d) if len(d) > 1 else 0.0
        va, ka = training_variance(a.runs)
        vb, kb = training_variance(b.runs)
        return diff, math.sqrt(test_var + va / ka + vb / kb), len(common)
    return diff, math.hypot(a.stderr or 0.0, b.stderr or 0.0), 0


def _verdict(relation: str, diff: float, se: float, margin: float) -> str:
    lo, hi = diff - 2 * se, diff + 2 * se
    if relation == ">":
        return "HELD" if lo > 0 else "CONTRADICTED" if hi < 0 else "UNRESOLVED"
    if relation == ">=":
        return "HELD" if lo > -margin else "CONTRADICTED" if hi < -margin else "UNRESOLVED"
    return "HELD" if -margin < lo and hi < margin else "CONTRADICTED" if lo > margin or hi < -margin else "UNRESOLVED"


def check_claims(claims: tuple[Claim, ...], rows: dict[str, tables.ResultRow], *,
                 margin: float = MARGIN) -> list[Finding]:
    """The verdict of each claim on measured rows."""
    findings = []
    for c in claims:
        a, b = rows.get(c.a), rows.get(c.b)
        if a is None or b is None or a.accuracy is None or b.accuracy is None:
            findings.append(Finding(c, "NOT RUN"))
            continue
        diff, se, paired = _difference(a, b)
        findings.append(Finding(c, _verdict(c.relation, diff, se, margin), a.accuracy, b.accuracy, diff, se, paired))
    return findings


def format_findings(findings: list[Finding]) -> str:
    """One line per claim: the verdict, the claim, and the numbers behind it."""
    return "\n".join(f"- {f.verdict:12} {f.text}: {f.detail}" for f in findings)
