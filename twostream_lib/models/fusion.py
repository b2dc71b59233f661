"""Spatial fusion functions f(x^a, x^b) -> y (Section 3.1, Eqs. 1-5).

``x^a`` is always the spatial (appearance) tower's map and ``x^b`` the temporal (flow) tower's,
both [N, D, H, W] at the same pixel positions::

    x^a ─┐
         ├─ f ─> y        sum      y = x^a + x^b                               (Eq. 1)  D channels
    x^b ─┘                max      y = max(x^a, x^b)                           (Eq. 2)  D
                          product  y = x^a * x^b   (the "pixel wise product" of the discussion)   D
                          concat   y = [x^a, x^b]                              (Eq. 3)  2D
                          conv     y = [x^a, x^b] * f + b,  f 1x1x2DxD         (Eq. 4)  D
                          bilinear y = sum_ij x^a_ij^T x^b_ij, signed sqrt, L2 (Eq. 5)  D^2 (no positions)

Channel order of concatenation: Eq. 3 interleaves the two maps (``y_2d = x^a_d``,
``y_2d-1 = x^b_d``, 1-based); the released code stacks them (``[x^a; x^b]``, MatConvNet's
``dagnn.Concat``). The two differ by a fixed permutation of channels, which the learned layer that
follows (the conv fusion filter, or the widened fc6 after concatenation) absorbs exactly. We
implement stacking by default (``order="stacked"``) and Eq. 3 literally with
``order="interleaved"``; conv fusion's initialisation uses the same channel map either way, so
``init="sum"`` is ``y = x^a + x^b`` in both orders.

Conv fusion initialisations (Sections 3.5, 4.2 and the released code):
``"sum"`` ``f = [I I]`` (the paper's default: the fused layer starts as sum fusion),
``"released"`` ``f = [0.25 I, 0.75 I]`` (the released code's ``2sumAB``: temporal x3),
``"gaussian"`` random N(0, 2/D) (the released code's ``xavierimproved``), biases 0.

Maps of different size are zero-padded at the bottom and right to the larger one (Sections 3.2,
3.5: VGG-M's 13x13 ReLU5 into VGG-16's 14x14 gets one row and one column of zeros).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twostream_lib.errors import ConfigError

from ._common import PointwiseConv2d, check_choice

__all__ = [
    "FUSION_METHODS",
    "CONV_INITS",
    "CONCAT_ORDERS",
    "pad_to_match",
    "stack_channels",
    "SumFusion",
    "MaxFusion",
    "ProductFusion",
    "ConcatFusion",
    "ConvFusion",
    "BilinearFusion",
    "build_fusion",
    "init_pair",
]

FUSION_METHODS = ("sum", "max", "concat", "conv", "bilinear", "product")
CONV_INITS = ("sum", "released", "gaussian")
CONCAT_ORDERS = ("stacked", "interleaved")


def init_pair(init: str) -> tuple[float, float]:
    """Weights of the (spatial, temporal) identity blocks for a deterministic conv init."""
    return {"sum": (1.0, 1.0), "released": (0.25, 0.75)}[check_choice("conv init", init, ("sum", "released"))]


def pad_to_match(xa: Tensor, xb: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-pad the smaller map(s) at the bottom/right so both have the larger height and width."""
    h = max(xa.shape[-2], xb.shape[-2])
    w = max(xa.shape[-1], xb.shape[-1])

    def pad(x: Tensor) -> Tensor:
        dh, dw = h - x.shape[-2], w - x.shape[-1]
        return x if dh == 0 and dw == 0 else F.pad(x, (0, dw, 0, dh))

    return pad(xa), pad(xb)


def stack_channels(xa: Tensor, xb: Tensor, order: str = "stacked") -> Tensor:
    """Concatenate along channels (dim 1): ``[x^a, x^b]`` or Eq. 3's interleaving ``[x^b_1, x^a_1, ...]``."""
    if order == "stacked":
        return torch.cat([xa, xb], 1)
    if xa.shape[1] != xb.shape[1]:
        raise ConfigError(f"interleaved concatenation needs equal channels, got {xa.shape[1]} and {xb.shape[1]}")
    return torch.stack([xb, xa], 2).flatten(1, 2)


