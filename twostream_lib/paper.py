"""Every number the paper reports, in one place (Feichtenhofer, Pinz, Zisserman, CVPR 2016).

Notebooks, tables and the README read paper values only from here; nothing is typed twice. The
training schedules of the authors' released code (``RELEASED_SCHEDULES``), which the ``paper``
profile follows, live here too.
Accuracies are in percent, parameters in millions. ``source`` says where a value was read;
two rows are repaired because the text copy of the paper garbled them (see ``REPAIRED``).

>>> paper_value("table1", "conv@relu5").accuracy
85.96
"""
from __future__ import annotations

from dataclasses import dataclass

from twostream_lib.errors import ConfigError

CITATION = (
    "C. Feichtenhofer, A. Pinz, A. Zisserman. Convolutional Two-Stream Network Fusion for "
    "Video Action Recognition. CVPR 2016."
)


@dataclass(frozen=True)
class PaperRow:
    """One row (or one cell, for multi-column tables) of a table of the paper."""

    table: str  # "table1" .. "table6"
    key: str  # stable identifier used by our tables to join ours with the paper's
    label: str  # the row as printed in the paper
    dataset: str  # "ucf101" | "hmdb51"
    accuracy: float | None  # percent; None where the paper gives "-"
    layers: int | None = None  # "#layers" column (Tables 1, 2)
    params_m: float | None = None  # "#parameters" column, millions (Tables 1, 2)
    note: str = ""
    source: str = "published table"


_T1 = "table1"  # how to fuse (Sec. 4.2), UCF101 split 1, two VGG-M-2048 towers
_T2 = "table2"  # where to fuse (Sec. 4.3), conv fusion, UCF101 split 1
_T3 = "table3"  # deep vs very deep (Sec. 4.4), split 1
_T4 = "table4"  # temporal fusion (Sec. 4.5), S: VGG-16, T: VGG-M, split 1
_T5 = "table5"  # comparison, mean over 3 splits (Sec. 4.6)
_T6 = "table6"  # with IDT features, mean over 3 splits (Sec. 4.6)

