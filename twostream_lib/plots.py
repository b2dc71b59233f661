"""Figures: sample frames and flow, Figure 1 (conv1-conv3 activations), confusion matrices, and the
plots of the lessons in the notebooks (toy fusion maps, training curves, accuracy per class family,
per-seed accuracies).

Every figure has a fixed size and is saved as a PNG without volatile metadata (no software
version or date), atomically, under ``results/figures/`` (:func:`save_figure`), or shown in a notebook
as the same PNG (:func:`show`).

Optical flow is drawn in the colour-wheel coding of the Middlebury benchmark (Baker et al., "A
Database and Evaluation Methodology for Optical Flow", IJCV 2011; the same wheel as
``torchvision.utils.flow_to_image``): the hue gives the direction of motion, the saturation its
magnitude, white is no motion (:func:`flow_to_colour`, legend :func:`colour_wheel`).

Figure functions return a :class:`matplotlib.figure.Figure`; seaborn is imported where a figure uses
it, so that importing the library stays light.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator

from twostream_lib.files import atomic_write

DPI = 100

#: Smallest displacement (px) drawn fully saturated in the figures of stored flow: a clip at rest (or
#: with sub-pixel noise only) stays white instead of showing its noise at full colour.
MIN_FLOW_SCALE = 1.0

#: Accuracy columns of a table's frame per class family (``experiments.rows.reach``): ``family:<name>`` and
#: ``family_ceiling:<name>``.
FAMILY_PREFIX, CEILING_PREFIX = "family:", "family_ceiling:"


def save_figure(fig, path: str | Path):
    """Save ``fig`` as PNG at a fixed DPI with no volatile metadata (write, then rename), close it,
    and return the saved image for display: a notebook shows exactly the file in ``results/``."""
    from IPython.display import Image

    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None}))
    finally:
        plt.close(fig)
    return Image(filename=str(path))


def show(fig):
    """The figure as a PNG for a notebook (the same fixed DPI and metadata as :func:`save_figure`), the
    figure closed: one image per call, whatever the notebook's matplotlib backend does with open figures."""
    from IPython.display import Image

    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=DPI, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return Image(data=buf.getvalue(), format="png")


# ---- optical flow in colour ---------------------------------------------------------------------


def _wheel() -> np.ndarray:
    """The Middlebury colour wheel: 55 RGB colours (0..1) around the hue circle, red first
    (segments red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11, blue-magenta 13, magenta-red 6)."""
    segments = ((15, (1, 0, 0), (1, 1, 0)), (6, (1, 1, 0), (0, 1, 0)), (4, (0, 1, 0), (0, 1, 1)),
                (11, (0, 1, 1), (0, 0, 1)), (13, (0, 0, 1), (1, 0, 1)), (6, (1, 0, 1), (1, 0, 0)))
    rows = []
    for n, start, end in segments:
        f = np.floor(255 * np.arange(n) / n)[:, None] / 255
        rows.append(np.asarray(start, float) * (1 - f) + np.asarray(end, float) * f)
    return np.concatenate(rows)


_WHEEL = _wheel()


def flow_to_colour(u, v, *, max_magnitude: float | None = None) -> np.ndarray:
    """Optical flow ``(u, v)`` [H, W] (pixels; u to the right, v downwards) as an RGB image uint8 [H, W, 3]
    in the Middlebury colour-wheel coding: the hue is the direction (right red, down yellow, left cyan,
    up blue-violet), the saturation the magnitude relative to ``max_magnitude``, white no motion.

    ``max_magnitude``: the displacement drawn fully saturated; None: the largest one in ``(u, v)``
    (pass one value for several frames to compare them). Larger displacements are drawn darker.
    """
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    if u.shape != v.shape:
        raise ValueError(f"flow_to_colour: u and v must have the same shape, got {u.shape} and {v.shape}")
    u, v = np.nan_to_num(u), np.nan_to_num(v)
    radius = np.hypot(u, v)
    scale = float(radius.max(initial=0.0)) if max_magnitude is None else float(max_magnitude)
    if not scale > 0:
        scale = 1.0  # no motion anywhere: every pixel is white
    rad = radius / scale
    n = len(_WHEEL)
    fk = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(int) % n
    k1 = (k0 + 1) % n
    f = (fk - np.floor(fk))[..., None]
    col = (1 - f) * _WHEEL[k0] + f * _WHEEL[k1]
    inside = (rad <= 1)[..., None]
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)
    return np.floor(255 * np.clip(col, 0, 1)).astype(np.uint8)


