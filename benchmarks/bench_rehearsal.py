"""Benchmark: the paper path rehearsed end to end on a CPU, and how well ``plan`` predicted its disk.

The ``smoke`` profile is the ``paper`` pipeline (VGG-M-2048 and VGG-16, the released crops and 3D conv
initialisation, feature caches memory-mapped on disk) with one pass of each training, on the
generated rehearsal set in UCF101's layout and size (:mod:`twostream_lib.data.rehearsal`: 320 x 240
videos, frames at 341 x 256, OpenCV's TV-L1). This script

1. makes the rehearsal set (timed: frames and TV-L1 flow; the record says whether it was made or an earlier run's
   was reused),
2. asks ``plan`` (:func:`twostream_lib.plan.make_plan`) for every notebook's feature-cache and
   checkpoint bytes on that data, before anything is trained,
3. runs the notebooks one at a time through ``./run_all.sh --profile smoke --only <notebook>`` from an
   empty ``results/smoke/runs/``, measuring after each the bytes it added there: feature caches
   (``features/`` folders) and checkpoints (``*.pt``),

and writes ``results/benchmarks/rehearsal.json``: seconds per notebook with the machine's matmul
probe, predicted beside measured bytes, and whether every notebook's cache prediction is within 10%.

    python benchmarks/bench_rehearsal.py                 # every notebook, ~15 min on 2 cores
    python benchmarks/bench_rehearsal.py --only table1   # one notebook (its towers are trained first)

CI runs the part that fits a few minutes (tests/test_rehearsal.py: three classes, VGG-M-2048's
Table 1, the same comparison).
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twostream_lib.arithmetic import matmul_gflops  # noqa: E402
from twostream_lib.config import load_profile  # noqa: E402
from twostream_lib.files import atomic_write_json  # noqa: E402
from twostream_lib.plan import make_plan, measured_bytes  # noqa: E402
from twostream_lib.runner import results_folder  # noqa: E402

OUT = REPO / "results" / "benchmarks" / "rehearsal.json"
TOLERANCE = 0.10  # issue 12: plan predicts the rehearsal's cache bytes within 10%


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="notebooks whose name contains NAME")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    gflops = matmul_gflops()
    folder = results_folder("smoke", {})
    cfg = load_profile("smoke", results_dir=str(folder))
    shutil.rmtree(folder / "runs", ignore_errors=True)  # from nothing: every tower, head and cache anew

    from twostream_lib import experiments as ex
    from twostream_lib.data.rehearsal import RECORD

    reused = (cfg.data_dir / "ucf101" / RECORD).exists()  # then data_seconds times only the check
    t0 = time.perf_counter()
    ex.prepare_data(cfg)  # the rehearsal set (kept when it is already there with these parameters)
    data_seconds = time.perf_counter() - t0

    plan = make_plan(cfg, only=args.only)
    notebooks, ok = [], True
    for nb in plan.notebooks:
        before = measured_bytes(folder / "runs")
        t0 = time.perf_counter()
        subprocess.run([str(REPO / "run_all.sh"), "--profile", "smoke", "--only", nb.notebook], cwd=REPO, check=True)
        seconds = time.perf_counter() - t0
        after = measured_bytes(folder / "runs")
        cache, ckpt = after["cache"] - before["cache"], after["checkpoints"] - before["checkpoints"]
        predicted = nb.new_feature_cache_bytes  # the caches this notebook writes (others it reuses)
        within = abs(cache - predicted) <= TOLERANCE * predicted if predicted else cache == 0
        ok &= within
        notebooks.append({"notebook": nb.notebook, "seconds": round(seconds, 1),
                          "feature_cache_bytes": {"predicted": predicted, "measured": cache,
                                                  "ratio": round(cache / predicted, 4) if predicted else None,
                                                  "within_10_percent": within},
                          "checkpoint_bytes": {"predicted": nb.checkpoint_bytes, "measured": ckpt}})
        print(f"{nb.notebook}: {seconds:.0f} s, feature caches {cache / 1e6:.1f} MB measured vs {predicted / 1e6:.1f} MB "
              f"predicted, checkpoints {ckpt / 1e6:.1f} vs {nb.checkpoint_bytes / 1e6:.1f} MB")
    record = {
        "benchmark": "the smoke profile's rehearsal of every notebook, and plan's predicted disk",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/bench_rehearsal.py", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count(),
                    "probe_gflops": round(gflops, 1)},
        "profile": {k: getattr(cfg, k) for k in ("backbone", "deep_backbone", "rehearsal_classes", "rehearsal_frames",
                                                 "T", "batch_size", "feature_epochs", "feature_cache", "final_test_clips")},
        "data_seconds": round(data_seconds, 1),
        "data": "reused (made by an earlier run with the same parameters)" if reused else "made by this run",
        "notebooks": notebooks,
        "total_seconds": round(data_seconds + sum(n["seconds"] for n in notebooks), 1),
        "cache_within_10_percent": ok,
    }
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}; total {record['total_seconds']:.0f} s; caches within 10%: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
