"""Execute the notebooks headless with papermill (what ``./run_all.sh`` calls).

Each notebook in ``notebooks/`` runs in order with the chosen profile and parameters; one progress
line per notebook; the run stops at the first failure and names the notebook and the cell.

Where the outputs go (executed notebooks, tables, figures, trained runs, benchmark records): one
folder per profile, data set and synthetic seed, so that no run overwrites another's::

    results/                               the default run: profile demo, its data set, synthetic_seed 0
                                           (nbval checks results/notebooks; the README shows these tables)
    results/<profile>[-<dataset>][-seed<k>]/   every other run, e.g.
        results/demo-seed3/                    ./run_all.sh -p synthetic_seed 3
        results/paper/                         ./run_all.sh --profile paper
        results/paper-hmdb51/                  ./run_all.sh --profile paper -p dataset hmdb51

``-<dataset>`` is added when the data set differs from the profile's and ``-seed<k>`` when the data
set is the synthetic one and ``k`` differs from the profile's seed; ``-p results_dir DIR`` chooses
the folder outright (relative to the repository root). Each folder holds ``notebooks/``,
``html/``, ``tables/``, ``figures/``, ``runs/`` and ``benchmarks/``. The runner passes ``results_dir`` to
every notebook (each declares it, with ``dataset`` and ``synthetic_seed``); the default run passes
none, so its notebooks are executed exactly as before. Only the default run refreshes the README's
results section.

Parameters are checked before any notebook runs: a ``-p``/``-f`` name that no selected notebook
declares is an error listing the accepted names; a value for a profile field must have the field's
type (``config.load_profile``), any other value the type the notebook declares.

Before anything runs: ``--plan`` prints what the run needs (feature caches, checkpoints, RAM, GPU hours per
notebook: :mod:`twostream_lib.plan`, docs/plan.md) and exits; a run of a profile other than the default
demo is refused (exit 2) when its feature caches and checkpoints cannot fit its results folder's disk.

Reading without running: right after a notebook has run, its executed copy is rendered to
``<folder>/html/<notebook>.html`` (nbconvert's HTMLExporter, nothing re-executed; figures embedded as
base64 PNG, so one file is the whole page): a run that stops part-way still has the pages of the
notebooks that ran. See ``docs/notebooks.md``.

Timing: wall seconds per notebook, from the moment it may start (its kernel started and imported the
library during the notebook before: :data:`WARM_UP`), go to ``<folder>/benchmarks/run_all_<profile>.json``
(kept out of the notebooks themselves, so that their checked outputs stay free of timings), beside the CPU
seconds of each notebook's processes, the machine's speed measured at the start (:func:`twostream_lib.arithmetic.matmul_gflops`,
2 threads, float32) and again at the end, and the seconds normalised to a machine whose probe reads
:data:`REFERENCE_GFLOPS` (seconds x probe / 110, with the larger of the two readings). A shared machine
can run slower for a while than its probe says (the probe keeps the best of 20 products); the CPU
seconds of the same work then grow.
Demo notebooks over their budget (:data:`BUDGETS`, normalised seconds) get a warning line and are
listed in the record. Where notebooks ran side by side (``--at-once``), the record's total is the run's
wall time, each notebook's start and end are kept (``schedule``), and a notebook is held to its
budget by its CPU seconds shared over the reference machine's :data:`REFERENCE_CORES` cores (its
wall time then depends on what ran beside it).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import multiprocessing
import os
import platform
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

from twostream_lib.config import PROFILES, REPO_ROOT, Profile, load_profile
from twostream_lib.errors import ConfigError, DataError
from twostream_lib.files import atomic_write, atomic_write_json

#: The default run, whose outputs stay in ``results/`` (what nbval and the README read).
DEFAULT_PROFILE = "demo"

#: Speed of the reference machine: its 2-thread float32 matmul probe (issue 11: 2-core budget).
REFERENCE_GFLOPS = 110.0
REFERENCE_CORES = 2  # the 2-core machine of the demo's budget

#: Budget of each notebook in normalised seconds (seconds x probe / REFERENCE_GFLOPS), demo profile.
#: Normalised seconds per demo notebook: 600 in all (issue 11), shared out as the notebooks' measured times
#: were (01_approach trains every tower of the run, 05_table4 the 3D conv heads; 07_table6's IDT scores
#: are computed during the notebooks before it: BACKGROUND); a notebook not listed gets DEFAULT_BUDGET.
BUDGETS: dict[str, float] = {
    "00_data": 90,  # generation and TV-L1 flow of 630 videos
    "01_approach": 95,  # the four towers of the run, two processes (experiments.train_run_towers)
    "01_figure1": 25,
    "02_table1": 55,
    "03_table2": 85,
    "04_table3": 30,  # its towers were trained by 01_approach
    "05_table4": 130,  # three 3D conv heads of 27 taps per weight
    "06_table5": 60,
    "07_table6": 30,  # IDT's scores were computed ahead (BACKGROUND), or what of them is left
}
DEFAULT_BUDGET = 60

#: What each notebook needs to have run before it, where notebooks run side by side (``--at-once N``,
#: demo profile): 01_approach trains every tower of the run
#: (``experiments.train_run_towers``); 05_table4 trains the 3D conv heads that 06_table5 and 07_table6
#: both test with the final protocol (whichever asks first computes those scores while the other waits
#: for them: ``experiments.fusion.scores_lock``); 07_table6's IDT needs only the data. A notebook not
#: listed here waits for every notebook before it.
NEEDS: dict[str, tuple[str, ...]] = {
    "00_data": (),
    "01_approach": ("00_data",),
    "01_figure1": ("01_approach",),
    "02_table1": ("01_approach",),
    "03_table2": ("01_approach",),
    "04_table3": ("01_approach",),
    "05_table4": ("01_approach",),
    "06_table5": ("05_table4",),
    "07_table6": ("05_table4",),
}
#: The line of :data:`WARM_UP` that starts the fork server the notebook's pools fork from
#: (:func:`twostream_lib.workers.start_fork_server`: ~8 s of imports in its own process).
START_FORK_SERVER = "twostream_lib.workers.start_fork_server()"
#: What the next notebook's kernel runs while the current notebook runs (:func:`execute`): the imports every
#: notebook needs (torch, pandas, and matplotlib for its plots: ~5 s) and the fork server.
WARM_UP = ("import twostream_lib.experiments, twostream_lib.plots, twostream_lib.workers", START_FORK_SERVER)
#: Notebooks that start no worker process once 01_approach has trained the run's towers (checked for the
#: demo): their kernels skip :data:`START_FORK_SERVER`, whose CPU seconds would only slow the notebook
#: running beside the warm-up. Were they to need a pool after all, it starts its server itself.
WITHOUT_WORKERS = frozenset({"01_figure1", "04_table3"})
#: Work a notebook needs that depends on the data alone, computed ahead (:func:`execute`): once the notebook
#: named first has run, ``"module:function"`` (called with the notebook's parameters) starts in a process
#: of the lowest CPU priority (:func:`lowest_priority`), so that it takes the core time the notebooks in
#: between leave idle (their serial parts, kernel starts: 17% of the demo's two cores). It goes on while
#: its notebook runs, which reads what the job has finished and waits for what it has in progress (each
#: item computed under a lock, ``files.exclusive``: IDT's scores per split), on cores it then has to
#: itself; the job is stopped when its notebook ends, or when the run stops. The work must be cached item
#: by item and written atomically (IDT's descriptors one file per video, its scores one per split), so
#: that a stop loses only the items in progress.
BACKGROUND: dict[str, tuple[str, str]] = {
    "07_table6": ("00_data", "twostream_lib.experiments.rows:idt_ahead"),  # IDT scores, ~100 CPU s
}
BUDGET_PROFILES = ("demo",)  # budgets are for the 2-core CPU demo; other profiles record times only

#: Parameters that choose the data a notebook computes on: given for a run with its own folder, every
#: selected notebook must declare them (a notebook that did not would use the profile's data set and seed).
_DATA_PARAMETERS = ("dataset", "synthetic_seed")
_PROFILE_FIELDS = frozenset(typing.get_type_hints(Profile))
# papermill's inferred type names -> the Python types a value may have
_DECLARED_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                   "list": (list, tuple), "tuple": (list, tuple), "dict": (dict,)}


# ----------------------------------------------------------------------------- notebooks and parameters

def notebook_paths(notebooks_dir: Path, only: list[str] | None = None) -> list[Path]:
    """Notebooks in run order (file names start with their number); ``only`` filters by substring."""
    paths = sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if not p.name.startswith("_"))
    if only:
        chosen = [p for p in paths if any(o in p.stem for o in only)]
        missing = [o for o in only if not any(o in p.stem for p in paths)]
        if missing:
            names = [p.stem for p in paths]
            raise ConfigError(f"--only {missing} matched no notebook; notebooks are {names}")
        return chosen
    if not paths:
        raise ConfigError(f"{notebooks_dir}: no notebooks (*.ipynb) there")
    return paths


def parse_value(text: str):
    """A ``-p name value`` value as papermill's CLI would read it: a Python literal, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_parameters_file(path: str | Path) -> dict:
    """The parameters of a YAML/JSON file (papermill ``-f``): a mapping of names to values."""
    import yaml  # papermill depends on PyYAML

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such parameters file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise ConfigError(f"{path}: expected a mapping of parameter names to values, "
                          f"got {type(loaded).__name__}")
    return loaded