ROWS: tuple[PaperRow, ...] = (
    # ---- Table 1: fusion method at a fixed layer -------------------------------------------
    PaperRow(_T1, "sum@softmax[22]", "Sum [22] / Softmax", "ucf101", 85.6, 16, 181.42,
             note="Simonyan & Zisserman's two-stream result"),
    PaperRow(_T1, "sum@softmax", "Sum (ours) / Softmax", "ucf101", 85.94, 16, 181.42),
    PaperRow(_T1, "max@relu5", "Max / ReLU5", "ucf101", 82.70, 13, 97.31),
    PaperRow(_T1, "concat@relu5", "Concatenation / ReLU5", "ucf101", 83.53, 13, 172.81),
    PaperRow(_T1, "bilinear@relu5", "Bilinear [15] / ReLU5", "ucf101", 85.05, 10, 6.61,
             note="6.61M + SVM"),
    PaperRow(_T1, "sum@relu5", "Sum / ReLU5", "ucf101", 85.20, 13, 97.31),
    PaperRow(_T1, "conv@relu5", "Conv / ReLU5", "ucf101", 85.96, 14, 97.58),
    # Sec. 4.2 text: conv fusion from random Gaussian initialisation, and FC-layer fusions.
    PaperRow(_T1, "conv@relu5/gaussian", "Conv / ReLU5, Gaussian init", "ucf101", 85.59,
             source="Sec. 4.2 text"),
    PaperRow(_T1, "conv@fc8", "Conv / FC8", "ucf101", 85.9, source="Sec. 4.2 text"),
    PaperRow(_T1, "sum@fc8", "Sum / FC8", "ucf101", 85.1, source="Sec. 4.2 text"),
    # ---- Table 2: fusion layer (conv fusion) -------------------------------------------------
    PaperRow(_T2, "conv@relu2", "ReLU2", "ucf101", 82.25, 11, 91.90),
    PaperRow(_T2, "conv@relu3", "ReLU3", "ucf101", 83.43, 12, 93.08),
    PaperRow(_T2, "conv@relu4", "ReLU4", "ucf101", 82.55, 13, 95.48),
    PaperRow(_T2, "conv@relu5", "ReLU5", "ucf101", 85.96, 14, 97.57,
             note="Table 1 gives 97.58M for the same model"),
    PaperRow(_T2, "conv@relu5+fc8", "ReLU5 + FC8", "ucf101", 86.04, 17, 181.68),
    PaperRow(_T2, "conv@relu3+relu5+fc6", "ReLU3 + ReLU5 + FC6", "ucf101", 81.55, 17, 190.06),
    # ---- Table 3: VGG-M-2048 vs VGG-16 ------------------------------------------------------
    PaperRow(_T3, "spatial/vgg_m_2048", "Spatial, VGG-M-2048", "ucf101", 74.22),
    PaperRow(_T3, "spatial/vgg16", "Spatial, VGG-16", "ucf101", 82.61),
    PaperRow(_T3, "temporal/vgg_m_2048", "Temporal, VGG-M-2048", "ucf101", 82.34),
    PaperRow(_T3, "temporal/vgg16", "Temporal, VGG-16", "ucf101", 86.25),
    PaperRow(_T3, "late/vgg_m_2048", "Late fusion, VGG-M-2048", "ucf101", 85.94),
    PaperRow(_T3, "late/vgg16", "Late fusion, VGG-16", "ucf101", 90.62),
    PaperRow(_T3, "spatial/vgg_m_2048", "Spatial, VGG-M-2048", "hmdb51", 36.77),
    PaperRow(_T3, "spatial/vgg16", "Spatial, VGG-16", "hmdb51", 47.06),
    PaperRow(_T3, "temporal/vgg_m_2048", "Temporal, VGG-M-2048", "hmdb51", 51.50),
    PaperRow(_T3, "temporal/vgg16", "Temporal, VGG-16", "hmdb51", 55.23),
    PaperRow(_T3, "late/vgg_m_2048", "Late fusion, VGG-M-2048", "hmdb51", 54.90),
    PaperRow(_T3, "late/vgg16", "Late fusion, VGG-16", "hmdb51", 58.17),
    # ---- Table 4: temporal fusion (ReLU5 +, both towers kept) -------------------------------
    PaperRow(_T4, "conv2d+pool2d", "2D Conv / 2D pooling / ReLU5 +", "ucf101", 89.35),
    PaperRow(_T4, "conv2d+pool3d", "2D Conv / 3D pooling / ReLU5 +", "ucf101", 89.64),
    PaperRow(_T4, "conv3d+pool3d", "3D Conv / 3D pooling / ReLU5 +", "ucf101", 90.40),
    PaperRow(_T4, "conv2d+pool2d", "2D Conv / 2D pooling / ReLU5 +", "hmdb51", 56.93),
    PaperRow(_T4, "conv2d+pool3d", "2D Conv / 3D pooling / ReLU5 +", "hmdb51", 57.58),
    PaperRow(_T4, "conv3d+pool3d", "3D Conv / 3D pooling / ReLU5 +", "hmdb51", 58.63),
    # ---- Table 5: mean over three splits ----------------------------------------------------
    PaperRow(_T5, "spatiotemporal_convnet[11]", "Spatiotemporal ConvNet [11]", "ucf101", 65.4),
    PaperRow(_T5, "spatiotemporal_convnet[11]", "Spatiotemporal ConvNet [11]", "hmdb51", None),
    PaperRow(_T5, "lrcn[6]", "LRCN [6]", "ucf101", 82.9),
    PaperRow(_T5, "lrcn[6]", "LRCN [6]", "hmdb51", None),
    PaperRow(_T5, "composite_lstm[25]", "Composite LSTM Model [25]", "ucf101", 84.3),
    PaperRow(_T5, "composite_lstm[25]", "Composite LSTM Model [25]", "hmdb51", 44.0),
    PaperRow(_T5, "c3d[30]", "C3D [30]", "ucf101", 85.2),
    PaperRow(_T5, "c3d[30]", "C3D [30]", "hmdb51", None),
    PaperRow(_T5, "two_stream_vgg_m[22]", "Two-Stream ConvNet (VGG-M) [22]", "ucf101", 88.0),
    PaperRow(_T5, "two_stream_vgg_m[22]", "Two-Stream ConvNet (VGG-M) [22]", "hmdb51", 59.4),
    PaperRow(_T5, "factorized[26]", "Factorized ConvNet [26]", "ucf101", 88.1),
    PaperRow(_T5, "factorized[26]", "Factorized ConvNet [26]", "hmdb51", 59.1),
    PaperRow(_T5, "conv_pooling[17]", "Two-Stream Conv Pooling [17]", "ucf101", 88.2),
    PaperRow(_T5, "conv_pooling[17]", "Two-Stream Conv Pooling [17]", "hmdb51", None),
    PaperRow(_T5, "two_stream_vgg16[35]", "Two-Stream ConvNet (VGG-16, [35])", "ucf101", 91.4),
    PaperRow(_T5, "two_stream_vgg16[35]", "Two-Stream ConvNet (VGG-16, [35])", "hmdb51", 58.5),
    PaperRow(_T5, "two_stream_vgg16", "Two-Stream ConvNet (VGG-16, ours)", "ucf101", 91.7),
    PaperRow(_T5, "two_stream_vgg16", "Two-Stream ConvNet (VGG-16, ours)", "hmdb51", 58.7),
    PaperRow(_T5, "ours/S:vgg16,T:vgg_m", "Ours (S:VGG-16, T:VGG-M)", "ucf101", 90.8),
    PaperRow(_T5, "ours/S:vgg16,T:vgg_m", "Ours (S:VGG-16, T:VGG-M)", "hmdb51", 62.1),
    PaperRow(_T5, "ours/S:vgg16,T:vgg16,single", "Ours (S:VGG-16, T:VGG-16, single tower after fusion)",
             "ucf101", 91.8, source="Sec. 4.6 text (table row garbled in the text copy)"),
    PaperRow(_T5, "ours/S:vgg16,T:vgg16,single", "Ours (S:VGG-16, T:VGG-16, single tower after fusion)",
             "hmdb51", 64.6, source="published Table 5 (row garbled in the text copy)"),
    PaperRow(_T5, "ours/S:vgg16,T:vgg16", "Ours (S:VGG-16, T:VGG-16)", "ucf101", 92.5),
    PaperRow(_T5, "ours/S:vgg16,T:vgg16", "Ours (S:VGG-16, T:VGG-16)", "hmdb51", 65.4),
    # ---- Table 6: late fusion with IDT ------------------------------------------------------
    PaperRow(_T6, "idt+hdfv[19]", "IDT+higher dimensional FV [19]", "ucf101", 87.9),
    PaperRow(_T6, "idt+hdfv[19]", "IDT+higher dimensional FV [19]", "hmdb51", 61.1),
    PaperRow(_T6, "c3d+idt[30]", "C3D+IDT [30]", "ucf101", 90.4),
    PaperRow(_T6, "c3d+idt[30]", "C3D+IDT [30]", "hmdb51", None),
    PaperRow(_T6, "tdd+idt[34]", "TDD+IDT [34]", "ucf101", 91.5),
    PaperRow(_T6, "tdd+idt[34]", "TDD+IDT [34]", "hmdb51", 65.9),
    PaperRow(_T6, "ours+idt/S:vgg16,T:vgg_m", "Ours+IDT (S:VGG-16, T:VGG-M)", "ucf101", 92.5),
    PaperRow(_T6, "ours+idt/S:vgg16,T:vgg_m", "Ours+IDT (S:VGG-16, T:VGG-M)", "hmdb51", 67.3),
    PaperRow(_T6, "ours+idt/S:vgg16,T:vgg16", "Ours+IDT (S:VGG-16, T:VGG-16)", "ucf101", 93.5),
    PaperRow(_T6, "ours+idt/S:vgg16,T:vgg16", "Ours+IDT (S:VGG-16, T:VGG-16)", "hmdb51", 69.2),
)

