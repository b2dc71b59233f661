"""The synthetic data set: cues by construction, files in the UCF101/HMDB51 formats, preparation, CLI."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch

from twostream_lib.data import synthetic as syn
from twostream_lib.data.sampling import ClipSampling, TwoStreamClips, TwoStreamViews
from twostream_lib.data.splits import load_split
from twostream_lib.data.stores import open_store
from twostream_lib.errors import ConfigError, DataError

W = np.array(syn.LUMA_WEIGHTS)
TINY = dict(size=32, frames=16, groups=3, clips=1)


def test_colours_have_equal_luminance_and_differ():
    rgbs = [syn.equal_luminance_rgb(h) for h in syn.COLOURS.values()]
    for rgb in rgbs:
        assert abs(float(W @ rgb) - syn.LUMA) < 1e-6
    assert min(np.linalg.norm(a - b) for i, a in enumerate(rgbs) for b in rgbs[i + 1:]) > 60
    with pytest.raises(ConfigError):
        syn.equal_luminance_rgb(0, chroma=200)


def test_class_table():
    assert len(syn.CLASS_NAMES) == 14 and list(syn.CLASS_NAMES) == sorted(syn.CLASS_NAMES)
    families = [syn._SPEC[c].family for c in syn.CLASS_NAMES]
    assert families.count("what-moves-where") == 8 and families.count("appearance") == 2
    assert families.count("motion") == 2 and families.count("order") == 2


@pytest.mark.parametrize("name", ["RedHorizontal", "GreenVertical", "OrangeSquare", "Orbit", "VerticalThenHorizontal"])
def test_render_video_ground_truth(name):
    video, info = syn.render_video(name, seed=3, group=2, clip=4, size=56, frames=28)
    assert video.shape == (28, 56, 56, 3) and video.dtype == np.uint8
    again, _ = syn.render_video(name, seed=3, group=2, clip=4, size=56, frames=28)
    other, _ = syn.render_video(name, seed=4, group=2, clip=4, size=56, frames=28)
    assert np.array_equal(video, again) and not np.array_equal(video, other)
    pos, radii = info["positions"], info["radii"]
    assert pos.shape == (28, 4, 2)  # every colour exactly once in every frame
    mover = info["colours"].index(info["mover_colour"])
    moved = np.abs(pos - pos[:1]).max(axis=(0, 2))
    assert moved[mover] > 2 and np.all(np.delete(moved, mover) == 0)  # exactly one disc moves
    for t in range(28):  # discs never touch: the mover stays apart from the distractors
        for k in range(4):
            for j in range(k):
                assert np.linalg.norm(pos[t, k] - pos[t, j]) > radii[k] + radii[j] + 3
        assert pos[t].min() > radii.max() and pos[t].max() < 56 - radii.max()
    grey = video.astype(float) @ W  # what TV-L1 sees: all discs look alike
    centres = [grey[t, int(round(y)), int(round(x))] for t in (0, 27) for x, y in pos[t]]
    assert np.ptp(centres) < 3 and abs(np.mean(centres) - info["luma"]) < 2
    if syn._SPEC[name].colour:
        assert info["mover_colour"] == syn._SPEC[name].colour


def test_motion_labels_and_order_layout():
    _, h = syn.render_video("RedHorizontal", frames=28)
    assert set(h["motions"]) == {"H"} and len(h["motions"]) == 27
    _, o = syn.render_video("HorizontalThenVertical", frames=28)
    assert "".join(o["motions"]) == "----HHHHH---------VVVVV----"
    _, o = syn.render_video("VerticalThenHorizontal", frames=28, clip=2)
    assert "".join(o["motions"]) == "----VVVVV---------HHHHH----"
    mover = o["colours"].index(o["mover_colour"])
    track = o["positions"][:, mover]
    assert np.allclose(track[:5], track[0]) and np.allclose(track[10:19], track[0])  # rests at the anchor
    assert np.allclose(track[5:10, 0], track[0, 0]) and not np.allclose(track[5:10, 1], track[0, 1])
    _, sq = syn.render_video("OrangeSquare", clip=1)
    assert sq["shape"] == "square" and set(sq["motions"]) <= {"H", "V"}


@pytest.mark.parametrize("frames", [16, 24, 28, 32, 40])
def test_order_phases_are_symmetric_and_no_stack_sees_both(frames):
    layout = syn.order_phases(frames)
    rest_out, a, mid, b, rest_end = layout
    assert sum(layout) == frames - 1 and rest_out == rest_end and a == b >= 2
    assert mid >= syn.FLOW_STACK - 1  # a window of L flow frames cannot reach from A into B
    with pytest.raises(ConfigError):
        syn.order_phases(syn.MIN_ORDER_FRAMES - 1)


def test_principle_accuracy_ladder():
    acc = syn.principle_accuracy()
    values = [acc[k] for k in syn.MODEL_FAMILIES]
    assert values == pytest.approx([3 / 14, 5 / 14, 7 / 14, 13 / 14, 1.0, 6 / 14])
    # IDT sees grey frames: the two squares differ only in colour, so it tells them apart by chance
    assert syn.principle_accuracy(by_family=True)[syn.IDT_FAMILY] == pytest.approx(
        {"appearance": 0.5, "motion": 1.0, "order": 0.5, "what-moves-where": 0.25})
    per = syn.principle_accuracy(by_family=True)
    assert per["late fusion (softmax average)"] == pytest.approx(
        {"appearance": 1.0, "motion": 1.0, "order": 0.5, "what-moves-where": 0.25})
    assert per["2D conv fusion (ReLU5)"]["what-moves-where"] == 1.0 and per["2D conv fusion (ReLU5)"]["order"] == 0.5
    sub = syn.principle_accuracy(["RedHorizontal", "BlueHorizontal"])
    assert sub["flow stacks (temporal stream)"] == pytest.approx(0.5)
    assert sub["2D conv fusion (ReLU5)"] == pytest.approx(1.0)


def test_split_groups_partition():
    assert [syn.split_test_groups(9, k) for k in (1, 2, 3)] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert sorted(sum((syn.split_test_groups(25, k) for k in (1, 2, 3)), [])) == list(range(1, 26))


def test_params_are_validated(tmp_path):
    for bad in (dict(size=8), dict(frames=12), dict(groups=2), dict(classes=["Nope"]), dict(seed=-1),
                dict(classes=["OrangeSquare", "OrangeSquare"])):
        with pytest.raises(ConfigError):
            syn.generate_synthetic(tmp_path / "x", **{**TINY, **bad})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3 classes x 3 groups x 1 clip, 32 px, 16 frames, generated and prepared (real TV-L1)."""
    root = tmp_path_factory.mktemp("synthetic")
    ds = syn.make_synthetic_dataset(root, classes=["RedHorizontal", "OrangeSquare", "VerticalThenHorizontal"],
                                    workers=1, progress=False, **TINY)
    return ds


