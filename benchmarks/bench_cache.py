"""Benchmark: what the fusion feature cache costs at paper size, and how fast it reads back.

Section 3.5 trains only the layers from the fusion on, so ``twostream_lib.features`` caches the frozen
towers' maps at the fusion layer. Two questions decide where that cache can live:

1. **Bytes per video and layer** at paper size: VGG-M-2048 and VGG-16 at 224 x 224 (and whole frames
   of 341 x 256 for testing), relu1..relu5 and fc6..fc8, T = 5 samples, both towers, float16 and
   float32. Exact arithmetic from ``Backbone.feature_shapes`` (``twostream_lib.plan``: the networks are built on the ``meta``
   device: no memory, no weights), with the UCF101 split-1 totals per pass and for the paper profile's
   ``feature_epochs`` passes.
2. **Read speed**: one epoch of a synthetic cache of realistic size (``--samples`` videos of the
   Tables 4-6 pair, VGG-16 + VGG-M-2048 ReLU5 at T = 5 in float16, about 1.9 MB each; 256 by default,
   478 MB; and ``--fc-samples`` videos of their fc7 maps, 61 kB each, where the per-sample overhead
   shows: 4096 by default, 252 MB), in shuffled batches of the paper's 96 through a DataLoader: from memory (batched
   ``__getitems__`` and one sample at a time), memory-mapped from a cold disk (the files' pages dropped
   from the page cache with ``posix_fadvise``) and from a warm page cache; plus the disk's sequential
   read speed. Also the memory allocated while writing and reading (numpy allocations, tracemalloc),
   which must stay at a few batches.

    python benchmarks/bench_cache.py             # about a minute; needs ~0.5 GB of disk in --dir
    python benchmarks/bench_cache.py --quick     # a smoke run

Writes ``results/benchmarks/cache.json`` (with the machine's matmul probe, so that times from machines
of different speed can be compared) and prints a summary.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twostream_lib.arithmetic import matmul_gflops  # noqa: E402  (after the path set-up above)
from twostream_lib.config import PROFILES  # noqa: E402
from twostream_lib.data.splits import OFFICIAL_SPLIT_SIZES  # noqa: E402
from twostream_lib.features import FeatureSet  # noqa: E402
from twostream_lib.files import atomic_write_json  # noqa: E402
from twostream_lib.models.backbones import LAYERS  # noqa: E402
from twostream_lib.paper import HYPERPARAMETERS as HP  # noqa: E402
from twostream_lib.plan import map_bytes, map_shapes  # noqa: E402

OUT = REPO / "results" / "benchmarks" / "cache.json"
BACKBONES = ("vgg_m_2048", "vgg16")
#: (name, spatial tower, temporal tower, tables that fuse this pair)
PAIRS = (("VGG-M-2048 + VGG-M-2048", "vgg_m_2048", "vgg_m_2048", "Tables 1-2"),
         ("VGG-16 + VGG-16", "vgg16", "vgg16", "Table 3"),
         ("VGG-16 (spatial) + VGG-M-2048 (temporal)", "vgg16", "vgg_m_2048", "Tables 4-6"))
TRAIN_SIZE = (HP["crop"], HP["crop"])
WHOLE_FRAME = (256, 341)  # (H, W) of UCF101 frames at the paper's short side of 256 (test: whole frames)
ITEM = {"float32": 4, "float16": 2}
MB = 1e6


# ----------------------------------------------------------------------------- bytes per video

def bytes_per_video(T: int) -> dict:
    """Exact arithmetic of twostream_lib.plan (map_shapes, map_bytes: Backbone.feature_shapes on the meta
    device), the one home of these numbers."""
    towers = {}
    for backbone in BACKBONES:
        rows = {}
        for where, size in (("train_224", TRAIN_SIZE), ("whole_frame_341x256", WHOLE_FRAME)):
            for layer, shape in map_shapes(backbone, size).items():
                row = rows.setdefault(layer, {})
                row[f"{where}_shape"] = list(shape)
                for dtype, item in ITEM.items():
                    row[f"{where}_{dtype}"] = map_bytes(backbone, layer, size, samples=T, itemsize=item)
        towers[backbone] = rows
    pairs = {}
    for name, s, t, tables in PAIRS:
        pairs[name] = {"tables": tables, **{layer: {f"{where}_{dtype}": towers[s][layer][f"{where}_{dtype}"] +
                                                    towers[t][layer][f"{where}_{dtype}"]
                                                    for where in ("train_224", "whole_frame_341x256")
                                                    for dtype in ITEM}
                                             for layer in LAYERS}}
    return {"T": T, "note": "bytes of one video's cached maps: T samples x C x H x W x bytes per value; "
                             "pairs add the spatial and the temporal tower. whole_frame_341x256 is one test "
                             "view of a whole 341 x 256 frame (fully convolutional testing)",
            "towers": towers, "pairs": pairs}


def ucf101_totals(per_video: dict, passes: int) -> dict:
    train, test = OFFICIAL_SPLIT_SIZES["ucf101"][1]
    out = {"train_videos": train, "test_videos": test, "passes": passes, "GB": {}}
    for name, *_ in PAIRS:
        for layer in ("relu3", "relu5", "fc6"):
            row = per_video["pairs"][name][layer]
            out["GB"][f"{name} @ {layer}"] = {
                f"train_one_pass_{d}": round(train * row[f"train_224_{d}"] / 1e9, 1) for d in ITEM} | {
                f"train_{passes}_passes_{d}": round(passes * train * row[f"train_224_{d}"] / 1e9, 1) for d in ITEM} | {
                f"test_2_views_whole_frame_{d}": round(2 * test * row[f"whole_frame_341x256_{d}"] / 1e9, 1)
                for d in ITEM}
    return out


# ----------------------------------------------------------------------------- read speed

class OneByOne(FeatureSet):
    """The same features read one sample at a time (torch falls back to __getitem__)."""

    __getitems__ = None


def epoch_seconds(feats: FeatureSet, batch: int, seed: int) -> tuple[float, int]:
    """Seconds for one shuffled epoch through a DataLoader (main process), and the samples read."""
    loader = torch.utils.data.DataLoader(feats, batch_size=batch, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    start, seen, check = time.perf_counter(), 0, 0.0
    for b in loader:
        seen += len(b["label"])
        check += float(b["fa"][0, 0, 0, 0, 0])  # touch the data
    return time.perf_counter() - start, seen


def drop_page_cache(files: list[Path]) -> bool:
    """Ask the kernel to forget the files' cached pages (clean, unmapped pages go): the next read is
    from the disk. False where posix_fadvise is not available."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def sequential_read(files: list[Path], chunk: int = 16 << 20) -> float:
    start = time.perf_counter()
    buf = bytearray(chunk)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    return time.perf_counter() - start


