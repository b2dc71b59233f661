"""Resource planner (issue 12): what each notebook of a profile needs, before anything runs.

Sec. 3.5 trains each stream on its own, then only the layers from the fusion on, on the frozen towers'
maps at the fusion layer, cached once per augmented pass (``feature_epochs``) and per test view. At paper
size those caches, not the models, decide where a run fits. For a profile and a listing of the data (the
data present, a CSV, or UCF101's 13,320 videos generated with the official split sizes),
:func:`make_plan` walks the notebooks as the experiments do (``TABLES``, ``train_config``,
``TwoStreamViews``) and gives per notebook the videos and samples, feature-cache, checkpoint and data
bytes, peak host RAM and GPU memory, compute (FLOPs counted on the ``meta`` device; hours at a stated
throughput) and the CPU cores the JPEG loader needs to keep up. :func:`check_fits` refuses a run whose
caches and checkpoints cannot fit the disk of its results folder. Assumptions are the constants below;
the output states them (docs/plan.md).

    python -m twostream_lib plan --profile paper --ucf101-listing --out results/benchmarks/plan_paper_ucf101.json
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import inspect
import json
import math
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from twostream_lib.config import PROFILES, REPO_ROOT, Profile, load_profile
from twostream_lib.data.listing import ListedVideo, Listing, listing_for, read_listing, ucf101_listing
from twostream_lib.errors import ConfigError, DataError

TFLOPS = 100.0  # effective TFLOP/s of one modern GPU in bf16 (an assumption: --tflops)
RAM_GB, GPU_GB = 128.0, 80.0  # the machine the plan is checked against (--ram-gb, --gpu-gb)
PROCESS_BYTES, WORKER_BYTES = 3e9, 0.5e9  # host RAM of a training process / a loader worker: assumptions
PREFETCH = 2  # torch DataLoader's prefetch_factor: batches a worker holds ahead
BACKWARD = 3  # a training step costs ~3 forwards (forward + backward for inputs and weights)
NOTEBOOKS = ("00_data", "01_approach", "01_figure1", "02_table1", "03_table2", "04_table3", "05_table4",
             "06_table5", "07_table6")
REF_FRAME = (341, 256)  # (W, H) of the frames measured in results/benchmarks/loading.json
BENCH = REPO_ROOT / "results" / "benchmarks"
GB = 1e9


# ---- exact arithmetic on the meta device (benchmarks/bench_cache.py imports it from here) ----------

@functools.cache
def _backbone(name: str, in_channels: int = 3, num_classes: int = 101):
    from twostream_lib.models import build_backbone
    with torch.device("meta"):  # shapes and FLOPs only: no memory, no weights
        return build_backbone(name, in_channels=in_channels, num_classes=num_classes, weights=None)


def map_shapes(backbone: str, size: int | tuple[int, int]) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) at every layer for an input of ``size`` ((H, W)); the flow tower's maps equal the RGB one's."""
    return _backbone(backbone).feature_shapes(size)


def map_bytes(backbone: str, layer: str, size, *, samples: int = 1, itemsize: int = 4) -> int:
    """Bytes of ``samples`` maps of ``backbone`` at ``layer`` (e.g. relu5 of vgg_m_2048 at 224: 512x13x13)."""
    return samples * math.prod(map_shapes(backbone, size)[layer]) * itemsize


def _measure(module, fn, *args) -> tuple[float, int, int]:
    """Forward FLOPs of ``fn(*args)`` and the float32 bytes of its leaf modules' outputs (sum and largest):
    what autograd keeps for a backward, and an inference's peak."""
    out = [0, 0]

    def hook(_m, _i, o):
        n = sum(t.numel() for t in (o if isinstance(o, (tuple, list)) else (o,)) if isinstance(t, torch.Tensor))
        out[0], out[1] = out[0] + n, max(out[1], n)
    hooks = [m.register_forward_hook(hook) for m in module.modules() if not any(m.children())]
    try:
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            fn(*args)
    finally:
        for h in hooks:
            h.remove()
    return float(fc.get_total_flops()), 4 * out[0], 4 * out[1]


@functools.cache
def tower_cost(backbone: str, in_channels: int, size: tuple[int, int], num_classes: int = 101, upto=None):
    """(forward FLOPs, activation bytes, largest map bytes, parameters) of one sample through a tower."""
    net = _backbone(backbone, in_channels, num_classes)
    x = torch.empty(1, in_channels, *size, device="meta")
    return (*_measure(net, net.run, x, None, upto), sum(p.numel() for p in net.parameters()))


