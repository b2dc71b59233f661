"""Single streams (Sec. 3, [22]; Table 3): train each tower on its own, score it, fuse late.

Both towers start from the profile's initialisation (ImageNet in ``paper``; in ``demo`` the spatial
tower first learns dense colour, :class:`~twostream_lib.models.DenseColour`, the demo's stand-in for
ImageNet) and are trained on one frame (spatial) or one flow stack (temporal) per video and epoch;
a trained tower is saved as ``final.pt`` in its run folder and loaded from there afterwards.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from twostream_lib import plots
from twostream_lib.config import Profile
from twostream_lib.data.sampling import TwoStreamClips, TwoStreamViews
from twostream_lib.errors import ConfigError
from twostream_lib.evaluate import VideoScores, accuracy, late_fuse, predict
from twostream_lib.models import DenseColour, FrameAverage, build_backbone
from twostream_lib.train import TrainConfig, train

from .cache import MEMO, run_dir, save_state, weights_digest
from .data import DataBundle, clip_sampling, limit_videos

__all__ = ["Streams", "STREAM_INPUT", "stream_dir", "train_stream", "train_streams", "stream_scores", "late_fusion",
           "stream_summary", "test_views", "train_config", "figure1"]

#: The input each stream reads from a clip.
STREAM_INPUT = {"spatial": "rgb", "temporal": "flow"}


@dataclass
class Streams:
    """The trained spatial (RGB) and temporal (flow) towers of one backbone, split and seed."""

    backbone: str
    spatial: nn.Module | None
    temporal: nn.Module | None
    split: int
    seed: int
    _digests: dict = field(default_factory=dict, repr=False)

    def tower(self, stream: str) -> nn.Module:
        if stream not in STREAM_INPUT:
            raise ConfigError(f"stream must be 'spatial' or 'temporal', got {stream!r}")
        if getattr(self, stream) is None:
            raise ConfigError(f"the {stream} tower of {self.backbone} was not trained here (only=...)")
        return getattr(self, stream)

    def digest(self, stream: str) -> str:
        """The digest of a tower's weights (computed once: the towers are frozen once trained)."""
        if stream not in self._digests:
            self._digests[stream] = weights_digest(self.tower(stream))
        return self._digests[stream]


def train_config(cfg: Profile, out_dir, *, lr: float, epochs: int, seed: int, input_keys) -> TrainConfig:
    """The engine's settings for one of the profile's training runs (streams and fusion heads)."""
    return TrainConfig(lr=lr, epochs=epochs, batch_size=cfg.batch_size, seed=seed, device=cfg.device,
                       amp=cfg.amp and cfg.device.startswith("cuda"), workers=cfg.workers,
                       input_keys=tuple(input_keys), out_dir=str(out_dir), lr_schedule="cosine",
                       progress=False)


def stream_dir(cfg: Profile, backbone: str, stream: str, split: int, seed: int) -> Path:
    """The run folder of one trained tower (``final.pt``, ``metrics.csv``, ``config.json``)."""
    return run_dir(cfg, f"split{split}", f"{backbone}-{stream}-seed{seed}")


def train_stream(cfg: Profile, data: DataBundle, stream: str, *, backbone: str | None = None,
                 split: int | None = None, seed: int | None = None) -> nn.Module:
    """Train (or load the cached) spatial or temporal tower; returns the Backbone in eval mode."""
    if stream not in STREAM_INPUT:
        raise ConfigError(f"stream must be 'spatial' or 'temporal', got {stream!r}")
    backbone = backbone or cfg.backbone
    split = split or cfg.split
    seed = cfg.seeds[0] if seed is None else seed
    s = data.split(split)
    weights = cfg.weights if backbone == cfg.backbone else cfg.deep_weights
    if weights and weights != "imagenet":
        weights = str(cfg.path(weights))
    # both towers start from ImageNet (the flow tower's conv1 averaged over RGB, copied to 2L channels);
    # seeded here so that a tower's initialisation does not depend on what the process ran before
    torch.manual_seed(seed)
    net = build_backbone(backbone, in_channels=3 if stream == "spatial" else 2 * cfg.L,
                         num_classes=len(s.classes), dropout=cfg.dropout, weights=weights)
    out = stream_dir(cfg, backbone, stream, split, seed)
    model = FrameAverage(net)
    final = out / "final.pt"
    if final.exists():
        model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True))
        return net.eval()
    torch.manual_seed(seed)
    clips = TwoStreamClips(data.store, limit_videos(s.train, cfg),
                           clip_sampling(cfg, T=1, train=True, crop="multiscale"), train=True, seed=seed)
    if stream == "spatial" and cfg.appearance_pretrain_epochs and not weights:
        pretrain_appearance(net, clips, cfg, seed=seed, out=out / "appearance_pretraining")
    epochs = cfg.epochs_temporal if stream == "temporal" and cfg.epochs_temporal else cfg.epochs_stream
    train(model, clips, None, train_config(cfg, out, lr=cfg.lr_stream, epochs=epochs, seed=seed,
                                           input_keys=(STREAM_INPUT[stream],)))
    save_state(model, final)
    return net.eval()


