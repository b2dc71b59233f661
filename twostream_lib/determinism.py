"""Seeding and deterministic set-up, shared by training, evaluation and feature caching.

The paper (Section 3.5) gives the optimisation protocol but not a seed; a reproduction needs runs
that give the same weights twice. The pieces here make that true on CPU:

* :func:`seed_everything` seeds Python, NumPy and torch (CPU and every CUDA device).
* :func:`deterministic` switches on ``torch.use_deterministic_algorithms`` (and cuDNN's
  deterministic mode) and gives back the previous settings when used as a context manager.
* :func:`derive_seed` turns (seed, epoch, ...) into an independent 63-bit seed, so every epoch's
  shuffling and dropout are fixed by the configuration alone: an interrupted run that resumes at
  epoch k draws exactly what an uninterrupted one drew at epoch k.
* :func:`rng_state` / :func:`set_rng_state` capture the global generators as tensors and plain
  Python types, which ``torch.load(path, weights_only=True)`` accepts.
"""
from __future__ import annotations

import os
import random
import sys
from typing import Any

import numpy as np
import torch

__all__ = [
    "seed_everything",
    "derive_seed",
    "deterministic",
    "set_threads",
    "rng_state",
    "set_rng_state",
    "worker_init_fn",
]


def derive_seed(*parts: int) -> int:
    """A seed in [0, 2**63) derived from integers, e.g. ``derive_seed(seed, epoch, rank)``.

    Uses NumPy's ``SeedSequence`` so that neighbouring inputs give unrelated streams and the value
    is the same in every process and on every platform.
    """
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and all CUDA devices)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def _use_deterministic_algorithms(enabled: bool, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms`` without its import of ``torch._inductor``.

    The public call first sets ``torch._inductor.config.deterministic``, and importing that package
    imports TorchDynamo: 2.8 s of a process's start here, paid by every notebook kernel and every
    tower, head and data worker of a run, none of which compiles anything. The flag the kernels read
    is the one ``torch._C._set_deterministic_algorithms`` sets; inductor's is set as well where
    something already imported it (a user's ``torch.compile``)."""
    current = torch.are_deterministic_algorithms_enabled()
    if current == enabled and (not enabled or torch.is_deterministic_algorithms_warn_only_enabled() == warn_only):
        return
    inductor = sys.modules.get("torch._inductor.config")
    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_flag is None:  # another torch: the public call
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        return
    if inductor is not None:
        inductor.deterministic = enabled
    set_flag(enabled, warn_only=warn_only)


class deterministic:  # noqa: N801 - used like a function: ``deterministic(True)`` or ``with deterministic():``
    """Switch deterministic algorithms on (or off) now; as a context manager, restore on exit.

    Sets ``torch.use_deterministic_algorithms(enabled, warn_only=warn_only)``,
    ``torch.backends.cudnn.deterministic = enabled`` and ``cudnn.benchmark = not enabled``, and
    ``CUBLAS_WORKSPACE_CONFIG`` (needed by deterministic cuBLAS; it must be set before CUDA starts,
    so call this early). On CUDA some kernels (e.g. the backward of adaptive pooling) have no
    deterministic version: pass ``warn_only=True`` there to get a warning instead of an error.

    Memory is not filled: in deterministic mode PyTorch by default writes NaN into every tensor it
    allocates uninitialised (``torch.utils.deterministic.fill_uninitialized_memory``), so that a kernel
    reading memory it never wrote shows it. That is a debugging aid, not a part of determinism (a
    correct kernel writes each element before reading it), and it cost 7.5% of the CPU time of a demo
    3D conv head's training and 2.7% of a ReLU2 head's (one thread, the two settings alternated in one
    process; torch.profiler put ``aten::fill_`` at 14% and at 7% of a tower's step): the 3D conv head's
    GEMM columns and the convolutions' workspaces are large buffers, allocated at every step. The
    numbers are the same with and without (``tests/test_train.py``). ``fill_memory=True`` turns it
    back on, e.g. to look for such a kernel.
    """

    def __init__(self, enabled: bool = True, *, warn_only: bool = False, fill_memory: bool = False):
        self._previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
            torch.utils.deterministic.fill_uninitialized_memory,
        )
        if enabled:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _use_deterministic_algorithms(bool(enabled), bool(warn_only))
        torch.backends.cudnn.deterministic = bool(enabled)
        torch.backends.cudnn.benchmark = not enabled
        torch.utils.deterministic.fill_uninitialized_memory = bool(fill_memory)

    def __enter__(self) -> "deterministic":
        return self

    def __exit__(self, *exc: object) -> None:
        algorithms, warn_only, cudnn_det, cudnn_bench, fill = self._previous
        _use_deterministic_algorithms(algorithms, warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench
        torch.utils.deterministic.fill_uninitialized_memory = fill


def set_threads(n: int) -> None:
    """Use ``n`` intra-op CPU threads in torch (and ask OpenMP/MKL in child processes for the same).

    Results on CPU can depend on the thread count (reductions are split differently), so a
    bit-exact comparison must use the same ``n`` in both runs.
    """
    if int(n) < 1:
        from .errors import ConfigError

        raise ConfigError(f"set_threads: n must be >= 1, got {n!r}")
    torch.set_num_threads(int(n))
    os.environ["OMP_NUM_THREADS"] = str(int(n))
    os.environ["MKL_NUM_THREADS"] = str(int(n))


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker set-up: seed Python and NumPy from the seed torch gave this worker.

    Torch derives each worker's seed from the loader's generator, which the training loop seeds from
    (seed, epoch); data sets that draw their randomness from (seed, epoch, index) do not need this,
    but code that calls ``np.random`` directly then still gets reproducible streams.
    """
    seed = torch.initial_seed() % (2**32)
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states as tensors and plain types (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
