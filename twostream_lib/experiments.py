"""The experiments of the paper as a few calls each: what the notebooks run.

A notebook does ``cfg = setup(profile)``, ``data = prepare_data(cfg)``, then ``run_table(cfg, data,
"tableN")`` and shows the result. Everything expensive is cached on disk under
``results/runs/<profile>/...`` keyed by what it depends on, so notebooks that share trained streams
(Figure 1, Tables 1-4) train them once, and a second ``./run_all.sh`` gives the same tables.

Protocol (Sec. 3.5): each stream is trained on its own; a fusion model is built from the two trained
streams, the fusion layer injected, and only the layers from the fusion on are trained ("we back-
propagate only down to the injected fusion layer"). Because the towers below the fusion are then
frozen, their outputs at the fusion layer are computed once per (clip, augmentation) and cached
(:mod:`twostream_lib.features`), which trains the same model with the same gradients in a fraction
of the time.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from twostream_lib import tables
from twostream_lib.config import Profile, load_profile
from twostream_lib.errors import ConfigError, DataError
from twostream_lib.train import FrameAverage  # one tower over the T samples of a clip, scores averaged


# ----------------------------------------------------------------------------------------------
# Set-up and data
# ----------------------------------------------------------------------------------------------
def setup(profile: str = "demo", **overrides) -> Profile:
    """Load the profile (``None`` overrides are ignored), fix threads and seeds, return it."""
    from twostream_lib.determinism import deterministic, seed_everything, set_threads

    cfg = load_profile(profile, **overrides)
    if cfg.threads:
        set_threads(cfg.threads)
    seed_everything(cfg.seeds[0])
    if not cfg.device.startswith("cuda"):
        deterministic(True)
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

    def split(self, k: int):
        """Split ``k`` restricted to the videos present in the store (smoke runs hold a few)."""
        from twostream_lib.data.splits import load_split

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

    demo: the synthetic set is generated and prepared under ``data/synthetic/seed<k>`` (about a minute,
    once). paper: ``data/<dataset>/frames`` (authors' or mmaction2 layout) and ``data/<dataset>/splits``
    must exist (``python -m twostream_lib fetch`` or ``prepare``); the error says which is missing.
    """
    if cfg.dataset == "synthetic":
        from twostream_lib.data.synthetic import make_synthetic_dataset

        ds = make_synthetic_dataset(cfg.data_dir / "synthetic" / f"seed{cfg.synthetic_seed}",
                                    seed=cfg.synthetic_seed, progress=False)
        return DataBundle("synthetic", Path(ds.frames_root), Path(ds.split_dir), _open_store(cfg, ds.frames_root),
                          card_path=Path(ds.card_path), info={"classes": list(ds.classes)})
    if cfg.dataset not in ("ucf101", "hmdb51"):
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; expected 'synthetic', 'ucf101' or 'hmdb51'")
    root = cfg.data_dir / cfg.dataset
    frames, splits = root / "frames", root / "splits"
    for path, how in ((frames, "python -m twostream_lib prepare VIDEOS " + str(frames)),
                      (splits, "python -m twostream_lib fetch " + cfg.dataset)):
        if not path.exists():
            raise DataError(f"{path} does not exist; expected the {cfg.dataset} {path.name} there ({how})")
    return DataBundle(cfg.dataset, frames, splits, _open_store(cfg, frames))


def _open_store(cfg: Profile, root):
    from twostream_lib.data.stores import DecodedCache, open_store

    store = open_store(root)
    return DecodedCache(store) if cfg.cache_frames else store


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
    from twostream_lib import plots

    video = data.split(cfg.split).test[video_index]
    n = data.store.num_frames(video.name)
    idx = np.linspace(0, max(n - 2, 0), cfg.T).round().astype(int).tolist()
    fig = plots.clip_figure(data.store.read_rgb(video.name, idx), data.store.read_flow(video.name, idx),
                            title=f"{video.name} ({video.class_name})")
    return plots.save_figure(fig, cfg.results_path / "figures" / "data_samples.png")


# ----------------------------------------------------------------------------------------------
# Single streams (Sec. 3, [22]; Table 3)
# ----------------------------------------------------------------------------------------------
@dataclass
class Streams:
    """The trained spatial (RGB) and temporal (flow) towers of one backbone, split and seed."""

    backbone: str
    spatial: nn.Module
    temporal: nn.Module
    split: int
    seed: int


