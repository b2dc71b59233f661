"""Temporal fusion of T samples (Section 3.3, Fig. 3; the architecture of Section 3.4).

Maps of the T temporal samples (``tau`` frames apart) are stacked into ``x`` [B, C, T, H, W]::

    (a) 2D pooling      per frame: pool5 (2D) -> fc6..fc8, class scores averaged over T
    (b) 3D pooling      pool5 replaced by max pooling over (t, y, x) windows, no pooling across channels
    (c) 3D conv + pool  [x^a, x^b] * f + b   with f 3x3x3 x 2D x D (Eq. 6), then 3D pooling

3D pooling presets: ``"paper"`` 3x3x3 windows, stride 2 in t, y and x (ceil mode; with T = 5 this
leaves 2 temporal positions); ``"released"`` the tower's pool5 window in space and the whole clip in
time (``[2, 2, T]`` for VGG-16, ``[3, 3, T]`` for VGG-M), temporal stride 2, as the released code's
``Pooling3D`` (``poolSize = [pool5 nFrames]``). A temporal window longer than the clip is clipped to T.

3D conv initialisation (Section 3.5): the identity pair of conv fusion with the temporal block 3x
the spatial one, times a 3x3x3 Gaussian of sigma 1 over (t, y, x):
``"paper"`` ``f = [I, 3I] (x) g``, g(t, y, x) = exp(-(t^2 + y^2 + x^2) / 2) (peak 1, the text
read literally: on a smooth map the fused output starts at about 10.8 (x^a + 3 x^b));
``"released"`` ``f = [0.25 I, 0.75 I] (x) g / sum(g)`` (the released code: output about
0.25 x^a + 0.75 x^b); ``"centre"`` ``[I, I]`` at the centre tap and zero elsewhere (the ``demo``'s: the
3D filter starts as 2D conv fusion with its [I I] init, frame by frame, so a 3D head starts where a 2D
head does and only learns what time adds); ``"gaussian"`` random N(0, 2 / (27 D)). ``pair=`` overrides
the identity weights.
The two identity inits differ by the factor 4 sum(g) = 43.4 in every output (on ReLU-like maps an
output/input std of about 5 against 0.12, ``tests/test_fusion.py``): the text's init starts far above
the scale the layers above were trained on, so the ``paper`` profile uses ``"released"`` and keeps
``"paper"`` as the option the text describes.

Deterministic equivalents: the CUDA backward of ``max_pool3d`` has no deterministic kernel under
``torch.use_deterministic_algorithms(True)``. :func:`max_pool3d_by_slices` computes the same maximum
as a separable max over strided slices (``torch.maximum`` of views), whose backward is deterministic;
values are identical and so are gradients wherever the window maximum is unique (with ties the
gradient is shared among the tied maxima instead of routed to one; the sum per window is the same).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twostream_lib.errors import ConfigError

from ._common import check_choice, use_deterministic
from .backbones import _pool_out
from .fusion import CONCAT_ORDERS, identity_pair_weight, pad_to_match, stack_channels

__all__ = [
    "TEMPORAL_FUSIONS",
    "POOL3D_PRESETS",
    "CONV3D_INITS",
    "to_5d",
    "from_5d",
    "max_pool3d_by_slices",
    "MaxPool3d",
    "build_pool3d",
    "gaussian_kernel3d",
    "Conv3dFusion",
    "conv3d_as_gemm",
]

TEMPORAL_FUSIONS = ("none", "pool2d", "pool3d", "conv3d_pool3d")
POOL3D_PRESETS = ("paper", "released")
CONV3D_INITS = ("paper", "released", "centre", "gaussian")


def to_5d(x: Tensor, batch: int) -> Tensor:
    """[B*T, C, H, W] (frames folded into the batch, frame-major per clip) -> [B, C, T, H, W]."""
    if x.shape[0] % batch:
        raise ConfigError(f"cannot unfold {x.shape[0]} frames into a batch of {batch} clips")
    return x.view(batch, x.shape[0] // batch, *x.shape[1:]).transpose(1, 2)


def from_5d(x: Tensor) -> Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W]."""
    return x.transpose(1, 2).flatten(0, 1)


def _max_along(x: Tensor, dim: int, k: int, s: int, p: int, ceil: bool) -> Tensor:
    n = x.shape[dim]
    out = _pool_out(n, k, s, p, ceil)
    if out < 1:
        raise ConfigError(f"3D pooling window {k} does not fit a dimension of size {n}")
    right = max(0, (out - 1) * s + k - n - p)
    if p or right:
        x = F.pad(x, [0, 0] * (x.dim() - dim - 1) + [p, right], value=float("-inf"))
    span = (out - 1) * s + 1
    idx = [slice(None)] * x.dim()
    y = None
    for i in range(k):
        idx[dim] = slice(i, i + span, s)
        v = x[tuple(idx)]
        y = v if y is None else torch.maximum(y, v)
    return y


