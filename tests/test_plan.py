"""The resource planner (issue 12, twostream_lib/plan.py): numbers against hand computation, the generated
UCF101 listing, the paper plan within 128 GB of RAM, the disk check, the command line and run_all.sh --plan.
Everything runs on the meta device: no training, no weights."""
from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import pytest

from twostream_lib import plan as P
from twostream_lib import runner
from twostream_lib.config import load_profile
from twostream_lib.data.listing import ListedVideo, Listing, data_listing, read_listing, ucf101_listing
from twostream_lib.data.splits import OFFICIAL_NUM_CLASSES, OFFICIAL_SPLIT_SIZES
from twostream_lib.errors import ConfigError
from twostream_lib.paper import RELEASED_SCHEDULES

REPO = Path(__file__).resolve().parents[1]
GB = 1e9


def tiny_listing() -> Listing:
    """Two classes, six videos at 341x256: split 1 trains on four and tests on two."""
    parts = [("train", "test", "train")] * 4 + [("test", "train", "test")] * 2
    return Listing("ucf101", tuple(ListedVideo(f"v_{i}", f"c{i % 2}", 100, 341, 256, p) for i, p in enumerate(parts)),
                   "tiny")


@pytest.fixture(scope="module")
def paper_ucf101():
    return P.make_plan(load_profile("paper"), ucf101_listing())


def by_name(plan) -> dict:
    return {nb.notebook: nb for nb in plan.notebooks}


def test_map_bytes_by_hand():
    assert P.map_shapes("vgg_m_2048", 224)["relu5"] == (512, 13, 13)
    assert P.map_bytes("vgg_m_2048", "relu5", 224) == 512 * 13 * 13 * 4
    assert P.map_bytes("vgg16", "relu5", (256, 341), samples=5, itemsize=2) == 5 * 512 * 16 * 21 * 2
    flops = P.tower_cost("vgg16", 3, (224, 224))[0]
    assert 30e9 < flops < 32e9  # VGG-16: ~15.5 G multiply-adds per 224 image, counted as 2 FLOPs each


def test_tiny_listing_sample_counts_and_cache_bytes(tmp_path):
    cfg = load_profile("paper", test_crop="center", results_dir=str(tmp_path))  # test views at 224: maps by hand
    plan = by_name(P.make_plan(cfg, tiny_listing()))
    assert plan["01_approach"].videos == {"split 1": {"train": 4, "test": 2}}
    spatial, temporal = RELEASED_SCHEDULES["spatial"]["vgg_m_2048"], RELEASED_SCHEDULES["temporal"]["vgg_m_2048"]
    assert (spatial.total_passes, temporal.total_passes) == (110, 400)
    assert plan["01_approach"].train_samples == (110 + 400) * 4
    assert plan["01_figure1"].test_samples == 2 * 2 * 5 * 2  # 2 videos x 2 views (flips) x T=5 x 2 towers
    # Table 4: VGG-16 + VGG-M-2048 relu5 at T=5, float16 on the GPU: 8 training passes of 4 videos; the test
    # views are read once by predict, through the towers, so cached only where "plateau" validates on them
    per_clip = 5 * 512 * (14 * 14 + 13 * 13) * 2
    assert plan["05_table4"].cache_bytes == 8 * 4 * per_clip
    plateau = by_name(P.make_plan(load_profile("paper", test_crop="center", schedule="plateau",
                                               results_dir=str(tmp_path)), tiny_listing()))
    assert plateau["05_table4"].cache_bytes == (8 * 4 + 2 * 2) * per_clip  # + 2 test views of 2 videos
    none = by_name(P.make_plan(load_profile("paper", test_crop="center", feature_cache="none", results_dir=str(tmp_path)),
                               tiny_listing()))
    assert none["05_table4"].cache_bytes == 0 and none["05_table4"].tflop > plan["05_table4"].tflop
    assert plan["06_table5"].splits == plan["07_table6"].splits == (1, 2, 3)  # the paper profile's final_splits


def test_ucf101_listing_has_the_official_sizes():
    listing = ucf101_listing()
    assert len(listing.videos) == 13320 and listing.classes == OFFICIAL_NUM_CLASSES["ucf101"] == 101
    for k, (train, test) in OFFICIAL_SPLIT_SIZES["ucf101"].items():
        assert (len(listing.part(k, "train")), len(listing.part(k, "test"))) == (train, test)
    frames = [v.frames for v in listing.videos]
    assert abs(sum(frames) / len(frames) - 7.2 * 25) < 5 and min(frames) >= 29
    assert {(v.width, v.height) for v in listing.videos} == {(341, 256)}  # 320x240 prepared at a short side of 256


