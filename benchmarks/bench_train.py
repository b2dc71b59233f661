"""Benchmark: training throughput of the engine against the model's own, and the feature cache.

For each case the same run measures
  * the engine: samples/s of :func:`twostream_lib.train.train` over whole epochs (data loading,
    collation, forward, backward, SGD step and bookkeeping; validation off);
  * the model: samples/s of forward + loss + backward + SGD step on one batch already in memory,
    repeated for as many steps as an epoch has;
so ``engine / model`` is the fraction of the model's own speed the engine delivers (1 = no overhead).
Each case is timed in interleaved rounds and the best of each is kept (robust to a shared machine).
Cases (demo backbones at 48x48, the demo's sizes; Section 3.5 protocol with the demo's batch size):
  * ``stream``: a spatial stream (``demo_shallow``, all layers trained);
  * ``fusion``: conv fusion at ReLU5 of two frozen ``demo_shallow`` towers (Section 3.5: back-propagate
    only to the fusion layer), recomputing the towers every step;
  * ``fusion_cached``: the same model trained on cached fusion inputs (:mod:`twostream_lib.features`);
    the cache's build time per pass over the data is recorded, and two speed-ups: epochs alone (the
    cache shared, e.g. by all fusion variants at one layer) and counting one cached pass per epoch;
  * ``demo_fusion_variant``: what that means for one fusion variant of the demo profile (12 epochs on
    4 cached passes), and for each further variant fused at the same layer.
Peak memory: the process's maximum resident set (``ru_maxrss``) after each case (it only grows,
so each case's own increase is also recorded) and, on CUDA, ``torch.cuda.max_memory_allocated``.

Data (``--data``): ``synthetic`` (default) = ``TwoStreamClips`` on the demo's synthetic set in
``data/synthetic/seed0`` (made there if missing; the real pipeline: JPEG decoding, jittered crops);
``random`` = random clips with the same shapes and dtypes (uint8 frames normalised per sample).

    python benchmarks/bench_train.py              # about a minute on 2 cores (+1-4 min the first
                                                  # time, to make the synthetic set)
    python benchmarks/bench_train.py --quick      # a smoke run (writes train_quick.json)
    python benchmarks/bench_train.py --device cuda --amp bf16 --channels-last

Writes ``results/benchmarks/train.json`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twostream_lib.files import atomic_write_json  # noqa: E402
from twostream_lib.engine import model_inputs, output_scores  # noqa: E402
from twostream_lib.features import FEATURE_KEYS, FeatureHead, cache_fusion_inputs  # noqa: E402
from twostream_lib.models.backbones import build_backbone  # noqa: E402
from twostream_lib.models.twostream import build_two_stream, trainable_parameters  # noqa: E402
from twostream_lib.train import FrameAverage, TrainConfig, train  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class RandomClips(Dataset):
    """Clips shaped like ``TwoStreamClips``: rgb [T,3,S,S], flow [T,2L,S,S] float32, per-sample randomness."""

    def __init__(self, n: int, *, classes: int = 14, T: int = 1, L: int = 10, size: int = 48, seed: int = 0):
        self.n, self.classes, self.T, self.L, self.size, self.seed, self.epoch = n, classes, T, L, size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + i)
        s = self.size
        rgb = torch.randint(0, 256, (self.T, 3, s, s), generator=g, dtype=torch.uint8)
        flow = torch.randint(0, 256, (self.T, 2 * self.L, s, s), generator=g, dtype=torch.uint8)
        return {"rgb": (rgb.float() / 255 - MEAN) / STD, "flow": flow.float() - 128.0,
                "label": i % self.classes, "video": f"v{i:05d}", "view": 0}


def fusion_model(backbone: str, classes: int, L: int) -> nn.Module:
    """The library's TwoStreamNet: conv fusion at ReLU5, towers frozen below it (Section 3.5)."""
    torch.manual_seed(0)
    model = build_two_stream(backbone=backbone, num_classes=classes, dropout=0.5, flow_channels=2 * L,
                             fusion="conv", layers=("relu5",))
    trainable_parameters(model)
    return model


