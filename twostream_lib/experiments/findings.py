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

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twostream_lib import tables
from twostream_lib.errors import ConfigError
from twostream_lib.evaluate import VideoScores, accuracy
from twostream_lib.files import atomic_write, atomic_write_json

__all__ = ["MARGIN", "RELATIONS", "VERDICTS", "Claim", "Finding", "check_claims", "format_findings",
           "accuracy_row", "correctness", "training_variance", "write_findings", "summary_markdown",
           "write_summary", "SUMMARY_NAME"]

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
    runs were measured on, and the number of runs. With one run per split (Table 5's heads), the
    variance over the splits stands in: it holds the training spread and the splits' differences, so it
    errs on the wide side. (0, runs) for a single run."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in runs:
        groups[tuple(r.videos)].append(100.0 * accuracy(r))
    dof = sum(len(g) - 1 for g in groups.values())
    if dof == 0:
        means = [g[0] for g in groups.values()]
        return (float(np.var(means, ddof=1)) if len(means) > 1 else 0.0), len(runs)
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
    sets = len({tuple(r.videos) for r in runs})
    seeds = len(runs) // sets
    spread = f" and spread over {seeds} training seeds" if seeds > 1 else f" and spread over {sets} splits"
    how = f"binomial over {n} test videos" + (spread if var > 0 else "")
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


# ---- the recorded verdicts and the generated summary --------------------------------------------------

SUMMARY_NAME = "findings.md"
_RECORD_SUFFIX = ".findings.json"


def write_findings(results_dir: str | Path, table: str, title: str, findings: list[Finding], *,
                   profile: str, dataset: str) -> Path:
    """Record a table's verdicts with their numbers as ``<results>/tables/<table>.findings.json``, then
    regenerate ``<results>/findings.md`` from every table's record."""
    out = Path(results_dir) / "tables" / f"{table}{_RECORD_SUFFIX}"
    record = {"table": table, "title": title, "profile": profile, "dataset": dataset, "margin": MARGIN,
              "findings": [{"claim": f.text, "relation": f.claim.relation, "verdict": f.verdict,
                            "a": _round(f.a), "b": _round(f.b), "difference": _round(f.difference),
                            "stderr": _round(f.stderr), "paired_videos": f.paired_videos, "detail": f.detail}
                           for f in findings]}
    atomic_write_json(out, record)
    write_summary(results_dir)
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 2)


def _table_number(path: Path) -> tuple:
    digits = "".join(ch for ch in path.name.split(".")[0] if ch.isdigit())
    return (int(digits) if digits else 99, path.name)


def summary_markdown(results_dir: str | Path) -> str:
    """Every recorded verdict with its numbers, table by table, and the count of each verdict."""
    results_dir = Path(results_dir)
    records = [json.loads(p.read_text(encoding="utf-8"))
               for p in sorted((results_dir / "tables").glob(f"*{_RECORD_SUFFIX}"), key=_table_number)]
    if not records:
        return "_No findings recorded yet: run `./run_all.sh`._\n"
    counts = Counter(f["verdict"] for r in records for f in r["findings"])
    runs = sorted({f"profile `{r['profile']}`, data set `{r['dataset']}`" for r in records})
    lines = [
        "The paper's claims tested on our numbers (" + "; ".join(runs) + "): "
        + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v]) + ".",
        "",
        "HELD: the difference lies in the paper's direction beyond two standard errors (a \"matches\" claim: "
        f"its interval excludes a loss of more than {MARGIN:g} points); CONTRADICTED: beyond two standard "
        "errors the other way; UNRESOLVED: in between. Each table's notebook explains the verdicts that do "
        "not hold.",
        "",
    ]
    seeds = _seed_verdicts(results_dir)
    if seeds:
        lines[1:1] = ["", seeds["summary"]]
    lines += ["| Table | Claim | Verdict | Ours (a vs b, difference, 95% interval) |"
              + (" Other synthetic seeds |" if seeds else ""),
              "|:--|:--|:--|:--|" + (":--|" if seeds else "")]
    for r in records:
        nb = sorted((results_dir / "notebooks").glob(f"*_{r['table']}.ipynb"))
        where = f"[{r['table']}](notebooks/{nb[0].name})" if nb else r["table"]
        for f in r["findings"]:
            other = ""
            if seeds:
                per_seed = seeds["verdicts"].get(f"{r['table']}: {f['claim']}", {})
                other = " " + (", ".join(f"{k}: {v}" for k, v in per_seed.items()) or "-") + " |"
            lines.append(f"| {where} | {f['claim']} | {f['verdict']} | {f['detail']} |{other}")
    return "\n".join(lines) + "\n"


SEEDS_RECORD = Path("benchmarks") / "findings_seeds.json"


def _seed_verdicts(results_dir: Path) -> dict | None:
    """The verdicts recorded on other synthetic seeds by ``benchmarks/bench_findings.py``, if any:
    {"verdicts": {"table: claim": {seed: verdict}}, "summary": a sentence}."""
    path = results_dir / SEEDS_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    ref = str(record["reference_seed"])
    verdicts = {k: {s: v for s, v in per.items() if s != ref} for k, per in record["verdicts"].items()}
    diffs = record["differences"]
    summary = (f"Robustness (`benchmarks/bench_findings.py`, `results/{SEEDS_RECORD.as_posix()}`): on synthetic seeds "
               + ", ".join(map(str, record["seeds"])) + f", on which nothing was tuned, {len(diffs)} of "
               f"{len(verdicts) * len(record['seeds'])} verdicts of " + ", ".join(record["tables"])
               + f" differ from seed {ref}'s, {record['conflicts']} of them HELD against CONTRADICTED.")
    return {"verdicts": verdicts, "summary": summary}


def write_summary(results_dir: str | Path) -> Path:
    """Write ``<results>/findings.md`` (generated; the README includes it)."""
    path = Path(results_dir) / SUMMARY_NAME
    atomic_write(path, "# Findings\n\n" + summary_markdown(results_dir))
    return path
