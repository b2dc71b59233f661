"""Feature caching for fusion experiments with frozen towers.

Section 3.5: "We only propagate back to the injected fusion layer, since full backpropagation did
not result in an improvement." With the towers frozen below the fusion layer, every epoch of a
fusion experiment recomputes the same tower activations for the same clips; only the fusion layer
and what follows it learn. This module computes ``model.fusion_inputs(rgb, flow)`` once:

* for the training set, ``epochs`` augmented passes (``set_epoch(k)``, one random clip per video
  each), replayed cyclically: training epoch ``e`` sees cached pass ``e % epochs``, which is exactly
  the clip the uncached run draws at epoch ``e`` while ``e < epochs``;
* for the test views, one pass.

A :class:`FeatureSet` returns ``{"fa", "fb", "label", "video", "view"}`` per sample and
:class:`FeatureHead` calls ``model.head(fa, fb)``, so :func:`twostream_lib.train.train` and
:func:`twostream_lib.evaluate.predict` run unchanged with ``input_keys=("fa", "fb")``::

    feats = cache_fusion_inputs(model, clips, epochs=cfg.epochs, path="cache/train.npz")
    views = cache_fusion_inputs(model, test_views, path="cache/test.npz")
    train(FeatureHead(model), feats, views, dataclasses.replace(cfg, input_keys=FEATURE_KEYS))

The cache is only valid while the towers stay frozen and have no stochastic layers below the fusion
layer (the paper's towers have neither dropout nor batch normalisation there, Section 3.5); the
towers are run in eval mode and an error is raised if ``fusion_inputs`` needs gradients.
A saved cache carries a fingerprint of the model's weights, the data set (type, size, seed, sampling,
test mode and crop, video names where it has them) and the number of passes; a mismatch recomputes it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .errors import ConfigError, DataError
from .files import atomic_write
from .engine import model_inputs, unwrap, world

__all__ = ["FEATURE_KEYS", "FeatureSet", "FeatureHead", "cache_fusion_inputs", "model_fingerprint"]

FEATURE_KEYS = ("fa", "fb")


class FeatureSet(Dataset):
    """Cached fusion inputs: ``fa``/``fb`` [K, N, ...] for K passes over N samples.

    ``set_epoch(e)`` selects pass ``e % K``; ``__getitem__(i)`` gives
    ``{"fa": Tensor, "fb": Tensor, "label": int, "video": str, "view": int}``.
    """

    def __init__(self, fa: np.ndarray, fb: np.ndarray, labels: np.ndarray, videos: Sequence[str],
                 views: np.ndarray, fingerprint: str = ""):
        n = len(videos)
        if fa.ndim < 2 or fb.ndim < 2 or fa.shape[:2] != fb.shape[:2] or fa.shape[1] != n:
            raise DataError(f"FeatureSet: fa {list(fa.shape)} and fb {list(fb.shape)} must be [K, {n}, ...]")
        self.fa, self.fb = fa, fb
        self.labels = np.asarray(labels, dtype=np.int64)
        self.videos = [str(v) for v in videos]
        self.views = np.asarray(views, dtype=np.int64)
        self.fingerprint = fingerprint
        self.epoch = 0

    @property
    def passes(self) -> int:
        return int(self.fa.shape[0])

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict:
        k = self.epoch % self.passes
        return {"fa": torch.from_numpy(np.ascontiguousarray(self.fa[k, i])),
                "fb": torch.from_numpy(np.ascontiguousarray(self.fb[k, i])),
                "label": int(self.labels[i]), "video": self.videos[i], "view": int(self.views[i])}

    def nbytes(self) -> int:
        return int(self.fa.nbytes + self.fb.nbytes)

    def save(self, path: str | Path) -> Path:
        """Write an uncompressed npz, atomically."""
        return atomic_write(path, lambda tmp: np.savez(
            tmp, fa=self.fa, fb=self.fb, labels=self.labels, videos=np.asarray(self.videos, dtype=np.str_),
            views=self.views, fingerprint=np.asarray(self.fingerprint)))

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no feature cache there")
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["fa"], z["fb"], z["labels"], [str(v) for v in z["videos"]], z["views"],
                           str(z["fingerprint"]))
        except (KeyError, ValueError, OSError) as e:
            raise DataError(f"{path}: not a feature cache written by FeatureSet.save ({e})") from e


class FeatureHead(nn.Module):
    """``forward(fa, fb) = model.head(fa, fb)``: the part of a two-stream model above the fusion inputs.

    Holds the whole model, so its ``state_dict`` (and a training checkpoint) restores the whole
    model; only parameters with ``requires_grad`` (the head's, with frozen towers) are trained.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(unwrap(model), "head"):
            raise ConfigError(f"FeatureHead: {type(model).__name__} has no head(fa, fb) method")
        self.model = unwrap(model)

    def forward(self, fa: torch.Tensor, fb: torch.Tensor):
        return self.model.head(fa, fb)


def model_fingerprint(model: nn.Module, *extra: object) -> str:
    """SHA-1 over the model's state (names, shapes, values) and ``extra`` values."""
    h = hashlib.sha1()
    for name, t in unwrap(model).state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([str(e) for e in extra]).encode())
    return h.hexdigest()