@functools.cache
def head_cost(cfg: Profile, variant, num_classes: int, T: int, size: tuple[int, int]):
    """(head forward FLOPs, head activation bytes, all parameters, trainable parameters) of a fusion row's
    model for one clip of ``T`` samples of ``size``: what trains above the frozen towers (Sec. 3.5)."""
    from twostream_lib.experiments.fusion import backbone_name
    from twostream_lib.models import TwoStreamNet, trainable_parameters
    with torch.device("meta"):  # copies: the model takes the towers over (truncates, widens them)
        model = TwoStreamNet(copy.deepcopy(_backbone(backbone_name(cfg, variant.spatial), 3, num_classes)),
                             copy.deepcopy(_backbone(backbone_name(cfg, variant.temporal_tower), 2 * cfg.L, num_classes)),
                             **variant.net_kwargs(cfg))
    trainable = sum(p.numel() for p in trainable_parameters(model, "fusion_and_above"))
    fa, fb = model.fusion_inputs(torch.empty(1, T, 3, *size, device="meta"),
                                 torch.empty(1, T, 2 * cfg.L, *size, device="meta"))
    flops, act, _ = _measure(model, model.head, fa, fb)
    return flops, act, sum(p.numel() for p in model.parameters()), trainable


# ---- the plan ---------------------------------------------------------------------------------------

@dataclass
class NotebookPlan:
    """What one notebook needs. Work an earlier notebook of the plan did (a trained tower or head, a
    feature cache on disk) is reused there: its compute and bytes count where it was first done."""

    notebook: str
    splits: tuple[int, ...] = ()
    videos: dict = field(default_factory=dict)  # {"split k": {"train": n, "test": n}}
    train_samples: int = 0  # passes x training videos of every tower and head trained here
    test_samples: int = 0  # test views x samples per view through towers and heads
    cache_bytes: int = 0  # the feature caches it reads: memory-mapped shards on disk (features.py)
    new_feature_cache_bytes: int = 0  # of those, the feature caches first written here (what its run adds)
    checkpoint_bytes: int = 0  # what its trainings leave: a tower's final.pt, a head's last checkpoint.pt
    data_bytes: int = 0  # frames + flow of the videos it reads
    disk_bytes: int = 0  # caches + checkpoints on the results disk once it has run (with those before it)
    ram_bytes: int = 0  # peak host RAM
    ram_parts: dict = field(default_factory=dict)  # what makes that peak
    gpu_bytes: int = 0  # peak accelerator memory (a CPU profile counts it in RAM)
    tflop: float = 0.0  # compute of its new work
    hours: float = 0.0  # tflop at the stated throughput
    cpu_core_hours: float = 0.0  # IDT (Table 6) runs on the CPU
    loader_cores: float = 0.0  # cores decoding JPEGs as fast as the GPU consumes samples
    work: list = field(default_factory=list)


@dataclass
class Plan:
    profile: str
    dataset: str
    listing: str
    device: str
    cache_dtype: str
    tflops: float
    ram_gb: float
    gpu_gb: float
    results_dir: str
    disk_free: int  # on the results folder's disk
    disk_reusable: int  # already in its runs/ (a re-run reuses those caches and checkpoints)
    cpu_count: int
    settings: dict
    notebooks: list[NotebookPlan]
    notes: list[str]
    command: str = ""

    def flags(self) -> list[str]:
        out = []
        for nb in self.notebooks:
            if nb.ram_bytes > self.ram_gb * GB:
                out.append(f"{nb.notebook}: RAM {nb.ram_bytes / GB:.1f} GB > {self.ram_gb:g} GB ({nb.ram_parts.get('during')})")
            if nb.gpu_bytes > self.gpu_gb * GB:
                out.append(f"{nb.notebook}: GPU memory {nb.gpu_bytes / GB:.1f} GB > {self.gpu_gb:g} GB")
            if nb.loader_cores > self.cpu_count and self.device.startswith("cuda"):  # on a CPU they share the cores
                out.append(f"{nb.notebook}: the JPEG loader needs {nb.loader_cores:.0f} cores to feed {self.tflops:g} "
                           f"TFLOP/s, this machine has {self.cpu_count}: fewer samples/s, or decode on the GPU "
                           "(torchvision.io.decode_jpeg(device='cuda'))")
        if self.notebooks and self.notebooks[-1].disk_bytes > self.disk_free + self.disk_reusable:
            out.append(f"disk: {self.notebooks[-1].disk_bytes / GB:.1f} GB of caches and checkpoints, "
                       f"{(self.disk_free + self.disk_reusable) / GB:.1f} GB free in {self.results_dir} (check_fits)")
        return out

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "flags": self.flags()}, indent=2) + "\n"

    def text(self) -> str:
        head = ("| notebook | splits | train / test videos | train samples | test samples | cache GB | checkpoint GB "
                "| data GB | disk GB (so far) | RAM GB | GPU GB | GPU h | CPU core-h | loader cores |\n" + "|---" * 14 + "|")
        gpu = self.device.startswith("cuda")  # on a CPU the loader and the model share the cores
        rows = [f"| {n.notebook} | {','.join(map(str, n.splits))} | "
                f"{' '.join('{train}/{test}'.format(**v) for v in n.videos.values())} | {n.train_samples:,} | "
                f"{n.test_samples:,} | {_g(n.cache_bytes / GB)} | {_g(n.checkpoint_bytes / GB)} | {_g(n.data_bytes / GB)} | "
                f"{_g(n.disk_bytes / GB)} | {_g(n.ram_bytes / GB)} | {_g(n.gpu_bytes / GB)} | {_g(n.hours)} | "
                f"{_g(n.cpu_core_hours)} | {f'{n.loader_cores:.0f}' if gpu else '-'} |" for n in self.notebooks]
        total = sum(n.hours for n in self.notebooks)
        lines = [f"plan: profile {self.profile}, {self.dataset} ({self.listing}); device {self.device}, feature caches "
                 f"{self.cache_dtype} ({self.settings.get('feature_cache', 'disk')}); compute at {self.tflops:g} effective TFLOP/s (--tflops); limits: RAM "
                 f"{self.ram_gb:g} GB, GPU memory {self.gpu_gb:g} GB; {self.results_dir}: {self.disk_free / GB:.1f} GB free",
                 "", head, *rows, "", f"total: {total:.1f} GPU hours, {sum(n.cpu_core_hours for n in self.notebooks):.1f} "
                 f"CPU core-hours (IDT), {self.notebooks[-1].disk_bytes / GB if self.notebooks else 0:.1f} GB of caches "
                 "and checkpoints", ""]
        lines += [f"FLAG {f}" for f in self.flags()] or ["every notebook within the stated RAM and GPU memory"]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"


