"""Videos -> RGB frames and TV-L1 optical flow, stored as JPEG (paper Sec. 3.5).

"The network input is rescaled beforehand, so that the smallest side of the frame equals 256. We also
pre-compute the optical flow before training and store the flow fields as JPEG images (with clipping
of displacement vectors larger than 20 pixels)." The flow is TV-L1 [Zach et al. 2007, ref. 37], here
OpenCV's ``DualTVL1OpticalFlow`` with its default parameters unless asked otherwise, computed on the
grey, resized frames between consecutive frames: N frames give N-1 flow frames. Each component is
clipped to +-20 px and mapped linearly to 0..255 (``round((f + 20) * 255 / 40)``, so 0 px -> 128).

Output (``out_root``), readable with ``stores.open_store(out_root)``::

    jpegs_256/<video>/frame%06d.jpg            RGB, short side ``short_side`` (the folder name is fixed)
    tvl1_flow/{u,v}/<video>/frame%06d.jpg      quantised flow, grey JPEG
    packed/<video>.pack                        instead of the three folders above with ``packed=True``
    .done/<video>.json                         written last: the video is finished (frame counts)
    prepare.json                               the settings; a later run must use the same ones

Frames are counted by decoding (container headers can be wrong: the real HMDB51 clip in the tests says
409 frames and decodes to 408). Work is spread over processes (the platform's default start method,
as for torch's DataLoader); OpenCV runs single-threaded in each, so the flow does not depend on the
number of workers or cores. A video is first written under ``.tmp/<video>`` and moved into place,
its marker last, so an interrupted run redoes only unfinished videos. ``shard=(i, N)`` takes every
N-th video (sorted by name) from the i-th (0-based), for array jobs on a cluster. Videos that cannot
be decoded are reported by name at the end; the rest go on.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from twostream_lib.data.stores import FLOW_DIR, PACK_DIR, PACK_SUFFIX, RGB_DIR, write_pack
from twostream_lib.errors import ConfigError, DataError
from twostream_lib.files import atomic_write_json

FLOW_BOUND = 20.0  # px, Sec. 3.5
SHORT_SIDE = 256  # px, Sec. 3.5
JPEG_QUALITY = 95
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv")
DONE_DIR, TMP_DIR, META_FILE = ".done", ".tmp", "prepare.json"

#: Named TV-L1 settings. "default" = OpenCV's defaults (5 scales, 5 warps, 30 inner x 10 outer
#: iterations); "fast" = 2 scales, 1 warp, 10 x 3 iterations: about 10x faster and still recovers a
#: 3 px shift at 48x48 (DESIGN.md feasibility notes); used for the synthetic demo set.
TVL1_PRESETS: dict[str, dict] = {
    "default": {},
    "fast": {"nscales": 2, "warps": 1, "inner_iterations": 10, "outer_iterations": 3},
}
_TVL1_PARAMS = {  # parameter name -> OpenCV setter / getter suffix
    "tau": "Tau",
    "lambda": "Lambda",
    "theta": "Theta",
    "nscales": "ScalesNumber",
    "warps": "WarpingsNumber",
    "epsilon": "Epsilon",
    "inner_iterations": "InnerIterations",
    "outer_iterations": "OuterIterations",
    "scale_step": "ScaleStep",
    "gamma": "Gamma",
    "median_filtering": "MedianFiltering",
}


# ---- flow quantisation (Sec. 3.5) --------------------------------------------------------


def flow_to_uint8(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Clip displacements to +-``bound`` px and map linearly to 0..255: ``round((f + b) * 255 / 2b)``."""
    _check_bound(bound)
    scaled = (np.clip(np.asarray(flow, np.float32), -bound, bound) + bound) * np.float32(255.0 / (2 * bound))
    return np.rint(scaled).astype(np.uint8)


