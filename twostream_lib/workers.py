"""Worker processes that start without importing anything: the CPU pools of towers, fusion heads and
synthetic videos.

A spawned worker imports torch and the library again (2.5-3.5 s each: torch alone is 2.2 s), and,
started from a notebook kernel, the kernel's own main module with IPython and matplotlib; a demo run
starts about twenty of them (a sampling profile of one run counted 70 CPU seconds of imports in
them). On Linux the
pools use a fork server instead: one process per parent that imports :data:`PRELOAD` once, from which
every worker is forked with those modules loaded. Forking the parent itself would be cheaper still,
but not safe: a kernel that has run torch holds OpenMP and MKL thread pools, which a forked child
inherits in a broken state; the fork server has run nothing. Elsewhere (macOS, Windows) workers are
spawned as before.

The workers compute what spawned ones did: they inherit the pinned arithmetic's variables
(:mod:`twostream_lib.arithmetic`), set in the parent before the server starts, and each job sets its
threads, seeds and deterministic mode itself (``experiments.configure_process``).
"""
from __future__ import annotations

import multiprocessing
import sys

__all__ = ["PRELOAD", "start_fork_server", "worker_context"]

#: What the fork server imports once for all its workers (torch, NumPy, pandas, the models and data), and
#: TorchDynamo: nothing here compiles, but building an optimizer imports it (``Optimizer.add_param_group``
#: is wrapped by ``torch._disable_dynamo``, which imports it at its first call): 2.5-4 s in each tower
#: and head worker of a demo run (15 processes in a sampling profile) that the server now pays once.
#: Not matplotlib or IPython: the library imports them inside the functions that draw or display
#: (``plots``, ``TableResult.show``), so that no server or worker pays for them (21% of a server's import
#: time, ``python -X importtime``; ~1-2 CPU s in each of a demo run's eight servers).
PRELOAD = ("twostream_lib.experiments", "torch._dynamo")


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context of the library's process pools: a fork server with :data:`PRELOAD`
    imported on Linux, spawn elsewhere."""
    if not sys.platform.startswith("linux"):
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # read when the server starts, the first time a pool needs it
    return context


def start_fork_server() -> None:
    """Start this process's fork server now rather than when its first pool needs it (Linux; elsewhere
    nothing): ``run_all`` does it in the kernel of the next notebook while the current one runs
    (``runner.WARM_UP``), so that the server's imports overlap that notebook instead of delaying the
    first pool. The server is the one :func:`worker_context`'s pools use."""
    if sys.platform.startswith("linux"):
        from multiprocessing import forkserver

        worker_context()  # its preload list
        forkserver.ensure_running()
