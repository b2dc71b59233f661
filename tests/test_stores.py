"""Frame stores: the authors' layout, the mmaction2 layout (a real example in tests/data) and the
packed layout, which must decode to the very same arrays."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from twostream_lib.data import stores
from twostream_lib.data.stores import (
    DecodedCache,
    FrameCounts,
    FrameStore,
    PackedStore,
    decode_jpeg,
    detect_layout,
    open_store,
    pack_store,
    read_pack_blobs,
    write_pack,
)
from twostream_lib.errors import ConfigError, DataError


def _jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def _rgb_frame(i: int, h: int = 12, w: int = 16) -> np.ndarray:
    """A BGR frame whose blue channel is high and red channel encodes the index (to check RGB order)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 200  # blue
    img[..., 2] = 10 * i  # red
    return img


def make_authors_store(root: Path, videos=("v_A_g01_c01",), n_rgb: int = 4, n_flow: int | None = None) -> Path:
    n_flow = n_rgb - 1 if n_flow is None else n_flow
    for video in videos:
        for i in range(n_rgb):
            path = root / "jpegs_256" / video / f"frame{i + 1:06d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_jpeg(_rgb_frame(i)))
        for comp, value in (("u", 30), ("v", 220)):
            for i in range(n_flow):
                path = root / "tvl1_flow" / comp / video / f"frame{i + 1:06d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_jpeg(np.full((12, 16), value + i, np.uint8)))
    return root


def test_authors_layout_reads_frames_in_order(tmp_path):
    store = open_store(make_authors_store(tmp_path))
    assert isinstance(store, FrameStore) and detect_layout(tmp_path) == "authors"
    assert store.videos() == ["v_A_g01_c01"]
    assert store.counts("v_A_g01_c01") == FrameCounts(rgb=4, flow=3) and store.num_frames("v_A_g01_c01") == 4
    rgb = store.read_rgb("v_A_g01_c01", [3, 0])
    assert rgb.shape == (2, 12, 16, 3) and rgb.dtype == np.uint8
    assert abs(int(rgb[0, 6, 8, 0]) - 30) <= 3 and abs(int(rgb[0, 6, 8, 2]) - 200) <= 3  # RGB order, frame 4
    assert abs(int(rgb[1, 6, 8, 0]) - 0) <= 3
    flow = store.read_flow("v_A_g01_c01", np.array([0, 2]))
    assert flow.shape == (2, 12, 16, 2)
    assert abs(int(flow[0, 0, 0, 0]) - 30) <= 1 and abs(int(flow[0, 0, 0, 1]) - 220) <= 1  # u first, then v
    assert abs(int(flow[1, 0, 0, 0]) - 32) <= 1  # flow index 2 = frame000003.jpg
    assert store.read_rgb("v_A_g01_c01", []).shape[0] == 0


def test_out_of_range_missing_video_and_bad_indices(tmp_path):
    store = open_store(make_authors_store(tmp_path))
    with pytest.raises(DataError, match=r"flow frame index 3 is out of range .*jpegs_256/v_A_g01_c01.*0\.\.2"):
        store.read_flow("v_A_g01_c01", [0, 3])
    with pytest.raises(DataError, match=r"RGB frame index -1 is out of range"):
        store.read_rgb("v_A_g01_c01", [-1])
    with pytest.raises(DataError, match=r"video 'v_B_g01_c01' is not in the authors frame store"):
        store.read_rgb("v_B_g01_c01", [0])
    with pytest.raises(ConfigError, match="frame indices must be integers"):
        store.read_rgb("v_A_g01_c01", [0.5])


