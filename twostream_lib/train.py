"""Training engine: the paper's protocol, resumable, deterministic, single- or multi-process.

Section 3.5 of the paper ("Two-Stream ConvNet fusion"): the fused networks are fine-tuned with SGD
(momentum 0.9, weight decay 5e-4), a batch size of 96 and a learning rate starting at 1e-3 that is
reduced by a factor of 10 as soon as the validation accuracy saturates; dropout 0.85 for the FC
layers; gradients are only propagated back to the injected fusion layer. The streams themselves are
trained the same way, lowering the learning rate "after the validation error saturates" instead of
on a fixed schedule. :class:`TrainConfig` holds those defaults; :func:`train` is the one entry point
used by notebooks and by ``python -m twostream_lib train``.

The engine is generic: a model is called as ``model(*[batch[k] for k in cfg.input_keys])`` and
returns either a [B, C] tensor or ``{"scores": [B, C], "logits": [[B, C], ...]}``; the loss is the
sum of one cross-entropy per entry of ``"logits"`` (the paper keeps both towers' losses after 3D
fusion, Section 3.4) and ``"scores"`` give the prediction.

Outputs in ``cfg.out_dir``::

    config.json     resolved configuration (plain JSON) and facts about the run
    metrics.csv     one row per epoch: epoch, lr (used in it), train_loss (mean per clip, summed over
                    the loss heads), train_acc (clip level), val_acc (video level), time (s, with validation)
    checkpoint.pt   model/optimizer/schedule state, epoch, history, RNG states (weights_only-safe)

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
import time
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
    "setup_distributed",
    "cleanup_distributed",
]

SCHEDULES = ("plateau", "step", "cosine", "constant")
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
    # "step" and "cosine" (from lr to min_lr over `epochs`) need no validation (e.g. the demo's fixed budget)
    lr_schedule: str = "plateau"  # "plateau" | "step" | "cosine" | "constant"
    monitor: str = "val_acc"  # "val_acc" | "train_acc" | "train_loss" (plateau only)
    lr_factor: float = 0.1
    patience: int = 2  # epochs without improvement before a reduction
    min_lr: float = 1e-6
    max_reductions: int = 2
    stop_on_plateau: bool = True  # saturating again after max_reductions ends training
    step_size: int = 10  # "step": lr * lr_factor ** (epoch // step_size)
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
        if self.out_dir is not None:
            self.out_dir = str(self.out_dir)
        checks = [
            ("lr", self.lr > 0), ("momentum", 0 <= self.momentum < 1), ("weight_decay", self.weight_decay >= 0),
            ("batch_size", self.batch_size >= 1), ("epochs", self.epochs >= 0),
            ("lr_schedule", self.lr_schedule in SCHEDULES), ("monitor", self.monitor in MONITORS),
            ("lr_factor", 0 < self.lr_factor < 1), ("patience", self.patience >= 0), ("min_lr", self.min_lr >= 0),
            ("max_reductions", self.max_reductions >= 0), ("step_size", self.step_size >= 1),
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

class LRSchedule:
    """Learning rate per epoch: "reduce by 10x when validation accuracy saturates", step, cosine or constant.

    ``plateau`` (Section 3.5): after ``patience`` epochs without improvement of ``monitor`` the rate is
    multiplied by ``lr_factor``, at most ``max_reductions`` times and not below ``min_lr``; a further
    saturation then stops training when ``stop_on_plateau``. Its state is plain numbers (checkpointed).
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.lr = cfg.lr
        self.best: float | None = None
        self.bad_epochs = 0
        self.reductions = 0
        self.stopped = False

    def step(self, epoch: int, metrics: dict[str, float]) -> None:
        """Update after ``epoch`` completed epochs given that epoch's metrics."""
        cfg = self.cfg
        if cfg.lr_schedule == "step":
            self.lr = cfg.lr * cfg.lr_factor ** (epoch // cfg.step_size)
        elif cfg.lr_schedule == "cosine":
            progress = min(epoch / max(cfg.epochs, 1), 1.0)
            self.lr = cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if cfg.lr_schedule != "plateau":
            return
        value = metrics.get(cfg.monitor, math.nan)
        if value is None or math.isnan(value):
            return  # not validated this epoch
        sign = -1.0 if cfg.monitor == "train_loss" else 1.0
        if self.best is None or sign * value > sign * self.best:
            self.best, self.bad_epochs = float(value), 0
            return
        self.bad_epochs += 1
        if self.bad_epochs <= cfg.patience:
            return
        self.bad_epochs = 0
        if self.reductions < cfg.max_reductions and self.lr > cfg.min_lr:
            self.lr = max(self.lr * cfg.lr_factor, cfg.min_lr)
            self.reductions += 1
        elif cfg.stop_on_plateau:
            self.stopped = True

    def state_dict(self) -> dict[str, Any]:
        return {"lr": float(self.lr), "best": self.best, "bad_epochs": self.bad_epochs,
                "reductions": self.reductions, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr, self.best = float(state["lr"]), state["best"]
        self.bad_epochs, self.reductions = int(state["bad_epochs"]), int(state["reductions"])
        self.stopped = bool(state["stopped"])


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


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train` (``torch.load(weights_only=True)``, on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no checkpoint there")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise DataError(f"{path}: not a readable checkpoint ({e})") from e
    missing = {"model", "optimizer", "schedule", "epoch", "history", "rng", "config"} - set(ckpt)
    if missing:
        raise DataError(f"{path}: checkpoint lacks {sorted(missing)}")
    return ckpt


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


# ----------------------------------------------------------------------------- the loop

def _losses(output, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the batch (and over the output's loss heads) of the training loss.

    Class scores get cross-entropy, one term per entry of ``"logits"`` (Section 3.4 keeps both towers'
    losses); a model with an objective of its own (e.g. the demo's appearance pre-training) returns
    ``{"loss": [B]}``, its per-sample losses.
    """
    if isinstance(output, dict) and "loss" in output:
        return output["loss"].float().sum()
    if isinstance(output, torch.Tensor):
        heads = [output]
    elif isinstance(output, dict) and output.get("logits"):
        heads = list(output["logits"])
    else:
        heads = [output_scores(output)]
    return sum(F.cross_entropy(h.float(), labels, reduction="sum") for h in heads)


def _has_scores(output) -> bool:
    """False for a model that returns only its own loss (no class scores, so no training accuracy)."""
    return not (isinstance(output, dict) and "scores" not in output)


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
        raise ConfigError("lr_schedule='plateau' with monitor='val_acc' needs val_set or val_fn "
                          "(or set monitor='train_acc' / lr_schedule='step')")
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
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = LRSchedule(cfg)
    history: list[dict] = []
    start = 0

    out = Path(cfg.out_dir) if cfg.out_dir else None
    ckpt_path = out / "checkpoint.pt" if out else None
    if ckpt_path is not None and ckpt_path.exists() and cfg.resume:
        ckpt = load_checkpoint(ckpt_path)
        saved = ckpt["config"]
        changed = sorted(k for k, v in cfg.to_dict().items() if k not in RESUME_FREE and saved.get(k) != v)
        if changed:
            was = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
            raise ConfigError(f"{ckpt_path}: the run was started with {was}, which differs from this "
                              "configuration; use another out_dir or resume=False")
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
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

    ddp_model: nn.Module = net
    if world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.ddp_find_unused)

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
            lr = schedule.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
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

    vals = [r["val_acc"] for r in history if not math.isnan(r["val_acc"])]
    best = max(vals) if vals else math.nan
    best_epoch = next((r["epoch"] for r in history if r["val_acc"] == best), 0)
    return TrainResult(history, best, out, net, best_epoch, schedule.stopped)
