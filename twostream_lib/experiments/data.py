"""Set-up and data: what every notebook does first.

    cfg = setup("demo")          # the profile, threads, seeds, deterministic kernels
    data = prepare_data(cfg)     # the data set's frame store and official splits

``demo`` generates the synthetic set (about a minute, once) under ``data/synthetic/seed<k>``; the real
data sets must have been prepared (``python -m twostream_lib fetch`` / ``prepare``) under
``data/<dataset>/{frames,splits}``; ``smoke`` generates its UCF101-layout rehearsal set
(:mod:`twostream_lib.data.rehearsal`) under ``data/rehearsal/ucf101``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from twostream_lib.allocator import reuse_large_allocations
from twostream_lib.arithmetic import check_pinned, use_pinned_kernels
from twostream_lib.config import PROFILES, Profile, load_profile
from twostream_lib.data.rehearsal import make_rehearsal_set
from twostream_lib.data.sampling import ClipSampling
from twostream_lib.data.splits import Split, load_split
from twostream_lib.data.stores import DecodedCache, open_store
from twostream_lib.data.synthetic import make_synthetic_dataset
from twostream_lib.determinism import deterministic, seed_everything, set_threads
from twostream_lib.errors import ConfigError, DataError

__all__ = ["setup", "configure_process", "DataBundle", "prepare_data", "synthetic_params", "synthetic_root", "split_summary", "data_card", "data_figure", "limit_videos",
           "clip_sampling"]


def setup(profile: str = "demo", **overrides) -> Profile:
    """Load the profile (``None`` overrides are ignored), set this process up for it
    (:func:`configure_process`) and return it."""
    return configure_process(load_profile(profile, **overrides))


def configure_process(cfg: Profile) -> Profile:
    """Pin the CPU arithmetic if the profile asks for it (the demo), fix threads, seeds and
    deterministic kernels, and on CPU let large tensors reuse heap memory (:mod:`twostream_lib.allocator`);
    also what a worker process does before training a tower."""
    if cfg.pinned_arithmetic:
        use_pinned_kernels()
        problems = check_pinned()
        if problems:
            warnings.warn("the CPU arithmetic is not pinned, so numbers may differ from other machines' "
                          "(see twostream_lib.arithmetic): " + "; ".join(problems), stacklevel=3)
    else:
        use_pinned_kernels(False)
    if cfg.threads:
        set_threads(cfg.threads)
    seed_everything(cfg.seeds[0])
    if not cfg.device.startswith("cuda"):
        deterministic(True)
        reuse_large_allocations()
    return cfg


@dataclass
class DataBundle:
    """A data set ready to sample: its frame store and official splits."""

    dataset: str
    frames_root: Path
    split_dir: Path
    store: object  # data.stores.FrameStore
    card_path: Path | None = None
    info: dict = field(default_factory=dict)
    _splits: dict = field(default_factory=dict, repr=False, compare=False)  # read once per bundle

    def split(self, k: int) -> Split:
        """Split ``k`` restricted to the videos present in the store (smoke runs hold a few)."""
        if k not in self._splits:
            self._splits[k] = self._read_split(k)
        return self._splits[k]

    def _read_split(self, k: int) -> Split:
        split = load_split(self.dataset, self.split_dir, k)
        present = set(self.store.videos())
        train = tuple(v for v in split.train if v.name in present)
        test = tuple(v for v in split.test if v.name in present)
        if not train and not test:
            raise DataError(f"none of the videos of {self.dataset} split {k} ({self.split_dir}) is in "
                            f"the frame store {self.frames_root}: prepare the frames first")
        return dataclasses.replace(split, train=train, test=test)


def prepare_data(cfg: Profile) -> DataBundle:
    """Generate (demo) or locate (paper) the profile's data set and open its frame store.

    The real data sets need ``data/<dataset>/frames`` (authors' or mmaction2 layout) and
    ``data/<dataset>/splits``; the error names what is missing and the command that makes it.
    """
    if cfg.dataset == "synthetic":
        params = synthetic_params(cfg)
        ds = make_synthetic_dataset(synthetic_root(cfg), **params, progress=False)
        return DataBundle("synthetic", Path(ds.frames_root), Path(ds.split_dir), _open_store(cfg, ds.frames_root),
                          card_path=Path(ds.card_path), info={"classes": list(ds.classes)})
    if cfg.dataset not in ("ucf101", "hmdb51"):
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; expected 'synthetic', 'ucf101' or 'hmdb51'")
    root = cfg.data_dir / cfg.dataset
    if cfg.rehearsal_classes and cfg.dataset == "ucf101":  # the smoke profile's generated UCF101-layout set
        make_rehearsal_set(root, classes=cfg.rehearsal_classes, frames=cfg.rehearsal_frames,
                           workers=max(1, cfg.workers or cfg.threads or 1), progress=False)
    frames, splits = root / "frames", root / "splits"
    fetch = f"python -m twostream_lib fetch {cfg.dataset} --no-videos --root {cfg.data_dir}"
    for path, how in ((frames, f"fastest, the authors' frames and TV-L1 flow: {fetch} --precomputed; or from "
                               f"the videos (TV-L1 on the CPU, slow): python -m twostream_lib prepare VIDEOS {frames}"),
                      (splits, fetch)):
        if not path.exists():
            raise DataError(f"{path} does not exist; expected the {cfg.dataset} {path.name} there ({how})")
    return DataBundle(cfg.dataset, frames, splits, _open_store(cfg, frames))


def synthetic_params(cfg: Profile) -> dict:
    """The profile's synthetic data set: :func:`~twostream_lib.data.synthetic.make_synthetic_dataset` arguments."""
    return {"seed": cfg.synthetic_seed, "size": cfg.synthetic_size, "frames": cfg.synthetic_frames,
            "groups": cfg.synthetic_groups, "clips": cfg.synthetic_clips, "classes": cfg.synthetic_classes}


def synthetic_root(cfg: Profile) -> Path:
    """``data/synthetic/seed<k>`` for the default set; other sizes get a folder of their own."""
    defaults = synthetic_params(PROFILES["demo"])
    params = synthetic_params(cfg)
    name = f"seed{cfg.synthetic_seed}"
    if {k: v for k, v in params.items() if k != "seed"} != {k: v for k, v in defaults.items() if k != "seed"}:
        text = json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True, default=list)
        name += "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return cfg.data_dir / "synthetic" / name