def declared_parameters(nb: Path) -> dict[str, dict]:
    """The parameters a notebook declares in its ``parameters`` cell (papermill's inspection)."""
    import papermill as pm  # imported here: the library itself does not need papermill

    return pm.inspect_notebook(str(nb))


def results_folder(profile: str, parameters: dict | None = None, *, base: Path | None = None) -> Path:
    """The folder of a run's outputs (scheme in the module docstring); ``base`` is the profile's
    ``results_dir`` (``results/``) unless given."""
    params = {k: v for k, v in (parameters or {}).items() if k in _PROFILE_FIELDS}
    cfg = load_profile(profile, **params)
    if params.get("results_dir") is not None:
        return cfg.results_path
    base = PROFILES[profile].results_path if base is None else Path(base)
    default = PROFILES[profile]
    name = profile
    if cfg.dataset != default.dataset:
        name += f"-{cfg.dataset}"
    if cfg.dataset == "synthetic" and cfg.synthetic_seed != default.synthetic_seed:
        name += f"-seed{cfg.synthetic_seed}"
    if name == DEFAULT_PROFILE:
        return base
    return base / name


@dataclass
class RunPlan:
    """A checked run: the notebooks, what each is given, and where the outputs go."""

    profile: str
    notebooks: list[Path]
    parameters: dict[Path, dict]  # per notebook: the parameters it declares, `profile` first
    folder: Path  # results folder of this run
    default_folder: bool  # True for the default demo run (outputs in results/)
    given: dict = field(default_factory=dict)  # the parameters as given (-f, -p, --device)

    @property
    def notebooks_dir(self) -> Path:
        return self.folder / "notebooks"

    @property
    def benchmarks_dir(self) -> Path:
        return self.folder / "benchmarks"

    @property
    def html_dir(self) -> Path:
        return self.folder / "html"


