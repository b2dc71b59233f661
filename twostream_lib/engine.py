"""What training, prediction and feature caching share: the process group, devices, mixed precision and
how a batch becomes a model's arguments.

A model is called as ``model(*[batch[k] for k in input_keys])`` (:func:`model_inputs`) and returns a
[B, C] tensor of class scores or a dict with ``"scores"`` (and ``"logits"``, one entry per loss,
Section 3.4's two towers); :func:`output_scores` reads either.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext

import torch

from .errors import ConfigError, DataError

__all__ = ["AMP_MODES", "world", "unwrap", "use_amp", "autocast", "model_inputs", "output_scores"]

AMP_MODES = ("auto", "bf16", "off")


def world() -> tuple[int, int]:
    """(rank, world size) of the current ``torch.distributed`` group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, (torch.nn.parallel.DistributedDataParallel,
                                              torch.nn.DataParallel)) else model


def use_amp(amp: str | bool, device: torch.device | str) -> bool:
    """Whether bf16 autocast is on: ``"auto"`` = on CUDA only, ``"bf16"`` = on any device, ``"off"``."""
    if isinstance(amp, bool):
        amp = "auto" if amp else "off"
    if amp not in AMP_MODES:
        raise ConfigError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    return amp == "bf16" or (amp == "auto" and torch.device(device).type == "cuda")


def autocast(amp: str | bool, device: torch.device | str):
    """bf16 autocast context when :func:`use_amp` says so, else a no-op context."""
    if use_amp(amp, device):
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def model_inputs(batch: Mapping, input_keys: Sequence[str], device: torch.device | str,
                 channels_last: bool = False) -> list[torch.Tensor]:
    """The tensors a model is called with: ``[batch[k] for k in input_keys]`` moved to ``device``."""
    out = []
    for key in input_keys:
        if key not in batch:
            raise DataError(f"batch has no key {key!r} (input_keys={tuple(input_keys)}); "
                            f"keys present: {sorted(batch)}")
        x = batch[key].to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(x)
    return out


def output_scores(output) -> torch.Tensor:
    """The prediction scores [B, C] of a model output: the tensor itself or ``output["scores"]``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and "scores" in output:
        return output["scores"]
    raise DataError("model output must be a [B, C] tensor or a dict with 'scores' (and 'logits'); "
                    f"got {type(output).__name__}")