#: Rows whose text-copy value was garbled and is repaired from the named source.
REPAIRED = tuple(r for r in ROWS if "garbled" in r.source)

#: The paper's hyper-parameters (Sec. 3.5 unless noted): the one source for the ``paper`` profile
#: (:mod:`twostream_lib.config`), the training engine's defaults (:class:`twostream_lib.train.TrainConfig`)
#: and the flow quantisation (:mod:`twostream_lib.data.prepare`).
HYPERPARAMETERS = {
    "T": 5,  # temporal samples
    "L": 10,  # flow frames per stack (Sec. 3, [22])
    "tau_range": (1, 10),  # temporal stride sampled uniformly
    "batch_size": 96,  # videos per batch
    "lr": 1e-3,  # fusion fine-tuning; reduced 10x when validation accuracy saturates
    "dropout": 0.85,
    "momentum": 0.9,  # and weight decay: MatConvNet's cnn_train_dag.m defaults, which the scripts keep
    "weight_decay": 5e-4,
    # released code (dagnn.DagNN.setLrWd: biasesLRWD [2 0]): biases learn at twice the rate, without decay
    "bias_lr_factor": 2.0,
    "bias_decay": False,
    "flow_bound": 20.0,  # TV-L1 clipped at +-20 px (as in [22])
    "short_side": 256,  # frames rescaled so that the smallest side is 256
    "conv3d_kernel": (3, 3, 3),  # 3x3x3x1024x512 fusion kernel
    "conv3d_sigma": 1.0,
    "temporal_init_factor": 3.0,  # temporal identity x3
    "crop": 224,
}


