"""The same numbers on every x86-64 machine: the CPU arithmetic the demo depends on, pinned.

A float sum depends on the order of its terms, and the order depends on the vector unit: PyTorch's
own kernels, MKL and oneDNN pick AVX-512 code on machines that have it and AVX2 code elsewhere, and
the few bits that differ after one step grow, over a training run, into accuracies 10-15 points
apart. The demo therefore runs the same code path everywhere, chosen before the libraries load:

============================  =====================  ==============================================
variable                      value                  what it pins
============================  =====================  ==============================================
``ATEN_CPU_CAPABILITY``       ``avx2``               PyTorch's own CPU kernels (reductions, batch
                                                     norm, pooling, element-wise ops)
``MKL_CBWR``                  ``AVX2,STRICT``        MKL's conditional numerical reproducibility:
                                                     its AVX2 branch, bitwise the same on every
                                                     Intel CPU with AVX2 whatever the thread count
``MKL_DYNAMIC``/``OMP_DYNAMIC``  ``FALSE``           no thread counts chosen at run time
``ONEDNN_MAX_CPU_ISA``        ``AVX2``               oneDNN, where it still runs
``OPENBLAS_CORETYPE``         ``Haswell``            NumPy/SciPy's OpenBLAS kernels (IDT, Table 6)
``NPY_DISABLE_CPU_FEATURES``  AVX-512 groups         NumPy's dispatched loops (AVX2 at most)
``OPENCV_CPU_DISABLE``        ``AVX512-SKX``         OpenCV's dispatched kernels (frames, TV-L1)
============================  =====================  ==============================================

and :func:`use_pinned_kernels` routes convolutions through MKL's GEMM (im2col) instead of oneDNN,
whose results are promised only on identical hardware (its blocking follows the cache sizes). That
costs time, most for the demo's 3D conv fusion head: PyTorch's ``slow_conv3d`` does an im2col per
sample, a slow copy, so there the fusion layer gathers the columns of the whole batch itself and calls
MKL's GEMM once (:func:`~twostream_lib.models.temporal.conv3d_as_gemm`).
``benchmarks/bench_arithmetic.py`` measures the demo's training steps pinned, with oneDNN limited to
AVX2 and unpinned, and records them in ``results/benchmarks/arithmetic.json``.

The variables are set (unless the user set them) when :mod:`twostream_lib` is imported, and also by
``run_all.sh`` and the test suite's ``conftest.py``, so that they hold before torch computes anything.
Profiles with ``pinned_arithmetic`` (the demo) check in :func:`~twostream_lib.experiments.setup` that
they took effect (:func:`check_pinned`). GPUs and the paper profile are not affected by the kernels
switch; the variables only slow their CPU-side tensor work slightly.
"""
from __future__ import annotations

import os

__all__ = ["PINNED_ENV", "pin_environment", "use_pinned_kernels", "check_pinned", "describe", "matmul_gflops"]

#: NumPy >= 2 dispatches on groups of features: X86_V4 is AVX-512 (F, CD, VL, BW, DQ).
_NUMPY_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR"

PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": _NUMPY_AVX512,
    "OPENCV_CPU_DISABLE": "AVX512-SKX",
}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pin_environment(env: dict | None = None) -> dict[str, str]:
    """Set the variables of :data:`PINNED_ENV` that are not set yet; returns those it set.

    On a CPU without AVX-512 NumPy's and OpenCV's AVX-512 paths do not exist, and disabling them
    would only make NumPy warn, so those two are left alone there.
    """
    env = os.environ if env is None else env
    has_avx512 = "avx512f" in _cpu_flags()
    done = {}
    for key, value in PINNED_ENV.items():
        if key in ("NPY_DISABLE_CPU_FEATURES", "OPENCV_CPU_DISABLE") and not has_avx512:
            continue
        if key not in env:
            env[key] = value
            done[key] = value
    return done


def use_pinned_kernels(enabled: bool = True) -> None:
    """Convolutions through MKL's GEMM (reproducible across CPUs) instead of oneDNN (``enabled=False``
    gives oneDNN back)."""
    import torch

    torch.backends.mkldnn.enabled = not enabled


def check_pinned() -> list[str]:
    """What is not pinned in this process (empty when everything is): variables changed by the user
    and a CPU capability other than AVX2 (torch computed something before the variables were set)."""
    import torch

    problems = [f"{k}={os.environ.get(k)!r} (pinned value {v!r})" for k, v in PINNED_ENV.items()
                if k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA") and os.environ.get(k) != v]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "DEFAULT"):
        problems.append(f"PyTorch runs {capability} kernels (torch was used before twostream_lib was imported)")
    if torch.backends.mkldnn.enabled:
        problems.append("oneDNN convolutions are on (use_pinned_kernels() was not called)")
    try:  # NumPy >= 2: the group of dispatched AVX-512 loops, False once disabled
        from numpy._core._multiarray_umath import __cpu_features__ as numpy_features
        if numpy_features.get("X86_V4"):
            problems.append("NumPy runs AVX-512 loops (numpy was imported before twostream_lib)")
    except ImportError:
        pass
    return problems


def describe() -> dict[str, str]:
    """The arithmetic this process runs, for records written beside timings and digests."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_convolutions": str(torch.backends.mkldnn.enabled),
            **{k: os.environ.get(k, "") for k in PINNED_ENV}}


def matmul_gflops(*, threads: int = 2, n: int = 1024, repeats: int = 20) -> float:
    """The machine's speed: float32 n x n matrix products on ``threads`` threads, best of ``repeats``, in
    GFLOP/s (2 n^3 per product). Recorded beside every time we record, so that times from machines of
    different speed can be compared (``seconds x probe / reference``)."""
    import time

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        a @ b  # warm-up (thread pool, MKL initialisation)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return 2 * n ** 3 / best / 1e9
