"""Execute the notebooks headless with papermill (what ``./run_all.sh`` calls).

Each notebook in ``notebooks/`` runs in order into ``results/notebooks/`` with the chosen profile
and parameters; one progress line per notebook; the run stops at the first failure and names the
notebook and the cell. Wall times per notebook go to ``results/benchmarks/run_all_<profile>.json``
(kept out of the notebooks themselves, so that their checked outputs stay free of timings).
"""
from __future__ import annotations

import argparse
import ast
import os
import platform
import sys
import time
from pathlib import Path

from twostream_lib.config import PROFILES, REPO_ROOT
from twostream_lib.errors import ConfigError
from twostream_lib.files import atomic_write_json


def notebook_paths(notebooks_dir: Path, only: list[str] | None = None) -> list[Path]:
    """Notebooks in run order (file names start with their number); ``only`` filters by substring."""
    paths = sorted(p for p in notebooks_dir.glob("*.ipynb") if not p.name.startswith("_"))
    if only:
        chosen = [p for p in paths if any(o in p.stem for o in only)]
        missing = [o for o in only if not any(o in p.stem for p in paths)]
        if missing:
            names = [p.stem for p in paths]
            raise ConfigError(f"--only {missing} matched no notebook; notebooks are {names}")
        return chosen
    return paths


def parse_value(text: str):
    """A ``-p name value`` value as papermill's CLI would read it: a Python literal, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_notebooks(
    *,
    profile: str = "demo",
    only: list[str] | None = None,
    device: str | None = None,
    parameters: dict | None = None,
    notebooks_dir: Path = REPO_ROOT / "notebooks",
    output_dir: Path = REPO_ROOT / "results" / "notebooks",
    kernel: str = "python3",
) -> dict[str, float]:
    """Run the notebooks; return {notebook: seconds}. Raises RuntimeError naming a failed cell."""
    import papermill as pm  # imported here: the library itself does not need papermill

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    params = {"profile": profile, **(parameters or {})}
    if device is not None:
        params["device"] = device
    output_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    paths = notebook_paths(notebooks_dir, only)
    for i, nb in enumerate(paths, 1):
        out = output_dir / nb.name
        tmp = output_dir / f".{nb.stem}.running.ipynb"
        print(f"[{i}/{len(paths)}] {nb.name} (profile {profile}) ...", end="", flush=True)
        start = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb), str(tmp), parameters=_accepted(nb, params), kernel_name=kernel,
                cwd=str(nb.parent), progress_bar=False, log_output=False, report_mode=False,
            )
        except pm.PapermillExecutionError as err:
            print(" FAILED")
            raise RuntimeError(
                f"{nb.name}: cell {err.exec_count} raised {err.ename}: {err.evalue}\n"
                f"(the partly executed notebook is {tmp})"
            ) from None
        os.replace(tmp, out)
        times[nb.name] = round(time.perf_counter() - start, 1)
        print(f" done in {times[nb.name]:.0f} s")
    _record_times(profile, times, output_dir.parent / "benchmarks")
    return times


def _accepted(nb: Path, params: dict) -> dict:
    """Only pass the parameters a notebook declares (papermill would add unknown ones silently)."""
    import papermill as pm

    declared = set(pm.inspect_notebook(str(nb)))
    return {k: v for k, v in params.items() if k in declared}


def _record_times(profile: str, times: dict[str, float], bench_dir: Path) -> None:
    bench_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "profile": profile,
        "seconds_per_notebook": times,
        "total_seconds": round(sum(times.values()), 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
    }
    atomic_write_json(bench_dir / f"run_all_{profile}.json", record, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only notebooks whose name contains NAME")
    ap.add_argument("--device", help="e.g. cpu, cuda, cuda:1")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="papermill parameter passed to every notebook that declares it")
    ap.add_argument("-f", "--parameters-file", help="YAML/JSON file of parameters (papermill -f)")
    args = ap.parse_args(argv)
    params = {}
    if args.parameters_file:
        import yaml  # papermill depends on PyYAML

        params.update(yaml.safe_load(Path(args.parameters_file).read_text()) or {})
    params.update({k: parse_value(v) for k, v in args.parameter})
    try:
        times = run_notebooks(profile=args.profile, only=args.only, device=args.device, parameters=params)
    except (RuntimeError, ConfigError) as err:
        print(f"run_all: {err}", file=sys.stderr)
        return 1
    print(f"all {len(times)} notebooks done in {sum(times.values()):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
