"""Findings and uncertainty: the logic that decides what a notebook calls HELD."""
import numpy as np
import pandas as pd
import pytest

from twostream_lib import experiments as ex
from twostream_lib.evaluate import VideoScores


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
    seeds = np.var([80.0, 70.0], ddof=1) / 2
    assert row.stderr == pytest.approx(np.sqrt(binom ** 2 + seeds))
    assert row.n_test == 100 and "spread over 2 training seeds" in row.uncertainty


def test_accuracy_row_disjoint_splits_pool_their_test_videos_and_their_spread_stands_in():
    a = _scores(50, 100)
    b = _scores(70, 100, videos=[f"w{i}" for i in range(100)])
    row = ex.accuracy_row("k", "label", [a, b])  # one seed per split: the spread over splits stands in
    assert row.accuracy == pytest.approx(60.0) and row.n_test == 200
    split_var = np.var([50.0, 70.0], ddof=1) / 2
    assert row.stderr == pytest.approx(np.sqrt((100 * np.sqrt(0.6 * 0.4 / 200)) ** 2 + split_var))
    assert "spread over 2 splits" in row.uncertainty
    two_seeds = ex.accuracy_row("k", "label", [a, _scores(60, 100)])  # same videos: the seeds' spread
    assert "spread over 2 training seeds" in two_seeds.uncertainty


def _row(key, correct, n=200, seeds=(0,)):
    """A row whose runs get the first ``correct[i]`` of n videos right (one run per seed)."""
    runs = [_scores(c, n) for c in (correct if isinstance(correct, (list, tuple)) else [correct] * len(seeds))]
    return ex.accuracy_row(key, key, runs)


def test_verdicts_have_three_values_and_matching_needs_the_margin():
    claims = {c.text: c for c in ex.TABLES["table1"].claims}
    beats = claims["Concatenation at ReLU5 is weaker than conv fusion"]  # conv@relu5 > concat@relu5
    matches = claims["Conv fusion at ReLU5 matches or beats softmax averaging"]  # conv@relu5 >= sum@softmax

    def verdict(claim, a, b):
        rows = {claim.a: _row(claim.a, a), claim.b: _row(claim.b, b)}
        return ex.check_claims((claim,), rows)[0]

    # same videos: the paired standard error of the difference counts only the videos the rows disagree on
    f = verdict(beats, 120, 100)  # +10 points; the first 100 videos shared, 20 more right: d in {0, 1}
    d = np.r_[np.zeros(100), np.ones(20), np.zeros(80)] * 100
    assert f.paired_videos == 200 and f.stderr == pytest.approx(d.std(ddof=1) / np.sqrt(200))
    assert f.verdict == "HELD" and f.difference == pytest.approx(10.0)
    assert verdict(beats, 100, 120).verdict == "CONTRADICTED"
    assert verdict(beats, 102, 100).verdict == "UNRESOLVED"  # +1 point, 2 SE = 1.4: not beyond
    # "matches or beats" is non-inferiority with a 3-point margin: a small loss measured precisely holds ...
    f = verdict(matches, 98, 100)
    assert f.verdict == "HELD" and f.difference == pytest.approx(-1.0) and f.difference - 2 * f.stderr > -3
    # ... the same loss measured with seeds that spread does not ...
    rows = {matches.a: _row(matches.a, [90, 98, 106]), matches.b: _row(matches.b, 100)}
    f = ex.check_claims((matches,), rows)[0]
    assert f.verdict == "UNRESOLVED" and f.difference == pytest.approx(-1.0) and f.difference - 2 * f.stderr < -3
    # ... and a clear loss beyond the margin is contradicted
    assert verdict(matches, 80, 100).verdict == "CONTRADICTED"
    assert "NOT RUN" in ex.format_findings(ex.check_claims((beats,), {}))


def test_equivalence_claims_need_the_interval_inside_the_margin():
    claim = ex.Claim("x", "~", "y", "x matches y")
    rows = {"x": _row("x", 100), "y": _row("y", 100)}
    assert ex.check_claims((claim,), rows)[0].verdict == "HELD"
    rows["x"] = _row("x", 130)
    assert ex.check_claims((claim,), rows)[0].verdict == "CONTRADICTED"  # +15 points, far outside +-3
    with pytest.raises(ex.ConfigError, match="relation"):
        ex.Claim("x", "<", "y", "x loses")


