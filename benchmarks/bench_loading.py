"""Benchmark: training samples per second from one-JPEG-per-file frames vs the packed per-video store.

A two-stream training sample (paper Sec. 3.5) is T = 5 RGB frames and T flow stacks of L = 10 u/v
frames: with tau < L the stacks overlap, but a sample still decodes 5 RGB JPEGs and up to 2 x 50
flow JPEGs, i.e. opens up to ~100 small files in the authors' layout. The packed store
(``stores.pack_store``) keeps the very same JPEG bytes in one file per video. This script prepares
the real UCF101 clip in ``tests/data/videos`` (provenance: ``tests/data/README.md``) at the paper's short side of 256 px (frames + TV-L1
flow, fast preset) once into a temporary folder, packs it, and times ``TwoStreamClips`` (T=5, L=10,
224 x 224 "jitter" crops, flips) through a DataLoader with 1 and 2 worker processes for both layouts.

    python benchmarks/bench_loading.py              # about 2-3 minutes on 2 cores
    python benchmarks/bench_loading.py --quick      # a smoke run

Writes ``results/benchmarks/loading.json`` and prints a markdown table. The frames are in the page
cache for both layouts (one clip, read over and over), so this measures the cost of opening and
decoding, not of a cold disk; on a cold disk or a network file system the packed store gains more.
Besides wall-clock samples/s it records CPU time per sample (main process + workers, and in one
process without a DataLoader, split into store reads and the whole sample), which other jobs on a
shared machine do not inflate; the record also keeps the load average before and after.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twostream_lib.files import atomic_write_json  # noqa: E402
from twostream_lib.data.prepare import prepare_videos  # noqa: E402  (after the path set-up above)
from twostream_lib.data.sampling import ClipSampling, TwoStreamClips, clip_indices  # noqa: E402
from twostream_lib.data.splits import VideoItem  # noqa: E402
from twostream_lib.data.stores import open_store, pack_store  # noqa: E402

DEFAULT_VIDEO = REPO / "tests" / "data" / "videos" / "ucf101" / "v_Basketball_g01_c01.avi"  # tests/data/README.md
OUT = REPO / "results" / "benchmarks" / "loading.json"
WORKERS = (1, 2)
BATCH = 8


def _worker_init(_):
    cv2.setNumThreads(1)  # one core per worker, as in training with several workers


def _cpu_seconds() -> np.ndarray:
    """(user, system) CPU seconds of this process and its finished children (the DataLoader workers,
    once joined)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return np.array([me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime])


def time_loader(store, name: str, n_samples: int, workers: int, sampling: ClipSampling,
                min_seconds: float) -> dict:
    """Samples per second of a DataLoader over ``TwoStreamClips``; the first batch (worker start-up)
    is not timed. Runs at least ``n_samples`` samples and ``min_seconds`` seconds. Also the CPU
    seconds per sample of the main process and the workers together (all batches), which other
    load on a shared machine does not inflate."""
    item = VideoItem(name=name, label=0, class_name="Basketball", relpath=f"Basketball/{name}.avi")
    ds = TwoStreamClips(store, [item] * (n_samples + BATCH), sampling, train=True, seed=0)
    epoch, timed, seconds, loaded = 0, 0, 0.0, 0
    cpu_start = _cpu_seconds()
    while timed < n_samples or seconds < min_seconds:
        ds.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers,
                                             worker_init_fn=_worker_init)
        it = iter(loader)
        loaded += len(next(it)["label"])  # start-up
        start = time.perf_counter()
        for batch in it:
            timed += len(batch["label"])
            loaded += len(batch["label"])
        seconds += time.perf_counter() - start
        epoch += 1
        del it, loader  # joins the workers: their CPU time is now counted
    cpu = _cpu_seconds() - cpu_start
    return {"workers": workers, "samples": timed, "seconds": round(seconds, 3),
            "samples_per_s": round(timed / seconds, 2), "ms_per_sample": round(1000 * seconds / timed, 2),
            "cpu_ms_per_sample": round(1000 * cpu.sum() / loaded, 2),
            "cpu_system_ms_per_sample": round(1000 * cpu[1] / loaded, 2)}


def cpu_per_sample(store, name: str, sampling: ClipSampling, n: int) -> dict:
    """CPU milliseconds per sample in this process (no DataLoader), independent of other load:
    "read" = decoding the sample's distinct frames from the store, "sample" = the whole
    ``TwoStreamClips.__getitem__`` (read, crop, resize, flip, normalise)."""
    item = VideoItem(name=name, label=0, class_name="Basketball", relpath=f"Basketball/{name}.avi")
    ds = TwoStreamClips(store, [item] * n, sampling, train=True, seed=1)
    ds[0]
    n_frames = store.num_frames(name)
    plans = [clip_indices(n_frames, ds.sample_plan(i, 1000, 1000)[0], sampling.L) for i in range(n)]
    start = time.process_time()
    for rgb, flow in plans:
        store.read_rgb(name, np.unique(rgb).tolist())
        store.read_flow(name, np.unique(flow).tolist())
    read = time.process_time() - start
    start = time.process_time()
    for i in range(n):
        ds[i]
    total = time.process_time() - start
    return {"read": round(1000 * read / n, 2), "sample": round(1000 * total / n, 2)}


