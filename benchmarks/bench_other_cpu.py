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
    python benchmarks/bench_other_cpu.py --tower demo_shallow-spatial --tower-epochs 2

``--tower BACKBONE-STREAM`` also trains one of the demo's towers (split 1, seed 0, the profile's
settings; ``--tower-epochs N`` passes instead of its schedule's) twice, natively and in the emulated
process, and compares the two ``final.pt`` tensor by tensor: the demo's own training (its batch, its
appearance objective, its data), not the golden tests' few steps. Two epochs of the shallow spatial
tower took 3.0 s natively and 642 s emulated here, so its whole schedule (15) would take over an hour.

Not part of ``pytest``: the golden tests take 9 s natively and 1016-1204 s emulated here. The
emulated process reads the host's ``/proc/cpuinfo``, so where the emulated CPU has no AVX-512 the
two variables that :func:`~twostream_lib.arithmetic.pin_environment` leaves unset on such a CPU
(NumPy's and OpenCV's disabled features) are set empty here, as they would be there. Child
processes are not emulated (QEMU does not follow ``exec``); the golden tests start none.

Exit status: 0 when every golden test passed under emulation (and the ``--tower`` is bitwise the
same as the native one) and the emulated CPU has no AVX-512; 1 otherwise; 2 when QEMU is missing
(the record is not written then).
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
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twostream_lib.files import atomic_write_json

OUT = REPO / "results" / "benchmarks" / "other_cpu.json"
QEMU = "qemu-x86_64"
TOWERS = ("demo_shallow-spatial", "demo_shallow-temporal", "demo_deep-spatial", "demo_deep-temporal")

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


#: One of the demo's towers trained (split 1, seed 0) into a scratch results folder; prints a digest of
#: each tensor of its final.pt. argv: the folder, backbone, stream, epochs ("" for the profile's).
_TOWER = """
import hashlib, json, sys, time
import twostream_lib.experiments as ex  # first: it pins the arithmetic before NumPy and torch load
import torch
from twostream_lib.experiments.streams import stream_dir, train_stream
scratch, backbone, stream, epochs = sys.argv[1:5]
overrides = {"epochs_stream" if stream == "spatial" else "epochs_temporal": int(epochs)} if epochs else {}
cfg = ex.setup("demo", results_dir=scratch, **overrides)
start = time.perf_counter()
train_stream(cfg, ex.prepare_data(cfg), stream, backbone=backbone, split=1, seed=0)
seconds = time.perf_counter() - start
state = torch.load(stream_dir(cfg, backbone, stream, 1, 0) / "final.pt", weights_only=True)
print(json.dumps({"seconds": round(seconds, 1),
                  "digests": {k: hashlib.sha256(v.numpy().tobytes()).hexdigest()[:16] for k, v in state.items()}}))
"""


def _train_tower(command: list[str], tower: str, epochs: int | None, env: dict) -> dict:
    """:data:`_TOWER` run by ``command`` (this Python, natively or under QEMU) in a scratch folder:
    its seconds and digests, or the tail of its output where it failed."""
    with tempfile.TemporaryDirectory() as scratch:
        run = _python(command, "-c", _TOWER, scratch, *tower.rsplit("-", 1), str(epochs or ""), env=env)
    if run.returncode != 0:
        return {"error": _tail(run.stdout + run.stderr)}
    return json.loads(run.stdout.strip().splitlines()[-1])


def _emulating(cpu: str) -> list[str]:
    """The command that runs this Python under QEMU emulating ``cpu``."""
    return [QEMU, "-cpu", cpu, sys.executable]


def _python(command: list[str], *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """This Python (``command``: ``[sys.executable]`` or :func:`_emulating`) run with ``args`` from the
    repository's root, its output captured."""
    return subprocess.run([*command, *args], cwd=REPO, env=env, text=True, check=False, capture_output=True)


def _tail(text: str, n: int = 20) -> list[str]:
    """The last lines of an output, without QEMU's warnings about host features TCG does not emulate."""
    return [line for line in text.splitlines() if not line.startswith(f"{QEMU}: warning")][-n:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", default="Haswell-v4",
                    help="QEMU CPU model to emulate (default Haswell-v4: Intel, AVX2 + FMA, no AVX-512)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"record to write (default {OUT.relative_to(REPO)})")
    ap.add_argument("--tower", choices=TOWERS, help="also train this demo tower natively and under emulation "
                    "and compare the two bitwise")
    ap.add_argument("--tower-epochs", type=int, choices=range(1, 31), metavar="N",
                    help="passes over the training videos for --tower, 1-30 (default: the demo profile's)")
    args, pytest_args = ap.parse_known_args(argv)
    if shutil.which(QEMU) is None:
        print(f"error: {QEMU} not found: install QEMU's user-mode emulator (Debian: apt-get install qemu-user)",
              file=sys.stderr)
        return 2
    version = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]

    probe = _python(_emulating(args.cpu), "-c", _PROBE)
    if probe.returncode != 0:
        print(f"error: Python did not start under {QEMU} -cpu {args.cpu}:\n" + "\n".join(_tail(probe.stderr)),
              file=sys.stderr)
        return 1
    found = json.loads(probe.stdout.strip().splitlines()[-1])

    env = dict(os.environ)
    if not found["avx512f"]:  # as pin_environment leaves them where /proc/cpuinfo has no avx512f
        env.update(NPY_DISABLE_CPU_FEATURES="", OPENCV_CPU_DISABLE="")
    start = time.perf_counter()
    run = _python(_emulating(args.cpu), "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                  "tests/test_golden.py", *pytest_args, env=env)
    seconds = time.perf_counter() - start
    # -rA's summary: one line per test, "PASSED tests/test_golden.py::name[params]" (or FAILED ... - reason)
    outcomes = {m.group(2): m.group(1).lower()
                for m in re.finditer(r"^(PASSED|FAILED|ERROR|SKIPPED) (\S+)", run.stdout, re.MULTILINE)}
    passed = run.returncode == 0 and outcomes and all(v == "passed" for v in outcomes.values())
    tower = None
    if args.tower:
        native = _train_tower([sys.executable], args.tower, args.tower_epochs, dict(os.environ))
        emulated = _train_tower(_emulating(args.cpu), args.tower, args.tower_epochs, env)
        digests = native.get("digests", {})
        tower = {"name": args.tower, "epochs": args.tower_epochs or "the profile's", "native": native,
                 "emulated": emulated,
                 "differing": sorted(k for k in digests if emulated.get("digests", {}).get(k) != digests[k]),
                 "bitwise_equal": bool(digests) and digests == emulated.get("digests")}
    holds = bool(passed and not found["avx512f"] and (tower is None or tower["bitwise_equal"]))
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
        **({"tower": tower} if tower else {}),
        "same_bytes_without_avx512": holds,
    }
    if not passed:
        record["output_tail"] = _tail(run.stdout + run.stderr)
    atomic_write_json(args.out, record, sort_keys=False)
    print(f"{args.cpu} under {version}: AVX-512 {'found' if found['avx512f'] else 'absent'}, PyTorch alone would "
          f"pick {found['torch_cpu_capability_unpinned']}; golden tests: "
          + ", ".join(f"{sum(v == k for v in outcomes.values())} {k}" for k in sorted(set(outcomes.values())))
          + f" in {seconds:.0f} s"
          + (f"; tower {args.tower}: {'bitwise equal' if tower['bitwise_equal'] else 'NOT equal'} to the native one"
             if tower else "") + f"; record in {args.out}")
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
