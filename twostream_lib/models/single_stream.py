"""Single-stream models: one tower over the frames of a clip, and the demo's appearance objective.

:class:`FrameAverage` is how the paper's streams are trained and tested (Section 3.5, following [22]):
a per-frame network applied to each of the T samples of a clip, its class scores averaged over them.

:class:`DenseColour` is the ``demo`` profile's stand-in for ImageNet initialisation of the spatial
tower (a documented departure): regress every ReLU5 cell's mean input colour (no labels needed). A
spatial tower trained on the synthetic actions alone learns only what one frame tells (the shapes)
and has no reason to encode *which colour is where*; the paper's ImageNet-initialised towers carry
such appearance features into the fusion layer, and fine-tuning on UCF101 keeps them because its
classes need appearance. Ours would lose them, so :class:`WithAppearance` keeps the colour objective
as an auxiliary loss while the tower learns its actions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrameAverage", "DenseColour", "WithAppearance"]


class FrameAverage(nn.Module):
    """A single-stream network applied to each of the T frames of a clip, scores averaged over T.

    Input ``[B, T, C, H, W]`` (or one frame, ``[B, C, H, W]``), output ``[B, classes]``.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.net(x)
        b, t = x.shape[:2]
        return self.net(x.flatten(0, 1)).view(b, t, -1).mean(1)


class DenseColour(nn.Module):
    """Appearance objective: predict the input's colour, pooled to the ReLU5 grid, from ReLU5.

    ``forward(rgb [B, T, 3, H, W])`` returns ``{"loss": [B]}``, each clip's mean squared error over the
    cells, channels and frames, which :func:`twostream_lib.train.train` minimises like any other loss.
    """

    def __init__(self, backbone: nn.Module, channels: int, layer: str = "relu5"):
        super().__init__()
        self.backbone = backbone
        self.layer = layer
        self.predict = nn.Conv2d(channels, 3, kernel_size=1)

    def error(self, frames: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """Per-frame mean squared error [N] of the colour predicted from ``feat`` for ``frames`` [N, 3, H, W]."""
        target = F.adaptive_avg_pool2d(frames, feat.shape[-2:])
        return (self.predict(feat) - target).pow(2).flatten(1).mean(1)

    def forward(self, rgb: torch.Tensor) -> dict:
        b = rgb.shape[0]
        x = rgb.flatten(0, 1) if rgb.dim() == 5 else rgb
        return {"loss": self.error(x, self.backbone(x, upto=self.layer)).view(b, -1).mean(1)}


class WithAppearance(nn.Module):
    """A spatial stream learning its actions (:class:`FrameAverage`'s scores, cross-entropy) with the
    :class:`DenseColour` error, times ``weight``, added as an auxiliary loss (``"aux_loss"``)."""

    def __init__(self, colour: DenseColour, weight: float = 1.0):
        super().__init__()
        self.colour = colour
        self.weight = float(weight)

    def forward(self, rgb: torch.Tensor) -> dict:
        net, layer = self.colour.backbone, self.colour.layer
        b = rgb.shape[0]
        x = rgb.flatten(0, 1) if rgb.dim() == 5 else rgb
        feat = net(x, upto=layer)
        scores = net.forward_from(layer, feat).view(b, -1, net.num_classes).mean(1)
        aux = self.colour.error(x, feat).view(b, -1).mean(1)
        return {"scores": scores, "logits": [scores], "aux_loss": self.weight * aux}
