"""Frame stores: RGB frames and quantised optical flow that were extracted beforehand (paper Sec. 3.5:
"the network input is rescaled beforehand, so that the smallest side of the frame equals 256. We also
pre-compute the optical flow before training and store the flow fields as JPEG images").

Three on-disk layouts give the same ``FrameStore`` interface:

``authors``   the layout of the precomputed data released with the paper's code::

                  root/jpegs_256/<video>/frame000001.jpg ...            N RGB frames (1-based on disk)
                  root/tvl1_flow/u/<video>/frame000001.jpg ...          N-1 horizontal flow frames
                  root/tvl1_flow/v/<video>/frame000001.jpg ...          N-1 vertical flow frames

``mmaction``  the mmaction2 / denseflow "rawframes" layout, flat or nested by class::

                  root/[<class>/]<video>/img_00001.jpg ...              RGB frames
                  root/[<class>/]<video>/flow_x_00001.jpg, flow_y_...   or x_00001.jpg, y_00001.jpg

``packed``    one file per video, ``root/packed/<video>.pack``, holding the original JPEG bytes of every
              RGB, u and v frame plus an offset index (format below). A read opens one file per
              call instead of one per frame, and decodes the very same bytes, so arrays equal the
              JPEG layout's bit for bit. ``pack_store`` converts either JPEG layout without re-encoding.

Indices are 0-based everywhere: RGB frame ``i`` is ``frame{i+1:06d}.jpg``; flow frame ``i`` is the
flow from RGB frame ``i`` to ``i+1``. ``read_flow`` returns ``[..., 0] = u`` (horizontal) and
``[..., 1] = v`` as stored (0..255, 128 ~ no motion).

Frame counts. N RGB frames normally come with N-1 flow frames. Stores in the wild do not always
agree (the mmaction2 test folder has 10 RGB and 5 flow frames, since it is a cut-down sample), so
``counts(video)`` reports both numbers as found and ``num_frames(video)`` reports the number of RGB
frames usable together with flow: ``min(rgb, flow + 1)`` (``rgb`` when there is no flow at all,
``flow + 1`` when there are no RGB frames). Every RGB index below ``num_frames`` then has its flow
frames, and samplers need only this one number. Reading past what is on disk raises DataError.

Markers. ``python -m twostream_lib prepare`` writes ``root/.done/<video>.json`` (``frames``,
``flow_frames``, counted on disk) after a video's frames are in place, and ``root/prepare.json`` once.
``counts(video)`` checks the marker against the frames found and raises DataError naming the video when
they disagree, or when ``root`` was written by prepare and the video has no marker (its preparation did
not finish); stores without markers (the authors' download, mmaction2 folders) are read as found.

Reading is safe in DataLoader worker processes: files are opened per call, nothing is shared.
Decoding uses ``cv2.imdecode`` (libjpeg-turbo), which is deterministic.

Packed file format (little-endian)::

    b"TSPACK01"                              8-byte magic
    uint32 n_rgb, uint32 n_flow              frame counts
    uint64 offsets[n_rgb + 2*n_flow + 1]     absolute byte offsets; blob k is offsets[k]:offsets[k+1]
    blobs: rgb[0..n_rgb-1], u[0..n_flow-1], v[0..n_flow-1]   the JPEG files' bytes, unchanged
"""
from __future__ import annotations

import json
import operator
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import cv2
import numpy as np
from tqdm import tqdm

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.files import atomic_write

LAYOUTS = ("auto", "authors", "mmaction", "packed")
RGB_DIR = "jpegs_256"
FLOW_DIR = "tvl1_flow"
PACK_DIR = "packed"
PACK_SUFFIX = ".pack"
PACK_MAGIC = b"TSPACK01"
DONE_DIR = ".done"  # prepare's markers: <root>/.done/<video>.json
PREPARE_RECORD = "prepare.json"  # prepare's settings: its presence marks a root that prepare wrote
_HEADER = struct.Struct("<8sII")
_JPEG_EOI = b"\xff\xd9"