def pretrain_appearance(net: nn.Module, clips: TwoStreamClips, cfg: Profile, *, seed: int, out: Path) -> None:
    """Train ``net`` up to ReLU5 on dense colour regression (:class:`DenseColour`) for the profile's
    epochs, through the engine like every other training run (its metrics in ``out``)."""
    model = DenseColour(net, net.feature_shapes(cfg.crop)["relu5"][0])
    train(model, clips, None, train_config(cfg, out, lr=cfg.lr_stream, epochs=cfg.appearance_pretrain_epochs,
                                           seed=seed, input_keys=("rgb",)))


def train_streams(cfg: Profile, data: DataBundle, *, backbone: str | None = None, split: int | None = None,
                  seed: int | None = None, only: str | None = None) -> Streams:
    """Both towers of one backbone (trained once, then loaded from ``results/runs``); ``only`` trains
    just the "spatial" or the "temporal" one (the other is None)."""
    backbone = backbone or cfg.backbone
    seed = cfg.seeds[0] if seed is None else seed
    split = split or cfg.split
    towers = {stream: train_stream(cfg, data, stream, backbone=backbone, split=split, seed=seed)
              if only in (None, stream) else None for stream in STREAM_INPUT}
    return Streams(backbone, towers["spatial"], towers["temporal"], split, seed)


def test_views(cfg: Profile, data: DataBundle, split: int, *, T: int | None = None, mode: str | None = None,
               clips: int | None = None) -> TwoStreamViews:
    """The test videos of ``split`` as (video, view) samples: ``mode`` (default the profile's
    ``test_mode``, for per-frame models) or "strided_flips" with ``clips`` clips of ``T`` samples at the
    profile's test stride (models that fuse the T samples of a clip)."""
    s = data.split(split)
    sampling = dataclasses.replace(clip_sampling(cfg, T=T or cfg.T, train=False), test_tau=cfg.test_tau,
                                   test_clips=clips or cfg.test_clips)
    return TwoStreamViews(data.store, limit_videos(s.test, cfg), sampling, mode=mode or cfg.test_mode,
                          crop=cfg.test_crop)


def views_key(cfg: Profile, split: int, mode: str, clips: int | None) -> tuple:
    """What defines a set of test views (for the in-memory memo)."""
    return (split, mode, clips or cfg.test_clips, cfg.T, cfg.L, cfg.test_tau, cfg.test_crop, cfg.crop,
            cfg.max_videos)


def stream_scores(cfg: Profile, data: DataBundle, streams: Streams, stream: str, *,
                  mode: str | None = None, clips: int | None = None) -> VideoScores:
    """Video-level scores of one trained stream on the test views (pre-softmax, averaged over views)."""
    mode = mode or cfg.test_mode
    key = ("stream-scores", streams.digest(stream), *views_key(cfg, streams.split, mode, clips))
    return MEMO.get(key, lambda: predict(FrameAverage(streams.tower(stream)),
                                         test_views(cfg, data, streams.split, mode=mode, clips=clips),
                                         batch_size=cfg.batch_size, device=cfg.device,
                                         input_keys=(STREAM_INPUT[stream],)))


def late_fusion(cfg: Profile, data: DataBundle, spatial: Streams, temporal: Streams, *,
                mode: str | None = None, clips: int | None = None) -> VideoScores:
    """Average of the two streams' softmax outputs (two-stream baseline; Table 1 "Sum / Softmax")."""
    return late_fuse(stream_scores(cfg, data, spatial, "spatial", mode=mode, clips=clips),
                     stream_scores(cfg, data, temporal, "temporal", mode=mode, clips=clips), mode="softmax")


def stream_summary(cfg: Profile, data: DataBundle, streams: Streams) -> pd.DataFrame:
    """Test accuracy (%) of each trained stream and of their late fusion, one decimal."""
    scores = {"spatial": stream_scores(cfg, data, streams, "spatial"),
              "temporal": stream_scores(cfg, data, streams, "temporal"),
              "late fusion": late_fusion(cfg, data, streams, streams)}
    return pd.DataFrame({"model": list(scores), "test accuracy (%)": [round(100 * accuracy(s), 1)
                                                                       for s in scores.values()]}).set_index("model")


def figure1(cfg: Profile, data: DataBundle, streams: Streams, *, video_index: int = 0):
    """conv1-conv3 (relu1-relu3) activations of both streams for one test clip -> ``figure1.png``."""
    s = data.split(streams.split)
    views = TwoStreamViews(data.store, s.test[video_index:video_index + 1], clip_sampling(cfg, T=1, train=False),
                           mode="spread_flips", crop=cfg.test_crop)
    clip = views[0]
    rgb, flow = clip["rgb"][:1], clip["flow"][:1]  # first sample: [1, C, H, W]
    spatial = plots.activation_maps(streams.spatial, rgb)
    temporal = plots.activation_maps(streams.temporal, flow)
    name = s.test[video_index].name
    n = data.store.num_frames(name)
    image = data.store.read_rgb(name, [n // 2])[0]
    u = data.store.read_flow(name, [max(n // 2 - 1, 0)])[0, ..., 0]
    fig = plots.figure1(spatial, temporal, rgb=image, flow_u=u)
    return plots.save_figure(fig, cfg.results_path / "figures" / "figure1.png")
