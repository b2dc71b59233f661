"""IDT pipeline: per-video cache (resumable, parallel), video files and frame stores, encoding, SVM,
Table 6 late fusion and the command line."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from twostream_lib.data.splits import VideoItem
from twostream_lib.errors import ConfigError, DataError
from twostream_lib.evaluate import VideoScores, accuracy, save_scores
from twostream_lib.idt.clips import translating_clip
from twostream_lib.idt.pipeline import (
    cache_path,
    cli_main,
    encode,
    extract_descriptors,
    extract_video,
    fit_encoder,
    idt_scores,
    late_fuse_idt,
    load_descriptors,
    read_video_frames,
    zscore_per_video,
)
from twostream_lib.idt.trajectories import DTParams

DT = DTParams(improved=False)
MOTIONS = {"Right": (2, 0), "Down": (0, 2)}


def _write_avi(path: Path, grey: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = grey.shape[1:]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    assert wr.isOpened()
    for f in grey:
        wr.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    wr.release()
    return path


def _write_store(root: Path, name: str, grey: np.ndarray) -> None:
    """A frame store in the authors' layout: jpegs_256/<video>/frame%06d.jpg (1-based)."""
    d = root / "jpegs_256" / name
    d.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(grey):
        cv2.imwrite(str(d / f"frame{i + 1:06d}.jpg"), cv2.cvtColor(f, cv2.COLOR_GRAY2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])


def _toy_items(groups=(1, 2, 3)) -> list[VideoItem]:
    items = []
    for label, cls in enumerate(MOTIONS):
        for g in groups:
            name = f"v_{cls}_g{g:02d}_c01"
            items.append(VideoItem(name, label, cls, f"{cls}/{name}.avi"))
    return items


def _toy_clip(item: VideoItem) -> np.ndarray:
    seed = int(item.name[-6:-4]) * 10 + item.label
    return translating_clip(20, (48, 48), MOTIONS[item.class_name], seed=seed)


@pytest.fixture(scope="module")
def toy_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_videos")
    items = _toy_items((1, 2, 3, 4))
    for it in items:
        _write_avi(root / it.relpath, _toy_clip(it))
    return root, items


def test_extract_from_video_files_caches_and_resumes(tmp_path, toy_videos):
    root, items = toy_videos
    items = items[:2]
    cache = tmp_path / "cache"
    rep = extract_descriptors(root, items, cache, params=DT, workers=1, progress=False)
    assert sorted(rep.done) == sorted(i.name for i in items) and not rep.skipped and not rep.failed
    d = load_descriptors(cache, items[0].name)
    assert d["hof"].shape == (rep.trajectories[items[0].name], 108) and d["hof"].dtype == np.float32
    assert d["meta"]["num_frames"] == 20 and d["meta"]["params"]["improved"] is False
    assert not list(cache.glob("*.tmp"))
    stamp = cache_path(cache, items[0].name).stat().st_mtime_ns
    again = extract_descriptors(root, items, cache, params=DT, workers=1, progress=False)
    assert sorted(again.skipped) == sorted(i.name for i in items) and not again.done
    assert cache_path(cache, items[0].name).stat().st_mtime_ns == stamp
    # other parameters -> not the same cache entry, extracted again
    other = extract_descriptors(root, items[:1], cache, params=DTParams(improved=False, min_distance=6),
                                workers=1, progress=False)
    assert other.done == [items[0].name]
    # a partial/corrupt cache file is redone, not trusted
    cache_path(cache, items[1].name).write_bytes(b"junk")
    assert extract_descriptors(root, items, cache, params=DTParams(improved=False, min_distance=6),
                               workers=1, progress=False).done == [items[1].name]


def test_parallel_extraction_matches_serial(tmp_path, toy_videos):
    root, items = toy_videos
    items = items[:3]
    serial = extract_descriptors(root, items, tmp_path / "a", params=DT, workers=1, progress=False)
    par = extract_descriptors(root, items, tmp_path / "b", params=DT, workers=2, progress=False)
    assert sorted(par.done) == sorted(serial.done) and par.trajectories == serial.trajectories
    for it in items:
        np.testing.assert_array_equal(load_descriptors(tmp_path / "a", it.name)["mbhx"],
                                      load_descriptors(tmp_path / "b", it.name)["mbhx"])


def test_an_interrupted_parallel_extraction_leaves_the_videos_not_started_and_no_partial_file(
        tmp_path, toy_videos, monkeypatch):
    """Ctrl-C (or run_all stopping its work computed ahead) after the first video: the pool does not go on
    through the queue, what finished is cached whole, and the next call extracts the rest."""
    from twostream_lib.idt import pipeline

    root, items = toy_videos  # 8 videos, 2 workers
    real = pipeline.as_completed

    def interrupted(futures):
        yield next(real(futures))
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "as_completed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_descriptors(root, items, tmp_path, params=DT, workers=2, progress=False)
    cached = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert 1 <= len(cached) < len(items)  # without the cancel the pool shut down after all 8
    assert sorted(p.name for p in tmp_path.iterdir()) == cached  # no temporary file left
    monkeypatch.setattr(pipeline, "as_completed", real)
    rest = extract_descriptors(root, items, tmp_path, params=DT, workers=2, progress=False)
    assert len(rest.skipped) == len(cached) and len(rest.done) == len(items) - len(cached)