def test_verdicts_are_recorded_and_summarised_from_the_records(tmp_path):
    claims = ex.TABLES["table1"].claims[:2]
    rows = {c: _row(c, n) for c, n in (("conv@relu5", 180), ("sum@softmax", 100), ("sum@relu5", 100))}
    found = ex.check_claims(claims, rows)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "02_table1.ipynb").write_text("{}")
    path = ex.write_findings(tmp_path, "table1", "Table 1", found, profile="demo", dataset="synthetic")
    record = __import__("json").loads(path.read_text())
    assert [f["verdict"] for f in record["findings"]] == [f.verdict for f in found]
    assert record["findings"][0]["a"] == 90.0 and record["findings"][0]["difference"] == 40.0
    summary = (tmp_path / "findings.md").read_text()
    assert summary.startswith("# Findings") and "profile `demo`, data set `synthetic`" in summary
    held = sum(f.verdict == "HELD" for f in found)
    assert f"{held} HELD" in summary and summary.count("| [table1](notebooks/02_table1.ipynb) |") == 2
    assert found[0].detail in summary  # the numbers, exactly as the notebook prints them
    assert "No findings" in ex.summary_markdown(tmp_path / "elsewhere")
    # with a record of other seeds (benchmarks/bench_findings.py), each claim shows their verdicts
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "findings_seeds.json").write_text(__import__("json").dumps({
        "reference_seed": 0, "seeds": [2, 3], "tables": ["table1"], "conflicts": 0,
        "differences": [{"seed": 3, "claim": claims[0].text}],
        "verdicts": {f"table1: {claims[0].text}": {"0": "HELD", "2": "HELD", "3": "UNRESOLVED"},
                     f"table1: {claims[1].text}": {"0": found[1].verdict, "2": found[1].verdict,
                                                   "3": found[1].verdict}}}))
    summary = ex.summary_markdown(tmp_path)
    assert "on synthetic seeds 2, 3, on which nothing was tuned, 1 of 4 verdicts" in summary
    assert f"| {found[0].detail} | 2: HELD, 3: UNRESOLVED |" in summary


def test_seed_spread_widens_the_interval_of_a_difference():
    claim = ex.Claim("x", ">", "y", "x beats y")
    steady = {"x": _row("x", [104, 104, 104]), "y": _row("y", [100, 100, 100])}
    shaky = {"x": _row("x", [90, 104, 118]), "y": _row("y", [100, 100, 100])}
    a, b = ex.check_claims((claim,), steady)[0], ex.check_claims((claim,), shaky)[0]
    assert a.difference == b.difference == pytest.approx(2.0)
    assert b.stderr > a.stderr and a.verdict == "HELD" and b.verdict == "UNRESOLVED"


def test_every_claim_names_rows_that_its_table_runs():
    for name, spec in ex.TABLES.items():
        keys = {v.key for v in spec.variants}
        for claim in spec.claims:
            assert not keys or {claim.a, claim.b} <= keys, (name, claim)


def test_unknown_table_is_named():
    with pytest.raises(ex.ConfigError, match="unknown table 'table9'"):
        ex.run_table(ex.load_profile("demo"), None, "table9")


def test_run_dir_changes_with_the_settings_of_its_kind_and_the_backbone_architecture(tmp_path, monkeypatch):
    import dataclasses

    from twostream_lib.models import backbones

    cfg = ex.setup("demo", results_dir=str(tmp_path))
    towers, heads = ex.run_dir(cfg, "towers"), ex.run_dir(cfg, "heads")
    assert towers == ex.run_dir(cfg, "towers") and (towers / "settings.json").is_file() and towers != heads
    longer = dataclasses.replace(cfg, epochs_stream=cfg.epochs_stream + 1)
    assert ex.run_dir(longer, "towers") != towers and ex.run_dir(longer, "heads") != heads
    head_only = dataclasses.replace(cfg, epochs_fusion=cfg.epochs_fusion + 1)
    assert ex.run_dir(head_only, "towers") == towers and ex.run_dir(head_only, "heads") != heads  # towers reused
    assert ex.run_dir(dataclasses.replace(cfg, workers=3), "heads") == heads  # does not change what is trained
    spec = backbones._REGISTRY["demo_shallow"]()
    wider = backbones._narrow_spec(spec, {32: 48})
    monkeypatch.setitem(backbones._REGISTRY, "demo_shallow", lambda: wider)
    assert ex.run_dir(cfg, "towers") != towers  # a changed demo layer does not reuse towers cached before


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


