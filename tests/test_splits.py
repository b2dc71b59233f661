"""Official split parsing, tested against the real UCF101 / HMDB51 split files in tests/data (copied with their provenance)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from twostream_lib.data.splits import OFFICIAL_SPLIT_SIZES, VideoItem, load_split
from twostream_lib.errors import ConfigError, DataError


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_official_counts(real_data, split):
    sp = load_split("ucf101", real_data.ucf_splits, split)
    assert (len(sp.train), len(sp.test)) == OFFICIAL_SPLIT_SIZES["ucf101"][split]
    assert {9537: 1, 9586: 2, 9624: 3}[len(sp.train)] == split  # the paper's protocol, Sec. 4.1
    assert len(sp.classes) == 101 and sp.classes[0] == "ApplyEyeMakeup" and sp.classes[-1] == "YoYo"
    assert {v.name for v in sp.train}.isdisjoint(v.name for v in sp.test)
    assert len({v.name for v in sp.train + sp.test}) == 13320  # every UCF101 video in every split


def test_ucf101_items_are_parsed_exactly(real_data):
    sp = load_split("UCF101", real_data.ucf_splits, 1)  # case-insensitive data set name
    assert sp.dataset == "ucf101" and sp.split == 1
    assert sp.train[0] == VideoItem(
        name="v_ApplyEyeMakeup_g08_c01", label=0, class_name="ApplyEyeMakeup",
        relpath="ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
    )
    basketball = next(v for v in sp.test if v.name == "v_Basketball_g01_c01")  # the real clip in tests/data
    assert basketball.label == 7 and basketball.class_name == "Basketball"  # classInd says 8 (1-based)
    assert all(sp.classes[v.label] == v.class_name for v in sp.train + sp.test)


@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb51_official_counts(real_data, split):
    sp = load_split("hmdb51", real_data.hmdb_splits, split)  # parent folder: resolves testTrainMulti_7030_splits/
    assert (len(sp.train), len(sp.test)) == (3570, 1530)
    assert len(sp.classes) == 51 and list(sp.classes) == sorted(sp.classes)
    assert sp.classes[:3] == ("brush_hair", "cartwheel", "catch") and sp.classes[-1] == "wave"
    assert {v.name for v in sp.train}.isdisjoint(v.name for v in sp.test)


def test_hmdb51_items_and_trailing_space(real_data):
    sp = load_split("hmdb51", real_data.hmdb_splits / "testTrainMulti_7030_splits", 1)
    first = sp.train[0]
    assert first == VideoItem(
        name="April_09_brush_hair_u_nm_np1_ba_goo_0", label=0, class_name="brush_hair",
        relpath="brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
    )
    # 70 train / 30 test per class; label 0 ("not used") videos are in neither
    assert sum(v.label == 0 for v in sp.train) == 70 and sum(v.label == 0 for v in sp.test) == 30


def _write_ucf(root: Path, classes=("Alpha", "Beta"), train=None, test=None, split=1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classInd.txt").write_text("".join(f"{i} {c}\r\n" for i, c in enumerate(classes, 1)))
    train = train if train is not None else ["Alpha/v_Alpha_g01_c01.avi 1", "Beta/v_Beta_g01_c01.avi 2"]
    test = test if test is not None else ["Alpha/v_Alpha_g02_c01.avi", "Beta/v_Beta_g02_c01.avi"]
    (root / f"trainlist0{split}.txt").write_text("\r\n".join(train) + "\r\n")  # CRLF as distributed
    (root / f"testlist0{split}.txt").write_text("\n".join(test) + "\n")
    return root


def test_synthetic_uses_the_ucf_format(tmp_path):
    sp = load_split("synthetic", _write_ucf(tmp_path / "splits"), 1)
    assert sp.dataset == "synthetic" and sp.classes == ("Alpha", "Beta")
    assert [(v.name, v.label) for v in sp.train] == [("v_Alpha_g01_c01", 0), ("v_Beta_g01_c01", 1)]
    assert [v.relpath for v in sp.test] == ["Alpha/v_Alpha_g02_c01.avi", "Beta/v_Beta_g02_c01.avi"]


def test_unknown_dataset_and_bad_split_number(tmp_path):
    with pytest.raises(ConfigError, match="unknown data set 'kinetics'"):
        load_split("kinetics", tmp_path, 1)
    for bad in (0, 4, "1", 1.0):
        with pytest.raises(ConfigError, match="split must be 1, 2 or 3"):
            load_split("ucf101", tmp_path, bad)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(DataError, match="split folder .*nowhere does not exist"):
        load_split("ucf101", tmp_path / "nowhere", 1)
    root = _write_ucf(tmp_path / "s")
    (root / "testlist01.txt").unlink()
    with pytest.raises(DataError, match="testlist01.txt is missing"):
        load_split("ucf101", root, 1)
    with pytest.raises(DataError, match="classInd.txt is missing"):
        load_split("ucf101", tmp_path, 2)
    with pytest.raises(DataError, match=r"no HMDB51 split files '<class>_test_split2.txt'"):
        load_split("hmdb51", tmp_path, 2)


def test_malformed_lines_name_file_and_line(tmp_path):
    root = _write_ucf(tmp_path / "a", train=["Alpha/v_Alpha_g01_c01.avi 1", "Beta/v_Beta_g01_c01.avi two"])
    with pytest.raises(DataError, match=r"trainlist01.txt:2: expected '<Class>/<video>.avi \[label\]'"):
        load_split("ucf101", root, 1)
    root = _write_ucf(tmp_path / "b", test=["v_Alpha_g02_c01.avi"])
    with pytest.raises(DataError, match=r"testlist01.txt:1: expected a path '<Class>/<video>.avi'"):
        load_split("ucf101", root, 1)
    root = _write_ucf(tmp_path / "c")
    (root / "classInd.txt").write_text("1 Alpha\n3 Beta\n")
    with pytest.raises(DataError, match=r"classInd.txt:2: expected class index 2, got 3"):
        load_split("ucf101", root, 1)


def test_unknown_class_wrong_label_duplicates(tmp_path):
    root = _write_ucf(tmp_path / "a", test=["Gamma/v_Gamma_g01_c01.avi"])
    with pytest.raises(DataError, match=r"testlist01.txt:1: class 'Gamma' is not in classInd.txt"):
        load_split("ucf101", root, 1)
    root = _write_ucf(tmp_path / "b", train=["Alpha/v_Alpha_g01_c01.avi 2"])
    with pytest.raises(DataError, match=r"trainlist01.txt:1: label 2 disagrees with class 'Alpha'"):
        load_split("ucf101", root, 1)
    root = _write_ucf(tmp_path / "c", test=["Alpha/v_Alpha_g01_c01.avi"])
    with pytest.raises(DataError, match=r"in both train and test, e.g. 'v_Alpha_g01_c01'"):
        load_split("ucf101", root, 1)


def test_hmdb51_malformed_role(tmp_path):
    (tmp_path / "jump_test_split1.txt").write_text("a_jump_0.avi 1 \nb_jump_0.avi 3 \n")
    with pytest.raises(DataError, match=r"jump_test_split1.txt:2: expected '<video>.avi <0\|1\|2>'"):
        load_split("hmdb51", tmp_path, 1)


def test_hmdb51_subset_of_classes(real_data, tmp_path):
    """A folder with some class files (e.g. the synthetic set's HMDB-format splits) gives those classes."""
    for name in ("wave_test_split3.txt", "brush_hair_test_split3.txt"):
        shutil.copy(real_data.hmdb_splits / "testTrainMulti_7030_splits" / name, tmp_path / name)
    sp = load_split("hmdb51", tmp_path, 3)
    assert sp.classes == ("brush_hair", "wave") and (len(sp.train), len(sp.test)) == (140, 60)
    assert {v.label for v in sp.test} == {0, 1}
