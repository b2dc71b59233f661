"""Frames + TV-L1 flow extraction (Sec. 3.5) on tiny videos written here and on the two real clips."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from twostream_lib.data import prepare as prep
from twostream_lib.data.prepare import (
    cli_main,
    create_tvl1,
    extract_video,
    find_videos,
    flow_to_uint8,
    header_frame_count,
    is_done,
    iter_video_frames,
    parse_shard,
    prepare_video,
    prepare_videos,
    resize_short_side,
    resolve_tvl1,
    uint8_to_flow,
)
from twostream_lib.data.stores import FrameCounts, open_store
from twostream_lib.errors import ConfigError, DataError


def write_square_video(path: Path, *, n: int = 6, dx: int = 2, w: int = 32, h: int = 24) -> Path:
    """MJPG .avi: an 8x8 textured square on grey, moving ``dx`` px to the right per frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert writer.isOpened()
    for i in range(n):
        img = np.full((h, w, 3), 40, np.uint8)
        x0 = 12 - 3 * dx + dx * i if dx < 0 else 6 + dx * i
        img[8:16, x0:x0 + 8] = (60, 200, 230)
        img[10:12, x0 + 2:x0 + 4] = 0
        writer.write(img)
    writer.release()
    return path


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "videos" / "Square"
    folder.mkdir(parents=True)
    return [write_square_video(folder / f"v_Square_g0{i}_c01.avi", n=5 + i) for i in range(1, 4)]


# ---- quantisation -------------------------------------------------------------------------


def test_flow_to_uint8_maps_plus_minus_20_px_linearly():
    f = np.array([-30.0, -20.0, 0.0, 10.0, 20.0, 25.0], np.float32)
    np.testing.assert_array_equal(flow_to_uint8(f), [0, 0, 128, 191, 255, 255])  # round((f+20)*255/40)
    assert flow_to_uint8(np.zeros((2, 3, 2))).dtype == np.uint8
    np.testing.assert_array_equal(flow_to_uint8(np.array([5.0]), bound=10), [191])


def test_quantisation_round_trip():
    f = np.linspace(-25, 25, 1001, dtype=np.float32)
    back = uint8_to_flow(flow_to_uint8(f))
    assert back.dtype == np.float32
    assert np.abs(back - np.clip(f, -20, 20)).max() <= 20 / 255 + 1e-5  # half a step of 40/255 px
    np.testing.assert_allclose(uint8_to_flow(np.array([0, 255], np.uint8)), [-20, 20])
    with pytest.raises(ConfigError, match="flow bound must be > 0"):
        flow_to_uint8(f, bound=0)


# ---- TV-L1 settings and resizing ----------------------------------------------------------


def test_tvl1_presets_and_parameters():
    keys = ("nscales", "warps", "inner_iterations", "outer_iterations")
    default, fast = resolve_tvl1(None), resolve_tvl1({"preset": "fast"})
    assert [default[k] for k in keys] == [5, 5, 30, 10]  # OpenCV's defaults
    assert [fast[k] for k in keys] == [2, 1, 10, 3]
    assert fast["tau"] == default["tau"]
    algo = create_tvl1({"preset": "fast", "warps": 2, "epsilon": 0.05})
    assert (algo.getScalesNumber(), algo.getWarpingsNumber(), algo.getEpsilon()) == (2, 2, pytest.approx(0.05))
    with pytest.raises(ConfigError, match="unknown TV-L1 preset 'slow'"):
        resolve_tvl1({"preset": "slow"})
    with pytest.raises(ConfigError, match=r"unknown TV-L1 parameter\(s\) \['iterations'\]"):
        resolve_tvl1({"iterations": 3})
    with pytest.raises(ConfigError, match=r"\['outer_iterations'\] must be >= 1"):
        resolve_tvl1({"outer_iterations": 0})
    assert prep.parse_tvl1_option("outer_iterations=3") == ("outer_iterations", 3)
    assert prep.parse_tvl1_option("epsilon=0.05") == ("epsilon", 0.05)
    with pytest.raises(ConfigError, match="--tvl1 must look like NAME=NUMBER"):
        prep.parse_tvl1_option("outer_iterations")