def test_corrupt_truncated_and_missing_frames_name_the_file(tmp_path):
    make_authors_store(tmp_path)
    frames = tmp_path / "jpegs_256" / "v_A_g01_c01"
    (frames / "frame000002.jpg").write_bytes(b"not a jpeg at all")
    data = (frames / "frame000003.jpg").read_bytes()
    (frames / "frame000003.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "tvl1_flow" / "v" / "v_A_g01_c01" / "frame000002.jpg").unlink()
    store = open_store(tmp_path)
    with pytest.raises(DataError, match=r"frame000002.jpg: not a decodable JPEG"):
        store.read_rgb("v_A_g01_c01", [1])
    # OpenCV 5 refuses a truncated JPEG itself; older builds return a partial image, caught by the EOI check
    with pytest.raises(DataError, match=r"frame000003.jpg: (truncated JPEG|not a decodable JPEG)"):
        store.read_rgb("v_A_g01_c01", [2])
    with pytest.raises(DataError, match=r"frame file .*tvl1_flow/v/v_A_g01_c01/frame000002.jpg is missing"):
        open_store(tmp_path).read_flow("v_A_g01_c01", [1])


def test_decode_jpeg_checks(monkeypatch):
    data = _jpeg(_rgb_frame(1))
    assert decode_jpeg(data, "a.jpg").shape == (12, 16, 3) and decode_jpeg(data, "a.jpg", grey=True).shape == (12, 16)
    with pytest.raises(DataError, match=r"e\.jpg: empty file"):
        decode_jpeg(b"", "e.jpg")
    # decoders that return a partial image for a cut-off file (older OpenCV builds) are caught too
    monkeypatch.setattr(stores.cv2, "imdecode", lambda buf, flags: np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DataError, match=r"x\.jpg: truncated JPEG image \(no end-of-image marker\)"):
        decode_jpeg(data[:-50], "x.jpg")


def test_counts_disagreeing_with_n_minus_1(tmp_path):
    store = open_store(make_authors_store(tmp_path, n_rgb=5, n_flow=2))
    assert store.counts("v_A_g01_c01") == FrameCounts(5, 2)
    assert store.num_frames("v_A_g01_c01") == 3  # every index < 3 has its flow frame
    assert FrameCounts(rgb=7, flow=0).usable == 7 and FrameCounts(rgb=0, flow=6).usable == 7


def test_case_insensitive_video_names(tmp_path):
    """UCF101 spells one class HandstandPushups in folders and HandStandPushups in file names."""
    store = open_store(make_authors_store(tmp_path, videos=("v_HandstandPushups_g01_c01",)))
    assert store.read_rgb("v_HandStandPushups_g01_c01", [0]).shape == (1, 12, 16, 3)


def test_real_mmaction2_rawframes(real_data):
    store = open_store(real_data.mmaction.parent)  # root holding one video folder
    assert detect_layout(real_data.mmaction.parent) == "mmaction"
    assert store.videos() == ["mmaction2_test_imgs"]
    # 10 RGB frames but only 5 x/y flow frames (a cut-down test sample): usable = 6
    assert store.counts("mmaction2_test_imgs") == FrameCounts(rgb=10, flow=5)
    assert store.num_frames("mmaction2_test_imgs") == 6
    rgb = store.read_rgb("mmaction2_test_imgs", [0, 9])
    assert rgb.shape == (2, 240, 320, 3)
    bgr = cv2.imread(str(real_data.mmaction / "img_00010.jpg"))
    np.testing.assert_array_equal(rgb[1], bgr[..., ::-1])
    flow = store.read_flow("mmaction2_test_imgs", [4])
    np.testing.assert_array_equal(flow[0, ..., 0], cv2.imread(str(real_data.mmaction / "x_00005.jpg"), cv2.IMREAD_GRAYSCALE))
    np.testing.assert_array_equal(flow[0, ..., 1], cv2.imread(str(real_data.mmaction / "y_00005.jpg"), cv2.IMREAD_GRAYSCALE))
    with pytest.raises(DataError, match=r"flow frame index 5 is out of range .*mmaction2_test_imgs: it has 5"):
        store.read_flow("mmaction2_test_imgs", [5])
    assert open_store(real_data.mmaction).videos() == ["mmaction2_test_imgs"]  # the video folder itself


def test_mmaction_nested_by_class_with_flow_prefix(tmp_path):
    video = tmp_path / "Archery" / "v_Archery_g01_c01"
    video.mkdir(parents=True)
    for i in range(1, 4):
        (video / f"img_{i:05d}.jpg").write_bytes(_jpeg(_rgb_frame(i)))
    for i in range(1, 3):
        (video / f"flow_x_{i:05d}.jpg").write_bytes(_jpeg(np.full((12, 16), 100, np.uint8)))
        (video / f"flow_y_{i:05d}.jpg").write_bytes(_jpeg(np.full((12, 16), 150, np.uint8)))
    store = open_store(tmp_path, "mmaction")
    assert store.videos() == ["v_Archery_g01_c01"] and store.counts("v_Archery_g01_c01") == FrameCounts(3, 2)
    flow = store.read_flow("v_Archery_g01_c01", [1])
    assert abs(int(flow[0, 0, 0, 0]) - 100) <= 1 and abs(int(flow[0, 0, 0, 1]) - 150) <= 1


def test_open_store_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown frame store layout 'lmdb'"):
        open_store(tmp_path, "lmdb")
    with pytest.raises(DataError, match="frame store root .*missing does not exist"):
        open_store(tmp_path / "missing")
    with pytest.raises(DataError, match=r"no frame store found in .*jpegs_256/"):
        open_store(tmp_path)
    with pytest.raises(DataError, match=r"has no packed/ folder"):
        open_store(tmp_path, "packed")


def test_packed_store_is_bit_identical(tmp_path):
    src = make_authors_store(tmp_path / "jpeg", videos=("v_A_g01_c01", "v_B_g01_c01"), n_rgb=6)
    packed = pack_store(src, tmp_path / "out", progress=False)
    assert isinstance(packed, PackedStore) and detect_layout(tmp_path / "out") == "packed"
    jpeg = open_store(src)
    assert packed.videos() == jpeg.videos()
    for video in jpeg.videos():
        assert packed.counts(video) == jpeg.counts(video) == FrameCounts(6, 5)
        np.testing.assert_array_equal(packed.read_rgb(video, range(6)), jpeg.read_rgb(video, range(6)))
        idx = [4, 0, 1, 2, 2]  # unordered, repeated, with a consecutive run
        np.testing.assert_array_equal(packed.read_flow(video, idx), jpeg.read_flow(video, idx))
    # the packed file holds the original bytes
    raw = read_pack_blobs(tmp_path / "out" / "packed" / "v_A_g01_c01.pack", [0, 6 + 2, 6 + 5 + 2])
    assert raw[0] == (src / "jpegs_256/v_A_g01_c01/frame000001.jpg").read_bytes()
    assert raw[1] == (src / "tvl1_flow/u/v_A_g01_c01/frame000003.jpg").read_bytes()
    assert raw[2] == (src / "tvl1_flow/v/v_A_g01_c01/frame000003.jpg").read_bytes()
    with pytest.raises(DataError, match=r"v_A_g01_c01.pack: blob 16 out of range \(the file holds 16\)"):
        read_pack_blobs(tmp_path / "out" / "packed" / "v_A_g01_c01.pack", [16])


def test_pack_store_resumes_and_reports_corrupt_packs(tmp_path):
    src = make_authors_store(tmp_path / "jpeg", videos=("v_A_g01_c01", "v_B_g01_c01"))
    pack = tmp_path / "out" / "packed" / "v_A_g01_c01.pack"
    write_pack(pack, [b"old"], [], [])
    pack_store(src, tmp_path / "out", progress=False)
    assert pack.read_bytes().endswith(b"old")  # finished packs are not redone
    assert not list((tmp_path / "out" / "packed").glob("*.tmp"))
    store = open_store(tmp_path / "out")
    with pytest.raises(DataError, match=r"v_A_g01_c01.pack \(RGB frame 0\): not a decodable JPEG"):
        store.read_rgb("v_A_g01_c01", [0])
    good = tmp_path / "out" / "packed" / "v_B_g01_c01.pack"
    good.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"v_B_g01_c01.pack: corrupt packed file"):
        store.read_flow("v_B_g01_c01", [0])
    (tmp_path / "out" / "packed" / "v_C.pack").write_bytes(b"GIF89a...........")
    with pytest.raises(DataError, match=r"v_C.pack: not a packed frame file"):
        open_store(tmp_path / "out").num_frames("v_C")


