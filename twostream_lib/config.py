"""Named profiles: every setting a notebook or ``run_all.sh`` run depends on, defined once.

``demo``  synthetic data generated on this machine, small VGG-shaped backbones, CPU, minutes.
``paper`` UCF101 / HMDB51, VGG-M-2048 and VGG-16 from ImageNet, the paper's hyper-parameters
          (Sec. 3.5), on a GPU (several through ``torchrun``).
``smoke`` the ``paper`` pipeline shrunk to a few real clips and one iteration, for CPU checks.

Any field can be overridden by name (``load_profile("demo", epochs_fusion=3)``), which is what a
papermill ``-p`` parameter does. Notebooks never branch on the environment: they pick a profile.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from twostream_lib.errors import ConfigError
from twostream_lib.paper import HYPERPARAMETERS as HP

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Learning-rate schedules a profile can ask for (Profile.schedule).
SCHEDULES = ("released", "plateau", "cosine")
#: Where frozen-tower fusion heads read their inputs (Profile.feature_cache).
FEATURE_CACHES = ("disk", "memory", "none")


@dataclass(frozen=True)
class Profile:
    """A complete, typed description of one way of running the experiments."""

    name: str
    # ---- data ---------------------------------------------------------------------------
    dataset: str = "synthetic"  # "synthetic" | "ucf101" | "hmdb51"
    data_root: str = "data"  # relative to the repository root unless absolute
    split: int = 1  # official split used by Tables 1-4 (Tables 5-6 use all three)
    synthetic_seed: int = 0  # seed of the generated data set (demo only)
    synthetic_size: int = 48  # frame side of the generated videos (data.synthetic.SyntheticParams)
    synthetic_frames: int = 29  # frames per generated video
    synthetic_groups: int = 9  # groups per class; split k tests on the k-th third of them
    synthetic_clips: int = 5  # clips per group and class
    synthetic_classes: tuple[str, ...] | None = None  # a subset of the synthetic classes (None: all)
    # > 0: the UCF101 data set is a generated rehearsal set of this many classes in UCF101's layout and size
    # (data.rehearsal; the smoke profile), made under data_root/ucf101 when missing
    rehearsal_classes: int = 0
    rehearsal_frames: int = 64  # frames per rehearsal video (25 fps)
    # ---- sampling (Sec. 3.5) -----------------------------------------------------------
    T: int = HP["T"]  # temporal samples per clip
    L: int = HP["L"]  # flow frames per stack
    tau: tuple[int, int] = HP["tau_range"]  # temporal stride range (released code: (5, 15))
    crop: int = HP["crop"]  # training crop side
    stream_crop: str = "multiscale"  # single streams' training crops (Sec. 4.4, [35]); data.sampling.TRAIN_CROPS
    temporal_crop: str | None = None  # the temporal stream's, where it differs (released: multiScaleRegular); None: stream_crop
    fusion_crop: str = "jitter"  # fusion training crops (Sec. 3.5)
    test_mode: str = "spread_flips"  # per-frame models: "spread_flips" | "frames25" (data.sampling)
    test_clips: int = 1  # models that fuse T samples: "strided_flips" with this many clips of T
    test_tau: int | None = None  # their stride at test; None: ceil(median(tau)) as the released code
    final_test_clips: int = 20  # Tables 5-6: 20 dense temporal samples and their flips (Sec. 4.6)
    final_splits: tuple[int, ...] = (1, 2, 3)  # Tables 5-6: the mean over the three splits (Sec. 4.6)
    test_crop: str = "full"  # "full" = fully convolutional whole-frame testing (Sec. 3.5)
    # ---- models ------------------------------------------------------------------------
    backbone: str = "vgg_m_2048"  # Tables 1, 2 (and T of Table 4)
    deep_backbone: str = "vgg16"  # Table 3 "very deep", S of Tables 4-6
    weights: str | None = "data/weights/imagenet-vgg-m-2048.mat"  # ImageNet init of the shallow towers (MatConvNet file)
    deep_weights: str | None = "imagenet"  # ImageNet init of the deep towers (torchvision's VGG-16 weights)
    # Sec. 4.4: HMDB51's temporal towers start from a UCF101 temporal tower (a final.pt of the same backbone
    # from results/runs/...; every layer but fc8, whose classes differ); None: `weights` as the spatial one
    temporal_init: str | None = None
    appearance_pretrain_epochs: int = 0  # demo's stand-in for ImageNet: dense colour pre-training of the spatial tower
    appearance_weight: float = 0.0  # demo: the dense colour objective kept beside the actions (models.WithAppearance)
    # ---- training ----------------------------------------------------------------------
    # "released": the authors' step tables (paper.RELEASED_SCHEDULES: a rate per "epoch" of K passes, the
    # batch size and back-propagation depth of each stream and of fusion) | "plateau": Sec. 3.5's text,
    # the same start, /10 whenever the accuracy on the split's test list stops improving (the released
    # cnn_train_dag validates on it) | "cosine": the profile's rates and epochs (the demo); see
    # experiments.streams.train_config
    schedule: str = "released"
    batch_size: int = HP["batch_size"]  # fusion (Sec. 3.5) and testing; "released"/"plateau" streams: the released ones
    lr_stream: float | None = None  # None: the released table's first rate; set, it scales the table to start there
    lr_fusion: float | None = None  # as lr_stream, for fusion heads (released: 1e-3, Sec. 3.5)
    bias_lr_factor: float = HP["bias_lr_factor"]  # biases learn at this x the rate (released code: 2)
    bias_decay: bool = HP["bias_decay"]  # weight decay on biases (released code: none)
    warmup_epochs: int = 0  # the demo's short schedules start with a linear warm-up (train.TrainConfig)
    dropout: float = HP["dropout"]  # Sec. 3.5
    dropout_fusion: float | None = None  # dropout above the fusion layer; None: `dropout`
    fusion_relu: bool = False  # ReLU after conv fusion (the released code has one; Eq. 4 does not)
    conv3d_init: str = "paper"  # 3D conv fusion init: [I, 3I] x Gaussian (paper) | "released" (Gaussian sums to 1)
    pool3d: str = "released"  # 3D pooling: pool5's window over the whole clip, temporal stride 2 (released code) | "paper" (3x3x3)
    epochs_stream: int | None = None  # passes over the training videos; None: all of the released schedule's
    epochs_temporal: int | None = None  # temporal stream; None: epochs_stream ([22] trains it ~6x longer)
    epochs_fusion: int | None = None  # fusion heads; None: all of the released schedule's passes
    feature_epochs: int = 8  # augmented training clips cached per video for frozen-tower heads
    # where frozen-tower heads read their inputs (experiments.fusion): "disk" memory-mapped shards beside the
    # heads (features.py; RAM holds a batch), "memory" arrays in RAM (small data: the demo's 0.2 GB), "none"
    # no cache, the towers run under every training step (when the cache cannot fit the disk: plan says)
    feature_cache: str = "disk"
    seeds: tuple[int, ...] = (0,)  # training seeds; accuracies report their spread
    idt_components: int = 256  # GMM components per descriptor type (Table 6)
    idt_C: float = 100.0  # linear SVM regularisation (Table 6)
    max_videos: int | None = None  # cap per split part (smoke runs)
    cache_frames: bool = False  # keep decoded frames in memory (data.stores.DecodedCache): small data sets only
    # ---- machine -----------------------------------------------------------------------
    device: str = "cuda"
    workers: int = 8
    threads: int | None = None  # torch CPU threads (None = torch default)
    tower_processes: int = 1  # towers trained side by side in this many processes (CPU: one thread each)
    tower_threads: int | None = None  # threads of a tower's or a fusion head's training wherever it runs (None: `threads`)
    amp: bool = True  # bf16 autocast on GPU
    pinned_arithmetic: bool = False  # the same CPU code paths on every machine (twostream_lib.arithmetic)
    results_dir: str = "results"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"profile setting schedule={self.schedule!r}: expected one of {list(SCHEDULES)}")
        if self.feature_cache not in FEATURE_CACHES:
            raise ConfigError(f"profile setting feature_cache={self.feature_cache!r}: expected one of "
                              f"{list(FEATURE_CACHES)}")

    def path(self, relative: str) -> Path:
        """Resolve a profile path (data_root, results_dir) against the repository root."""
        p = Path(relative)
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def data_dir(self) -> Path:
        return self.path(self.data_root)

    @property
    def results_path(self) -> Path:
        return self.path(self.results_dir)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


PROFILES: dict[str, Profile] = {
    "demo": Profile(
        name="demo",
        dataset="synthetic",
        crop=48,  # the synthetic frames' side: the demo trains and tests on whole frames
        stream_crop="full",  # crops of a 48 px frame cut the moving disc out of view (label noise)
        fusion_crop="full",
        backbone="demo_shallow",
        deep_backbone="demo_deep",
        weights=None,
        deep_weights=None,
        appearance_weight=10.0,  # the stand-in for ImageNet: colour per location kept while learning actions
        idt_components=32,
        idt_C=1.0,
        batch_size=32,
        schedule="cosine",  # short fixed budgets (no validation set): cosine decay after a warm-up
        lr_stream=0.05,
        lr_fusion=0.02,  # 0.05 left the 3D conv heads (27 taps per weight of the 2D one) at 55-79%
        bias_lr_factor=1.0,
        bias_decay=True,
        warmup_epochs=2,
        dropout=0.0,  # the tiny towers underfit with dropout (0.5: spatial shapes at chance)
        dropout_fusion=0.0,  # a head on frozen features: dropout 0.5 there cost 15-20 points
        fusion_relu=True,  # with [I I] init and ReLU5 inputs it only matters once the head trains long
        conv3d_init="centre",  # starts as the 2D conv fusion's [I I]; the released 0.25/0.75 blur trained to 55-79%
        # Tables 5-6 on split 1 only: splits 2 and 3 need four more towers and their heads, which made Table 5
        # alone 3.5 of the demo's minutes; on one split they test split 1's heads (all seeds) with the final
        # protocol, 3 clips of T and their flips (20 clips, 40 views: ~10 min on 2 cores)
        final_splits=(1,),
        final_test_clips=3,
        epochs_stream=15,
        epochs_temporal=30,  # the deep flow tower underfits the motion classes in 15 (as [22], flow trains longer)
        epochs_fusion=30,
        feature_epochs=4,
        feature_cache="memory",  # 0.2 GB of maps: in RAM one pass of the towers serves every layer of a table
        seeds=(0, 1, 2),  # three heads per fusion row: the spread over seeds enters every standard error
        cache_frames=True,  # a few hundred tiny videos: decode each once per process, not every epoch
        device="cpu",
        workers=0,
        threads=2,
        tower_processes=2,  # two towers at a time, one thread each: 1.7x the throughput of one on two threads
        tower_threads=1,
        amp=False,
        pinned_arithmetic=True,  # nbval compares the executed notebooks on whatever machine runs pytest
    ),
    "paper": Profile(
        name="paper",
        dataset="ucf101",
        # the released init (Gaussian summing to 1): the text's peak-1 Gaussian x [I, 3I] starts 43x larger
        # (tests/test_fusion.py), ~20x above the scale fc6 was trained on; conv3d_init="paper" keeps it
        conv3d_init="released",
        # the released crops: fusion 'noCtr' (cnn_ucf101_fusion.m), spatial 'borders25'
        # (cnn_ucf101_spatial.m), temporal 'multiScaleRegular' (cnn_ucf101_temporal.m); data.sampling
        fusion_crop="noCtr",
        stream_crop="borders25",
        temporal_crop="multiScaleRegular",
    ),
    "smoke": Profile(
        name="smoke",
        dataset="ucf101",
        data_root="data/rehearsal",  # a generated set in UCF101's layout and size (data.rehearsal)
        rehearsal_classes=5,
        conv3d_init="released",  # the paper profile's choices, on a few videos and one pass
        fusion_crop="noCtr",
        stream_crop="borders25",
        temporal_crop="multiScaleRegular",
        weights=None,  # ImageNet weights cannot be downloaded here: random initialisation
        deep_weights=None,
        batch_size=8,
        epochs_stream=1,
        epochs_temporal=1,
        epochs_fusion=1,
        feature_epochs=1,
        final_test_clips=2,
        device="cpu",
        workers=0,
        threads=2,
        amp=False,
    ),
}


def load_profile(name: str = "demo", **overrides) -> Profile:
    """The named profile with ``overrides`` applied; unknown names and fields, and values of the wrong
    type, raise ConfigError naming the field and what was expected.

    ``None`` overrides are ignored so that a notebook can pass all its parameters through; lists
    become tuples (papermill and JSON have no tuples).
    """
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}")
    hints = typing.get_type_hints(Profile)
    clean = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in hints:
            raise ConfigError(f"unknown profile setting {key!r}; expected one of {sorted(hints)}")
        clean[key] = _checked(key, value, hints[key])
    return dataclasses.replace(PROFILES[name], **clean)


def _checked(name: str, value, hint):
    """``value`` converted to the field's type (list -> tuple, int -> float), or ConfigError."""
    def fail():
        raise ConfigError(f"profile setting {name}={value!r}: expected {_type_name(hint)}, "
                          f"got {type(value).__name__}")

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _checked(name, value, arg)
            except ConfigError:
                pass
        fail()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_checked(name, v, args[0]) for v in value)
        if len(value) != len(args):
            fail()
        return tuple(_checked(name, v, a) for v, a in zip(value, args))
    if hint is bool:
        return value if isinstance(value, bool) else fail()
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else fail()
    if hint is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else fail()
    if hint is str:
        return value if isinstance(value, str) else fail()
    return value


def _type_name(hint) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # a None override keeps the profile's value
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        inner = f"{_type_name(args[0])}, ..." if len(args) == 2 and args[1] is Ellipsis else \
            ", ".join(_type_name(a) for a in args)
        return f"a list of ({inner})"
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))
