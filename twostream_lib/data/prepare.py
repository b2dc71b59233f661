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
    .done/<video>.json                         written last, from the frames found on disk after the move
    prepare.json                               the settings; a later run must use the same ones
    .prepare.lock                              held by the run writing here (see below)

Frames are counted by decoding (container headers can be wrong: the real HMDB51 clip in the tests says
409 frames and decodes to 408). A video that decodes to fewer frames than its header announces, by more
than ``max(2, 2%)`` (``allowed_shortfall``), is probably truncated and fails by name unless
``allow_short``, which records ``"short": true`` in its marker. Work is spread over processes (the
platform's default start method, as for torch's DataLoader); OpenCV runs single-threaded in each, so
the flow does not depend on the number of workers or cores.

Faults it survives (tests/test_faults_prepare.py):

- a second run on the same output refuses, naming the pid and host of the run holding the lock (an
  ``flock`` on ``.prepare.lock``, released by the kernel when its holder exits, killed or not); shards
  (``shard=(i, N)``: every N-th video, sorted by name, from the i-th, for array jobs on a cluster)
  share an output, each shard running at most once;
- a killed or interrupted run: each run writes under its own ``.tmp/<host>-<pid>/`` (one folder per
  video, so no two processes share one) and moves a video into place, its marker last, so a re-run
  redoes only unfinished videos (a whole run first clears what killed runs left in ``.tmp``); workers
  die with the main process (Linux ``PR_SET_PDEATHSIG``, elsewhere a thread watching the parent), and
  SIGTERM or SIGINT cancel pending videos, stop the workers and remove the temporary folders;
- frames changed behind a marker's back: ``stores`` and ``verify`` check every marker against the disk,
  and a re-run redoes a video whose marker disagrees;
- a full disk: an error naming the file (``StorageError``), no temporary file left, the run stopped;
- slow TV-L1 (hard frames run all its iterations: 10-46 s per pair seen on a shaky HMDB51 clip, against
  ~0.5 s usually): videos slower than ``slow_seconds`` per frame pair are reported with their time. Cap
  the work with the iteration parameters (``tvl1={"outer_iterations": 3, "inner_iterations": 10}``, CLI
  ``--tvl1 outer_iterations=3``): at most nscales x warps x outer x inner iterations per pair. A cap on
  iterations, not on time, which would make the flow depend on the machine.

Videos that cannot be decoded are reported by name at the end; the rest go on.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from twostream_lib.data.stores import (
    DONE_DIR,
    FLOW_DIR,
    PACK_DIR,
    PACK_SUFFIX,
    PREPARE_RECORD,
    RGB_DIR,
    frames_on_disk,
    marker_problem,
    write_pack,
)
from twostream_lib.errors import ConfigError, DataError, StorageError
from twostream_lib.files import STORAGE_ERRNOS, atomic_write, atomic_write_json
from twostream_lib.paper import HYPERPARAMETERS as HP

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

FLOW_BOUND = HP["flow_bound"]  # px, Sec. 3.5
SHORT_SIDE = HP["short_side"]  # px, Sec. 3.5
JPEG_QUALITY = 95
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv")
TMP_DIR, META_FILE, LOCK_FILE = ".tmp", PREPARE_RECORD, ".prepare.lock"
#: Report videos whose TV-L1 takes longer per frame pair (s): 10x the ~0.5 s CPU per pair of the default
#: settings at 256 px recorded in results/benchmarks/flow.json.
SLOW_SECONDS = 5.0

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
    params = {k: (round(float(v), 6) if isinstance(v, float) else int(v)) for k, v in params.items()}
    low = sorted(k for k in ("nscales", "warps", "inner_iterations", "outer_iterations") if params[k] < 1)
    if low:
        raise ConfigError(f"TV-L1 parameter(s) {low} must be >= 1, got {[params[k] for k in low]}")
    return params



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
    flow_seconds: float = 0.0  # wall time spent in TV-L1

    @property
    def seconds_per_pair(self) -> float:
        return self.flow_seconds / max(1, len(self.u))