def _g(x: float) -> str:
    """One decimal, or two significant digits below 1 (the demo's sizes)."""
    return f"{x:.1f}" if x >= 1 or x == 0 else f"{x:.2g}"


def check_fits(plan: Plan) -> None:
    """ConfigError naming the first notebook whose feature caches and checkpoints (with those of the
    notebooks before it) do not fit the free space of the results folder's disk, and what to change."""
    room = plan.disk_free + plan.disk_reusable
    for nb in plan.notebooks:
        if nb.disk_bytes > room:
            s = plan.settings
            raise ConfigError(
                f"{nb.notebook}: the run's feature caches and checkpoints need {nb.disk_bytes / GB:.1f} GB by the end "
                f"of it ({nb.cache_bytes / GB:.1f} GB of caches in this notebook), {room / GB:.1f} GB free in "
                f"{plan.results_dir}; change a setting: feature_epochs (now {s['feature_epochs']}: training caches "
                f"scale with it), T (now {s['T']}), final_test_clips / test_clips (now {s['final_test_clips']} / "
                f"{s['test_clips']}: test caches), results_dir on a bigger disk (-p results_dir DIR), or train "
                "without the cache (frozen towers run every pass)")


class _Planner:
    """Walks the notebooks as the experiments run them (registry, streams, fusion) and counts."""

    def __init__(self, cfg: Profile, listing: Listing, tflops: float):
        from twostream_lib.data.stores import DecodedCache
        from twostream_lib.features import default_dtype
        self.cfg, self.listing, self.tflops, self.K = cfg, listing, tflops, listing.classes
        self.gpu = cfg.device.startswith("cuda")
        self.dtype = default_dtype(cfg.device)
        self.item = np.dtype(self.dtype).itemsize
        self.inflight = cfg.workers * PREFETCH + 2  # batches held: each worker's, the main process's, its pinned copy
        self.decoded_max = inspect.signature(DecodedCache).parameters["max_bytes"].default
        loading = json.loads((BENCH / "loading.json").read_text())
        one = next(r for r in loading["results"] if r["workers"] == 1 and r["layout"].startswith("jpeg"))
        self.ms_per_file = one["cpu_ms_per_sample"] / loading["sampling"]["jpeg_files_per_sample"]
        self.jpeg_bytes = loading["video"]["jpeg_bytes"] / loading["video"]["jpeg_files"]
        self.idt_rec = json.loads((BENCH / "idt.json").read_text())["clips"]["ucf101"]
        areas = [v.width * v.height for v in listing.videos]
        self.area = float(np.mean(areas)) / (REF_FRAME[0] * REF_FRAME[1]) if areas else 1.0
        self.done: set = set()
        self.idt_videos: set = set()
        self.disk = 0

    # ---- counting helpers
    def videos(self, k: int, part: str) -> tuple:
        from twostream_lib.experiments.data import limit_videos
        return limit_videos(self.listing.part(k, part), self.cfg)

    def sizes(self, k: int) -> Counter:
        """Test input (H, W) -> videos: whole frames (test_crop "full", Sec. 3.5) or crops."""
        c = self.cfg.crop
        return Counter((v.height, v.width) if self.cfg.test_crop == "full" else (c, c) for v in self.videos(k, "test"))

    def views(self, mode: str, clips):
        """(views per video, samples per view, stride) of a test mode, as TwoStreamViews counts them."""
        from twostream_lib.data.sampling import TwoStreamViews
        from twostream_lib.experiments.data import clip_sampling
        s = dataclasses.replace(clip_sampling(self.cfg, T=self.cfg.T, train=False), test_tau=self.cfg.test_tau,
                                test_clips=clips or self.cfg.test_clips)
        return TwoStreamViews(None, (), s, mode=mode, crop=self.cfg.test_crop).views_per_video, \
            1 if mode == "frames25" else self.cfg.T, s.stride_at_test

    def clip_bytes(self, T: int, hw) -> int:
        return T * (3 + 2 * self.cfg.L) * hw[0] * hw[1] * 4  # RGB and flow, float32: every sample loads both

    def new(self, nb: NotebookPlan, key: tuple, what: str) -> bool:
        """Whether ``key`` is work no notebook of the plan did yet; listed once per notebook."""
        fresh = key not in self.done
        if key not in self.seen:
            nb.work.append(what if fresh else f"{what} (reused)")
        self.done.add(key)
        self.seen.add(key)
        return fresh

    def feed(self, nb: NotebookPlan, flops: float, T: int, tau) -> None:
        """Cores to decode samples (T RGB JPEGs, the flow stacks' u/v JPEGs) as fast as the GPU takes them."""
        L = self.cfg.L
        files = T + 2 * (L + (T - 1) * np.mean([min(t, L) for t in range(tau[0], tau[1] + 1)]))
        nb.loader_cores = max(nb.loader_cores, self.tflops * 1e12 / flops * files * self.ms_per_file / 1e3 * self.area)

    def memory(self, nb: NotebookPlan, what: str, *, batch: float, params: int = 0, trainable: int = 0,
               acts: float = 0, processes: int = 1, **other) -> None:
        """Host RAM (and GPU memory) of one step of the work: the peak of the notebook is its largest."""
        state = 4 * (params + 2 * trainable)  # weights; gradients and SGD momentum of what trains
        parts = {"processes": PROCESS_BYTES + self.cfg.workers * WORKER_BYTES, "loader batches": self.inflight * batch,
                 "model": 4 * (params + trainable) if self.gpu else state + acts, **other}
        ram = processes * sum(parts.values())
        if ram > nb.ram_bytes:
            nb.ram_bytes, nb.ram_parts = int(ram), {"during": what, "times": processes, **{k: int(v) for k, v in parts.items()}}
        if self.gpu:
            nb.gpu_bytes = max(nb.gpu_bytes, int(state + acts))

    def decoded(self, k: int, part: str) -> int:
        """DecodedCache (cache_frames): each loading process keeps up to max_bytes of decoded frames."""
        if not self.cfg.cache_frames:
            return 0
        total = sum(v.width * v.height * (3 * v.frames + 2 * (v.frames - 1)) for v in self.videos(k, part))
        return min(self.decoded_max, total) * max(1, self.cfg.workers)

    # ---- the work, as the experiments do it
    def tower(self, nb: NotebookPlan, bb: str, stream: str, k: int) -> None:
        """A stream trained on its own (experiments.streams.train_stream): one frame (or flow stack) per
        video and pass, the released schedule's passes and batch (train_config)."""
        from twostream_lib.experiments.streams import STREAM_INPUT, train_config
        cfg = self.cfg
        tc = train_config(cfg, stage=stream, backbone=bb, seed=cfg.seeds[0], input_keys=(STREAM_INPUT[stream],))
        n = len(self.videos(k, "train"))
        if not self.new(nb, ("tower", bb, stream, k), f"{stream} tower {bb}, split {k}: {tc.epochs} passes x {n} "
                                                       f"videos, batch {tc.batch_size}"):
            return
        flops, act, _, params = tower_cost(bb, 3 if stream == "spatial" else 2 * cfg.L, (cfg.crop, cfg.crop), self.K)
        nb.train_samples += tc.epochs * n
        nb.tflop += BACKWARD * flops * tc.epochs * n / 1e12
        if cfg.schedule == "plateau":  # validated on the test views once per released "epoch"
            nb.tflop += tc.epochs // tc.val_every * self._test_flops(bb, stream, k, cfg.test_mode, None) / 1e12
        nb.checkpoint_bytes += 4 * params  # final.pt (its checkpoints are removed once it is written)
        self.feed(nb, BACKWARD * flops, 1, cfg.tau)
        self.memory(nb, f"{stream} tower {bb}", batch=tc.batch_size * self.clip_bytes(1, (cfg.crop,) * 2), params=params,
                    trainable=params, acts=2 * act * tc.batch_size, processes=cfg.tower_processes,
                    decoded_frames=self.decoded(k, "train"))

    def _test_flops(self, bb: str, stream: str, k: int, mode: str, clips) -> float:
        views, per, _ = self.views(mode, clips)
        in_ch = 3 if stream == "spatial" else 2 * self.cfg.L
        return sum(c * views * per * tower_cost(bb, in_ch, hw, self.K)[0] for hw, c in self.sizes(k).items())

    def test(self, nb: NotebookPlan, bb: str, stream: str, k: int, mode: str, clips) -> None:
        """A tower's scores on the test views (streams.stream_scores; kept in the notebook's memory only)."""
        key = ("scores", bb, stream, k, mode, clips)
        if key in self.seen:
            return
        self.seen.add(key)
        views, per, stride = self.views(mode, clips)
        n = sum(self.sizes(k).values())
        if not n:
            return
        nb.work.append(f"{stream} tower {bb}, split {k}: test {mode}{clips or ''}, {n} videos x {views} views")
        nb.test_samples += n * views * per
        nb.tflop += self._test_flops(bb, stream, k, mode, clips) / 1e12
        hw = max(self.sizes(k), key=lambda s: s[0] * s[1])
        flops, _, peak, params = tower_cost(bb, 3 if stream == "spatial" else 2 * self.cfg.L, hw, self.K)
        self.feed(nb, flops * per, per, (stride, stride))
        batch = self.cfg.batch_size * per
        self.memory(nb, f"testing {stream} {bb}", batch=batch * self.clip_bytes(1, hw), params=params, acts=2 * peak * batch)

    def cache(self, nb: NotebookPlan, s_bb: str, t_bb: str, k: int, T: int, layers: tuple, mode, clips) -> None:
        """The frozen towers' maps at ``layers`` (one pass of the towers fills them all, fusion.fusion_features):
        ``feature_epochs`` augmented passes of the training clips (crop x crop), or the test views (whole
        frames), in the cache's dtype."""
        from twostream_lib.experiments.cache import MEMO
        from twostream_lib.models import LAYERS
        cfg, train, layers = self.cfg, mode is None, tuple(dict.fromkeys(layers))  # rows share a layer's maps
        if train:
            passes, views, per, sizes = cfg.feature_epochs, 1, T, Counter({(cfg.crop, cfg.crop): len(self.videos(k, "train"))})
        else:
            (views, per, _), passes, sizes = self.views(mode, clips), 1, self.sizes(k)

        def nbytes(layer: str) -> int:
            return sum(c * passes * views * (map_bytes(s_bb, layer, hw, samples=per, itemsize=self.item) +
                                             map_bytes(t_bb, layer, hw, samples=per, itemsize=self.item))
                       for hw, c in sizes.items())
        base = ("cache", s_bb, t_bb, T, k, mode, clips)
        if not sum(sizes.values()):
            return
        for layer in layers:
            if (*base, layer) not in self.seen:
                self.seen.add((*base, layer))
                nb.cache_bytes += nbytes(layer)
        fresh = [layer for layer in layers if (*base, layer) not in self.done]
        kind = "training" if train else f"test {mode}{clips or ''}"
        what = (f"cache {kind} {s_bb}+{t_bb} split {k} T={T} at "
                f"{'+'.join(layers)}: {sum(sizes.values())} videos x {passes * views} x {per} samples")
        if base + layers not in self.seen:  # listed once per notebook
            self.seen.add(base + layers)
            nb.work.append(what if fresh else f"{what} (reused)")
        if not fresh:
            return
        self.done.update((*base, layer) for layer in fresh)
        if cfg.feature_cache == "disk":  # "memory": in the kernel's RAM (experiments.MEMO), counted below
            self.disk += sum(nbytes(layer) for layer in fresh)
            nb.new_feature_cache_bytes += sum(nbytes(layer) for layer in fresh)
        top = max(fresh, key=LAYERS.index)
        fwd = {hw: tower_cost(s_bb, 3, hw, self.K, top)[0] + tower_cost(t_bb, 2 * cfg.L, hw, self.K, top)[0] for hw in sizes}
        nb.tflop += sum(c * passes * views * per * fwd[hw] for hw, c in sizes.items()) / 1e12
        nb.test_samples += 0 if train else sum(sizes.values()) * views * per
        hw = max(sizes, key=lambda s: s[0] * s[1])
        self.feed(nb, fwd[hw] * per, per, cfg.tau if train else (self.views(mode, clips)[2],) * 2)
        params = tower_cost(s_bb, 3, hw, self.K)[3] + tower_cost(t_bb, 2 * cfg.L, hw, self.K)[3]
        peak = max(tower_cost(b, c, hw, self.K, top)[2] for b, c in ((s_bb, 3), (t_bb, 2 * cfg.L)))
        in_memory = {"feature caches": min(nb.cache_bytes, MEMO.max_bytes)} if cfg.feature_cache == "memory" else {}
        self.memory(nb, what.split(":")[0], batch=cfg.batch_size * self.clip_bytes(per, hw), params=params,
                    acts=2 * peak * cfg.batch_size * per, decoded_frames=self.decoded(k, "train" if train else "test"),
                    **in_memory)

    def head(self, nb: NotebookPlan, v, k: int, seed: int, clips=None, share: tuple = ()) -> None:
        """One fusion row (fusion.run_fusion): its towers, their cached maps, the head trained on them
        (only the layers from the fusion on, Sec. 3.5) and tested; late fusion only tests the towers."""
        from twostream_lib.experiments.fusion import backbone_name, cached_layers, caches_test_views, test_mode
        from twostream_lib.experiments.streams import train_config
        cfg = self.cfg
        mode = test_mode(v, cfg)
        clips = (clips or cfg.test_clips) if mode == "strided_flips" else None
        s_bb, t_bb = backbone_name(cfg, v.spatial), backbone_name(cfg, v.temporal_tower)
        self.tower(nb, s_bb, "spatial", k)
        self.tower(nb, t_bb, "temporal", k)
        if v.late:
            self.test(nb, s_bb, "spatial", k, mode, clips)
            self.test(nb, t_bb, "temporal", k, mode, clips)
            return
        T = v.clip_length(cfg)
        head = ("head", v.architecture_name(T), s_bb, t_bb, k, seed)
        if not self.new(nb, (*head, mode, clips), f"{v.key}, split {k}, seed {seed}: scores {mode}{clips or ''}"):
            return  # its scores were saved beside the head: nothing is cached, trained or run
        # the experiments' rules (fusion.run_fusion): which layers one pass caches, whether test views are cached
        layers = cached_layers(cfg, v.layers[0], tuple(share))
        if cfg.feature_cache != "none":
            self.cache(nb, s_bb, t_bb, k, T, layers, None, None)
        if caches_test_views(cfg):
            self.cache(nb, s_bb, t_bb, k, T, layers, mode, clips)
        else:  # predict runs the frozen towers over the test views
            nb.test_samples += sum(self.sizes(k).values()) * self.views(mode, clips)[0] * self.views(mode, clips)[1]
            nb.tflop += (self._test_flops(s_bb, "spatial", k, mode, clips) +
                         self._test_flops(t_bb, "temporal", k, mode, clips)) / 1e12
        tc = train_config(cfg, stage="fusion", seed=seed, input_keys=("fa", "fb"))
        flops, act, params, trainable = head_cost(cfg, v, self.K, T, (cfg.crop, cfg.crop))
        n = len(self.videos(k, "train"))
        if self.new(nb, head, f"{v.key} head, split {k}, seed {seed}: {tc.epochs} passes x {n} videos, batch {tc.batch_size}"):
            nb.train_samples += tc.epochs * n
            nb.tflop += BACKWARD * flops * tc.epochs * n / 1e12
            if cfg.feature_cache == "none":  # the frozen towers' forward under every step, up to the fusion layer
                crop = (cfg.crop, cfg.crop)
                towers = (tower_cost(s_bb, 3, crop, self.K, v.layers[0])[0] +
                          tower_cost(t_bb, 2 * cfg.L, crop, self.K, v.layers[0])[0])
                nb.tflop += towers * T * tc.epochs * n / 1e12
            nb.checkpoint_bytes += 4 * (params + trainable)  # checkpoint.pt: the model, the momentum of what trains
            feat = T * self.item * sum(math.prod(map_shapes(b, cfg.crop)[v.layers[0]]) for b in (s_bb, t_bb))
            self.memory(nb, f"{v.key} head", batch=tc.batch_size * feat, params=params, trainable=trainable,
                        acts=2 * act * tc.batch_size)
        views, per, _ = self.views(mode, clips)
        nb.tflop += sum(c * views * head_cost(cfg, v, self.K, per, hw)[0] for hw, c in self.sizes(k).items()) / 1e12

    def idt(self, nb: NotebookPlan, k: int) -> None:
        """Table 6's IDT + Fisher vectors + linear SVM on the CPU, per video once (descriptors are cached),
        at the seconds per frame of results/benchmarks/idt.json scaled by pixel count."""
        from twostream_lib.idt.descriptors import descriptor_dims
        vids = self.videos(k, "train") + self.videos(k, "test")
        self.new(nb, ("idt", k), f"IDT + Fisher vectors + SVM, split {k}: {len(vids)} videos (CPU)")
        fresh = [v for v in vids if v.name not in self.idt_videos]
        self.idt_videos.update(v.name for v in fresh)
        extract, rec = self.idt_rec["extract"]["idt"], self.idt_rec
        pixels = sum(v.frames * v.width * v.height for v in fresh) / (rec["frames"] * math.prod(rec["size"]))
        nb.cpu_core_hours += pixels * extract["seconds_per_video"] / 3600
        # each video's descriptors are cached on disk (idt.pipeline: float16, and 16 float32 points per
        # trajectory), at the trajectories per pixel and frame of the same record
        descriptors = int(pixels * extract["trajectories"] * (2 * sum(descriptor_dims().values()) + 4 * 2 * 16))
        nb.cache_bytes += descriptors
        self.disk += descriptors
        dims = self.idt_rec["encode"]["K256"]["fisher_dims"] * self.cfg.idt_components / 256
        self.memory(nb, f"IDT split {k}", batch=0, fisher_vectors=2 * 4 * dims * len(vids))  # and the SVM's copy

    def notebook(self, name: str, final_splits: tuple) -> NotebookPlan:
        """One notebook as its cells call the library: 01_approach trains the shallow towers, 01_figure1 also
        scores them (stream_summary); a table runs its spec as registry.run_table does (towers first, then
        its row builder's heads or scores); 00_data only reads frames."""
        from twostream_lib.experiments.fusion import backbone_name
        from twostream_lib.experiments.registry import OURS, OURS_LATE, TABLES, tower_jobs
        from twostream_lib.experiments.rows import final_rows, final_seeds, fusion_rows, idt_rows, stream_rows
        cfg, nb = self.cfg, NotebookPlan(name)
        self.seen: set = set()  # this notebook's caches and test scores (stream scores live in its memory)
        spec = TABLES.get(name.split("_", 1)[1])
        splits = (1, 2, 3) if name == "00_data" else (cfg.split,)  # 00_data counts every split's videos
        if spec is not None:
            splits = tuple(final_splits) if spec.rows in (final_rows, idt_rows) else splits
            for bb, stream, k, _ in tower_jobs(cfg, spec, splits):
                self.tower(nb, bb, stream, k)
        if name in ("01_approach", "01_figure1"):
            for stream in ("spatial", "temporal"):
                self.tower(nb, cfg.backbone, stream, cfg.split)
                if name == "01_figure1":  # stream_summary
                    self.test(nb, cfg.backbone, stream, cfg.split, cfg.test_mode, None)
        elif spec is not None and spec.rows is fusion_rows:
            share = tuple(v.layers[0] for v in spec.variants if not v.late and v.clip_length(cfg) == 1)
            for v in spec.variants:
                for k in splits:
                    for seed in cfg.seeds[:1] if v.late else cfg.seeds:
                        self.head(nb, v, k, seed, None, share)
        elif spec is not None and spec.rows is stream_rows:
            for which in ("shallow", "deep"):
                for stream in ("spatial", "temporal"):
                    self.test(nb, backbone_name(cfg, which), stream, cfg.split, cfg.test_mode, None)
        elif spec is not None:
            for k in splits:
                if spec.rows is final_rows:
                    self.head(nb, OURS_LATE, k, final_seeds(cfg, OURS_LATE, splits)[0], cfg.final_test_clips)
                else:
                    self.idt(nb, k)
                for seed in final_seeds(cfg, OURS, splits):
                    self.head(nb, OURS, k, seed, cfg.final_test_clips)
        nb.splits = splits
        read = {}
        for k in splits:
            parts = {p: self.videos(k, p) for p in ("train", "test")}
            nb.videos[f"split {k}"] = {p: len(items) for p, items in parts.items()}
            read.update((v.name, v) for items in parts.values() for v in items)
        nb.data_bytes = sum(v.disk_bytes if v.disk_bytes is not None else self.estimated_disk(v) for v in read.values())
        self.disk += nb.checkpoint_bytes
        nb.disk_bytes, nb.hours = self.disk, nb.tflop / self.tflops / 3600
        return nb

    def estimated_disk(self, v: ListedVideo) -> float:
        """N RGB + 2(N-1) flow JPEGs at the bytes per JPEG measured at 341x256, scaled by pixel count."""
        return (3 * v.frames - 2) * self.jpeg_bytes * v.width * v.height / (REF_FRAME[0] * REF_FRAME[1])


