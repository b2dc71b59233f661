"""Fusion runs (Sec. 3.1-3.5; Tables 1, 2, 4-6): one trained head per row of a fusion table.

Protocol (Sec. 3.5): each stream is trained on its own; a fusion model is built from the two trained
towers, the fusion layer injected, and only the layers from the fusion on are trained ("we back-
propagate only down to the injected fusion layer"). With the towers frozen below the fusion layer,
their outputs there are computed once per (clip, augmentation) and cached
(:mod:`twostream_lib.features`): the same model and the same gradients in a fraction of the time.
"""
from __future__ import annotations

import contextlib
import copy
import math
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from twostream_lib.config import Profile
from twostream_lib.data.sampling import TwoStreamClips
from twostream_lib.evaluate import VideoScores, load_scores, predict, save_scores
from twostream_lib.features import FEATURE_KEYS, FeatureHead, FeatureSet, cache_fusion_inputs
from twostream_lib.files import exclusive
from twostream_lib.models import LAYERS, TwoStreamNet, trainable_parameters
from twostream_lib.plan import head_cost
from twostream_lib.train import completed_model, train
from twostream_lib.workers import worker_context

from .cache import MEMO, key_digest, run_dir
from .data import DataBundle, clip_sampling, configure_process, limit_videos
from .streams import (STREAM_INPUT, Streams, late_fusion, test_views, train_config, train_stream, training_threads,
                      views_key)

__all__ = ["Variant", "backbone_name", "fusion_dir", "build_fused", "test_mode", "run_fusion", "train_heads",
           "scores_path"]


@dataclass(frozen=True)
class Variant:
    """One row of a fusion table: how, where and over time the two towers are fused.

    ``key`` joins the row with the paper's (:mod:`twostream_lib.paper`); the other fields are the
    :class:`~twostream_lib.models.TwoStreamNet` arguments that define the model, so the model a row
    trains and the parameters it reports come from one definition.
    """

    key: str  # paper row key
    label: str
    fusion: str | tuple[str, ...] = "conv"  # "sum" | "max" | "concat" | "conv" | "bilinear" | "softmax" (late)
    layers: tuple[str, ...] = ("relu5",)
    truncate: bool = True  # drop the fused-from (temporal) tower above the last fusion layer
    temporal: str = "none"  # "none" | "pool2d" | "pool3d" | "conv3d_pool3d" (Sec. 3.3)
    conv_init: str = "sum"  # "sum" ([I I], paper) | "released" | "gaussian"
    spatial: str = "shallow"  # which of the profile's backbones: "shallow" | "deep"
    temporal_tower: str = "shallow"
    T: int = 1  # samples per training clip; -1: the profile's T (temporal fusion needs it)

    @property
    def late(self) -> bool:
        return self.fusion == "softmax"

    def clip_length(self, cfg: Profile) -> int:
        return cfg.T if self.T == -1 else self.T

    def net_kwargs(self, cfg: Profile | None = None) -> dict:
        """The TwoStreamNet keyword arguments of this row (``cfg`` adds the profile's choices)."""
        kw = {"fusion": self.fusion, "layers": self.layers, "truncate": self.truncate,
              "conv_init": self.conv_init, "temporal_fusion": self.temporal}
        if cfg is not None:
            kw.update(conv3d_init=cfg.conv3d_init, pool3d=cfg.pool3d, fusion_relu=cfg.fusion_relu)
        return kw

    def architecture_name(self, T: int) -> str:
        """The fusion head's folder name: what defines the trained model, not the table row, so rows of
        different tables with the same architecture (Table 4's 3D conv + 3D pooling, Tables 5-6's
        "ours") share one trained head."""
        keep = "truncated" if self.truncate else "both-towers"
        fusion = self.fusion if isinstance(self.fusion, str) else ",".join(self.fusion)
        return f"{fusion}@{'+'.join(self.layers)}-{self.temporal}-{self.conv_init}-{keep}-T{T}"


def backbone_name(cfg: Profile, which: str) -> str:
    """The profile's "shallow" (VGG-M-2048 in the paper) or "deep" (VGG-16) backbone."""
    return {"shallow": cfg.backbone, "deep": cfg.deep_backbone}[which]