def test_prepare_markers_are_checked_against_the_disk(tmp_path):
    jpeg = make_authors_store(tmp_path / "jpeg")  # 4 RGB, 3 flow frames
    assert open_store(jpeg).counts("v_A_g01_c01") == FrameCounts(4, 3)  # no markers: read as found
    (jpeg / "prepare.json").write_text("{}")  # written by prepare: a video without a marker is unfinished
    with pytest.raises(DataError, match=r"'v_A_g01_c01' .* has no marker \.done/v_A_g01_c01\.json.*did not finish"):
        open_store(jpeg).counts("v_A_g01_c01")
    (jpeg / ".done").mkdir()
    (jpeg / ".done" / "v_A_g01_c01.json").write_text(json.dumps({"frames": 4, "flow_frames": 3}))
    assert open_store(jpeg).num_frames("v_A_g01_c01") == 4
    pack_store(jpeg, tmp_path / "p", progress=False)
    (tmp_path / "p" / ".done").mkdir()
    (tmp_path / "p" / ".done" / "v_A_g01_c01.json").write_text(json.dumps({"frames": 14, "flow_frames": 13}))
    with pytest.raises(DataError, match=r"records 14 RGB and 13 flow frames, the disk holds 4 RGB and 3 flow"):
        open_store(tmp_path / "p").read_rgb("v_A_g01_c01", [0])
    (tmp_path / "p" / ".done" / "v_A_g01_c01.json").write_text("{not json")
    with pytest.raises(DataError, match=r"marker .*v_A_g01_c01\.json is unreadable"):
        open_store(tmp_path / "p").counts("v_A_g01_c01")


