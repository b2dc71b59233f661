"""Every notebook is parameterised, thin, and has regression coverage in its executed copy."""
import ast
import json
from pathlib import Path

import pytest

from twostream_lib import runner
from twostream_lib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if not p.name.startswith("_"))
EXECUTED = ROOT / "results" / "notebooks"


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_there_are_notebooks_for_every_paper_section():
    names = " ".join(p.stem for p in NOTEBOOKS)
    for section in ("data", "figure1", "table1", "table2", "table3", "table4", "table5", "table6"):
        assert section in names, f"no notebook for {section}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_title_and_one_literal_parameters_cell(nb):
    cells = _cells(nb)
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    params = [c for c in cells if "parameters" in _tags(c)]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(params[0]["source"]))
    names = []
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign), "parameters are typed assignments (name: type = literal)"
        ast.literal_eval(node.value)  # literals only: papermill cannot update derived values
        names.append(node.target.id)
    assert "profile" in names
    assert all("#" in line for line in "".join(params[0]["source"]).splitlines() if "=" in line), \
        "every parameter has a comment"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_holds_no_model_data_or_training_code(nb):
    for cell in _cells(nb):
        if cell["cell_type"] == "code":
            tree = ast.parse("".join(cell["source"]))
            bad = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While))]
            assert not bad, f"{nb.name}: move {type(bad[0]).__name__} into twostream_lib"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_executed_copy_is_current_and_has_regression_coverage(nb):
    out = EXECUTED / nb.name
    assert out.exists(), f"{nb.name} has no executed copy: run ./run_all.sh"
    src = [c["source"] for c in _cells(nb) if c["cell_type"] == "code"]
    executed = [c for c in _cells(out) if c["cell_type"] == "code" and "injected-parameters" not in _tags(c)]
    assert [c["source"] for c in executed] == src, f"{out} is stale: re-run ./run_all.sh"
    checked = [c for c in executed if "nbval-check-output" in _tags(c)]
    assert checked, f"{nb.name} has no cell tagged nbval-check-output"
    assert all(c.get("outputs") for c in checked), "checked cells must have stored outputs"


def test_runner_parses_parameters_like_papermill():
    assert runner.parse_value("3") == 3
    assert runner.parse_value("[0, 1]") == [0, 1]
    assert runner.parse_value("cuda") == "cuda"


def test_runner_names_unknown_notebooks():
    with pytest.raises(ConfigError, match="matched no notebook"):
        runner.notebook_paths(ROOT / "notebooks", ["table99"])