def colour_wheel(size: int = 65) -> np.ndarray:
    """The legend of :func:`flow_to_colour`: uint8 [size, size, 3], each pixel coloured as a displacement
    from the centre to it (x right, y down), fully saturated at the rim, white outside the disc."""
    r = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size] - r
    img = flow_to_colour(x, y, max_magnitude=r)
    img[np.hypot(x, y) > r] = 255
    return img


def draw_colour_wheel(ax, *, size: int = 65, title: str = "flow colour") -> None:
    """:func:`colour_wheel` on ``ax`` with the axes of motion marked."""
    ax.imshow(colour_wheel(size))
    c = (size - 1) / 2
    for dx, dy, text in ((1, 0, "+u"), (0, 1, "+v"), (-1, 0, "-u"), (0, -1, "-v")):
        ax.text(c + dx * 0.62 * c, c + dy * 0.62 * c, text, ha="center", va="center", fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def stored_flow(flow: np.ndarray) -> np.ndarray:
    """Flow as stored (uint8, linear over +-``FLOW_BOUND`` px) -> float32 pixels, with 128 read as no
    motion (as the networks read it: value - 128), so that a still pixel is exactly zero."""
    from twostream_lib.data.prepare import FLOW_BOUND

    return (np.asarray(flow, np.float32) - np.float32(128.0)) * np.float32(2 * FLOW_BOUND / 255.0)


def _flow_scale(px: np.ndarray) -> float:
    """The displacement drawn fully saturated: the largest of ``px`` [..., 2], at least MIN_FLOW_SCALE."""
    return max(float(np.hypot(px[..., 0], px[..., 1]).max(initial=0.0)), MIN_FLOW_SCALE)


def clip_figure(rgb: np.ndarray, flow: np.ndarray, *, title: str = ""):
    """Frames and their TV-L1 flow as images (Sec. 4.1 data notebook).

    ``rgb``: uint8 [n,H,W,3]; ``flow``: uint8 [n,H,W,2] (u, v as stored: 128 = no motion).
    Rows: RGB, u (horizontal), v (vertical) in grey (128 is zero motion, bright is +, dark is -), and the
    flow in the colour-wheel coding (:func:`flow_to_colour`, one scale for all frames: the largest
    displacement, at least MIN_FLOW_SCALE), with its legend.
    """
    n = len(rgb)
    fig, axes = plt.subplots(4, n, figsize=(1.6 * n + 1.4, 6.6), squeeze=False)
    px = stored_flow(flow)
    top = _flow_scale(px)
    for i in range(n):
        axes[0, i].imshow(rgb[i])
        axes[1, i].imshow(flow[i, ..., 0], cmap="gray", vmin=0, vmax=255)
        axes[2, i].imshow(flow[i, ..., 1], cmap="gray", vmin=0, vmax=255)
        axes[3, i].imshow(flow_to_colour(px[i, ..., 0], px[i, ..., 1], max_magnitude=top))
    for row, name in enumerate(("RGB", "flow u", "flow v", "flow (colour)")):
        axes[row, 0].set_ylabel(name)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
    box = axes[3, -1].get_position()
    legend = fig.add_axes((box.x1 + 0.2 / fig.get_figwidth(), box.y0, box.width, box.height))
    draw_colour_wheel(legend, title=f"saturated: {top:.1f} px")
    return fig


@torch.no_grad()
def activation_maps(backbone, x: torch.Tensor, layers=("relu1", "relu2", "relu3")) -> dict[str, np.ndarray]:
    """Feature maps of one input [1,C,H,W] at each named layer, as numpy [channels,h,w]."""
    backbone.eval()
    return {name: backbone(x, upto=name)[0].float().cpu().numpy() for name in layers}


def strongest_channels(maps: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` channels with the largest mean activation (most informative to show)."""
    return np.argsort(-maps.reshape(len(maps), -1).mean(1), kind="stable")[:k]


def figure1(spatial_maps: dict[str, np.ndarray], temporal_maps: dict[str, np.ndarray], *,
            rgb: np.ndarray, flow_u: np.ndarray, flow_v: np.ndarray | None = None, channels: int = 6,
            title: str = ""):
    """Like the paper's Figure 1: conv1-conv3 activations of the spatial and temporal stream.

    For each layer the ``channels`` strongest channels of each stream are shown side by side, so
    that a reader can see appearance (spatial) and motion (temporal) responses at the same places.
    ``flow_u``, ``flow_v``: the flow as stored (uint8, 128 = no motion). With ``flow_v``, a first row
    shows the inputs (RGB, grey u and v, the flow in the colour-wheel coding and its legend) and the
    temporal rows start with the colour-coded flow; without it, they start with u in grey.
    """
    layers = list(spatial_maps)
    header = flow_v is not None
    rows = 2 * len(layers) + header
    fig, axes = plt.subplots(rows, channels + 1, figsize=(1.5 * (channels + 1), 3.0 * len(layers) + 1.5 * header),
                             squeeze=False)
    flow_image = flow_u
    if header:
        px = stored_flow(np.stack([flow_u, flow_v], -1))
        top = _flow_scale(px)
        flow_image = flow_to_colour(px[..., 0], px[..., 1], max_magnitude=top)
        panels = ((rgb, None, "RGB"), (flow_u, "gray", "flow u"), (flow_v, "gray", "flow v"),
                  (flow_image, None, "flow (colour)"))
        for ax, (image, cmap, name) in zip(axes[0], panels):
            ax.imshow(image, **({"cmap": cmap, "vmin": 0, "vmax": 255} if cmap else {}))
            ax.set_title(name, fontsize=8)
        if channels + 1 > len(panels):
            draw_colour_wheel(axes[0, len(panels)], title=f"saturated: {top:.1f} px")
        for ax in axes[0, len(panels) + 1:]:
            ax.axis("off")
    for li, layer in enumerate(layers):
        for si, (name, maps, image) in enumerate(
            (("spatial", spatial_maps[layer], rgb), ("temporal", temporal_maps[layer], flow_image))
        ):
            row = 2 * li + si + header
            axes[row, 0].imshow(image, cmap=None if image.ndim == 3 else "gray")
            axes[row, 0].set_ylabel(f"{name}\n{layer}", fontsize=8)
            for ci, ch in enumerate(strongest_channels(maps, channels)):
                axes[row, ci + 1].imshow(maps[ch], cmap="viridis")
                axes[row, ci + 1].set_title(f"ch {int(ch)}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: np.ndarray, classes, *, title: str = ""):
    """Row-normalised confusion matrix (true class per row)."""
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = 2.5 + 0.35 * len(classes)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ---- the lessons: toy tensors ---------------------------------------------------------------------


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def maps_figure(maps: Mapping[str, object], *, annotate: bool = True, shared_scale: bool = True,
                cmap: str = "viridis", fmt: str = ".1f", xlabel: str = "", ylabel: str = "", title: str = ""):
    """Small maps side by side as heatmaps, e.g. the toy tensors of the approach notebook.

    ``maps``: name -> a 2-D map [H, W] (one panel) or a 3-D one [C, H, W] (one panel per channel, titled
    ``name[c]``); tensors or arrays, a leading batch dimension of 1 is dropped. ``annotate`` writes each
    value in its cell; ``shared_scale``: one colour scale for all panels (else one per panel).
    """
    import seaborn as sns

    panels = []
    for name, m in maps.items():
        a = _numpy(m)
        while a.ndim > 3 and a.shape[0] == 1:
            a = a[0]
        if a.ndim == 1:
            a = a[None]
        if a.ndim == 2:
            panels.append((name, a))
        elif a.ndim == 3:
            panels += [(f"{name}[{c}]", a[c]) for c in range(len(a))] if len(a) > 1 else [(name, a[0])]
        else:
            raise ValueError(f"maps_figure: {name!r} has shape {a.shape}; expected [H, W] or [C, H, W]")
    if not panels:
        raise ValueError("maps_figure: no maps given")
    lo = min(float(a.min()) for _, a in panels)
    hi = max(float(a.max()) for _, a in panels)
    width = sum(max(1.2, 0.42 * a.shape[1] + 0.5) for _, a in panels)
    height = max(1.6, 0.42 * max(a.shape[0] for _, a in panels) + 0.9)
    fig, axes = plt.subplots(1, len(panels), figsize=(min(width, 16.0), height), squeeze=False,
                             gridspec_kw={"width_ratios": [a.shape[1] for _, a in panels]})
    for ax, (name, a) in zip(axes[0], panels):
        scale = {"vmin": lo, "vmax": hi} if shared_scale else {}
        sns.heatmap(a, ax=ax, annot=annotate and a.size <= 100, fmt=fmt, cmap=cmap, cbar=False, square=True,
                    linewidths=0.5 if annotate else 0, annot_kws={"fontsize": 7}, **scale)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel(ylabel)
    for ax in axes[0]:
        ax.set_xlabel(xlabel, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def probabilities_figure(probs: Mapping[str, np.ndarray], classes: Sequence[str], *, true_class: str | None = None,
                         title: str = ""):
    """Class probabilities of one clip under several models (e.g. the spatial stream, the temporal stream
    and their average, late fusion), one group of bars per class; ``true_class`` is marked."""
    import seaborn as sns

    long = pd.DataFrame([{"class": c, "model": name, "probability": float(p[i])}
                         for name, p in probs.items() for i, c in enumerate(classes)])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(classes) + 1.5), 3.4))
    sns.barplot(long, x="class", y="probability", hue="model", ax=ax)
    ax.set_xticks(range(len(classes)), [f"{c} (true)" if c == true_class else c for c in classes],
                  rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# ---- the lessons: a table's runs ------------------------------------------------------------------


def read_metrics(folders: pd.DataFrame) -> pd.DataFrame:
    """The ``metrics.csv`` (one line per epoch: ``epoch``, ``train_loss``, ``train_acc``, ...) of every run
    folder in ``folders`` (a frame with a ``folder`` column, e.g. ``TableResult.folders``), each line
    with its folder's other columns; folders without ``metrics.csv`` are left out."""
    parts = []
    for line in folders.to_dict("records"):
        path = Path(line["folder"]) / "metrics.csv"
        if path.exists():
            m = pd.read_csv(path)
            parts.append(m.assign(**{k: v for k, v in line.items() if k != "folder"}))
    if not parts:
        return pd.DataFrame(columns=["epoch", "train_loss", "train_acc", *[c for c in folders if c != "folder"]])
    return pd.concat(parts, ignore_index=True)


def training_curves(metrics: pd.DataFrame, *, hue: str = "key", ceilings: Mapping[str, float] | None = None,
                    title: str = ""):
    """Training loss and training accuracy per epoch (from :func:`read_metrics`), one colour per ``hue``
    value; where a value has several runs (seeds, splits) the line is their mean and the band their range.
    There is no validation set: the test accuracy is the table's. ``ceilings``: name -> accuracy (%)
    drawn as dotted lines on the accuracy panel (e.g. the data card's ceiling of a model family)."""
    import seaborn as sns

    m = metrics.assign(train_acc_pct=100.0 * metrics["train_acc"].astype(float))
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.4))
    for ax, (col, name) in zip(axes, (("train_loss", "training loss"), ("train_acc_pct", "training accuracy (%)"))):
        sns.lineplot(m, x="epoch", y=col, hue=hue, errorbar=("pi", 100), ax=ax, legend=ax is axes[-1])
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for name, value in (ceilings or {}).items():
        axes[1].axhline(value, ls=":", color="black", lw=1)
        axes[1].annotate(name, (0.01, value), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
    if axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, title=hue)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def family_frame(frame: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """A table's accuracy per class family (``family:<name>``) beside that family's ceiling for the row's
    model family (``family_ceiling:<name>``), one line per (row, class family): ``key``, ``ran``,
    ``model family``, ``class family``, ``accuracy``, ``ceiling`` (percent). ``keys``: these rows in this order."""
    rows = frame[frame["ours_acc"].notna()] if "ours_acc" in frame else frame
    if keys is not None:
        rows = rows.set_index("key").loc[list(keys)].reset_index()
    families = [c[len(FAMILY_PREFIX):] for c in frame.columns if c.startswith(FAMILY_PREFIX)]
    if not families:  # a real data set: no class families, the accuracy over all classes
        return pd.DataFrame([{"key": r["key"], "ran": r.get("ran", r["key"]), "model family": r.get("family", ""),
                              "class family": "all classes", "accuracy": float(r["ours_acc"]),
                              "ceiling": float(r.get("ceiling", np.nan))} for r in rows.to_dict("records")],
                            columns=["key", "ran", "model family", "class family", "accuracy", "ceiling"])
    return pd.DataFrame([{"key": r["key"], "ran": r.get("ran", r["key"]), "model family": r.get("family", ""),
                          "class family": f, "accuracy": float(r[FAMILY_PREFIX + f]),
                          "ceiling": float(r[CEILING_PREFIX + f])}
                         for r in rows.to_dict("records") for f in families],
                        columns=["key", "ran", "model family", "class family", "accuracy", "ceiling"])


def family_figure(frame: pd.DataFrame, keys: Sequence[str] | None = None, *, title: str = ""):
    """Accuracy per class family of the rows ``keys`` of a table (default: every row that ran), one bar
    per row, with the ceiling of the row's model family for that class family as a black tick above
    each bar and chance as a dashed line."""
    import seaborn as sns

    long = family_frame(frame, keys)
    if long.empty:
        raise ValueError("family_figure: no rows with an accuracy to show")
    order = list(dict.fromkeys(long["key"]))
    families = list(dict.fromkeys(long["class family"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.3 * len(order) * len(families)), 3.6))
    sns.barplot(long, x="class family", y="accuracy", hue="key", hue_order=order, order=families, ax=ax)
    ceiling = long.set_index(["key", "class family"])["ceiling"]
    for key, bars in zip(order, ax.containers):
        for fam, bar in zip(families, bars):
            if np.isfinite(ceiling[(key, fam)]):
                ax.hlines(ceiling[(key, fam)], bar.get_x(), bar.get_x() + bar.get_width(), colors="black", lw=2)
    if "chance" in frame and frame["chance"].notna().any():
        ax.axhline(float(frame["chance"].dropna().iloc[0]), ls="--", color="grey", lw=1, label="chance")
    ax.plot([], [], color="black", lw=2, label="ceiling (data card)")
    return _finish_accuracy_axes(fig, ax, title)


def _finish_accuracy_axes(fig, ax, title: str):
    """The common frame of the accuracy plots: 0-105 %, the legend outside the axes, a small title."""
    ax.set_ylim(0, 105)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def accuracy_figure(frame: pd.DataFrame, keys: Sequence[str] | None = None, *, title: str = ""):
    """Each row's accuracy with its 95% interval (two standard errors: test sample and training seeds),
    the ceiling of its model family (black tick) and chance (dashed): how far a row is from what its
    cues allow, and whether two rows can be told apart at all."""
    rows = frame[frame["ours_acc"].notna()]
    if keys is not None:
        rows = rows.set_index("key").loc[list(keys)].reset_index()
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2.5), 3.6))
    ax.errorbar(x, rows["ours_acc"], yerr=2 * rows["ours_stderr"].fillna(0), fmt="o", capsize=4,
                label="ours ± 2 standard errors")
    if "ceiling" in rows and rows["ceiling"].notna().any():
        ax.hlines(rows["ceiling"], x - 0.3, x + 0.3, colors="black", lw=2, label="ceiling of the model family")
    if "chance" in rows and rows["chance"].notna().any():
        ax.axhline(float(rows["chance"].dropna().iloc[0]), ls="--", color="grey", lw=1, label="chance")
    ax.set_xticks(x, rows["key"], rotation=25, ha="right", fontsize=8)
    return _finish_accuracy_axes(fig, ax, title)


def run_accuracy_figure(accuracies: pd.DataFrame, keys: Sequence[str] | None = None, *, hue: str | None = None,
                        title: str = ""):
    """Accuracy of every run of the rows ``keys`` (``TableResult.accuracies``: one dot per seed or split)
    and their mean (black bar), so that the spread behind a standard error can be seen."""
    import seaborn as sns

    a = accuracies if keys is None else accuracies[accuracies["key"].isin(keys)]
    order = list(keys) if keys is not None else list(dict.fromkeys(a["key"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(order) + 2.0), 3.4))
    sns.stripplot(a, x="key", y="accuracy", order=order, hue=hue, size=8, jitter=0.08, ax=ax,
                  palette="deep" if hue else None, color=None if hue else "C0")
    means = a.groupby("key")["accuracy"].mean()
    ax.hlines([means[k] for k in order], np.arange(len(order)) - 0.3, np.arange(len(order)) + 0.3, colors="black")
    ax.set_xticks(range(len(order)), order, rotation=20, ha="right", fontsize=8)
    ax.set_xlabel("")
    ax.set_ylabel("test accuracy (%)")
    if hue:
        ax.legend(title=hue, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def family_accuracy(scores, classes: Sequence[str]) -> dict[str, float]:
    """Accuracy (percent) of one :class:`~twostream_lib.evaluate.VideoScores` over all its videos
    (``"all"``) and per class family of the synthetic set (real data sets: ``"all"`` only)."""
    from twostream_lib.data.synthetic import class_families

    ok = scores.predictions() == scores.labels
    out = {"all": 100.0 * float(ok.mean())}
    families = class_families(classes)
    for fam in dict.fromkeys(families[c] for c in classes if c in families):
        members = [i for i, c in enumerate(classes) if families.get(c) == fam]
        mask = np.isin(scores.labels, members)
        if mask.any():
            out[fam] = 100.0 * float(ok[mask].mean())
    return out


def sweep_figure(sweep: pd.DataFrame, *, x: str = "w", xlabel: str = "", title: str = ""):
    """Accuracy against a swept value ``x`` (e.g. the weight of late fusion), one line for ``"all"`` and
    one per class family (the columns of :func:`family_accuracy`), mean over runs with their range."""
    import seaborn as sns

    cols = [c for c in sweep.columns if c not in (x, "run")]
    long = sweep.melt(id_vars=[x], value_vars=cols, var_name="classes", value_name="accuracy")
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    sns.lineplot(long, x=x, y="accuracy", hue="classes", style="classes", markers=True, errorbar=("pi", 100), ax=ax)
    ax.set_ylim(0, 105)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("test accuracy (%)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_grid(runs: Mapping[str, Sequence], classes: Sequence[str], *, title: str = ""):
    """Row-normalised confusion matrices (true class per row), one panel per entry of ``runs`` (name ->
    VideoScores of its seeds or splits, summed), classes grouped by class family (synthetic set), with a
    shared colour scale."""
    import seaborn as sns

    from twostream_lib.data.synthetic import class_families
    from twostream_lib.evaluate import confusion

    families = class_families(classes)
    order = sorted(range(len(classes)), key=lambda i: (families.get(classes[i], ""), classes[i]))
    names = [classes[i] for i in order]
    bounds = [k for k in range(1, len(order)) if families.get(names[k]) != families.get(names[k - 1])]
    n = len(runs)
    labelled = len(classes) <= 30  # UCF101's 101 classes: no tick labels
    side = min(1.0 + 0.2 * len(classes), 6.0)  # inches per (square) panel
    left, bottom, gap, right, top = (1.6, 1.6, 0.15, 0.9, 0.45) if labelled else (0.5, 0.6, 0.15, 0.9, 0.45)
    width, height = left + n * side + (n - 1) * gap + right, bottom + side + top
    fig, axes = plt.subplots(1, n, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap / side)
    cbar_ax = fig.add_axes((1 - 0.7 / width, bottom / height, 0.12 / width, side / height))
    for k, (ax, (name, scores)) in enumerate(zip(axes[0], runs.items())):
        m = sum(confusion(s, len(classes)) for s in scores).astype(float)
        m = m[np.ix_(order, order)]
        rows = m.sum(1, keepdims=True)
        norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        sns.heatmap(norm, ax=ax, vmin=0, vmax=1, cmap="Blues", square=True, cbar=k == n - 1, cbar_ax=cbar_ax,
                    xticklabels=names if labelled else False, yticklabels=names if labelled and k == 0 else False)
        for b in bounds:
            ax.axhline(b, color="grey", lw=0.6)
            ax.axvline(b, color="grey", lw=0.6)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_title(name, fontsize=8)
    axes[0, 0].set_ylabel("true", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def family_confusion(runs: Sequence, classes: Sequence[str]) -> pd.DataFrame:
    """Where the videos of each class family go: percent of the test videos of a true class family
    (rows) predicted as a class of each family (columns), over all ``runs`` (VideoScores) of a row.
    Classes outside the synthetic set's families count as "other"."""
    from twostream_lib.data.synthetic import class_families

    families = class_families(classes)
    names = [families.get(c, "other") for c in classes]
    pairs = pd.DataFrame([{"true family": names[t], "predicted family": names[p]}
                          for s in runs for t, p in zip(s.labels, s.predictions())])
    table = pd.crosstab(pairs["true family"], pairs["predicted family"], normalize="index") * 100
    return table.round(1)