def _stored_fingerprint(path: Path) -> str | None:
    """The fingerprint saved in a cache file (read without loading the arrays), None if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["fingerprint"])
    except (OSError, KeyError, ValueError):
        return None


@torch.no_grad()
def _compute(net: nn.Module, dataset: Dataset, passes: int, batch_size: int, device: torch.device,
             input_keys: Sequence[str], dtype: np.dtype, workers: int, progress: bool, fingerprint: str) -> FeatureSet:
    from tqdm import tqdm

    n = len(dataset)
    fa = fb = None
    labels = np.zeros(n, np.int64)
    views = np.zeros(n, np.int64)
    videos: list[str] = [""] * n
    bar = tqdm(total=passes * n, desc="caching fusion inputs", disable=not progress, dynamic_ncols=True)
    for k in range(passes):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(k)
        pos = 0
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers):
            a, b = net.fusion_inputs(*model_inputs(batch, input_keys, device))
            if fa is None:
                fa = np.zeros((passes, n, *a.shape[1:]), dtype)
                fb = np.zeros((passes, n, *b.shape[1:]), dtype)
            m = len(a)
            fa[k, pos:pos + m] = a.float().cpu().numpy()
            fb[k, pos:pos + m] = b.float().cpu().numpy()
            if k == 0:
                labels[pos:pos + m] = np.asarray(batch["label"])
                views[pos:pos + m] = np.asarray(batch["view"]) if "view" in batch else 0
                videos[pos:pos + m] = (list(batch["video"]) if "video" in batch
                                       else [str(i) for i in range(pos, pos + m)])
            pos += m
            bar.update(m)
    bar.close()
    return FeatureSet(fa, fb, labels, videos, views, fingerprint)


def cache_fusion_inputs(model: nn.Module, dataset: Dataset, *, epochs: int = 1, path: str | Path | None = None,
                        batch_size: int = 32, device: str | torch.device = "cpu",
                        input_keys: Sequence[str] = ("rgb", "flow"), dtype: str = "float32", workers: int = 0,
                        progress: bool = False) -> FeatureSet:
    """Run the frozen towers once and keep ``model.fusion_inputs(rgb, flow)`` for ``epochs`` passes.

    ``dataset`` is the training clips (``epochs`` = number of distinct augmented passes to cache;
    with ``epochs`` >= the training epochs the cached run sees the same clips as an uncached one)
    or the test views (``epochs=1``). With ``path``, a cache there with the same fingerprint is
    loaded instead, and a new one is written there (npz). ``dtype="float16"`` halves the memory.
    Under torchrun, rank 0 computes and writes ``path`` while the others wait, then load it.
    """
    net = unwrap(model)
    if not hasattr(net, "fusion_inputs"):
        raise ConfigError(f"cache_fusion_inputs: {type(net).__name__} has no fusion_inputs(rgb, flow) method")
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"cache_fusion_inputs: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if dtype not in ("float32", "float16"):
        raise ConfigError(f"cache_fusion_inputs: dtype must be 'float32' or 'float16', got {dtype!r}")
    if len(dataset) == 0:
        raise DataError("cache_fusion_inputs: the data set is empty")
    device = torch.device(device)
    was_training = net.training
    net.eval()
    try:
        probe = torch.utils.data.default_collate([dataset[0]])
        with torch.enable_grad():
            a, b = net.fusion_inputs(*model_inputs(probe, input_keys, device))
        if a.requires_grad or b.requires_grad:
            raise ConfigError("cache_fusion_inputs: the towers below the fusion layer have trainable parameters; "
                              "caching their outputs is only valid when they are frozen (Section 3.5: "
                              "back-propagate only to the fusion layer) - call requires_grad_(False) on them")
        items = getattr(dataset, "items", None)
        fingerprint = model_fingerprint(  # the model's weights and what defines the samples
            net, type(dataset).__name__, len(dataset), epochs, dtype, tuple(input_keys),
            *(getattr(dataset, a, None) for a in ("seed", "sampling", "mode", "crop")),
            None if items is None else [getattr(i, "name", i) for i in items])
        rank, world_size = world()
        if path is not None:
            path = Path(path)
            if rank == 0 and _stored_fingerprint(path) != fingerprint:
                _compute(net, dataset, epochs, batch_size, device, input_keys, np.dtype(dtype), workers,
                         progress, fingerprint).save(path)
            if world_size > 1:
                torch.distributed.barrier()
            feats = FeatureSet.load(path)
            if feats.fingerprint != fingerprint:
                raise DataError(f"{path}: feature cache does not match the model/data set")
            return feats
        return _compute(net, dataset, epochs, batch_size, device, input_keys, np.dtype(dtype), workers,
                        progress, fingerprint)
    finally:
        net.train(was_training)
