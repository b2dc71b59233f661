"""Results tables: our numbers beside the paper's, written as ``results/tables/tableN.{csv,md}``.

The paper's values come from :mod:`twostream_lib.paper` only. Each table records the profile,
data set and split its numbers came from, so a reader never has to guess what was run. The README's
results section is generated from these files by :func:`update_readme`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from twostream_lib import paper
from twostream_lib.errors import ConfigError
from twostream_lib.files import atomic_write


@dataclass
class ResultRow:
    """One measured row: accuracy in percent (mean over training seeds) and its uncertainty."""

    key: str  # joins with paper.PaperRow.key (None-matching keys are our extra rows)
    label: str  # what ran: the model and its backbones
    accuracy: float | None
    stderr: float | None = None  # percent; spread over seeds or binomial, see ``uncertainty``
    n_test: int | None = None  # test videos the accuracy is measured on
    uncertainty: str = ""  # how ``stderr`` was obtained
    extra: dict = field(default_factory=dict)  # further columns (e.g. demo parameter counts)
    runs: list = field(default_factory=list, repr=False)  # the VideoScores measured (seeds, splits): not written


def binomial_stderr(accuracy_pct: float, n: int) -> float:
    """Standard error (percent) of an accuracy measured on ``n`` independent test videos."""
    from twostream_lib.evaluate import standard_error

    return 100.0 * standard_error(accuracy_pct / 100.0, n)


def fmt_pct(value: float | None, stderr: float | None = None) -> str:
    """The one formatter for accuracies in checked outputs: one decimal, '±' with the stderr."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}" if stderr is None else f"{value:.1f} ± {stderr:.1f}"


def build_table(
    table: str,
    rows: list[ResultRow],
    *,
    profile: str,
    dataset: str,
    split: str,
    paper_dataset: str = "ucf101",
    paper_counts: dict[str, tuple[int, float]] | None = None,
) -> pd.DataFrame:
    """Join our rows with the paper's by key.

    ``paper_counts`` maps a row key to (layers, params in millions) computed by the library for the
    paper's own architecture (Tables 1, 2); shown beside the paper's ``#layers``/``#parameters``.
    Paper rows we did not run appear with '-' in our column, so the table shows all of the paper.
    """
    # the paper's rows for the run's data set (none: the paper reports this table on another data set only)
    paper_rows = {r.key: r for r in paper.ROWS if r.table == table and r.dataset == paper_dataset}
    records = []
    seen = set()
    for row in rows:
        p = paper_rows.get(row.key)
        seen.add(row.key)
        records.append(_record(row, p, paper_counts))
    for key, p in paper_rows.items():
        if key not in seen:
            records.append(_record(ResultRow(key, p.label, None), p, paper_counts))
    df = pd.DataFrame.from_records(records)
    df.attrs.update(table=table, profile=profile, dataset=dataset, split=split, paper_dataset=paper_dataset)
    return df


def _record(row: ResultRow, p: paper.PaperRow | None, counts) -> dict:
    rec = {
        "key": row.key,
        "row": row.label if p is None else p.label,  # the paper's row (ours where the paper has none)
        "ran": row.label if row.accuracy is not None else "",  # what was actually run (backbones)
        "ours_acc": None if row.accuracy is None else round(row.accuracy, 2),
        "ours_stderr": None if row.stderr is None else round(row.stderr, 2),
        "ours": fmt_pct(row.accuracy, row.stderr),
        "paper_acc": None if p is None else p.accuracy,
        "paper_source": "" if p is None else p.source,
        "n_test": row.n_test,
    }
    if counts is not None:
        layers, params = counts.get(row.key, (None, None))
        rec.update(
            layers_computed=layers,
            params_m_computed=None if params is None else round(params, 2),
            layers_paper=None if p is None else p.layers,
            params_m_paper=None if p is None else p.params_m,
        )
    rec.update({k: v for k, v in row.extra.items()})
    return rec


