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
    row = ex.accuracy_row("k", "label", [_scores(80, 100), _scores(70, 100)])
    assert row.accuracy == pytest.approx(75.0)
    binom = 100 * np.sqrt(0.75 * 0.25 / 100)  # 100 distinct test videos, not 200
    seeds = np.std([80.0, 70.0], ddof=1) / np.sqrt(2)
    assert row.stderr == pytest.approx(np.hypot(binom, seeds))
    assert row.n_test == 100 and "spread over 2 runs" in row.uncertainty


def test_accuracy_row_disjoint_splits_pool_their_test_videos():
    a = _scores(50, 100)
    b = _scores(50, 100, videos=[f"w{i}" for i in range(100)])
    row = ex.accuracy_row("k", "label", [a, b])
    assert row.stderr == pytest.approx(100 * np.sqrt(0.25 / 200))  # no spread: both 50%


def test_claims_hold_only_beyond_one_standard_error_of_the_difference():
    rows = {"conv@relu5": ResultRow("conv@relu5", "", 60.0, 3.0), "sum@softmax": ResultRow("sum@softmax", "", 50.0, 4.0)}
    f = {x.text: x for x in ex.check_claims(ex.TABLES["table1"].claims, rows)}
    assert f["Conv fusion at ReLU5 matches or beats softmax averaging"].held is True  # +10 > -5
    assert f["Sum fusion at ReLU5 matches or beats softmax averaging"].held is None  # not run
    rows["conv@relu5"] = ResultRow("conv@relu5", "", 44.0, 3.0)  # -6 < -5: significantly worse
    assert ex.check_claims(ex.TABLES["table1"].claims, rows)[0].held is False
    rows["sum@relu5"] = ResultRow("sum@relu5", "", 54.0, 3.0)
    rows["max@relu5"] = ResultRow("max@relu5", "", 50.0, 3.0)  # +4 < one SE (4.24): not a real difference
    by_text = {x.text: x for x in ex.check_claims(ex.TABLES["table1"].claims, rows)}
    assert by_text["Max fusion at ReLU5 is weaker than sum fusion"].held is False
    text = ex.format_findings(ex.check_claims(ex.TABLES["table1"].claims, rows))
    assert "NOT HELD Max fusion" in text and "NOT RUN" in text and "difference +4.0" in text


def test_every_claim_names_rows_that_its_table_runs():
    for name, spec in ex.TABLES.items():
        keys = {v.key for v in spec.variants}
        for claim in spec.claims:
            assert not keys or {claim.a, claim.b} <= keys, (name, claim)


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
    table4 = {v.key: v for v in ex.TABLES["table4"].variants}
    assert table4["conv3d+pool3d"].architecture_name(5) == ex.OURS.architecture_name(5)
    fusion_rows = [v for t in ("table1", "table2") for v in ex.TABLES[t].variants if not v.late]
    names = {v.architecture_name(1) for v in fusion_rows}
    # one head per distinct row (conv@relu5 is a row of both tables, trained once)
    assert len(names) == len({v.key for v in fusion_rows}) == 13
    assert table4["conv2d+pool2d"].architecture_name(5) != table4["conv2d+pool3d"].architecture_name(5)


def test_memo_is_keyed_by_content_and_bounded_in_bytes():
    from twostream_lib.experiments.cache import Memo

    memo = Memo(max_bytes=3 * 800)
    calls = []

    def make(n):
        calls.append(n)
        return _scores(1, 100 * n)  # scores of 100 n videos x 2 classes, float32: 800 n bytes

    assert memo.get(("a",), lambda: make(1)).scores.shape == (100, 2)
    memo.get(("a",), lambda: make(1))
    assert calls == [1]  # the second call is served from memory
    memo.get(("b",), lambda: make(2))
    memo.get(("c",), lambda: make(1))  # 4 x 800 bytes in all: the least recently used ("a") goes
    assert len(memo) == 2 and memo.nbytes <= memo.max_bytes
    memo.get(("a",), lambda: make(1))
    assert calls == [1, 2, 1, 1]


def test_weights_digest_tells_equal_from_different_models():
    import torch

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert ex.weights_digest(a) == ex.weights_digest(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert ex.weights_digest(a) != ex.weights_digest(b)
