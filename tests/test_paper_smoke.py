"""The `paper` pipeline starts on CPU: real UCF101 clip -> frames + TV-L1 -> VGG-M-2048 streams ->
conv fusion at ReLU5, one iteration each, through the same experiments calls the notebooks make."""
import shutil

import pytest
import torch

from twostream_lib import experiments as ex
from twostream_lib.data.prepare import prepare_videos
from twostream_lib.errors import DataError


@pytest.fixture(scope="module")
def ucf_root(real_data, tmp_path_factory):
    """data/ucf101 with the real clip prepared (short side 256, fast TV-L1) as the test video, and the
    same frames under a second group's name as the training video (label 8, Basketball)."""
    root = tmp_path_factory.mktemp("data") / "ucf101"
    report = prepare_videos([real_data.ucf_clip], root / "frames", short_side=256, tvl1={"preset": "fast"}, workers=1,
                            progress=False)
    assert not report.failed
    frames = root / "frames"
    for part in ("jpegs_256", "tvl1_flow/u", "tvl1_flow/v"):
        shutil.copytree(frames / part / "v_Basketball_g01_c01", frames / part / "v_Basketball_g02_c01")
    shutil.copy(frames / ".done" / "v_Basketball_g01_c01.json", frames / ".done" / "v_Basketball_g02_c01.json")
    splits = root / "splits"
    splits.mkdir(parents=True)
    shutil.copy(real_data.ucf_splits / "classInd.txt", splits / "classInd.txt")
    for k in (1, 2, 3):
        (splits / f"trainlist0{k}.txt").write_text("Basketball/v_Basketball_g02_c01.avi 8\n")
        (splits / f"testlist0{k}.txt").write_text("Basketball/v_Basketball_g01_c01.avi\n")
    return root.parent


def test_paper_profile_runs_one_iteration_on_a_real_clip(ucf_root, tmp_path, monkeypatch):
    torch.set_num_threads(2)
    cfg = ex.setup("smoke", data_root=str(ucf_root), results_dir=str(tmp_path / "results"), rehearsal_classes=0,
                   batch_size=2, T=2, max_videos=2)
    assert (cfg.backbone, cfg.crop, cfg.L) == ("vgg_m_2048", 224, 10)
    data = ex.prepare_data(cfg)
    assert data.store.num_frames("v_Basketball_g01_c01") == 141
    streams = ex.train_streams(cfg, data)
    assert streams.spatial.feature_shapes(224)["relu5"] == (512, 13, 13)
    scores, model = ex.run_fusion(cfg, data, ex.TABLES["table1"].variants[5])  # conv fusion at ReLU5
    assert ex.TABLES["table1"].variants[5].key == "conv@relu5"
    assert scores.scores.shape == (1, 101) and scores.videos == ["v_Basketball_g01_c01"]
    metrics = list((tmp_path / "results").rglob("metrics.csv"))
    assert len(metrics) == 3  # spatial, temporal, fusion: one epoch each
    assert all(len(m.read_text().splitlines()) == 2 for m in metrics)
    # a second call (Table 6 after Table 5, a re-run) loads the saved test scores: no features, no training
    def no_recompute(*args, **kwargs):
        raise AssertionError("features were recomputed for a head that was already trained and tested")

    monkeypatch.setattr(ex.fusion, "cache_fusion_inputs", no_recompute)
    again, _ = ex.run_fusion(cfg, data, ex.TABLES["table1"].variants[5])
    assert again.videos == scores.videos and (again.scores == scores.scores).all()
    assert len(list((tmp_path / "results").rglob("scores-*.npz"))) == 1


def test_paper_profile_names_missing_data(tmp_path):
    cfg = ex.setup("paper", data_root=str(tmp_path), device="cpu")
    # the fastest route first: the authors' frames and flow, then TV-L1 from the videos
    with pytest.raises(DataError, match=r"ucf101/frames does not exist.*fastest.*fetch ucf101 --no-videos --root "
                                        r".* --precomputed; or .*prepare"):
        ex.prepare_data(cfg)