def synthetic_clips(root: Path, T: int, L: int, seed: int = 0) -> Dataset:
    """Training clips (split 1) of the demo's synthetic set (``make_synthetic_dataset`` defaults, the
    demo profile's data, made once under ``root``): the real pipeline, JPEG decoding included."""
    from twostream_lib.data.sampling import ClipSampling, TwoStreamClips
    from twostream_lib.data.splits import load_split
    from twostream_lib.data.stores import open_store
    from twostream_lib.data.synthetic import make_synthetic_dataset

    ds = make_synthetic_dataset(root, seed=seed, workers=2, progress=False)
    split = load_split("synthetic", ds.split_dir, 1)
    sampling = ClipSampling(T=T, L=L, tau=(1, 10), size=48, crop="jitter")
    return TwoStreamClips(open_store(ds.frames_root), split.train, sampling, train=True, seed=seed)


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def model_throughput(model: nn.Module, dataset: Dataset, cfg: TrainConfig, steps: int) -> float:
    """Samples/s of forward + loss + backward + SGD step on one in-memory batch."""
    from twostream_lib.engine import autocast

    device = torch.device(cfg.device)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(cfg.batch_size)])
    inputs = model_inputs(batch, cfg.input_keys, device, cfg.channels_last)
    labels = batch["label"].to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-6, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    model.train()

    def step():
        with autocast(cfg.amp, device):
            out = model(*inputs)
        loss = sum(nn.functional.cross_entropy(h.float(), labels) for h in out["logits"]) \
            if isinstance(out, dict) else nn.functional.cross_entropy(output_scores(out).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, dataset, cfg: TrainConfig, rounds: int, steps: int) -> tuple[float, float, float]:
    """Best-of-``rounds`` samples/s of (the model alone, the engine over one epoch, loading alone), interleaved.

    Interleaving and taking the best of each makes the ratio robust to other load on a shared
    machine (both numbers see the same conditions; the best is the least disturbed).
    """
    train(model, dataset, None, dataclasses.replace(cfg, epochs=1))  # warm-up (allocator, lazy imports)
    model_best = engine_best = data_best = 0.0
    for r in range(rounds):
        model_best = max(model_best, model_throughput(model, dataset, cfg, steps))
        res = train(model, dataset, None, dataclasses.replace(cfg, epochs=1, seed=r))
        engine_best = max(engine_best, len(dataset) / res.history[0]["time"])
        t0 = time.perf_counter()
        for _ in torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.workers):
            pass
        data_best = max(data_best, len(dataset) / (time.perf_counter() - t0))
    return model_best, engine_best, data_best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer samples and epochs (smoke run)")
    p.add_argument("--backbone", default="demo_shallow")
    p.add_argument("--data", choices=("synthetic", "random"), default="synthetic")
    p.add_argument("--data-root", type=Path, default=REPO / "data" / "synthetic" / "seed0",
                   help="where the demo profile keeps its synthetic set (made there if missing)")
    p.add_argument("--samples", type=int, default=384, help="training clips per epoch (--data random)")
    p.add_argument("--demo-epochs", type=int, default=12, help="fusion epochs of the demo profile")
    p.add_argument("--demo-passes", type=int, default=4, help="cached passes of the demo profile")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best of) per case")
    p.add_argument("--T", type=int, default=1, help="frames per clip (Table 1 variants use 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: OpenMP threads oversubscribed by other load can be 20x slower)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.rounds = 96, 1
    if args.out is None:
        args.out = REPO / "results" / "benchmarks" / ("train_quick.json" if args.quick else "train.json")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = os.getloadavg()
    classes, L = 14, 10
    base = TrainConfig(batch_size=args.batch_size, lr=1e-3, lr_schedule="constant", device=args.device,
                       amp=args.amp, channels_last=args.channels_last, workers=args.workers, progress=False,
                       deterministic=False)
    data = (synthetic_clips(args.data_root, args.T, L) if args.data == "synthetic"
            else RandomClips(args.samples, classes=classes, T=args.T, L=L))
    args.samples = len(data)
    results: dict[str, dict] = {}
    rss0 = maxrss_mib()
    steps = -(-args.samples // args.batch_size)

    def record(name: str, model, cfg, dataset) -> None:
        before = maxrss_mib()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model_sps, engine_sps, data_sps = measure(model.to(device), dataset, cfg, args.rounds, steps)
        per_epoch = len(dataset) / engine_sps
        results[name] = {"engine_samples_per_s": round(engine_sps, 1), "model_samples_per_s": round(model_sps, 1),
                         "engine_over_model": round(engine_sps / model_sps, 3), "epoch_s": round(per_epoch, 3),
                         "data_loading_samples_per_s": round(data_sps, 1),
                         # engine time not explained by the model step plus loading the data
                         "engine_bookkeeping_s_per_epoch":
                             round(per_epoch - len(dataset) * (1 / model_sps + 1 / data_sps), 3),
                         "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                         "peak_rss_mib": round(maxrss_mib(), 1), "rss_increase_mib": round(maxrss_mib() - before, 1)}
        if device.type == "cuda":
            results[name]["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        print(f"{name}: {results[name]}", flush=True)

    torch.manual_seed(0)
    stream = FrameAverage(build_backbone(args.backbone, in_channels=3, num_classes=classes, dropout=0.85))
    record("stream", stream, dataclasses.replace(base, input_keys=("rgb",)), data)

    record("fusion", fusion_model(args.backbone, classes, L), base, data)

    model = fusion_model(args.backbone, classes, L).to(device)
    cache_s = float("inf")
    for _ in range(args.rounds):  # best of rounds, like the other timings
        t0 = time.perf_counter()
        feats = cache_fusion_inputs(model, data, epochs=2, batch_size=args.batch_size, device=device)
        cache_s = min(cache_s, time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:  # writing and reading the npz, timed apart
        t0 = time.perf_counter()
        cache_fusion_inputs(model, data, epochs=2, batch_size=args.batch_size, device=device,
                            path=Path(tmp) / "train.npz")
        t1 = time.perf_counter()
        cache_fusion_inputs(model, data, epochs=2, batch_size=args.batch_size, device=device,
                            path=Path(tmp) / "train.npz")
        reload_s = time.perf_counter() - t1
        save_s = t1 - t0 - cache_s
    record("fusion_cached", FeatureHead(model), dataclasses.replace(base, input_keys=FEATURE_KEYS), feats)
    uncached, cached = results["fusion"]["epoch_s"], results["fusion_cached"]["epoch_s"]
    per_pass = cache_s / feats.passes
    results["fusion_cached"].update({
        "cache_build_s": round(cache_s, 3), "cached_passes": feats.passes, "cache_build_s_per_pass": round(per_pass, 3),
        "cache_save_s": round(save_s, 3), "cache_reload_s": round(reload_s, 3),
        "cache_mib": round(feats.nbytes() / 2**20, 1),
        # training epochs alone, the cache already built (e.g. shared by the fusion variants of one layer)
        "epoch_speedup": round(uncached / cached, 2),
        # one variant, one cached pass per epoch, building included: uncached / (cached + one pass)
        "speedup_incl_building": round(uncached / (cached + per_pass), 2)})
    # the demo profile's fusion training: `demo_epochs` epochs, `demo_passes` cached passes cycled
    e, k = args.demo_epochs, args.demo_passes
    results["demo_fusion_variant"] = {
        "epochs": e, "cached_passes": k, "uncached_s": round(e * uncached, 2),
        "cached_s": round(k * per_pass + e * cached, 2),
        "speedup": round(e * uncached / (k * per_pass + e * cached), 2),
        "cached_s_per_extra_variant_same_layer": round(e * cached, 2)}

    record_out = {
        "benchmark": "train", "date": dt.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": args.threads, "device": str(device),
                    "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"backbone": args.backbone, "samples": args.samples, "batch_size": args.batch_size,
                     "rounds": args.rounds, "T": args.T, "L": L, "size": 48, "classes": classes,
                     "workers": args.workers, "amp": args.amp, "channels_last": args.channels_last,
                     "data": args.data},
        "baseline_rss_mib": round(rss0, 1),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, record_out, sort_keys=False)

    print("\n| case | engine samples/s | model samples/s | engine/model | loading samples/s | s/epoch | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if "engine_samples_per_s" not in r:
            continue
        print(f"| {name} | {r['engine_samples_per_s']} | {r['model_samples_per_s']} | {r['engine_over_model']} "
              f"| {r['data_loading_samples_per_s']} | {r['epoch_s']} | {r['peak_rss_mib']} |")
    c = results["fusion_cached"]
    print(f"\nfeature cache: {c['cache_build_s_per_pass']} s per cached pass ({c['cache_mib']} MiB for "
          f"{c['cached_passes']}); epoch {results['fusion']['epoch_s']} s -> {c['epoch_s']} s "
          f"({c['epoch_speedup']}x; {c['speedup_incl_building']}x counting one cached pass per epoch)")
    d = results["demo_fusion_variant"]
    print(f"demo fusion variant ({d['epochs']} epochs, {d['cached_passes']} cached passes): {d['uncached_s']} s "
          f"uncached, {d['cached_s']} s cached ({d['speedup']}x); each further variant at the same layer "
          f"{d['cached_s_per_extra_variant_same_layer']} s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