def test_idt_extracts_with_the_profiles_workers_and_keeps_its_scores_per_split_and_seed(monkeypatch, tmp_path):
    """IDT descriptors come from the profile's `workers` processes; with workers=0 (the demo's), from its
    `threads` (one: in this process). The scores are kept in the IDT run folder, one file per split and
    seed, so that asked again (07_table6 after run_all computed them ahead) they are read."""
    from types import SimpleNamespace

    from twostream_lib.evaluate import VideoScores
    from twostream_lib.experiments import rows as registry  # the row builders

    seen = []

    def compute(*args, **kw):
        seen.append(kw["workers"])
        return VideoScores(["b"], np.array([0]), np.array([[1.0, 0.0]]))

    def folder(cfg, kind):
        path = tmp_path / cfg.name / str(cfg.workers)
        path.mkdir(parents=True, exist_ok=True)
        return path

    monkeypatch.setattr(registry, "compute_idt_scores", compute)
    monkeypatch.setattr(registry, "run_dir", folder)
    data = SimpleNamespace(store=None, split=lambda k: SimpleNamespace(train=["a"], test=["b"], classes=["x", "y"]))
    for workers in (0, 1, 8):
        registry.idt_scores(ex.load_profile("paper", workers=workers), data, 1)
    registry.idt_scores(ex.load_profile("demo"), data, 1)  # workers 0, threads 2
    assert seen == [1, 1, 8, 2]
    again = registry.idt_scores(ex.load_profile("demo"), data, 1)
    assert seen == [1, 1, 8, 2] and list(again.videos) == ["b"] and again.scores.tolist() == [[1.0, 0.0]]
    assert sorted(p.name for p in (tmp_path / "demo" / "0").iterdir()) == ["scores-split1-seed0.lock",
                                                                          "scores-split1-seed0.npz"]
    registry.idt_scores(ex.load_profile("demo", seeds=(4,)), data, 1)  # another seed: its own SVM
    registry.idt_scores(ex.load_profile("demo"), data, 2)  # another split
    assert seen == [1, 1, 8, 2, 2, 2]
    # asked while another process computes them (run_all's job, runner.BACKGROUND), it waits and reads them
    import threading

    from twostream_lib.evaluate import save_scores
    from twostream_lib.files import exclusive

    path, got = tmp_path / "demo" / "0" / "scores-split1-seed7.npz", []
    with exclusive(path.with_suffix(".lock")):
        asking = threading.Thread(target=lambda: got.append(registry.idt_scores(ex.load_profile("demo", seeds=(7,)),
                                                                                 data, 1)))
        asking.start()
        asking.join(0.5)
        assert asking.is_alive()  # waiting
        save_scores(VideoScores(["b"], np.array([0]), np.array([[0.0, 3.0]])), path)
    asking.join(10)
    assert got[0].scores.tolist() == [[0.0, 3.0]] and seen == [1, 1, 8, 2, 2, 2]  # read, not computed


def test_a_temporal_tower_starts_from_another_data_sets_tower_except_its_classifier(tmp_path):
    """Sec. 4.4: HMDB51's temporal nets are initialised from UCF101's (all layers but fc8)."""
    import torch

    from twostream_lib.experiments.streams import init_from_tower
    from twostream_lib.models import FrameAverage, build_backbone

    torch.manual_seed(0)
    ucf = build_backbone("demo_shallow", in_channels=20, num_classes=5)
    torch.save(FrameAverage(ucf).state_dict(), tmp_path / "final.pt")
    torch.manual_seed(1)
    hmdb = build_backbone("demo_shallow", in_channels=20, num_classes=3)
    fc8_before = hmdb.state_dict()["stages.fc8.fc8.weight"].clone()
    init_from_tower(hmdb, tmp_path / "final.pt")
    after = hmdb.state_dict()
    assert torch.equal(after["stages.fc8.fc8.weight"], fc8_before)  # 3 classes, its own initialisation
    copied = [k for k in after if ".fc8." not in f".{k}"]
    assert len(copied) > 10 and all(torch.equal(after[k], ucf.state_dict()[k]) for k in copied)
    with pytest.raises(ex.ConfigError, match="does not fit this backbone"):
        init_from_tower(build_backbone("demo_deep", in_channels=20, num_classes=3), tmp_path / "final.pt")
    with pytest.raises(ex.ConfigError, match="missing.pt does not exist"):
        init_from_tower(hmdb, tmp_path / "missing.pt")
    paper = ex.load_profile("paper")  # the released crops per stream
    assert (paper.stream_crop, paper.temporal_crop, paper.fusion_crop) == ("borders25", "multiScaleRegular", "noCtr")


