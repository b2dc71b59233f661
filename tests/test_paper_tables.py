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


def test_readme_section_is_regenerated(tmp_path):
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "table2.md").write_text("T2\n")
    (tmp_path / "results" / "tables" / "table10.md").write_text("T10\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{tables.README_BEGIN}\nold\n{tables.README_END}\ntail\n")
    assert tables.update_readme(readme, tmp_path / "results")
    text = readme.read_text()
    assert "old" not in text and text.index("T2") < text.index("T10") and text.endswith("tail\n")
    assert not tables.update_readme(readme, tmp_path / "results")
    readme.write_text("no markers")
    with pytest.raises(ConfigError, match="no results markers"):
        tables.update_readme(readme, tmp_path / "results")