def max_pool3d_by_slices(x: Tensor, kernel: Sequence[int], stride: Sequence[int],
                         padding: Sequence[int] = (0, 0, 0), ceil_mode: bool = False) -> Tensor:
    """``F.max_pool3d`` on [B, C, T, H, W] as a separable max of strided slices (deterministic backward)."""
    for dim, k, s, p in zip((2, 3, 4), kernel, stride, padding):
        x = _max_along(x, dim, int(k), int(s), int(p), ceil_mode)
    return x


class MaxPool3d(nn.Module):
    """3D max pooling of [B, C, T, H, W] (Section 3.3, Fig. 3b).

    ``kernel`` = (t, y, x); t None means the whole clip. ``deterministic``: None = auto (the slice
    formulation on CUDA under deterministic algorithms), True/False to force.
    """

    def __init__(self, kernel: Sequence[int | None] = (3, 3, 3), stride: Sequence[int] = (2, 2, 2), *,
                 padding: Sequence[int] = (0, 0, 0), ceil_mode: bool = True, deterministic: bool | None = None):
        super().__init__()
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), tuple(padding)
        self.ceil_mode = ceil_mode
        self.deterministic = deterministic

    def window(self, t: int) -> tuple[int, int, int]:
        kt = t if self.kernel[0] is None else min(self.kernel[0], t)
        return (kt, *self.kernel[1:])

    def forward(self, x: Tensor) -> Tensor:
        kernel = self.window(x.shape[2])
        if use_deterministic(self.deterministic, x):
            return max_pool3d_by_slices(x, kernel, self.stride, self.padding, self.ceil_mode)
        return F.max_pool3d(x, kernel, self.stride, self.padding, ceil_mode=self.ceil_mode)

    def extra_repr(self) -> str:
        k = ("T" if self.kernel[0] is None else self.kernel[0], *self.kernel[1:])
        return f"kernel={k}, stride={self.stride}, padding={self.padding}, ceil_mode={self.ceil_mode}"


def build_pool3d(preset: str = "paper", *, pool5: nn.MaxPool2d | None = None,
                 deterministic: bool | None = None) -> MaxPool3d:
    """3D pooling that replaces a tower's ``pool5``: ``"paper"`` (3x3x3, stride 2) or ``"released"``
    (``pool5``'s spatial window and the whole clip in time, temporal stride 2)."""
    check_choice("pool3d", preset, POOL3D_PRESETS)
    if preset == "paper":
        return MaxPool3d((3, 3, 3), (2, 2, 2), ceil_mode=True, deterministic=deterministic)
    if pool5 is None:
        raise ConfigError("build_pool3d('released') needs the tower's pool5 (its spatial window)")

    def one(v):
        return v if isinstance(v, int) else v[0]

    k, s, p = one(pool5.kernel_size), one(pool5.stride), one(pool5.padding)
    return MaxPool3d((None, k, k), (2, s, s), padding=(0, p, p), ceil_mode=pool5.ceil_mode,
                     deterministic=deterministic)


def gaussian_kernel3d(size: int = 3, sigma: float = 1.0, *, normalize: bool = False) -> Tensor:
    """exp(-(t^2 + y^2 + x^2) / (2 sigma^2)) on a size^3 grid centred at 0; ``normalize``: sum 1."""
    r = torch.arange(size, dtype=torch.float64, device="cpu") - (size - 1) / 2
    g1 = torch.exp(-r * r / (2 * sigma * sigma))
    g = g1[:, None, None] * g1[None, :, None] * g1[None, None, :]
    return (g / g.sum() if normalize else g).float()


_CONV3D_PRESETS = {"paper": ((1.0, 3.0), False), "released": ((0.25, 0.75), True), "centre": ((1.0, 1.0), None)}


