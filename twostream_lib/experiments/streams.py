"""Single streams (Sec. 3, [22]; Table 3): train each tower on its own, score it, fuse late.

Both towers start from the profile's initialisation (ImageNet in ``paper``; in ``demo`` the spatial
tower first learns dense colour, :class:`~twostream_lib.models.DenseColour`, the demo's stand-in for
ImageNet) and are trained on one frame (spatial) or one flow stack (temporal) per video and epoch;
a trained tower is saved as ``final.pt`` in its run folder and loaded from there afterwards.
"""
from __future__ import annotations

import contextlib
import dataclasses
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from twostream_lib.config import Profile
from twostream_lib.data.sampling import TwoStreamClips, TwoStreamViews
from twostream_lib.determinism import set_threads
from twostream_lib.errors import ConfigError
from twostream_lib.evaluate import VideoScores, accuracy, late_fuse, load_scores, predict, save_scores
from twostream_lib.models import DenseColour, FrameAverage, WithAppearance, build_backbone
from twostream_lib.paper import released_schedule
from twostream_lib.train import TrainConfig, remove_checkpoints, train
from twostream_lib.workers import worker_context

from .cache import MEMO, key_digest, run_dir, save_state, weights_digest
from .data import DataBundle, clip_sampling, configure_process, limit_videos, prepare_data

__all__ = ["Streams", "STREAM_INPUT", "stream_dir", "train_towers", "train_stream", "train_streams", "stream_scores", "late_fusion",
           "stream_summary", "test_views", "train_config", "STAGES", "find_video", "figure1"]

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


#: Training runs a profile makes: the towers, the fusion heads, the demo's appearance pre-training.
STAGES = ("spatial", "temporal", "fusion", "appearance")


