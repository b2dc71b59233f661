"""Every table of the paper in one place: :data:`TABLES` maps a name to its :class:`TableSpec`.

A spec holds the table's title, the rows it trains (fusion :class:`~.fusion.Variant` s, or a row
builder for the stream and IDT tables), the paper's claims about them, and whether the paper's
parameter counts are shown. :func:`run_table` runs a spec for a profile and writes
``results/tables/<name>.{csv,md}``. Adding a table = one entry here, one notebook, and its paper rows
in :mod:`twostream_lib.paper`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown

from twostream_lib import paper, tables
from twostream_lib.config import Profile
from twostream_lib.data import synthetic
from twostream_lib.errors import ConfigError
from twostream_lib.evaluate import accuracy
from twostream_lib.idt import idt_scores as compute_idt_scores
from twostream_lib.idt import late_fuse_idt
from twostream_lib.models.backbones import FC_LAYERS
from twostream_lib.models.params import ParamRow, counts
from twostream_lib.models.params import parameter_rows as count_architectures

from .cache import run_dir
from .data import DataBundle, limit_videos
from .findings import (
    MARGIN,
    Claim,
    Finding,
    accuracy_row,
    check_claims,
    format_findings,
    write_findings,
)
from .fusion import Variant, backbone_name, fusion_dir, run_fusion
from .streams import late_fusion, stream_dir, stream_scores, train_streams, train_towers

__all__ = ["TableSpec", "TABLES", "TableResult", "run_table", "parameter_rows", "OURS", "OURS_LATE", "idt_scores"]

Rows = Callable[[Profile, DataBundle, "TableSpec", tuple], list]


@dataclass(frozen=True)
class TableSpec:
    """One table: title, what it trains, the claims it tests."""

    name: str  # "table1" .. "table6": also the paper's table (twostream_lib.paper) and the output file
    title: str
    rows: Rows  # (cfg, data, spec, splits) -> [ResultRow]
    claims: tuple[Claim, ...] = ()
    variants: tuple[Variant, ...] = ()  # the fusion rows, for tables built by fusion_rows
    param_counts: bool = False  # show the paper's #layers / #parameters beside ours (Tables 1, 2)


@dataclass
class TableResult:
    """What a table notebook shows: the table (ours beside the paper's) and the findings."""

    table: str
    frame: pd.DataFrame
    findings: list[Finding]
    markdown: str
    paths: tuple[Path, ...] = ()
    runs: dict = field(default_factory=dict)  # row key -> [VideoScores], for confusion matrices

    def show(self) -> Markdown:
        return Markdown(self.markdown)

    def show_findings(self) -> None:
        print(format_findings(self.findings))

    # read-only views for the notebooks' plots (nothing is trained, loaded or computed anew)

    def accuracies(self) -> pd.DataFrame:
        """One line per run of each row: ``key``, ``run`` (its place in ``runs[key]``: split by split, and
        seed by seed within a split, as the row builders append them) and ``accuracy`` (percent)."""
        return pd.DataFrame([{"key": key, "run": i, "accuracy": 100.0 * accuracy(s)}
                             for key, scores in self.runs.items() for i, s in enumerate(scores)],
                            columns=["key", "run", "accuracy"])

    def run_folders(self, cfg: Profile, splits=None) -> pd.DataFrame:
        """The run folders (``metrics.csv``, ``config.json``) of the models trained for each row, one line
        per model: ``key``, ``role`` ("fusion head", "spatial tower" or "temporal tower"), ``backbone``,
        ``split``, ``seed``, ``folder``. A row's fusion heads come in the order of ``runs[key]``; a
        late-fusion row lists the two towers it averages; IDT has none. ``splits``: those the table ran on
        (default: the profile's split). The folders are named as the row builders name them; a folder
        that was never trained is listed all the same (``folder / "metrics.csv"`` then does not exist)."""
        spec = TABLES[self.table]
        splits = tuple(splits or (cfg.split,))
        lines = []

        def towers(key: str, spatial: str, temporal: str, split: int, which=("spatial", "temporal")) -> None:
            for stream, bb in zip(("spatial", "temporal"), (spatial, temporal)):
                if stream in which:
                    lines.append((key, f"{stream} tower", bb, split, cfg.seeds[0],
                                  stream_dir(cfg, bb, stream, split, cfg.seeds[0])))

        def head(key: str, v: Variant, split: int, seed: int) -> None:
            lines.append((key, "fusion head", f"{backbone_name(cfg, v.spatial)}+{backbone_name(cfg, v.temporal_tower)}",
                          split, seed, fusion_dir(cfg, v, split, seed)))

        for split in splits:
            if spec.rows is fusion_rows:
                for v in spec.variants:
                    if v.late:
                        towers(v.key, backbone_name(cfg, v.spatial), backbone_name(cfg, v.temporal_tower), split)
                    else:
                        for seed in cfg.seeds:
                            head(v.key, v, split, seed)
            elif spec.rows is stream_rows:
                for which, paper_name in (("shallow", "vgg_m_2048"), ("deep", "vgg16")):
                    bb = backbone_name(cfg, which)
                    for stream in ("spatial", "temporal"):
                        towers(f"{stream}/{paper_name}", bb, bb, split, which=(stream,))
                    towers(f"late/{paper_name}", bb, bb, split)
            elif spec.rows is final_rows:
                towers(OURS_LATE.key, backbone_name(cfg, OURS_LATE.spatial),
                       backbone_name(cfg, OURS_LATE.temporal_tower), split)
                head(OURS.key, OURS, split, cfg.seeds[0])
            elif spec.rows is idt_rows:
                for seed in cfg.seeds if len(splits) == 1 else cfg.seeds[:1]:
                    head(OURS.key, OURS, split, seed)
                    head("ours+idt/S:vgg16,T:vgg_m", OURS, split, seed)
        return pd.DataFrame(lines, columns=["key", "role", "backbone", "split", "seed", "folder"])


# ---- what each row can reach -----------------------------------------------------------------------

#: Fusion methods that combine the two maps position by position before anything pools them.
REGISTERING = ("conv", "sum", "bilinear", "product")


def model_family(variant: Variant | None = None, *, stream: str | None = None) -> str:
    """The data card's model family of a row (its cues, so its ceiling): a stream, late fusion, 2D
    fusion that can register appearance with motion, or 3D fusion that also sees the order.

    Fusion registers when the maps meet position by position (conv, sum, bilinear) or when a
    convolution follows the fusion before pool5; max or concatenation at ReLU5 followed by the demo
    backbones' global max pool5 leave each tower's maxima, the cues of late fusion, and fusion at an FC
    layer comes after pool5 has collapsed the positions.
    """
    if stream is not None:
        return {"spatial": synthetic.SPATIAL_FAMILY, "temporal": synthetic.TEMPORAL_FAMILY,
                "late": synthetic.LATE_FAMILY}[stream]
    if variant.late:
        return synthetic.LATE_FAMILY
    first = variant.layers[0]
    methods = (variant.fusion,) * len(variant.layers) if isinstance(variant.fusion, str) else variant.fusion
    if first in FC_LAYERS:
        return synthetic.LATE_FAMILY
    if methods[0] not in REGISTERING and first == "relu5":
        return synthetic.LATE_FAMILY
    return synthetic.CONV3D_FAMILY if variant.temporal == "conv3d_pool3d" else synthetic.CONV2D_FAMILY


def reach(data: DataBundle, family: str, runs: list) -> dict:
    """Columns beside a row's accuracy: chance, the data card's ceiling for the row's model family, and
    (synthetic data) the accuracy per class family with its ceiling, in percent."""
    classes = data.split(1).classes
    out = {"chance": 100.0 / len(classes)}
    families = synthetic.class_families(classes)
    if len(families) != len(classes):  # a real data set: no ceiling is known
        return out
    out["ceiling"] = 100.0 * synthetic.principle_accuracy(classes)[family]
    per_ceiling = synthetic.principle_accuracy(classes, by_family=True)[family]
    for fam in sorted(set(families.values())):
        members = np.array([classes.index(c) for c, f in families.items() if f == fam])
        accs = [100.0 * float(np.mean((r.predictions() == r.labels)[np.isin(r.labels, members)])) for r in runs]
        out[f"family:{fam}"] = float(np.mean(accs))
        out[f"family_ceiling:{fam}"] = 100.0 * per_ceiling[fam]
    return out


def family_row(key: str, label: str, runs: list, data: DataBundle, family: str, extra: dict | None = None):
    """:func:`~.findings.accuracy_row` with the chance, ceiling and per-family columns of :func:`reach`."""
    return accuracy_row(key, label, runs, extra={**(extra or {}), "family": family, **reach(data, family, runs)})


# ---- row builders ---------------------------------------------------------------------------------


def ran_label(label: str, cfg: Profile, variant: Variant) -> str:
    """What a fusion row actually ran: its label and the two towers' backbones."""
    return f"{label} (S: {backbone_name(cfg, variant.spatial)}, T: {backbone_name(cfg, variant.temporal_tower)})"


def fusion_rows(cfg: Profile, data: DataBundle, spec: TableSpec, splits: tuple, *, runs: dict) -> list:
    """One row per variant: its heads trained with every seed on every split (late fusion: one run)."""
    rows = []
    layers = tuple(v.layers[0] for v in spec.variants if not v.late and v.clip_length(cfg) == 1)
    for v in spec.variants:
        scores, params = [], None
        for split in splits:
            for seed in (cfg.seeds if not v.late else cfg.seeds[:1]):
                s, model = run_fusion(cfg, data, v, split=split, seed=seed, share_layers=layers)
                scores.append(s)
                if model is not None:
                    params = sum(p.numel() for p in model.parameters()) / 1e6
        runs[v.key] = scores
        rows.append(family_row(v.key, ran_label(v.label, cfg, v), scores, data, model_family(v),
                               extra={"demo_params_m": params}))
    return rows


def stream_rows(cfg: Profile, data: DataBundle, spec: TableSpec, splits: tuple, *, runs: dict) -> list:
    """Table 3: each stream and their late fusion, for the shallow and the deep backbone."""
    rows = []
    for which, paper_name in (("shallow", "vgg_m_2048"), ("deep", "vgg16")):
        bb = backbone_name(cfg, which)
        per_split = [train_streams(cfg, data, backbone=bb, split=k) for k in splits]
        for stream in ("spatial", "temporal"):
            key = f"{stream}/{paper_name}"
            runs[key] = [stream_scores(cfg, data, st, stream) for st in per_split]
            rows.append(family_row(key, f"{stream.title()}, {bb}", runs[key], data, model_family(stream=stream)))
        key = f"late/{paper_name}"
        runs[key] = [late_fusion(cfg, data, st, st) for st in per_split]
        rows.append(family_row(key, f"Late fusion, {bb}", runs[key], data, model_family(stream="late")))
    return rows


TEMPORAL = dict(truncate=False, spatial="deep", temporal_tower="shallow", T=-1)  # T=-1: the profile's T
OURS = Variant("ours/S:vgg16,T:vgg_m", "Ours, 3D conv + 3D pooling", temporal="conv3d_pool3d", **TEMPORAL)
OURS_LATE = Variant("late/S:vgg16,T:vgg_m", "Late fusion of the same towers", fusion="softmax", layers=(),
                    **TEMPORAL)


def final_rows(cfg: Profile, data: DataBundle, spec: TableSpec, splits: tuple, *, runs: dict) -> list:
    """Table 5: the proposed architecture (Sec. 3.4) vs late fusion of the same towers, per split,
    tested with the final protocol (Sec. 4.6); mean over the splits."""
    rows = []
    for v in (OURS_LATE, OURS):
        # one head per split (their spread enters the standard error): Table 4 measures the seeds of split 1
        runs[v.key] = [run_fusion(cfg, data, v, split=k, seed=cfg.seeds[0], clips=cfg.final_test_clips)[0]
                       for k in splits]
        rows.append(family_row(v.key, ran_label(v.label, cfg, v), runs[v.key], data, model_family(v)))
    return rows


def idt_scores(cfg: Profile, data: DataBundle, split: int):
    """Fisher-vector-encoded IDT + linear SVM scores of the test videos (Table 6), cached on disk.
    Descriptors are extracted by the profile's ``workers`` processes; where data loading runs in the
    main process (``workers=0``, the demo), by ``threads`` processes (1: in this process)."""
    s = data.split(split)
    return compute_idt_scores(data.store, limit_videos(s.train, cfg), limit_videos(s.test, cfg),
                              cache_dir=run_dir(cfg, "idt"), num_classes=len(s.classes),
                              n_components=cfg.idt_components, C=cfg.idt_C, workers=max(1, cfg.workers or cfg.threads or 1),
                              seed=cfg.seeds[0],
                              progress=False)


def idt_rows(cfg: Profile, data: DataBundle, spec: TableSpec, splits: tuple, *, runs: dict) -> list:
    """Table 6: IDT alone, the ConvNet alone, and their late fusion: SVM scores averaged with the
    ConvNet's pre-softmax predictions, each standardised per video first (Sec. 4.6)."""
    idt, convnet, fused = [], [], []
    for k in splits:
        i = idt_scores(cfg, data, k)
        for seed in cfg.seeds if len(splits) == 1 else cfg.seeds[:1]:  # as Table 5 over several splits
            c = run_fusion(cfg, data, OURS, split=k, seed=seed, clips=cfg.final_test_clips)[0]
            idt.append(i)
            convnet.append(c)
            fused.append(late_fuse_idt(c, i))
    runs.update({"idt": idt, OURS.key: convnet, "ours+idt/S:vgg16,T:vgg_m": fused})
    # IDT's descriptors (HOG, HOF, MBH) see grey frames, in which every object has one luminance, pooled
    # without order: shapes without their colours, and the set of motions
    return [family_row("idt", "IDT (FV + linear SVM)", idt, data, synthetic.IDT_FAMILY),
            family_row(OURS.key, ran_label(OURS.label, cfg, OURS), convnet, data, synthetic.CONV3D_FAMILY),
            family_row("ours+idt/S:vgg16,T:vgg_m", ran_label("Ours + IDT", cfg, OURS), fused, data,
                       synthetic.CONV3D_FAMILY)]


# ---- the tables -----------------------------------------------------------------------------------


def _table(name, title, rows, claims, variants=(), param_counts=False) -> tuple[str, TableSpec]:
    return name, TableSpec(name, title, rows, tuple(Claim(*c) for c in claims), tuple(variants), param_counts)


TABLES: dict[str, TableSpec] = dict((
    _table("table1", "Table 1: how to fuse (spatial fusion at ReLU5, Sec. 4.2)", fusion_rows, (
        ("conv@relu5", ">=", "sum@softmax", "Conv fusion at ReLU5 matches or beats softmax averaging"),
        ("sum@relu5", ">=", "sum@softmax", "Sum fusion at ReLU5 matches or beats softmax averaging"),
        ("sum@relu5", ">", "max@relu5", "Max fusion at ReLU5 is weaker than sum fusion"),
        ("conv@relu5", ">", "concat@relu5", "Concatenation at ReLU5 is weaker than conv fusion"),
        ("conv@relu5", ">", "conv@fc6", "Fusion at an FC layer (FC6) is weaker than at ReLU5"),
        ("conv@relu5", ">", "conv@fc8", "Fusion at an FC layer (FC8) is weaker than at ReLU5"),
    ), variants=(
        Variant("sum@softmax", "Sum / Softmax (late fusion)", fusion="softmax", layers=()),
        Variant("max@relu5", "Max / ReLU5", fusion="max"),
        Variant("concat@relu5", "Concatenation / ReLU5", fusion="concat"),
        Variant("bilinear@relu5", "Bilinear / ReLU5", fusion="bilinear"),
        Variant("sum@relu5", "Sum / ReLU5", fusion="sum"),
        Variant("conv@relu5", "Conv / ReLU5", fusion="conv"),
        Variant("conv@relu5/gaussian", "Conv / ReLU5, Gaussian init", fusion="conv", conv_init="gaussian"),
        Variant("conv@fc6", "Conv / FC6", fusion="conv", layers=("fc6",)),
        Variant("conv@fc8", "Conv / FC8", fusion="conv", layers=("fc8",)),
    ), param_counts=True),
    _table("table2", "Table 2: where to fuse (conv fusion, Sec. 4.3)", fusion_rows, (
        ("conv@relu5", ">", "conv@relu2", "Fusing at ReLU2 is weaker than at ReLU5"),
        ("conv@relu5", ">", "conv@relu3", "Fusing at ReLU3 is weaker than at ReLU5"),
        ("conv@relu5", ">", "conv@relu4", "Fusing at ReLU4 is weaker than at ReLU5"),
        ("conv@relu5+fc8", "~", "conv@relu5", "Adding FC8 fusion to ReLU5 fusion matches it"),
        ("conv@relu5", ">", "conv@relu3+relu5+fc6", "Multiple fusions that include an early layer are weaker"),
    ), variants=(
        Variant("conv@relu2", "Conv / ReLU2", layers=("relu2",)),
        Variant("conv@relu3", "Conv / ReLU3", layers=("relu3",)),
        Variant("conv@relu4", "Conv / ReLU4", layers=("relu4",)),
        Variant("conv@relu5", "Conv / ReLU5", layers=("relu5",)),
        # Fig. 2 (right): conv fusion at ReLU5 into the spatial tower, the temporal tower kept to FC8, where
        # the two towers' class scores are summed into one prediction (one loss)
        Variant("conv@relu5+fc8", "Conv / ReLU5 + sum / FC8", fusion=("conv", "sum"), layers=("relu5", "fc8")),
        Variant("conv@relu3+relu5+fc6", "Conv / ReLU3 + ReLU5 + FC6", layers=("relu3", "relu5", "fc6")),
    ), param_counts=True),
    _table("table3", "Table 3: deep vs very deep two-stream networks (Sec. 4.4)", stream_rows, (
        ("late/vgg16", ">", "late/vgg_m_2048", "The deeper backbone's late fusion beats the shallower one's"),
        ("spatial/vgg16", ">", "spatial/vgg_m_2048", "The deeper spatial stream beats the shallower one"),
        ("late/vgg_m_2048", ">", "spatial/vgg_m_2048", "Late fusion beats the spatial stream (shallow)"),
        ("late/vgg_m_2048", ">", "temporal/vgg_m_2048", "Late fusion beats the temporal stream (shallow)"),
        ("late/vgg16", ">", "spatial/vgg16", "Late fusion beats the spatial stream (deep)"),
        ("late/vgg16", ">", "temporal/vgg16", "Late fusion beats the temporal stream (deep)"),
    )),
    _table("table4", "Table 4: temporal fusion, both towers kept (Sec. 4.5)", fusion_rows, (
        ("conv2d+pool3d", ">=", "conv2d+pool2d", "3D pooling matches or beats 2D pooling"),
        ("conv3d+pool3d", ">=", "conv2d+pool3d", "3D conv + 3D pooling matches or beats 2D conv + 3D pooling"),
        ("conv3d+pool3d", ">", "conv2d+pool2d", "3D conv + 3D pooling beats 2D conv + 2D pooling"),
        ("conv2d+pool2d", ">=", "late", "Conv fusion (2D) matches or beats late fusion of the same towers"),
    ), variants=(
        Variant("late", "Late fusion (softmax average) of the same towers", fusion="softmax", layers=(), **TEMPORAL),
        Variant("conv2d+pool2d", "2D Conv / 2D pooling / ReLU5 +", temporal="pool2d", **TEMPORAL),
        Variant("conv2d+pool3d", "2D Conv / 3D pooling / ReLU5 +", temporal="pool3d", **TEMPORAL),
        Variant("conv3d+pool3d", "3D Conv / 3D pooling / ReLU5 +", temporal="conv3d_pool3d", **TEMPORAL),
    )),
    _table("table5", "Table 5: mean accuracy over splits (Sec. 4.6)", final_rows, (
        ("ours/S:vgg16,T:vgg_m", ">", "late/S:vgg16,T:vgg_m",
         "Ours (3D conv + 3D pooling) beats late fusion of the same two towers, over the splits"),
    )),
    _table("table6", "Table 6: late fusion with IDT features (Sec. 4.6)", idt_rows, (
        ("ours+idt/S:vgg16,T:vgg_m", ">=", "ours/S:vgg16,T:vgg_m", "Late fusion with IDT matches or beats the ConvNet alone"),
        ("ours+idt/S:vgg16,T:vgg_m", ">", "idt", "Late fusion with IDT beats IDT alone"),
    )),
))


def parameter_rows(spec: TableSpec, **kwargs) -> list[ParamRow]:
    """Parameters and weight layers of every fusion row of ``spec``, built from the same definition the
    row trains (:meth:`~.fusion.Variant.net_kwargs`): by default at the paper's size (two VGG-M-2048
    towers, 101 classes); ``kwargs`` (backbone, num_classes, ...) count another size."""
    return count_architectures([(spec.name, v.key, v.net_kwargs()) for v in spec.variants], **kwargs)


def paper_dataset(data: DataBundle) -> str:
    """The data set whose paper numbers are shown beside a run: the run's own (the synthetic set
    stands in for UCF101, on which every table of the paper reports)."""
    return data.dataset if data.dataset in ("ucf101", "hmdb51") else "ucf101"


def tower_jobs(cfg: Profile, spec: TableSpec, splits: tuple) -> list[tuple]:
    """The towers a table needs, as :func:`~.streams.train_towers` jobs (the IDT table's ConvNet included)."""
    variants = spec.variants or ((OURS, OURS_LATE) if spec.rows in (final_rows, idt_rows) else ())
    pairs = {(v.spatial, v.temporal_tower) for v in variants}
    if spec.rows is stream_rows:
        pairs = {("shallow", "shallow"), ("deep", "deep")}
    seed = cfg.seeds[0]
    return [job for k in splits for s, t in sorted(pairs)
            for job in ((backbone_name(cfg, s), "spatial", k, seed), (backbone_name(cfg, t), "temporal", k, seed))]


def run_table(cfg: Profile, data: DataBundle, table: str, *, splits=None) -> TableResult:
    """Run every row of ``table`` for the profile, write ``results/tables/<table>.{csv,md}``."""
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; expected one of {sorted(TABLES)}")
    spec = TABLES[table]
    splits = tuple(splits or (cfg.split,))
    train_towers(cfg, data, tower_jobs(cfg, spec, splits))  # side by side where the profile allows
    runs: dict = {}
    rows = spec.rows(cfg, data, spec, splits, runs=runs)
    frame = tables.build_table(table, rows, profile=cfg.name, dataset=data.dataset,
                               split=",".join(map(str, splits)), paper_dataset=paper_dataset(data),
                               paper_counts=counts(parameter_rows(spec)) if spec.param_counts else None)
    findings = check_claims(spec.claims, {r.key: r for r in rows})
    how = {r.uncertainty for r in rows if r.uncertainty}
    notes = ("Accuracy in percent ± one standard error (" + "; ".join(sorted(how)) + "). "
             f"Verdicts: beyond two standard errors of the difference (paired over the test videos); "
             f"'matches' within a margin of {MARGIN:g} points. "
             f"Backbones: shallow = `{cfg.backbone}`, deep = `{cfg.deep_backbone}`."
             "\n\nFindings:\n" + format_findings(findings))
    paths = tables.write_table(frame, cfg.results_path, title=spec.title, notes=notes)
    paths += (write_findings(cfg.results_path, table, spec.title, findings, profile=cfg.name, dataset=data.dataset),)
    return TableResult(table, frame, findings, tables.to_markdown(frame, title=spec.title, notes=""), paths, runs)


def _check_registry() -> None:
    """Every claim names rows its table runs, and every paper row key exists (checked on import)."""
    for name, spec in TABLES.items():
        paper.paper_rows(name)  # raises if the paper module has no such table
        keys = {v.key for v in spec.variants}
        for c in spec.claims:
            if keys and not {c.a, c.b} <= keys:
                raise ConfigError(f"{name}: claim {c.text!r} names rows {c.a!r}, {c.b!r}; the table runs {sorted(keys)}")


_check_registry()
