"""Benchmark: improved dense trajectories (IDT) + Fisher-vector encoding throughput (Table 6, Sec. 4.6).

Measures, on one process with OpenCV and BLAS single-threaded (as each worker of
``extract_descriptors``):

* extraction (``extract_video``: decode, Farneback flow, camera-motion compensation, tracking,
  HOG/HOF/MBH) in videos/s and frames/s, for improved (IDT, the default) and plain dense
  trajectories (DT);
* encoding (``FisherEncoder.encode``: PCA + Fisher vectors of the five descriptor types) in
  videos/s with the paper's 256 Gaussians per type and with the demo's 32;

on (a) a synthetic demo clip of 48x48 px and 24 frames rendered by ``twostream_lib.data.synthetic``
and (b) the real UCF101 clip ``v_Basketball_g01_c01.avi`` (320x240) from ``tests/data/videos``, limited
to its first 60 of 141 frames (``--real-frames``) to keep the run short on a shared 2-core machine.

    python benchmarks/bench_idt.py            # about a minute on 2 cores
    python benchmarks/bench_idt.py --quick    # fewer repeats, a smoke run

Writes ``results/benchmarks/idt.json`` and prints a markdown table. Best of ``--repeats`` runs: other
work on a shared machine only ever makes a run slower; the record keeps the load average.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twostream_lib.files import atomic_write_json
from twostream_lib.data.synthetic import render_video
from twostream_lib.idt.descriptors import DESCRIPTOR_TYPES
from twostream_lib.idt.fisher import fit_fisher_encoder
from twostream_lib.idt.pipeline import extract_video
from twostream_lib.idt.trajectories import DTParams

REAL_VIDEO = REPO / "tests" / "data" / "videos" / "ucf101" / "v_Basketball_g01_c01.avi"  # tests/data/README.md
OUT = REPO / "results" / "benchmarks" / "idt.json"


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench_extract(name: str, get_source, n_frames: int, repeats: int, max_frames: int | None) -> dict:
    out = {}
    for label, params in (("idt", DTParams()), ("dt", DTParams(improved=False))):
        secs, tr = best_of(lambda p=params: extract_video(get_source(), params=p, max_frames=max_frames), repeats)
        out[label] = {"seconds_per_video": round(secs, 4), "videos_per_s": round(1.0 / secs, 3),
                      "frames_per_s": round(n_frames / secs, 1), "trajectories": len(tr),
                      "homography_pairs": tr.info.get("homography_pairs"), "frame_pairs": tr.info["frame_pairs"],
                      "scales": tr.info["scales"]}
        print(f"  extract {name:<9} {label:<3}: {secs:7.3f} s/video  {n_frames / secs:7.1f} frames/s  "
              f"{len(tr)} trajectories", flush=True)
    return out, tr


def bench_encode(name: str, descriptors: dict, encoders: dict, repeats: int) -> dict:
    out = {}
    for k, enc in encoders.items():
        secs, fv = best_of(lambda e=enc: e.encode(descriptors), repeats)
        out[f"K{k}"] = {"seconds_per_video": round(secs, 5), "videos_per_s": round(1.0 / secs, 2),
                        "fisher_dims": int(fv.shape[0]), "trajectories": len(descriptors["hog"])}
        print(f"  encode  {name:<9} K={k:<3}: {secs * 1000:7.1f} ms/video  ({len(descriptors['hog'])} "
              f"trajectories, {fv.shape[0]} dims)", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real-frames", type=int, default=60)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    cv2.setNumThreads(1)
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    threadpool_limits(1)  # BLAS single-threaded too: one process = one core
    load_before = os.getloadavg()

    print("IDT benchmark (one process, OpenCV and BLAS single-threaded)")
    synth, _ = render_video("BlueHorizontal", seed=0, size=48, frames=24)
    synth_extract, synth_tr = bench_extract("synthetic", lambda: synth, 24, max(repeats, 1) * 3, None)
    real_n = args.real_frames
    real_extract, real_tr = bench_extract("ucf101", lambda: REAL_VIDEO, real_n, repeats, real_n)

    # encoders fitted on the real clip's descriptors (the timing depends on the sizes, not the fit)
    rng = np.random.default_rng(0)
    sample = {t: real_tr.descriptors[t] for t in DESCRIPTOR_TYPES}
    n_fit = len(real_tr)
    encoders = {}
    for k in (256, 32):
        if n_fit < k:  # too few trajectories on a short clip: jitter copies to fit the timing encoder
            reps = int(np.ceil(k * 2 / n_fit))
            sample = {t: np.concatenate([x + rng.normal(0, 0.01, x.shape) for _ in range(reps)])
                      for t, x in sample.items()}
        t0 = time.perf_counter()
        encoders[k] = fit_fisher_encoder(sample, n_components=k, max_iter=20, seed=0)
        print(f"  (fitted the K={k} encoder on {len(sample['hog'])} descriptors in {time.perf_counter() - t0:.1f} s)")
    synth_encode = bench_encode("synthetic", synth_tr.descriptors, encoders, repeats * 3)
    real_encode = bench_encode("ucf101", real_tr.descriptors, encoders, repeats)

    record = {
        "benchmark": "idt",
        "date": dt.date.today().isoformat(),
        "what": "improved dense trajectories (Wang & Schmid 2013) + Fisher vectors, per video, one process",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "opencv": cv2.__version__, "numpy": np.__version__, "threads": 1},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "repeats": repeats,
        "params": DTParams().to_dict(),
        "clips": {
            "synthetic": {"source": "twostream_lib.data.synthetic.render_video('BlueHorizontal', size=48, frames=24)",
                          "size": [48, 48], "frames": 24, "extract": synth_extract, "encode": synth_encode},
            "ucf101": {"source": f"{REAL_VIDEO.name} (320x240, 141 frames; first {real_n} used)",
                       "size": [240, 320], "frames": real_n, "extract": real_extract, "encode": real_encode},
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record, sort_keys=False)

    print("\n| clip | extract IDT (videos/s) | extract DT (videos/s) | IDT frames/s | trajectories | "
          "encode K=256 (videos/s) | encode K=32 (videos/s) |")
    print("|---|---|---|---|---|---|---|")
    for name, c in record["clips"].items():
        e, f = c["extract"], c["encode"]
        print(f"| {name} {c['size'][1]}x{c['size'][0]}x{c['frames']} | {e['idt']['videos_per_s']} | "
              f"{e['dt']['videos_per_s']} | {e['idt']['frames_per_s']} | {e['idt']['trajectories']} | "
              f"{f['K256']['videos_per_s']} | {f['K32']['videos_per_s']} |")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