@runtime_checkable
class FrameStore(Protocol):
    """What samplers need from extracted frames (see the module docstring for indexing)."""

    def videos(self) -> list[str]: ...

    def num_frames(self, video: str) -> int: ...

    def read_rgb(self, video: str, indices: Sequence[int]) -> np.ndarray: ...

    def read_flow(self, video: str, indices: Sequence[int]) -> np.ndarray: ...


@dataclass(frozen=True)
class FrameCounts:
    """Frames found on disk for one video: RGB frames and flow frames (min of u and v)."""

    rgb: int
    flow: int

    @property
    def usable(self) -> int:
        """RGB frames usable with flow: ``min(rgb, flow + 1)``; see the module docstring."""
        if self.flow == 0:
            return self.rgb
        if self.rgb == 0:
            return self.flow + 1
        return min(self.rgb, self.flow + 1)


def open_store(root: str | Path, layout: str = "auto") -> FrameStore:
    """Open the frame store under ``root``; ``layout`` is "auto" (detect), "authors", "mmaction" or "packed"."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown frame store layout {layout!r}; expected one of {list(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"frame store root {root} does not exist or is not a folder")
    if layout == "auto":
        layout = detect_layout(root)
    return _STORE_CLASSES[layout](root)


def detect_layout(root: str | Path) -> str:
    """The layout found under ``root``: "packed" > "authors" > "mmaction"; DataError if none."""
    root = Path(root)
    if (root / PACK_DIR).is_dir() and any((root / PACK_DIR).glob("*" + PACK_SUFFIX)):
        return "packed"
    if (root / RGB_DIR).is_dir() or (root / FLOW_DIR).is_dir():
        return "authors"
    if MMActionStore.has_videos(root):
        return "mmaction"
    raise DataError(
        f"no frame store found in {root}: expected {RGB_DIR}/ and {FLOW_DIR}/ (authors' layout), "
        f"{PACK_DIR}/*{PACK_SUFFIX} (packed) or <video>/img_00001.jpg (mmaction2 rawframes)"
    )


# ---- JPEG decoding -----------------------------------------------------------------------


def decode_jpeg(data: bytes, where: str, *, grey: bool = False) -> np.ndarray:
    """Decode JPEG bytes to RGB uint8 [H,W,3] (or grey [H,W]); DataError naming ``where`` if corrupt."""
    if len(data) == 0:
        raise DataError(f"{where}: empty file, expected a JPEG image")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{where}: not a decodable JPEG image")
    if not data.rstrip(b"\x00\r\n ").endswith(_JPEG_EOI):
        raise DataError(f"{where}: truncated JPEG image (no end-of-image marker)")
    return image if grey else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"frame file {path} is missing") from None
    except OSError as err:
        raise DataError(f"cannot read frame file {path}: {err}") from None


def _stack(frames: list[np.ndarray], video: str, kind: str, channels: int) -> np.ndarray:
    if not frames:
        return np.zeros((0, 0, 0, channels), np.uint8)
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DataError(f"video {video!r}: {kind} frames have different sizes {sorted(shapes)}")
    return np.stack(frames)


def check_frame_indices(indices: Sequence[int], n: int, kind: str, video: str, where: object) -> list[int]:
    """``indices`` as ints, each in ``0..n-1``; ConfigError / DataError naming the video and ``where``."""
    try:
        idx = [operator.index(i) for i in indices]
    except TypeError:
        raise ConfigError(f"frame indices must be integers, got {list(indices)!r}") from None
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise DataError(f"{kind} frame index {bad[0]} is out of range for video {video!r} in {where}: "
                        f"it has {n} {kind} frames (valid indices 0..{n - 1})")
    return idx


# ---- common store logic ------------------------------------------------------------------


class _StoreBase:
    """Index checks, counting cache and decoding shared by the three layouts.

    A subclass provides ``_scan`` (name -> locator), ``_count`` and the raw bytes of a frame.
    """

    layout = ""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._index: dict[str, object] | None = None
        self._folded: dict[str, str] | None = None
        self._counts: dict[str, FrameCounts] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    # -- public interface ------------------------------------------------------------------
    def videos(self) -> list[str]:
        """Names (stems) of the videos in the store, sorted."""
        return sorted(self._videos())

    def counts(self, video: str) -> FrameCounts:
        """RGB and flow frames on disk for ``video`` (cached)."""
        name = self._resolve(video)
        if name not in self._counts:
            counts = self._count(self._videos()[name])
            problem = marker_problem(self.root, name, counts)
            if problem:
                raise DataError(problem)
            self._counts[name] = counts
        return self._counts[name]

    def num_frames(self, video: str) -> int:
        """RGB frames usable with flow (``FrameCounts.usable``); flow frames are one fewer."""
        return self.counts(video).usable

    def read_rgb(self, video: str, indices: Sequence[int]) -> np.ndarray:
        """RGB frames at 0-based ``indices`` as uint8 [n, H, W, 3] in RGB order."""
        name = self._resolve(video)
        idx = self._check_indices(name, indices, self.counts(name).rgb, "RGB")
        frames = [decode_jpeg(data, where) for data, where in self._rgb_bytes(name, idx)]
        return _stack(frames, name, "RGB", 3)

    def read_flow(self, video: str, indices: Sequence[int]) -> np.ndarray:
        """Flow frames at 0-based ``indices`` as uint8 [n, H, W, 2]: u (horizontal) then v."""
        name = self._resolve(video)
        idx = self._check_indices(name, indices, self.counts(name).flow, "flow")
        frames = []
        for (u, u_where), (v, v_where) in self._flow_bytes(name, idx):
            fu, fv = decode_jpeg(u, u_where, grey=True), decode_jpeg(v, v_where, grey=True)
            if fu.shape != fv.shape:
                raise DataError(f"{u_where} and {v_where} differ in size: {fu.shape} vs {fv.shape}")
            frames.append(np.stack([fu, fv], axis=-1))
        return _stack(frames, name, "flow", 2)

    # -- helpers -----------------------------------------------------------------------------
    def _videos(self) -> dict[str, object]:
        if self._index is None:
            self._index = self._scan()
        return self._index

    def _resolve(self, video: str) -> str:
        """The stored name of ``video``; falls back to a case-insensitive match (UCF101 spells one
        class both "HandstandPushups" and "HandStandPushups")."""
        index = self._videos()
        if video in index:
            return video
        if self._folded is None:
            self._folded = {name.casefold(): name for name in index}
        if video.casefold() in self._folded:
            return self._folded[video.casefold()]
        some = ", ".join(sorted(index)[:3]) or "none"
        raise DataError(
            f"video {video!r} is not in the {self.layout} frame store {self.root} "
            f"({len(index)} videos, e.g. {some})"
        )

    def _check_indices(self, name: str, indices: Sequence[int], n: int, kind: str) -> list[int]:
        return check_frame_indices(indices, n, kind, name, self._where(name))

    # -- per layout ----------------------------------------------------------------------------
    def _scan(self) -> dict[str, object]:
        raise NotImplementedError

    def _count(self, locator) -> FrameCounts:
        raise NotImplementedError

    def _where(self, name: str) -> str:
        raise NotImplementedError

    def _rgb_bytes(self, name: str, idx: list[int]) -> list[tuple[bytes, str]]:
        """(JPEG bytes, where they come from) of RGB frames ``idx``."""
        raise NotImplementedError

    def _flow_bytes(self, name: str, idx: list[int]) -> list[tuple[tuple[bytes, str], tuple[bytes, str]]]:
        """((u bytes, where), (v bytes, where)) of flow frames ``idx``."""
        raise NotImplementedError


def marker_problem(root: str | Path, video: str, counts: FrameCounts) -> str | None:
    """Why ``video``'s frames under ``root`` cannot be trusted, or None: its prepare marker records other
    frame counts than ``counts`` (found on disk), or ``root`` was written by prepare and it has no marker.

    Two prepare runs on one folder once left a marker of 14 frames over 3 frames on disk; the marker
    is now written from the disk, and every reader checks it (a few hundred bytes per video, once).
    """
    root = Path(root)
    marker = root / DONE_DIR / f"{video}.json"
    try:
        record = json.loads(marker.read_text())
    except FileNotFoundError:
        if (root / PREPARE_RECORD).is_file():
            return (f"video {video!r} in {root} has no marker {DONE_DIR}/{video}.json: its preparation did not "
                    f"finish; run prepare again (it redoes this video)")
        return None
    except (OSError, ValueError) as err:
        return f"video {video!r}: its marker {marker} is unreadable ({err}); run prepare again"
    recorded = (record.get("frames"), record.get("flow_frames"))
    if recorded != (counts.rgb, counts.flow):
        return (f"video {video!r} in {root}: its marker {marker} records {recorded[0]} RGB and {recorded[1]} flow "
                f"frames, the disk holds {counts.rgb} RGB and {counts.flow} flow frames; run prepare again "
                f"(it redoes this video)")
    return None


def frames_on_disk(root: str | Path, video: str, *, packed: bool = False) -> FrameCounts:
    """Frames of ``video`` under ``root`` in the authors' (or packed) layout, as a reader would find them."""
    root = Path(root)
    if packed:
        path = root / PACK_DIR / f"{video}{PACK_SUFFIX}"
        if not path.is_file():
            return FrameCounts(0, 0)
        with open(path, "rb") as f:
            return FrameCounts(*_read_pack_header(f, path))
    return AuthorsStore.count_folders(root, video)