def uint8_to_flow(q: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Inverse of ``flow_to_uint8`` (float32 px); the round trip is exact to ``bound / 255`` px."""
    _check_bound(bound)
    return np.asarray(q, np.float32) * np.float32(2 * bound / 255.0) - np.float32(bound)


def _check_bound(bound: float) -> None:
    if not bound > 0:
        raise ConfigError(f"flow bound must be > 0 px, got {bound!r}")


# ---- TV-L1 -------------------------------------------------------------------------------


def resolve_tvl1(tvl1: dict | None = None) -> dict:
    """Every TV-L1 parameter value: OpenCV's defaults, then ``tvl1["preset"]``, then explicit keys.

    ``tvl1`` is None (defaults), ``{"preset": "fast"}``, or explicit parameters (keys of
    ``_TVL1_PARAMS``), optionally on top of a preset. Unknown names raise ConfigError.
    """
    tvl1 = dict(tvl1 or {})
    preset = tvl1.pop("preset", "default")
    if preset not in TVL1_PRESETS:
        raise ConfigError(f"unknown TV-L1 preset {preset!r}; expected one of {sorted(TVL1_PRESETS)}")
    unknown = sorted(set(tvl1) - set(_TVL1_PARAMS))
    if unknown:
        raise ConfigError(f"unknown TV-L1 parameter(s) {unknown}; expected some of {sorted(_TVL1_PARAMS)}")
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    params = {name: getattr(algo, "get" + suffix)() for name, suffix in _TVL1_PARAMS.items()}
    params.update(TVL1_PRESETS[preset])
    params.update(tvl1)
    return {k: (round(float(v), 6) if isinstance(v, float) else int(v)) for k, v in params.items()}


def create_tvl1(tvl1: dict | None = None):
    """An OpenCV ``DualTVL1OpticalFlow`` configured by ``resolve_tvl1(tvl1)``."""
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    for name, value in resolve_tvl1(tvl1).items():
        getattr(algo, "set" + _TVL1_PARAMS[name])(value)
    return algo


@contextlib.contextmanager
def _single_threaded_cv2():
    """OpenCV on one thread: flow then does not depend on the machine's core count."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


# ---- one video ---------------------------------------------------------------------------


def resize_short_side(frame: np.ndarray, short_side: int | None) -> np.ndarray:
    """Rescale so that the shorter side is ``short_side`` px, keeping the aspect ratio (Sec. 3.5).

    ``None`` or 0 keeps the frame as it is. 320x240 becomes 341x256.
    """
    if not short_side:
        return frame
    if short_side < 0:
        raise ConfigError(f"short_side must be a positive number of pixels (or 0 to keep), got {short_side}")
    h, w = frame.shape[:2]
    scale = short_side / min(h, w)
    if scale == 1:
        return frame
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def iter_video_frames(path: str | Path):
    """Decode ``path`` frame by frame (BGR uint8) until the decoder stops; DataError if unopenable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video {path} does not exist")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"video {path} cannot be opened (corrupt or unsupported format)")
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            yield frame
    finally:
        cap.release()


def header_frame_count(path: str | Path) -> int:
    """The frame count the container header claims (can be wrong; used only for the record)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DataError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


@dataclass
class VideoJpegs:
    """JPEG bytes of one prepared video: N RGB frames, N-1 u and v flow frames."""

    rgb: list[bytes] = field(default_factory=list)
    u: list[bytes] = field(default_factory=list)
    v: list[bytes] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)  # (width, height) of the stored frames


def extract_video(
    path: str | Path,
    *,
    short_side: int | None = SHORT_SIDE,
    tvl1: dict | None = None,
    bound: float = FLOW_BOUND,
    quality: int = JPEG_QUALITY,
) -> VideoJpegs:
    """Decode, resize and encode every frame of ``path``, and the TV-L1 flow between consecutive frames.

    Flow is computed on the resized grey frames, so it is in the stored frames' pixels. Raises
    DataError for a video that cannot be opened or has fewer than 2 decodable frames.
    """
    algo = create_tvl1(tvl1)
    out, previous = VideoJpegs(), None
    with _single_threaded_cv2():
        for frame in iter_video_frames(path):
            frame = resize_short_side(frame, short_side)
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            if previous is not None and previous.shape != grey.shape:
                raise DataError(f"video {path}: frame {len(out.rgb)} changes size {previous.shape} -> {grey.shape}")
            out.rgb.append(_encode_jpeg(frame, quality))
            if previous is not None:
                q = flow_to_uint8(algo.calc(previous, grey, None), bound)
                out.u.append(_encode_jpeg(q[..., 0], quality))
                out.v.append(_encode_jpeg(q[..., 1], quality))
            previous = grey
    if len(out.rgb) < 2:
        raise DataError(f"video {path}: {len(out.rgb)} decodable frame(s); at least 2 are needed for optical flow")
    out.size = (previous.shape[1], previous.shape[0])
    return out