def train_config(cfg: Profile, out_dir=None, *, stage: str, backbone: str | None = None, seed: int,
                 input_keys, lr: float | None = None, epochs: int | None = None) -> TrainConfig:
    """The engine's settings for one of the profile's training runs: a tower (``stage`` "spatial" or
    "temporal", of ``backbone``), a fusion head ("fusion") or appearance pre-training ("appearance").

    ``cfg.schedule``, with ``lr`` / ``epochs`` defaulting to the profile's for the stage (``lr_stream`` /
    ``lr_fusion``, ``epochs_stream`` / ``epochs_temporal`` / ``epochs_fusion``); one epoch is one pass
    over the training videos:

    * ``"released"``: the released script's table for the stage and backbone
      (:func:`twostream_lib.paper.released_schedule`): its rates, one per "epoch" of K passes, its batch
      size and back-propagation depth, for all its passes; ``epochs`` caps them, ``lr`` scales the
      table to start there;
    * ``"plateau"`` (Sec. 3.5's text): the same start and batch size, x0.1 whenever the accuracy on
      the validation set, checked once per released "epoch", stops improving; at most the table's passes;
    * ``"cosine"`` (the demo): from ``lr`` towards 0 over ``epochs`` after the profile's warm-up, with
      the profile's batch size.

    Biases learn at ``bias_lr_factor`` x the rate, with weight decay only if ``bias_decay``. The
    appearance pre-training has no released table: it always runs the cosine schedule.
    """
    if stage not in STAGES:
        raise ConfigError(f"train_config: unknown stage {stage!r}; expected one of {list(STAGES)}")
    if lr is None:
        lr = cfg.lr_fusion if stage == "fusion" else cfg.lr_stream
    if epochs is None:
        epochs = {"spatial": cfg.epochs_stream, "temporal": cfg.epochs_temporal or cfg.epochs_stream,
                  "fusion": cfg.epochs_fusion}.get(stage)
    common = {"seed": seed, "device": cfg.device, "amp": cfg.amp and cfg.device.startswith("cuda"),
              "workers": cfg.workers, "input_keys": tuple(input_keys), "progress": False,
              "out_dir": None if out_dir is None else str(out_dir), "bias_lr_factor": cfg.bias_lr_factor,
              "bias_decay": cfg.bias_decay}
    if cfg.schedule == "cosine" or stage == "appearance":
        if lr is None or epochs is None:
            raise ConfigError(f"profile {cfg.name!r}: schedule='cosine' needs the {stage} run's learning rate "
                              "and epochs (lr_stream / lr_fusion, epochs_stream / epochs_temporal / epochs_fusion); "
                              "only schedule='released' or 'plateau' take them from the released scripts")
        return TrainConfig(lr=lr, epochs=epochs, batch_size=cfg.batch_size, lr_schedule="cosine",
                           warmup_epochs=cfg.warmup_epochs, checkpoint_every=max(1, epochs // 4), **common)
    table = released_schedule(stage, backbone, cfg.dataset)
    rates = table.lrs if lr is None else tuple(r * (lr / table.lrs[0]) for r in table.lrs)
    epochs = table.total_passes if epochs is None else epochs
    if cfg.schedule == "released":
        return TrainConfig(lr=rates[0], epochs=epochs, batch_size=table.batch_size, lr_schedule="table",
                           lr_table=rates, lr_table_epochs=table.passes, backprop_from=table.backprop_from,
                           backprop_epochs=table.backprop_epochs * table.passes,
                           checkpoint_every=table.passes, **common)
    return TrainConfig(lr=rates[0], epochs=epochs, batch_size=table.batch_size, lr_schedule="plateau",
                       monitor="val_acc", val_every=table.passes, checkpoint_every=table.passes, **common)


def stream_dir(cfg: Profile, backbone: str, stream: str, split: int, seed: int) -> Path:
    """The run folder of one trained tower (``final.pt``, ``metrics.csv``, ``config.json``)."""
    return run_dir(cfg, "towers", f"split{split}", f"{backbone}-{stream}-seed{seed}")


def train_towers(cfg: Profile, data: DataBundle, jobs) -> None:
    """Train every tower of ``jobs`` ((backbone, stream, split, seed) each) that is not cached yet,
    ``cfg.tower_processes`` at a time in separate processes. A tower trains with ``cfg.tower_threads``
    threads wherever it runs, so its weights do not depend on which process trained it."""
    todo = list(dict.fromkeys(j for j in jobs if not (stream_dir(cfg, *j) / "final.pt").exists()))
    if cfg.tower_processes <= 1 or len(todo) <= 1:
        for backbone, stream, split, seed in todo:
            train_stream(cfg, data, stream, backbone=backbone, split=split, seed=seed)
        return
    with ProcessPoolExecutor(max_workers=min(cfg.tower_processes, len(todo)),
                             mp_context=worker_context()) as pool:
        for done in as_completed([pool.submit(_train_tower_job, cfg, job) for job in todo]):
            done.result()


def _train_tower_job(cfg: Profile, job: tuple) -> None:
    """One tower in a worker process (the data set is opened there)."""
    configure_process(cfg)
    backbone, stream, split, seed = job
    train_stream(cfg, prepare_data(cfg), stream, backbone=backbone, split=split, seed=seed)


@contextlib.contextmanager
def training_threads(n: int | None):
    """Run with ``n`` torch threads (None: unchanged), then restore the previous count."""
    before = torch.get_num_threads()
    if n:
        set_threads(n)
    try:
        yield
    finally:
        if n:
            set_threads(before)


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
    if stream == "temporal" and cfg.temporal_init:
        init_from_tower(net, cfg.path(cfg.temporal_init))
    torch.manual_seed(seed)
    crop = cfg.temporal_crop if stream == "temporal" and cfg.temporal_crop else cfg.stream_crop
    clips = TwoStreamClips(data.store, limit_videos(s.train, cfg),
                           clip_sampling(cfg, T=1, train=True, crop=crop), train=True, seed=seed)
    with training_threads(cfg.tower_threads):
        if stream == "spatial" and cfg.appearance_pretrain_epochs and not weights:
            pretrain_appearance(net, clips, cfg, seed=seed, out=out / "appearance_pretraining")
        trained = model
        if stream == "spatial" and cfg.appearance_weight and not weights:  # keep the colour per location
            trained = WithAppearance(DenseColour(net, net.feature_shapes(cfg.crop)["relu5"][0]),
                                     cfg.appearance_weight)
        # "plateau" validates on the split's test list, as the released cnn_train_dag.m (imdb set 2)
        val = test_views(cfg, data, split) if cfg.schedule == "plateau" else None
        train(trained, clips, val, train_config(cfg, out, stage=stream, backbone=backbone, seed=seed,
                                                input_keys=(STREAM_INPUT[stream],)))
    save_state(model, final)
    # final.pt is what is loaded from now on; the checkpoints (the model again, with its momentum) would
    # only triple the folder, 1.1 GB more for a VGG-16 tower
    for folder in (out, out / "appearance_pretraining"):
        remove_checkpoints(folder / "checkpoint.pt", keep_latest=False)
    return net.eval()


def init_from_tower(net: nn.Module, checkpoint: Path) -> None:
    """Start ``net`` from another trained tower of the same backbone (Sec. 4.4: HMDB51's temporal nets
    from UCF101's): every weight but the classifier's (fc8), whose classes differ. ``checkpoint`` is a
    tower's ``final.pt`` (a :class:`FrameAverage` state) or a bare backbone state dict."""
    if not Path(checkpoint).is_file():
        raise ConfigError(f"temporal_init: {checkpoint} does not exist; expected a trained temporal tower's "
                          "final.pt (results/runs/<profile>/<data set>-towers-*/split<k>/<backbone>-temporal-seed<s>/)")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = {k.removeprefix("net."): v for k, v in state.items()}
    own = net.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and ".fc8." not in f".{k}"}
    missing = sorted(k for k in own if k not in kept and ".fc8." not in f".{k}")
    if missing:
        raise ConfigError(f"temporal_init: {checkpoint} does not fit this backbone: {len(missing)} tensors "
                          f"missing or of another shape, e.g. {missing[:3]}")
    net.load_state_dict(kept, strict=False)


def pretrain_appearance(net: nn.Module, clips: TwoStreamClips, cfg: Profile, *, seed: int, out: Path) -> None:
    """Train ``net`` up to ReLU5 on dense colour regression (:class:`DenseColour`) for the profile's
    epochs, through the engine like every other training run (its metrics in ``out``)."""
    model = DenseColour(net, net.feature_shapes(cfg.crop)["relu5"][0])
    train(model, clips, None, train_config(cfg, out, stage="appearance", lr=cfg.lr_stream,
                                           epochs=cfg.appearance_pretrain_epochs, seed=seed, input_keys=("rgb",)))


def train_streams(cfg: Profile, data: DataBundle, *, backbone: str | None = None, split: int | None = None,
                  seed: int | None = None, only: str | None = None) -> Streams:
    """Both towers of one backbone (trained once, then loaded from ``results/runs``); ``only`` trains
    just the "spatial" or the "temporal" one (the other is None)."""
    backbone = backbone or cfg.backbone
    seed = cfg.seeds[0] if seed is None else seed
    split = split or cfg.split
    wanted = [stream for stream in STREAM_INPUT if only in (None, stream)]
    train_towers(cfg, data, [(backbone, stream, split, seed) for stream in wanted])
    towers = {stream: train_stream(cfg, data, stream, backbone=backbone, split=split, seed=seed)
              if stream in wanted else None for stream in STREAM_INPUT}
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
    """Video-level scores of one trained stream on the test views (pre-softmax, averaged over views).

    Saved in the towers' run folder under the digest of the tower's weights and of the views, so the
    notebooks that read the same tower's scores (Figure 1, Tables 1, 3 and 4) test it once."""
    mode = mode or cfg.test_mode
    key = ("stream-scores", streams.digest(stream), *views_key(cfg, streams.split, mode, clips))
    return MEMO.get(key, lambda: _saved_scores(
        run_dir(cfg, "towers", f"split{streams.split}", "scores", key_digest(key, 16) + ".npz"),
        lambda: predict(FrameAverage(streams.tower(stream)), test_views(cfg, data, streams.split, mode=mode, clips=clips),
                        batch_size=cfg.batch_size, device=cfg.device, input_keys=(STREAM_INPUT[stream],))))


def _saved_scores(path: Path, compute) -> VideoScores:
    """The scores saved at ``path``, or ``compute()`` saved there."""
    if path.exists():
        return load_scores(path)
    scores = compute()
    save_scores(scores, path)
    return scores


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


def find_video(data: DataBundle, split: int, clip: str | None = None, *, video_index: int = 0):
    """The prepared video called ``clip`` in ``split`` (its test videos, then its training videos), or the
    test video ``video_index`` when ``clip`` is None; an unknown name is an error that names a few."""
    s = data.split(split)
    if clip is None:
        return s.test[video_index]
    found = [v for v in s.test + s.train if v.name == clip]
    if not found:
        import difflib

        names = [v.name for v in s.test + s.train]
        near = difflib.get_close_matches(clip, names, n=3) or names[:3]
        raise ConfigError(f"clip {clip!r} is not a prepared video of {data.dataset} split {split} "
                          f"({data.frames_root}); e.g. {near}")
    return found[0]


def figure1(cfg: Profile, data: DataBundle, streams: Streams, *, video_index: int = 0, clip: str | None = None):
    """conv1-conv3 (relu1-relu3) activations of both streams for one clip -> ``figure1.png``: the prepared
    video named ``clip`` (any of the streams' split), or the test video ``video_index`` when ``clip`` is None."""
    # imported here, not above: matplotlib stays out of the worker processes (workers.PRELOAD)
    from twostream_lib import plots

    video = find_video(data, streams.split, clip, video_index=video_index)
    views = TwoStreamViews(data.store, (video,), clip_sampling(cfg, T=1, train=False),
                           mode="spread_flips", crop=cfg.test_crop)
    sample = views[0]
    rgb, flow = sample["rgb"][:1], sample["flow"][:1]  # first sample: [1, C, H, W]
    spatial = plots.activation_maps(streams.spatial, rgb)
    temporal = plots.activation_maps(streams.temporal, flow)
    n = data.store.num_frames(video.name)
    image = data.store.read_rgb(video.name, [n // 2])[0]
    uv = data.store.read_flow(video.name, [max(n // 2 - 1, 0)])[0]
    fig = plots.figure1(spatial, temporal, rgb=image, flow_u=uv[..., 0], flow_v=uv[..., 1],
                        title=f"{video.name} ({video.class_name})")
    return plots.save_figure(fig, cfg.results_path / "figures" / "figure1.png")