AFTER_SERIAL = """\
import sys
from pathlib import Path
from twostream_lib.data.splits import VideoItem
from twostream_lib.idt.pipeline import extract_descriptors
from twostream_lib.idt.trajectories import DTParams
root, out, *relpaths = sys.argv[1:]
items = [VideoItem(Path(r).stem, 0, Path(r).parent.name, r) for r in relpaths]
extract_descriptors(root, items[:1], Path(out, "serial"), params=DTParams(), workers=1, progress=False)
report = extract_descriptors(root, items[1:], Path(out, "pool"), params=DTParams(), workers=2, progress=False)
print(sorted(report.done))
"""


def test_workers_started_after_an_extraction_in_this_process_do_not_hang(tmp_path, toy_videos):
    """A process that has run OpenCV's thread pool (an improved-trajectory extraction with workers=1) then
    starts a pool: its workers come from the fork server, not a fork of it (a forked child hung forever
    in its first OpenCV call)."""
    import subprocess
    import sys

    root, items = toy_videos
    run = subprocess.run([sys.executable, "-c", AFTER_SERIAL, str(root), str(tmp_path), *(i.relpath for i in items[:3])],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == repr(sorted(i.name for i in items[1:3]))


def test_corrupt_or_missing_video_raises_data_error_naming_the_file(tmp_path, toy_videos):
    root, items = toy_videos
    bad = tmp_path / "Right" / "v_Right_g09_c01.avi"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 10)
    with pytest.raises(DataError, match="v_Right_g09_c01.avi"):
        extract_video(bad)
    with pytest.raises(DataError, match="nothere.avi"):
        extract_video(tmp_path / "nothere.avi")
    bad_item = VideoItem("v_Right_g09_c01", 0, "Right", "Right/v_Right_g09_c01.avi")
    good = items[0]
    os.link(root / good.relpath, tmp_path / good.relpath)
    with pytest.raises(DataError, match="v_Right_g09_c01.avi"):
        extract_descriptors(tmp_path, [good, bad_item], tmp_path / "cache", params=DT, workers=1, progress=False)
    assert cache_path(tmp_path / "cache", good.name).is_file()  # the good one is kept
    rep = extract_descriptors(tmp_path, [good, bad_item], tmp_path / "cache", params=DT, workers=1,
                              progress=False, errors="record")
    assert rep.skipped == [good.name] and "v_Right_g09_c01.avi" in rep.failed[bad_item.name]
    with pytest.raises(DataError, match="no cached descriptors"):
        load_descriptors(tmp_path / "cache", bad_item.name)
    with pytest.raises(ConfigError, match="errors"):
        extract_descriptors(tmp_path, [good], tmp_path / "cache", errors="ignore")


def test_real_ucf_clip_decodes(real_data):
    frames = list(read_video_frames(real_data.ucf_clip, max_frames=3))
    assert len(frames) == 3 and frames[0].shape == (240, 320) and frames[0].dtype == np.uint8


def test_frame_store_sources(real_data, tmp_path):
    from twostream_lib.data.stores import open_store

    # a real mmaction2 rawframes folder (10 RGB frames 320x240), short trajectories to fit in it
    short = DTParams(track_length=6, nt_cell=3)
    store = open_store(real_data.rawframes)
    tr = extract_video(store, "mmaction2_test_imgs", params=short)
    assert tr.num_frames == 10 and tr.frame_size == (240, 320)
    assert tr.descriptors["hof"].shape[1] == 2 * 2 * 3 * 9
    # a store written here, given by its root: same descriptors as from the frames themselves
    clip = translating_clip(18, (48, 48), (0, 2))
    _write_store(tmp_path / "store", "v_Down_g01_c01", clip)
    rep = extract_descriptors(tmp_path / "store", ["v_Down_g01_c01"], tmp_path / "cache", params=DT,
                              workers=1, progress=False)
    assert rep.done == ["v_Down_g01_c01"] and rep.trajectories["v_Down_g01_c01"] > 0
    decoded = open_store(tmp_path / "store").read_rgb("v_Down_g01_c01", range(18))
    direct = extract_video(decoded, params=DT)
    np.testing.assert_allclose(load_descriptors(tmp_path / "cache", "v_Down_g01_c01")["hog"],
                               direct.descriptors["hog"], atol=1e-3)  # float16 cache
    with pytest.raises(DataError, match="v_Missing"):
        extract_descriptors(tmp_path / "store", ["v_Missing"], tmp_path / "cache", params=DT, workers=1,
                            progress=False)