#: Profile fields that change what a trained model is; cached runs are keyed by their values.
TRAINING_FIELDS = ("dataset", "synthetic_seed", "T", "L", "tau", "crop", "test_crop", "backbone", "deep_backbone",
                   "weights", "deep_weights", "appearance_pretrain_epochs", "batch_size", "lr_stream", "lr_fusion",
                   "dropout", "dropout_fusion", "fusion_relu", "conv3d_init", "epochs_stream", "epochs_temporal",
                   "epochs_fusion", "feature_epochs", "max_videos")


def run_dir(cfg: Profile, *parts) -> Path:
    """``results/runs/<profile>/<dataset>-<settings hash>/<parts...>``: where trained models are cached.

    The hash covers :data:`TRAINING_FIELDS` and the backbones' architecture tables, so changing e.g.
    ``epochs_stream`` or a demo layer trains anew instead of silently reusing models trained with other
    settings; ``settings.json`` beside them says which."""
    import hashlib

    from twostream_lib.models.backbones import architecture_digest

    settings = {k: getattr(cfg, k) for k in TRAINING_FIELDS}
    settings["architectures"] = {bb: architecture_digest(bb) for bb in (cfg.backbone, cfg.deep_backbone)}
    text = json.dumps(settings, sort_keys=True, default=list)
    root = cfg.results_path / "runs" / cfg.name / f"{cfg.dataset}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"
    if not (root / "settings.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        (root / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True, default=list) + "\n")
    return root / Path(*[str(p) for p in parts])


def _sampling(cfg: Profile, *, T: int, train: bool, crop: str | None = None):
    from twostream_lib.data.sampling import ClipSampling

    return ClipSampling(T=T, L=cfg.L, tau=tuple(cfg.tau), size=cfg.crop,
                        crop=crop or ("jitter" if train else cfg.test_crop), flip=True)


def _limit(items, cfg: Profile):
    """At most ``cfg.max_videos`` items, evenly spaced over the list (so over the classes: smoke runs)."""
    if not cfg.max_videos or len(items) <= cfg.max_videos:
        return tuple(items)
    return tuple(items[:: len(items) // cfg.max_videos][: cfg.max_videos])


def _train_config(cfg: Profile, out_dir: Path, *, lr: float, epochs: int, seed: int, input_keys):
    from twostream_lib.train import TrainConfig

    return TrainConfig(lr=lr, epochs=epochs, batch_size=cfg.batch_size, seed=seed, device=cfg.device,
                       amp=cfg.amp and cfg.device.startswith("cuda"), workers=cfg.workers,
                       input_keys=tuple(input_keys), out_dir=str(out_dir), lr_schedule="cosine",
                       progress=False)


def train_stream(cfg: Profile, data: DataBundle, stream: str, *, backbone: str | None = None,
                 split: int | None = None, seed: int | None = None) -> nn.Module:
    """Train (or load the cached) spatial or temporal tower; returns the Backbone."""
    from twostream_lib.data.sampling import TwoStreamClips
    from twostream_lib.models.backbones import build_backbone
    from twostream_lib.train import train

    if stream not in ("spatial", "temporal"):
        raise ConfigError(f"stream must be 'spatial' or 'temporal', got {stream!r}")
    backbone = backbone or cfg.backbone
    split = split or cfg.split
    seed = cfg.seeds[0] if seed is None else seed
    s = data.split(split)
    key = "rgb" if stream == "spatial" else "flow"
    weights = cfg.weights if backbone == cfg.backbone else cfg.deep_weights
    if weights and weights != "imagenet":
        weights = str(cfg.path(weights))
    # both towers start from ImageNet (the flow tower's conv1 averaged over RGB, copied to 2L channels);
    # seeded here so that a tower's initialisation does not depend on what the process ran before
    torch.manual_seed(seed)
    net = build_backbone(backbone, in_channels=3 if stream == "spatial" else 2 * cfg.L,
                         num_classes=len(s.classes), dropout=cfg.dropout, weights=weights)
    out = run_dir(cfg, f"split{split}", f"{backbone}-{stream}-seed{seed}")
    model = FrameAverage(net)
    final = out / "final.pt"
    if final.exists():
        model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True))
        return net.eval()
    torch.manual_seed(seed)
    clips = TwoStreamClips(data.store, _limit(s.train, cfg), _sampling(cfg, T=1, train=True, crop="multiscale"),
                           train=True, seed=seed)
    if stream == "spatial" and cfg.appearance_pretrain_epochs and not weights:
        pretrain_appearance(net, clips, cfg, seed=seed)
    epochs = cfg.epochs_temporal if stream == "temporal" and cfg.epochs_temporal else cfg.epochs_stream
    train(model, clips, None, _train_config(cfg, out, lr=cfg.lr_stream, epochs=epochs, seed=seed,
                                            input_keys=(key,)))
    _atomic_save(model.state_dict(), final)
    return net.eval()


class DenseColour(nn.Module):
    """Appearance pre-training head: predict the input's colour, pooled to the ReLU5 grid, from ReLU5.

    The demo's stand-in for ImageNet initialisation (a documented departure). A spatial tower trained
    from scratch on action labels only learns what a single frame can tell (here: shapes) and keeps no
    reason to encode *which colour is where*; the paper's ImageNet-initialised towers carry such
    appearance features into the fusion layer. Regressing every ReLU5 cell's mean colour (no labels
    needed) gives the tower that property before it is fine-tuned on the actions.
    """

    def __init__(self, backbone: nn.Module, channels: int):
        super().__init__()
        self.backbone = backbone
        self.predict = nn.Conv2d(channels, 3, kernel_size=1)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:  # rgb: [B, 1, 3, H, W]
        x = rgb.flatten(0, 1)
        feat = self.backbone(x, upto="relu5")
        target = nn.functional.adaptive_avg_pool2d(x, feat.shape[-2:])
        return nn.functional.mse_loss(self.predict(feat), target)


def pretrain_appearance(net: nn.Module, clips, cfg: Profile, *, seed: int) -> None:
    """Train ``net`` up to ReLU5 on dense colour regression (:class:`DenseColour`) for the profile's epochs."""
    from torch.utils.data import DataLoader

    from twostream_lib.determinism import derive_seed

    channels = net.feature_shapes(cfg.crop)["relu5"][0]
    model = DenseColour(net, channels).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr_stream, momentum=0.9, weight_decay=5e-4)
    for epoch in range(cfg.appearance_pretrain_epochs):
        clips.set_epoch(epoch)
        order = torch.Generator().manual_seed(derive_seed(seed, epoch, 7))
        for batch in DataLoader(clips, batch_size=cfg.batch_size, shuffle=True, generator=order):
            loss = model(batch["rgb"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    clips.set_epoch(0)


def train_streams(cfg: Profile, data: DataBundle, *, backbone: str | None = None, split: int | None = None,
                  seed: int | None = None) -> Streams:
    """Both towers of one backbone (trained once, then loaded from ``results/runs``)."""
    backbone = backbone or cfg.backbone
    seed = cfg.seeds[0] if seed is None else seed
    split = split or cfg.split
    return Streams(backbone, train_stream(cfg, data, "spatial", backbone=backbone, split=split, seed=seed),
                   train_stream(cfg, data, "temporal", backbone=backbone, split=split, seed=seed), split, seed)


def _atomic_save(obj, path: Path) -> None:
    from twostream_lib.files import atomic_write

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


# ----------------------------------------------------------------------------------------------
# Findings: the paper's qualitative claims, tested on our numbers (DESIGN "What the demo must show")
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """``a`` beats (">") or matches-or-beats (">=") ``b`` by more than one standard error of the difference."""

    a: str
    relation: str  # ">" | ">="
    b: str
    text: str


@dataclass
class Finding:
    text: str
    held: bool | None  # None: a row it needs was not run
    detail: str


CLAIMS: dict[str, tuple[Claim, ...]] = {
    "table1": (
        Claim("conv@relu5", ">=", "sum@softmax", "Conv fusion at ReLU5 matches or beats softmax averaging"),
        Claim("sum@relu5", ">=", "sum@softmax", "Sum fusion at ReLU5 matches or beats softmax averaging"),
        Claim("sum@relu5", ">", "max@relu5", "Max fusion at ReLU5 is weaker than sum fusion"),
        Claim("conv@relu5", ">", "concat@relu5", "Concatenation at ReLU5 is weaker than conv fusion"),
        Claim("conv@relu5", ">", "conv@fc6", "Fusion at an FC layer (FC6) is weaker than at ReLU5"),
        Claim("conv@relu5", ">", "conv@fc8", "Fusion at an FC layer (FC8) is weaker than at ReLU5"),
    ),
    "table2": (
        Claim("conv@relu5", ">", "conv@relu2", "Fusing at ReLU2 is weaker than at ReLU5"),
        Claim("conv@relu5", ">", "conv@relu3", "Fusing at ReLU3 is weaker than at ReLU5"),
        Claim("conv@relu5", ">", "conv@relu4", "Fusing at ReLU4 is weaker than at ReLU5"),
        Claim("conv@relu5+fc8", ">=", "conv@relu5", "Adding FC8 fusion to ReLU5 fusion matches it"),
        Claim("conv@relu5", ">", "conv@relu3+relu5+fc6", "Multiple fusions that include an early layer are weaker"),
    ),
    "table3": (
        Claim("late/vgg16", ">", "late/vgg_m_2048", "The deeper backbone's late fusion beats the shallower one's"),
        Claim("spatial/vgg16", ">", "spatial/vgg_m_2048", "The deeper spatial stream beats the shallower one"),
        Claim("late/vgg_m_2048", ">", "spatial/vgg_m_2048", "Late fusion beats the spatial stream (shallow)"),
        Claim("late/vgg_m_2048", ">", "temporal/vgg_m_2048", "Late fusion beats the temporal stream (shallow)"),
        Claim("late/vgg16", ">", "spatial/vgg16", "Late fusion beats the spatial stream (deep)"),
        Claim("late/vgg16", ">", "temporal/vgg16", "Late fusion beats the temporal stream (deep)"),
    ),
    "table4": (
        Claim("conv2d+pool3d", ">=", "conv2d+pool2d", "3D pooling matches or beats 2D pooling"),
        Claim("conv3d+pool3d", ">=", "conv2d+pool3d", "3D conv + 3D pooling matches or beats 2D conv + 3D pooling"),
        Claim("conv3d+pool3d", ">", "conv2d+pool2d", "3D conv + 3D pooling beats 2D conv + 2D pooling"),
        Claim("conv2d+pool2d", ">=", "late", "Conv fusion (2D) matches or beats late fusion of the same towers"),
    ),
    "table5": (
        Claim("ours/S:vgg16,T:vgg_m", ">", "late/S:vgg16,T:vgg_m",
              "Ours (3D conv + 3D pooling) beats late fusion of the same two towers, over the splits"),
    ),
    "table6": (
        Claim("ours+idt/S:vgg16,T:vgg_m", ">=", "ours/S:vgg16,T:vgg_m",
              "Late fusion with IDT matches or beats the ConvNet alone"),
        Claim("ours+idt/S:vgg16,T:vgg_m", ">", "idt", "Late fusion with IDT beats IDT alone"),
    ),
}


def check_claims(table: str, rows: dict[str, tables.ResultRow]) -> list[Finding]:
    """Test each claim of ``table`` on measured rows (accuracy and stderr in percent)."""
    findings = []
    for c in CLAIMS[table]:
        a, b = rows.get(c.a), rows.get(c.b)
        if a is None or b is None or a.accuracy is None or b.accuracy is None:
            findings.append(Finding(c.text, None, "not run"))
            continue
        diff = a.accuracy - b.accuracy
        se = math.hypot(a.stderr or 0.0, b.stderr or 0.0)
        held = diff > se if c.relation == ">" else diff > -se
        findings.append(Finding(c.text, held, f"{a.accuracy:.1f} vs {b.accuracy:.1f} (difference "
                                              f"{diff:+.1f}, one standard error {se:.1f})"))
    return findings


def format_findings(findings: list[Finding]) -> str:
    """One line per claim: HELD / NOT HELD / NOT RUN, the claim, and the numbers behind the verdict."""
    word = {True: "HELD", False: "NOT HELD", None: "NOT RUN"}
    return "\n".join(f"- {word[f.held]:8} {f.text}: {f.detail}" for f in findings)


# ----------------------------------------------------------------------------------------------
# Fusion variants and tables
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One row of a fusion table: how, where and over time the two towers are fused."""

    key: str  # paper row key (twostream_lib.paper)
    label: str
    fusion: str = "conv"  # "sum" | "max" | "concat" | "conv" | "bilinear" | "softmax" (late)
    layers: tuple[str, ...] = ("relu5",)
    truncate: bool = True  # drop the fused-from (temporal) tower above the fusion layer
    temporal: str = "none"  # "none" | "pool2d" | "pool3d" | "conv3d_pool3d" (Sec. 3.3)
    conv_init: str = "sum"  # "sum" ([I I], paper) | "released" | "gaussian"
    spatial: str = "shallow"  # which of the profile's backbones: "shallow" | "deep"
    temporal_tower: str = "shallow"
    T: int = 1  # samples per training clip (temporal fusion needs the profile's T)


def _v(key, label, **kw) -> Variant:
    return Variant(key, label, **kw)


TEMPORAL = dict(truncate=False, spatial="deep", temporal_tower="shallow", T=-1)  # T=-1: the profile's T
VARIANTS: dict[str, tuple[Variant, ...]] = {
    "table1": (
        _v("sum@softmax", "Sum / Softmax (late fusion)", fusion="softmax", layers=()),
        _v("max@relu5", "Max / ReLU5", fusion="max"),
        _v("concat@relu5", "Concatenation / ReLU5", fusion="concat"),
        _v("bilinear@relu5", "Bilinear / ReLU5", fusion="bilinear"),
        _v("sum@relu5", "Sum / ReLU5", fusion="sum"),
        _v("conv@relu5", "Conv / ReLU5", fusion="conv"),
        _v("conv@relu5/gaussian", "Conv / ReLU5, Gaussian init", fusion="conv", conv_init="gaussian"),
        _v("conv@fc6", "Conv / FC6", fusion="conv", layers=("fc6",)),
        _v("conv@fc8", "Conv / FC8", fusion="conv", layers=("fc8",)),
    ),
    "table2": (
        _v("conv@relu2", "ReLU2", layers=("relu2",)),
        _v("conv@relu3", "ReLU3", layers=("relu3",)),
        _v("conv@relu4", "ReLU4", layers=("relu4",)),
        _v("conv@relu5", "ReLU5", layers=("relu5",)),
        _v("conv@relu5+fc8", "ReLU5 + FC8", layers=("relu5", "fc8"), truncate=False),
        _v("conv@relu3+relu5+fc6", "ReLU3 + ReLU5 + FC6", layers=("relu3", "relu5", "fc6")),  # 17 layers: truncated after FC6
    ),
    "table4": (
        _v("late", "Late fusion (softmax average) of the same towers", fusion="softmax", layers=(), **TEMPORAL),
        _v("conv2d+pool2d", "2D Conv / 2D pooling / ReLU5 +", temporal="pool2d", **TEMPORAL),
        _v("conv2d+pool3d", "2D Conv / 3D pooling / ReLU5 +", temporal="pool3d", **TEMPORAL),
        _v("conv3d+pool3d", "3D Conv / 3D pooling / ReLU5 +", temporal="conv3d_pool3d", **TEMPORAL),
    ),
}


def _backbone_name(cfg: Profile, which: str) -> str:
    return {"shallow": cfg.backbone, "deep": cfg.deep_backbone}[which]


_MEMO: dict = {}  # features and scores shared by the variants of one kernel session


def _memo(key, compute):
    if key not in _MEMO:
        if len(_MEMO) > 32:  # feature sets are tens of MB each: keep the recent ones only
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = compute()
    return _MEMO[key]


def _views(cfg: Profile, data: DataBundle, split: int, T: int | None = None, mode: str | None = None):
    from twostream_lib.data.sampling import TwoStreamViews

    s = data.split(split)
    return TwoStreamViews(data.store, _limit(s.test, cfg), _sampling(cfg, T=T or cfg.T, train=False),
                          mode=mode or cfg.test_mode, crop=cfg.test_crop)


def stream_scores(cfg: Profile, data: DataBundle, streams: Streams, stream: str, *, mode: str | None = None):
    """Video-level scores of one trained stream on the test views (pre-softmax, averaged over views)."""
    from twostream_lib.evaluate import predict

    net = getattr(streams, stream)
    key = ("stream", id(net), stream, mode or cfg.test_mode)
    return _memo(key, lambda: predict(FrameAverage(net), _views(cfg, data, streams.split, mode=mode),
                                      batch_size=cfg.batch_size, device=cfg.device,
                                      input_keys=("rgb" if stream == "spatial" else "flow",)))


def late_fusion(cfg: Profile, data: DataBundle, spatial: Streams, temporal: Streams, *, mode: str | None = None):
    """Average of the two streams' softmax outputs (two-stream baseline; Table 1 "Sum / Softmax")."""
    from twostream_lib.evaluate import late_fuse

    return late_fuse(stream_scores(cfg, data, spatial, "spatial", mode=mode),
                     stream_scores(cfg, data, temporal, "temporal", mode=mode), mode="softmax")


def build_fused(cfg: Profile, variant: Variant, spatial: Streams, temporal: Streams):
    """The variant's TwoStreamNet on copies of the trained towers, frozen below the fusion layer."""
    import copy

    from twostream_lib.models.twostream import TwoStreamNet, trainable_parameters

    model = TwoStreamNet(copy.deepcopy(spatial.spatial), copy.deepcopy(temporal.temporal),
                         fusion=variant.fusion, layers=variant.layers, truncate=variant.truncate,
                         conv_init=variant.conv_init, temporal_fusion=variant.temporal,
                         conv3d_init=cfg.conv3d_init, fusion_relu=cfg.fusion_relu)
    if cfg.dropout_fusion is not None:  # only layers above the fusion train: their dropout is the head's
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = cfg.dropout_fusion
    trainable_parameters(model, "fusion_and_above")
    return model


def _architecture_name(variant: Variant, T: int) -> str:
    """The fusion head's folder name: what defines the trained model, not the table row, so rows of
    different tables with the same architecture (Table 4's 3D conv + 3D pooling, Tables 5-6's "ours")
    share one trained head."""
    keep = "truncated" if variant.truncate else "both-towers"
    return f"{variant.fusion}@{'+'.join(variant.layers)}-{variant.temporal}-{variant.conv_init}-{keep}-T{T}"


def run_fusion(cfg: Profile, data: DataBundle, variant: Variant, *, split: int | None = None,
               seed: int | None = None, mode: str | None = None):
    """Train one fusion variant's head on cached tower features and score the test videos.

    Returns (VideoScores, model). Late fusion ("softmax") trains nothing. The test scores are saved
    beside the trained head, so a second call (another notebook, a re-run) neither caches features
    nor trains again.
    """
    from twostream_lib.evaluate import load_scores, predict, save_scores
    from twostream_lib.features import FeatureHead, cache_fusion_inputs
    from twostream_lib.data.sampling import TwoStreamClips
    from twostream_lib.train import train

    split = split or cfg.split
    seed = cfg.seeds[0] if seed is None else seed
    s_bb, t_bb = _backbone_name(cfg, variant.spatial), _backbone_name(cfg, variant.temporal_tower)
    tower_seed = cfg.seeds[0]  # towers are shared by every head seed
    towers = Streams(f"{s_bb}+{t_bb}", train_stream(cfg, data, "spatial", backbone=s_bb, split=split),
                     train_stream(cfg, data, "temporal", backbone=t_bb, split=split), split, tower_seed)
    spatial = temporal = towers  # only the two towers this variant uses are trained
    if variant.fusion == "softmax":
        return late_fusion(cfg, data, spatial, temporal, mode=mode), None
    T = cfg.T if variant.T == -1 else variant.T
    model = build_fused(cfg, variant, spatial, temporal)
    s = data.split(split)
    out = run_dir(cfg, f"split{split}", "fusion", f"{_architecture_name(variant, T)}-{s_bb}-{t_bb}-seed{seed}")
    scores_path = out / f"scores-{mode or cfg.test_mode}.npz"
    if scores_path.exists():  # trained and tested before (e.g. Table 5's heads, reused by Table 6)
        return load_scores(scores_path), model
    feature_key = (s_bb, t_bb, split, model.first_layer, T)
    batch = cfg.batch_size

    def train_feats():
        clips = TwoStreamClips(data.store, _limit(s.train, cfg), _sampling(cfg, T=T, train=True), train=True,
                               seed=cfg.seeds[0])
        return cache_fusion_inputs(model, clips, epochs=cfg.feature_epochs, batch_size=batch, device=cfg.device)

    def test_feats():
        return cache_fusion_inputs(model, _views(cfg, data, split, mode=mode), epochs=1, batch_size=batch,
                                   device=cfg.device)

    train_set = _memo(("train-features", *feature_key), train_feats)
    test_set = _memo(("test-features", *feature_key, mode or cfg.test_mode), test_feats)
    torch.manual_seed(seed)
    head = FeatureHead(model)
    train(head, train_set, None, _train_config(cfg, out, lr=cfg.lr_fusion, epochs=cfg.epochs_fusion, seed=seed,
                                               input_keys=("fa", "fb")))
    scores = predict(head, test_set, batch_size=batch, device=cfg.device, input_keys=("fa", "fb"))
    save_scores(scores, scores_path)
    return scores, model


def _accuracy_row(key: str, label: str, runs: list, *, extra: dict | None = None) -> tables.ResultRow:
    """Mean accuracy over runs (seeds or splits); uncertainty = binomial SE over the test videos
    combined with the spread of the runs (their standard error), in percent.

    Runs on the same test videos (training seeds) share one binomial term; runs on different splits
    measure on disjoint test sets, so their videos add up."""
    from twostream_lib.evaluate import accuracy

    accs = np.array([100.0 * accuracy(r) for r in runs])
    distinct = {tuple(r.videos) for r in runs}
    n = sum(len(v) for v in distinct)
    mean = float(accs.mean())
    se = tables.binomial_stderr(mean, n)
    how = f"binomial over {n} test videos"
    if len(runs) > 1:
        se = math.hypot(se, float(accs.std(ddof=1)) / math.sqrt(len(runs)))
        how += f" and spread over {len(runs)} runs"
    return tables.ResultRow(key, label, mean, se, n, how, extra or {})


def paper_architecture_counts() -> dict[str, tuple[int, float]]:
    """(layers, params in M) of the paper's own architectures, keyed like the paper's rows."""
    from twostream_lib.models.params import paper_counts

    return paper_counts()


@dataclass
class TableResult:
    """What a table notebook shows: the table (ours beside the paper's) and the findings."""

    table: str
    frame: pd.DataFrame
    findings: list[Finding]
    markdown: str
    paths: tuple[Path, ...] = ()

    def show(self):
        from IPython.display import Markdown

        return Markdown(self.markdown)

    def show_findings(self) -> None:
        print(format_findings(self.findings))


TITLES = {
    "table1": "Table 1: how to fuse (spatial fusion at ReLU5, Sec. 4.2)",
    "table2": "Table 2: where to fuse (conv fusion, Sec. 4.3)",
    "table3": "Table 3: deep vs very deep two-stream networks (Sec. 4.4)",
    "table4": "Table 4: temporal fusion, both towers kept (Sec. 4.5)",
    "table5": "Table 5: mean accuracy over splits (Sec. 4.6)",
    "table6": "Table 6: late fusion with IDT features (Sec. 4.6)",
}


def run_table(cfg: Profile, data: DataBundle, table: str, *, splits=None) -> TableResult:
    """Run every row of ``table`` for the profile, write ``results/tables/<table>.{csv,md}``."""
    if table not in TITLES:
        raise ConfigError(f"unknown table {table!r}; expected one of {sorted(TITLES)}")
    splits = tuple(splits or (cfg.split,))
    rows = _TABLE_RUNNERS[table](cfg, data, splits)
    counts = paper_architecture_counts() if table in ("table1", "table2") else None
    frame = tables.build_table(table, rows, profile=cfg.name, dataset=data.dataset,
                               split=",".join(map(str, splits)), paper_counts=counts)
    findings = check_claims(table, {r.key: r for r in rows})
    notes = _notes(cfg, rows) + "\n\nFindings:\n" + format_findings(findings)
    paths = tables.write_table(frame, cfg.results_path, title=TITLES[table], notes=notes)
    return TableResult(table, frame, findings, tables.to_markdown(frame, title=TITLES[table], notes=""), paths)


def _notes(cfg: Profile, rows) -> str:
    how = {r.uncertainty for r in rows if r.uncertainty}
    return ("Accuracy in percent ± one standard error (" + "; ".join(sorted(how)) + "). "
            f"Backbones: shallow = `{cfg.backbone}`, deep = `{cfg.deep_backbone}`.")


def _fusion_rows(cfg, data, table, splits) -> list[tables.ResultRow]:
    rows = []
    for v in VARIANTS[table]:
        runs, params = [], None
        for split in splits:
            for seed in cfg.seeds if v.fusion != "softmax" else cfg.seeds[:1]:
                scores, model = run_fusion(cfg, data, v, split=split, seed=seed)
                runs.append(scores)
                if model is not None:
                    params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(_accuracy_row(v.key, v.label, runs, extra={"demo_params_m": params}))
    return rows


def _table3_rows(cfg, data, splits) -> list[tables.ResultRow]:
    rows = []
    for which, paper_name in (("shallow", "vgg_m_2048"), ("deep", "vgg16")):
        bb = _backbone_name(cfg, which)
        per_split = [train_streams(cfg, data, backbone=bb, split=k) for k in splits]
        for stream in ("spatial", "temporal"):
            runs = [stream_scores(cfg, data, st, stream) for st in per_split]
            rows.append(_accuracy_row(f"{stream}/{paper_name}", f"{stream.title()}, {bb}", runs))
        runs = [late_fusion(cfg, data, st, st) for st in per_split]
        rows.append(_accuracy_row(f"late/{paper_name}", f"Late fusion, {bb}", runs))
    return rows


OURS = _v("ours/S:vgg16,T:vgg_m", "Ours (S: deep, T: shallow), 3D conv + 3D pooling", temporal="conv3d_pool3d",
          **TEMPORAL)
OURS_LATE = _v("late/S:vgg16,T:vgg_m", "Late fusion of the same towers (S: deep, T: shallow)", fusion="softmax",
               layers=(), **TEMPORAL)


def _table5_rows(cfg, data, splits) -> list[tables.ResultRow]:
    """The proposed architecture (Sec. 3.4) vs late fusion of the same towers, per split, tested with
    20 dense temporal samples and their flips (Sec. 4.6); mean over the splits."""
    rows = []
    for v in (OURS_LATE, OURS):
        runs = [run_fusion(cfg, data, v, split=k, mode=cfg.final_test_mode)[0] for k in splits]
        rows.append(_accuracy_row(v.key, v.label, runs))
    return rows


def idt_scores(cfg: Profile, data: DataBundle, split: int):
    """Fisher-vector-encoded IDT + linear SVM scores of the test videos (Table 6), cached on disk."""
    from twostream_lib.idt import idt_scores as compute

    s = data.split(split)
    return compute(data.store, _limit(s.train, cfg), _limit(s.test, cfg), cache_dir=run_dir(cfg, "idt"),
                   num_classes=len(s.classes), n_components=cfg.idt_components, C=cfg.idt_C,
                   workers=2, seed=cfg.seeds[0], progress=False)


def _table6_rows(cfg, data, splits) -> list[tables.ResultRow]:
    """IDT alone, the ConvNet alone, and their late fusion: SVM scores averaged with the ConvNet's
    pre-softmax predictions, each standardised per video first (Sec. 4.6)."""
    from twostream_lib.idt import late_fuse_idt

    idt, convnet, fused = [], [], []
    for k in splits:
        i = idt_scores(cfg, data, k)
        c = run_fusion(cfg, data, OURS, split=k, mode=cfg.final_test_mode)[0]
        idt.append(i)
        convnet.append(c)
        fused.append(late_fuse_idt(c, i))
    return [_accuracy_row("idt", "IDT (FV + linear SVM)", idt),
            _accuracy_row(OURS.key, OURS.label, convnet),
            _accuracy_row("ours+idt/S:vgg16,T:vgg_m", "Ours + IDT (S: deep, T: shallow)", fused)]


_TABLE_RUNNERS = {
    "table1": lambda cfg, data, splits: _fusion_rows(cfg, data, "table1", splits),
    "table2": lambda cfg, data, splits: _fusion_rows(cfg, data, "table2", splits),
    "table3": _table3_rows,
    "table4": lambda cfg, data, splits: _fusion_rows(cfg, data, "table4", splits),
    "table5": _table5_rows,
    "table6": _table6_rows,
}


def stream_summary(cfg: Profile, data: DataBundle, streams: Streams) -> pd.DataFrame:
    """Test accuracy (%) of each trained stream and of their late fusion, one decimal."""
    from twostream_lib.evaluate import accuracy

    scores = {"spatial": stream_scores(cfg, data, streams, "spatial"),
              "temporal": stream_scores(cfg, data, streams, "temporal"),
              "late fusion": late_fusion(cfg, data, streams, streams)}
    return pd.DataFrame({"model": list(scores), "test accuracy (%)": [round(100 * accuracy(s), 1)
                                                                       for s in scores.values()]}).set_index("model")


def figure1(cfg: Profile, data: DataBundle, streams: Streams, *, video_index: int = 0):
    """conv1-conv3 (relu1-relu3) activations of both streams for one test clip -> ``figure1.png``."""
    from twostream_lib import plots
    from twostream_lib.data.sampling import TwoStreamViews

    s = data.split(streams.split)
    views = TwoStreamViews(data.store, s.test[video_index:video_index + 1], _sampling(cfg, T=1, train=False),
                           mode="T5_flips", crop=cfg.test_crop)
    clip = views[0]
    rgb, flow = clip["rgb"][:1], clip["flow"][:1]  # first sample: [1, C, H, W]
    spatial = plots.activation_maps(streams.spatial, rgb)
    temporal = plots.activation_maps(streams.temporal, flow)
    n = data.store.num_frames(s.test[video_index].name)
    image = data.store.read_rgb(s.test[video_index].name, [n // 2])[0]
    u = data.store.read_flow(s.test[video_index].name, [max(n // 2 - 1, 0)])[0, ..., 0]
    fig = plots.figure1(spatial, temporal, rgb=image, flow_u=u)
    return plots.save_figure(fig, cfg.results_path / "figures" / "figure1.png")
