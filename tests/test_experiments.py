"""Findings and uncertainty: the logic that decides what a notebook calls HELD."""
import numpy as np
import pytest

from twostream_lib import experiments as ex
from twostream_lib.evaluate import VideoScores
from twostream_lib.tables import ResultRow


def _scores(correct: int, n: int, videos=None) -> VideoScores:
    labels = np.zeros(n, dtype=int)
    scores = np.zeros((n, 2), dtype=np.float32)
    scores[:correct, 0] = 1.0  # first `correct` videos predict class 0 (right), the rest class 1
    scores[correct:, 1] = 1.0
    return VideoScores(videos or [f"v{i}" for i in range(n)], labels, scores)


def test_accuracy_row_same_test_videos_share_one_binomial_term():
    row = ex._accuracy_row("k", "label", [_scores(80, 100), _scores(70, 100)])
    assert row.accuracy == pytest.approx(75.0)
    binom = 100 * np.sqrt(0.75 * 0.25 / 100)  # 100 distinct test videos, not 200
    seeds = np.std([80.0, 70.0], ddof=1) / np.sqrt(2)
    assert row.stderr == pytest.approx(np.hypot(binom, seeds))
    assert row.n_test == 100 and "spread over 2 runs" in row.uncertainty


def test_accuracy_row_disjoint_splits_pool_their_test_videos():
    a = _scores(50, 100)
    b = _scores(50, 100, videos=[f"w{i}" for i in range(100)])
    row = ex._accuracy_row("k", "label", [a, b])
    assert row.stderr == pytest.approx(100 * np.sqrt(0.25 / 200))  # no spread: both 50%


def test_claims_hold_only_beyond_one_standard_error_of_the_difference():
    rows = {"conv@relu5": ResultRow("conv@relu5", "", 60.0, 3.0), "sum@softmax": ResultRow("sum@softmax", "", 50.0, 4.0)}
    f = {x.text: x for x in ex.check_claims("table1", rows)}
    assert f["Conv fusion at ReLU5 matches or beats softmax averaging"].held is True  # +10 > -5
    assert f["Sum fusion at ReLU5 matches or beats softmax averaging"].held is None  # not run
    rows["conv@relu5"] = ResultRow("conv@relu5", "", 44.0, 3.0)  # -6 < -5: significantly worse
    assert ex.check_claims("table1", rows)[0].held is False
    rows["sum@relu5"] = ResultRow("sum@relu5", "", 54.0, 3.0)
    rows["max@relu5"] = ResultRow("max@relu5", "", 50.0, 3.0)  # +4 < one SE (4.24): not a real difference
    by_text = {x.text: x for x in ex.check_claims("table1", rows)}
    assert by_text["Max fusion at ReLU5 is weaker than sum fusion"].held is False
    text = ex.format_findings(ex.check_claims("table1", rows))
    assert "NOT HELD Max fusion" in text and "NOT RUN" in text and "difference +4.0" in text


def test_every_claim_names_rows_that_its_table_runs():
    for table, variants in ex.VARIANTS.items():
        keys = {v.key for v in variants}
        for claim in ex.CLAIMS[table]:
            assert {claim.a, claim.b} <= keys, (table, claim)


def test_unknown_table_is_named():
    with pytest.raises(ex.ConfigError, match="unknown table 'table9'"):
        ex.run_table(ex.load_profile("demo"), None, "table9")


def test_run_dir_changes_with_training_settings_and_backbone_architecture(tmp_path, monkeypatch):
    import dataclasses

    from twostream_lib.models import backbones

    cfg = ex.setup("demo", results_dir=str(tmp_path))
    base = ex.run_dir(cfg)
    assert base == ex.run_dir(cfg) and (base / "settings.json").is_file()
    assert ex.run_dir(dataclasses.replace(cfg, epochs_stream=cfg.epochs_stream + 1)) != base
    assert ex.run_dir(dataclasses.replace(cfg, workers=3)) == base  # does not change what is trained
    spec = backbones._REGISTRY["demo_shallow"]()
    wider = backbones._narrow_spec(spec, {64: 96})
    monkeypatch.setitem(backbones._REGISTRY, "demo_shallow", lambda: wider)
    assert ex.run_dir(cfg) != base  # a changed demo layer does not reuse towers cached before


def test_rows_with_the_same_architecture_share_one_trained_head():
    table4 = {v.key: v for v in ex.VARIANTS["table4"]}
    assert ex._architecture_name(table4["conv3d+pool3d"], 5) == ex._architecture_name(ex.OURS, 5)
    names = {ex._architecture_name(v, 1) for v in ex.VARIANTS["table1"] + ex.VARIANTS["table2"]
             if v.fusion != "softmax"}
    # one head per distinct row (conv@relu5 is a row of both tables, trained once)
    assert len(names) == len({v.key for v in ex.VARIANTS["table1"] + ex.VARIANTS["table2"]
                              if v.fusion != "softmax"}) == 13
    assert ex._architecture_name(table4["conv2d+pool2d"], 5) != ex._architecture_name(table4["conv2d+pool3d"], 5)
