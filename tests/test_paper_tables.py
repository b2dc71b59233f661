"""Paper numbers, profiles and results tables."""
import math

import pandas as pd
import pytest

from twostream_lib import paper, tables
from twostream_lib.config import PROFILES, load_profile
from twostream_lib.errors import ConfigError


def test_paper_rows_match_the_published_tables():
    t1 = {r.key: r for r in paper.paper_rows("table1")}
    assert t1["conv@relu5"].accuracy == 85.96 and t1["conv@relu5"].params_m == 97.58
    assert t1["sum@softmax"].layers == 16 and t1["sum@softmax"].params_m == 181.42
    # The paper's own counts disagree for the same model between Tables 1 and 2 (97.58 vs 97.57).
    assert paper.paper_value("table2", "conv@relu5").params_m == 97.57
    assert len(paper.paper_rows("table3", "hmdb51")) == 6
    assert paper.paper_value("table6", "ours+idt/S:vgg16,T:vgg16", "hmdb51").accuracy == 69.2


def test_repaired_rows_name_their_source():
    repaired = {(r.key, r.dataset): r for r in paper.REPAIRED}
    assert repaired[("ours/S:vgg16,T:vgg16,single", "ucf101")].accuracy == 91.8
    assert repaired[("ours/S:vgg16,T:vgg16,single", "hmdb51")].accuracy == 64.6
    assert all("garbled" in r.source for r in repaired.values())


def test_unknown_paper_rows_are_named():
    with pytest.raises(ConfigError, match="no row 'nope'"):
        paper.paper_value("table1", "nope")
    with pytest.raises(ConfigError, match="table9"):
        paper.paper_rows("table9")


def test_profiles_override_and_reject_unknown_names():
    demo = load_profile("demo", epochs_fusion=3, tau=[5, 15], device=None)
    assert demo.epochs_fusion == 3 and demo.tau == (5, 15) and demo.device == "cpu"
    assert PROFILES["paper"].batch_size == paper.HYPERPARAMETERS["batch_size"]
    assert PROFILES["paper"].dropout == paper.HYPERPARAMETERS["dropout"]
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        load_profile("fast")
    with pytest.raises(ConfigError, match="unknown profile setting 'epochz'"):
        load_profile("demo", epochz=1)


def test_binomial_stderr_against_hand_computation():
    assert tables.binomial_stderr(80.0, 100) == pytest.approx(4.0)
    assert tables.fmt_pct(85.955, 1.234) == "86.0 ± 1.2"
    assert tables.fmt_pct(None) == "-"
    with pytest.raises(ConfigError, match="n must be >= 1"):
        tables.binomial_stderr(50.0, 0)


def test_table_joins_ours_with_paper_and_writes_files(tmp_path):
    rows = [tables.ResultRow("conv@relu5", "conv", 80.0, 4.0, 100), tables.ResultRow("extra", "ours only", 50.0)]
    df = tables.build_table("table1", rows, profile="demo", dataset="synthetic", split="1",
                            paper_counts={"conv@relu5": (14, 97.5791)})
    conv = df.set_index("key").loc["conv@relu5"]
    assert conv["paper_acc"] == 85.96 and conv["params_m_computed"] == 97.58 and conv["params_m_paper"] == 97.58
    assert math.isnan(df.set_index("key").loc["extra", "paper_acc"])
    # every paper row appears even when we did not run it
    assert set(r.key for r in paper.paper_rows("table1")) <= set(df["key"])
    csv, md = tables.write_table(df, tmp_path, title="Table 1")
    back = pd.read_csv(csv)
    assert (back["profile"] == "demo").all() and "80.0 ± 4.0" in md.read_text()
    assert not list((tmp_path / "tables").glob("*.tmp"))


def test_synthetic_tables_show_chance_ceiling_and_each_class_family():
    fam = {"chance": 100 / 14, "ceiling": 92.857, "family:appearance": 100.0, "family_ceiling:appearance": 100.0,
           "family:order": 41.25, "family_ceiling:order": 50.0}
    rows = [tables.ResultRow("conv@relu5", "conv, demo", 80.0, 4.0, 100, extra=fam)]
    df = tables.build_table("table1", rows, profile="demo", dataset="synthetic", split="1")
    md = tables.to_markdown(df, title="T1")
    header, _, conv = ([c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines()[4:7])
    assert header[-2:] == ["Chance %", "Ceiling %"] and conv[-2:] == ["7.1", "92.9"]
    assert conv[3] == "86.0"  # the paper's 85.96, one decimal like ours
    assert tables.family_columns(df) == ["appearance", "order"]
    fam_table = tables.family_markdown(df)
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in fam_table.splitlines()]
    assert cells[0] == ["What ran (ours)", "appearance", "order"]
    assert cells[2:] == [["conv, demo", "100.0 (100.0)", "41.2 (50.0)"]]  # unmeasured paper rows left out
    plain = tables.build_table("table1", [tables.ResultRow("conv@relu5", "conv", 80.0)], profile="paper",
                               dataset="ucf101", split="1")
    assert "Ceiling" not in tables.to_markdown(plain, title="T1") and tables.family_markdown(plain) == ""


def test_readme_section_is_regenerated(tmp_path):
    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "table2.md").write_text("T2\n")
    (results / "tables" / "table10.md").write_text("T10\n")
    (results / "findings.md").write_text("# Findings\n\n| [table1](notebooks/02_table1.ipynb) | c | HELD |\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{tables.README_BEGIN}\nold\n{tables.README_END}\ntail\n")
    assert tables.update_readme(readme, results)
    text = readme.read_text()
    assert "old" not in text and "# Findings" not in text and text.endswith("tail\n")
    assert "| [table1](results/notebooks/02_table1.ipynb) | c | HELD |" in text  # links from the README's folder
    assert "[table2](results/tables/table2.md), [table10](results/tables/table10.md)" in text  # linked, not pasted
    assert "T2" not in text
    assert not tables.update_readme(readme, results)
    readme.write_text("no markers")
    with pytest.raises(ConfigError, match="no results markers"):
        tables.update_readme(readme, tmp_path / "results")