def make_plan(cfg: Profile, listing: Listing | None = None, *, tflops: float = TFLOPS, ram_gb: float = RAM_GB,
              gpu_gb: float = GPU_GB, only=None, splits=None) -> Plan:
    """The plan of the notebooks (those whose name contains one of ``only``) for ``cfg`` on ``listing``
    (default: the profile's data as present). ``splits``: Tables 5-6's (default: ``cfg.final_splits``, as
    their notebooks)."""
    from twostream_lib.experiments.fusion import caches_test_views
    listing = listing if listing is not None else listing_for(cfg)
    planner = _Planner(cfg, listing, tflops)
    names = [n for n in NOTEBOOKS if not only or any(o in n for o in only)]
    notebooks = [planner.notebook(n, tuple(splits or cfg.final_splits)) for n in names]
    results = cfg.results_path
    existing = next(p for p in (results, *results.parents) if p.exists())
    reusable = sum(f.stat().st_size for f in (results / "runs").rglob("*") if f.is_file()) if (results / "runs").is_dir() else 0
    loading = f"{planner.ms_per_file:.2f} CPU ms per JPEG"
    notes = [
        f"compute: FLOPs of every forward counted with torch.utils.flop_counter.FlopCounterMode on the meta device, at "
        f"the profile's sizes; training = {BACKWARD}x forward; hours at {tflops:g} effective TFLOP/s (an assumption, "
        "--tflops). Work an earlier notebook did (towers, heads, caches on disk) counts where it was first done",
        f"feature caches (feature_cache={cfg.feature_cache!r}): {planner.dtype} (features.default_dtype on {cfg.device}); "
        "'disk': memory-mapped shards, RAM holds batches only, one cache per fusion layer; 'memory': in RAM, one pass "
        "of the towers for every layer of a table; 'none': no cache, the towers run under every step. Training "
        f"caches {cfg.feature_epochs} passes (feature_epochs) of {cfg.crop}x{cfg.crop} crops; test views (whole "
        f"frames, test_crop {cfg.test_crop!r}) are cached "
        + ("too" if caches_test_views(cfg) else "not at all: predict reads each once, through the towers "
           "(experiments.fusion.caches_test_views)") + "; both towers' maps at the fusion layer (Backbone.feature_shapes)",
        "checkpoints (train.py): a tower's final.pt (the model); a head's last checkpoint.pt (the model and the "
        "SGD momentum of what trains), float32; a training's previous checkpoint is removed when it ends",
        f"data disk: {listing.source}" + ("" if all(v.disk_bytes is not None for v in listing.videos) else
                                          f"; estimated at {planner.jpeg_bytes:.0f} bytes per JPEG at 341x256 "
                                          "(results/benchmarks/loading.json: jpeg_bytes / jpeg_files), scaled by pixel "
                                          "count, N RGB + 2(N-1) flow JPEGs per video of N frames"),
        f"RAM: {PROCESS_BYTES / GB:g} GB per process and {WORKER_BYTES / GB:g} GB per loader worker (assumptions), "
        f"{PREFETCH} batches per worker + 2 in the main process ({cfg.workers} workers), the model's host copies, "
        "DecodedCache if cache_frames; activations (every layer's output x batch x 4 bytes x 2 for the backward) are "
        + ("GPU memory" if planner.gpu else "RAM on the CPU"),
        f"loader: {loading} at 341x256 (results/benchmarks/loading.json: cpu_ms_per_sample of a T=5, L=10, 224 "
        "sample, 1 worker, the authors' JPEG layout), scaled by JPEGs per sample and pixel count; where more cores "
        f"are needed than this machine's {os.cpu_count()}, decode on the GPU: torchvision.io.decode_jpeg(device='cuda')",
        "IDT: CPU seconds and trajectories per frame of results/benchmarks/idt.json (a UCF101 clip at 320x240), "
        "scaled by pixel count; its descriptors, cached on disk, count as cache",
    ]
    return Plan(cfg.name, listing.dataset, listing.source, cfg.device, planner.dtype, tflops, ram_gb, gpu_gb,
                _shown(results), shutil.disk_usage(existing).free, reusable, os.cpu_count() or 1,
                {k: getattr(cfg, k) for k in ("T", "feature_epochs", "feature_cache", "test_clips", "final_test_clips", "batch_size",
                                              "workers", "schedule", "seeds")}, notebooks, notes)