def extract_video(
    path: str | Path,
    *,
    short_side: int | None = SHORT_SIDE,
    tvl1: dict | None = None,
    bound: float = FLOW_BOUND,
    quality: int = JPEG_QUALITY,
    slow_seconds: float | None = None,
) -> VideoJpegs:
    """Decode, resize and encode every frame of ``path``, and the TV-L1 flow between consecutive frames.

    Flow is computed on the resized grey frames, so it is in the stored frames' pixels. Raises
    DataError for a video that cannot be opened or has fewer than 2 decodable frames. With
    ``slow_seconds``, a video whose flow takes longer per frame pair is announced on stderr while it
    runs (after 2 pairs), since a slow video can take hours before its report.
    """
    algo = create_tvl1(tvl1)
    out, previous, warned = VideoJpegs(), None, slow_seconds is None
    with _single_threaded_cv2():
        for frame in iter_video_frames(path):
            frame = resize_short_side(frame, short_side)
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            if previous is not None and previous.shape != grey.shape:
                raise DataError(f"video {path}: frame {len(out.rgb)} changes size {previous.shape} -> {grey.shape}")
            out.rgb.append(_encode_jpeg(frame, quality))
            if previous is not None:
                t0 = time.perf_counter()
                flow = algo.calc(previous, grey, None)
                out.flow_seconds += time.perf_counter() - t0
                q = flow_to_uint8(flow, bound)
                out.u.append(_encode_jpeg(q[..., 0], quality))
                out.v.append(_encode_jpeg(q[..., 1], quality))
                if not warned and len(out.u) >= 2 and out.seconds_per_pair > slow_seconds:
                    warned = True
                    print(f"note: {Path(path).name} is slow: {out.seconds_per_pair:.1f} s per frame pair so far "
                          f"(threshold {slow_seconds:g} s); see --tvl1 to cap TV-L1's iterations", file=sys.stderr)
            previous = grey
    if len(out.rgb) < 2:
        raise DataError(f"video {path}: {len(out.rgb)} decodable frame(s); at least 2 are needed for optical flow")
    out.size = (previous.shape[1], previous.shape[0])
    return out


def allowed_shortfall(header_frames: int) -> int:
    """Frames a video may decode short of its header's count: max(2, 2%). Headers are often off by one
    or two (HMDB51's 409 vs 408) or estimated from the duration; a truncated copy misses far more."""
    return max(2, round(0.02 * header_frames))


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
    allow_short: bool = False,
    slow_seconds: float | None = None,
    tmp: str | Path | None = None,
) -> int:
    """Prepare one video into ``out_root`` (layout in the module docstring); returns its frame count.

    Replaces any earlier output of this video and writes the ``.done`` marker last, from the frames
    found on disk. DataError when the video decodes short of its header (unless ``allow_short``) or
    when the frames on disk after the move are not those written (another process writing there).
    ``tmp`` is the private folder to write in (default ``.tmp/<host>-<pid>/<name>``). Takes no lock:
    ``prepare_videos`` does.
    """
    return _prepare(path, out_root, name=name, short_side=short_side, tvl1=tvl1, packed=packed, bound=bound,
                    quality=quality, allow_short=allow_short, slow_seconds=slow_seconds, tmp=tmp)["frames"]