def fusion_dir(cfg: Profile, variant: Variant, split: int, seed: int) -> Path:
    """The run folder of one trained fusion head (its metrics, checkpoint and test scores)."""
    s_bb, t_bb = backbone_name(cfg, variant.spatial), backbone_name(cfg, variant.temporal_tower)
    name = f"{variant.architecture_name(variant.clip_length(cfg))}-{s_bb}-{t_bb}-seed{seed}"
    return run_dir(cfg, "heads", f"split{split}", name)


def build_fused(cfg: Profile, variant: Variant, spatial: Streams, temporal: Streams) -> TwoStreamNet:
    """The variant's TwoStreamNet on copies of the trained towers, frozen below the fusion layer."""
    model = TwoStreamNet(copy.deepcopy(spatial.spatial), copy.deepcopy(temporal.temporal),
                         **variant.net_kwargs(cfg))
    if cfg.dropout_fusion is not None:  # only layers above the fusion train: their dropout is the head's
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = cfg.dropout_fusion
    trainable_parameters(model, "fusion_and_above")
    return model


def test_mode(variant: Variant, cfg: Profile) -> str:
    """How a row's model is tested: a per-frame model on T samples spread over the video; a model that
    fuses the T samples of a clip on clips at a stride it was trained at (Sec. 3.5; data.sampling)."""
    return cfg.test_mode if variant.T == 1 else "strided_flips"


