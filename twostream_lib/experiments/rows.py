"""The rows of the tables: what each row trains and tests, and what it can reach on the data.

The row builders (:func:`fusion_rows`, :func:`stream_rows`, :func:`final_rows`, :func:`idt_rows`) run a
:class:`~.registry.TableSpec`'s rows for a profile and return :class:`~twostream_lib.tables.ResultRow` s
with their test scores; :func:`reach` adds the chance level, the data card's ceiling of the row's
model family and its accuracy per class family (synthetic data). Each builder also lists, in ``trained``,
the run folder of every model its rows used, as it runs them (:data:`FOLDER_COLUMNS`; the notebooks'
training curves read their ``metrics.csv``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from twostream_lib.config import Profile
from twostream_lib.data import synthetic
from twostream_lib.evaluate import load_scores, save_scores
from twostream_lib.files import exclusive
from twostream_lib.idt import idt_scores as compute_idt_scores
from twostream_lib.idt import late_fuse_idt
from twostream_lib.models.backbones import FC_LAYERS

from .cache import run_dir
from .data import DataBundle, limit_videos, prepare_data, setup
from .findings import accuracy_row
from .fusion import Variant, backbone_name, fusion_dir, run_fusion, train_heads
from .streams import late_fusion, stream_dir, stream_scores, train_streams

if TYPE_CHECKING:
    from .registry import TableSpec

__all__ = ["OURS", "OURS_LATE", "TEMPORAL", "model_family", "reach", "family_row", "fusion_rows", "stream_rows",
           "final_rows", "idt_rows", "idt_scores", "FOLDER_COLUMNS"]


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

#: The columns of a builder's ``trained`` lines: a row's key, the model's role ("fusion head", "spatial
#: tower", "temporal tower"), its backbone(s), split, seed and run folder (``metrics.csv``, ``config.json``).
FOLDER_COLUMNS = ("key", "role", "backbone", "split", "seed", "folder")


def _towers_used(cfg: Profile, key: str, spatial: str, temporal: str, split: int,
                 which=("spatial", "temporal")) -> list[tuple]:
    """``trained`` lines of the towers a row reads (the profile's first seed, as ``train_stream``)."""
    return [(key, f"{stream} tower", bb, split, cfg.seeds[0], stream_dir(cfg, bb, stream, split, cfg.seeds[0]))
            for stream, bb in (("spatial", spatial), ("temporal", temporal)) if stream in which]


def _head_used(cfg: Profile, key: str, v: Variant, split: int, seed: int) -> tuple:
    """The ``trained`` line of one fusion head a row tested."""
    return (key, "fusion head", f"{backbone_name(cfg, v.spatial)}+{backbone_name(cfg, v.temporal_tower)}",
            split, seed, fusion_dir(cfg, v, split, seed))


def _used(cfg: Profile, key: str, v: Variant, split: int, seed: int) -> list[tuple]:
    """What one run of a fusion row used: its head, or, for late fusion, the two towers it averages."""
    if v.late:
        return _towers_used(cfg, key, backbone_name(cfg, v.spatial), backbone_name(cfg, v.temporal_tower), split)
    return [_head_used(cfg, key, v, split, seed)]



def ran_label(label: str, cfg: Profile, variant: Variant) -> str:
    """What a fusion row actually ran: its label and the two towers' backbones."""
    return f"{label} (S: {backbone_name(cfg, variant.spatial)}, T: {backbone_name(cfg, variant.temporal_tower)})"


def fusion_rows(cfg: Profile, data: DataBundle, spec: TableSpec, splits: tuple, *, runs: dict,
                trained: list) -> list:
    """One row per variant: its heads trained with every seed on every split (late fusion: one run)."""
    rows = []
    layers = tuple(v.layers[0] for v in spec.variants if not v.late and v.clip_length(cfg) == 1)
    train_heads(cfg, data, [(v, split, seed, None) for v in spec.variants for split in splits for seed in cfg.seeds],
                share_layers=layers)  # side by side where the profile allows; run_fusion then reads their scores
    for v in spec.variants:
        scores, params = [], None
        for split in splits:
            for seed in (cfg.seeds if not v.late else cfg.seeds[:1]):
                s, model = run_fusion(cfg, data, v, split=split, seed=seed, share_layers=layers)
                scores.append(s)
                trained.extend(_used(cfg, v.key, v, split, seed))
                if model is not None:
                    params = sum(p.numel() for p in model.parameters()) / 1e6
        runs[v.key] = scores
        rows.append(family_row(v.key, ran_label(v.label, cfg, v), scores, data, model_family(v),
                               extra={"demo_params_m": params}))
    return rows


def stream_rows(cfg: Profile, data: DataBundle, spec: TableSpec, splits: tuple, *, runs: dict,
                trained: list) -> list:
    """Table 3: each stream and their late fusion, for the shallow and the deep backbone."""
    rows = []
    for which, paper_name in (("shallow", "vgg_m_2048"), ("deep", "vgg16")):
        bb = backbone_name(cfg, which)
        per_split = [train_streams(cfg, data, backbone=bb, split=k) for k in splits]
        for stream in ("spatial", "temporal"):
            key = f"{stream}/{paper_name}"
            runs[key] = [stream_scores(cfg, data, st, stream) for st in per_split]
            trained.extend(line for st in per_split for line in _towers_used(cfg, key, bb, bb, st.split, (stream,)))
            rows.append(family_row(key, f"{stream.title()}, {bb}", runs[key], data, model_family(stream=stream)))
        key = f"late/{paper_name}"
        runs[key] = [late_fusion(cfg, data, st, st) for st in per_split]
        trained.extend(line for st in per_split for line in _towers_used(cfg, key, bb, bb, st.split))
        rows.append(family_row(key, f"Late fusion, {bb}", runs[key], data, model_family(stream="late")))
    return rows


TEMPORAL = dict(truncate=False, spatial="deep", temporal_tower="shallow", T=-1)  # T=-1: the profile's T
OURS = Variant("ours/S:vgg16,T:vgg_m", "Ours, 3D conv + 3D pooling", temporal="conv3d_pool3d", **TEMPORAL)
OURS_LATE = Variant("late/S:vgg16,T:vgg_m", "Late fusion of the same towers", fusion="softmax", layers=(),
                    **TEMPORAL)


def final_seeds(cfg: Profile, variant: Variant, splits: tuple) -> tuple[int, ...]:
    """The head seeds Tables 5-6 test per split: over several splits one (the splits' spread enters the
    standard error), on one split all of them; late fusion trains nothing, so one."""
    return cfg.seeds if len(splits) == 1 and not variant.late else cfg.seeds[:1]


def final_rows(cfg: Profile, data: DataBundle, spec: TableSpec, splits: tuple, *, runs: dict,
               trained: list) -> list:
    """Table 5: the proposed architecture (Sec. 3.4) vs late fusion of the same towers, per split,
    tested with the final protocol (Sec. 4.6); mean over the splits."""
    rows = []
    train_heads(cfg, data, [(OURS, k, seed, cfg.final_test_clips) for k in splits for seed in final_seeds(cfg, OURS, splits)])
    for v in (OURS_LATE, OURS):
        # one head per split (their spread enters the standard error); on one split, every seed's
        runs[v.key] = []
        for k in splits:
            for seed in final_seeds(cfg, v, splits):
                runs[v.key].append(run_fusion(cfg, data, v, split=k, seed=seed, clips=cfg.final_test_clips)[0])
                trained.extend(_used(cfg, v.key, v, k, seed))
        rows.append(family_row(v.key, ran_label(v.label, cfg, v), runs[v.key], data, model_family(v)))
    return rows


def idt_scores(cfg: Profile, data: DataBundle, split: int):
    """Fisher-vector-encoded IDT + linear SVM scores of the test videos (Table 6), cached on disk: the
    descriptors one file per video, the scores one file per split and seed (``scores-split<k>-seed<s>.npz``
    in the IDT run folder, keyed by the settings that make them), so that what ``run_all`` computed ahead
    (:func:`idt_ahead`) is read, not computed again. Descriptors are extracted by the profile's ``workers``
    processes; where data loading runs in the main process (``workers=0``, the demo), by ``threads``
    processes (1: in this process)."""
    path = run_dir(cfg, "idt") / f"scores-split{split}-seed{cfg.seeds[0]}.npz"
    # one process computes a split's scores, another asking meanwhile waits and reads them: 07_table6
    # waits so for run_all's job computing them ahead (runner.BACKGROUND) instead of starting again
    with exclusive(path.with_suffix(".lock")):
        if path.is_file():
            return load_scores(path)
        s = data.split(split)
        scores = compute_idt_scores(data.store, limit_videos(s.train, cfg), limit_videos(s.test, cfg),
                                    cache_dir=run_dir(cfg, "idt"), num_classes=len(s.classes),
                                    n_components=cfg.idt_components, C=cfg.idt_C,
                                    workers=max(1, cfg.workers or cfg.threads or 1), seed=cfg.seeds[0],
                                    progress=False)
        save_scores(scores, path)
    return scores


def idt_ahead(parameters: dict) -> None:
    """What ``run_all`` computes ahead for ``07_table6`` (``runner.BACKGROUND``), from that notebook's
    parameters: the IDT scores of every split it averages over (:func:`idt_scores`: descriptors, Fisher
    encoder, SVM), with the profile, data set and results folder its own first cell sets up. Stopped
    before the end, it leaves the videos whose descriptors it extracted, and no scores."""
    cfg = setup(parameters.get("profile", "demo"), **{k: parameters.get(k) for k in
                                                       ("device", "dataset", "synthetic_seed", "results_dir")})
    data = prepare_data(cfg)
    for split in parameters.get("splits") or cfg.final_splits:
        idt_scores(cfg, data, split)


def idt_rows(cfg: Profile, data: DataBundle, spec: TableSpec, splits: tuple, *, runs: dict,
             trained: list) -> list:
    """Table 6: IDT alone, the ConvNet alone, and their late fusion: SVM scores averaged with the
    ConvNet's pre-softmax predictions, each standardised per video first (Sec. 4.6)."""
    idt, convnet, fused = [], [], []
    for k in splits:
        i = idt_scores(cfg, data, k)
        for seed in final_seeds(cfg, OURS, splits):
            c = run_fusion(cfg, data, OURS, split=k, seed=seed, clips=cfg.final_test_clips)[0]
            idt.append(i)
            convnet.append(c)
            fused.append(late_fuse_idt(c, i))
            trained.extend(_head_used(cfg, key, OURS, k, seed) for key in (OURS.key, "ours+idt/S:vgg16,T:vgg_m"))
    runs.update({"idt": idt, OURS.key: convnet, "ours+idt/S:vgg16,T:vgg_m": fused})
    # IDT's descriptors (HOG, HOF, MBH) see grey frames, in which every object has one luminance, pooled
    # without order: shapes without their colours, and the set of motions
    return [family_row("idt", "IDT (FV + linear SVM)", idt, data, synthetic.IDT_FAMILY),
            family_row(OURS.key, ran_label(OURS.label, cfg, OURS), convnet, data, synthetic.CONV3D_FAMILY),
            family_row("ours+idt/S:vgg16,T:vgg_m", ran_label("Ours + IDT", cfg, OURS), fused, data,
                       synthetic.CONV3D_FAMILY)]