def _count_matching(folder: Path, pattern: re.Pattern) -> dict[str, int]:
    """Count file names in ``folder`` per value of ``pattern``'s first group (0 if no folder)."""
    counts: dict[str, int] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                m = pattern.fullmatch(entry.name)
                if m:
                    counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    except FileNotFoundError:
        pass
    return counts


class _JpegFileStore(_StoreBase):
    """A store with one JPEG file per frame; subclasses map (video, index) to a path."""

    def rgb_path(self, name: str, i: int) -> Path:
        raise NotImplementedError

    def flow_path(self, name: str, component: str, i: int) -> Path:
        raise NotImplementedError

    def _rgb_bytes(self, name: str, idx: list[int]) -> list[tuple[bytes, str]]:
        paths = [self.rgb_path(name, i) for i in idx]
        return [(_read_file(p), str(p)) for p in paths]

    def _flow_bytes(self, name: str, idx: list[int]):
        out = []
        for i in idx:
            u, v = self.flow_path(name, "u", i), self.flow_path(name, "v", i)
            out.append(((_read_file(u), str(u)), (_read_file(v), str(v))))
        return out


# ---- the authors' layout -----------------------------------------------------------------


class AuthorsStore(_JpegFileStore):
    """``jpegs_256/<video>/frame%06d.jpg`` and ``tvl1_flow/{u,v}/<video>/frame%06d.jpg`` (1-based)."""

    layout = "authors"
    _FRAME = re.compile(r"(frame)\d{6}\.jpg")

    def __init__(self, root: Path):
        super().__init__(root)
        if not (self.root / RGB_DIR).is_dir() and not (self.root / FLOW_DIR).is_dir():
            raise DataError(f"{self.root} has neither {RGB_DIR}/ nor {FLOW_DIR}/ (the authors' layout)")

    def _scan(self) -> dict[str, object]:
        names = set()
        for folder in (self.root / RGB_DIR, self.root / FLOW_DIR / "u"):
            if folder.is_dir():
                names.update(e.name for e in os.scandir(folder) if e.is_dir())
        return {name: name for name in names}

    def _count(self, name) -> FrameCounts:
        return self.count_folders(self.root, name)

    @classmethod
    def count_folders(cls, root: Path, name: str) -> FrameCounts:
        """``frame%06d.jpg`` files in the three folders of ``name`` (0 for a missing folder)."""
        rgb = _count_matching(root / RGB_DIR / name, cls._FRAME).get("frame", 0)
        u = _count_matching(root / FLOW_DIR / "u" / name, cls._FRAME).get("frame", 0)
        v = _count_matching(root / FLOW_DIR / "v" / name, cls._FRAME).get("frame", 0)
        return FrameCounts(rgb=rgb, flow=min(u, v))

    def _where(self, name: str) -> str:
        return str(self.root / RGB_DIR / name)

    def rgb_path(self, name: str, i: int) -> Path:
        return self.root / RGB_DIR / name / f"frame{i + 1:06d}.jpg"

    def flow_path(self, name: str, component: str, i: int) -> Path:
        return self.root / FLOW_DIR / component / name / f"frame{i + 1:06d}.jpg"