def measured_bytes(runs: Path) -> dict[str, int]:
    """What a run left under its ``runs/`` folder, to hold against a plan: ``cache`` (the feature caches'
    folders, ``.../features/*``) and ``checkpoints`` (``*.pt``)."""
    files = [f for f in Path(runs).rglob("*") if f.is_file()] if Path(runs).is_dir() else []
    return {"cache": sum(f.stat().st_size for f in files if "features" in f.relative_to(runs).parts[:-1]),
            "checkpoints": sum(f.stat().st_size for f in files if f.suffix == ".pt")}


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def run_plan(profile: str, parameters: dict, folder: Path, *, only=None) -> Plan:
    """The plan of a ``./run_all.sh`` run (runner.main): its profile fields (``-p``), its results folder,
    Tables 5-6's ``splits`` if given."""
    fields = {k: v for k, v in parameters.items() if k in {f.name for f in dataclasses.fields(Profile)}}
    cfg = load_profile(profile, **{**fields, "results_dir": str(folder)})
    return make_plan(cfg, only=only, splits=parameters.get("splits"))


def cli_main(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m twostream_lib plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    ap.add_argument("-p", "--set", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="profile setting (or `splits` of Tables 5-6), e.g. -p feature_epochs 4")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="notebooks whose name contains NAME")
    data = ap.add_mutually_exclusive_group()
    data.add_argument("--listing", help="CSV: video,label,frames,width,height,split1,split2,split3 (docs/plan.md)")
    data.add_argument("--ucf101-listing", action="store_true",
                      help="UCF101's 13,320 videos generated with the official split sizes (no data needed)")
    ap.add_argument("--tflops", type=float, default=TFLOPS, help=f"effective GPU throughput (default {TFLOPS:g})")
    ap.add_argument("--ram-gb", type=float, default=RAM_GB, help=f"host RAM to check against (default {RAM_GB:g})")
    ap.add_argument("--gpu-gb", type=float, default=GPU_GB, help=f"GPU memory to check against (default {GPU_GB:g})")
    ap.add_argument("--out", help="write the plan as JSON to this file")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--check", action="store_true", help="exit 2 when the caches and checkpoints cannot fit the disk")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(list(argv)[1:])
    from twostream_lib.runner import parse_value, results_folder
    try:
        settings = {k: parse_value(v) for k, v in args.set}
        splits = settings.pop("splits", None)
        # the results folder ./run_all.sh would use (results/paper, ...): its disk and its runs/
        cfg = load_profile(args.profile, **{**settings, "results_dir": str(results_folder(args.profile, settings))})
        listing = (ucf101_listing() if args.ucf101_listing else
                   read_listing(args.listing, cfg.dataset) if args.listing else None)
        plan = make_plan(cfg, listing, tflops=args.tflops, ram_gb=args.ram_gb, gpu_gb=args.gpu_gb, only=args.only,
                         splits=splits)
        plan.command = " ".join(["python -m twostream_lib plan", *list(argv)[1:]])
        print(plan.to_json() if args.json else plan.text(), end="")
        if args.out:
            from twostream_lib.files import atomic_write
            atomic_write(args.out, plan.to_json())
            print(f"wrote {args.out}", file=sys.stderr)
        if args.check:
            check_fits(plan)
    except (ConfigError, DataError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