class _Elementwise(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = channels

    def forward(self, xa: Tensor, xb: Tensor) -> Tensor:
        return self.op(*pad_to_match(xa, xb))


class SumFusion(_Elementwise):
    """Eq. 1: ``y = x^a + x^b`` (an arbitrary channel correspondence that learning can exploit)."""

    op = staticmethod(torch.add)


class MaxFusion(_Elementwise):
    """Eq. 2: ``y = max(x^a, x^b)`` elementwise."""

    op = staticmethod(torch.maximum)


class ProductFusion(_Elementwise):
    """The elementwise ("pixel wise") product of channels mentioned in Section 3.1's discussion."""

    op = staticmethod(torch.mul)


class ConcatFusion(nn.Module):
    """Eq. 3: stack the maps along channels (``out_channels = D_a + D_b``); see the module doc for order."""

    def __init__(self, channels: int, *, channels_b: int | None = None, order: str = "stacked"):
        super().__init__()
        self.order = check_choice("concat order", order, CONCAT_ORDERS)
        self.channels_a, self.channels_b = channels, channels if channels_b is None else channels_b
        self.out_channels = self.channels_a + self.channels_b

    def forward(self, xa: Tensor, xb: Tensor) -> Tensor:
        return stack_channels(*pad_to_match(xa, xb), self.order)


def identity_pair_weight(out_channels: int, channels_a: int, channels_b: int, wa: float, wb: float,
                         order: str = "stacked") -> Tensor:
    """[out, D_a + D_b] matrix ``[wa I, wb I]`` (rectangular identities) in the given channel order."""
    a = wa * torch.eye(out_channels, channels_a)
    b = wb * torch.eye(out_channels, channels_b)
    if order == "stacked":
        return torch.cat([a, b], 1)
    return torch.stack([b, a], 2).flatten(1, 2)


class ConvFusion(nn.Module):
    """Eq. 4: stack the maps (Eq. 3) and convolve with a 1x1x2DxD filter bank plus biases.

    ``out_channels`` defaults to D (the fused-into tower's width, which the next layer expects).
    ``init``: ``"sum"`` ([I I], default), ``"released"`` ([0.25 I, 0.75 I]), ``"gaussian"`` (random).
    """

    def __init__(self, channels: int, *, channels_b: int | None = None, out_channels: int | None = None,
                 init: str = "sum", order: str = "stacked"):
        super().__init__()
        self.init = check_choice("conv fusion init", init, CONV_INITS)
        self.order = check_choice("concat order", order, CONCAT_ORDERS)
        self.channels_a, self.channels_b = channels, channels if channels_b is None else channels_b
        self.out_channels = channels if out_channels is None else out_channels
        self.conv = PointwiseConv2d(self.channels_a + self.channels_b, self.out_channels)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.init == "gaussian":
            nn.init.normal_(self.conv.weight, 0.0, math.sqrt(2.0 / self.out_channels))
        else:
            w = identity_pair_weight(self.out_channels, self.channels_a, self.channels_b, *init_pair(self.init),
                                     order=self.order)
            self.conv.weight.copy_(w[:, :, None, None])
        nn.init.zeros_(self.conv.bias)

    def forward(self, xa: Tensor, xb: Tensor) -> Tensor:
        return self.conv(stack_channels(*pad_to_match(xa, xb), self.order))


class BilinearFusion(nn.Module):
    """Eq. 5: ``y = sum_ij x^a_ij x^b_ij^T`` (outer product per location, summed over locations),
    then signed square root and L2 normalisation ([15]); output [N, D_a * D_b] (index ``d_a * D_b + d_b``).

    All spatial information is marginalised out, so nothing but a classifier can follow: the paper
    uses a linear SVM on this descriptor, :class:`~twostream_lib.models.twostream.TwoStreamNet` a
    linear layer trained with the softmax loss (an SVM can be fit on :meth:`forward`'s output instead).
    """

    def __init__(self, channels: int, *, channels_b: int | None = None, eps: float = 1e-12):
        super().__init__()
        self.channels_a, self.channels_b = channels, channels if channels_b is None else channels_b
        self.out_channels = self.channels_a * self.channels_b
        self.eps = eps

    def forward(self, xa: Tensor, xb: Tensor) -> Tensor:
        xa, xb = pad_to_match(xa, xb)
        y = torch.bmm(xa.flatten(2), xb.flatten(2).transpose(1, 2)).flatten(1)  # [N, Da*Db]
        y = torch.sign(y) * torch.sqrt(y.abs() + self.eps)
        return F.normalize(y, dim=1)


def build_fusion(method: str, channels: int, *, init: str = "sum", channels_b: int | None = None,
                 out_channels: int | None = None, order: str = "stacked") -> nn.Module:
    """A fusion module ``forward(xa, xb)`` with ``.out_channels`` (Section 3.1).

    ``method``: one of :data:`FUSION_METHODS`. ``channels``: D of the spatial map (``channels_b``: of
    the temporal map, default D; sum/max/product need them equal). ``init``: conv fusion only
    (:data:`CONV_INITS`). ``order``: concat/conv channel order, ``"stacked"`` or Eq. 3's ``"interleaved"``.
    """
    check_choice("fusion method", method, FUSION_METHODS)
    check_choice("conv fusion init", init, CONV_INITS)
    check_choice("concat order", order, CONCAT_ORDERS)
    if channels < 1 or (channels_b is not None and channels_b < 1):
        raise ConfigError(f"build_fusion: channels must be >= 1, got {channels}, {channels_b}")
    if method in ("sum", "max", "product"):
        if channels_b is not None and channels_b != channels:
            raise ConfigError(f"{method} fusion needs maps with equal channels, got {channels} and {channels_b}; "
                              "use conv or concat fusion")
        return {"sum": SumFusion, "max": MaxFusion, "product": ProductFusion}[method](channels)
    if method == "concat":
        return ConcatFusion(channels, channels_b=channels_b, order=order)
    if method == "conv":
        return ConvFusion(channels, channels_b=channels_b, out_channels=out_channels, init=init, order=order)
    return BilinearFusion(channels, channels_b=channels_b)