def _prepare(path, out_root, *, name, short_side, tvl1, packed, bound, quality, allow_short, slow_seconds,
             tmp) -> dict:
    """``prepare_video``; returns the marker it wrote."""
    path, out_root = Path(path), Path(out_root)
    name = name or path.stem
    tmp = Path(tmp) if tmp else out_root / TMP_DIR / _process_tag() / name
    jpegs = extract_video(path, short_side=short_side, tvl1=tvl1, bound=bound, quality=quality,
                          slow_seconds=slow_seconds)
    header = header_frame_count(path)
    short = header - len(jpegs.rgb) > allowed_shortfall(header)
    if short and not allow_short:
        raise DataError(f"video {path}: decoded {len(jpegs.rgb)} of the {header} frames its header announces "
                        f"(more than {allowed_shortfall(header)} short): probably truncated; "
                        f"allow_short=True (--allow-short) accepts it")
    done = _done_path(out_root, name)
    done.unlink(missing_ok=True)
    if packed:
        write_pack(out_root / PACK_DIR / f"{name}{PACK_SUFFIX}", jpegs.rgb, jpegs.u, jpegs.v)
    else:
        _write_jpeg_folders(out_root, name, jpegs, tmp)
    found = frames_on_disk(out_root, name, packed=packed)
    if (found.rgb, found.flow) != (len(jpegs.rgb), len(jpegs.u)):
        raise DataError(f"video {name}: {len(jpegs.rgb)} RGB frames and {len(jpegs.u)} flow frames were written "
                        f"to {out_root}, but {found.rgb} and {found.flow} are there after the move: is another "
                        f"process writing this folder? Not marked done")
    info = {
        "video": str(path),
        "frames": found.rgb,  # what a reader will find, not what was held in memory
        "flow_frames": found.flow,
        "header_frames": header,
        "short": short,
        "size": list(jpegs.size),
        "seconds_per_pair": round(jpegs.seconds_per_pair, 4),
    }
    atomic_write_json(done, info)
    return info


def _write_jpeg_folders(out_root: Path, name: str, jpegs: VideoJpegs, tmp: Path) -> None:
    """Write the three frame folders under the private folder ``tmp`` and move each into place."""
    shutil.rmtree(tmp, ignore_errors=True)
    targets = {
        "rgb": (jpegs.rgb, out_root / RGB_DIR / name),
        "u": (jpegs.u, out_root / FLOW_DIR / "u" / name),
        "v": (jpegs.v, out_root / FLOW_DIR / "v" / name),
    }
    for sub, (blobs, _) in targets.items():
        (tmp / sub).mkdir(parents=True)
        for i, blob in enumerate(blobs):  # no fsync per frame: the folder is private until moved
            atomic_write(tmp / sub / f"frame{i + 1:06d}.jpg", blob, fsync=False)
    for sub, (_, final) in targets.items():
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / sub, final)
    tmp.rmdir()
    _remove_empty(tmp.parent, out_root / TMP_DIR)