# ---- the mmaction2 / denseflow layout ----------------------------------------------------


class MMActionStore(_JpegFileStore):
    """``[<class>/]<video>/img_%05d.jpg`` with ``flow_x_/flow_y_%05d.jpg`` or ``x_/y_%05d.jpg`` (1-based)."""

    layout = "mmaction"
    _FILE = re.compile(r"(img|flow_x|flow_y|x|y)_\d{5}\.jpg")
    _MARKERS = ("img_00001.jpg", "flow_x_00001.jpg", "x_00001.jpg")

    def __init__(self, root: Path):
        super().__init__(root)
        self._prefix: dict[str, tuple[str, str]] = {}

    @classmethod
    def _is_video_dir(cls, folder: Path) -> bool:
        return any((folder / marker).is_file() for marker in cls._MARKERS)

    @classmethod
    def _video_dirs(cls, root: Path):
        """Video folders at ``root`` itself, one level down, or two levels down (nested by class)."""
        if cls._is_video_dir(root):
            yield root
            return
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            if cls._is_video_dir(child):
                yield child
                continue
            for grandchild in sorted(p for p in child.iterdir() if p.is_dir()):
                if cls._is_video_dir(grandchild):
                    yield grandchild

    @classmethod
    def has_videos(cls, root: Path) -> bool:
        return next(cls._video_dirs(root), None) is not None

    def _scan(self) -> dict[str, object]:
        found = {folder.name: folder for folder in self._video_dirs(self.root)}
        if not found:
            raise DataError(f"no mmaction2 rawframes (<video>/img_00001.jpg) found under {self.root}")
        return found

    def _count(self, folder: Path) -> FrameCounts:
        c = _count_matching(folder, self._FILE)
        x, y = ("flow_x", "flow_y") if c.get("flow_x") or c.get("flow_y") else ("x", "y")
        self._prefix[folder.name] = (x + "_", y + "_")
        return FrameCounts(rgb=c.get("img", 0), flow=min(c.get(x, 0), c.get(y, 0)))

    def _where(self, name: str) -> str:
        return str(self._videos()[name])

    def rgb_path(self, name: str, i: int) -> Path:
        return self._videos()[name] / f"img_{i + 1:05d}.jpg"

    def flow_path(self, name: str, component: str, i: int) -> Path:
        self.counts(name)  # sets the prefix
        prefix = self._prefix[name][0 if component == "u" else 1]
        return self._videos()[name] / f"{prefix}{i + 1:05d}.jpg"