def test_layout_and_splits(tiny):
    root = tiny.root
    assert tiny.classes == ("OrangeSquare", "RedHorizontal", "VerticalThenHorizontal")  # sorted, as UCF101
    assert tiny.families == {"RedHorizontal": "what-moves-where", "OrangeSquare": "appearance",
                             "VerticalThenHorizontal": "order"}
    assert (tiny.size, tiny.frames, tiny.groups, tiny.clips, tiny.seed) == (32, 16, 3, 1, 0)
    assert tiny.timings["prepare"] > 0 and tiny.timings["generate"] > 0
    assert (root / "splits" / "classInd.txt").read_text().splitlines() == [
        "1 OrangeSquare", "2 RedHorizontal", "3 VerticalThenHorizontal"]
    videos = sorted(p.relative_to(root / "videos").as_posix() for p in (root / "videos").rglob("*.avi"))
    assert len(videos) == 9 and "OrangeSquare/v_OrangeSquare_g02_c01.avi" in videos
    for k in (1, 2, 3):
        ucf = load_split("synthetic", tiny.split_dir, k)
        hmdb = load_split("hmdb51", tiny.hmdb_split_dir, k)
        assert ucf.classes == hmdb.classes == tiny.classes
        assert len(ucf.train) == 6 and len(ucf.test) == 3
        assert {v.name for v in ucf.test} == {f"v_{c}_g{k:02d}_c01" for c in tiny.classes}
        assert [(v.name, v.label) for v in ucf.train] == [(v.name, v.label) for v in hmdb.train]
        assert all((tiny.video_root / v.relpath).is_file() for v in ucf.train + ucf.test)
    card = tiny.card_path.read_text()
    for needle in ("RedHorizontal", "what-moves-where", "seed | 0", "32 x 32", "frames + flow time",
                   "3D conv fusion + 3D pooling", "in principle"):
        assert needle in card
    assert not list(root.rglob("*.tmp*"))


