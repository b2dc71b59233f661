"""The notebook runner (run_all.sh): parameters checked before anything runs, one results folder per
profile / data set / synthetic seed, and a timing record normalised to the reference machine.

Execution is tested on tiny throwaway notebooks (a parameters cell and one cell that writes where the
profile says), not on the real ones."""
from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import nbformat
import pytest

from twostream_lib import runner
from twostream_lib.config import REPO_ROOT
from twostream_lib.errors import ConfigError

NOTEBOOKS = REPO_ROOT / "notebooks"
REAL = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not p.name.startswith("_"))

WRITE_CELL = """\
import json
from twostream_lib.config import load_profile
from twostream_lib.files import atomic_write_json
cfg = load_profile(profile, synthetic_seed=synthetic_seed, dataset=dataset, results_dir=results_dir)
atomic_write_json(cfg.results_path / "tables" / NAME, {"seed": cfg.synthetic_seed, "dataset": cfg.dataset,
                  "epochs_fusion": epochs_fusion})
"""


def tiny_notebook(path: Path, params: str, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


PARAMS = ('profile: str = "demo"  # profile\n'
          'dataset: str = None  # data set\n'
          'synthetic_seed: int = None  # seed\n'
          'results_dir: str = None  # outputs\n'
          'epochs_fusion: int = None  # epochs\n')


@pytest.fixture
def tiny(tmp_path):
    """Two notebooks that record the seed, data set and epochs they were given in <results>/tables."""
    nbs = tmp_path / "notebooks"
    tiny_notebook(nbs / "00_first.ipynb", PARAMS, 'NAME = "first.json"\n' + WRITE_CELL)
    tiny_notebook(nbs / "01_second.ipynb", PARAMS + 'splits: list = [1]  # splits\n',
                  'NAME = "second.json"\n' + WRITE_CELL)
    return nbs


def _plan(nbs, tmp_path, **kw):
    return runner.plan_run(notebooks_dir=nbs, results_base=tmp_path / "results", **kw)


# ----------------------------------------------------------------------------- parameters

@pytest.mark.fault
def test_a_name_no_notebook_declares_is_refused_listing_the_accepted_ones(tiny, tmp_path):
    """-p nosuchparam 1 or a misspelt epoch_fusion: refused before any notebook runs, listing the accepted names."""
    with pytest.raises(ConfigError) as err:
        _plan(tiny, tmp_path, parameters={"epoch_fusion": 3})
    message = str(err.value)
    assert "'epoch_fusion' (did you mean 'epochs_fusion'?)" in message
    assert "accepted names: dataset, epochs_fusion, results_dir, splits, synthetic_seed" in message
    with pytest.raises(ConfigError, match="'nosuchparam' is declared by no selected notebook"):
        _plan(tiny, tmp_path, parameters={"nosuchparam": 1})
    # a name only some notebooks declare goes to those
    plan = _plan(tiny, tmp_path, parameters={"splits": [1, 2]})
    assert [plan.parameters[nb].get("splits") for nb in plan.notebooks] == [None, [1, 2]]
    # --only: the accepted names are those of the selected notebooks
    with pytest.raises(ConfigError, match="declared by no selected notebook \\(00_first\\)"):
        _plan(tiny, tmp_path, parameters={"splits": [1]}, only=["first"])


@pytest.mark.fault
def test_values_of_the_wrong_type_fail_before_any_notebook_runs(tiny, tmp_path):
    """-p epochs_fusion notanumber (or a float seed, an int for a list): refused at once naming the parameter and type; nothing written."""
    with pytest.raises(ConfigError, match=r"epochs_fusion='notanumber': expected int, got str"):
        _plan(tiny, tmp_path, parameters={"epochs_fusion": "notanumber"})
    with pytest.raises(ConfigError, match=r"synthetic_seed=1\.5: expected int"):
        _plan(tiny, tmp_path, parameters={"synthetic_seed": 1.5})
    # not a profile field: checked against the type the notebook declares
    with pytest.raises(ConfigError, match=r"splits=3: 01_second.ipynb declares it as list, got int"):
        _plan(tiny, tmp_path, parameters={"splits": 3})
    assert not (tmp_path / "results").exists()


@pytest.mark.fault
def test_cli_errors_are_one_line_exit_2_and_tracebacks_only_with_debug(capsys, tmp_path):
    """Bad run_all.sh input (unknown or mistyped -p, unknown -f key, missing -f file): one 'error:' line, exit 2, a traceback only with --debug."""
    # the real notebooks: everything is checked before any notebook runs (nothing is written)
    assert runner.main(["-p", "epoch_fusion", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: parameter 'epoch_fusion' (did you mean 'epochs_fusion'?)")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert runner.main(["-p", "epochs_fusion", "notanumber"]) == 2
    assert "error: profile setting epochs_fusion='notanumber': expected int" in capsys.readouterr().err
    bad = tmp_path / "params.yaml"
    bad.write_text("epochs_fusion: 3\nfusoin_layers: [relu5]\n")
    assert runner.main(["-f", str(bad)]) == 2
    assert "'fusoin_layers'" in capsys.readouterr().err
    assert runner.main(["-f", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such parameters file" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        runner.main(["--debug", "-p", "nosuchparam", "1"])
    with pytest.raises(SystemExit) as exit_:
        runner.main(["--profile", "nosuchprofile"])
    assert exit_.value.code == 2


def test_every_notebook_takes_the_runners_parameters_and_passes_them_to_setup():
    """device/dataset/synthetic_seed/results_dir default to None (the profile's) and reach ex.setup."""
    for nb in REAL:
        declared = runner.declared_parameters(nb)
        for name in ("dataset", "synthetic_seed", "results_dir"):
            assert declared[name]["default"] == "None", f"{nb.name}: {name}"
        if "device" in declared:
            assert declared["device"]["default"] == "None", f"{nb.name}: device overrides the profile's"
        cells = json.loads(nb.read_text())["cells"]
        calls = [n for c in cells if c["cell_type"] == "code" for n in ast.walk(ast.parse("".join(c["source"])))
                 if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "setup"]
        assert len(calls) == 1, nb.name
        passed = {k.arg: k.value.id for k in calls[0].keywords if isinstance(k.value, ast.Name)}
        for name in set(declared) - {"profile"}:
            if name not in ("video_index", "splits", "clip"):  # not profile settings: used by later cells
                assert passed.get(name) == name, f"{nb.name}: ex.setup does not get {name}"
        # the jupytext pair holds the same parameters cell
        params = next("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", []))
        assert f'# %% tags=["parameters"]\n{params}\n' in nb.with_suffix(".py").read_text(), nb.name


# ----------------------------------------------------------------------------- results folders

@pytest.mark.parametrize("profile, params, folder", [
    ("demo", {}, ""),
    ("demo", {"synthetic_seed": 0, "epochs_fusion": 3}, ""),  # the default data: the default folder
    ("demo", {"synthetic_seed": 3}, "demo-seed3"),
    ("demo", {"dataset": "ucf101"}, "demo-ucf101"),
    ("demo", {"dataset": "ucf101", "synthetic_seed": 3}, "demo-ucf101"),  # the seed does not apply
    ("paper", {}, "paper"),
    ("paper", {"dataset": "hmdb51"}, "paper-hmdb51"),
    ("paper", {"dataset": "synthetic", "synthetic_seed": 2}, "paper-synthetic-seed2"),
    ("smoke", {}, "smoke"),
])
def test_results_folder_scheme(tmp_path, profile, params, folder):
    assert runner.results_folder(profile, params, base=tmp_path) == (tmp_path / folder if folder else tmp_path)


def test_the_default_run_writes_to_results_as_before_and_others_get_their_folder():
    plan = runner.plan_run()  # the real notebooks; nothing runs
    assert plan.default_folder and plan.folder == REPO_ROOT / "results"
    assert plan.notebooks_dir == REPO_ROOT / "results" / "notebooks"
    assert all(p == {"profile": "demo"} for p in plan.parameters.values())  # executed exactly as before
    seeded = runner.plan_run(parameters={"synthetic_seed": 3}, only=["data", "table1"])
    assert not seeded.default_folder and seeded.benchmarks_dir == REPO_ROOT / "results" / "demo-seed3" / "benchmarks"
    assert [p["results_dir"] for p in seeded.parameters.values()] == ["results/demo-seed3"] * 2
    assert all(p["synthetic_seed"] == 3 for p in seeded.parameters.values())
    paper = runner.plan_run(profile="paper", parameters={"dataset": "hmdb51"}, device="cuda:1")
    assert not paper.default_folder and all(
        p == {"profile": "paper", "dataset": "hmdb51", "device": "cuda:1", "results_dir": "results/paper-hmdb51"}
        for nb, p in paper.parameters.items() if "00_data" not in nb.name)


def test_an_explicit_results_dir_is_used_as_given(tmp_path):
    assert runner.results_folder("demo", {"results_dir": str(tmp_path / "mine")}) == tmp_path / "mine"
    assert runner.results_folder("demo", {"results_dir": "elsewhere"}) == REPO_ROOT / "elsewhere"


def test_a_notebook_that_cannot_write_elsewhere_is_refused_in_a_run_with_its_own_folder(tiny, tmp_path):
    tiny_notebook(tiny / "02_old.ipynb", 'profile: str = "demo"  # profile\nsynthetic_seed: int = None  # seed\n',
                  "pass")
    runner.plan_run(notebooks_dir=tiny)  # the default run (results/, nothing passed): fine
    with pytest.raises(ConfigError, match="02_old.ipynb does not declare results_dir"):
        _plan(tiny, tmp_path, parameters={"synthetic_seed": 3})
    with pytest.raises(ConfigError, match="02_old.ipynb does not declare results_dir, dataset"):
        _plan(tiny, tmp_path, profile="paper", parameters={"dataset": "hmdb51"})


def test_runs_write_to_their_own_folders_end_to_end(tiny, tmp_path, capsys):
    """The default run fills <base>/; -p synthetic_seed 3 fills <base>/demo-seed3/ and every notebook
    computes on seed 3; neither touches the other's files."""
    base = tmp_path / "results"
    default = runner.run_notebooks(notebooks_dir=tiny, results_base=base, gflops=55.0,
                                   parameters={"epochs_fusion": 2})
    assert sorted(p.name for p in (base / "notebooks").iterdir()) == ["00_first.ipynb", "01_second.ipynb"]
    assert json.loads((base / "tables" / "first.json").read_text()) == {"seed": 0, "dataset": "synthetic",
                                                                        "epochs_fusion": 2}
    assert default["results_dir"] == str(base.resolve())

    before = {p: p.stat().st_mtime_ns for p in base.rglob("*") if p.is_file()}
    record = runner.run_notebooks(notebooks_dir=tiny, results_base=base, gflops=55.0,
                                  parameters={"synthetic_seed": 3})
    own = base / "demo-seed3"
    for name in ("first.json", "second.json"):
        assert json.loads((own / "tables" / name).read_text())["seed"] == 3
    assert sorted(p.name for p in (own / "notebooks").iterdir()) == ["00_first.ipynb", "01_second.ipynb"]
    assert (own / "benchmarks" / "run_all_demo.json").exists()
    assert {p: p.stat().st_mtime_ns for p in before} == before, "the default run's files changed"
    assert record["parameters"] == {"synthetic_seed": 3}
    out = capsys.readouterr().out
    assert "[2/2] 01_second.ipynb (profile demo) started" in out and "[2/2] 01_second.ipynb done in" in out
    assert "55.0 GFLOP/s" in out
    for folder in (base, own):  # each run's HTML renderings beside its executed notebooks
        assert sorted(p.name for p in (folder / "html").iterdir()) == ["00_first.html", "01_second.html"]
        assert '<h1 id="tiny">' in (folder / "html" / "00_first.html").read_text()


# ----------------------------------------------------------------------------- notebooks side by side

def test_needs_follow_the_table_of_needs_only_where_everything_needed_runs():
    every = [p.stem for p in REAL]
    assert runner.needs("03_table2", every, side_by_side=True) == {"01_approach"}
    assert runner.needs("07_table6", every, side_by_side=True) == {"05_table4"}
    assert runner.needs("03_table2", every, side_by_side=False) == set(every[:every.index("03_table2")])
    # without 01_approach in the run, two tables could train the same towers at once: one after the other
    assert runner.needs("03_table2", ["02_table1", "03_table2"], side_by_side=True) == {"02_table1"}
    assert runner.needs("99_new", ["00_data", "99_new"], side_by_side=True) == {"00_data"}  # not listed
    assert sorted(runner.NEEDS) == every and all(set(n) <= set(every) for n in runner.NEEDS.values())


STAMP_CELL = """\
import json, time
from pathlib import Path
start = time.time()
time.sleep(SLEEP)
Path(OUT, NAME + ".json").write_text(json.dumps([start, time.time()]))
"""


def test_notebooks_run_side_by_side_after_what_they_need(tmp_path, monkeypatch):
    """With two notebooks at a time, the two tables start only once 01_approach has ended, run at the
    same time, and the record's total is the run's wall time, not the sum."""
    nbs, stamps = tmp_path / "notebooks", tmp_path / "stamps"
    stamps.mkdir()
    for name, sleep in (("00_data", 0), ("01_approach", 2), ("02_table1", 4), ("03_table2", 4)):
        tiny_notebook(nbs / f"{name}.ipynb", 'profile: str = "demo"  # profile\nresults_dir: str = None  # outputs\n',
                      f"SLEEP, OUT, NAME = {sleep}, {str(stamps)!r}, {name!r}\n" + STAMP_CELL)
    monkeypatch.setattr(runner, "NEEDS", {"00_data": (), "01_approach": ("00_data",),
                                          "02_table1": ("01_approach",), "03_table2": ("01_approach",)})
    record = runner.run_notebooks(notebooks_dir=nbs, results_base=tmp_path / "results", gflops=110.0, at_once=2)
    span = {n: json.loads((stamps / f"{n}.json").read_text()) for n in ("01_approach", "02_table1", "03_table2")}
    assert min(span["02_table1"][0], span["03_table2"][0]) >= span["01_approach"][1]
    when = {n: record["schedule"][f"{n}.ipynb"] for n in ("02_table1", "03_table2")}  # the runner's clock
    assert when["02_table1"][0] < when["03_table2"][1] and when["03_table2"][0] < when["02_table1"][1]
    last_end = max(end for _, end in record["schedule"].values())  # the total: the run's wall time, not a sum
    assert last_end <= record["total_seconds"] < last_end + 10
    assert set(record["schedule"]) == {f"{n}.ipynb" for n in ("00_data", "01_approach", "02_table1", "03_table2")}
    assert record["schedule"]["02_table1.ipynb"][0] >= record["schedule"]["01_approach.ipynb"][1]


BURN_CELL = """\
from concurrent.futures import ProcessPoolExecutor
from twostream_lib.workers import worker_context
with ProcessPoolExecutor(2, mp_context=worker_context()) as pool:  # workers of the kernel's fork server
    print(list(pool.map(sum, [range(40_000_000)] * 2)))
"""


def test_the_cpu_seconds_of_a_notebook_count_its_fork_servers_workers(tmp_path):
    """The towers and heads train in workers forked by a fork server that outlives the kernel by a moment:
    their CPU seconds still count as the notebook's."""
    nbs = tmp_path / "notebooks"
    tiny_notebook(nbs / "00_burn.ipynb", 'profile: str = "demo"  # profile\nresults_dir: str = None  # outputs\n',
                  BURN_CELL)
    record = runner.run_notebooks(notebooks_dir=nbs, results_base=tmp_path / "results", gflops=110.0)
    import time

    start = time.process_time()
    sum(range(40_000_000))
    one = time.process_time() - start  # what one worker's job costs here
    assert record["cpu_seconds_per_notebook"]["00_burn.ipynb"] > 1.5 * one


WARM_CELL = """\
import json, sys
from multiprocessing import forkserver
from pathlib import Path
Path(OUT).write_text(json.dumps({"imported": "twostream_lib.experiments" in sys.modules,
                                 "fork_server": forkserver._forkserver._forkserver_pid is not None}))
"""


def test_each_kernel_has_imported_the_library_and_started_its_fork_server_before_the_first_cell(tmp_path):
    """The runner starts a notebook's kernel while the notebook before runs (runner.WARM_UP); the warm-up
    leaves no trace in the notebook (execution counts from 1, no output). A notebook that starts no worker
    (runner.WITHOUT_WORKERS, e.g. 01_figure1) gets the imports without the fork server."""
    nbs = tmp_path / "notebooks"
    params = 'profile: str = "demo"  # profile\nresults_dir: str = None  # outputs\n'
    for name in ("00_first", "01_figure1", "01_second"):
        tiny_notebook(nbs / f"{name}.ipynb", params, f"OUT = {str(tmp_path / name)!r}\n" + WARM_CELL)
    runner.run_notebooks(notebooks_dir=nbs, results_base=tmp_path / "results", gflops=110.0)
    assert json.loads((tmp_path / "01_figure1").read_text()) == {"imported": True, "fork_server": False}
    for name in ("00_first", "01_second"):
        assert json.loads((tmp_path / name).read_text()) == {"imported": True, "fork_server": True}
        executed = nbformat.read(str(tmp_path / "results" / "notebooks" / f"{name}.ipynb"), as_version=4)
        counts = [c.execution_count for c in executed.cells if c.cell_type == "code"]
        assert counts == list(range(1, len(counts) + 1))
    cold = tmp_path / "cold"
    runner.run_notebooks(notebooks_dir=nbs, results_base=cold, gflops=110.0, warm_up=())
    assert json.loads((tmp_path / "00_first").read_text()) == {"imported": False, "fork_server": False}


AHEAD_TARGET = """\
import os, time
from pathlib import Path

from twostream_lib.files import exclusive


def work(parameters):
    out = Path(os.environ["AHEAD_DIR"])
    out.mkdir(exist_ok=True)
    (out / "nice").write_text(str(os.nice(0)))
    if Path("/proc/self/autogroup").exists():  # its session's share of the CPU (Linux autogroups)
        (out / "autogroup").write_text(Path("/proc/self/autogroup").read_text().split()[-1])
    (out / "parameters").write_text(repr(sorted(parameters.items())))
    try:
        with exclusive(out / "lock"):  # what its notebook waits for
            for i in range(int(os.environ["AHEAD_ITEMS"])):  # an item every 0.1 s, written whole
                (out / f"item{i}").write_text("done")
                time.sleep(0.1)
            (out / "finished").write_text("")
    finally:
        (out / "stopped").write_text("")
"""


def _ahead_notebooks(tmp_path, monkeypatch, items: int, middle_fails: bool = False):
    """00_first, 01_middle (waits, at most a minute, for the work to have written a few items), 02_last; the
    work of AHEAD_TARGET, computed ahead for 02_last once 00_first has run, writes ``items`` items."""
    (tmp_path / "ahead_target.py").write_text(AHEAD_TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned processes start with this process's sys.path
    monkeypatch.setattr(runner, "BACKGROUND", {"02_last": ("00_first", "ahead_target:work")})
    nbs, ahead = tmp_path / "notebooks", tmp_path / "ahead"
    monkeypatch.setenv("AHEAD_DIR", str(ahead))
    monkeypatch.setenv("AHEAD_ITEMS", str(items))
    params = 'profile: str = "demo"  # profile\nresults_dir: str = None  # outputs\n'
    tiny_notebook(nbs / "00_first.ipynb", params, "x = 1")
    tiny_notebook(nbs / "01_middle.ipynb", params, "import time\nfrom pathlib import Path\n"
                  f"while not Path({str(ahead / 'item3')!r}).exists() and time.time() < {time.time() + 60}:\n"
                  "    time.sleep(0.1)\n" + ("raise ValueError('middle failed')" if middle_fails else ""))
    tiny_notebook(nbs / "02_last.ipynb", params,  # waits for the work in progress, then finds it finished
                  f"from pathlib import Path\nfrom twostream_lib.files import exclusive\n"
                  f"with exclusive({str(ahead / 'lock')!r}):\n"
                  f"    assert Path({str(ahead / 'finished')!r}).exists()")
    return nbs, ahead


def test_work_computed_ahead_runs_at_low_priority_between_notebooks_and_its_notebook_waits_for_it(
        tmp_path, monkeypatch):
    """runner.BACKGROUND: once 00_first has run, 02_last's work starts (nice 19, the notebook's parameters)
    while 01_middle runs; it goes on when 02_last starts, which waits for the item in progress (its lock)
    instead of computing it again; its CPU seconds are recorded apart from the notebooks'."""
    nbs, ahead = _ahead_notebooks(tmp_path, monkeypatch, items=30)
    record = runner.run_notebooks(notebooks_dir=nbs, results_base=tmp_path / "results", gflops=110.0,
                                  warm_up=())
    assert (ahead / "nice").read_text() == "19"
    if (ahead / "autogroup").exists():
        assert (ahead / "autogroup").read_text() == "19"
    given = dict(ast.literal_eval((ahead / "parameters").read_text()))  # the notebook's own parameters
    assert given == {"profile": "demo", "results_dir": str(tmp_path / "results")}
    assert len(list(ahead.glob("item*"))) == 30 and (ahead / "finished").exists()
    assert set(record["ahead_cpu_seconds"]) == {"02_last.ipynb"} and record["ahead_cpu_seconds"]["02_last.ipynb"] >= 0


def test_work_computed_ahead_is_stopped_where_it_is_when_the_run_stops(tmp_path, monkeypatch):
    """A failed notebook stops the run, and with it the work computed ahead: no further items, its own
    clean-up ran (the items it finished stay for the next run)."""
    nbs, ahead = _ahead_notebooks(tmp_path, monkeypatch, items=600, middle_fails=True)
    with pytest.raises(RuntimeError, match="01_middle.ipynb"):
        runner.run_notebooks(notebooks_dir=nbs, results_base=tmp_path / "results", gflops=110.0, warm_up=())
    items = len(list(ahead.glob("item*")))
    assert 4 <= items < 600 and (ahead / "stopped").exists() and not (ahead / "finished").exists()
    time.sleep(0.5)
    assert len(list(ahead.glob("item*"))) == items  # stopped for good


# ----------------------------------------------------------------------------- timing record

def test_timing_record_normalises_to_the_reference_machine_and_checks_budgets(tmp_path, capsys):
    times = {"00_data.ipynb": 100.0, "02_table1.ipynb": 50.0, "06_table5.ipynb": 90.0, "99_new.ipynb": 70.0}
    record = runner.timing_record("demo", times, 55.0)
    assert record["probe"]["matmul_gflops"] == 55.0 and record["probe"]["reference_gflops"] == 110.0
    assert record["normalised_seconds_per_notebook"] == {"00_data.ipynb": 50.0, "02_table1.ipynb": 25.0,
                                                         "06_table5.ipynb": 45.0, "99_new.ipynb": 35.0}
    assert record["total_normalised_seconds"] == 155.0 and record["total_seconds"] == 310.0
    assert record["over_budget"] == []
    fast = runner.timing_record("demo", times, 110.0)  # on the reference machine: the seconds as measured
    assert fast["over_budget"] == ["00_data.ipynb", "06_table5.ipynb", "99_new.ipynb"]
    assert fast["budget_normalised_seconds"]["06_table5.ipynb"] == runner.BUDGETS["06_table5"] == 60
    assert fast["budget_normalised_seconds"]["99_new.ipynb"] == runner.DEFAULT_BUDGET
    assert fast["machine"]["cpu"] and "cpu_capability" in fast["machine"]["arithmetic"]
    timed = runner.timing_record("demo", times, 110.0, cpu_seconds={"00_data.ipynb": 150.0, "02_table1.ipynb": 40.5},
                                 gflops_end=99.0)
    assert timed["total_cpu_seconds"] == 190.5 and timed["cpu_seconds_per_notebook"]["02_table1.ipynb"] == 40.5
    assert timed["probe"]["matmul_gflops_end"] == 99.0 and record["probe"]["matmul_gflops_end"] is None
    # the larger reading normalises: a probe taken while something else held the cores reads low
    assert timed["probe"]["normalising_gflops"] == 110.0 and timed["total_normalised_seconds"] == 310.0
    later = runner.timing_record("demo", times, 55.0, gflops_end=110.0)
    assert later["probe"]["matmul_gflops"] == 55.0 and later["probe"]["normalising_gflops"] == 110.0
    assert later["total_normalised_seconds"] == 310.0 and later["normalised_seconds_per_notebook"]["00_data.ipynb"] == 100.0
    assert later["over_budget"] == fast["over_budget"]
    assert record["ahead_cpu_seconds"] == {}  # work computed ahead (runner.BACKGROUND) is listed apart
    ahead = runner.timing_record("demo", times, 110.0, cpu_seconds={"00_data.ipynb": 150.0},
                                 ahead_cpu_seconds={"06_table5.ipynb": 80.0})
    assert ahead["ahead_cpu_seconds"] == {"06_table5.ipynb": 80.0} and ahead["total_cpu_seconds"] == 150.0
    assert runner.timing_record("paper", times, 110.0)["over_budget"] == []  # budgets are the demo's
    warning = runner._budget_warning("demo", "06_table5", 150.0, 110.0)
    assert warning.startswith("warning: 06_table5 took 150 normalised s") and "budget of 60 s" in warning
    assert runner._budget_warning("demo", "06_table5", 90.0, 55.0) is None
    # side by side, a notebook is held to its budget by its CPU seconds over the reference machine's 2 cores
    side = runner.timing_record("demo", times, 110.0, cpu_seconds={nb: 80.0 for nb in times}, wall_seconds=200.0,
                                schedule={nb: [0.0, s] for nb, s in times.items()})
    assert side["total_seconds"] == 200.0 and side["total_normalised_seconds"] == 200.0
    assert side["over_budget"] == []  # 80 CPU s over 2 cores: 40 normalised s each, within all four budgets (55-90)
    assert side["budget_counts"].startswith("CPU seconds / 2 cores") and side["run_budget_normalised_seconds"] == 600
    assert "CPU s / 2 cores" in runner._budget_warning("demo", "06_table5", 70.0, 110.0, side_by_side=True)


def test_the_budgets_cover_every_notebook():
    assert sorted(runner.BUDGETS) == [p.stem for p in REAL]
    assert sum(runner.BUDGETS.values()) == 600  # the demo's whole run, normalised seconds


def test_a_failing_cell_stops_the_run_naming_notebook_and_cell(tiny, tmp_path):
    tiny_notebook(tiny / "00_bad.ipynb", 'profile: str = "demo"  # profile\nresults_dir: str = None  # outputs\n',
                  'raise ValueError("boom")')
    base = tmp_path / "results"
    with pytest.raises(RuntimeError, match=r"00_bad.ipynb: cell \d+ raised ValueError: boom"):
        runner.run_notebooks(notebooks_dir=tiny, results_base=base, gflops=110.0)
    assert not (base / "notebooks" / "00_first.ipynb").exists()  # the run stopped there
    assert not (base / "benchmarks").exists()


# ----------------------------------------------------------------------------- HTML renderings

PLOT_CELL = """\
from IPython.display import Markdown, display
import matplotlib.pyplot as plt
display(Markdown("| fusion | accuracy (%) |\\n|:--|--:|\\n| sum | 85.9 |\\n| conv | 86.1 |"))
fig, ax = plt.subplots(figsize=(2, 2), dpi=72)
ax.plot([0, 1, 2], [0, 1, 4])
plt.show()
"""


def test_each_notebook_is_rendered_to_html_as_soon_as_it_ran(tmp_path):
    """<results>/html/<notebook>.html, self-contained (the table as HTML, the figure as a base64 PNG), is
    written right after its notebook ran: a run that stops part-way has the pages of the notebooks before."""
    import base64
    import re

    params = 'profile: str = "demo"  # profile\nresults_dir: str = None  # outputs\n'
    nbs = tmp_path / "notebooks"
    tiny_notebook(nbs / "00_plot.ipynb", params, PLOT_CELL)
    tiny_notebook(nbs / "01_bad.ipynb", params, 'raise ValueError("boom")')
    tiny_notebook(nbs / "02_never.ipynb", params, "pass")
    base = tmp_path / "results"
    with pytest.raises(RuntimeError, match="01_bad.ipynb"):
        runner.run_notebooks(notebooks_dir=nbs, results_base=base, gflops=110.0)
    assert [p.name for p in (base / "html").iterdir()] == ["00_plot.html"]  # no temporary file left either
    page = (base / "html" / "00_plot.html").read_text(encoding="utf-8")
    assert re.search(r"<table>\s*<thead>\s*<tr>\s*<th[^>]*>fusion</th>\s*<th[^>]*>accuracy \(%\)</th>", page)
    assert re.search(r"<td[^>]*>conv</td>\s*<td[^>]*>86.1</td>", page)
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=\n]+)"', page)
    assert len(images) == 1
    png = base64.b64decode(images[0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert not re.search(r'<img[^>]*src="(?!data:)', page), "an image the page does not hold"


def test_a_notebook_that_cannot_be_rendered_is_named(tmp_path):
    broken = tmp_path / "03_broken.ipynb"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(RuntimeError, match="03_broken.ipynb: could not render it as HTML"):
        runner.render_html(broken, tmp_path / "html" / "03_broken.html")
    assert not (tmp_path / "html" / "03_broken.html").exists()


def test_profile_given_as_a_parameter(tiny, tmp_path):
    assert _plan(tiny, tmp_path, parameters={"profile": "paper"}).profile == "paper"
    with pytest.raises(ConfigError, match="contradicts --profile smoke"):
        _plan(tiny, tmp_path, profile="smoke", parameters={"profile": "paper"})
    with pytest.raises(ConfigError, match="unknown profile"):
        _plan(tiny, tmp_path, parameters={"profile": "nosuch"})


def test_children_cpu_seconds_count_a_finished_child_process():
    """What the record's cpu_seconds_per_notebook adds up: a kernel's CPU time, counted once it exits."""
    import subprocess

    before = runner.children_cpu_seconds()
    subprocess.run([sys.executable, "-c", "sum(range(20_000_000))"], check=True)
    assert runner.children_cpu_seconds() - before > 0.1

