"""Training engine: the paper's protocol, resumable, deterministic, single- or multi-process.

Section 3.5 of the paper ("Two-Stream ConvNet fusion"): the fused networks are fine-tuned with SGD
(momentum 0.9, weight decay 5e-4), a batch size of 96 and a learning rate starting at 1e-3 that is
reduced by a factor of 10 as soon as the validation accuracy saturates; dropout 0.85 for the FC
layers; gradients are only propagated back to the injected fusion layer. The streams themselves are
trained the same way, lowering the learning rate "after the validation error saturates" instead of
on a fixed schedule. :class:`TrainConfig` holds those defaults; :func:`train` is the one entry point
used by notebooks and by ``python -m twostream_lib train``. The authors' released scripts instead step
the rate through a table, one rate per "epoch" of several passes (``lr_schedule="table"``), train
biases at twice the rate without weight decay (``bias_lr_factor``, ``bias_decay``) and, in the
spatial stream's first epochs, back-propagate only into the top layers (``backprop_from``); the
``paper`` profile uses those (:mod:`twostream_lib.paper`, ``RELEASED_SCHEDULES``).

The engine is generic: a model is called as ``model(*[batch[k] for k in cfg.input_keys])`` and
returns either a [B, C] tensor or ``{"scores": [B, C], "logits": [[B, C], ...]}``; the loss is the
sum of one cross-entropy per entry of ``"logits"`` (the paper keeps both towers' losses after 3D
fusion, Section 3.4) and ``"scores"`` give the prediction.

Outputs in ``cfg.out_dir``::

    config.json     resolved configuration (plain JSON) and facts about the run
    metrics.csv     one row per epoch: epoch, lr (used in it), train_loss (mean per clip, summed over
                    the loss heads), train_acc (clip level), val_acc (video level), time (s, with validation)
    checkpoint.pt   model/optimizer/schedule state, epoch, history, RNG states (weights_only-safe);
                    while the run goes on, also the one before it (checkpoint.prev.pt), removed at the end

Reproducibility: epoch ``e`` shuffles with a generator seeded by (seed, e), reseeds the global
generators (dropout) from (seed, e, rank) and calls ``train_set.set_epoch(e)`` so that data sets
draw their augmentation from (seed, epoch, index); nothing depends on the number of DataLoader
workers or on where a run was interrupted. A run that resumes from ``checkpoint.pt`` ends with
bit-identical weights and metrics on CPU.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised from the
environment (gloo on CPU, NCCL on CUDA), the model is wrapped in DistributedDataParallel and every
global batch of ``batch_size`` samples is split over the processes; the loss is normalised by the
global batch so the update equals the single-process one.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import re
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .determinism import (derive_seed, deterministic, rng_state, seed_everything, set_rng_state, worker_init_fn)
from .errors import ConfigError, DataError
from .files import atomic_write
from .paper import HYPERPARAMETERS as HP
from .engine import AMP_MODES, autocast, model_inputs, output_scores, unwrap, use_amp, world
from .evaluate import accuracy, predict

__all__ = [
    "TrainConfig",
    "TrainResult",
    "LRSchedule",
    "GlobalBatchSampler",
    "train",
    "load_checkpoint",
    "completed_model",
    "setup_distributed",
    "cleanup_distributed",
]

SCHEDULES = ("plateau", "table", "step", "cosine", "constant")
MONITORS = ("val_acc", "train_acc", "train_loss")
METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_acc", "time")
# Fields that may change when a run is resumed: they do not change what is computed.
RESUME_FREE = frozenset({"epochs", "progress", "workers", "out_dir", "checkpoint_every", "resume",
                         "device", "val_batch_size", "ddp_find_unused"})


@dataclass
class TrainConfig:
    """Typed training configuration; defaults are the paper's fusion fine-tuning (Section 3.5)."""

    # optimisation (Section 3.5: SGD, momentum 0.9, weight decay 5e-4, batch 96, lr from 1e-3)
    lr: float = HP["lr"]
    momentum: float = HP["momentum"]
    weight_decay: float = HP["weight_decay"]
    batch_size: int = HP["batch_size"]  # global batch; split over the processes under torchrun
    epochs: int = 30  # an upper bound when the plateau schedule stops training itself
    # learning-rate schedule: "plateau" = divide by 1/lr_factor (10) when `monitor` saturates (paper);
    # "table" (the released scripts' rate per block of epochs), "step" and "cosine" (from lr to min_lr over
    # `epochs`) need no validation (e.g. the demo's fixed budget)
    lr_schedule: str = "plateau"  # "plateau" | "table" | "step" | "cosine" | "constant"
    lr_table: tuple[float, ...] = ()  # "table": one rate per block of lr_table_epochs epochs; the last holds
    lr_table_epochs: int = 1  # "table": epochs per rate (the released "epoch" of epochFactor passes)
    monitor: str = "val_acc"  # "val_acc" | "train_acc" | "train_loss" (plateau only)
    lr_factor: float = 0.1
    patience: int = 2  # epochs without improvement before a reduction
    min_lr: float = 1e-6
    max_reductions: int = 2
    stop_on_plateau: bool = True  # saturating again after max_reductions ends training
    step_size: int = 10  # "step": lr * lr_factor ** (epoch // step_size)
    warmup_epochs: int = 0  # "table"/"step"/"cosine"/"constant": the rate rises linearly over the first epochs
    # parameters named "bias" learn at lr x bias_lr_factor, with weight decay only if bias_decay
    # (released code, MatConvNet's setLrWd: biasesLRWD [2 0], i.e. factor 2 and no decay)
    bias_lr_factor: float = 1.0
    bias_decay: bool = True
    # during the first backprop_epochs epochs only the parameters from the first one whose dotted name
    # contains the component `backprop_from` (a layer name, e.g. "fc8") on train: the ones registered
    # before it (the layers below, in a feed-forward stack) get no gradient (released: backpropDepth)
    backprop_from: str | None = None
    backprop_epochs: int = 0
    # model: None keeps the model's own dropout; a float sets p of every Dropout module
    # (paper: 0.85 for the FC layers; released code: 0.9 in the temporal net)
    dropout: float | None = None
    # reproducibility
    seed: int = 0
    deterministic: bool = True  # torch.use_deterministic_algorithms (warn-only on CUDA)
    # hardware
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N" (torchrun: cuda:LOCAL_RANK)
    amp: str = "auto"  # bf16 autocast: "auto" = on CUDA only, "bf16" = also on CPU, "off"
    channels_last: bool = False  # NHWC weights and 4-D inputs (a GPU speed-up)
    workers: int = 0  # DataLoader worker processes (results do not depend on it)
    # DDP: allow trainable parameters that a forward pass does not use (DDP stops with an error
    # naming them otherwise); costs one autograd-graph traversal per step
    ddp_find_unused: bool = False
    # data
    input_keys: tuple[str, ...] = ("rgb", "flow")  # model(*[batch[k] for k in input_keys])
    drop_last: bool = False  # drop the last, smaller batch of an epoch
    val_every: int = 1  # validate every n epochs (and after the last)
    val_batch_size: int | None = None  # None: batch_size
    # outputs
    out_dir: str | None = None  # None: write nothing (no checkpoint, no resume)
    checkpoint_every: int = 1  # epochs; the last epoch is always checkpointed
    resume: bool = True  # continue from out_dir/checkpoint.pt when it exists
    progress: bool = True  # tqdm bars for epochs and batches

    def __post_init__(self) -> None:
        if isinstance(self.amp, bool):
            self.amp = "auto" if self.amp else "off"
        self.input_keys = tuple(self.input_keys)
        self.lr_table = tuple(float(r) for r in self.lr_table)
        if self.out_dir is not None:
            self.out_dir = str(self.out_dir)
        checks = [
            ("lr", self.lr > 0), ("momentum", 0 <= self.momentum < 1), ("weight_decay", self.weight_decay >= 0),
            ("batch_size", self.batch_size >= 1), ("epochs", self.epochs >= 0),
            ("lr_schedule", self.lr_schedule in SCHEDULES), ("monitor", self.monitor in MONITORS),
            ("lr_factor", 0 < self.lr_factor < 1), ("patience", self.patience >= 0), ("min_lr", self.min_lr >= 0),
            ("max_reductions", self.max_reductions >= 0), ("step_size", self.step_size >= 1),
            ("warmup_epochs", self.warmup_epochs >= 0),
            ("lr_table", all(r > 0 for r in self.lr_table) and (self.lr_schedule != "table" or self.lr_table)),
            ("lr_table_epochs", self.lr_table_epochs >= 1), ("bias_lr_factor", self.bias_lr_factor > 0),
            ("backprop_from", self.backprop_from is None or bool(self.backprop_from)),
            ("backprop_epochs", self.backprop_epochs >= 0),
            ("dropout", self.dropout is None or 0 <= self.dropout < 1), ("amp", self.amp in AMP_MODES),
            ("workers", self.workers >= 0), ("input_keys", len(self.input_keys) >= 1),
            ("val_every", self.val_every >= 1), ("checkpoint_every", self.checkpoint_every >= 1),
            ("val_batch_size", self.val_batch_size is None or self.val_batch_size >= 1),
        ]
        bad = [name for name, ok in checks if not ok]
        if bad:
            raise ConfigError("TrainConfig: invalid " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad)
                              + f" (lr_schedule in {SCHEDULES}, monitor in {MONITORS}, amp in {AMP_MODES})")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a dict; unknown keys raise :class:`ConfigError` (a typo must not pass silently)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"TrainConfig: unknown keys {unknown}; expected some of {sorted(names)}")
        return cls(**d)