def test_encode_and_svm_scores_on_toy_set(tmp_path, toy_videos):
    root, items = toy_videos
    train = [i for i in items if not i.name.endswith(("g04_c01",))]
    test = [i for i in items if i.name.endswith("g04_c01")]
    cache = tmp_path / "cache"
    extract_descriptors(root, train + test, cache, params=DT, workers=1, progress=False)
    enc = fit_encoder(cache, train, n_components=4, max_descriptors=2000, progress=False)
    x = encode(enc, cache, test, progress=False)
    assert x.shape == (2, 4 * 426) and np.isfinite(x).all()
    scores = idt_scores(root, train, test, cache_dir=cache, params=DT, n_components=4, max_descriptors=2000,
                        workers=1, progress=False)
    assert isinstance(scores, VideoScores)
    assert scores.videos == [i.name for i in test] and scores.scores.shape == (2, 2)
    assert accuracy(scores) == 1.0  # rightward vs downward motion
    with pytest.raises(DataError, match="need at least n_components"):
        fit_encoder(cache, train[:1], n_components=5000, progress=False)


def test_zscore_and_late_fusion():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(6, 5)) * 7 + 3
    z = zscore_per_video(s)
    np.testing.assert_allclose(z.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(1), 1, atol=1e-12)
    assert not zscore_per_video(np.ones((2, 4))).any()

    videos = [f"v{i}" for i in range(4)]
    labels = np.array([0, 1, 2, 0])
    conv = VideoScores(videos, labels, np.array([[8, 9, 0], [0, 9, 0], [0, 8, 9.5], [1, 0, 0]], np.float32) * 10)
    svm = np.array([[0.5, -0.9, -1], [-1, -0.8, -0.9], [-1, -0.6, -0.2], [-0.5, 0.1, -1]])
    # the IDT triple comes in another order: it is aligned by video name
    perm = [2, 0, 3, 1]
    idt = ([videos[i] for i in perm], labels[perm], svm[perm])
    fused = late_fuse_idt(conv, idt)
    assert fused.videos == videos
    np.testing.assert_allclose(fused.scores, 0.5 * zscore_per_video(conv.scores) + 0.5 * zscore_per_video(svm),
                               rtol=1e-5, atol=1e-6)
    assert accuracy(conv) == 0.75 and fused.predictions().tolist() == [0, 1, 2, 0]
    # a positive affine change of either score set per video changes nothing after z-scoring
    scaled = VideoScores(videos, labels, conv.scores * np.array([[3.0], [0.1], [10], [1]]) - 5)
    np.testing.assert_allclose(late_fuse_idt(scaled, idt).scores, fused.scores, atol=1e-5)
    # raw averaging is dominated by the larger-scale ConvNet scores: the SVM cannot fix video 0
    raw = late_fuse_idt(conv, idt, normalise="none")
    assert raw.predictions()[0] == 1 and accuracy(raw) == 0.75
    np.testing.assert_array_equal(late_fuse_idt(conv, idt, weights=(1, 0)).predictions(), conv.predictions())
    with pytest.raises(DataError, match="different videos"):
        late_fuse_idt(conv, (videos[:3], labels[:3], svm[:3]))
    with pytest.raises(ConfigError, match="normalise"):
        late_fuse_idt(conv, idt, normalise="softmax")


def test_cli_extract_encode_evaluate(tmp_path, toy_videos, capsys):
    root, items = toy_videos
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(MOTIONS)))
    train = [i for i in items if not i.name.endswith("g04_c01")]
    test = [i for i in items if i.name.endswith("g04_c01")]
    (splits / "trainlist01.txt").write_text("".join(f"{i.relpath} {i.label + 1}\n" for i in train))
    (splits / "testlist01.txt").write_text("".join(f"{i.relpath}\n" for i in test))
    common = ["--split-dir", str(splits), "--dataset", "synthetic", "--split", "1"]
    cache, out = tmp_path / "cache", tmp_path / "enc"
    assert cli_main(["idt", "extract", str(root), "--cache", str(cache), *common, "--dt", "--workers", "1",
                     "--no-progress"]) == 0
    assert len(list(cache.glob("*.npz"))) == len(items)
    assert cli_main(["idt", "encode", "--cache", str(cache), *common, "--out", str(out), "--components", "4",
                     "--no-progress"]) == 0
    conv = VideoScores([i.name for i in test], [i.label for i in test], [[0.0, 1.0], [0.0, 1.0]])
    save_scores(conv, tmp_path / "conv.npz")
    assert cli_main(["idt", "evaluate", "--features", str(out / "features.npz"), "--out",
                     str(tmp_path / "idt.npz"), "--convnet", str(tmp_path / "conv.npz"),
                     "--fused-out", str(tmp_path / "fused.npz")]) == 0
    text = capsys.readouterr().out
    assert "IDT (FV + linear SVM, C=100): 100.0% on 2 test videos" in text
    assert "ConvNet: 50.0%" in text and (tmp_path / "fused.npz").is_file()
    assert cli_main(["idt", "evaluate", "--features", str(tmp_path / "none.npz"), "--out", "x.npz"]) == 2
    assert "none.npz" in capsys.readouterr().err