# ---- the packed layout -------------------------------------------------------------------


class PackedStore(_StoreBase):
    """``packed/<video>.pack``: one file per video with the JPEG bytes of all frames and an index."""

    layout = "packed"

    def __init__(self, root: Path):
        super().__init__(root)
        if not (self.root / PACK_DIR).is_dir():
            raise DataError(f"{self.root} has no {PACK_DIR}/ folder (the packed layout)")

    def _scan(self) -> dict[str, object]:
        return {p.stem: p for p in (self.root / PACK_DIR).glob("*" + PACK_SUFFIX)}

    def _count(self, path: Path) -> FrameCounts:
        with open(path, "rb") as f:
            n_rgb, n_flow = _read_pack_header(f, path)
        return FrameCounts(rgb=n_rgb, flow=n_flow)

    def _where(self, name: str) -> str:
        return str(self._videos()[name])

    def _rgb_bytes(self, name: str, idx: list[int]) -> list[tuple[bytes, str]]:
        path = self._videos()[name]
        return [(blob, f"{path} (RGB frame {i})") for i, blob in zip(idx, read_pack_blobs(path, idx))]

    def _flow_bytes(self, name: str, idx: list[int]):
        path = self._videos()[name]
        n_rgb = self.counts(name).rgb
        n_flow = self.counts(name).flow
        blobs = read_pack_blobs(path, [n_rgb + i for i in idx] + [n_rgb + n_flow + i for i in idx])
        us, vs = blobs[: len(idx)], blobs[len(idx):]
        return [
            ((u, f"{path} (u flow frame {i})"), (v, f"{path} (v flow frame {i})"))
            for i, u, v in zip(idx, us, vs)
        ]