def read_speed(samples: int, layer: str, folder: Path, rounds: int) -> dict:
    """One shuffled epoch of a synthetic float16 cache of the Tables 4-6 pair's maps at ``layer``."""
    T, batch = HP["T"], HP["batch_size"]
    sa, sb = map_shapes("vgg16", TRAIN_SIZE)[layer], map_shapes("vgg_m_2048", TRAIN_SIZE)[layer]
    rng = np.random.default_rng(0)
    fa = rng.standard_normal((1, samples, T, *sa), dtype=np.float32).astype(np.float16)
    fb = rng.standard_normal((1, samples, T, *sb), dtype=np.float32).astype(np.float16)
    memory = FeatureSet(fa, fb, np.arange(samples) % 101, [f"v{i:05d}" for i in range(samples)], np.zeros(samples))
    total = memory.feature_bytes()
    batch_bytes = total / samples * batch

    tracemalloc.start()
    t0 = time.perf_counter()
    memory.save(folder)
    write_s = time.perf_counter() - t0
    _, write_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    files = [folder / "fa.bin", folder / "fb.bin"]

    results: dict[str, list[float]] = {k: [] for k in ("memory_batched", "memory_one_by_one", "disk_cold",
                                                       "disk_warm", "disk_sequential_cold")}
    read_peak = 0
    cold_ok = True
    epoch_seconds(memory, batch, -1)  # warm-up: the DataLoader machinery, the first touch of the arrays
    for r in range(rounds):
        results["memory_batched"].append(epoch_seconds(memory, batch, r)[0])
        single = copy.copy(memory)
        single.__class__ = OneByOne
        results["memory_one_by_one"].append(epoch_seconds(single, batch, r)[0])
        cold_ok &= drop_page_cache(files)
        results["disk_sequential_cold"].append(sequential_read(files))
        cold_ok &= drop_page_cache(files)
        disk = FeatureSet.open(folder)
        tracemalloc.start()
        seconds, seen = epoch_seconds(disk, batch, r)
        read_peak = max(read_peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert seen == samples
        results["disk_cold"].append(seconds)
        results["disk_warm"].append(epoch_seconds(disk, batch, r)[0])
        del disk

    def summary(times: list[float]) -> dict:
        best = min(times)
        return {"seconds_best": round(best, 3), "seconds_all": [round(t, 3) for t in times],
                "MB_per_s": round(total / MB / best, 1), "samples_per_s": round(samples / best, 1)}

    train_videos = OFFICIAL_SPLIT_SIZES["ucf101"][1][0]
    per_pass = train_videos * total / samples
    out = {"cache": {"samples": samples, "T": T, "layer": layer,
                     "maps": {f"fa (VGG-16 {layer})": [T, *sa], f"fb (VGG-M-2048 {layer})": [T, *sb]},
                     "dtype": "float16", "bytes": total, "MB_per_sample": round(total / samples / MB, 3),
                     "batch_size": batch, "shuffled": True, "write_seconds": round(write_s, 3),
                     "write_MB_per_s": round(total / MB / write_s, 1)},
           "page_cache_dropped_for_cold_reads": cold_ok,
           "epoch": {k: summary(v) for k, v in results.items()},
           "memory_allocated_bytes": {"batch": int(batch_bytes), "peak_while_writing": int(write_peak),
                                      "peak_while_reading_an_epoch_from_disk": int(read_peak),
                                      "whole_cache": int(total)}}
    cold = out["epoch"]["disk_cold"]["MB_per_s"] * MB
    out["ucf101_split1_train_pass"] = {
        "videos": train_videos, "GB": round(per_pass / 1e9, 1),
        "estimated_seconds_per_epoch_cold_disk": round(per_pass / cold, 1),
        "note": f"one pass of Tables 4-6's training features at {layer} (float16) read at the cold-disk rate "
                "measured here"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256, help="videos in the relu5 cache (1.9 MB each)")
    parser.add_argument("--fc-samples", type=int, default=4096, help="videos in the fc7 cache (61 kB each)")
    parser.add_argument("--rounds", type=int, default=3, help="epochs timed per case (best is reported)")
    parser.add_argument("--dir", default=None, help="where to write the synthetic cache (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 24 samples, 1 round, not recorded")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.fc_samples, args.rounds = 24, 200, 1
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    probe = matmul_gflops()
    per_video = bytes_per_video(HP["T"])
    with tempfile.TemporaryDirectory(prefix="bench_cache_", dir=args.dir) as tmp:
        speed = {"relu5": read_speed(args.samples, "relu5", Path(tmp) / "relu5", args.rounds),
                 "fc7": read_speed(args.fc_samples, "fc7", Path(tmp) / "fc7", args.rounds)}
        disk_free = shutil.disk_usage(tmp).free
    record = {
        "benchmark": "feature cache: bytes per video and layer at paper size; epoch read time from disk vs memory",
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "numpy": np.__version__, "matmul_gflops": round(probe, 1),
                    "ram_GB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
                    "disk_free_GB": round(disk_free / 1e9, 1),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "bytes_per_video": per_video,
        "ucf101_split1": ucf101_totals(per_video, PROFILES["paper"].feature_epochs),
        "read": speed,
    }
    pair = per_video["pairs"]["VGG-16 (spatial) + VGG-M-2048 (temporal)"]["relu5"]
    print(f"VGG-16 + VGG-M-2048 relu5, T={HP['T']}: {pair['train_224_float32'] / MB:.2f} MB per video (float32), "
          f"{pair['train_224_float16'] / MB:.2f} MB (float16)")
    print("| maps | case | epoch s | MB/s | samples/s |\n|---|---|---|---|---|")
    for layer, run in speed.items():
        for case, row in run["epoch"].items():
            print(f"| {layer} | {case} | {row['seconds_best']} | {row['MB_per_s']} | {row['samples_per_s']} |")
        print(f"| {layer} | allocated | {run['memory_allocated_bytes']} |")
    if args.quick:
        print("(quick run: not recorded)")
        return
    atomic_write_json(OUT, record)
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
