"""Small helpers shared by the model modules (not part of the public API)."""
from __future__ import annotations

from collections.abc import Iterable

import torch

from twostream_lib.errors import ConfigError


def check_choice(param: str, value, choices: Iterable) -> str:
    """Return ``value`` if it is one of ``choices``, else ConfigError naming the value and the choices."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"unknown {param} {value!r}; expected one of: {', '.join(map(repr, choices))}")
    return value


def use_deterministic(flag: bool | None, x: torch.Tensor) -> bool:
    """Whether an op with a nondeterministic CUDA backward should take its deterministic formulation.

    ``flag`` True/False forces the choice; None ("auto") picks the deterministic one exactly when the
    input is on CUDA and ``torch.use_deterministic_algorithms(True)`` is on (on CPU the standard
    kernels are deterministic already).
    """
    if flag is not None:
        return bool(flag)
    return x.is_cuda and torch.are_deterministic_algorithms_enabled()


class PointwiseConv2d(torch.nn.Conv2d):
    """A 1x1 convolution computed as a matrix product at every position.

    The same parameters (weight [out, in, 1, 1], bias) and, up to rounding, the same result as
    ``nn.Conv2d(in, out, 1)``; checkpoints, the MatConvNet importer and parameter counts see a Conv2d.
    Why: the fully connected layers (as convolutions, Sec. 3.5's fully convolutional testing) and
    conv fusion (Eq. 4) are 1x1; with the demo's pinned arithmetic a convolution goes through im2col
    and MKL's GEMM, whose fixed cost per call made these small layers 5-10x slower than one GEMM.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, **kwargs):
        super().__init__(in_channels, out_channels, 1, bias=bias, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.reshape(self.out_channels, self.in_channels)
        return torch.nn.functional.linear(x.movedim(1, -1), weight, self.bias).movedim(-1, 1)
