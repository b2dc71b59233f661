"""Shared test fixtures: the real UCF101/HMDB51 files under ``tests/data`` (see its README for provenance).

The files are part of the repository, so a clone runs every test; a test that needs one that is
missing fails (naming the file) instead of skipping.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class RealData:
    """Paths of the real files in ``tests/data``."""

    ucf_splits: Path = DATA / "ucfTrainTestlist"  # classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt
    hmdb_splits: Path = DATA / "hmdb51_splits"  # holds testTrainMulti_7030_splits/ (153 files)
    hmdb_split_files: Path = DATA / "hmdb51_splits" / "testTrainMulti_7030_splits"
    ucf_clip: Path = DATA / "videos" / "ucf101" / "v_Basketball_g01_c01.avi"  # 320x240, 141 frames
    hmdb_clip: Path = DATA / "videos" / "hmdb51" / "April_09_brush_hair_u_nm_np1_ba_goo_0.avi"  # header 409, 408 decoded
    rawframes: Path = DATA / "rawframes"  # holds mmaction2_test_imgs/
    mmaction: Path = DATA / "rawframes" / "mmaction2_test_imgs"  # img_%05d.jpg, x_%05d.jpg, y_%05d.jpg


@pytest.fixture(scope="session")
def real_data() -> RealData:
    data = RealData()
    missing = [str(getattr(data, f.name)) for f in fields(data) if not getattr(data, f.name).exists()]
    if missing:
        pytest.fail(f"real test data missing: {missing}; tests/data is part of the repository (see its README)")
    return data


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """Three synthetic classes, 3 groups x 1 clip of 14 frames at 48 px, generated and prepared once
    per session (about 2 s)."""
    from twostream_lib.data.synthetic import CLASS_NAMES, make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("tiny_synthetic"), size=48, frames=14, groups=3,
                                  clips=1, classes=CLASS_NAMES[:3], workers=1, progress=False)
