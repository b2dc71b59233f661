"""The smoke profile's rehearsal set: UCF101's layout, sizes and split rule, prepared by the real code."""
from __future__ import annotations

import json

import cv2
import pytest

from twostream_lib.data.rehearsal import GROUPS, HEIGHT, WIDTH, make_rehearsal_set, ucf101_test_groups
from twostream_lib.data.splits import load_split
from twostream_lib.data.stores import open_store
from twostream_lib.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """Two classes, 20 frames per video (about 10 s of TV-L1 on one core)."""
    return make_rehearsal_set(tmp_path_factory.mktemp("data") / "ucf101", classes=2, frames=20, workers=1,
                              progress=False)


def test_videos_are_ucf101_sized_avis_in_its_layout(rehearsal):
    videos = sorted(p.relative_to(rehearsal / "videos").as_posix() for p in (rehearsal / "videos").rglob("*.avi"))
    assert videos == [f"{c}/v_{c}_g{g:02d}_c01.avi" for c in ("BlueHorizontal", "BlueVertical") for g in GROUPS]
    cap = cv2.VideoCapture(str(rehearsal / "videos" / videos[0]))
    ok, frame = cap.read()
    assert ok and frame.shape == (HEIGHT, WIDTH, 3)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
    cap.release()


def test_frames_are_prepared_as_the_authors_at_short_side_256(rehearsal):
    store = open_store(rehearsal / "frames")
    name = "v_BlueVertical_g08_c01"
    assert store.num_frames(name) == 20
    rgb, flow = store.read_rgb(name, [0]), store.read_flow(name, [0])
    assert rgb.shape[1:3] == (256, 341) and flow.shape[1:3] == (256, 341)


def test_each_split_tests_the_group_in_its_ucf101_block(rehearsal):
    assert [list(ucf101_test_groups(k))[::6] for k in (1, 2, 3)] == [[1, 7], [8, 14], [15, 21]]
    for k, tested in ((1, "g01"), (2, "g08"), (3, "g15")):
        split = load_split("ucf101", rehearsal / "splits", k)
        assert split.classes == ("BlueHorizontal", "BlueVertical")
        assert [v.name for v in split.test] == [f"v_{c}_{tested}_c01" for c in split.classes]
        assert len(split.train) == 6 and all(tested not in v.name for v in split.train)
        assert sorted({v.label for v in split.train}) == [0, 1]


def test_the_same_parameters_reuse_the_set_and_others_replace_it(rehearsal, tmp_path):
    stamp = (rehearsal / "rehearsal.json").stat().st_mtime_ns
    make_rehearsal_set(rehearsal, classes=2, frames=20, workers=1, progress=False)
    assert (rehearsal / "rehearsal.json").stat().st_mtime_ns == stamp
    other = make_rehearsal_set(tmp_path / "ucf101", classes=1, frames=16, workers=1, progress=False)
    make_rehearsal_set(other, classes=1, frames=17, workers=1, progress=False)
    assert json.loads((other / "rehearsal.json").read_text())["params"]["frames"] == 17
    assert len(list((other / "videos").rglob("*.avi"))) == len(GROUPS)


def test_bad_parameters_and_foreign_folders_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="rehearsal classes must be 1..14, got 0"):
        make_rehearsal_set(tmp_path / "a", classes=0)
    with pytest.raises(ConfigError, match="rehearsal frames must be >= 16"):
        make_rehearsal_set(tmp_path / "a", frames=8)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty and holds no rehearsal.json"):
        make_rehearsal_set(tmp_path / "b", classes=1, frames=16, workers=1, progress=False)
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"


def test_plan_predicts_the_feature_caches_of_a_rehearsal_of_table1(rehearsal, tmp_path):
    """CI's part of the rehearsal (the whole of it: benchmarks/bench_rehearsal.py). The smoke profile is the
    paper path (VGG-M-2048 towers at 224, the released crops, feature caches on disk, T = 5 test samples)
    with one pass of each training; on the rehearsal set above it runs Table 1, and plan, asked before
    anything trained, predicts the bytes of the caches it leaves within 10%."""
    import torch

    from twostream_lib import experiments as ex
    from twostream_lib.plan import make_plan, measured_bytes

    torch.set_num_threads(2)
    cfg = ex.setup("smoke", data_root=str(rehearsal.parent), results_dir=str(tmp_path / "results"),
                   rehearsal_classes=2, rehearsal_frames=20, final_test_clips=1)
    assert (cfg.backbone, cfg.crop, cfg.T, cfg.feature_cache) == ("vgg_m_2048", 224, 5, "disk")
    data = ex.prepare_data(cfg)  # the set the fixture made: same parameters, nothing regenerated
    plan = make_plan(cfg, only=["02_table1"])
    result = ex.run_table(cfg, data, "table1")
    ours = result.frame.dropna(subset=["ours_acc"])
    assert {v.key for v in ex.TABLES["table1"].variants} <= set(ours.key)
    measured = measured_bytes(cfg.results_path / "runs")
    predicted = plan.notebooks[0].new_feature_cache_bytes
    assert predicted > 0 and abs(measured["cache"] - predicted) <= 0.1 * predicted, (measured, predicted)