def write_pack(path: str | Path, rgb: Sequence[bytes], u: Sequence[bytes], v: Sequence[bytes]) -> Path:
    """Write one video's JPEG bytes as a packed file, atomically (:func:`~twostream_lib.files.atomic_write`)."""
    if len(u) != len(v):
        raise DataError(f"{path}: {len(u)} u flow frames but {len(v)} v flow frames")
    path = Path(path)
    blobs = [*rgb, *u, *v]
    start = _HEADER.size + 8 * (len(blobs) + 1)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs], dtype=np.int64)]) + start
    header = _HEADER.pack(PACK_MAGIC, len(rgb), len(u)) + offsets.astype("<u8").tobytes()
    return atomic_write(path, b"".join([header, *blobs]))


def _read_pack_header(f, path: Path) -> tuple[int, int]:
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise DataError(f"{path}: truncated packed file (no header)")
    magic, n_rgb, n_flow = _HEADER.unpack(head)
    if magic != PACK_MAGIC:
        raise DataError(f"{path}: not a packed frame file (magic {magic!r}, expected {PACK_MAGIC!r})")
    return n_rgb, n_flow


def read_pack_blobs(path: str | Path, blob_ids: Sequence[int]) -> list[bytes]:
    """Raw bytes of blobs ``blob_ids`` (RGB frames first, then u, then v) of one packed file.

    Runs of consecutive ids (a flow stack) are read with a single read each.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"packed file {path} is missing")
    with open(path, "rb") as f:
        n_rgb, n_flow = _read_pack_header(f, path)
        n_blobs = n_rgb + 2 * n_flow
        table = f.read(8 * (n_blobs + 1))
        if len(table) < 8 * (n_blobs + 1):
            raise DataError(f"{path}: truncated packed file (offset table cut short)")
        offsets = np.frombuffer(table, "<u8").astype(np.int64)
        size = os.fstat(f.fileno()).st_size
        if offsets[-1] != size or np.any(np.diff(offsets) < 0):
            raise DataError(f"{path}: corrupt packed file (index says {offsets[-1]} bytes, file has {size})")
        bad = [k for k in blob_ids if not 0 <= k < n_blobs]
        if bad:
            raise DataError(f"{path}: blob {bad[0]} out of range (the file holds {n_blobs})")
        out: dict[int, bytes] = {}
        for run in _runs(sorted(set(blob_ids))):
            f.seek(offsets[run[0]])
            chunk = f.read(offsets[run[-1] + 1] - offsets[run[0]])
            for k in run:
                out[k] = chunk[offsets[k] - offsets[run[0]]: offsets[k + 1] - offsets[run[0]]]
    return [out[k] for k in blob_ids]


def _runs(ids: list[int]) -> list[list[int]]:
    """Split sorted ids into runs of consecutive integers."""
    runs: list[list[int]] = []
    for k in ids:
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


def pack_store(
    src_store_root: str | Path,
    dst_root: str | Path,
    *,
    layout: str = "auto",
    videos: Sequence[str] | None = None,
    progress: bool = True,
) -> PackedStore:
    """Copy a JPEG store (authors' or mmaction2 layout) into ``dst_root/packed/<video>.pack``.

    The JPEG bytes are copied unchanged, so decoded arrays are identical. Resumable: videos whose
    pack file exists are skipped (pack files are written atomically).
    """
    src = open_store(src_store_root, layout)
    names = src.videos() if videos is None else [src._resolve(v) for v in videos]
    out_dir = Path(dst_root) / PACK_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in tqdm(names, desc="pack", unit="video", disable=not progress):
        target = out_dir / f"{name}{PACK_SUFFIX}"
        if target.exists():
            continue
        c = src.counts(name)
        rgb = [data for data, _ in src._rgb_bytes(name, list(range(c.rgb)))]
        flow = src._flow_bytes(name, list(range(c.flow)))
        write_pack(target, rgb, [u for (u, _), _ in flow], [v for _, (v, _) in flow])
    return PackedStore(Path(dst_root))


_STORE_CLASSES = {"authors": AuthorsStore, "mmaction": MMActionStore, "packed": PackedStore}


# ---- decoded frames in memory ------------------------------------------------------------


class DecodedCache:
    """A FrameStore that decodes each video once and keeps its frames in memory (least recently used
    videos are dropped beyond ``max_bytes``).

    Training draws a new clip of every video each epoch, so a small data set is decoded dozens of
    times: the demo's 630 synthetic videos (29 RGB + 2 x 28 flow frames at 56 px, ~0.45 MB decoded
    each, ~280 MB in all) fit in memory, and tower training no longer waits on libjpeg. Arrays equal
    the wrapped store's bit for bit (they are its decoded frames); each DataLoader worker process
    holds its own cache. Not for UCF101 at 256 px (~300 GB decoded).

    ``disk``: a folder where each video's decoded frames are also written (``<disk>/<rgb|flow>/<video>.npy``)
    and mapped by every later process (each notebook's kernel, each training process), so a video is
    decoded once per data set, not once per process, and its frames are held once, in the system's page
    cache, not copied into each process's own memory. It belongs to the frames it was decoded from: a
    store whose frames are rewritten must drop it (the synthetic set is regenerated into a clean folder).
    """

    def __init__(self, store: FrameStore, max_bytes: int = 2 << 30, *, disk: str | Path | None = None):
        if max_bytes <= 0:
            raise ConfigError(f"DecodedCache: max_bytes must be positive, got {max_bytes}")
        self.store = store
        self.max_bytes = int(max_bytes)
        self.disk = None if disk is None else Path(disk)
        self.nbytes = 0
        self._frames: dict[tuple[str, str], np.ndarray] = {}  # insertion order = recency

    def __repr__(self) -> str:
        return f"DecodedCache({self.store!r}, {len(self._frames)} arrays, {self.nbytes / 2**20:.0f} MiB)"

    def __getattr__(self, name):  # videos, num_frames, counts, root, ... of the wrapped store
        if name == "store":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.store, name)

    def __getstate__(self) -> dict:
        """Pickled without its frames: a worker process (DataLoader, IDT pool) builds its own cache
        instead of receiving, task after task, copies of everything decoded so far."""
        return {"store": self.store, "max_bytes": self.max_bytes, "disk": self.disk}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["store"], state["max_bytes"], disk=state.get("disk"))

    def read_rgb(self, video: str, indices: Sequence[int]) -> np.ndarray:
        return self._read("rgb", video, indices)

    def read_flow(self, video: str, indices: Sequence[int]) -> np.ndarray:
        return self._read("flow", video, indices)

    def _read(self, kind: str, video: str, indices: Sequence[int]) -> np.ndarray:
        key = (kind, video)
        frames = self._frames.pop(key, None)
        if frames is None:
            frames = self._decoded(kind, video)
            self.nbytes += frames.nbytes
            while self._frames and self.nbytes > self.max_bytes:
                self.nbytes -= self._frames.pop(next(iter(self._frames))).nbytes
        self._frames[key] = frames
        return frames[check_frame_indices(indices, len(frames), "RGB" if kind == "rgb" else "flow", video,
                                          self.store)]

    def _decoded(self, kind: str, video: str) -> np.ndarray:
        """Every ``kind`` frame of ``video``: from the disk copy when there is a readable one, else decoded
        from the store (and the disk copy written, atomically)."""
        path = None if self.disk is None else self.disk / kind / f"{video}.npy"
        if path is not None and path.is_file():
            try:  # mapped: the processes reading it share the system's cached pages instead of a copy each
                return np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):  # unreadable or cut short: decode again and rewrite it
                pass
        counts = self.store.counts(video)
        read = self.store.read_rgb if kind == "rgb" else self.store.read_flow
        frames = read(video, range(counts.rgb if kind == "rgb" else counts.flow))
        if path is not None:
            atomic_write(path, lambda tmp: np.save(tmp, frames, allow_pickle=False), fsync=False)
        return frames