def _decode(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.array(frames)


def test_video_files_keep_their_colours(tmp_path):
    video, info = syn.render_video("CyanSquare", seed=5, size=56, frames=8)
    path = syn.write_video(tmp_path / "v.avi", video)
    decoded = _decode(path)
    assert decoded.shape == video.shape and not list(tmp_path.glob("*.tmp*"))
    refs = {c: syn.equal_luminance_rgb(h, luma=info["luma"]) for c, h in syn.COLOURS.items()}
    for t in (0, 7):
        for k, (x, y) in enumerate(info["positions"][t]):  # disc centres survive MJPG
            got = decoded[t, int(round(y)), int(round(x))].astype(float)
            want = video[t, int(round(y)), int(round(x))].astype(float)
            assert np.abs(got - want).max() <= 16, (info["colours"][k], got, want)
            assert min(refs, key=lambda c: np.linalg.norm(refs[c] - got)) == info["colours"][k]
    # MJPG subsamples chroma: the large saturated square's edges cost most of this
    assert np.abs(decoded.astype(float) - video).mean() < 5


def test_prepared_frames_and_flow_show_what_moves_where(tiny):
    store = open_store(tiny.frames_root)
    name = "v_RedHorizontal_g01_c01"
    assert len(store.videos()) == 9 and store.num_frames(name) == 16
    rgb, flow = store.read_rgb(name, range(16)), store.read_flow(name, range(15))
    assert rgb.shape == (16, 32, 32, 3) and flow.shape == (15, 32, 32, 2)
    _, info = syn.render_video("RedHorizontal", seed=0, group=1, clip=1, size=32, frames=16)
    f = np.abs(flow.astype(float) - 128).mean(0)  # mean |u|, |v| (JPEG levels) over the video
    r, moving, still = 3, None, []
    for k, (x, y) in enumerate(info["positions"][0]):
        x, y = int(round(x)), int(round(y))
        uv = f[y - r:y + r + 1, x - r:x + r + 1].mean(axis=(0, 1))
        if info["colours"][k] == "Red":
            moving = uv
        else:
            still.append(uv.max())
    assert moving[0] > 2 * moving[1]  # the red disc moves horizontally ...
    assert moving[0] > 4 * max(still)  # ... and the other discs stand still (JPEG noise only)


def test_sampling_on_the_prepared_set(tiny):
    store = open_store(tiny.frames_root)
    split = load_split("synthetic", tiny.split_dir, 1)
    clips = TwoStreamClips(store, split.train, ClipSampling(size=24), train=True)
    batch = next(iter(torch.utils.data.DataLoader(clips, batch_size=3)))
    assert batch["rgb"].shape == (3, 5, 3, 24, 24) and batch["flow"].shape == (3, 5, 20, 24, 24)
    views = TwoStreamViews(store, split.test, ClipSampling(size=24), mode="spread_flips", crop="full")
    assert views[0]["rgb"].shape == (5, 3, 32, 32) and len(views) == 6


def test_idempotent_and_regenerates_on_new_parameters(tiny, tmp_path, monkeypatch):
    import twostream_lib.data.prepare as prepare

    def fail(*a, **k):
        raise AssertionError("prepare_videos called again")

    monkeypatch.setattr(prepare, "prepare_videos", fail)
    stamp = os.stat(tiny.video_root / "OrangeSquare" / "v_OrangeSquare_g01_c01.avi").st_mtime_ns
    again = syn.make_synthetic_dataset(tiny.root, classes=list(tiny.classes), workers=1, progress=False, **TINY)
    assert again.frames_root == tiny.frames_root and again.timings == tiny.timings
    assert os.stat(tiny.video_root / "OrangeSquare" / "v_OrangeSquare_g01_c01.avi").st_mtime_ns == stamp

    root = tmp_path / "s"
    syn.generate_synthetic(root, classes=["Orbit", "OrangeSquare"], workers=1, progress=False, **TINY)
    (root / "frames").mkdir()  # pretend something was prepared with these parameters
    syn.generate_synthetic(root, seed=1, classes=["Orbit"], workers=1, progress=False, **TINY)
    assert sorted(p.name for p in (root / "videos").iterdir()) == ["Orbit"]  # never mixed
    assert not (root / "frames").exists()
    record = json.loads((root / syn.RECORD_NAME).read_text())
    assert record["params"]["seed"] == 1 and record["generated"] and not record["prepared"]


def test_parallel_generation_gives_the_same_videos(tmp_path):
    kw = dict(classes=["Orbit", "CyanSquare"], progress=False, size=32, frames=8, groups=3, clips=1)
    one = syn.generate_synthetic(tmp_path / "one", workers=1, **kw)
    two = syn.generate_synthetic(tmp_path / "two", workers=2, **kw)
    files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*.avi"))
    assert len(files) == 6 and files == sorted(p.relative_to(two).as_posix() for p in two.rglob("*.avi"))
    for f in files:
        assert np.array_equal(_decode(one / f), _decode(two / f))


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing"):
        syn.generate_synthetic(tmp_path, classes=["Orbit"], workers=1, progress=False, **TINY)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["synthetic", str(out), "--seed", "2", "--size", "32", "--frames", "16", "--groups", "3", "--clips",
            "1", "--classes", "Diagonal", "--workers", "1", "--no-prepare", "--quiet"]
    assert syn.cli_main(argv) == 0
    assert (out / "videos" / "Diagonal" / "v_Diagonal_g03_c01.avi").is_file()
    assert json.loads((out / syn.RECORD_NAME).read_text())["params"]["seed"] == 2
    assert syn.cli_main(["synthetic", str(tmp_path / "bad"), "--size", "4", "--quiet"]) == 2
    assert "size" in capsys.readouterr().err