def prepare_video(
    path: str | Path,
    out_root: str | Path,
    *,
    name: str | None = None,
    short_side: int | None = SHORT_SIDE,
    tvl1: dict | None = None,
    packed: bool = False,
    bound: float = FLOW_BOUND,
    quality: int = JPEG_QUALITY,
) -> int:
    """Prepare one video into ``out_root`` (layout in the module docstring); returns its frame count.

    Replaces any earlier partial output of this video and writes the ``.done`` marker last.
    """
    path, out_root = Path(path), Path(out_root)
    name = name or path.stem
    jpegs = extract_video(path, short_side=short_side, tvl1=tvl1, bound=bound, quality=quality)
    _done_path(out_root, name).unlink(missing_ok=True)
    if packed:
        write_pack(out_root / PACK_DIR / f"{name}{PACK_SUFFIX}", jpegs.rgb, jpegs.u, jpegs.v)
    else:
        _write_jpeg_folders(out_root, name, jpegs)
    info = {
        "video": str(path),
        "frames": len(jpegs.rgb),
        "flow_frames": len(jpegs.u),
        "header_frames": header_frame_count(path),
        "size": list(jpegs.size),
    }
    _write_json(_done_path(out_root, name), info)
    return len(jpegs.rgb)


def _write_jpeg_folders(out_root: Path, name: str, jpegs: VideoJpegs) -> None:
    """Write the three frame folders under ``.tmp/<name>`` and move each into place."""
    tmp = out_root / TMP_DIR / name
    shutil.rmtree(tmp, ignore_errors=True)
    targets = {
        "rgb": (jpegs.rgb, out_root / RGB_DIR / name),
        "u": (jpegs.u, out_root / FLOW_DIR / "u" / name),
        "v": (jpegs.v, out_root / FLOW_DIR / "v" / name),
    }
    for sub, (blobs, _) in targets.items():
        (tmp / sub).mkdir(parents=True)
        for i, blob in enumerate(blobs):
            (tmp / sub / f"frame{i + 1:06d}.jpg").write_bytes(blob)
    for sub, (_, final) in targets.items():
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / sub, final)
    tmp.rmdir()


def _done_path(out_root: Path, name: str) -> Path:
    return out_root / DONE_DIR / f"{name}.json"


def _write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj)


def is_done(out_root: str | Path, name: str) -> bool:
    """Whether ``name`` was completely prepared into ``out_root`` (its marker exists)."""
    return _done_path(Path(out_root), name).is_file()


# ---- many videos -------------------------------------------------------------------------


@dataclass
class PrepareReport:
    """What ``prepare_videos`` did: video name -> RGB frame count / reason."""

    out_root: Path
    done: dict[str, int] = field(default_factory=dict)  # prepared now: name -> frames
    skipped: dict[str, str] = field(default_factory=dict)  # finished by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # name -> why
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        lines = [
            f"prepared {len(self.done)} video(s), skipped {len(self.skipped)} already done, "
            f"{len(self.failed)} failed, in {self.seconds:.1f} s -> {self.out_root}"
        ]
        lines += [f"  FAILED {name}: {reason}" for name, reason in sorted(self.failed.items())]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Job:
    path: str
    name: str
    out_root: str
    options: dict  # keyword arguments of prepare_video