def test_the_runs_towers_are_listed_once_the_longest_first():
    """train_run_towers hands these to the tower processes in this order: the temporal towers train
    epochs_temporal passes (30 in the demo, the spatial ones 15), the deep ones cost more per pass."""
    from twostream_lib.experiments.registry import run_tower_jobs

    demo = ex.load_profile("demo")
    assert run_tower_jobs(demo) == [("demo_deep", "temporal", 1, 0), ("demo_shallow", "temporal", 1, 0),
                                    ("demo_deep", "spatial", 1, 0), ("demo_shallow", "spatial", 1, 0)]
    # Tables 5-6 on the three splits: their towers (deep spatial, shallow temporal) of splits 2 and 3 too
    paper = run_tower_jobs(ex.load_profile("demo", final_splits=[1, 2, 3]))
    assert len(paper) == len(set(paper)) == 8
    assert {j for j in paper if j[2] != 1} == {("demo_deep", "spatial", k, 0) for k in (2, 3)} | {
        ("demo_shallow", "temporal", k, 0) for k in (2, 3)}


def test_row_builders_list_the_run_folder_of_every_model_they_used(tmp_path, monkeypatch):
    """TableResult.folders: the builders record each head and tower as they run it (the notebooks' training
    curves read those folders), with the seeds and splits each row really ran."""
    from types import SimpleNamespace

    from twostream_lib.experiments import TABLES, rows

    cfg = ex.load_profile("demo", results_dir=str(tmp_path))  # run_dir writes settings.json: keep it in tmp
    fake = SimpleNamespace()
    monkeypatch.setattr(rows, "train_heads", lambda *a, **kw: None)
    monkeypatch.setattr(rows, "run_fusion", lambda cfg, data, v, **kw: (fake, None))
    monkeypatch.setattr(rows, "family_row", lambda key, *a, **kw: key)
    monkeypatch.setattr(rows, "train_streams", lambda cfg, data, backbone, split: SimpleNamespace(split=split))
    monkeypatch.setattr(rows, "stream_scores", lambda *a, **kw: fake)
    monkeypatch.setattr(rows, "late_fusion", lambda *a, **kw: fake)
    monkeypatch.setattr(rows, "idt_scores", lambda *a, **kw: fake)
    monkeypatch.setattr(rows, "late_fuse_idt", lambda *a, **kw: fake)

    def folders(table, splits=(1,)):
        trained = []
        TABLES[table].rows(cfg, None, TABLES[table], tuple(splits), runs={}, trained=trained)
        return pd.DataFrame(trained, columns=list(rows.FOLDER_COLUMNS))

    table1 = folders("table1")
    assert all(str(f).startswith(str(tmp_path)) for f in table1.folder)
    late = table1[table1.key == "sum@softmax"]
    assert list(late.role) == ["spatial tower", "temporal tower"] and set(late.backbone) == {cfg.backbone}
    heads = table1[table1.role == "fusion head"]
    assert (heads.groupby("key").size() == len(cfg.seeds)).all() and list(heads.seed[:len(cfg.seeds)]) == list(cfg.seeds)
    assert heads.key.nunique() == 8  # Table 1's rows other than late fusion
    assert heads.folder.iloc[0] == rows.fusion_dir(cfg, TABLES["table1"].variants[1], 1, cfg.seeds[0])

    table3 = folders("table3", splits=(1, 2))
    assert set(table3.key) == {f"{s}/{b}" for s in ("spatial", "temporal", "late") for b in ("vgg_m_2048", "vgg16")}
    assert set(table3[table3.key == "temporal/vgg16"].backbone) == {cfg.deep_backbone}
    assert len(table3[table3.key == "late/vgg16"]) == 2 * 2  # two towers on each of two splits

    table6 = folders("table6", splits=(1, 2))
    assert set(table6.key) == {ex.OURS.key, "ours+idt/S:vgg16,T:vgg_m"} and set(table6.split) == {1, 2}
    assert len(table6) == 2 * 2  # several splits: one seed per split, as the row builder tests them
    table5 = folders("table5")
    assert list(table5.role) == ["spatial tower", "temporal tower"] + ["fusion head"] * len(cfg.seeds)