@dataclass
class TrainResult:
    history: list[dict]  # one dict per epoch, the rows of metrics.csv
    best_val: float  # best validation accuracy (NaN without validation)
    out_dir: Path | None
    model: nn.Module  # the trained model (unwrapped from DistributedDataParallel)
    best_epoch: int = 0
    stopped_early: bool = False  # the plateau schedule ended training before cfg.epochs


# ----------------------------------------------------------------------------- schedule

def scheduled_lr(cfg: TrainConfig, epoch: int) -> float:
    """The rate of epoch ``epoch`` (0-based) under a fixed schedule ("table", "step", "cosine",
    "constant"), warm-up included: the function that :class:`LRSchedule` hands to ``LambdaLR``."""
    if cfg.lr_schedule == "plateau":
        raise ConfigError("scheduled_lr: 'plateau' depends on the validation metrics, not on the epoch alone")
    if cfg.lr_schedule == "table":
        rate = cfg.lr_table[min(epoch // cfg.lr_table_epochs, len(cfg.lr_table) - 1)]
    elif epoch == 0 or cfg.lr_schedule == "constant":
        rate = cfg.lr
    elif cfg.lr_schedule == "step":
        rate = cfg.lr * cfg.lr_factor ** (epoch // cfg.step_size)
    else:  # cosine, from lr to min_lr over `epochs`
        progress = min(epoch / max(cfg.epochs, 1), 1.0)
        rate = cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return rate * min(1.0, (epoch + 1) / (cfg.warmup_epochs + 1))


class LRSchedule:
    """The learning rate of every epoch, set on the optimizer through ``torch.optim.lr_scheduler``.

    A fixed schedule is :func:`scheduled_lr` of the epoch, applied by a ``LambdaLR`` to every parameter
    group times the group's ``"lr_factor"`` (biases: ``bias_lr_factor``). ``plateau`` (Section 3.5) is a
    ``ReduceLROnPlateau`` (strict improvement of ``monitor``, ``patience`` epochs, times ``lr_factor``, not
    below ``min_lr``) wrapped for what it lacks: epochs without validation are skipped, at most
    ``max_reductions`` reductions are made, and a further saturation stops training when
    ``stop_on_plateau``. ``optimizer=None`` makes a one-parameter optimizer, for the rates alone.
    """

    def __init__(self, cfg: TrainConfig, optimizer: torch.optim.Optimizer | None = None):
        from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

        self.cfg = cfg
        self.optimizer = optimizer or torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
        self.factors = [float(g.get("lr_factor", 1.0)) for g in self.optimizer.param_groups]
        self.reductions = 0
        self.stopped = False
        if cfg.lr_schedule == "plateau":
            for group, factor in zip(self.optimizer.param_groups, self.factors):
                group["lr"] = cfg.lr * factor
            self.torch = ReduceLROnPlateau(self.optimizer, mode="min" if cfg.monitor == "train_loss" else "max",
                                           factor=cfg.lr_factor, patience=cfg.patience, threshold=0.0,
                                           threshold_mode="abs", min_lr=[cfg.min_lr * f for f in self.factors],
                                           eps=0.0)
            if cfg.max_reductions == 0:
                self._block_reductions()
        else:
            for group, factor in zip(self.optimizer.param_groups, self.factors):
                group["lr"] = group["initial_lr"] = factor  # LambdaLR: rate = factor * scheduled_lr(epoch)
            self.torch = LambdaLR(self.optimizer, lambda epoch: scheduled_lr(cfg, epoch))

    @property
    def lr(self) -> float:
        """The rate of the coming epoch (of parameters with factor 1, i.e. of the weights)."""
        if self.cfg.lr_schedule != "plateau":
            return scheduled_lr(self.cfg, self.torch.last_epoch)
        return float(self.optimizer.param_groups[0]["lr"]) / self.factors[0]

    @property
    def best(self) -> float | None:
        """The best value of ``monitor`` so far ("plateau"; None before the first validated epoch)."""
        if self.cfg.lr_schedule != "plateau" or self.torch.best == self.torch.mode_worse:
            return None
        return float(self.torch.best)

    def _block_reductions(self) -> None:
        self.torch.min_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]

    def step(self, epoch: int, metrics: dict[str, float]) -> None:
        """Update after ``epoch`` completed epochs given that epoch's metrics."""
        cfg = self.cfg
        if cfg.lr_schedule != "plateau":
            self.torch.last_epoch = epoch - 1
            with warnings.catch_warnings():  # the rates alone (no optimizer step) are fine here
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                self.torch.step()
            return
        value = metrics.get(cfg.monitor, math.nan)
        if value is None or math.isnan(value):
            return  # not validated this epoch
        best, before = self.torch.best, [float(g["lr"]) for g in self.optimizer.param_groups]
        self.torch.step(value)
        saturated = self.torch.best == best and self.torch.num_bad_epochs == 0  # it reached its patience
        if not saturated:
            return
        if [float(g["lr"]) for g in self.optimizer.param_groups] != before:
            self.reductions += 1
            if self.reductions >= cfg.max_reductions:
                self._block_reductions()
        elif cfg.stop_on_plateau:  # no reduction left (max_reductions, or at min_lr)
            self.stopped = True

    def state_dict(self) -> dict[str, Any]:
        return {"lr_schedule": self.cfg.lr_schedule, "torch": self.torch.state_dict(),
                "reductions": self.reductions, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any], *, epoch: int | None = None) -> None:
        """Restore :meth:`state_dict`; ``epoch`` (completed epochs) also reads the plain state written
        before the schedules ran on ``torch.optim.lr_scheduler`` (``lr``, ``best``, ``bad_epochs``, ...)."""
        self.reductions, self.stopped = int(state["reductions"]), bool(state["stopped"])
        if "torch" in state:
            self.torch.load_state_dict(state["torch"])
            rates = self.torch.get_last_lr()
        elif self.cfg.lr_schedule == "plateau":
            self.torch.best = self.torch.mode_worse if state["best"] is None else float(state["best"])
            self.torch.num_bad_epochs = int(state["bad_epochs"])
            rates = [float(state["lr"]) * f for f in self.factors]
            if self.reductions >= self.cfg.max_reductions:
                self.torch.min_lrs = list(rates)
        elif epoch is not None:
            self.torch.last_epoch = epoch
            rates = [f * scheduled_lr(self.cfg, epoch) for f in self.factors]
        else:
            raise DataError("LRSchedule: a schedule state of the old format needs the epoch it was saved after")
        for group, rate in zip(self.optimizer.param_groups, rates):
            group["lr"] = rate


# ----------------------------------------------------------------------------- data order

class GlobalBatchSampler(Sampler[list[int]]):
    """This process's share of every global batch of one epoch.

    The epoch's order is ``randperm(n)`` from a generator seeded by (seed, epoch), the same in every
    process; global batch ``k`` is positions ``[k*B, (k+1)*B)`` and process ``rank`` gets a contiguous
    part of it (``np.array_split``), so the processes together see exactly the single-process batch.
    ``global_sizes`` gives each global batch's size (for the loss normalisation). A last batch with
    fewer samples than processes is dropped (every process needs at least one sample).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = False):
        if n < 1:
            raise DataError("the training set is empty")
        g = torch.Generator().manual_seed(derive_seed(seed, epoch))
        order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
        batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        if batches and (len(batches[-1]) < world_size or (drop_last and len(batches[-1]) < batch_size)):
            batches.pop()
        if not batches:
            raise DataError(f"the training set has {n} samples: not enough for one batch of {batch_size} "
                            f"over {world_size} processes")
        self.global_sizes = [len(b) for b in batches]
        self.batches = [np.array_split(np.asarray(b), world_size)[rank].tolist() for b in batches]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# ----------------------------------------------------------------------------- distributed

def setup_distributed(device: str = "cpu") -> tuple[int, int]:
    """Initialise ``torch.distributed`` from torchrun's environment when ``WORLD_SIZE`` > 1.

    Backend: NCCL for CUDA devices, gloo otherwise. Idempotent; returns (rank, world size).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return world()


def cleanup_distributed() -> None:
    """Destroy the process group if one is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _device(cfg: TrainConfig, world_size: int) -> torch.device:
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={cfg.device!r} but CUDA is not available")
        if world_size > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    if world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _broadcast(value: float) -> float:
    if world()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return float(box[0])


# ----------------------------------------------------------------------------- files

def _write_metrics(path: Path, history: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if isinstance(row[k], float) and math.isnan(row[k]) else row[k])
                         for k in METRIC_COLUMNS})
    atomic_write(path, text.getvalue())


# Checkpoints on disk (issue 13): ``checkpoint.pt`` and the one before it, ``checkpoint.prev.pt``, each
# with its SHA-256 beside it (``checkpoint.pt.sha256``, in ``sha256sum`` format). A checkpoint is
# trusted when its digest is one of those recorded for the pair (a rename moves a checkpoint and its
# digest one after the other); resuming falls back to the previous checkpoint when the latest is
# damaged, cut short or missing.

def _digest_path(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.pt.sha256``."""
    return path.with_name(path.name + ".sha256")


def _previous_path(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt``: the checkpoint before the latest, kept as a fallback."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _pair(path: Path) -> tuple[Path, Path]:
    """(latest, previous) of the pair ``path`` belongs to."""
    if path.stem.endswith(".prev"):
        return path.with_name(path.stem[: -len(".prev")] + path.suffix), path
    return path, _previous_path(path)


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _recorded_digests(path: Path) -> set[str] | None:
    """The digests recorded beside the pair ``path`` belongs to; None when neither file has one (a run
    from before digests were kept)."""
    found, any_file = set(), False
    for p in _pair(path):
        try:
            words = _digest_path(p).read_text(encoding="ascii", errors="replace").split()
        except FileNotFoundError:
            continue
        any_file = True
        if words:
            found.add(words[0])
    return found if any_file else None


def _write_digest(path: Path, digest: str) -> None:
    atomic_write(_digest_path(path), f"{digest}  {path.name}\n")  # `sha256sum -c` reads it


def completed_model(path: str | Path, epochs: int) -> dict[str, Any] | None:
    """The model state of a checkpoint written after ``epochs`` epochs (a training that finished), or
    None when there is none or it stopped earlier: a caller that only tests a trained model skips
    building its training set."""
    path = Path(path)
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path)
    return ckpt["model"] if int(ckpt["epoch"]) >= epochs else None


def load_checkpoint(path: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train` (``torch.load(weights_only=True)``, on the CPU).

    With ``verify`` its SHA-256 must be one recorded beside it (``checkpoint.pt.sha256`` or
    ``checkpoint.prev.pt.sha256``) when any is: a file changed after it was written (flipped bytes) or
    cut short is a DataError naming the file and why.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no checkpoint there")
    recorded = _recorded_digests(path) if verify else None
    actual = _sha256(path) if recorded is not None else None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise DataError(f"{path}: not a readable checkpoint ({e})") from e
    if recorded is not None and actual not in recorded:
        raise DataError(f"{path}: its SHA-256 {actual[:16]}... is not the one recorded when it was written "
                        f"({_digest_path(path).name}): the file changed since (or the run stopped before "
                        "its digest was written)")
    missing = {"model", "optimizer", "schedule", "epoch", "history", "rng", "config"} - set(ckpt)
    if missing:
        raise DataError(f"{path}: checkpoint lacks {sorted(missing)}")
    return ckpt


class _HashingFile:
    """A binary file that hashes what is written to it (``torch.save`` needs ``write`` and ``flush``)."""

    def __init__(self, f):
        import hashlib

        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


# (inode, size, mtime) -> digest of the checkpoints this process wrote and verified: a file still with
# those is not hashed again before it becomes the previous checkpoint
_VERIFIED: dict[tuple[int, int, int], str] = {}


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``path`` and its digest, keeping the previous checkpoint until the new one is verified.

    Whenever the process dies, at least one checkpoint whose digest is recorded is left:
    1. if ``path`` is trusted (its digest recorded), its digest file then ``path`` itself are renamed to
       ``checkpoint.prev.pt[.sha256]``; a ``path`` that is not trusted is never made the previous one;
    2. the new checkpoint is written (temporary name, fsync, rename), hashed as it is written;
    3. read back, it must give that digest (else StorageError; the previous checkpoint is kept);
    4. its digest is written beside it (atomically).
    """
    from .errors import StorageError

    path = Path(path)
    previous = _previous_path(path)
    recorded = _recorded_digests(path)
    if recorded and path.is_file() and (_VERIFIED.get(_stat_key(path)) or _sha256(path)) in recorded:
        if _digest_path(path).exists():
            os.replace(_digest_path(path), _digest_path(previous))
        os.replace(path, previous)
    written: dict[str, str] = {}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            hashing = _HashingFile(f)
            torch.save(state, hashing)
        written["sha256"] = hashing.sha256.hexdigest()

    atomic_write(path, write)
    if _sha256(path) != written["sha256"]:
        raise StorageError(f"{path}: reads back with another SHA-256 than was written; the previous "
                           f"checkpoint {previous.name} is kept")
    _write_digest(path, written["sha256"])
    if len(_VERIFIED) > 1000:
        _VERIFIED.clear()
    _VERIFIED[_stat_key(path)] = written["sha256"]


def remove_checkpoints(path: Path, *, keep_latest: bool) -> None:
    """Delete the previous checkpoint of the pair ``path`` belongs to (and the latest too unless
    ``keep_latest``), digests included. A finished run needs no fallback: its last checkpoint was read
    back and verified when it was written. Each is the whole model and its SGD momentum, 0.7 GB for a
    VGG-M-2048 head fused at ReLU5, so a table of heads would otherwise leave twice that per row."""
    latest, previous = _pair(Path(path))
    for p in (previous, latest)[: 1 if keep_latest else 2]:
        _digest_path(p).unlink(missing_ok=True)
        p.unlink(missing_ok=True)


def _resume_checkpoint(path: Path, cfg: TrainConfig, *, announce: bool = True) -> dict[str, Any]:
    """The checkpoint to resume from: ``path`` if it reads and its digest is recorded, else the previous
    one (a printed message names the file and why). A latest checkpoint of another configuration is a
    ConfigError; DataError when neither checkpoint can be used."""
    problems: list[str] = []
    for candidate in _pair(path):
        if not candidate.exists():
            problems.append(f"{candidate}: missing")
            continue
        try:
            ckpt = load_checkpoint(candidate)
        except DataError as e:
            problems.append(str(e))
            continue
        # a field added since the checkpoint was written counts with its default (which keeps the old behaviour)
        saved = {**TrainConfig().to_dict(), **ckpt["config"]}
        changed = sorted(k for k, v in cfg.to_dict().items() if k not in RESUME_FREE and saved.get(k) != v)
        if changed:
            was = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
            message = (f"{candidate}: the run was started with {was}, which differs from this "
                       "configuration; use another out_dir or resume=False")
            if candidate == path:
                raise ConfigError(message)
            problems.append(message)
            continue
        if announce and problems:
            print(f"{problems[0]}\n  -> resuming from the previous checkpoint {candidate} "
                  f"(epoch {ckpt['epoch']})", flush=True)
        if announce and _recorded_digests(candidate) is None:
            print(f"{candidate}: no SHA-256 beside it (written before digests were kept); resuming unverified",
                  flush=True)
        return ckpt
    raise DataError(f"{path.parent}: no checkpoint to resume from: " + "; ".join(problems)
                    + " (resume=False starts over)")


# ----------------------------------------------------------------------------- the loop

def _losses(output, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the batch (and over the output's loss heads) of the training loss.

    Class scores get cross-entropy, one term per entry of ``"logits"`` (Section 3.4 keeps both towers'
    losses); a model with an objective of its own (e.g. the demo's appearance pre-training) returns
    ``{"loss": [B]}``, its per-sample losses, and ``{"aux_loss": [B]}`` beside class scores adds an
    auxiliary objective to the cross-entropy.
    """
    if isinstance(output, dict) and "loss" in output:
        return output["loss"].float().sum()
    if isinstance(output, torch.Tensor):
        heads = [output]
    elif isinstance(output, dict) and output.get("logits"):
        heads = list(output["logits"])
    else:
        heads = [output_scores(output)]
    total = sum(F.cross_entropy(h.float(), labels, reduction="sum") for h in heads)
    if isinstance(output, dict) and "aux_loss" in output:  # an auxiliary objective's per-sample losses
        total = total + output["aux_loss"].float().sum()
    return total


def _has_scores(output) -> bool:
    """False for a model that returns only its own loss (no class scores, so no training accuracy)."""
    return not (isinstance(output, dict) and "scores" not in output)


def _param_groups(net: nn.Module, params: list[nn.Parameter], cfg: TrainConfig) -> list[dict]:
    """SGD parameter groups: all of ``params`` in one, or the weights and the biases (parameters named
    ``bias``) apart when biases learn at ``bias_lr_factor`` x the rate or without weight decay (the
    released code). MatConvNet's update (``m = 0.9 m - decay w - g; w += lr m``) equals PyTorch's SGD."""
    if cfg.bias_lr_factor == 1.0 and cfg.bias_decay:
        return [{"params": params}]
    name = {id(p): n for n, p in net.named_parameters()}
    is_bias = [name[id(p)].rsplit(".", 1)[-1] == "bias" for p in params]
    weights = [p for p, b in zip(params, is_bias) if not b]
    biases = [p for p, b in zip(params, is_bias) if b]
    groups = [{"params": weights}] if weights else []
    if biases:
        groups.append({"params": biases, "lr_factor": cfg.bias_lr_factor,
                       "weight_decay": cfg.weight_decay if cfg.bias_decay else 0.0})
    return groups


def _params_below(net: nn.Module, params: list[nn.Parameter], layer: str) -> list[nn.Parameter]:
    """The trainable parameters registered before the first one whose dotted name has the component
    ``layer``: in a feed-forward stack, the layers below it, which ``backprop_from`` freezes."""
    named = list(net.named_parameters())
    first = next((i for i, (n, _) in enumerate(named) if layer in n.split(".")), None)
    if first is None:
        layers = sorted({part for n, _ in named for part in n.split(".")[:-1] if not part.isdigit()})
        raise ConfigError(f"backprop_from={layer!r}: no parameter of {type(net).__name__} belongs to such a "
                          f"layer; its parameters' names have the components {layers}")
    chosen = {id(p) for p in params}
    return [p for _, p in named[:first] if id(p) in chosen]


def _train_mode(net: nn.Module) -> None:
    """``net.train()``, except normalisation layers whose parameters are all frozen stay in eval mode.

    A frozen tower must stay frozen: a batch-norm layer in training mode would normalise with batch
    statistics and update its running averages even though its weights do not train. (The paper's
    networks have no batch norm, Section 3.5; the demo backbones do.) This also keeps training on
    cached tower features (:mod:`twostream_lib.features`, computed in eval mode) equal to recomputing.
    """
    net.train()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


@torch.enable_grad()  # whatever the caller's mode (a notebook may have turned gradients off for its figures)
def train(model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig, *,
          trainable: Iterable[nn.Parameter] | None = None, val_fn: Callable[[nn.Module], float] | None = None,
          progress: bool | None = None, on_epoch_end: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` on ``train_set`` with SGD as in Section 3.5; validate and checkpoint every epoch.

    ``trainable``: the parameters to optimise (default: those with ``requires_grad``). Given
    explicitly, every other parameter is frozen (``requires_grad_(False)``), which is how "we only
    propagate back to the injected fusion layer" is done. Weight decay applies to these alone.
    Batch-norm layers whose parameters are all frozen run in eval mode (fixed statistics).
    ``val_fn(model) -> accuracy`` replaces the default validation, the video-level accuracy of
    :func:`twostream_lib.evaluate.predict` on ``val_set`` (under torchrun rank 0's value is used).
    ``progress`` overrides ``cfg.progress``; ``on_epoch_end(row)`` runs after each epoch's
    checkpoint (raising there interrupts the run; calling again with the same ``out_dir`` resumes).
    """
    show = cfg.progress if progress is None else progress
    rank, world_size = setup_distributed(cfg.device)
    device = _device(cfg, world_size)
    if cfg.batch_size < world_size:
        raise ConfigError(f"batch_size={cfg.batch_size} is smaller than the number of processes ({world_size})")
    if val_set is None and val_fn is None and cfg.lr_schedule == "plateau" and cfg.monitor == "val_acc":
        raise ConfigError("lr_schedule='plateau' with monitor='val_acc' needs val_set or val_fn: it lowers the "
                          "rate when the validation accuracy stops improving, and there is no validation here "
                          "(give one, or set monitor='train_acc' / 'train_loss', or a fixed lr_schedule: "
                          f"{[s for s in SCHEDULES if s != 'plateau']})")
    if cfg.deterministic:
        deterministic(True, warn_only=device.type == "cuda")
    seed_everything(cfg.seed)

    net = unwrap(model)
    params = [p for p in net.parameters() if p.requires_grad] if trainable is None else list(trainable)
    if trainable is not None:
        chosen = {id(p) for p in params}
        owned = {id(p) for p in net.parameters()}
        if not chosen <= owned:
            raise ConfigError("train: `trainable` holds parameters that are not the model's")
        for p in net.parameters():
            p.requires_grad_(id(p) in chosen)
    if not params:
        raise ConfigError("train: no trainable parameters (all have requires_grad=False)")
    if cfg.dropout is not None:
        for m in net.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.p = cfg.dropout
    from .models.twostream import to_device  # NHWC weights (and backbone inputs) when asked

    to_device(net, device, channels_last=cfg.channels_last)
    optimizer = torch.optim.SGD(_param_groups(net, params, cfg), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    schedule = LRSchedule(cfg, optimizer)
    below = _params_below(net, params, cfg.backprop_from) if cfg.backprop_from and cfg.backprop_epochs else []
    history: list[dict] = []
    start = 0

    out = Path(cfg.out_dir) if cfg.out_dir else None
    ckpt_path = out / "checkpoint.pt" if out else None
    if ckpt_path is not None and cfg.resume and (ckpt_path.exists() or _previous_path(ckpt_path).exists()):
        # the latest checkpoint if it matches its digest, else the previous one (a message says why)
        ckpt = _resume_checkpoint(ckpt_path, cfg, announce=rank == 0)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"], epoch=int(ckpt["epoch"]))
        history, start = list(ckpt["history"]), int(ckpt["epoch"])
        set_rng_state(ckpt["rng"])
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        run_info = {"world_size": world_size, "device": str(device), "amp": use_amp(cfg.amp, device),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "model": type(net).__name__, "trainable_parameters": sum(p.numel() for p in params),
                    "train_samples": len(train_set), "val_samples": None if val_set is None else len(val_set),
                    "resumed_from_epoch": start}
        atomic_write(out / "config.json",
                           json.dumps({"train": cfg.to_dict(), "run": run_info}, indent=2) + "\n")

    def wrap() -> nn.Module:
        """The model a step calls: DDP over the parameters that train now (rebuilt when that set changes)."""
        if world_size == 1:
            return net
        return torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.ddp_find_unused)

    ddp_model, frozen_below = net, None

    def validate() -> float:
        if val_fn is not None:
            was_training = net.training
            net.eval()
            try:
                return _broadcast(float(val_fn(net)))
            finally:
                net.train(was_training)
        if val_set is None:
            return math.nan
        return accuracy(predict(net, val_set, batch_size=cfg.val_batch_size or cfg.batch_size, device=device,
                                input_keys=cfg.input_keys, workers=cfg.workers, amp=cfg.amp,
                                channels_last=cfg.channels_last))

    from tqdm import tqdm

    epochs_bar = tqdm(total=cfg.epochs, initial=min(start, cfg.epochs), desc="epochs",
                      disable=not show or rank != 0, dynamic_ncols=True)
    try:
        for epoch in range(start, cfg.epochs):
            if schedule.stopped:
                break
            t0 = time.perf_counter()
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            seed_everything(derive_seed(cfg.seed, epoch, rank, 1))
            sampler = GlobalBatchSampler(len(train_set), cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=rank,
                                         world_size=world_size, drop_last=cfg.drop_last)
            loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.workers,
                                pin_memory=device.type == "cuda", worker_init_fn=worker_init_fn,
                                generator=torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, 2)))
            lr = schedule.lr  # set on the optimizer's groups by the schedule
            if (bool(below) and epoch < cfg.backprop_epochs) != frozen_below:  # released backpropDepth phases
                frozen_below = bool(below) and epoch < cfg.backprop_epochs
                for p in below:
                    p.requires_grad_(not frozen_below)
                ddp_model = wrap()
            _train_mode(net)
            # summed on the device: no host synchronisation per step (the bar reads them every 10 steps)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            count, scored = 0, True
            batches = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not show or rank != 0,
                           dynamic_ncols=True)
            for step, batch in enumerate(batches):
                inputs = model_inputs(batch, cfg.input_keys, device, cfg.channels_last)
                labels = batch["label"].to(device, non_blocking=True)
                with autocast(cfg.amp, device):
                    output = ddp_model(*inputs)
                summed = _losses(output, labels)
                # mean over the *global* batch; DDP averages gradients over processes, hence * world
                loss = summed * (world_size / sampler.global_sizes[step])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += summed.detach()
                if _has_scores(output):
                    correct += (output_scores(output).detach().argmax(1) == labels).sum()
                else:
                    scored = False
                count += len(labels)
                if show and rank == 0 and step % 10 == 0:
                    batches.set_postfix(loss=f"{float(loss_sum) / count:.3f}", acc=f"{int(correct) / count:.3f}")
            loss_sum, correct, count = _all_sum([float(loss_sum), float(correct), float(count)], device)
            last = epoch + 1 == cfg.epochs
            val_acc = validate() if ((epoch + 1) % cfg.val_every == 0 or last) else math.nan
            train_acc = correct / count if scored else math.nan
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / count, "train_acc": train_acc,
                   "val_acc": val_acc, "time": round(time.perf_counter() - t0, 3)}
            history.append(row)
            schedule.step(epoch + 1, row)
            if out is not None and rank == 0:
                _write_metrics(out / "metrics.csv", history)
                if (epoch + 1) % cfg.checkpoint_every == 0 or last or schedule.stopped:
                    _save_checkpoint(ckpt_path, {
                        "format": 1, "epoch": epoch + 1, "model": net.state_dict(),
                        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                        "history": history, "rng": rng_state(), "config": cfg.to_dict()})
            if world_size > 1:
                torch.distributed.barrier()
            epochs_bar.update(1)
            epochs_bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val_acc:.3f}")
            if on_epoch_end is not None:
                on_epoch_end(row)
    finally:
        epochs_bar.close()
        for p in below:  # a run that ends within the frozen phase leaves the model as it was given
            p.requires_grad_(True)
    if ckpt_path is not None and rank == 0 and history and (history[-1]["epoch"] >= cfg.epochs or schedule.stopped):
        remove_checkpoints(ckpt_path, keep_latest=True)  # finished: the verified last checkpoint is enough

    vals = [r["val_acc"] for r in history if not math.isnan(r["val_acc"])]
    best = max(vals) if vals else math.nan
    best_epoch = next((r["epoch"] for r in history if r["val_acc"] == best), 0)
    return TrainResult(history, best, out, net, best_epoch, schedule.stopped)