def files_per_sample(n_frames: int, sampling: ClipSampling, draws: int = 2000) -> float:
    """Mean number of JPEG files one sample reads in the one-file-per-frame layout."""
    rng = np.random.default_rng(0)
    total = 0
    for _ in range(draws):
        tau = int(rng.integers(sampling.tau[0], sampling.tau[1] + 1))
        span = (sampling.T - 1) * tau
        lo, hi = min(0, n_frames - 1 - span), max(0, n_frames - 1 - span)
        positions = int(rng.integers(lo, hi + 1)) + tau * np.arange(sampling.T)
        rgb, flow = clip_indices(n_frames, positions, sampling.L)
        total += len(np.unique(rgb)) + 2 * len(np.unique(flow))
    return total / draws


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--samples", type=int, default=160, help="timed samples per configuration (at least)")
    ap.add_argument("--min-seconds", type=float, default=8.0, help="timed seconds per configuration (at least)")
    ap.add_argument("--work-dir", type=Path, default=None, help="keep the prepared frames here (default: temp)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--quick", action="store_true", help="smoke run: few samples")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.min_seconds = 16, 0.0
    if not args.video.is_file():
        print(f"error: video {args.video} not found", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    sampling = ClipSampling(T=5, L=10, tau=(1, 10), size=224, crop="jitter", flip=True)

    with tempfile.TemporaryDirectory(prefix="bench_loading_") as tmp:
        work = args.work_dir or Path(tmp)
        jpeg_root, packed_root = work / "jpeg", work / "packed"
        t0 = time.perf_counter()
        report = prepare_videos([args.video], jpeg_root, short_side=256, tvl1={"preset": "fast"}, workers=1,
                                progress=False)
        if report.failed:
            print(f"error: preparing {args.video} failed: {report.failed}", file=sys.stderr)
            return 2
        prepare_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pack_store(jpeg_root, packed_root, progress=False)
        pack_s = time.perf_counter() - t0
        stores = {"jpeg files (authors' layout)": open_store(jpeg_root, "authors"),
                  "packed (one file per video)": open_store(packed_root, "packed")}
        name = args.video.stem
        jpeg_store = stores["jpeg files (authors' layout)"]
        n_frames = jpeg_store.num_frames(name)
        height, width = jpeg_store.read_rgb(name, [0]).shape[1:3]
        jpeg_bytes = sum(p.stat().st_size for p in jpeg_root.rglob("*.jpg"))
        pack_bytes = sum(p.stat().st_size for p in packed_root.rglob("*.pack"))
        # identical decoded arrays: the packed store holds the same JPEG bytes
        a, b = stores.values()
        idx = list(range(0, n_frames - 1, 17))
        assert np.array_equal(a.read_rgb(name, idx), b.read_rgb(name, idx))
        assert np.array_equal(a.read_flow(name, idx), b.read_flow(name, idx))

        cv2.setNumThreads(1)
        cpu_ms = {layout: cpu_per_sample(store, name, sampling, max(8, args.samples // 4))
                  for layout, store in stores.items()}
        rows = []
        for workers in WORKERS:
            for layout, store in stores.items():
                r = time_loader(store, name, args.samples, workers, sampling, args.min_seconds)
                r["layout"] = layout
                rows.append(r)
                print(f"{layout:32s} workers={workers}: {r['samples_per_s']:7.1f} samples/s "
                      f"({r['ms_per_sample']:.1f} ms/sample, {r['cpu_ms_per_sample']:.1f} CPU ms/sample, "
                      f"{r['samples']} samples)", flush=True)

    speedup = {}
    for workers in WORKERS:
        jpeg = next(r for r in rows if r["workers"] == workers and r["layout"].startswith("jpeg"))
        packed = next(r for r in rows if r["workers"] == workers and r["layout"].startswith("packed"))
        speedup[str(workers)] = round(packed["samples_per_s"] / jpeg["samples_per_s"], 2)
    record = {
        "benchmark": "training samples per second, one JPEG per file vs packed store",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "opencv": cv2.__version__,
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "video": {"file": args.video.name, "frames": n_frames, "flow_frames": n_frames - 1,
                  "frame_size": [width, height], "prepare_seconds": round(prepare_s, 1),
                  "pack_seconds": round(pack_s, 2), "jpeg_files": 3 * n_frames - 2,
                  "jpeg_bytes": jpeg_bytes, "pack_bytes": pack_bytes},
        "sampling": {"T": sampling.T, "L": sampling.L, "tau": list(sampling.tau), "size": sampling.size,
                     "crop": sampling.crop, "flip": sampling.flip, "batch_size": BATCH,
                     "jpeg_files_per_sample": round(files_per_sample(n_frames, sampling), 1),
                     "page_cache": "warm (one clip read repeatedly)"},
        "cpu_ms_per_sample_in_process": cpu_ms,
        "results": rows,
        "packed_speedup": speedup,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, record, sort_keys=False)

    print()
    print("| layout | workers | samples/s | ms/sample (wall) | CPU ms/sample, all processes (of which system) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['workers']} | {r['samples_per_s']:.1f} | {r['ms_per_sample']:.1f} | "
              f"{r['cpu_ms_per_sample']:.1f} ({r['cpu_system_ms_per_sample']:.1f}) |")
    print("\nCPU ms per sample in one process (no DataLoader): "
          + "; ".join(f"{k}: read {v['read']}, whole sample {v['sample']}" for k, v in cpu_ms.items()))
    print(f"packed / jpeg speed-up: {speedup}; {record['sampling']['jpeg_files_per_sample']} JPEG files per "
          f"sample; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