def test_resize_short_side_keeps_aspect():
    assert resize_short_side(np.zeros((240, 320, 3), np.uint8), 256).shape == (256, 341, 3)
    assert resize_short_side(np.zeros((64, 48), np.uint8), 24).shape == (32, 24)
    frame = np.zeros((24, 32, 3), np.uint8)
    assert resize_short_side(frame, 0) is frame and resize_short_side(frame, 24) is frame
    with pytest.raises(ConfigError, match="short_side must be a positive"):
        resize_short_side(frame, -5)


# ---- one video ----------------------------------------------------------------------------


def _decode(blob: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("dx", [2, -2])
def test_flow_of_a_translating_square(tmp_path, dx):
    video = write_square_video(tmp_path / "v.avi", dx=dx)
    jpegs = extract_video(video, short_side=0)  # OpenCV's default TV-L1
    assert len(jpegs.rgb) == 6 and len(jpegs.u) == len(jpegs.v) == 5  # N frames -> N-1 flow frames
    assert jpegs.size == (32, 24) and _decode(jpegs.rgb[0]).shape == (24, 32, 3)
    for k in range(5):
        x0 = (12 - 3 * dx + dx * k) if dx < 0 else 6 + dx * k
        u = uint8_to_flow(_decode(jpegs.u[k])[8:16, x0:x0 + 8]).mean()
        v = uint8_to_flow(_decode(jpegs.v[k])[8:16, x0:x0 + 8]).mean()
        assert u == pytest.approx(dx, abs=0.5) and abs(v) < 0.5
        assert (_decode(jpegs.u[k])[8:16, x0:x0 + 8].mean() > 128) == (dx > 0)


def test_prepare_video_writes_the_authors_layout(tmp_path):
    video = write_square_video(tmp_path / "v_Square_g01_c01.avi", n=4)
    assert prepare_video(video, tmp_path / "out", short_side=48, tvl1={"preset": "fast"}) == 4
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "jpegs_256" / "v_Square_g01_c01").iterdir()) == [
        f"frame{i:06d}.jpg" for i in (1, 2, 3, 4)
    ]
    assert len(list((out / "tvl1_flow" / "v" / "v_Square_g01_c01").iterdir())) == 3
    store = open_store(out)
    assert store.counts("v_Square_g01_c01") == FrameCounts(4, 3)
    assert store.read_rgb("v_Square_g01_c01", [0]).shape == (1, 48, 64, 3)
    marker = json.loads((out / ".done" / "v_Square_g01_c01.json").read_text())
    assert marker["frames"] == 4 and marker["flow_frames"] == 3 and marker["size"] == [64, 48]
    assert not (out / ".tmp" / "v_Square_g01_c01").exists()


