"""The robustness benchmark's comparison of verdicts across synthetic seeds (benchmarks/bench_findings.py)."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "bench_findings", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_findings.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _run(*verdicts):
    return {"tables": {"table1": {"findings": [
        {"claim": f"claim {i}", "verdict": v, "difference": 1.0 + i, "stderr": 0.5} for i, v in enumerate(verdicts)]}}}


def test_differences_from_the_reference_seed_are_listed_and_conflicts_named():
    reference = _run("HELD", "HELD", "UNRESOLVED", "CONTRADICTED")
    others = {2: _run("HELD", "UNRESOLVED", "UNRESOLVED", "HELD"), 3: _run("HELD", "HELD", "UNRESOLVED", "CONTRADICTED")}
    diffs = bench.compare(reference, others)
    assert [(d["seed"], d["claim"], d["reference"], d["verdict"], d["kind"]) for d in diffs] == [
        (2, "claim 1", "HELD", "UNRESOLVED", "differs"),
        (2, "claim 3", "CONTRADICTED", "HELD", "conflict"),
    ]
    assert bench.compare(reference, {}) == []