DECODED_DIR = ".decoded"  # data.stores.DecodedCache's disk copy, inside the frames it was decoded from


def _open_store(cfg: Profile, root):
    """The frame store under ``root``; with ``cache_frames`` each video decoded once for all processes
    (a copy of the decoded frames in ``root/.decoded``)."""
    store = open_store(root)
    return DecodedCache(store, disk=Path(root) / DECODED_DIR) if cfg.cache_frames else store


def limit_videos(items, cfg: Profile) -> tuple:
    """At most ``cfg.max_videos`` items, evenly spaced over the list (so over the classes: smoke runs)."""
    if not cfg.max_videos or len(items) <= cfg.max_videos:
        return tuple(items)
    return tuple(items[:: len(items) // cfg.max_videos][: cfg.max_videos])


def clip_sampling(cfg: Profile, *, T: int, train: bool, crop: str | None = None) -> ClipSampling:
    """The profile's clip sampling (Sec. 3.4-3.5) for clips of ``T`` samples: training (the profile's
    fusion crop unless ``crop`` says otherwise) or testing (the profile's test crop)."""
    return ClipSampling(T=T, L=cfg.L, tau=tuple(cfg.tau), size=cfg.crop,
                        crop=crop or (cfg.fusion_crop if train else cfg.test_crop), flip=True)


def split_summary(data: DataBundle, splits=(1, 2, 3)) -> pd.DataFrame:
    """Classes and train/test videos per split (read from the official split files)."""
    rows = []
    for k in splits:
        s = data.split(k)
        rows.append({"split": k, "classes": len(s.classes), "train videos": len(s.train),
                     "test videos": len(s.test)})
    return pd.DataFrame(rows).set_index("split")


def data_card(data: DataBundle) -> str:
    """The data card's markdown (synthetic set), or a short description of a real data set."""
    if data.card_path and data.card_path.exists():
        return data.card_path.read_text(encoding="utf-8")
    return f"{data.dataset}: frames in `{data.frames_root}`, splits in `{data.split_dir}`."


def data_figure(cfg: Profile, data: DataBundle, *, video_index: int = 0):
    """RGB frames with their u/v flow for one test video -> ``results/figures/data_samples.png``."""
    # imported here, not above: matplotlib stays out of the worker processes (workers.PRELOAD)
    from twostream_lib import plots

    video = data.split(cfg.split).test[video_index]
    n = data.store.num_frames(video.name)
    idx = np.linspace(0, max(n - 2, 0), cfg.T).round().astype(int).tolist()
    fig = plots.clip_figure(data.store.read_rgb(video.name, idx), data.store.read_flow(video.name, idx),
                            title=f"{video.name} ({video.class_name})")
    return plots.save_figure(fig, cfg.results_path / "figures" / "data_samples.png")