def prepare_videos(
    videos: Sequence[Path],
    out_root: Path,
    *,
    short_side: int = SHORT_SIDE,
    tvl1: dict | None = None,
    packed: bool = False,
    workers: int = 2,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    bound: float = FLOW_BOUND,
    quality: int = JPEG_QUALITY,
    start_method: str | None = None,
) -> PrepareReport:
    """Prepare every video (frames + TV-L1 flow, Sec. 3.5) into ``out_root``; see the module docstring.

    Videos already finished are skipped; failures are collected in the report, not raised. Raises
    ConfigError for bad settings, duplicate video names, or settings that differ from those
    ``out_root`` was prepared with.
    """
    start = time.perf_counter()
    out_root = Path(out_root)
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    settings = _settings_record(short_side, tvl1, packed, bound, quality)
    jobs = _select_shard(_named_videos(videos), shard)
    out_root.mkdir(parents=True, exist_ok=True)
    _check_or_write_settings(out_root, settings)
    report = PrepareReport(out_root=out_root)
    options = {"short_side": short_side, "tvl1": tvl1, "packed": packed, "bound": bound, "quality": quality}
    todo = []
    for name, path in jobs:
        if is_done(out_root, name):
            report.skipped[name] = "already done"
        else:
            todo.append(_Job(str(path), name, str(out_root), options))
    with tqdm(total=len(todo), desc="prepare", unit="video", disable=not progress) as bar:
        for name, error, frames in _run_jobs(todo, workers, start_method):
            if error is None:
                report.done[name] = frames
            else:
                report.failed[name] = error
            bar.update()
    with contextlib.suppress(OSError):  # empty unless a concurrent shard is still working
        (out_root / TMP_DIR).rmdir()
    report.seconds = time.perf_counter() - start
    return report


def _named_videos(videos: Sequence[Path]) -> list[tuple[str, Path]]:
    """(stem, path) pairs sorted by name; two videos with the same stem would overwrite each other."""
    by_name: dict[str, Path] = {}
    for video in videos:
        path = Path(video)
        if path.stem in by_name and by_name[path.stem] != path:
            raise ConfigError(f"two videos share the name {path.stem!r}: {by_name[path.stem]} and {path}")
        by_name[path.stem] = path
    return sorted(by_name.items())


def _select_shard(items: list, shard: tuple[int, int] | None) -> list:
    """Every N-th item starting at i (0-based) for ``shard=(i, N)``."""
    if shard is None:
        return items
    i, n = _check_shard(shard)
    return items[i::n]


def _check_shard(shard) -> tuple[int, int]:
    try:
        i, n = shard
    except (TypeError, ValueError):
        raise ConfigError(f"shard must be a pair (i, N), got {shard!r}") from None
    if not (isinstance(i, int) and isinstance(n, int) and n >= 1 and 0 <= i < n):
        raise ConfigError(f"shard must be (i, N) with 0 <= i < N, got {shard!r}")
    return i, n


def _settings_record(short_side, tvl1, packed, bound, quality) -> dict:
    _check_bound(bound)
    if short_side is not None and short_side < 0:
        raise ConfigError(f"short_side must be >= 0 px, got {short_side}")
    if not 1 <= int(quality) <= 100:
        raise ConfigError(f"JPEG quality must be in 1..100, got {quality}")
    return {
        "short_side": int(short_side or 0),
        "tvl1": resolve_tvl1(tvl1),
        "flow_bound": float(bound),
        "jpeg_quality": int(quality),
        "packed": bool(packed),
        "opencv": cv2.__version__,
    }


def _check_or_write_settings(out_root: Path, settings: dict) -> None:
    """A resumed run must use the settings of the first one (the OpenCV version may differ)."""
    meta = out_root / META_FILE
    if meta.is_file():
        old = json.loads(meta.read_text())
        differ = sorted(k for k in settings if k != "opencv" and old.get(k) != settings[k])
        if differ:
            raise ConfigError(
                f"{out_root} was prepared with different settings ({', '.join(differ)}): "
                f"{ {k: old.get(k) for k in differ} } vs now { {k: settings[k] for k in differ} }; "
                f"use another output folder or the same settings"
            )
        return
    _write_json(meta, settings)