def write_table(df: pd.DataFrame, results_dir: str | Path, *, title: str, notes: str = "") -> tuple[Path, Path]:
    """Write ``tableN.csv`` and ``tableN.md`` atomically; return their paths."""
    table = df.attrs.get("table")
    if not table:
        raise ConfigError("the DataFrame has no attrs['table']; build it with build_table()")
    out = Path(results_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{table}.csv", out / f"{table}.md"
    meta = {k: df.attrs.get(k, "") for k in ("profile", "dataset", "split", "paper_dataset")}
    full = df.copy()
    for k, v in meta.items():
        full[k] = v
    atomic_write(csv_path, full.to_csv(index=False, lineterminator="\n"))
    atomic_write(md_path, to_markdown(df, title=title, notes=notes))
    return csv_path, md_path


def to_markdown(df: pd.DataFrame, *, title: str, notes: str = "") -> str:
    """A reader-facing markdown table: our accuracy beside the paper's (and parameter counts)."""
    a = df.attrs
    show = pd.DataFrame({"Row (paper)": df["row"], "What ran (ours)": df["ran"].replace("", "-"),
                         f"Ours ({a.get('dataset')}, %)": df["ours"]})
    show[f"Paper ({a.get('paper_dataset')}, %)"] = [fmt_pct(v) if v is not None else "-" for v in df["paper_acc"]]
    if "params_m_computed" in df:
        show["#layers (computed / paper)"] = [
            f"{_int(c)} / {_int(p)}" for c, p in zip(df["layers_computed"], df["layers_paper"])
        ]
        show["#params M (computed / paper)"] = [
            f"{_num(c)} / {_num(p)}" for c, p in zip(df["params_m_computed"], df["params_m_paper"])
        ]
    for col in df.columns:
        if col.startswith("demo_"):
            show[col.replace("demo_", "demo ").replace("_", " ")] = df[col].map(_num)
    if "ceiling" in df:  # synthetic data: what the row's model family could reach at best
        show["Chance %"] = df["chance"].map(_pct)
        show["Ceiling %"] = df["ceiling"].map(_pct)
    header = (
        f"### {title}\n\n"
        f"profile `{a.get('profile')}`, data set `{a.get('dataset')}`, split {a.get('split')}; "
        f"paper values: {a.get('paper_dataset')}.\n\n"
    )
    body = show.to_markdown(index=False, disable_numparse=True)  # numbers as formatted
    families = family_markdown(df)
    if families:
        body += ("\n\nPer class family (ours, %; in brackets the data card's ceiling of the row's model family "
                 "for that family):\n\n" + families)
    return header + body + ("\n\n" + notes.strip() if notes.strip() else "") + "\n"


FAMILY_PREFIX, FAMILY_CEILING_PREFIX = "family:", "family_ceiling:"


def family_columns(df: pd.DataFrame) -> list[str]:
    """The class families a table breaks its accuracies down by (synthetic data), in column order."""
    return [c[len(FAMILY_PREFIX):] for c in df.columns if c.startswith(FAMILY_PREFIX)]


def family_markdown(df: pd.DataFrame) -> str:
    """The measured rows' accuracy per class family beside each family's ceiling; '' without families."""
    fams = family_columns(df)
    if not fams:
        return ""
    measured = df[df["ours_acc"].notna()]
    show = pd.DataFrame({"What ran (ours)": measured["ran"]})
    for fam in fams:
        show[fam] = [f"{_pct(v)} ({_pct(c)})" for v, c in
                     zip(measured[FAMILY_PREFIX + fam], measured[FAMILY_CEILING_PREFIX + fam])]
    return show.to_markdown(index=False, disable_numparse=True)


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.1f}"


def _int(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else str(int(x))


def _num(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.2f}"


README_BEGIN = "<!-- results:begin (generated by `python -m twostream_lib.tables`; do not edit) -->"
README_END = "<!-- results:end -->"


def update_readme(readme: str | Path, results_dir: str | Path) -> bool:
    """Replace the README's results section with the generated findings summary (``findings.md``), the
    figures and a link to every table; True if changed. The tables themselves stay in
    ``results/tables/`` (the README is a front door, not the results)."""
    readme, results_dir = Path(readme), Path(results_dir)
    text = readme.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        raise ConfigError(f"{readme} has no results markers {README_BEGIN!r} ... {README_END!r}")

    def rel(p: Path) -> str:
        return (p.relative_to(readme.parent) if p.is_relative_to(readme.parent) else p).as_posix()

    parts = []
    summary = results_dir / "findings.md"
    if summary.is_file():  # its own "# Findings" title is the README section's job
        parts.append(re.sub(r"^# Findings\s*", "", summary.read_text(encoding="utf-8")).strip()
                     .replace("](notebooks/", f"]({rel(results_dir)}/notebooks/"))
    for png in sorted((results_dir / "figures").glob("*.png")):
        parts.append(f"![{png.stem}]({rel(png)})")
    links = [f"[{md.stem}]({rel(md)})" for md in sorted((results_dir / "tables").glob("table*.md"), key=_table_order)]
    if links:
        parts.append("Full tables (ours beside the paper's, with chance, ceiling and per-family columns): "
                     + ", ".join(links) + ".")
    section = "\n\n".join(parts) if parts else "_No results yet: run `./run_all.sh`._"
    new = re.sub(
        re.escape(README_BEGIN) + ".*?" + re.escape(README_END),
        lambda _: f"{README_BEGIN}\n\n{section}\n\n{README_END}",
        text,
        flags=re.S,
    )
    if new != text:
        atomic_write(readme, new)
    return new != text


def _table_order(path: Path):
    m = re.search(r"(\d+)", path.stem)
    return (int(m.group(1)) if m else 99, path.stem)


if __name__ == "__main__":  # python -m twostream_lib.tables  -> refresh README results section
    from twostream_lib.config import REPO_ROOT

    changed = update_readme(REPO_ROOT / "README.md", REPO_ROOT / "results")
    print("README results section", "updated" if changed else "unchanged")