def _remove_empty(*folders: Path) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _process_tag() -> str:
    """``<host>-<pid>``: names this process's temporary folder (hosts may share a cluster file system)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _done_path(out_root: Path, name: str) -> Path:
    return out_root / DONE_DIR / f"{name}.json"


def is_done(out_root: str | Path, name: str, *, packed: bool = False) -> bool:
    """Whether ``name`` was completely prepared into ``out_root``: its marker exists and agrees with the disk."""
    out_root = Path(out_root)
    if not _done_path(out_root, name).is_file():
        return False
    try:
        return marker_problem(out_root, name, frames_on_disk(out_root, name, packed=packed)) is None
    except DataError:  # an unreadable pack
        return False


# ---- the output lock ---------------------------------------------------------------------


@contextlib.contextmanager
def lock_output(out_root: str | Path, *, shard: tuple[int, int] | None = None):
    """Hold prepare's lock on ``out_root``: exclusive for a whole run; for shard (i, N), shared with the
    other shards plus an exclusive lock of its own, so shards of one output run side by side, each once.

    A run that finds the lock held raises DataError naming the holder's pid and host. The lock is an
    ``flock`` on ``.prepare.lock``: the kernel releases it when its holder exits, even when killed, so a
    crash leaves no stale lock (worker processes forked by the holder hold it too, until they exit).
    The holder writes who it is into the lock file itself (not through ``atomic_write``, which would
    replace the file and with it the lock).
    """
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        print("note: no file locking on this platform: do not run two prepare on one folder", file=sys.stderr)
        yield
        return
    files = [(out_root / LOCK_FILE, shard is not None)]  # (file, shared)
    if shard is not None:
        i, n = _check_shard(shard)
        files.append((out_root / f"{LOCK_FILE}.shard-{i}-of-{n}", False))
    me = f"pid {os.getpid()} on {socket.gethostname()}" + (f" (shard {shard[0]}/{shard[1]})" if shard else "")
    with contextlib.ExitStack() as stack:
        for path, shared in files:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DataError(f"{out_root} is being prepared by {_lock_holders(out_root)}; wait for it to finish "
                                f"or use another output folder (lock: {path})") from None
            if not shared:
                os.ftruncate(fd, 0)
                os.write(fd, f"{me} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
                stack.callback(os.ftruncate, fd, 0)  # released cleanly: nobody holds it
        yield


def _lock_holders(out_root: Path) -> str:
    """Who holds the locks of ``out_root``, from the lock files (holders on this host that are gone skipped)."""
    found = []
    for path in sorted(out_root.glob(LOCK_FILE + "*")):
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                m = re.match(r"pid (\d+) on (\S+)", line)
                if m and not (m.group(2) == socket.gethostname() and not _pid_alive(int(m.group(1)))):
                    found.append(line)
    return ", ".join(found) or "another run (its pid was not written yet)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


# ---- many videos -------------------------------------------------------------------------


@dataclass
class PrepareReport:
    """What ``prepare_videos`` did: video name -> RGB frame count / reason."""

    out_root: Path
    done: dict[str, int] = field(default_factory=dict)  # prepared now: name -> frames
    skipped: dict[str, str] = field(default_factory=dict)  # finished by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # name -> why
    short: dict[str, str] = field(default_factory=dict)  # accepted with allow_short: name -> "decoded/header"
    slow: dict[str, float] = field(default_factory=dict)  # name -> TV-L1 seconds per frame pair, above slow_seconds
    slow_seconds: float | None = SLOW_SECONDS
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
        lines += [f"  SHORT {name}: decoded {frames} frames its header announces (accepted: allow_short)"
                  for name, frames in sorted(self.short.items())]
        lines += [f"  SLOW {name}: {sec:.2f} s per frame pair (threshold {self.slow_seconds:g} s; --tvl1 caps "
                  f"TV-L1's iterations)" for name, sec in sorted(self.slow.items())]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Job:
    path: str
    name: str
    out_root: str
    tmp: str  # this run's private folder for the video
    options: dict  # keyword arguments of prepare_video


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT reached ``prepare_videos``: the pool was shut down, finished videos are kept."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


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
    allow_short: bool = False,
    slow_seconds: float | None = SLOW_SECONDS,
) -> PrepareReport:
    """Prepare every video (frames + TV-L1 flow, Sec. 3.5) into ``out_root``; see the module docstring.

    Videos already finished are skipped; failures are collected in the report, not raised. Raises
    ConfigError for bad settings, duplicate video names, or settings that differ from those
    ``out_root`` was prepared with; DataError when another run holds ``out_root``; StorageError
    (naming the file) when the disk is full, which stops the run; ``Interrupted`` on SIGTERM/SIGINT.
    """
    start = time.perf_counter()
    out_root = Path(out_root)
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    settings = _settings_record(short_side, tvl1, packed, bound, quality)
    jobs = _select_shard(_named_videos(videos), shard)
    with lock_output(out_root, shard=shard), _signals_interrupt():
        if shard is None:  # nobody else writes here: what is in .tmp was left by killed runs
            shutil.rmtree(out_root / TMP_DIR, ignore_errors=True)
        _check_or_write_settings(out_root, settings)
        report = PrepareReport(out_root=out_root, slow_seconds=slow_seconds)
        run_tmp = out_root / TMP_DIR / _process_tag()
        options = {"short_side": short_side, "tvl1": tvl1, "packed": packed, "bound": bound, "quality": quality,
                   "allow_short": allow_short, "slow_seconds": slow_seconds}
        todo = []
        for name, path in jobs:
            if is_done(out_root, name, packed=packed):
                report.skipped[name] = "already done"
            else:
                todo.append(_Job(str(path), name, str(out_root), str(run_tmp / name), options))
        try:
            with tqdm(total=len(todo), desc="prepare", unit="video", disable=not progress) as bar, \
                    contextlib.closing(_run_jobs(todo, workers, start_method)) as results:
                for name, error, info in results:
                    if error is not None:
                        report.failed[name] = error
                    else:
                        report.done[name] = info["frames"]
                        if info["short"]:
                            report.short[name] = f"{info['frames']} of the {info['header_frames']}"
                        if slow_seconds is not None and info["seconds_per_pair"] > slow_seconds:
                            report.slow[name] = info["seconds_per_pair"]
                    bar.update()
        finally:
            shutil.rmtree(run_tmp, ignore_errors=True)
            _remove_empty(out_root / TMP_DIR)  # not empty while another shard works
    report.seconds = time.perf_counter() - start
    return report


@contextlib.contextmanager
def _signals_interrupt():
    """In the main thread, SIGTERM and SIGINT raise ``Interrupted`` (as SIGINT's KeyboardInterrupt does),
    so that the run stops its workers and cleans up instead of dying with them left running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Interrupted(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(signum) not in (signal.SIG_IGN, None):  # nohup'ed runs keep ignoring; None: set in C
            previous[signum] = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
    atomic_write_json(meta, settings)


def _run_jobs(jobs: list[_Job], workers: int, start_method: str | None = None):
    """Yield (name, error or None, marker) per job, in-process or over ``workers`` processes.

    ``start_method`` None is the platform's default (as for torch's DataLoader); the worker is a
    top-level function, so "spawn" and "forkserver" work too (from an importable ``__main__``). Any
    exception here (a full disk, a signal) or closing the generator stops the pool at once.
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _run_job(job)
        return
    context = multiprocessing.get_context(start_method)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                               initializer=_init_worker, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(_run_job, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:  # a worker died (e.g. a decoder crash): report, go on
                yield futures[future].name, "worker process died before finishing; run again to retry", None
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown()


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel pending jobs and end the workers now; the videos they were on are redone by the next run."""
    processes = list((pool._processes or {}).values())  # no public way before Python 3.14's terminate_workers
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
    # the pool's manager thread sees its workers gone and closes its wake-up pipe; waiting for it here keeps
    # the interpreter's exit from waking it while it closes that pipe (before Python 3.12 a race printed
    # "OSError: handle is closed" from threading._shutdown after an interrupted run)
    if manager is not None and manager.is_alive():
        manager.join(10)


def _init_worker(main_pid: int) -> None:
    """A worker: one OpenCV thread; dies with its parent; leaves signals to the main process."""
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: main decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the handler inherited through fork
    parent = os.getppid()
    if not _set_parent_death_signal():
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    if not _pid_alive(main_pid):  # it died before the above took effect
        os._exit(1)


def _set_parent_death_signal() -> bool:
    """Linux: have the kernel SIGKILL this process when its parent exits (``prctl(PR_SET_PDEATHSIG)``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _exit_with_parent(parent: int, poll: float = 0.5) -> None:
    """Elsewhere: exit once re-parented (the parent died), checked every ``poll`` seconds."""
    while os.getppid() == parent:
        time.sleep(poll)
    os._exit(1)


def _run_job(job: _Job) -> tuple[str, str | None, dict | None]:
    """Worker entry point (top level, so spawn can import it): reports a bad video instead of raising;
    a full disk (StorageError, naming the file) is raised, since every further video would fail too."""
    try:
        return job.name, None, _prepare(job.path, job.out_root, name=job.name, tmp=job.tmp, **job.options)
    except Exception as err:  # reported by name at the end; the other videos go on
        shutil.rmtree(job.tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
            if isinstance(err, StorageError):
                raise
            where = err.filename or job.tmp
            raise StorageError(err.errno, f"{where}: {STORAGE_ERRNOS[err.errno]} while writing it") from None
        reason = str(err) if isinstance(err, (DataError, ConfigError)) else f"{type(err).__name__}: {err}"
        return job.name, reason, None


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


def parse_tvl1_option(text: str) -> tuple[str, int | float]:
    """``"outer_iterations=3"`` -> ("outer_iterations", 3); the name is checked by ``resolve_tvl1``."""
    name, _, value = text.partition("=")
    try:
        return name.strip(), int(value) if re.fullmatch(r"\s*-?\d+\s*", value) else float(value)
    except ValueError:
        raise ConfigError(f"--tvl1 must look like NAME=NUMBER (e.g. outer_iterations=3), got {text!r}") from None


def cli_main(argv: list[str]) -> int:
    """``python -m twostream_lib prepare VIDEO_DIR_OR_LIST OUT_DIR [options]``; exit 1 if any video failed,
    2 on bad input, a held output folder or a full disk, 128 + signal number when interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m twostream_lib prepare",
        description="Videos -> RGB frames (short side 256) + TV-L1 flow clipped to +-20 px, as JPEG "
        "in the authors' layout (jpegs_256/, tvl1_flow/u, tvl1_flow/v) or packed per video. "
        "Resumable; finished videos are skipped. One run per output folder (shards excepted).",
    )
    parser.add_argument("source", help="folder of videos (searched recursively) or a text file listing them")
    parser.add_argument("out_dir", help="output folder (frame store root)")
    parser.add_argument("--short-side", type=int, default=SHORT_SIDE, help="resize so the short side is this (0: keep)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--shard", default=None, help="i/N: only every N-th video from the i-th (0-based)")
    parser.add_argument("--packed", action="store_true", help="one packed file per video instead of JPEG folders")
    parser.add_argument("--tvl1-preset", choices=sorted(TVL1_PRESETS), default="default")
    parser.add_argument("--tvl1", action="append", default=[], metavar="NAME=VALUE",
                        help="a TV-L1 parameter on top of the preset, repeatable; e.g. --tvl1 outer_iterations=3 "
                        "--tvl1 inner_iterations=10 caps the iterations per frame pair (nscales x warps x outer "
                        f"x inner): a cap on work, not time, so the flow stays machine-independent. Names: "
                        f"{', '.join(_TVL1_PARAMS)}")
    parser.add_argument("--allow-short", action="store_true",
                        help="accept videos that decode to fewer frames than their header announces (by more "
                        "than max(2, 2%%), e.g. truncated files); recorded as \"short\" in their marker")
    parser.add_argument("--slow-seconds", type=float, default=SLOW_SECONDS,
                        help=f"report videos whose TV-L1 takes longer per frame pair (default {SLOW_SECONDS:g} s)")
    parser.add_argument("--video-root", default=None, help="base of relative paths in a list (default: its folder)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv[1:])
    try:
        shard = parse_shard(args.shard) if args.shard else None
        tvl1 = {"preset": args.tvl1_preset, **dict(parse_tvl1_option(t) for t in args.tvl1)}
        videos = find_videos(args.source, video_root=args.video_root)
        report = prepare_videos(
            videos, Path(args.out_dir), short_side=args.short_side, tvl1=tvl1, packed=args.packed,
            workers=args.workers, shard=shard, progress=not args.quiet, allow_short=args.allow_short,
            slow_seconds=args.slow_seconds,
        )
    except (ConfigError, DataError, StorageError) as err:
        print(f"error: {err.strerror if isinstance(err, StorageError) else err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"interrupted ({signal.Signals(signum).name}): run the same command again to finish "
              f"(finished videos are kept)", file=sys.stderr)
        return 128 + signum
    print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    return 0 if report.ok else 1