def _run_jobs(jobs: list[_Job], workers: int, start_method: str | None = None):
    """Yield (name, error or None, frames) per job, in-process or over ``workers`` processes.

    ``start_method`` None is the platform's default (as for torch's DataLoader); the worker is a
    top-level function, so "spawn" and "forkserver" work too (from an importable ``__main__``).
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _run_job(job)
        return
    context = multiprocessing.get_context(start_method)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context, initializer=_init_worker)
    try:
        futures = {pool.submit(_run_job, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:  # a worker died (e.g. a decoder crash): report, go on
                yield futures[future].name, "worker process died before finishing; run again to retry", 0
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _run_job(job: _Job) -> tuple[str, str | None, int]:
    """Worker entry point (top level, so spawn can import it): never raises, reports the error."""
    try:
        return job.name, None, prepare_video(job.path, job.out_root, name=job.name, **job.options)
    except Exception as err:  # reported by name at the end; the other videos go on
        shutil.rmtree(Path(job.out_root) / TMP_DIR / job.name, ignore_errors=True)
        reason = str(err) if isinstance(err, (DataError, ConfigError)) else f"{type(err).__name__}: {err}"
        return job.name, reason, 0


# ---- inputs and command line -------------------------------------------------------------


def find_videos(source: str | Path, *, video_root: str | Path | None = None) -> list[Path]:
    """Video files in folder ``source`` (recursively), or listed in text file ``source``.

    A list has one path per line (extra columns such as UCF101 labels are ignored, ``#`` starts a
    comment); relative paths are taken relative to ``video_root`` (default: the list's folder).
    """
    source = Path(source)
    if source.is_dir():
        found = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if not found:
            raise DataError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {source}")
        return found
    if not source.is_file():
        raise DataError(f"{source} is neither a folder of videos nor a text file listing videos")
    base = Path(video_root) if video_root else source.parent
    paths = []
    for line in source.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            p = Path(line.split()[0].replace("\\", "/"))
            paths.append(p if p.is_absolute() else base / p)
    if not paths:
        raise DataError(f"video list {source} names no videos")
    return paths


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N), 0 <= i < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    return _check_shard((i, n))


def cli_main(argv: list[str]) -> int:
    """``python -m twostream_lib prepare VIDEO_DIR_OR_LIST OUT_DIR [options]``; exit 1 if any video failed."""
    parser = argparse.ArgumentParser(
        prog="python -m twostream_lib prepare",
        description="Videos -> RGB frames (short side 256) + TV-L1 flow clipped to +-20 px, as JPEG "
        "in the authors' layout (jpegs_256/, tvl1_flow/u, tvl1_flow/v) or packed per video. "
        "Resumable; finished videos are skipped.",
    )
    parser.add_argument("source", help="folder of videos (searched recursively) or a text file listing them")
    parser.add_argument("out_dir", help="output folder (frame store root)")
    parser.add_argument("--short-side", type=int, default=SHORT_SIDE, help="resize so the short side is this (0: keep)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--shard", default=None, help="i/N: only every N-th video from the i-th (0-based)")
    parser.add_argument("--packed", action="store_true", help="one packed file per video instead of JPEG folders")
    parser.add_argument("--tvl1-preset", choices=sorted(TVL1_PRESETS), default="default")
    parser.add_argument("--video-root", default=None, help="base of relative paths in a list (default: its folder)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv[1:])
    try:
        shard = parse_shard(args.shard) if args.shard else None
        videos = find_videos(args.source, video_root=args.video_root)
        report = prepare_videos(
            videos, Path(args.out_dir), short_side=args.short_side, tvl1={"preset": args.tvl1_preset},
            packed=args.packed, workers=args.workers, shard=shard, progress=not args.quiet,
        )
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to finish (finished videos are kept)", file=sys.stderr)
        return 130
    print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    return 0 if report.ok else 1