def plan_run(*, profile: str = DEFAULT_PROFILE, only: list[str] | None = None, device: str | None = None,
             parameters: dict | None = None, notebooks_dir: Path = REPO_ROOT / "notebooks",
             results_base: Path | None = None) -> RunPlan:
    """Check everything that can be checked before a notebook runs; ConfigError names what is wrong."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    given = dict(parameters or {})
    if "profile" in given:
        if given["profile"] != profile and profile != DEFAULT_PROFILE:
            raise ConfigError(f"-p profile {given['profile']!r} contradicts --profile {profile}; give one of them")
        profile = given.pop("profile")
        if profile not in PROFILES:
            raise ConfigError(f"-p profile {profile!r}: unknown profile; expected one of {sorted(PROFILES)}")
    if device is not None:
        given["device"] = device
    paths = notebook_paths(notebooks_dir, only)
    declared = {nb: declared_parameters(nb) for nb in paths}
    accepted = sorted(set().union(*declared.values()) - {"profile"})

    unknown = sorted(set(given) - set(accepted))
    if unknown:
        hints = [f"{u!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(u, accepted, 1))
                 else repr(u) for u in unknown]
        raise ConfigError(f"parameter {', '.join(hints)} is declared by no selected notebook "
                          f"({', '.join(p.stem for p in paths)}); accepted names: {', '.join(accepted)}")
    # profile fields: the dataclass's types (ConfigError names the field and the type)
    load_profile(profile, **{k: v for k, v in given.items() if k in _PROFILE_FIELDS})
    # other parameters: the type each declaring notebook gives them
    for name, value in given.items():
        if name in _PROFILE_FIELDS or value is None:
            continue
        for nb, params in declared.items():
            kind = params.get(name, {}).get("inferred_type_name", "")
            types_ = _DECLARED_TYPES.get(kind)
            if types_ and (not isinstance(value, types_) or (isinstance(value, bool) and bool not in types_)):
                raise ConfigError(f"parameter {name}={value!r}: {nb.name} declares it as {kind}, "
                                  f"got {type(value).__name__}")

    folder = results_folder(profile, given, base=results_base)
    explicit = given.get("results_dir") is not None
    default_folder = profile == DEFAULT_PROFILE and not explicit and folder == PROFILES[profile].results_path
    # the notebooks' own default (results_dir=None) is the profile's folder: any other is passed to them
    elsewhere = explicit or folder != PROFILES[profile].results_path
    per_notebook = {}
    for nb, params in declared.items():
        if elsewhere:
            needed = ["results_dir", *(k for k in _DATA_PARAMETERS if k in given)]
            missing = [k for k in needed if k not in params]
            if missing:
                raise ConfigError(f"{nb.name} does not declare {', '.join(missing)}: in a run with its own "
                                  f"folder ({_relative(folder)}) it would compute on the profile's data or "
                                  "write to the default results; add it to its parameters cell")
        values = {"profile": profile, **{k: v for k, v in given.items() if k in params}}
        if elsewhere:
            values["results_dir"] = _relative(folder)
        per_notebook[nb] = values
    return RunPlan(profile, paths, per_notebook, folder, default_folder, given)


def _relative(path: Path) -> str:
    """A path as the notebooks' ``results_dir`` takes it: relative to the repository root when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- running

