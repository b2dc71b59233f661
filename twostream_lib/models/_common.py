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
