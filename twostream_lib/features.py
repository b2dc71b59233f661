"""Feature caching for fusion experiments with frozen towers, in memory or memory-mapped on disk.

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

    feats = cache_fusion_inputs(model, clips, epochs=cfg.epochs, path="cache/relu5-train")
    views = cache_fusion_inputs(model, test_views, path="cache/relu5-test")
    train(FeatureHead(model), feats, views, dataclasses.replace(cfg, input_keys=FEATURE_KEYS))

Where the features live. Without ``path`` they are numpy arrays in memory [K passes, N samples, ...].
At paper size that does not fit: at T = 5 a video's ReLU5 maps of VGG-16 and VGG-M-2048 are 3.7 MB in
float32, so Table 4's 9537 training videos take 35 GB per pass (``benchmarks/bench_cache.py`` records
every layer). With ``path`` the cache is a folder of memory-mapped shards, written batch by batch
while the towers run (only one batch is ever held in memory) and read back at disk speed::

    <path>/meta.json            fingerprint, dtype, samples, passes written, shapes
    <path>/index.npz            labels, views, videos; where each sample lies in a pass (offsets, shapes)
    <path>/fa.bin, fb.bin       raw C-order [K, N, ...] of each tower, K passes one after the other

The ``.bin`` shards are ``fa.bin.part``/``fb.bin.part`` while they grow; ``meta.json`` (written
atomically after each pass) says how many passes they hold, so an interrupted run resumes at the
first missing pass, and asking for more passes later computes only the new ones. The default dtype
is float16 when the towers run on a GPU (half the bytes; the head casts them back, or autocast
takes them) and float32 on the CPU, where the demo's numbers depend on it.

Whole frames of different sizes (HMDB51 keeps each clip's aspect ratio) give maps of different
sizes: such a set stores each sample's maps flat at its own offset (``FeatureSet.uniform`` is
False), its samples come out with their own shapes, and :func:`~twostream_lib.evaluate.predict`
runs them in groups of equal shape.

Batched reading: :meth:`FeatureSet.__getitems__` (what torch's DataLoader calls with a batch of
indices, passing its result to the collate function) gathers a whole batch with one indexing
operation per tower and returns it already collated, so training a small head does not pay a Python
round trip per sample; ``default_collate`` passes such a batch through unchanged.

The cache is only valid while the towers stay frozen and have no stochastic layers below the fusion
layer (the paper's towers have neither dropout nor batch normalisation there, Section 3.5); the
towers are run in eval mode and an error is raised if ``fusion_inputs`` needs gradients.
A cache carries a fingerprint of the model's weights, the data set (type, size, seed, sampling,
test mode and crop, video names where it has them) and the dtype; a mismatch recomputes it.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .engine import model_inputs, unwrap, world
from .errors import ConfigError, DataError, StorageError
from .evaluate import _Indexed, group_collate
from .files import STORAGE_ERRNOS, atomic_write, atomic_write_json

__all__ = ["FEATURE_KEYS", "DTYPES", "FeatureSet", "FeatureHead", "cache_fusion_inputs", "default_dtype",
           "model_fingerprint"]

FEATURE_KEYS = ("fa", "fb")
DTYPES = ("float32", "float16")
CACHE_FORMAT = 1
_TOWERS = ("fa", "fb")
_META, _INDEX = "meta.json", "index.npz"


def default_dtype(device: str | torch.device) -> str:
    """float16 for towers on a GPU (half the disk and memory), float32 on the CPU (the demo's numbers)."""
    return "float16" if torch.device(device).type == "cuda" else "float32"


# ----------------------------------------------------------------------------- batches

class _Batch(dict):
    """A batch that :meth:`FeatureSet.__getitems__` has already collated."""


def _collate_batch(batch, *, collate_fn_map=None):
    return dict(batch[0])


def _register_batch() -> bool:
    """Let ``default_collate`` pass a :class:`_Batch` through: torch documents extending it by adding a type
    to ``default_collate_fn_map`` (``torch.utils.data._utils.collate.collate``). Without that registry
    (another torch), ``__getitems__`` falls back to returning the samples one by one."""
    try:
        from torch.utils.data._utils.collate import default_collate_fn_map
    except ImportError:
        return False
    default_collate_fn_map[_Batch] = _collate_batch
    return True


_BATCHED = _register_batch()


class _Ragged(NamedTuple):
    """Where each sample's map lies in a pass of a set whose samples differ in shape."""

    offsets: np.ndarray  # int64 [N]: first element of sample i in a pass
    shapes: np.ndarray  # int64 [N, d]: its shape


def _owned(x: np.ndarray) -> np.ndarray:
    """A contiguous array a tensor may share: read-only mapped maps are copied out of the file."""
    return np.array(x) if isinstance(x, np.memmap) or not x.flags.writeable else np.ascontiguousarray(x)


def _gather(rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``rows[idx]`` as a new array. A memory-mapped shard is read row by row in ascending file order
    (sequential on disk) straight into the batch: no second copy of the batch in memory."""
    if not isinstance(rows, np.memmap):
        return rows[idx]
    out = np.empty((len(idx), *rows.shape[1:]), rows.dtype)
    for j in np.argsort(idx, kind="stable").tolist():
        out[j] = rows[idx[j]]
    return out


# ----------------------------------------------------------------------------- the data set

class FeatureSet(Dataset):
    """Cached fusion inputs: ``fa``/``fb`` [K, N, ...] for K passes over N samples (Section 3.5).

    ``set_epoch(e)`` selects pass ``e % K``; ``__getitem__(i)`` gives
    ``{"fa": Tensor, "fb": Tensor, "label": int, "video": str, "view": int}`` and ``__getitems__``
    a whole collated batch. ``fa``/``fb`` are numpy arrays in memory, or memory-mapped shards for a
    set opened from disk (:meth:`open`, ``path`` set). A set whose samples differ in shape (whole
    frames of different widths) holds each pass flat, ``fa``/``fb`` [K, elements], with ``ragged``
    saying where each sample lies; ``uniform`` is False then.
    """

    def __init__(self, fa: np.ndarray, fb: np.ndarray, labels: np.ndarray, videos: Sequence[str],
                 views: np.ndarray, fingerprint: str = "", *, ragged: tuple[_Ragged, _Ragged] | None = None,
                 path: str | Path | None = None):
        n = len(videos)
        if ragged is None:
            if fa.ndim < 2 or fb.ndim < 2 or fa.shape[:2] != fb.shape[:2] or fa.shape[1] != n:
                raise DataError(f"FeatureSet: fa {list(fa.shape)} and fb {list(fb.shape)} must be [K, {n}, ...]")
        else:
            if fa.ndim != 2 or fb.ndim != 2 or fa.shape[0] != fb.shape[0]:
                raise DataError(f"FeatureSet: a set of samples of different shapes holds fa and fb as [K, elements]; "
                                f"got {list(fa.shape)} and {list(fb.shape)}")
            for name, flat, r in zip(_TOWERS, (fa, fb), ragged):
                if r.offsets.shape != (n,) or r.shapes.shape[0] != n:
                    raise DataError(f"FeatureSet: {name} offsets/shapes must describe {n} samples")
                if n and int((r.offsets + r.shapes.prod(1)).max()) > flat.shape[1]:
                    raise DataError(f"FeatureSet: {name} offsets point past the {flat.shape[1]} elements of a pass")
        self.fa, self.fb = fa, fb
        self.ragged = ragged
        self.labels = np.asarray(labels, dtype=np.int64)
        self.videos = [str(v) for v in videos]
        self.views = np.asarray(views, dtype=np.int64)
        self.fingerprint = fingerprint
        self.path = None if path is None else Path(path)
        self.epoch = 0

    @property
    def passes(self) -> int:
        return int(self.fa.shape[0])

    @property
    def uniform(self) -> bool:
        """True when every sample's maps have one shape (fa, fb are [K, N, ...])."""
        return self.ragged is None

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _sample(self, tower: int, k: int, i: int) -> np.ndarray:
        flat = (self.fa, self.fb)[tower]
        if self.ragged is None:
            return flat[k, i]
        r = self.ragged[tower]
        start, shape = int(r.offsets[i]), tuple(int(d) for d in r.shapes[i])
        return flat[k, start:start + math.prod(shape)].reshape(shape)

    def __getitem__(self, i: int) -> dict:
        k = self.epoch % self.passes
        return {"fa": torch.from_numpy(_owned(self._sample(0, k, i))),
                "fb": torch.from_numpy(_owned(self._sample(1, k, i))),
                "label": int(self.labels[i]), "video": self.videos[i], "view": int(self.views[i])}

    def __getitems__(self, indices: Sequence[int]) -> list:
        """A batch for torch's DataLoader (which calls this with a batch sampler's indices and hands the
        result to its collate function): ``[batch]``, the batch already collated (``default_collate``
        passes it through), the same tensors ``default_collate`` makes of the samples one by one.
        Samples of different shapes are returned one by one, for a collate that groups them."""
        idx = np.asarray(indices, dtype=np.int64)
        if not _BATCHED or not self.uniform:
            return [self[int(i)] for i in idx]
        k = self.epoch % self.passes
        return [_Batch(fa=torch.from_numpy(_gather(self.fa[k], idx)), fb=torch.from_numpy(_gather(self.fb[k], idx)),
                       label=torch.from_numpy(self.labels[idx]), video=[self.videos[i] for i in idx],
                       view=torch.from_numpy(self.views[idx]))]

    def feature_bytes(self) -> int:
        """Bytes of all cached maps, in memory or on disk."""
        return int(self.fa.nbytes + self.fb.nbytes)

    def nbytes(self) -> int:
        """Bytes of maps held in memory: all of them, or none for a memory-mapped set (the page cache
        holds what was read recently, and the system reclaims it when it needs the memory)."""
        return 0 if self.path is not None else self.feature_bytes()

    def save(self, path: str | Path) -> Path:
        """Write the set as a cache folder (the format :meth:`open` reads); returns ``path``."""
        path = Path(path)
        sink = _DiskSink(path, self.fa.dtype, len(self), self.passes, self.fingerprint, start=0)
        for k in range(self.passes):
            if self.uniform:
                sink.write(k, np.arange(len(self)), self.fa[k], self.fb[k])
            else:
                for i in range(len(self)):
                    sink.write(k, np.array([i]), self._sample(0, k, i)[None], self._sample(1, k, i)[None])
            sink.end_pass(k, self.labels, self.videos, self.views)
        sink.finish()
        return path

    @classmethod
    def open(cls, path: str | Path, passes: int | None = None) -> "FeatureSet":
        """Open a cache folder written by :func:`cache_fusion_inputs` (or :meth:`save`), its shards
        memory-mapped read-only; ``passes``: only the first ones (default: all)."""
        path = Path(path)
        meta = _read_meta(path)
        if meta is None:
            raise DataError(f"{path}: no feature cache there (expected a folder with {_META} written by "
                            f"cache_fusion_inputs or FeatureSet.save)")
        if not meta.get("complete"):
            raise DataError(f"{path}: the feature cache is incomplete ({meta.get('passes', 0)} passes written); "
                            f"run cache_fusion_inputs again to finish it")
        stored = int(meta["passes"])
        passes = stored if passes is None else int(passes)
        if not 1 <= passes <= stored:
            raise DataError(f"{path}: holds {stored} passes, asked for {passes}")
        dtype, n = np.dtype(meta["dtype"]), int(meta["samples"])
        try:
            with np.load(path / _INDEX, allow_pickle=False) as z:
                labels, views, videos = z["labels"], z["views"], [str(v) for v in z["videos"]]
                layouts = [_Ragged(z[f"offsets_{t}"], z[f"shapes_{t}"]) for t in _TOWERS]
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{path / _INDEX}: not a feature-cache index ({e})") from e
        arrays = []
        for t, layout in zip(_TOWERS, layouts):
            file, elements = path / f"{t}.bin", int(meta[f"elements_{t}"])
            want = stored * elements * dtype.itemsize
            size = file.stat().st_size if file.is_file() else None
            if size != want:
                raise DataError(f"{file}: expected {want} bytes ({stored} passes of {elements} {dtype} values), "
                                f"found {'no file' if size is None else f'{size} bytes'}; delete {path} to recompute")
            flat = np.memmap(file, dtype=dtype, mode="r", shape=(stored, elements))[:passes]
            shape = meta[f"shape_{t}"]
            arrays.append(flat if shape is None else flat.reshape(passes, n, *shape))
        ragged = None if meta["shape_fa"] is not None and meta["shape_fb"] is not None else tuple(layouts)
        if ragged is not None:  # flat views for both towers
            arrays = [a.reshape(passes, -1) for a in arrays]
        return cls(arrays[0], arrays[1], labels, videos, views, meta["fingerprint"], ragged=ragged, path=path)

    load = open

    def __getstate__(self) -> dict:
        # a memory-mapped set travels to DataLoader workers (spawn) as its folder, not as a copy of its maps
        state = dict(self.__dict__)
        if self.path is not None:
            state["fa"] = state["fb"] = None
            state["_passes"] = self.passes
        return state

    def __setstate__(self, state: dict) -> None:
        passes = state.pop("_passes", None)
        self.__dict__.update(state)
        if self.fa is None:
            fresh = type(self).open(self.path, passes)
            self.fa, self.fb, self.ragged = fresh.fa, fresh.fb, fresh.ragged


class FeatureHead(nn.Module):
    """``forward(fa, fb) = model.head(fa, fb)``: the part of a two-stream model above the fusion inputs.

    Holds the whole model, so its ``state_dict`` (and a training checkpoint) restores the whole
    model; only parameters with ``requires_grad`` (the head's, with frozen towers) are trained.
    Features cached in float16 reach the head in its own dtype (unless autocast decides).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(unwrap(model), "head"):
            raise ConfigError(f"FeatureHead: {type(model).__name__} has no head(fa, fb) method")
        self.model = unwrap(model)

    def forward(self, fa: torch.Tensor, fb: torch.Tensor):
        param = next(self.model.parameters(), None)
        if param is not None and fa.dtype != param.dtype and not torch.is_autocast_enabled(fa.device.type):
            fa, fb = fa.to(param.dtype), fb.to(param.dtype)  # a float16 cache, a float32 head
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


# ----------------------------------------------------------------------------- where samples lie

class _Layout:
    """Offsets and shapes of the samples of one tower in a pass, fixed by the first pass (samples are
    placed in the order they are computed); later passes must give every sample the same shape."""

    def __init__(self, n: int):
        self.offsets = np.full(n, -1, np.int64)
        self.shapes: list[tuple[int, ...] | None] = [None] * n
        self.elements = 0

    def place(self, idx: np.ndarray, shape: tuple[int, ...]) -> None:
        if (self.offsets[idx] >= 0).any():
            raise DataError("cache_fusion_inputs: the data loader gave a sample twice in one pass")
        size = math.prod(shape)
        self.offsets[idx] = self.elements + size * np.arange(len(idx))
        for i in idx.tolist():
            self.shapes[i] = shape
        self.elements += size * len(idx)

    def check(self, idx: np.ndarray, shape: tuple[int, ...], k: int, video) -> None:
        for i in idx.tolist():
            if self.shapes[i] != shape:
                raise DataError(f"cache_fusion_inputs: sample {i} ({video(i)}) has maps of shape {list(shape)} in "
                                f"pass {k} but {list(self.shapes[i] or ())} in pass 0; a sample's frame size must "
                                f"not change between passes")

    def uniform_shape(self) -> tuple[int, ...] | None:
        """The common shape if every sample has it and they lie in index order, else None."""
        first = self.shapes[0]
        if first is None or any(s != first for s in self.shapes):
            return None
        return first if np.array_equal(self.offsets, math.prod(first) * np.arange(len(self.shapes))) else None

    def ragged(self) -> _Ragged:
        if any(s is None for s in self.shapes):
            missing = int(np.flatnonzero(self.offsets < 0)[0])
            raise DataError(f"cache_fusion_inputs: sample {missing} was not computed in the first pass")
        if len({len(s) for s in self.shapes}) > 1:
            raise DataError("cache_fusion_inputs: the samples' maps differ in their number of dimensions")
        return _Ragged(self.offsets.copy(), np.asarray(self.shapes, dtype=np.int64).reshape(len(self.shapes), -1))


def _contiguous_rows(offsets: np.ndarray, size: int) -> bool:
    return bool(np.array_equal(offsets, offsets[0] + size * np.arange(len(offsets))))


# ----------------------------------------------------------------------------- sinks

class _MemorySink:
    """Collects the passes in memory: [K, N, ...] arrays, allocated at the first batch as before, while
    every sample has one shape; flat [K, elements] arrays once a sample of another shape turns up (the
    first pass is then held as batches until its layout is known, up to twice its size for a moment)."""

    def __init__(self, dtype: np.dtype, n: int, passes: int, fingerprint: str):
        self.dtype, self.n, self.passes, self.fingerprint = np.dtype(dtype), n, passes, fingerprint
        self.layouts = [_Layout(n), _Layout(n)]
        self.first: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # pass 0 of a ragged set, per batch
        self.arrays: list[np.ndarray] | None = None
        self.uniform = True

    def write(self, k: int, idx: np.ndarray, a: np.ndarray, b: np.ndarray, video=str) -> None:
        if k:
            for layout, x in zip(self.layouts, (a, b)):
                layout.check(idx, tuple(x.shape[1:]), k, video)
            self._store(k, idx, a, b)
            return
        if self.uniform and self.arrays is not None and (a.shape[1:] != self.arrays[0].shape[2:]
                                                         or b.shape[1:] != self.arrays[1].shape[2:]):
            done = np.flatnonzero(self.layouts[0].offsets >= 0)  # another shape: keep pass 0 so far as a batch
            self.first = [(done, self.arrays[0][0, done], self.arrays[1][0, done])]
            self.arrays, self.uniform = None, False
        for layout, x in zip(self.layouts, (a, b)):
            layout.place(idx, tuple(x.shape[1:]))
        if not self.uniform:
            self.first.append((idx, a, b))
            return
        if self.arrays is None:
            self.arrays = [np.zeros((self.passes, self.n, *x.shape[1:]), self.dtype) for x in (a, b)]
        self._store(0, idx, a, b)

    def _store(self, k: int, idx: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        for store, layout, x in zip(self.arrays, self.layouts, (a, b)):
            if self.uniform:
                store[k, idx] = x
                continue
            size = math.prod(x.shape[1:])
            for j, start in enumerate(layout.offsets[idx].tolist()):
                store[k, start:start + size] = x[j].reshape(-1)

    def end_pass(self, k: int, labels, videos, views) -> None:
        if k or self.uniform:
            return
        self.arrays = [np.zeros((self.passes, layout.elements), self.dtype) for layout in self.layouts]
        first, self.first = self.first, []
        for idx, a, b in first:
            self._store(0, idx, a, b)

    def close(self) -> None:
        pass

    def result(self, labels, videos, views) -> FeatureSet:
        ragged = None if self.uniform else tuple(layout.ragged() for layout in self.layouts)
        return FeatureSet(self.arrays[0], self.arrays[1], labels, videos, views, self.fingerprint, ragged=ragged)


def _storage_error(err: OSError, file: Path, what: str) -> StorageError:
    return StorageError(err.errno, f"{file}: {STORAGE_ERRNOS[err.errno]} while {what}; the passes finished so far "
                                   f"are kept and a new call resumes after them")


class _DiskSink:
    """Writes the passes into ``<folder>/{fa,fb}.bin.part``, each batch at its samples' place, and records
    after every pass how many it holds (``meta.json``); ``finish`` renames the shards to ``.bin``."""

    def __init__(self, folder: Path, dtype: np.dtype, n: int, passes: int, fingerprint: str, *, start: int,
                 meta: dict | None = None):
        if folder.exists() and not folder.is_dir():
            raise DataError(f"{folder}: expected a feature-cache folder, found a file (an older npz cache?); "
                            f"delete it or choose another path")
        self.folder, self.dtype, self.n, self.passes = folder, np.dtype(dtype), n, passes
        self.fingerprint, self.start = fingerprint, start
        self.layouts = [_Layout(n), _Layout(n)]
        self.elements = [0, 0]
        folder.mkdir(parents=True, exist_ok=True)
        if start == 0:
            for name in (_META, _INDEX, *(f"{t}.bin{s}" for t in _TOWERS for s in ("", ".part"))):
                (folder / name).unlink(missing_ok=True)
        else:  # resume: the layout of pass 0 and the shards of the passes already written
            with np.load(folder / _INDEX, allow_pickle=False) as z:
                for layout, t in zip(self.layouts, _TOWERS):
                    offsets, shapes = z[f"offsets_{t}"], z[f"shapes_{t}"]
                    layout.offsets[:] = offsets
                    layout.shapes = [tuple(int(d) for d in s) for s in shapes]
                    layout.elements = int(meta[f"elements_{t}"])
            self.elements = [int(meta["elements_fa"]), int(meta["elements_fb"])]
        self.meta = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "dtype": self.dtype.name, "samples": n,
                     "passes": start, "complete": False, "elements_fa": self.elements[0],
                     "elements_fb": self.elements[1], "shape_fa": None, "shape_fb": None}
        if meta is not None and start:
            self.meta.update({k: meta[k] for k in ("shape_fa", "shape_fb")})
        atomic_write_json(folder / _META, self.meta)
        self.fds = []
        for t, elements in zip(_TOWERS, self.elements):
            part, done = folder / f"{t}.bin.part", folder / f"{t}.bin"
            if start and not part.exists() and done.exists():
                os.replace(done, part)  # more passes for a finished cache: grow it again
            fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
            os.truncate(fd, start * elements * self.dtype.itemsize)  # drop a pass cut short
            self.fds.append(fd)
        self.checked_space = False

    def _check_space(self, a: np.ndarray, b: np.ndarray) -> None:
        """Before the first batch lands: refuse a cache that will not fit the disk (StorageError)."""
        self.checked_space = True
        per_sample = (math.prod(a.shape[1:]) + math.prod(b.shape[1:])) * self.dtype.itemsize
        need = per_sample * self.n * (self.passes - self.start)
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise StorageError(errno.ENOSPC, f"{self.folder}: the feature cache needs about {_size(need)} "
                                             f"({self.passes - self.start} passes of {self.n} samples x "
                                             f"{_size(per_sample)}) but {_size(free)} are free there; use "
                                             f"dtype='float16', fewer passes (feature_epochs) or another path")

    def write(self, k: int, idx: np.ndarray, a: np.ndarray, b: np.ndarray, video=str) -> None:
        if not self.checked_space:
            self._check_space(a, b)
        for tower, (layout, x, fd) in enumerate(zip(self.layouts, (a, b), self.fds)):
            shape = tuple(x.shape[1:])
            if k == 0:
                layout.place(idx, shape)
            else:
                layout.check(idx, shape, k, video)
            base = k * layout.elements if k else 0  # pass 0's size is known only at its end
            size, item = math.prod(shape), self.dtype.itemsize
            offsets = layout.offsets[idx]
            x = np.ascontiguousarray(x, dtype=self.dtype)
            try:
                if _contiguous_rows(offsets, size):
                    _pwrite(fd, x, (base + int(offsets[0])) * item)
                else:
                    for j, start in enumerate(offsets.tolist()):
                        _pwrite(fd, x[j], (base + start) * item)
            except OSError as err:
                if err.errno in STORAGE_ERRNOS:
                    raise _storage_error(err, self.folder / f"{_TOWERS[tower]}.bin.part",
                                         "writing the feature cache") from err
                raise

    def end_pass(self, k: int, labels, videos, views) -> None:
        for fd in self.fds:
            os.fsync(fd)
        if k == 0:
            arrays = {"labels": np.asarray(labels, np.int64), "views": np.asarray(views, np.int64),
                      "videos": np.asarray(videos, dtype=np.str_)}
            for t, layout in zip(_TOWERS, self.layouts):
                r = layout.ragged()
                arrays[f"offsets_{t}"], arrays[f"shapes_{t}"] = r.offsets, r.shapes
                shape = layout.uniform_shape()
                self.meta[f"shape_{t}"] = None if shape is None else list(shape)
                self.meta[f"elements_{t}"] = layout.elements
            atomic_write(self.folder / _INDEX, lambda tmp: np.savez(tmp, **arrays))
        self.meta["passes"] = k + 1
        atomic_write_json(self.folder / _META, self.meta)

    def finish(self) -> None:
        self.close()
        for t in _TOWERS:
            os.replace(self.folder / f"{t}.bin.part", self.folder / f"{t}.bin")
        self.meta["complete"] = True
        atomic_write_json(self.folder / _META, self.meta)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def _pwrite(fd: int, x: np.ndarray, position: int) -> None:
    """Write all of ``x``'s bytes at ``position`` (a single pwrite may write less)."""
    view = memoryview(x.reshape(-1)).cast("B")
    while view:
        written = os.pwrite(fd, view, position)
        view, position = view[written:], position + written


def _read_meta(path: Path) -> dict | None:
    """A cache folder's meta.json, None if there is none or it is unreadable or of another format."""
    try:
        meta = json.loads((path / _META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT else None


# ----------------------------------------------------------------------------- computing

@torch.no_grad()
def _compute(net: nn.Module, dataset: Dataset, passes: int, batch_size: int, device: torch.device,
             input_keys: Sequence[str], dtype: np.dtype, workers: int, progress: bool, fingerprint: str, *,
             path: Path | None = None, start: int = 0, meta: dict | None = None) -> FeatureSet:
    """Run the towers over passes ``start..passes-1`` of ``dataset`` into memory or the folder ``path``."""
    from tqdm import tqdm

    n = len(dataset)
    labels = np.zeros(n, np.int64)
    views = np.zeros(n, np.int64)
    videos: list[str] = [""] * n
    torch_dtype = getattr(torch, np.dtype(dtype).name)
    sink = _MemorySink(dtype, n, passes, fingerprint) if path is None else \
        _DiskSink(path, dtype, n, passes, fingerprint, start=start, meta=meta)
    bar = tqdm(total=(passes - start) * n, desc="caching fusion inputs", disable=not progress, dynamic_ncols=True)
    loader_set = Subset(_Indexed(dataset), range(n))
    try:
        for k in range(start, passes):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(k)
            loader = DataLoader(loader_set, batch_size=batch_size, shuffle=False, num_workers=workers,
                                collate_fn=group_collate)
            for groups in loader:
                for idx, batch in groups:  # one group unless whole frames differ in size
                    a, b = net.fusion_inputs(*model_inputs(batch, input_keys, device))
                    # converted on the device: a float16 cache moves half the bytes to the host
                    a = a.detach().to(torch_dtype).cpu().numpy()
                    b = b.detach().to(torch_dtype).cpu().numpy()
                    rows = idx.numpy()
                    if k == 0:
                        labels[rows] = np.asarray(batch["label"])
                        views[rows] = np.asarray(batch["view"]) if "view" in batch else 0
                        names = list(batch["video"]) if "video" in batch else [str(i) for i in rows.tolist()]
                        for i, name in zip(rows.tolist(), names):
                            videos[i] = name
                    sink.write(k, rows, a, b, video=lambda i: videos[i] or f"sample {i}")
                    bar.update(len(rows))
            sink.end_pass(k, labels, videos, views)
    finally:
        bar.close()
        sink.close()
    if path is None:
        return sink.result(labels, videos, views)
    sink.finish()
    return FeatureSet.open(path, passes)


def cache_fusion_inputs(model: nn.Module, dataset: Dataset, *, epochs: int = 1, path: str | Path | None = None,
                        batch_size: int = 32, device: str | torch.device = "cpu",
                        input_keys: Sequence[str] = ("rgb", "flow"), dtype: str | None = None, workers: int = 0,
                        progress: bool = False) -> FeatureSet:
    """Run the frozen towers once and keep ``model.fusion_inputs(rgb, flow)`` for ``epochs`` passes
    (Section 3.5: only the layers from the fusion on are trained).

    ``dataset`` is the training clips (``epochs`` = number of distinct augmented passes to cache;
    with ``epochs`` >= the training epochs the cached run sees the same clips as an uncached one)
    or the test views (``epochs=1``). Without ``path`` the features are kept in memory. With ``path``
    (a folder) they are written there batch by batch and memory-mapped (see the module docstring):
    a cache there with the same fingerprint is reused, one with fewer passes is extended, an
    interrupted one resumed. ``dtype``: "float32" or "float16"; None = float16 on a GPU, float32 on
    the CPU. Under torchrun, rank 0 computes and writes ``path`` while the others wait, then open it.
    """
    net = unwrap(model)
    if not hasattr(net, "fusion_inputs"):
        raise ConfigError(f"cache_fusion_inputs: {type(net).__name__} has no fusion_inputs(rgb, flow) method")
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"cache_fusion_inputs: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    device = torch.device(device)
    dtype = default_dtype(device) if dtype is None else dtype
    if dtype not in DTYPES:
        raise ConfigError(f"cache_fusion_inputs: dtype must be 'float32' or 'float16', got {dtype!r}")
    if len(dataset) == 0:
        raise DataError("cache_fusion_inputs: the data set is empty")
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
        fingerprint = model_fingerprint(  # the model's weights and what defines the samples (not the passes)
            net, type(dataset).__name__, len(dataset), dtype, tuple(input_keys),
            *(getattr(dataset, a, None) for a in ("seed", "sampling", "mode", "crop")),
            None if items is None else [getattr(i, "name", i) for i in items])
        args = (net, dataset, epochs, batch_size, device, input_keys, np.dtype(dtype), workers, progress, fingerprint)
        if path is None:
            return _compute(*args)
        path = Path(path)
        rank, world_size = world()
        if rank == 0:
            meta = _read_meta(path)
            same = meta is not None and meta.get("fingerprint") == fingerprint
            if not (same and meta.get("complete") and int(meta["passes"]) >= epochs):
                # resume after the passes written (none to compute if only the final rename was missed)
                start = min(int(meta["passes"]), epochs) if same and (path / _INDEX).is_file() else 0
                _compute(*args, path=path, start=start, meta=meta if start else None)
        if world_size > 1:
            torch.distributed.barrier()
        feats = FeatureSet.open(path, epochs)
        if feats.fingerprint != fingerprint:
            raise DataError(f"{path}: feature cache does not match the model/data set")
        return feats
    finally:
        net.train(was_training)
