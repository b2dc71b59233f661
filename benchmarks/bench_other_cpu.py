"""The golden digests recomputed on a CPU without AVX-512, emulated: does the pinned arithmetic hold there?

The demo's numbers are only reproducible if a machine without AVX-512 computes the same bytes as one
with it (``twostream_lib.arithmetic``); nbval depends on it, and the machines that run this project
differ from one session to the next. Where no such machine is at hand, QEMU's user-mode emulator
(Debian: ``apt-get install qemu-user``) runs this Python on an emulated Intel Haswell (AVX2 and FMA,
no AVX-512): the script first asks the emulated process which vector units NumPy and PyTorch find
there (unpinned: PyTorch would use AVX-512 natively), then runs ``tests/test_golden.py`` in it
(the synthetic set's frames and TV-L1 flow, both demo towers, spatial and temporal, a few training
steps each, the 3D conv fusion head, and Table 6's IDT descriptors and SVM scores) against the
digests recorded on the project's machines, and writes ``results/benchmarks/other_cpu.json``:

    python benchmarks/bench_other_cpu.py                    # Haswell-v4, ~20 min of one core
    python benchmarks/bench_other_cpu.py --cpu Skylake-Client-v4 -k synthetic

Not part of ``pytest``: the golden tests take 9 s natively and 1016-1204 s emulated here. The
emulated process reads the host's ``/proc/cpuinfo``, so where the emulated CPU has no AVX-512 the
two variables that :func:`~twostream_lib.arithmetic.pin_environment` leaves unset on such a CPU
(NumPy's and OpenCV's disabled features) are set empty here, as they would be there. Child
processes are not emulated (QEMU does not follow ``exec``); the golden tests start none.

Exit status: 0 when every golden test passed under emulation and the emulated CPU has no AVX-512;
1 otherwise; 2 when QEMU is missing (the record is not written then).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twostream_lib.files import atomic_write_json

OUT = REPO / "results" / "benchmarks" / "other_cpu.json"
QEMU = "qemu-x86_64"

#: What the emulated process finds, before anything is pinned: NumPy's dispatch groups (X86_V4 is
#: AVX-512) and the kernels PyTorch would pick on its own.
_PROBE = """
import json, os
for key in ("ATEN_CPU_CAPABILITY", "NPY_DISABLE_CPU_FEATURES", "OPENCV_CPU_DISABLE"):
    os.environ.pop(key, None)
import torch
from numpy._core._multiarray_umath import __cpu_features__ as simd
print(json.dumps({"numpy_features_found": sorted(k for k, v in simd.items() if v),
                  "avx512f": bool(simd.get("AVX512F")), "avx2": bool(simd.get("AVX2")), "fma3": bool(simd.get("FMA3")),
                  "torch_cpu_capability_unpinned": torch.backends.cpu.get_cpu_capability()}))
"""


def _emulated(cpu: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """This Python, run with ``args`` under QEMU emulating ``cpu``, from the repository's root."""
    return subprocess.run([QEMU, "-cpu", cpu, sys.executable, *args], cwd=REPO, env=env, text=True, check=False,
                          capture_output=True)


def _tail(text: str, n: int = 20) -> list[str]:
    """The last lines of an output, without QEMU's warnings about host features TCG does not emulate."""
    return [line for line in text.splitlines() if not line.startswith(f"{QEMU}: warning")][-n:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", default="Haswell-v4",
                    help="QEMU CPU model to emulate (default Haswell-v4: Intel, AVX2 + FMA, no AVX-512)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"record to write (default {OUT.relative_to(REPO)})")
    args, pytest_args = ap.parse_known_args(argv)
    if shutil.which(QEMU) is None:
        print(f"error: {QEMU} not found: install QEMU's user-mode emulator (Debian: apt-get install qemu-user)",
              file=sys.stderr)
        return 2
    version = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]

    probe = _emulated(args.cpu, "-c", _PROBE)
    if probe.returncode != 0:
        print(f"error: Python did not start under {QEMU} -cpu {args.cpu}:\n" + "\n".join(_tail(probe.stderr)),
              file=sys.stderr)
        return 1
    found = json.loads(probe.stdout.strip().splitlines()[-1])

    env = dict(os.environ)
    if not found["avx512f"]:  # as pin_environment leaves them where /proc/cpuinfo has no avx512f
        env.update(NPY_DISABLE_CPU_FEATURES="", OPENCV_CPU_DISABLE="")
    start = time.perf_counter()
    run = _emulated(args.cpu, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "tests/test_golden.py",
                    *pytest_args, env=env)
    seconds = time.perf_counter() - start
    # -rA's summary: one line per test, "PASSED tests/test_golden.py::name[params]" (or FAILED ... - reason)
    outcomes = {m.group(2): m.group(1).lower()
                for m in re.finditer(r"^(PASSED|FAILED|ERROR|SKIPPED) (\S+)", run.stdout, re.MULTILINE)}
    passed = run.returncode == 0 and outcomes and all(v == "passed" for v in outcomes.values())
    holds = bool(passed and not found["avx512f"])
    record = {
        "benchmark": "the golden digests (tests/test_golden.py) recomputed on an emulated CPU without AVX-512",
        "command": " ".join(["python benchmarks/bench_other_cpu.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "emulator": version,
        "emulated_cpu": args.cpu,
        "emulated_cpu_found": found,
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "pytest_exit_code": run.returncode,
        "seconds": round(seconds, 1),
        "tests": outcomes,
        "same_bytes_without_avx512": holds,
    }
    if not passed:
        record["output_tail"] = _tail(run.stdout + run.stderr)
    atomic_write_json(args.out, record, sort_keys=False)
    print(f"{args.cpu} under {version}: AVX-512 {'found' if found['avx512f'] else 'absent'}, PyTorch alone would "
          f"pick {found['torch_cpu_capability_unpinned']}; golden tests: "
          + ", ".join(f"{sum(v == k for v in outcomes.values())} {k}" for k in sorted(set(outcomes.values())))
          + f" in {seconds:.0f} s; record in {args.out}")
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
