"""Listings: the videos a resource plan counts (:mod:`twostream_lib.plan`, issue 12).

A :class:`Listing` is every video of a data set with its RGB frame count, the size of its prepared frames
(short side 256, as ``python -m twostream_lib prepare`` scales them; Sec. 3.5) and the part of each
official split it belongs to. Three sources:

* :func:`data_listing`: the data present, read through the frame store and split files the experiments
  use (:class:`~twostream_lib.experiments.DataBundle`), with the bytes its frames and flow take on disk;
* :func:`read_listing`: a CSV, one line per video (docs/plan.md)::

      video,label,frames,width,height,split1,split2,split3
      v_ApplyEyeMakeup_g08_c01,ApplyEyeMakeup,121,320,240,train,train,test

  (width x height of the video, rescaled to the short side of 256 on reading; split k: train, test or
  empty for a video split k does not use, as HMDB51's 0 lines);
* :func:`ucf101_listing`: UCF101's 13,320 videos generated with the official split sizes, to plan a
  paper run before any data is fetched.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twostream_lib.config import Profile
from twostream_lib.errors import ConfigError, DataError

__all__ = ["ListedVideo", "Listing", "data_listing", "listing_for", "prepared_size", "read_listing", "ucf101_listing"]


@dataclass(frozen=True)
class ListedVideo:
    name: str
    label: str  # class
    frames: int  # RGB frames (flow: one fewer)
    width: int  # of the prepared frames (short side 256, as `prepare` scales them; Sec. 3.5)
    height: int
    parts: tuple[str, str, str]  # official split 1..3: "train", "test" or "" (not used, HMDB51)
    disk_bytes: int | None = None  # frames + flow on disk, measured (None: estimated from loading.json)


@dataclass(frozen=True)
class Listing:
    dataset: str
    videos: tuple[ListedVideo, ...]
    source: str  # said in the output

    def part(self, split: int, part: str) -> tuple[ListedVideo, ...]:
        return tuple(v for v in self.videos if v.parts[split - 1] == part)

    @property
    def classes(self) -> int:
        return len({v.label for v in self.videos})

    def save_csv(self, path) -> Path:
        """The CSV that :func:`read_listing` reads (width/height of the prepared frames)."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["video", "label", "frames", "width", "height", "split1", "split2", "split3"])
            w.writerows([v.name, v.label, v.frames, v.width, v.height, *v.parts] for v in self.videos)
        return Path(path)


