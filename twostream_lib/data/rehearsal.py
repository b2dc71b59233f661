"""A rehearsal set for the paper pipeline: generated videos in UCF101's layout, at UCF101's size.

The ``paper`` profile cannot be run here (no UCF101, no GPU), but everything it does to the data can:
320 x 240 AVI videos under ``videos/<Class>/v_<Class>_gXX_cYY.avi``, UCF101's split files
(``classInd.txt``, ``trainlist0k.txt``, ``testlist0k.txt``; split k tests groups 7(k-1)+1 .. 7k, as
UCF101's do), and the same preparation as the real set (:func:`~twostream_lib.data.prepare.prepare_videos`:
JPEG frames at short side 256, i.e. 341 x 256, and OpenCV's TV-L1 flow, fast preset). The ``smoke``
profile runs every notebook on it with the paper's networks (VGG-M-2048, VGG-16) for one iteration,
and ``plan`` predicts that run's cache and disk bytes from the same listing (``benchmarks/bench_rehearsal.py``)::

    python -m twostream_lib rehearsal                   # data/rehearsal/ucf101 (a minute or two of TV-L1)
    ./run_all.sh --profile smoke                        # every notebook, outputs in results/smoke/

The videos are the synthetic set's classes (:mod:`twostream_lib.data.synthetic`) rendered at 320 px
and cut to 240 rows, one clip per group, in groups 1, 8, 15 and 22: each split tests one video per
class and trains on three. Only the layout and the sizes are UCF101's; the content is synthetic, so
the numbers a rehearsal prints say that the pipeline runs, not how well.
"""
from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from twostream_lib.data.synthetic import CLASS_NAMES, TVL1_FAST, render_video, video_name, write_video
from twostream_lib.errors import ConfigError, DataError
from twostream_lib.files import atomic_write

__all__ = ["GROUPS", "WIDTH", "HEIGHT", "make_rehearsal_set", "ucf101_test_groups", "cli_main"]

WIDTH, HEIGHT = 320, 240  # UCF101's frame size
#: One group in each split's test block (UCF101: split k tests groups 7(k-1)+1..7k) and one always trained.
GROUPS = (1, 8, 15, 22)
RECORD = "rehearsal.json"


def ucf101_test_groups(split: int) -> range:
    """The groups UCF101's split ``split`` tests (1-7, 8-14, 15-21; groups 22-25 are always trained)."""
    if split not in (1, 2, 3):
        raise ConfigError(f"split must be 1, 2 or 3, got {split!r}")
    return range(7 * (split - 1) + 1, 7 * split + 1)


def _render(class_name: str, group: int, *, frames: int, seed: int):
    video, _ = render_video(class_name, seed=seed, group=group, clip=1, size=WIDTH, frames=frames)
    top = (WIDTH - HEIGHT) // 2  # the discs and shapes lie within the middle 240 rows of the 320 px square
    return video[:, top:top + HEIGHT]


def _write_splits(root: Path, classes: Sequence[str]) -> None:
    split_dir = root / "splits"
    atomic_write(split_dir / "classInd.txt", "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for k in (1, 2, 3):
        tested = ucf101_test_groups(k)
        rel = [(f"{c}/{video_name(c, g, 1)}.avi", i + 1, g in tested) for i, c in enumerate(classes) for g in GROUPS]
        atomic_write(split_dir / f"trainlist0{k}.txt", "".join(f"{r} {label}\n" for r, label, test in rel if not test))
        atomic_write(split_dir / f"testlist0{k}.txt", "".join(f"{r}\n" for r, _, test in rel if test))


def make_rehearsal_set(root: str | Path, *, classes: int = 5, frames: int = 64, seed: int = 0, workers: int = 2,
                       progress: bool = True) -> Path:
    """Generate and prepare the rehearsal set under ``root`` (``<data_root>/ucf101``); returns ``root``.

    ``classes``: how many of the synthetic classes (the first ones, in label order); ``frames`` per
    video (25 fps). Idempotent: a set prepared with the same parameters is left as it is; one with
    other parameters is replaced; a non-empty folder that is not a rehearsal set is refused.
    """
    if not 1 <= classes <= len(CLASS_NAMES):
        raise ConfigError(f"rehearsal classes must be 1..{len(CLASS_NAMES)}, got {classes!r}")
    if frames < 16:
        raise ConfigError(f"rehearsal frames must be >= 16 (the synthetic motions need them), got {frames!r}")
    from twostream_lib.data.prepare import prepare_videos

    root = Path(root)
    params = {"classes": list(CLASS_NAMES[:classes]), "frames": frames, "seed": seed, "size": [WIDTH, HEIGHT],
              "groups": list(GROUPS)}
    try:
        record = json.loads((root / RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        record = None
    if record is not None and record.get("params") == params and record.get("prepared"):
        return root
    if record is None and root.is_dir() and any(root.iterdir()):
        raise DataError(f"{root} is not empty and holds no {RECORD}: refusing to write a rehearsal set into it; "
                        f"expected an empty or a new folder")
    for name in ("videos", "frames", "splits", RECORD):  # a set of other parameters: never mixed with this one
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    videos = []
    for c in params["classes"]:
        for g in GROUPS:
            videos.append(write_video(root / "videos" / c / f"{video_name(c, g, 1)}.avi",
                                      _render(c, g, frames=frames, seed=seed)))
    _write_splits(root, params["classes"])
    report = prepare_videos(videos, root / "frames", tvl1=dict(TVL1_FAST), workers=workers, progress=progress)
    if report.failed:
        name, reason = next(iter(report.failed.items()))
        raise DataError(f"preparing the rehearsal videos in {root / 'videos'} failed for {len(report.failed)} "
                        f"video(s), e.g. {name}: {reason}")
    atomic_write(root / RECORD, json.dumps({"params": params, "prepared": True}, indent=2) + "\n")
    return root


def cli_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m twostream_lib rehearsal", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["rehearsal"])
    p.add_argument("--root", type=Path, default=None,
                   help="where the set goes (default: the smoke profile's <data_root>/ucf101)")
    p.add_argument("--classes", type=int, default=None, help="how many classes (default: the smoke profile's)")
    p.add_argument("--frames", type=int, default=None, help="frames per video (default: the smoke profile's)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(list(argv))
    from twostream_lib.config import load_profile

    cfg = load_profile("smoke")
    root = args.root or cfg.data_dir / cfg.dataset
    try:
        make_rehearsal_set(root, classes=args.classes or cfg.rehearsal_classes,
                           frames=args.frames or cfg.rehearsal_frames, workers=args.workers)
    except (ConfigError, DataError) as e:
        print(f"error: {e}")
        return 2
    print(f"rehearsal set ready in {root}")
    return 0
