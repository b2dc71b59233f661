"""Benchmark: do the demo's verdicts survive the synthetic seed? (the robustness check of the findings)

The demo was designed on synthetic seeds 0 and 1 only. This script runs the table notebooks'
experiments (``experiments.run_table``, exactly what ``./run_all.sh -p synthetic_seed N`` runs) on
other seeds that nothing was tuned on, and records per seed every row's accuracy (with its standard
error and per-family accuracies) and every claim's verdict, then compares each verdict with the
reference seed's:

* ``same``: the verdict is the reference seed's;
* ``differs``: HELD / UNRESOLVED on one seed, UNRESOLVED / HELD (or CONTRADICTED / UNRESOLVED) on
  another: a claim near the edge of what the test set can resolve;
* ``conflict``: HELD on one seed and CONTRADICTED on another: the finding does not survive the seed.

    python benchmarks/bench_findings.py --seeds 2 3 4                 # Tables 1-4, ~6 min per seed on 2 cores
    python benchmarks/bench_findings.py --seeds 2 --tables table1     # one table

Each seed's runs are kept in ``results/demo-seed<k>/`` (the folder ``./run_all.sh -p synthetic_seed k``
uses), so a repeated call re-uses them. The reference seed (``--reference``, default 0) is read from
its own run folder (``results/`` for seed 0) and computed there if missing. Writes
``results/benchmarks/findings_seeds.json`` with the machine's matmul probe.
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twostream_lib.arithmetic import describe, matmul_gflops  # noqa: E402
from twostream_lib.files import atomic_write_json  # noqa: E402
from twostream_lib.runner import results_folder  # noqa: E402

OUT = REPO / "results" / "benchmarks" / "findings_seeds.json"
DEFAULT_TABLES = ("table1", "table2", "table3", "table4")


def run_seed(seed: int, tables: list[str]) -> dict:
    """Every table's rows and verdicts on synthetic seed ``seed`` (in its own results folder)."""
    from twostream_lib import experiments as ex

    folder = results_folder("demo", {"synthetic_seed": seed})
    cfg = ex.setup("demo", synthetic_seed=seed, results_dir=str(folder))
    t0 = time.perf_counter()
    data = ex.prepare_data(cfg)
    out = {"results_dir": str(folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder),
           "seconds": {"data": round(time.perf_counter() - t0, 1)}, "tables": {}}
    for table in tables:
        t0 = time.perf_counter()
        result = ex.run_table(cfg, data, table)
        out["seconds"][table] = round(time.perf_counter() - t0, 1)
        rows = {}
        for d in result.frame.to_dict("records"):
            if d["ours_acc"] is None or d["ours_acc"] != d["ours_acc"]:  # paper rows we did not run
                continue
            rows[d["key"]] = {"accuracy": d["ours_acc"], "stderr": d["ours_stderr"], "ran": d["ran"],
                              **{k: round(float(d[k]), 2) for k in ("chance", "ceiling") if k in d},
                              "families": {k.split(":", 1)[1]: round(float(v), 1) for k, v in d.items()
                                           if k.startswith("family:") and v == v}}
        out["tables"][table] = {
            "rows": rows,
            "findings": [{"claim": f.text, "verdict": f.verdict, "a": f.a, "b": f.b, "difference": f.difference,
                          "stderr": f.stderr} for f in result.findings]}
        print(f"seed {seed} {table}: " + ", ".join(f.verdict for f in result.findings)
              + f" ({out['seconds'][table]:.0f} s)", flush=True)
    return out


def compare(reference: dict, others: dict[int, dict]) -> list[dict]:
    """One entry per (seed, claim) whose verdict is not the reference seed's."""
    diffs = []
    for seed, run in others.items():
        for table, t in run["tables"].items():
            ref = {f["claim"]: f["verdict"] for f in reference["tables"].get(table, {}).get("findings", [])}
            for f in t["findings"]:
                want = ref.get(f["claim"])
                if want is None or want == f["verdict"]:
                    continue
                kind = "conflict" if {want, f["verdict"]} == {"HELD", "CONTRADICTED"} else "differs"
                diffs.append({"seed": seed, "table": table, "claim": f["claim"], "reference": want,
                              "verdict": f["verdict"], "kind": kind,
                              "difference": None if f["difference"] is None else round(f["difference"], 1),
                              "stderr": None if f["stderr"] is None else round(f["stderr"], 1)})
    return diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4], help="synthetic seeds to check")
    ap.add_argument("--reference", type=int, default=0, help="the seed whose verdicts the others must repeat")
    ap.add_argument("--tables", nargs="+", default=list(DEFAULT_TABLES))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.reference in args.seeds:
        ap.error(f"--reference {args.reference} is also in --seeds")
    gflops = matmul_gflops()
    runs = {seed: run_seed(seed, args.tables) for seed in [args.reference, *args.seeds]}
    reference = runs.pop(args.reference)
    diffs = compare(reference, runs)
    verdicts = {}
    for table in args.tables:
        for i, f in enumerate(reference["tables"][table]["findings"]):
            verdicts[f"{table}: {f['claim']}"] = {str(args.reference): f["verdict"], **{
                str(s): r["tables"][table]["findings"][i]["verdict"] for s, r in runs.items()}}
    record = {
        "what": "demo verdicts of Tables 1-4 on synthetic seeds nothing was tuned on, against the reference seed",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "probe_gflops": round(gflops, 1), "arithmetic": describe()},
        "reference_seed": args.reference, "seeds": args.seeds, "tables": args.tables,
        "verdicts": verdicts,
        "differences": diffs,
        "conflicts": sum(d["kind"] == "conflict" for d in diffs),
        "runs": {str(args.reference): reference, **{str(s): r for s, r in runs.items()}},
    }
    atomic_write_json(args.out, record)
    print(f"{len(diffs)} verdicts differ from seed {args.reference}'s "
          f"({record['conflicts']} HELD against CONTRADICTED); written to {args.out}")
    for d in diffs:
        print(f"  seed {d['seed']} {d['table']}: {d['claim']}: {d['reference']} -> {d['verdict']} "
              f"(difference {d['difference']}, SE {d['stderr']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