@dataclass(frozen=True)
class ReleasedSchedule:
    """One training run as the authors' released MatConvNet scripts set it up
    (github.com/feichtenhofer/twostreamfusion: ``cnn_ucf101_spatial.m``, ``cnn_ucf101_temporal.m``,
    ``cnn_ucf101_fusion.m``, all trained by ``cnn_train_dag.m``).

    ``lrs`` is ``opts.train.learningRate``, one rate per "epoch"; an "epoch" there is ``passes`` passes
    over the training videos (``opts.train.train = repmat(train, 1, opts.train.epochFactor)``).
    ``batch_size`` is ``opts.train.batchSize`` (accumulated there over ``numSubBatches`` pieces).
    ``backprop_from`` maps ``opts.train.backpropDepth`` to our layer names
    (:data:`twostream_lib.models.backbones.LAYERS`): during the first ``backprop_epochs`` "epochs"
    (the length of that cell array) only ``backprop_from`` and the layers above it train; later epochs
    back-propagate through the whole network (``cnn_train_dag.m``: ``state.backpropDepth = []``).
    """

    lrs: tuple[float, ...]
    passes: int  # opts.train.epochFactor
    batch_size: int
    backprop_from: str | None = None
    backprop_epochs: int = 0
    source: str = ""

    @property
    def epochs(self) -> int:
        """Released "epochs": one per rate."""
        return len(self.lrs)

    @property
    def total_passes(self) -> int:
        """Passes over the training videos when every rate has had its epoch."""
        return len(self.lrs) * self.passes

    def lr(self, pass_index: int) -> float:
        """The rate of pass ``pass_index`` (0-based). Past the table the last rate holds, as in
        ``cnn_train_dag.m`` (``learningRate(min(epoch, numel(learningRate)))``; the scripts set no end)."""
        return self.lrs[min(pass_index // self.passes, len(self.lrs) - 1)]


def _rates(*runs: tuple[float, int]) -> tuple[float, ...]:
    """MatConvNet's ``[a*ones(1, n) b*ones(1, m) ...]``."""
    return tuple(rate for rate, n in runs for _ in range(n))


_SPATIAL = "cnn_ucf101_spatial.m"
_TEMPORAL = "cnn_ucf101_temporal.m"

#: The released training schedules: ``[stage][backbone]`` for the streams, one for every fusion head.
#: VGG-16 takes the scripts' ``if strfind(model, 'vgg16')`` branch; VGG-M-2048 (``elseif ... 'vgg-m'``)
#: keeps the values set above it. The spatial VGG-16's ``backpropDepth`` is ``'layer37'``: the unnamed
#: 37th layer after ``replace_last_layer`` inserts dropout (the model the fusion script loads is
#: ``-dr0.85``) into MatConvNet's 37-layer VGG-16, i.e. the dropout before fc8, so for three epochs
#: only fc8 trains. VGG-M's ``'pool5'`` stops below fc6 (our stage "fc6" starts with pool5).
RELEASED_SCHEDULES = {
    "spatial": {
        "vgg16": ReleasedSchedule(_rates((1e-3, 3), (5e-4, 5), (5e-5, 2), (5e-6, 2)), passes=10, batch_size=128,
                                  backprop_from="fc8", backprop_epochs=3, source=f"{_SPATIAL}, vgg16 branch"),
        "vgg_m_2048": ReleasedSchedule(_rates((1e-2, 2), (1e-2, 3), (1e-3, 3), (1e-4, 3)), passes=10,
                                       batch_size=256, backprop_from="fc6", backprop_epochs=2,
                                       source=f"{_SPATIAL}, defaults"),
    },
    "temporal": {
        "vgg16": ReleasedSchedule(_rates((5e-4, 10), (5e-5, 5), (5e-6, 1)), passes=100, batch_size=128,
                                  source=f"{_TEMPORAL}, vgg16 branch"),
        "vgg_m_2048": ReleasedSchedule(_rates((1e-2, 1), (1e-3, 1), (1e-4, 1), (1e-5, 1)), passes=100,
                                       batch_size=128, source=f"{_TEMPORAL}, defaults"),
    },
    # two VGG-16 towers in the script; the same protocol for every fusion head (Sec. 3.5: batch 96, lr 1e-3).
    # Back-propagation stops at the fusion layer (backpropDepth 'relu5_3_spatial'): our heads train on the
    # frozen towers' features (experiments.fusion), so no backprop_from here.
    "fusion": ReleasedSchedule(_rates((1e-3, 2), (1e-4, 1), (1e-5, 1), (1e-6, 1)), passes=10, batch_size=96,
                               source="cnn_ucf101_fusion.m"),
}

#: ``cnn_ucf101_spatial.m``: ``if strcmp(opts.dataSet, 'hmdb51')`` shortens the default (VGG-M) rates;
#: the vgg16 branch, set after it, overrides them for VGG-16.
RELEASED_SCHEDULES_HMDB51 = {
    ("spatial", "vgg_m_2048"): ReleasedSchedule(_rates((1e-2, 2), (1e-2, 1), (1e-3, 1), (1e-4, 1)), passes=10,
                                                batch_size=256, backprop_from="fc6", backprop_epochs=2,
                                                source=f"{_SPATIAL}, defaults, hmdb51"),
}


def released_schedule(stage: str, backbone: str | None = None, dataset: str = "ucf101") -> ReleasedSchedule:
    """The released schedule of ``stage`` ("spatial" | "temporal" | "fusion") for ``backbone`` (streams
    only) on ``dataset``; ConfigError naming the choices when the scripts have none."""
    if stage == "fusion":
        return RELEASED_SCHEDULES["fusion"]
    if stage not in ("spatial", "temporal"):
        raise ConfigError(f"no released schedule for stage {stage!r}; stages are ['fusion', 'spatial', 'temporal']")
    if (stage, backbone) in RELEASED_SCHEDULES_HMDB51 and dataset == "hmdb51":
        return RELEASED_SCHEDULES_HMDB51[stage, backbone]
    if backbone not in RELEASED_SCHEDULES[stage]:
        raise ConfigError(f"the released scripts train no {backbone!r} {stage} stream; released schedules exist "
                          f"for {sorted(RELEASED_SCHEDULES[stage])} (choose schedule='cosine' for other backbones)")
    return RELEASED_SCHEDULES[stage][backbone]


def paper_rows(table: str, dataset: str | None = None) -> list[PaperRow]:
    """All rows of one table, optionally for one data set, in the paper's order."""
    rows = [r for r in ROWS if r.table == table and (dataset is None or r.dataset == dataset)]
    if not rows:
        tables = sorted({r.table for r in ROWS})
        raise ConfigError(f"no paper rows for table={table!r}, dataset={dataset!r}; tables are {tables}")
    return rows


def paper_value(table: str, key: str, dataset: str = "ucf101") -> PaperRow:
    """The paper's row ``key`` of ``table`` for ``dataset``; ConfigError naming the choices if absent."""
    for r in ROWS:
        if r.table == table and r.key == key and r.dataset == dataset:
            return r
    keys = sorted({r.key for r in ROWS if r.table == table})
    raise ConfigError(f"paper {table} has no row {key!r} for {dataset!r}; rows are {keys}")