def run_notebooks(
    *,
    profile: str = DEFAULT_PROFILE,
    only: list[str] | None = None,
    device: str | None = None,
    parameters: dict | None = None,
    notebooks_dir: Path = REPO_ROOT / "notebooks",
    results_base: Path | None = None,
    kernel: str = "python3",
    gflops: float | None = None,
    at_once: int = 1,
    warm_up: tuple[str, ...] | None = None,
) -> dict:
    """Check the parameters, run the notebooks, write and return the timing record.

    ``results_base``: where the default run's outputs go (``results/``); other runs use a folder
    under it. ``gflops``: the machine's speed if already known (measured here otherwise). ``warm_up``:
    what a kernel runs before its notebook (default :data:`WARM_UP`; ``()`` for none). Raises
    ConfigError before any notebook runs, RuntimeError naming the notebook and cell that failed.
    """
    plan = plan_run(profile=profile, only=only, device=device, parameters=parameters,
                    notebooks_dir=notebooks_dir, results_base=results_base)
    return execute(plan, kernel=kernel, gflops=gflops, at_once=at_once, warm_up=warm_up)


def execute(plan: RunPlan, *, kernel: str = "python3", gflops: float | None = None, at_once: int = 1,
            warm_up: tuple[str, ...] | None = None) -> dict:
    """Run a checked plan (see :func:`run_notebooks`): each notebook in a worker process (papermill there),
    ``at_once`` at a time, each once the notebooks it needs (:func:`needs`) have run; the longest first
    among those ready (its budget). A failed notebook stops the run: nothing new starts, the notebooks
    already running finish, and the error names the failed one.

    The next notebook's kernel starts while the current ones run and executes ``warm_up``
    (:data:`WARM_UP`: the library's imports and its fork server, ~6-10 s a notebook); the notebook's cells
    run once it may start. Its seconds count from then: a warm-up that has not finished by then counts.

    ``at_once`` > 1 is for machines with more cores than the demo's two: on two cores, two notebooks at
    a time took longer than one (561 against 525 s for the tables, measured back to back: their
    training processes, up to six on two cores, spent 31% more CPU seconds on the same work)."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from twostream_lib.arithmetic import matmul_gflops, use_pinned_kernels

    # the kernels inherit this process's environment (pinned at import); pin the convolutions here too,
    # as setup() does in them, so that the record's arithmetic is theirs
    use_pinned_kernels(load_profile(plan.profile).pinned_arithmetic)
    if gflops is None:
        gflops = matmul_gflops()
    warm_up = WARM_UP if warm_up is None else tuple(warm_up)
    print(f"machine speed: {gflops:.1f} GFLOP/s (2-thread float32 matmul; times are normalised to "
          f"{REFERENCE_GFLOPS:.0f}); outputs in {_relative(plan.folder)}/", flush=True)
    plan.notebooks_dir.mkdir(parents=True, exist_ok=True)
    slots = max(1, at_once)
    stems = [nb.stem for nb in plan.notebooks]
    waits_for = {nb.stem: needs(nb.stem, stems, side_by_side=slots > 1) for nb in plan.notebooks}
    number = {nb.stem: i for i, nb in enumerate(plan.notebooks, 1)}
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    schedule: dict[str, list[float]] = {}
    done: set[str] = set()  # stems
    rendered: list[Path] = []  # executed notebooks whose HTML is still to write
    pending, failure = list(plan.notebooks), None
    warming: dict = {}  # stem -> (its future, its temporary output, its go queue): a kernel started ahead
    ahead: dict = {}  # stem -> its BACKGROUND job (a Background), running
    ahead_cpu: dict[str, float] = {}  # stem -> the CPU seconds its BACKGROUND job took
    running: dict = {}  # future -> (notebook, its temporary output)
    run_start = time.perf_counter()

    def launch(nb, go=None):
        tmp = plan.notebooks_dir / f".{nb.stem}.running.ipynb"
        lines = tuple(line for line in warm_up if not (line == START_FORK_SERVER and nb.stem in WITHOUT_WORKERS))
        return pool.submit(execute_notebook, nb, tmp, plan.parameters[nb], kernel, go, lines), tmp

    def longest_first(candidates):  # already warm first, then by budget
        return sorted(candidates, key=lambda n: (n.stem not in warming, -(budget(plan.profile, n.stem) or 0)))

    with multiprocessing.get_context("spawn").Manager() as manager, \
            ProcessPoolExecutor(max_workers=min(slots + 1, len(plan.notebooks)),
                                mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            while pending or running:
                if failure is None:
                    for nb in pending:  # work computed ahead, once what it needs has run
                        after, target = BACKGROUND.get(nb.stem, (None, None))
                        if after in done and nb.stem not in ahead and nb.stem not in ahead_cpu and hasattr(os, "nice"):
                            ahead[nb.stem] = Background(target, plan.parameters[nb])
                    ready = [nb for nb in pending if waits_for[nb.stem] <= done]
                    for nb in longest_first(ready)[:slots - len(running)]:
                        pending.remove(nb)
                        print(f"[{number[nb.stem]}/{len(stems)}] {nb.name} (profile {plan.profile}) started", flush=True)
                        schedule[nb.name] = [round(time.perf_counter() - run_start, 1)]
                        if nb.stem in warming:
                            future, tmp, go = warming.pop(nb.stem)
                            go.put(True)
                        else:
                            future, tmp = launch(nb)
                        running[future] = (nb, tmp)
                    # warm the kernel of the notebook that starts next: one whose needs are done or running
                    soon = done | {nb.stem for nb, _ in running.values()}
                    upcoming = [nb for nb in pending if nb.stem not in warming and waits_for[nb.stem] <= soon]
                    if not warming and upcoming and warm_up:
                        nb = longest_first(upcoming)[0]
                        go = manager.Queue(maxsize=1)
                        warming[nb.stem] = (*launch(nb, go), go)
                while rendered:  # while the next notebook runs
                    executed = rendered.pop(0)
                    render_html(executed, plan.html_dir / f"{executed.stem}.html")
                if not running:
                    break  # a notebook failed: the rest are not started
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    nb, tmp = running.pop(future)
                    end = time.perf_counter() - run_start
                    if nb.stem in ahead:  # its notebook waited for what it needed of it; the rest is not needed
                        ahead_cpu[nb.stem] = ahead.pop(nb.stem).stop()
                    try:
                        cpu_seconds, error = future.result()
                    except Exception as err:  # the worker itself failed (e.g. the kernel could not start)
                        cpu_seconds, error = 0.0, f"{type(err).__name__}: {err}"
                    if error is not None:
                        print(f"[{number[nb.stem]}/{len(stems)}] {nb.name} FAILED", flush=True)
                        failure = failure or RuntimeError(f"{nb.name}: {error}\n(the partly executed notebook is {tmp})")
                        continue
                    os.replace(tmp, plan.notebooks_dir / nb.name)
                    schedule[nb.name].append(round(end, 1))
                    times[nb.name], cpu[nb.name] = round(end - schedule[nb.name][0], 1), round(cpu_seconds, 1)
                    done.add(nb.stem)
                    rendered.append(plan.notebooks_dir / nb.name)
                    print(f"[{number[nb.stem]}/{len(stems)}] {nb.name} done in {times[nb.name]:.0f} s", flush=True)
                    cost = _budgeted_seconds(times[nb.name], cpu[nb.name], side_by_side=slots > 1)
                    warning = _budget_warning(plan.profile, nb.stem, cost, gflops, side_by_side=slots > 1)
                    if warning:
                        print(warning, flush=True)
            for executed in rendered:  # the last notebook's
                render_html(executed, plan.html_dir / f"{executed.stem}.html")
        finally:  # the run stopped (a failure, an interrupt): kernels started ahead shut down unused
            for job in ahead.values():
                job.stop()
            for future, _, go in warming.values():
                go.put(False)
                with contextlib.suppress(Exception):  # its own failure is not the run's
                    future.result()
    if failure is not None:
        raise failure
    wall = time.perf_counter() - run_start
    if slots > 1:  # notebooks side by side each rewrote the summary from the tables recorded so far
        from twostream_lib.experiments.findings import write_summary

        if (plan.folder / "tables").is_dir():
            write_summary(plan.folder)
    record = timing_record(plan.profile, {nb.name: times[nb.name] for nb in plan.notebooks}, gflops,
                           folder=_relative(plan.folder), parameters=plan.given,
                           cpu_seconds={nb.name: cpu[nb.name] for nb in plan.notebooks}, gflops_end=matmul_gflops(),
                           ahead_cpu_seconds={f"{stem}.ipynb": round(c, 1) for stem, c in ahead_cpu.items()},
                           wall_seconds=round(wall, 1) if slots > 1 else None, schedule=schedule if slots > 1 else None)
    atomic_write_json(plan.benchmarks_dir / f"run_all_{plan.profile}.json", record, sort_keys=False)
    return record


def needs(stem: str, stems: list[str], *, side_by_side: bool) -> set[str]:
    """The notebooks (of ``stems``, the run's, in run order) that must have run before ``stem`` starts:
    with notebooks one at a time, or for a notebook :data:`NEEDS` does not list, every one before it;
    side by side, those :data:`NEEDS` lists, as long as everything they need in turn is in the run
    (otherwise a table could train towers that another table trains at the same time)."""
    earlier = set(stems[:stems.index(stem)])
    if not side_by_side or stem not in NEEDS:
        return earlier
    closure, todo = set(), list(NEEDS[stem])
    while todo:
        n = todo.pop()
        if n not in closure:
            closure.add(n)
            todo.extend(NEEDS.get(n, ()))
    return set(NEEDS[stem]) if closure <= set(stems) else earlier


def execute_notebook(notebook: Path, out: Path, parameters: dict, kernel: str, go=None,
                     warm_up: tuple[str, ...] = ()) -> tuple[float, str | None]:
    """Run one notebook with papermill (in a worker process of :func:`execute`, which times it); returns the
    CPU seconds of its kernel and the processes the kernel started, and the error (``"cell N raised E:
    message"``) or None.

    The kernel starts first and runs ``warm_up`` (lines of code, e.g. :data:`WARM_UP`; an error there is
    only logged by the kernel, the notebook's own cells then meet it); with ``go`` (a queue), the worker
    then waits for ``go.get()``: True runs the notebook, False shuts the kernel down unused."""
    import papermill as pm

    adopts = _adopt_orphans()
    cpu_start = children_cpu_seconds()
    km = start_kernel(kernel, notebook.parent, warm_up)
    error = None
    try:
        if go is not None and not go.get():
            return 0.0, "not run: the run stopped"
        try:
            pm.execute_notebook(str(notebook), str(out), parameters=parameters, kernel_name=kernel, km=km,
                                cwd=str(notebook.parent), progress_bar=False, log_output=False, report_mode=False)
        except pm.PapermillExecutionError as err:
            error = f"cell {err.exec_count} raised {err.ename}: {err.evalue}"
    finally:
        km.shutdown_kernel(now=False)
    if adopts:
        _reap_orphans()
    return children_cpu_seconds() - cpu_start, error


def start_kernel(kernel: str, cwd: Path, warm_up: tuple[str, ...] = (), timeout: float = 120.0):
    """A started Jupyter kernel (``jupyter_client.KernelManager``) in ``cwd`` that has executed ``warm_up``
    (IPython's ``exec_lines``: before the kernel answers, without an execution count or an output in the
    notebook) and is ready for papermill (``execute_notebook(..., km=...)``)."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=kernel)
    km.start_kernel(cwd=str(cwd), extra_arguments=[f"--IPKernelApp.exec_lines={list(warm_up)!r}"] if warm_up else [])
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=timeout)
    except RuntimeError:
        km.shutdown_kernel(now=True)
        raise
    finally:
        client.stop_channels()
    return km


def _adopt_orphans() -> bool:
    """Make this process the reaper of its descendants that lose their parent (Linux ``prctl``
    PR_SET_CHILD_SUBREAPER), so that their CPU time is counted here when they are reaped: a kernel's
    fork server (:mod:`twostream_lib.workers`), parent of the towers' and heads' workers, outlives the
    kernel by a moment and would otherwise be reaped by init, its workers' CPU seconds with it."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _reap_orphans(timeout: float = 10.0) -> None:
    """Wait (at most ``timeout`` seconds) for the adopted descendants to exit, reaping each."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left
            return
        if pid == 0:
            time.sleep(0.05)


class Background:
    """A :data:`BACKGROUND` job: ``target`` (``"module:function"``) called with a notebook's ``parameters``
    in a process of the lowest CPU priority, started now. :meth:`stop` ends it (if it has not ended) and
    returns the CPU seconds it and every process it started took."""

    def __init__(self, target: str, parameters: dict):
        context = multiprocessing.get_context("spawn")
        self._result = context.Queue()
        self._process = context.Process(target=_run_in_background, args=(target, dict(parameters), self._result),
                                        daemon=False)
        self._process.start()

    def stop(self, timeout: float = 120.0) -> float:
        import queue
        import signal

        if self._process.is_alive():
            os.kill(self._process.pid, signal.SIGTERM)  # the items in progress finish, the rest are left
        # joined before its queue is read: what it puts there is one float, which the pipe takes at once
        self._process.join(timeout)
        if self._process.is_alive():  # it did not end: stopped for good
            self._process.kill()
            self._process.join()
        try:
            return self._result.get(timeout=1.0)
        except queue.Empty:  # it died without reporting: its CPU seconds are unknown
            return 0.0


def _run_in_background(target: str, parameters: dict, result) -> None:
    """The process of a :class:`Background` job: at the lowest priority (:func:`lowest_priority`),
    ``target`` runs in a child, whose descendants this process adopts (as :func:`execute_notebook` does a
    kernel's); SIGTERM is passed on to the child and makes it exit where it is (SystemExit). Puts the CPU
    seconds of the child and its descendants in ``result`` once the child has ended, finished or stopped."""
    import signal

    lowest_priority()
    adopts = _adopt_orphans()
    start = children_cpu_seconds()
    child = multiprocessing.get_context("spawn").Process(target=_call_target, args=(target, parameters))
    stopped: list[bool] = []

    def stop(*_):
        stopped.append(True)
        if child.pid is not None:
            os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    child.start()
    if stopped:  # asked to stop while the child started
        os.kill(child.pid, signal.SIGTERM)
    child.join()
    if adopts:
        _reap_orphans()
    result.put(children_cpu_seconds() - start)


def lowest_priority() -> None:
    """Give this process and every process it starts from now on the least CPU time when others want it
    (Unix; Linux in full). Nice 19 alone is not that: Linux shares the CPU between sessions first
    (autogroups, ``/proc/sys/kernel/sched_autogroup_enabled``) and orders by nice only within one, and
    Jupyter starts each kernel in a session of its own, so a nice-19 process beside a notebook's two
    training processes still took half the cores (01_approach took 116 s instead of 62-67 s). Here the
    process starts a session (an autogroup) of its own and sets that group's nice value to 19 too: two
    processes burning beside two others then kept 4% of the cores, the others 94% of what they had alone."""
    os.setsid()
    os.nice(19)
    try:
        with open("/proc/self/autogroup", "w", encoding="ascii") as f:
            f.write("19")
    except OSError:  # no autogroups (not Linux, or not compiled in): nice is then all there is
        pass


def _call_target(target: str, parameters: dict) -> None:
    import importlib
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    module, name = target.split(":")
    getattr(importlib.import_module(module), name)(parameters)


# ----------------------------------------------------------------------------- HTML renderings

def render_html(notebook: Path, html: Path) -> Path:
    """Write the HTML rendering of an executed notebook (nbconvert's HTMLExporter, lab template; nothing
    is executed) to ``html`` atomically; returns ``html``.

    Output images (PNG, JPEG, SVG) are in the page itself (``data:`` URIs), so the file can be opened or
    mailed on its own. Only LaTeX needs the network: the page loads MathJax from its CDN and shows the
    ``$...$`` source where there is none. A notebook that cannot be rendered is a RuntimeError naming it.
    """
    import logging

    import nbformat
    from nbconvert import HTMLExporter

    notebook, html = Path(notebook), Path(html)
    quiet = logging.getLogger(f"{__name__}.html")  # not one "Alternative text is missing" line per figure
    quiet.setLevel(logging.ERROR)
    try:
        nb = nbformat.read(str(notebook), as_version=4)
        body, _ = HTMLExporter(log=quiet).from_notebook_node(nb, resources={"metadata": {"name": notebook.stem}})
    except Exception as err:  # any failure of the exporter, named with the notebook
        raise RuntimeError(f"{notebook.name}: could not render it as HTML ({type(err).__name__}: {err})") from err
    return atomic_write(html, body)


# ----------------------------------------------------------------------------- timing record

def budget(profile: str, notebook: str) -> float | None:
    """A notebook's budget in normalised seconds (None: the profile has no budgets)."""
    if profile not in BUDGET_PROFILES:
        return None
    return float(BUDGETS.get(Path(notebook).stem, DEFAULT_BUDGET))


def normalised(seconds: float, gflops: float) -> float:
    """Seconds on a machine whose probe reads ``gflops``, as seconds on the reference machine."""
    return seconds * gflops / REFERENCE_GFLOPS


def _budgeted_seconds(wall: float, cpu: float, *, side_by_side: bool) -> float:
    """What a notebook's budget is held against: its wall seconds; side by side, where its wall time
    depends on what ran beside it, its CPU seconds shared over the reference machine's cores."""
    return cpu / REFERENCE_CORES if side_by_side else wall


def _budget_warning(profile: str, notebook: str, seconds: float, gflops: float, *,
                    side_by_side: bool = False) -> str | None:
    """A warning line when ``seconds`` (wall; side by side: CPU seconds / REFERENCE_CORES) normalised
    are over the notebook's budget."""
    limit = budget(profile, notebook)
    norm = normalised(seconds, gflops)
    if limit is None or norm <= limit:
        return None
    what = f"CPU s / {REFERENCE_CORES} cores" if side_by_side else "s"
    return (f"warning: {notebook} took {norm:.0f} normalised s ({seconds:.0f} {what} x {gflops:.1f} / "
            f"{REFERENCE_GFLOPS:.0f} GFLOP/s), over its budget of {limit:.0f} s")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def children_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's finished children and theirs: a notebook's kernel
    and the processes it started."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timing_record(profile: str, times: dict[str, float], gflops: float, *, folder: str = "results",
                  parameters: dict | None = None, cpu_seconds: dict[str, float] | None = None,
                  gflops_end: float | None = None, wall_seconds: float | None = None,
                  schedule: dict[str, list[float]] | None = None,
                  ahead_cpu_seconds: dict[str, float] | None = None) -> dict:
    """The ``run_all_<profile>.json`` record: seconds and normalised seconds per notebook, the probe,
    the budgets and which notebooks went over them, and the machine. ``gflops_end``: the probe again
    after the last notebook. ``cpu_seconds`` (per notebook) show a machine that ran slower during the run
    than its probes say: the same work then takes more CPU seconds. Where notebooks
    ran side by side, ``wall_seconds`` is the run's (less than the sum of the notebooks') and
    ``schedule`` each notebook's start and end, in seconds from the run's start. ``ahead_cpu_seconds``:
    the CPU seconds of each notebook's work computed ahead (:data:`BACKGROUND`), not in its own.

    The seconds are normalised with the larger of the two probes: each keeps the best of 20 products,
    the machine's speed when nothing else holds its cores, so a reading lower than the other was taken
    while something did (on this shared machine one run read 140 at its start and 178 at its end), and
    would flatter the run."""
    from twostream_lib.arithmetic import describe

    speed = max(gflops, gflops_end or 0.0)
    total = round(sum(times.values()), 1) if wall_seconds is None else wall_seconds

    norm = {nb: round(normalised(s, speed), 1) for nb, s in times.items()}
    budgets = {nb: budget(profile, nb) for nb in times}
    cost = {nb: _budgeted_seconds(s, (cpu_seconds or {}).get(nb, 0.0), side_by_side=wall_seconds is not None)
            for nb, s in times.items()}
    over = [nb for nb in times if budgets[nb] is not None and normalised(cost[nb], speed) > budgets[nb]]
    return {
        "profile": profile,
        "results_dir": folder,
        "parameters": parameters or {},
        "seconds_per_notebook": times,
        "total_seconds": total,
        "schedule": schedule or {},
        "cpu_seconds_per_notebook": cpu_seconds or {},
        "total_cpu_seconds": round(sum((cpu_seconds or {}).values()), 1),
        "ahead_cpu_seconds": ahead_cpu_seconds or {},
        "probe": {"matmul_gflops": round(gflops, 2), "reference_gflops": REFERENCE_GFLOPS,
                  "matmul_gflops_end": None if gflops_end is None else round(gflops_end, 2),
                  "what": "best of 20 float32 1024x1024 matrix products on 2 threads "
                          "(twostream_lib.arithmetic.matmul_gflops), measured at the start of the run and "
                          "again at its end; the larger normalises the times",
                  "normalising_gflops": round(speed, 2)},
        "normalised_seconds_per_notebook": norm,
        "total_normalised_seconds": round(normalised(total, speed), 1),
        "normalisation": "seconds x normalising_gflops / reference_gflops",
        "budget_normalised_seconds": budgets,
        "budget_counts": ("wall seconds" if wall_seconds is None else
                          f"CPU seconds / {REFERENCE_CORES} cores (notebooks ran side by side)"),
        "run_budget_normalised_seconds": sum(BUDGETS.values()) if profile in BUDGET_PROFILES else None,
        "over_budget": over,
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0], "arithmetic": describe()},
    }