def test_pack_real_mmaction_frames(real_data, tmp_path):
    packed = pack_store(real_data.mmaction.parent, tmp_path, progress=False)
    jpeg = open_store(real_data.mmaction.parent)
    assert packed.counts("mmaction2_test_imgs") == FrameCounts(10, 5)
    np.testing.assert_array_equal(packed.read_rgb("mmaction2_test_imgs", range(10)),
                                  jpeg.read_rgb("mmaction2_test_imgs", range(10)))
    np.testing.assert_array_equal(packed.read_flow("mmaction2_test_imgs", range(5)),
                                  jpeg.read_flow("mmaction2_test_imgs", range(5)))


class _Frames:
    """A tiny torch Dataset over a store, as a sampler would use it."""

    def __init__(self, store, video):
        self.store, self.video = store, video

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return self.store.read_flow(self.video, [i]), self.store.read_rgb(self.video, [i]), os.getpid()


def test_reading_in_dataloader_workers(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    src = make_authors_store(tmp_path / "jpeg", n_rgb=6)
    store = pack_store(src, tmp_path / "out", progress=False)
    store.num_frames("v_A_g01_c01")  # state created in the parent before the workers start
    loader = torch.utils.data.DataLoader(_Frames(store, "v_A_g01_c01"), batch_size=None, num_workers=2)
    got = list(loader)
    assert len({pid for *_, pid in got}) == 2 and os.getpid() not in {pid for *_, pid in got}
    for i, (flow, rgb, _) in enumerate(got):
        np.testing.assert_array_equal(np.asarray(flow), store.read_flow("v_A_g01_c01", [i]))
        np.testing.assert_array_equal(np.asarray(rgb), store.read_rgb("v_A_g01_c01", [i]))


def test_decoded_cache_is_bit_identical_decodes_once_and_bounds_memory(tmp_path, monkeypatch):
    store = open_store(make_authors_store(tmp_path, videos=("v_A_g01_c01", "v_B_g01_c01"), n_rgb=5))
    cache = DecodedCache(store)
    assert cache.videos() == store.videos() and cache.num_frames("v_A_g01_c01") == 5
    assert cache.counts("v_A_g01_c01") == FrameCounts(rgb=5, flow=4) and cache.root == store.root  # delegated
    decoded = []
    real = stores.decode_jpeg
    monkeypatch.setattr(stores, "decode_jpeg", lambda *a, **k: decoded.append(a[1]) or real(*a, **k))
    for _ in range(3):
        np.testing.assert_array_equal(cache.read_rgb("v_A_g01_c01", [4, 0, 4]), store.read_rgb("v_A_g01_c01", [4, 0, 4]))
        np.testing.assert_array_equal(cache.read_flow("v_A_g01_c01", [3, 1]), store.read_flow("v_A_g01_c01", [3, 1]))
    # the store itself decoded 3 x (3 RGB + 2 x 2 flow) frames; the cache decoded each frame of the video once
    assert len(decoded) == 3 * (3 + 4) + 5 + 2 * 4
    one_video = cache.nbytes
    assert one_video == 5 * 12 * 16 * 3 + 4 * 12 * 16 * 2
    with pytest.raises(DataError, match=r"flow frame index 4 is out of range for video 'v_A_g01_c01'.*0\.\.3"):
        cache.read_flow("v_A_g01_c01", [4])
    with pytest.raises(ConfigError, match="frame indices must be integers"):
        cache.read_rgb("v_A_g01_c01", [0.5])
    with pytest.raises(DataError, match="is not in the authors frame store"):
        cache.read_rgb("v_C_g01_c01", [0])
    # a budget of one video's frames: reading the second video drops the least recently used arrays
    small = DecodedCache(store, max_bytes=one_video)
    small.read_rgb("v_A_g01_c01", [0]), small.read_flow("v_A_g01_c01", [0])
    small.read_rgb("v_B_g01_c01", [0])
    assert small.nbytes <= one_video and ("rgb", "v_A_g01_c01") not in small._frames
    with pytest.raises(ConfigError, match="max_bytes must be positive"):
        DecodedCache(store, max_bytes=0)


def test_decoded_cache_on_disk_decodes_each_video_once_for_every_process(tmp_path, monkeypatch):
    """``disk``: a later cache (another notebook's kernel, a training process) reads the frames the first
    one decoded, bit for bit, without decoding; an unreadable copy is decoded again and rewritten."""
    import pickle

    store = open_store(make_authors_store(tmp_path / "frames", videos=("v_A_g01_c01",), n_rgb=5))
    disk = tmp_path / "frames" / ".decoded"
    first = DecodedCache(store, disk=disk)
    rgb, flow = first.read_rgb("v_A_g01_c01", [0, 4]), first.read_flow("v_A_g01_c01", [3])
    assert sorted(p.relative_to(disk).as_posix() for p in disk.rglob("*.npy")) == ["flow/v_A_g01_c01.npy",
                                                                                 "rgb/v_A_g01_c01.npy"]
    decoded = []
    real = stores.decode_jpeg
    monkeypatch.setattr(stores, "decode_jpeg", lambda *a, **k: decoded.append(a[1]) or real(*a, **k))
    later = pickle.loads(pickle.dumps(first))  # what a worker process receives: the store and the folder
    assert later.disk == disk and later.nbytes == 0
    np.testing.assert_array_equal(later.read_rgb("v_A_g01_c01", [0, 4]), rgb)
    np.testing.assert_array_equal(later.read_flow("v_A_g01_c01", [3]), flow)
    assert decoded == []
    # the copy is mapped, not read (shared page cache instead of a private copy in every process); the
    # frames handed out are ordinary writable arrays
    assert isinstance(later._frames[("rgb", "v_A_g01_c01")], np.memmap)
    got = later.read_rgb("v_A_g01_c01", [0, 4])
    assert type(got) is np.ndarray and got.flags.writeable
    (disk / "rgb" / "v_A_g01_c01.npy").write_bytes(b"cut short")
    np.testing.assert_array_equal(DecodedCache(store, disk=disk).read_rgb("v_A_g01_c01", [0, 4]), rgb)
    assert len(decoded) == 5 and np.load(disk / "rgb" / "v_A_g01_c01.npy").shape[0] == 5
    whole = (disk / "rgb" / "v_A_g01_c01.npy").read_bytes()
    (disk / "rgb" / "v_A_g01_c01.npy").write_bytes(whole[:-100])  # its header intact, its frames cut short
    np.testing.assert_array_equal(DecodedCache(store, disk=disk).read_rgb("v_A_g01_c01", [0, 4]), rgb)
    assert len(decoded) == 10 and (disk / "rgb" / "v_A_g01_c01.npy").read_bytes() == whole


def test_decoded_cache_pickles_without_its_frames(tmp_path):
    """A worker process gets the store, not copies of every frame decoded so far (the IDT pool sent the
    whole cache with each of 630 tasks)."""
    import pickle

    store = open_store(make_authors_store(tmp_path, videos=("v_A_g01_c01",), n_rgb=5))
    cache = DecodedCache(store, max_bytes=1 << 20)
    cache.read_rgb("v_A_g01_c01", [0])
    assert cache.nbytes > 0
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.nbytes == 0 and copy.max_bytes == 1 << 20 and len(pickle.dumps(cache)) < 2000
    np.testing.assert_array_equal(copy.read_rgb("v_A_g01_c01", [4]), store.read_rgb("v_A_g01_c01", [4]))


def test_profile_cache_frames_wraps_the_store(tmp_path):
    from twostream_lib.config import load_profile
    from twostream_lib.experiments.data import _open_store

    root = make_authors_store(tmp_path)
    assert load_profile("demo").cache_frames and not load_profile("paper").cache_frames
    assert isinstance(_open_store(load_profile("demo"), root), DecodedCache)
    assert _open_store(load_profile("demo"), root).disk == root / ".decoded"  # decoded once for all processes
    assert not isinstance(_open_store(load_profile("paper"), root), DecodedCache)