def test_too_short_and_unreadable_videos(tmp_path):
    with pytest.raises(DataError, match="at least 2 are needed"):
        extract_video(write_square_video(tmp_path / "one.avi", n=1))
    (tmp_path / "junk.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 50)
    with pytest.raises(DataError, match=r"junk.avi"):
        extract_video(tmp_path / "junk.avi")
    with pytest.raises(DataError, match=r"video .*absent.avi does not exist"):
        list(iter_video_frames(tmp_path / "absent.avi"))


# ---- many videos: packed, resume, shards, failures ----------------------------------------


def test_packed_and_jpeg_outputs_are_identical(tmp_path, videos):
    a = prepare_videos(videos, tmp_path / "jpeg", short_side=0, workers=1, progress=False)
    b = prepare_videos(videos, tmp_path / "packed", short_side=0, packed=True, workers=1, progress=False)
    assert sorted(a.done) == sorted(b.done) == [v.stem for v in videos] and a.ok and b.ok
    assert a.done["v_Square_g03_c01"] == 8
    jpeg, packed = open_store(tmp_path / "jpeg"), open_store(tmp_path / "packed")
    assert type(packed).__name__ == "PackedStore"
    for name in jpeg.videos():
        n = jpeg.num_frames(name)
        np.testing.assert_array_equal(jpeg.read_rgb(name, range(n)), packed.read_rgb(name, range(n)))
        np.testing.assert_array_equal(jpeg.read_flow(name, range(n - 1)), packed.read_flow(name, range(n - 1)))


def test_resume_skips_done_and_redoes_half_written(tmp_path, videos):
    out = tmp_path / "out"
    first = prepare_videos(videos, out, short_side=0, tvl1={"preset": "fast"}, workers=1, progress=False)
    assert len(first.done) == 3
    # a finished video: mark one of its files so that rewriting it would show
    sentinel = out / "jpegs_256" / "v_Square_g01_c01" / "frame000001.jpg"
    sentinel.write_bytes(b"sentinel")
    # a half-written video: marker gone, one flow folder gone, junk left in .tmp
    (out / ".done" / "v_Square_g02_c01.json").unlink()
    for p in (out / "tvl1_flow" / "v" / "v_Square_g02_c01").iterdir():
        p.unlink()
    (out / ".tmp" / "v_Square_g02_c01" / "rgb").mkdir(parents=True)
    (out / ".tmp" / "v_Square_g02_c01" / "rgb" / "frame000001.jpg").write_bytes(b"junk")
    second = prepare_videos(videos, out, short_side=0, tvl1={"preset": "fast"}, workers=1, progress=False)
    assert sorted(second.skipped) == ["v_Square_g01_c01", "v_Square_g03_c01"]
    assert sorted(second.done) == ["v_Square_g02_c01"]
    assert sentinel.read_bytes() == b"sentinel"
    assert open_store(out).counts("v_Square_g02_c01") == FrameCounts(7, 6)
    assert is_done(out, "v_Square_g02_c01") and not (out / ".tmp").exists()


def test_resume_refuses_other_settings(tmp_path, videos):
    prepare_videos(videos[:1], tmp_path, short_side=0, tvl1={"preset": "fast"}, workers=1, progress=False)
    with pytest.raises(ConfigError, match=r"prepared with different settings \(short_side, tvl1\)"):
        prepare_videos(videos[:1], tmp_path, short_side=16, workers=1, progress=False)


def test_shards_partition_the_videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    names = [f"v_S_g{i:02d}_c01" for i in range(5)]
    paths = [write_square_video(folder / f"{n}.avi", n=2) for n in reversed(names)]  # order given is irrelevant
    seen = []
    for i in range(3):
        report = prepare_videos(paths, tmp_path / "out", short_side=0, tvl1={"preset": "fast"},
                                shard=(i, 3), workers=1, progress=False)
        assert sorted(report.done) == names[i::3]
        seen += list(report.done)
    assert sorted(seen) == names
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ConfigError, match=r"0 <= i < N"):
        prepare_videos(paths, tmp_path / "x", shard=(0, 0), progress=False)


def test_corrupt_videos_are_reported_by_name_and_the_rest_finish(tmp_path, videos, capsys):
    bad = tmp_path / "videos" / "Square" / "v_Broken_g01_c01.avi"
    bad.write_bytes(b"\x00garbage" * 100)
    missing = tmp_path / "videos" / "v_Gone_g01_c01.avi"
    report = prepare_videos([*videos, bad, missing], tmp_path / "out", short_side=0,
                            tvl1={"preset": "fast"}, workers=2, progress=False)
    assert sorted(report.done) == [v.stem for v in videos]
    assert sorted(report.failed) == ["v_Broken_g01_c01", "v_Gone_g01_c01"]
    assert "v_Broken_g01_c01.avi" in report.failed["v_Broken_g01_c01"]
    assert "does not exist" in report.failed["v_Gone_g01_c01"]
    assert "FAILED v_Broken_g01_c01" in report.summary() and not report.ok
    assert not (tmp_path / "out" / ".done" / "v_Broken_g01_c01.json").exists()
    # the command line exits non-zero and names the video
    listing = tmp_path / "list.txt"
    listing.write_text("# videos\nSquare/v_Square_g01_c01.avi 1\nSquare/v_Broken_g01_c01.avi 1\n")
    code = cli_main(["prepare", str(listing), str(tmp_path / "out"), "--short-side", "0", "--workers", "1",
                     "--tvl1-preset", "fast", "--quiet", "--video-root", str(tmp_path / "videos")])
    assert code == 1 and "FAILED v_Broken_g01_c01" in capsys.readouterr().err