class Conv3dFusion(nn.Module):
    """3D conv fusion (Section 3.3, Eq. 6; Section 3.5): stack ``x^a`` [B, Da, T, H, W] and ``x^b``
    [B, Db, T, H, W] along channels and convolve with a ``k x k x k x (Da + Db) x D`` filter bank
    (padding k // 2, so T, H, W are kept).

    ``init``: :data:`CONV3D_INITS` (see the module doc); ``pair``: (spatial, temporal) identity
    weights overriding the preset's; ``sigma``: of the Gaussian.
    """

    def __init__(self, channels: int, *, channels_b: int | None = None, out_channels: int | None = None,
                 kernel_size: int = 3, init: str = "paper", sigma: float = 1.0,
                 pair: tuple[float, float] | None = None, order: str = "stacked"):
        super().__init__()
        self.init = check_choice("conv3d init", init, CONV3D_INITS)
        self.order = check_choice("concat order", order, CONCAT_ORDERS)
        self.channels_a, self.channels_b = channels, channels if channels_b is None else channels_b
        self.out_channels = channels if out_channels is None else out_channels
        self.sigma, self.pair = float(sigma), pair
        self.conv = nn.Conv3d(self.channels_a + self.channels_b, self.out_channels, kernel_size,
                              padding=kernel_size // 2)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        k = self.conv.kernel_size[0]
        if self.init == "gaussian":
            nn.init.normal_(self.conv.weight, 0.0, math.sqrt(2.0 / (k ** 3 * self.out_channels)))
        else:
            pair, normalize = _CONV3D_PRESETS[self.init]
            wa, wb = self.pair or pair
            ident = identity_pair_weight(self.out_channels, self.channels_a, self.channels_b, wa, wb, order=self.order)
            if normalize is None:  # "centre": the identity pair at the centre tap only
                g = torch.zeros(k, k, k, device=ident.device)
                g[k // 2, k // 2, k // 2] = 1.0
            else:
                g = gaussian_kernel3d(k, self.sigma, normalize=normalize).to(ident.device)
            self.conv.weight.copy_(ident[:, :, None, None, None] * g)
        nn.init.zeros_(self.conv.bias)

    def forward(self, xa: Tensor, xb: Tensor) -> Tensor:
        x = stack_channels(*pad_to_match(xa, xb), self.order)
        # the pinned CPU arithmetic, below frozen towers (the paper's fine-tuning: Sec. 3.5), where it is faster
        if x.device.type == "cpu" and not torch.backends.mkldnn.enabled and not x.requires_grad:
            return conv3d_as_gemm(x, self.conv.weight, self.conv.bias)
        return self.conv(x)


def conv3d_as_gemm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.conv3d(x, weight, bias, padding=k // 2)`` (stride 1, cubic kernel) as one matrix product over
    the whole batch: channels-last columns [B T H W, k^3 C] times the filter bank [k^3 C, D].

    Why: with oneDNN off (the pinned arithmetic, :mod:`twostream_lib.arithmetic`) ``nn.Conv3d`` runs
    PyTorch's ``slow_conv3d``, a per-sample im2col whose copies dominate on the demo's small maps
    (64 channels, 5 x 6 x 6); gathering the 27 shifted channels-last views and calling MKL's GEMM once
    makes a training step of the layer faster (``benchmarks/bench_arithmetic.py`` times both on the one
    thread a demo head trains with) when its input needs no gradient, as below the frozen towers of
    every fusion head.
    When it does, the backward through the 27 overlapping views is slower than ``slow_conv3d``'s, so
    :class:`Conv3dFusion` only takes this path for inputs without gradient. The product is
    MKL's, so it is as reproducible across CPUs as every other pinned convolution. The sum runs in
    another order than ``slow_conv3d``'s: equal to float rounding (``tests/test_fusion.py``), not bit
    for bit. The result is returned in channels-last order ([B, D, T, H, W] strides of
    ``torch.channels_last_3d``), which the 3D pooling after it reads as is."""
    k = weight.shape[-1]
    if weight.shape[-3:] != (k, k, k) or k % 2 == 0:
        raise ConfigError(f"conv3d_as_gemm needs an odd cubic kernel, got {tuple(weight.shape[-3:])}")
    p, (b, c, t, h, w) = k // 2, x.shape
    padded = F.pad(x.permute(0, 2, 3, 4, 1), (0, 0, p, p, p, p, p, p))  # [B, T+2p, H+2p, W+2p, C]
    # the k^3 shifted views of every output position as one strided view [B, T, H, W, kt, ky, kx, C] (a
    # tap moves by the stride of its axis), copied once: a stack of the 27 views costs 1.5x as long
    s_b, s_t, s_h, s_w, s_c = padded.stride()
    taps = padded.as_strided((b, t, h, w, k, k, k, c), (s_b, s_t, s_h, s_w, s_t, s_h, s_w, s_c))
    columns = taps.reshape(b * t * h * w, k ** 3 * c)
    filters = weight.permute(0, 2, 3, 4, 1).reshape(weight.shape[0], k ** 3 * c)  # taps in the same order
    y = columns @ filters.t() if bias is None else torch.addmm(bias, columns, filters.t())
    return y.reshape(b, t, h, w, -1).permute(0, 4, 1, 2, 3)