# ----------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only notebooks whose name contains NAME")
    ap.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: the profile's)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="papermill parameter passed to every notebook that declares it")
    ap.add_argument("-f", "--parameters-file", help="YAML/JSON file of parameters (papermill -f)")
    ap.add_argument("--plan", action="store_true",
                    help="print what the run needs (disk, RAM, GPU hours: python -m twostream_lib plan) and exit")
    ap.add_argument("--at-once", type=int, default=1, metavar="N",
                    help="run up to N notebooks side by side, each after those it needs (machines with more "
                         "than 2 cores; on 2 it is slower)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)
    try:
        params = read_parameters_file(args.parameters_file) if args.parameters_file else {}
        params.update({k: parse_value(v) for k, v in args.parameter})
        plan = plan_run(profile=args.profile, only=args.only, device=args.device, parameters=params)
        if args.plan or plan.profile != DEFAULT_PROFILE:  # a run's feature caches must fit its disk (issue 12)
            from twostream_lib import plan as resources

            needs = resources.run_plan(plan.profile, plan.given, plan.folder, only=[p.stem for p in plan.notebooks])
            if args.plan:
                print(needs.text(), end="")
                return 0
            resources.check_fits(needs)
        if args.at_once < 1:
            raise ConfigError(f"--at-once {args.at_once}: expected a number of notebooks >= 1")
        record = execute(plan, at_once=args.at_once)
        if plan.default_folder:
            from twostream_lib.tables import update_readme

            changed = update_readme(REPO_ROOT / "README.md", plan.folder)
            print("README results section", "updated" if changed else "unchanged")
    except (ConfigError, DataError) as err:  # bad input: nothing ran (or it names what is missing)
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:  # a notebook failed, or a file could not be written
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    times = record["seconds_per_notebook"]
    over = f"; over budget: {', '.join(record['over_budget'])}" if record["over_budget"] else ""
    print(f"all {len(times)} notebooks done in {record['total_seconds']:.0f} s "
          f"({record['total_normalised_seconds']:.0f} normalised s){over}; "
          f"read them without running in {_relative(plan.html_dir)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