def test_duplicate_names_and_bad_settings(tmp_path, videos):
    other = tmp_path / "elsewhere"
    other.mkdir()
    dup = write_square_video(other / videos[0].name, n=2)
    with pytest.raises(ConfigError, match="two videos share the name 'v_Square_g01_c01'"):
        prepare_videos([videos[0], dup], tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="workers must be >= 0"):
        prepare_videos(videos, tmp_path / "out", workers=-1, progress=False)
    with pytest.raises(ConfigError, match="JPEG quality must be in 1..100"):
        prepare_videos(videos, tmp_path / "out", quality=0, progress=False)


def test_find_videos_and_cli(tmp_path, videos, capsys):
    assert find_videos(tmp_path / "videos") == sorted(videos)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no video files"):
        find_videos(tmp_path / "empty")
    listing = tmp_path / "list.txt"
    listing.write_text("Square/v_Square_g02_c01.avi 1  # with a label\n\n/abs/v_X.avi\n")
    assert find_videos(listing, video_root=tmp_path / "videos") == [videos[1], Path("/abs/v_X.avi")]
    with pytest.raises(DataError, match="neither a folder of videos nor a text file"):
        find_videos(tmp_path / "nothing")
    code = cli_main(["prepare", str(tmp_path / "videos"), str(tmp_path / "out"), "--short-side", "16",
                     "--packed", "--workers", "1", "--tvl1-preset", "fast", "--quiet"])
    assert code == 0 and "prepared 3 video(s)" in capsys.readouterr().out
    store = open_store(tmp_path / "out")
    assert store.read_rgb("v_Square_g01_c01", [0]).shape == (1, 16, 21, 3)
    assert cli_main(["prepare", str(tmp_path / "nothing"), str(tmp_path / "o2"), "--quiet"]) == 2
    assert "error: " in capsys.readouterr().err


# ---- the real clips -------------------------------------------------------------------------


def test_real_clips_are_counted_by_decoding(real_data):
    assert sum(1 for _ in iter_video_frames(real_data.ucf_clip)) == 141
    assert header_frame_count(real_data.hmdb_clip) == 409  # the container header is wrong ...
    assert sum(1 for _ in iter_video_frames(real_data.hmdb_clip)) == 408  # ... decoding yields 408


def test_real_clip_prepared_at_small_size(real_data, tmp_path):
    # decode the whole clip, but compute flow for a few frame pairs only (keeps the test fast)
    frames = [resize_short_side(f, 32) for f in iter_video_frames(real_data.ucf_clip)]
    assert len(frames) == 141 and frames[0].shape == (32, 43, 3)
    algo = create_tvl1({"preset": "fast"})
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames[60:63]]
    flows = [flow_to_uint8(algo.calc(a, b, None)) for a, b in zip(grey, grey[1:])]
    assert len(flows) == 2 and flows[0].shape == (32, 43, 2)
    assert 100 < flows[0].mean() < 156  # mostly small motion, centred on 128
    # the full pipeline on the whole HMDB51 clip (<1 s at 32 px): its header's off-by-one is not "short"
    report = prepare_videos([real_data.hmdb_clip], tmp_path, short_side=32, tvl1={"preset": "fast"}, workers=1, progress=False)
    assert report.done == {real_data.hmdb_clip.stem: 408} and not report.short
    marker = json.loads((tmp_path / ".done" / f"{real_data.hmdb_clip.stem}.json").read_text())
    assert marker["header_frames"] == 409 and marker["size"] == [43, 32] and marker["short"] is False
    assert open_store(tmp_path).read_flow(real_data.hmdb_clip.stem, [10]).shape == (1, 32, 43, 2)