def prepared_size(width: int, height: int, short_side: int = 256) -> tuple[int, int]:
    """(W, H) after ``prepare``'s rescaling to a short side of 256 (data.prepare.resize_short_side)."""
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def read_listing(path, dataset: str = "ucf101") -> Listing:
    """A CSV with columns ``video,label,frames,width,height,split1,split2,split3`` (split k: train, test
    or empty); width x height of the video, rescaled here to the prepared short side of 256."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        videos = tuple(ListedVideo(r["video"], r["label"], int(r["frames"]),
                                   *prepared_size(int(r["width"]), int(r["height"])),
                                   tuple((r.get(f"split{k}") or "").strip() for k in (1, 2, 3))) for r in rows)
    except FileNotFoundError:
        raise ConfigError(f"--listing {path}: no such file") from None
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"--listing {path}: expected columns video,label,frames,width,height,split1,split2,"
                          f"split3 with integer frames/width/height ({type(e).__name__}: {e})") from None
    bad = sorted({p for v in videos for p in v.parts} - {"train", "test", ""})
    if bad or not videos:
        raise ConfigError(f"--listing {path}: split columns hold train, test or nothing (found {bad}); "
                          f"{len(videos)} videos")
    return Listing(dataset, videos, f"listing {path} ({len(videos)} videos)")


def ucf101_listing(seed: int = 0) -> Listing:
    """UCF101's 13,320 videos in 101 classes with the official split sizes (data.splits), 320x240 video
    (341x256 prepared) and frame counts drawn from a lognormal around the published mean clip length of
    7.2 s at 25 fps (Soomro et al. 2012), at least 29 frames. Split k tests one band of videos (the
    official lists test groups 1-7, 8-14, 15-21); the fourth band (groups 22-25) always trains."""
    from twostream_lib.data.splits import OFFICIAL_NUM_CLASSES, OFFICIAL_SPLIT_SIZES
    sizes = OFFICIAL_SPLIT_SIZES["ucf101"]
    n = sum(sizes[1])
    rng = np.random.default_rng(seed)
    bands = np.repeat([0, 1, 2, 3], [sizes[1][1], sizes[2][1], sizes[3][1], n - sum(s[1] for s in sizes.values())])
    rng.shuffle(bands)
    sigma = 0.5
    frames = np.maximum(29, rng.lognormal(math.log(7.2 * 25) - sigma ** 2 / 2, sigma, n).round()).astype(int)
    classes = OFFICIAL_NUM_CLASSES["ucf101"]
    videos = tuple(ListedVideo(f"v_Class{i % classes:03d}_{i:05d}", f"Class{i % classes:03d}", int(frames[i]),
                               *prepared_size(320, 240), tuple("test" if b == k else "train" for k in range(3)))
                   for i, b in enumerate(bands))
    return Listing("ucf101", videos, f"generated UCF101 listing (seed {seed}): 13,320 videos, official split "
                                     f"sizes, mean {frames.mean():.0f} frames at 320x240")


def _disk_bytes(base, name: str) -> int:
    """Frames + flow of one video on disk: its folders (JPEG layouts) or its pack file."""
    from twostream_lib.data.stores import PACK_DIR, PACK_SUFFIX
    if not hasattr(base, "rgb_path"):
        return (Path(base.root) / PACK_DIR / f"{name}{PACK_SUFFIX}").stat().st_size
    folders = {base.rgb_path(name, 0).parent, base.flow_path(name, "u", 0).parent, base.flow_path(name, "v", 0).parent}
    return sum(e.stat().st_size for d in folders if d.is_dir() for e in os.scandir(d) if e.is_file())


def data_listing(data, *, sample: int = 500) -> Listing:
    """The videos of a :class:`~twostream_lib.experiments.DataBundle` (its three splits, as the experiments
    read them): frame counts from the store; frame size and disk bytes measured on up to ``sample`` videos
    evenly spread (every video when fewer), the others taking their nearest measured one's (per frame)."""
    parts: dict[str, list] = {}
    for k in (1, 2, 3):
        try:
            s = data.split(k)
        except DataError:
            continue  # a split none of whose videos is present (smoke data)
        for part, items in (("train", s.train), ("test", s.test)):
            for v in items:
                parts.setdefault(v.name, [v.class_name, "", "", ""])[k] = part
    names = list(parts)
    store = getattr(data.store, "store", data.store)  # under a DecodedCache, which would decode whole videos
    step, measured, videos = max(1, -(-len(names) // sample)), {}, []
    for i, name in enumerate(names):
        frames = store.num_frames(name)
        j = i - i % step
        if j not in measured:
            h, w = store.read_rgb(names[j], [0]).shape[1:3]
            measured[j] = (w, h, _disk_bytes(store, names[j]) / max(1, store.num_frames(names[j])))
        w, h, per_frame = measured[j]
        videos.append(ListedVideo(name, parts[name][0], frames, w, h, tuple(parts[name][1:]), round(per_frame * frames)))
    return Listing(data.dataset, tuple(videos), f"data present in {data.frames_root} ({len(names)} videos; sizes and "
                                                f"disk bytes measured on {len(measured)})")


def listing_for(cfg: Profile) -> Listing:
    """The profile's data set as present (generated first for the synthetic set)."""
    from twostream_lib.experiments.data import prepare_data
    return data_listing(prepare_data(cfg))
