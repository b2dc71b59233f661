"""Figures: sample frames and flow, Figure 1 (conv1-conv3 activations), confusion matrices.

Every figure has a fixed size and is saved as a PNG without volatile metadata (no software
version or date), atomically, under ``results/figures/``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from twostream_lib.files import atomic_write

DPI = 100


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


def clip_figure(rgb: np.ndarray, flow: np.ndarray, *, title: str = ""):
    """Frames and their TV-L1 flow as images (Sec. 4.1 data notebook).

    ``rgb``: uint8 [n,H,W,3]; ``flow``: uint8 [n,H,W,2] (u, v as stored: 128 = no motion).
    Rows: RGB, u (horizontal), v (vertical); grey 128 is zero motion, bright is +, dark is -.
    """
    n = len(rgb)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(rgb[i])
        axes[1, i].imshow(flow[i, ..., 0], cmap="gray", vmin=0, vmax=255)
        axes[2, i].imshow(flow[i, ..., 1], cmap="gray", vmin=0, vmax=255)
    for row, name in enumerate(("RGB", "flow u", "flow v")):
        axes[row, 0].set_ylabel(name)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
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
            rgb: np.ndarray, flow_u: np.ndarray, channels: int = 6):
    """Like the paper's Figure 1: conv1-conv3 activations of the spatial and temporal stream.

    For each layer the ``channels`` strongest channels of each stream are shown side by side, so
    that a reader can see appearance (spatial) and motion (temporal) responses at the same places.
    """
    layers = list(spatial_maps)
    fig, axes = plt.subplots(2 * len(layers), channels + 1, figsize=(1.5 * (channels + 1), 3.0 * len(layers)),
                             squeeze=False)
    for li, layer in enumerate(layers):
        for si, (name, maps, image) in enumerate(
            (("spatial", spatial_maps[layer], rgb), ("temporal", temporal_maps[layer], flow_u))
        ):
            row = 2 * li + si
            axes[row, 0].imshow(image, cmap=None if image.ndim == 3 else "gray")
            axes[row, 0].set_ylabel(f"{name}\n{layer}", fontsize=8)
            for ci, ch in enumerate(strongest_channels(maps, channels)):
                axes[row, ci + 1].imshow(maps[ch], cmap="viridis")
                axes[row, ci + 1].set_title(f"ch {int(ch)}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
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