def test_paper_plan_fits_128_gb_with_the_cache_on_disk(paper_ucf101):
    names = [nb.notebook for nb in paper_ucf101.notebooks]
    assert names == list(P.NOTEBOOKS) == sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))
    assert all(nb.ram_bytes < 128 * GB for nb in paper_ucf101.notebooks)
    assert not [f for f in paper_ucf101.flags() if "RAM" in f]
    nbs = by_name(paper_ucf101)
    assert all(nbs[n].hours > 0 for n in ("01_approach", "02_table1", "03_table2", "04_table3", "05_table4", "06_table5"))
    assert all(nbs[n].cache_bytes > 0 for n in ("02_table1", "03_table2", "05_table4", "06_table5"))
    assert nbs["07_table6"].cpu_core_hours > 0  # IDT runs on the CPU
    assert paper_ucf101.cache_dtype == "float16"
    text = paper_ucf101.text()
    assert "100 effective TFLOP/s" in text and "| 05_table4 |" in text
    assert json.loads(paper_ucf101.to_json())["notebooks"][0]["notebook"] == "00_data"


def test_check_fits_names_the_notebook_and_the_setting(tmp_path, monkeypatch):
    cfg = load_profile("paper", results_dir=str(tmp_path / "results"))
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(P.shutil, "disk_usage", lambda path: Usage(10**15, 0, 10**15))
    P.check_fits(P.make_plan(cfg, tiny_listing()))  # a petabyte free: fits
    monkeypatch.setattr(P.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(ConfigError, match=r"01_approach: .* need .* GB .* free .*feature_epochs .*results_dir"):
        P.check_fits(P.make_plan(cfg, tiny_listing()))


def test_cli_writes_its_json(tmp_path, capsys):
    csv = tiny_listing().save_csv(tmp_path / "listing.csv")
    assert read_listing(csv).videos == tiny_listing().videos
    out = tmp_path / "plan.json"
    argv = ["plan", "--profile", "paper", "--listing", str(csv), "--tflops", "50", "--out", str(out),
            "-p", "results_dir", str(tmp_path / "results"), "--only", "table1"]
    assert P.cli_main(argv) == 0
    record = json.loads(out.read_text())
    assert record["tflops"] == 50 and [nb["notebook"] for nb in record["notebooks"]] == ["02_table1"]
    assert record["command"].startswith("python -m twostream_lib plan --profile paper --listing")
    assert "| 02_table1 |" in capsys.readouterr().out
    (tmp_path / "bad.csv").write_text("video,frames\nv_1,12\n")
    assert P.cli_main(["plan", "--listing", str(tmp_path / "bad.csv")]) == 2
    assert "expected columns video,label,frames" in capsys.readouterr().err


def test_demo_plan_on_a_small_synthetic_set(tiny_synthetic, tmp_path):
    from twostream_lib.data.stores import open_store
    from twostream_lib.experiments import DataBundle

    data = DataBundle("synthetic", Path(tiny_synthetic.frames_root), Path(tiny_synthetic.split_dir),
                      open_store(tiny_synthetic.frames_root))
    listing = data_listing(data)
    assert {(v.width, v.height) for v in listing.videos} == {(48, 48)} and all(v.disk_bytes > 0 for v in listing.videos)
    plan = P.make_plan(load_profile("demo", results_dir=str(tmp_path)), listing)
    nbs = by_name(plan)
    s = data.split(1)
    assert nbs["02_table1"].videos == {"split 1": {"train": len(s.train), "test": len(s.test)}}
    assert nbs["02_table1"].data_bytes == sum(v.disk_bytes for v in listing.videos if v.parts[0])
    assert plan.cache_dtype == "float32" and nbs["05_table4"].train_samples > 0
    # the demo's Table 5 tests split 1's heads, trained for Table 4, with its final protocol: nothing trains anew
    assert nbs["06_table5"].train_samples == 0 and nbs["06_table5"].test_samples > 0


def test_tables_5_6_follow_final_splits(tmp_path):
    cfg = load_profile("paper", final_splits=[2], results_dir=str(tmp_path))
    plan = by_name(P.make_plan(cfg, tiny_listing(), only=["table5"]))
    assert plan["06_table5"].splits == (2,) and plan["06_table5"].videos == {"split 2": {"train": 2, "test": 4}}
    plan = by_name(P.make_plan(cfg, tiny_listing(), only=["table5"], splits=[1, 3]))  # -p splits of the notebooks
    assert plan["06_table5"].splits == (1, 3)


def test_run_all_plan_and_refusal(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(P, "listing_for", lambda cfg: tiny_listing())
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("a run that cannot fit must not start"))
    results = ["-p", "results_dir", str(tmp_path / "paper")]
    assert runner.main(["--profile", "paper", "--plan", "--only", "table4", *results]) == 0
    assert "| 05_table4 |" in capsys.readouterr().out
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(P.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 10**6, 10**6))
    assert runner.main(["--profile", "paper", "--only", "table4", *results]) == 2
    assert "05_table4" in (err := capsys.readouterr().err) and "feature_epochs" in err
