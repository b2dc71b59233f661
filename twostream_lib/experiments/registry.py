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
from typing import TYPE_CHECKING

import pandas as pd

from twostream_lib import paper, tables
from twostream_lib.config import Profile
from twostream_lib.errors import ConfigError
from twostream_lib.evaluate import accuracy
from twostream_lib.models.params import ParamRow, counts
from twostream_lib.models.params import parameter_rows as count_architectures

from .data import DataBundle
from .findings import (
    MARGIN,
    Claim,
    Finding,
    check_claims,
    format_findings,
    write_findings,
)
from .fusion import Variant, backbone_name
from .rows import (
    OURS,
    OURS_LATE,
    TEMPORAL,
    final_rows,
    fusion_rows,
    idt_rows,
    idt_scores,
    FOLDER_COLUMNS,
    stream_rows,
)
from .streams import train_towers

if TYPE_CHECKING:
    from IPython.display import Markdown

__all__ = ["TableSpec", "TABLES", "TableResult", "run_table", "run_tower_jobs", "train_run_towers", "parameter_rows",
           "OURS", "OURS_LATE", "idt_scores"]

Rows = Callable[[Profile, DataBundle, "TableSpec", tuple], list]


@dataclass(frozen=True)
class TableSpec:
    """One table: title, what it trains, the claims it tests."""

    name: str  # "table1" .. "table6": also the paper's table (twostream_lib.paper) and the output file
    title: str
    rows: Rows  # (cfg, data, spec, splits, *, runs, trained) -> [ResultRow]; fills runs and trained
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
    # the run folder of every model the rows used, one line each (rows.FOLDER_COLUMNS), in the order
    # they ran: a row's heads split by split and seed by seed, as in ``runs``; a late-fusion row's two towers
    folders: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FOLDER_COLUMNS)))

    def show(self) -> Markdown:
        # imported here, not above: IPython stays out of the worker processes (workers.PRELOAD)
        from IPython.display import Markdown

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


def run_tower_jobs(cfg: Profile) -> list[tuple]:
    """Every tower the tables of a run read (Tables 1-4 on ``cfg.split``, Tables 5-6 on
    ``cfg.final_splits``), as :func:`~.streams.train_towers` jobs, the longest first: handed to
    ``cfg.tower_processes`` processes in this order, they finish together (the temporal towers train
    ``epochs_temporal`` passes, the spatial ones ``epochs_stream``)."""
    jobs = [job for spec in TABLES.values()
            for job in tower_jobs(cfg, spec, tuple(cfg.final_splits) if spec.rows in (final_rows, idt_rows)
                                  else (cfg.split,))]
    passes = {"spatial": cfg.epochs_stream or 0, "temporal": cfg.epochs_temporal or cfg.epochs_stream or 0}
    deep = {backbone_name(cfg, "deep")}
    return sorted(dict.fromkeys(jobs), key=lambda j: (-passes[j[1]], j[0] not in deep, j[2]))


def train_run_towers(cfg: Profile, data: DataBundle) -> None:
    """Train every tower of the run up front where towers train side by side (``cfg.tower_processes`` >
    1, the demo): one pool kept busy until the last tower, instead of a pool per notebook that waits
    for its longest tower. Elsewhere each table trains its own towers when it runs."""
    if cfg.tower_processes > 1:
        train_towers(cfg, data, run_tower_jobs(cfg))


def run_table(cfg: Profile, data: DataBundle, table: str, *, splits=None) -> TableResult:
    """Run every row of ``table`` for the profile, write ``results/tables/<table>.{csv,md}``."""
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; expected one of {sorted(TABLES)}")
    spec = TABLES[table]
    splits = tuple(splits or (cfg.split,))
    train_towers(cfg, data, tower_jobs(cfg, spec, splits))  # side by side where the profile allows
    runs, trained = {}, []
    rows = spec.rows(cfg, data, spec, splits, runs=runs, trained=trained)
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
    return TableResult(table, frame, findings, tables.to_markdown(frame, title=spec.title, notes=""), paths, runs,
                       pd.DataFrame(trained, columns=list(FOLDER_COLUMNS)))


def _check_registry() -> None:
    """Every claim names rows its table runs, and every paper row key exists (checked on import)."""
    for name, spec in TABLES.items():
        paper.paper_rows(name)  # raises if the paper module has no such table
        keys = {v.key for v in spec.variants}
        for c in spec.claims:
            if keys and not {c.a, c.b} <= keys:
                raise ConfigError(f"{name}: claim {c.text!r} names rows {c.a!r}, {c.b!r}; the table runs {sorted(keys)}")


_check_registry()
