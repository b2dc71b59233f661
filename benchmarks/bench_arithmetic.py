"""Benchmark: what the pinned CPU arithmetic costs (``twostream_lib.arithmetic``).

The demo pins PyTorch's kernels to AVX2, MKL to its reproducible AVX2 branch and routes convolutions
through MKL's GEMM instead of oneDNN, so that every x86-64 machine computes the same numbers. This
script times the demo's training steps under three settings, each in a fresh process (the settings
only take effect before torch loads):

* ``pinned``: what the demo runs (the variables of ``PINNED_ENV`` and ``use_pinned_kernels()``);
* ``pinned_onednn``: the same variables, but convolutions through oneDNN limited to AVX2 (its results
  are promised only on identical hardware, so nbval could not compare them across machines);
* ``native``: nothing pinned (each library picks its fastest code for this CPU);
* ``pinned_glibc_malloc``: ``pinned``, with glibc's default allocation of large buffers (a fresh
  memory map per buffer) instead of the heap reuse every CPU run of the demo sets up
  (:mod:`twostream_lib.allocator`, which the other three settings use).

The workload: SGD steps of the two demo towers (spatial RGB and temporal flow, batch 32, 48 x 48) and
of the demo's 3D conv fusion head (the most expensive head, Table 4); the towers on 2 threads, the head
on 1, as the demo trains them (``tower_threads``). The head twice: as the fusion layer computes it
(pinned: one GEMM, ``models.temporal.conv3d_as_gemm``) and through ``nn.Conv3d`` (pinned: PyTorch's
``slow_conv3d``).

    python benchmarks/bench_arithmetic.py            # ~1 minute
    python benchmarks/bench_arithmetic.py --steps 5  # a quick look

Writes ``results/benchmarks/arithmetic.json`` (seconds per step and the ratio to ``native``, with the
matmul probe of each setting). Each time is the best of 3 rounds, since other work on a shared
machine only ever makes a round slower.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "results" / "benchmarks" / "arithmetic.json"
#: Values that leave every library its own choice (set explicitly: otherwise importing twostream_lib pins them).
NATIVE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "MKL_DYNAMIC": "TRUE", "OMP_DYNAMIC": "FALSE",
              "ONEDNN_MAX_CPU_ISA": "ALL", "OPENBLAS_CORETYPE": "", "NPY_DISABLE_CPU_FEATURES": "",
              "OPENCV_CPU_DISABLE": ""}
SETTINGS = ("pinned", "pinned_glibc_malloc", "pinned_onednn", "native")
ROUNDS = 3  # best of 3 rounds of --steps steps


def _worker(setting: str, steps: int) -> dict:
    """Runs in the child process: time the workload under ``setting``."""
    import time

    import torch

    import twostream_lib  # noqa: F401  (pins the variables that are not set)
    from twostream_lib.allocator import reuse_large_allocations
    from twostream_lib.arithmetic import describe, matmul_gflops, use_pinned_kernels
    from twostream_lib.models import Conv3dFusion, build_backbone

    pinned_kernels = setting in ("pinned", "pinned_glibc_malloc")
    use_pinned_kernels(pinned_kernels)
    if setting != "pinned_glibc_malloc":
        reuse_large_allocations()
    if not pinned_kernels:
        torch.backends.mkldnn.enabled = True
    torch.set_num_threads(2)
    torch.manual_seed(0)
    out = {"arithmetic": describe(), "probe_gflops": round(matmul_gflops(), 1)}
    work = {
        "spatial tower (demo_deep, RGB)": (build_backbone("demo_deep", in_channels=3, num_classes=14),
                                           lambda: (torch.randn(32, 3, 48, 48),)),
        "temporal tower (demo_shallow, flow)": (build_backbone("demo_shallow", in_channels=20, num_classes=14),
                                                lambda: (torch.randn(32, 20, 48, 48),)),
    }
    fusion = Conv3dFusion(32, init="centre")
    work["3D conv fusion head (T=5, 6x6)"] = (lambda a, b: fusion(a, b),
                                              lambda: (torch.randn(32, 32, 5, 6, 6), torch.randn(32, 32, 5, 6, 6)))
    # the same layer through nn.Conv3d whatever the setting: pinned, that is slow_conv3d, which the fusion
    # layer replaces by one GEMM (models.temporal.conv3d_as_gemm)
    work["3D conv fusion head via nn.Conv3d"] = (lambda a, b: fusion.conv(torch.cat([a, b], 1)),
                                                  work["3D conv fusion head (T=5, 6x6)"][1])
    params = {k: list(fusion.parameters()) for k in work if k.startswith("3D conv")}
    for name, (model, batch) in work.items():
        # the towers train with the demo's 2 threads here; its fusion heads train with tower_threads = 1
        torch.set_num_threads(1 if name.startswith("3D conv") else 2)
        ps = params.get(name) or list(model.parameters())
        opt = torch.optim.SGD(ps, lr=0.01, momentum=0.9)
        inputs = [batch() for _ in range(steps)]
        best = float("inf")
        for round_ in range(ROUNDS + 1):  # the first round warms up; other work only ever slows a round
            t0 = time.perf_counter()
            for x in inputs:
                opt.zero_grad()
                model(*x).float().pow(2).mean().backward()
                opt.step()
            if round_:
                best = min(best, (time.perf_counter() - t0) / steps)
        out[name] = round(best, 4)
    return out


def run_setting(setting: str, steps: int) -> dict:
    env = dict(os.environ)
    for key in NATIVE_ENV:
        env.pop(key, None)
    if setting == "native":
        env.update({k: v for k, v in NATIVE_ENV.items() if v})
    code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); "
            f"sys.argv = ['bench']; import benchmarks.bench_arithmetic as b; "
            f"print(json.dumps(b._worker({setting!r}, {steps})))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"setting {setting!r} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed SGD steps per workload")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    results = {s: run_setting(s, args.steps) for s in SETTINGS}
    workloads = [k for k in results["native"] if k not in ("arithmetic", "probe_gflops")]
    ratios = {s: {w: round(results[s][w] / results["native"][w], 2) for w in workloads} for s in SETTINGS}
    record = {
        "what": "seconds per SGD step of the demo's towers (2 threads) and 3D conv head (1 thread), per arithmetic setting",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "steps": args.steps, "seconds_per_step": results, "ratio_to_native": ratios,
    }
    from twostream_lib.files import atomic_write_json

    atomic_write_json(args.out, record)
    for w in workloads:
        print(f"{w:40s} " + "  ".join(f"{s} {results[s][w] * 1000:7.1f} ms ({ratios[s][w]:.2f}x)" for s in SETTINGS))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