class TowerMaps(nn.Module):
    """Both frozen towers run once, their maps at several layers returned together, flattened:
    ``fusion_inputs`` gives [B, T, D] per tower, the layers' maps one after the other. One pass of the
    towers then serves every fusion row of a table, whatever layer it fuses at."""

    def __init__(self, spatial: nn.Module, temporal: nn.Module, layers):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.layers = tuple(sorted(set(layers), key=LAYERS.index))
        self.requires_grad_(False)  # trained towers are frozen below any fusion layer (Sec. 3.5)

    def _maps(self, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out, at = [], None
        for layer in self.layers:
            x = tower.run(x, at, layer)
            out.append(x.flatten(1))
            at = layer
        return torch.cat(out, 1)

    def fusion_inputs(self, rgb: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = rgb.shape[:2]
        return (self._maps(self.spatial, rgb.flatten(0, 1)).unflatten(0, (b, t)),
                self._maps(self.temporal, flow.flatten(0, 1)).unflatten(0, (b, t)))

    def split(self, feats: FeatureSet, size: tuple[int, int]) -> dict[str, FeatureSet]:
        """One FeatureSet per layer from the joint one, for inputs of ``size`` (H, W)."""
        shapes = [self.spatial.feature_shapes(size), self.temporal.feature_shapes(size)]
        out, offsets = {}, [0, 0]
        for layer in self.layers:
            parts = []
            for i, flat in enumerate((feats.fa, feats.fb)):
                d = math.prod(shapes[i][layer])
                parts.append(np.ascontiguousarray(flat[..., offsets[i]:offsets[i] + d]).reshape(
                    *flat.shape[:-1], *shapes[i][layer]))
                offsets[i] += d
            out[layer] = FeatureSet(*parts, feats.labels, feats.videos, feats.views, feats.fingerprint + layer)
        return out


RAW_KEYS = ("rgb", "flow")


def caches_test_views(cfg: Profile) -> bool:
    """Whether a head's test views are cached like its training clips. In memory (the demo) they are: the
    rows of a table share them. On disk only where "plateau" reads them every epoch; otherwise predict
    reads each view once, and caching it costs more disk than it saves (Table 5's 20 clips x 2 flips x
    T whole frames of both towers: ~1.5 TB at UCF101 scale, ``python -m twostream_lib plan``)."""
    return cfg.feature_cache == "memory" or (cfg.feature_cache == "disk" and cfg.schedule == "plateau")


def fusion_clips(cfg: Profile, data: DataBundle, T: int, split: int, *, train: bool, mode: str | None = None,
                 clips: int | None = None):
    """What a fusion head trains on (augmented clips of T samples) or is tested on (the test views)."""
    if train:
        return TwoStreamClips(data.store, limit_videos(data.split(split).train, cfg),
                              clip_sampling(cfg, T=T, train=True), train=True, seed=cfg.seeds[0])
    return test_views(cfg, data, split, mode=mode, clips=clips)


def cached_layers(cfg: Profile, first_layer: str, share_layers: tuple = ()) -> tuple[str, ...]:
    """The layers one pass of the towers caches for a head that fuses first at ``first_layer``: in memory,
    every shared layer of the table (one pass serves all its rows); on disk, its own only (a joint cache
    would have to be read whole to be split)."""
    if cfg.feature_cache == "memory" and first_layer in share_layers:
        return tuple(share_layers)
    return (first_layer,)


def features_dir(cfg: Profile, split: int, key: tuple) -> Path:
    """The folder of one on-disk feature cache (``feature_cache="disk"``), named by the digest of what
    defines it (towers' weights, sampling, passes, layer), beside the heads that read it."""
    return run_dir(cfg, "heads", f"split{split}", "features", f"{key[0]}-{key[-1]}-{key_digest(key)}")


def fusion_features(cfg: Profile, data: DataBundle, towers: Streams, model: TwoStreamNet, layers: tuple, T: int,
                    split: int, *, train: bool, mode: str | None = None, clips: int | None = None) -> FeatureSet:
    """The towers' maps at ``model.first_layer`` for the training clips (``cfg.feature_epochs`` augmented
    passes) or the test views, from the in-memory memo or computed. With several ``layers``
    (:func:`cached_layers`: the rows of a table, in memory) one pass of the towers computes and keeps
    all of them; on disk (``"disk"``) each layer is its own memory-mapped cache, reused by later runs."""
    base = (towers.digest("spatial"), towers.digest("temporal"), T, split, cfg.max_videos)
    if train:
        extra = (cfg.feature_epochs, cfg.seeds[0], cfg.fusion_crop, cfg.crop)
        passes = cfg.feature_epochs
    else:
        extra = views_key(cfg, split, mode, clips)
        passes = 1
    key = ("train-features" if train else "test-features", *base, *extra)
    found = MEMO.peek((*key, model.first_layer))
    if found is not None:
        return found
    clips_set = fusion_clips(cfg, data, T, split, train=train, mode=mode, clips=clips)
    if len(layers) == 1:
        path = features_dir(cfg, split, (*key, model.first_layer)) if cfg.feature_cache == "disk" else None
        feats = cache_fusion_inputs(model, clips_set, epochs=passes, batch_size=cfg.batch_size, device=cfg.device,
                                    path=path, workers=cfg.workers)
        return MEMO.put((*key, model.first_layer), feats)  # a memory-mapped set holds no RAM (nbytes 0)
    maps = TowerMaps(towers.spatial, towers.temporal, layers)
    joint = cache_fusion_inputs(maps, clips_set, epochs=passes, batch_size=cfg.batch_size, device=cfg.device)
    size = tuple(clips_set[0][STREAM_INPUT["spatial"]].shape[-2:])
    for layer, feats in maps.split(joint, size).items():
        MEMO.put((*key, layer), feats)
    return MEMO.peek((*key, model.first_layer))


def run_fusion(cfg: Profile, data: DataBundle, variant: Variant, *, split: int | None = None,
               seed: int | None = None, clips: int | None = None,
               share_layers: tuple[str, ...] = ()) -> tuple[VideoScores, TwoStreamNet | None]:
    """Train one fusion variant's head on cached tower features and score the test videos.

    Returns (VideoScores, model); late fusion ("softmax") trains nothing and returns no model. ``clips``:
    test clips of the models that fuse T samples (default ``cfg.test_clips``; Tables 5-6 use
    ``cfg.final_test_clips``). ``share_layers``: the first layers of the other rows of the same table,
    whose features the same pass of the towers computes (:func:`fusion_features`). The test scores are
    saved beside the trained head, so a second call (another notebook, a re-run, or after
    :func:`train_heads` trained it in another process) neither caches features nor trains again.
    """
    split = split or cfg.split
    seed = cfg.seeds[0] if seed is None else seed
    towers = _towers(cfg, data, variant, split)
    if variant.late:
        mode, clips = _test_views(cfg, variant, clips)
        return late_fusion(cfg, data, towers, towers, mode=mode, clips=clips), None
    model = build_fused(cfg, variant, towers, towers)
    path = scores_path(cfg, variant, split, seed, clips)
    if path.exists():  # trained and tested before (e.g. Table 5's heads, reused by Table 6)
        return load_scores(path), model
    with exclusive(scores_lock(path)):  # a notebook running beside this one may be computing them
        if path.exists():
            return load_scores(path), model
        return _HeadRun.prepare(cfg, data, variant, towers, model, split, seed, clips, share_layers).finish(), model


def scores_path(cfg: Profile, variant: Variant, split: int, seed: int, clips: int | None = None) -> Path:
    """Where a fusion head's test scores are saved (beside the head; one file per way of testing it)."""
    mode, clips = _test_views(cfg, variant, clips)
    return fusion_dir(cfg, variant, split, seed) / f"scores-{mode}{clips or ''}.npz"


def scores_lock(path: Path) -> Path:
    """The lock file of a head's scores file: held while they are computed, so that a notebook running
    beside another (``run_all.sh --at-once``; Tables 5 and 6 test the same heads) waits for them
    and reads them instead of computing them a second time."""
    return path.with_name(f".{path.stem}.lock")


def _test_views(cfg: Profile, variant: Variant, clips: int | None) -> tuple[str, int | None]:
    """How a row is tested: its test mode, and the clips per video where that mode samples clips
    (``clips``, else the profile's ``test_clips``; None for the other modes)."""
    mode = test_mode(variant, cfg)
    return mode, ((clips or cfg.test_clips) if mode == "strided_flips" else None)


def _towers(cfg: Profile, data: DataBundle, variant: Variant, split: int) -> Streams:
    """The trained towers a row fuses (shared by every head seed). Loading them seeds torch's generator
    (train_stream), so the head built next starts the same whatever ran before it in the process."""
    s_bb, t_bb = backbone_name(cfg, variant.spatial), backbone_name(cfg, variant.temporal_tower)
    return Streams(f"{s_bb}+{t_bb}", train_stream(cfg, data, "spatial", backbone=s_bb, split=split),
                   train_stream(cfg, data, "temporal", backbone=t_bb, split=split), split, cfg.seeds[0])


@dataclass
class _HeadRun:
    """One head to train and test: the model, what it reads and where its results go. ``prepare`` builds
    the inputs (the towers' cached maps) in this process; ``finish`` trains and tests, here or in another
    process (:func:`train_heads` sends the whole run there)."""

    cfg: Profile
    head: nn.Module  # what trains: the model on cached maps (FeatureHead), or the model itself ("none")
    tested: nn.Module  # what predict runs (shares the head's layers)
    test_keys: tuple
    test_set: object
    train_set: object | None  # None: trained before (``trained`` holds its weights)
    trained: dict | None
    tc: object  # train.TrainConfig
    seed: int
    path: Path  # the scores file

    @classmethod
    def prepare(cls, cfg: Profile, data: DataBundle, variant: Variant, towers: Streams, model: TwoStreamNet,
                split: int, seed: int, clips: int | None, share_layers: tuple) -> _HeadRun:
        path = scores_path(cfg, variant, split, seed, clips)
        mode, clips = _test_views(cfg, variant, clips)
        T = variant.clip_length(cfg)
        out = fusion_dir(cfg, variant, split, seed)
        layers = cached_layers(cfg, model.first_layer, tuple(share_layers))
        # "none": the frozen towers run under every step (no disk for a cache); else the head reads cached maps
        head, keys = (model, RAW_KEYS) if cfg.feature_cache == "none" else (FeatureHead(model), FEATURE_KEYS)
        if caches_test_views(cfg):
            tested, test_keys = FeatureHead(model), FEATURE_KEYS
            test_set = fusion_features(cfg, data, towers, model, layers, T, split, train=False, mode=mode, clips=clips)
        else:  # read once, by predict: through the frozen towers (the same model: FeatureHead shares its layers)
            tested, test_keys = model, RAW_KEYS
            test_set = fusion_clips(cfg, data, T, split, train=False, mode=mode, clips=clips)
        tc = train_config(cfg, out, stage="fusion", seed=seed, input_keys=keys)
        trained = completed_model(out / "checkpoint.pt", tc.epochs)
        train_set = None
        if trained is None:  # else trained before, tested now on other views (Table 5's clips, Table 4's heads)
            train_set = (fusion_clips(cfg, data, T, split, train=True) if cfg.feature_cache == "none" else
                         fusion_features(cfg, data, towers, model, layers, T, split, train=True))
        return cls(cfg, head, tested, test_keys, test_set, train_set, trained, tc, seed, path)

    def finish(self) -> VideoScores:
        """Train (unless trained before), test, save the scores; returns them. With ``cfg.tower_threads``
        threads, as the towers, wherever it runs: the numbers do not depend on which process ran it."""
        with training_threads(self.cfg.tower_threads):
            if self.trained is not None:
                self.head.load_state_dict(self.trained)
            else:
                torch.manual_seed(self.seed)
                # "plateau" validates on the test views, as the released cnn_train_dag.m (imdb set 2)
                train(self.head, self.train_set, self.test_set if self.cfg.schedule == "plateau" else None, self.tc)
            scores = predict(self.tested, self.test_set, batch_size=self.cfg.batch_size, device=self.cfg.device,
                             input_keys=self.test_keys)
        save_scores(scores, self.path)
        return scores


def train_heads(cfg: Profile, data: DataBundle, jobs, *, share_layers: tuple[str, ...] = ()) -> None:
    """Train and test the fusion heads of ``jobs`` ((variant, split, seed, clips) each) that have no saved
    scores yet, ``cfg.tower_processes`` + 1 at a time in separate processes, each with ``cfg.tower_threads``
    threads; :func:`run_fusion` then reads their scores. Only where the towers' maps are cached in
    memory (the demo): this process computes them (one pass of the towers serves a table's rows, as in
    :func:`run_fusion`) and sends each head its own. Elsewhere it does nothing and ``run_fusion`` trains
    the heads one after the other.

    The numbers equal those of one process: a head starts from the same weights (built after its towers
    are loaded, :func:`_towers`) and trains and tests with ``cfg.tower_threads`` threads wherever it runs
    (the order of a sum can depend on the number of threads)."""
    if cfg.tower_processes <= 1 or cfg.feature_cache != "memory":
        return
    todo = [(v, split or cfg.split, seed, clips) for v, split, seed, clips in jobs
            if not v.late and not scores_path(cfg, v, split or cfg.split, seed, clips).exists()]
    if len(todo) <= 1:
        return
    with contextlib.ExitStack() as held:
        # the heads' locks (:func:`scores_lock`), always taken in the same order, so that two notebooks
        # asking for overlapping heads cannot each hold one the other waits for; what another notebook
        # finished meanwhile is read, not computed again
        for path in sorted({str(scores_path(cfg, *job)) for job in todo}):
            held.enter_context(exclusive(scores_lock(Path(path))))
        _train_heads(cfg, data, [job for job in todo if not scores_path(cfg, *job).exists()], share_layers)


def _train_heads(cfg: Profile, data: DataBundle, todo: list, share_layers: tuple) -> None:
    """:func:`train_heads` once it holds the heads' locks."""
    if not todo:
        return
    runs, costs = [], []
    for v, split, seed, clips in todo:
        towers = _towers(cfg, data, v, split)
        model = build_fused(cfg, v, towers, towers)
        runs.append(_HeadRun.prepare(cfg, data, v, towers, model, split, seed, clips, share_layers))
        costs.append(0.0 if runs[-1].train_set is None else
                     head_cost(cfg, v, len(data.split(split).classes), v.clip_length(cfg), (cfg.crop, cfg.crop))[0])
    if sum(run.train_set is not None for run in runs) <= 1:  # testing alone is not worth starting processes
        for run in runs:
            run.finish()
        return
    # the costliest heads first (their FLOPs, as the plan counts them), so that the processes finish together
    order = sorted(range(len(runs)), key=lambda i: -costs[i])
    # one process more than the towers use: when the heads are few and long (Table 4's three 3D conv heads),
    # the third shares the cores with the first two instead of waiting for one of them (118 s against 131 s
    # for Table 4 measured back to back); one thread each, so the cores are shared, not oversubscribed
    with ProcessPoolExecutor(max_workers=min(cfg.tower_processes + 1, len(runs)),
                             mp_context=worker_context()) as pool:
        for done in as_completed([pool.submit(_finish_head, runs[i]) for i in order]):
            done.result()


def _finish_head(run: _HeadRun) -> None:
    """One head in a worker process, with the main process's arithmetic settings."""
    configure_process(run.cfg)
    run.finish()
