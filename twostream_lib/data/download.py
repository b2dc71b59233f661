"""Fetch, unpack and verify UCF101 and HMDB51 (paper Sec. 4.1: 13320 videos in 101 classes, 6766 videos
in 51 classes, three official splits each).

``python -m twostream_lib fetch ucf101 [hmdb51] [--precomputed]`` downloads the archives (resumable
HTTP), unpacks them safely and verifies the result; ``python -m twostream_lib verify DATASET ROOT``
checks an existing copy. ``python -m twostream_lib fetch weights`` downloads the ImageNet VGG-M-2048
network (Sec. 3.5: "We employ two pre-trained ImageNet models"; VGG-M-2048's exist only as MatConvNet's
``imagenet-vgg-m-2048.mat``) to ``<root>/weights/``, where the ``paper`` profile expects it; VGG-16's
come through torchvision. The layout it creates under ``--root`` (default ``data``)::

    <root>/<dataset>/downloads/   the archives (deleted after unpacking unless --keep-archives)
    <root>/<dataset>/videos/      <Class>/<video>.avi
    <root>/<dataset>/splits/      ucfTrainTestlist/ or testTrainMulti_7030_splits/
    <root>/<dataset>/frames/      jpegs_256/, tvl1_flow/{u,v}/ (--precomputed, UCF101 and HMDB51),
                                  or what ``python -m twostream_lib prepare`` writes

The official UCF101 and HMDB51 archives are RAR (HMDB51's holds one RAR per class); they are read
with the ``rarfile`` package or an ``unrar``/``bsdtar``/``7z`` program, whichever is present. The
precomputed UCF101 frames and flow released with the paper's code are split zip files (``.001``,
``.002``, ``.003``) that are concatenated before unpacking.

Faults it survives (tests/test_faults_unpack.py, tests/test_download.py): every archive is checked
against its SHA-256 (published, or recorded at its first download in ``<root>/<dataset>/archives.sha256``,
which ``verify`` checks too); unpacking refuses, before writing anything, absolute paths, ``..``, link
members of any kind (the official archives hold none), members under a link, device files, archives
unpacking to more than a cap or at a suspicious compression ratio, and archives larger than the free
disk; a corrupt archive or member is a DataError naming it, a full disk a StorageError naming the file.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import http.client
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from twostream_lib.data.splits import (
    OFFICIAL_NUM_CLASSES,
    OFFICIAL_SPLIT_SIZES,
    load_split,
)
from twostream_lib.data.stores import detect_layout, open_store
from twostream_lib.errors import ConfigError, DataError, StorageError
from twostream_lib.files import atomic_write

_TUGRAZ = "http://ftp.tugraz.at/pub/feichtenhofer/tsfusion/data/"
_UCF = "https://www.crcv.ucf.edu/data/UCF101/"
_HMDB = "http://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/"
RAR_MAGIC = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".webm", ".mov")


# ---- what to fetch -----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One archive (or one set of split parts) and where its content goes under ``<root>/<dataset>``."""

    name: str
    urls: tuple[str, ...]  # one archive, or numbered parts .001 .002 ... in order
    into: str  # "videos", "splits" or "frames"
    strip: str | None = None  # top-level folder of the archive to drop ("UCF-101")
    nested: bool = False  # the archive holds one archive per class (HMDB51)


SOURCES: dict[str, dict[str, tuple[Step, ...]]] = {
    "ucf101": {
        "splits": (Step("splits", (_UCF + "UCF101TrainTestSplits-RecognitionTask.zip",), "splits"),),
        "videos": (Step("videos", (_UCF + "UCF101.rar",), "videos", strip="UCF-101"),),
        "precomputed": (
            Step("jpegs_256", tuple(f"{_TUGRAZ}ucf101_jpegs_256.zip.00{i}" for i in (1, 2, 3)), "frames"),
            Step("tvl1_flow", tuple(f"{_TUGRAZ}ucf101_tvl1_flow.zip.00{i}" for i in (1, 2, 3)), "frames"),
        ),
    },
    "hmdb51": {
        "splits": (Step("splits", (_HMDB + "test_train_splits.rar",), "splits"),),
        "videos": (Step("videos", (_HMDB + "hmdb51_org.rar",), "videos", nested=True),),
        "precomputed": (
            Step("jpegs_256", (_TUGRAZ + "hmdb51_jpegs_256.zip",), "frames"),
            Step("tvl1_flow", (_TUGRAZ + "hmdb51_tvl1_flow.zip",), "frames"),
        ),
    },
}


# ---- resumable download ------------------------------------------------------------------


def download(url: str, dest: str | Path, *, retries: int = 5, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with an HTTP Range request.

    ``dest`` appears only when complete, so an existing ``dest`` is not fetched again (archives
    downloaded by hand can be dropped into the downloads folder).
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries):
        try:
            if _download_once(url, part, timeout, progress):
                os.replace(part, dest)
                return dest
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500 and err.code not in (408, 429):
                raise DataError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
            last_error = err
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as err:
            last_error = err
        time.sleep(min(2**attempt, 30))
    kept = f"; the partial file {part} is kept: run the command again to resume" if part.exists() else ""
    raise DataError(f"download of {url} failed after {retries} tries ({last_error}){kept}")


def _download_once(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """One request; True when ``part`` now holds the whole file."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "twostream-lib-fetch"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: complete if the sizes agree
            total = _content_range_total(err.headers.get("Content-Range", ""))
            if total == have:
                return True
            part.unlink()
            return False
        raise
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=part.stem, disable=not progress
        ) as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise OSError(f"connection closed at {size} of {total} bytes")
    return True


def _content_range_total(header: str) -> int | None:
    m = re.search(r"/(\d+)\s*$", header)
    return int(m.group(1)) if m else None


# ---- checksums -----------------------------------------------------------------------------

ARCHIVE_HASHES = "archives.sha256"  # <root>/<dataset>/archives.sha256, in `sha256sum` format
#: SHA-256 published by the hosts, by URL, checked from the first download on. None of the hosts
#: (crcv.ucf.edu, serre-lab.clps.brown.edu, ftp.tugraz.at) publishes one for these archives as far as we
#: know, so the digest of the first download is recorded in ARCHIVE_HASHES and checked from then on.
PUBLISHED_SHA256: dict[str, str] = {}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_archive_hashes(dataset_root: str | Path, manifest: str = ARCHIVE_HASHES) -> dict[str, str]:
    """File name -> SHA-256 recorded in ``dataset_root/archives.sha256`` (or ``manifest``; empty if there is none)."""
    path = Path(dataset_root) / manifest
    if not path.is_file():
        return {}
    hashes = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line.strip())
        if not m:
            raise DataError(f"{path}, line {number}: expected '<sha256>  <file name>', got {line!r}")
        hashes[m.group(2)] = m.group(1)
    return hashes


def check_archive(path: str | Path, url: str, dataset_root: str | Path, *, manifest: str = ARCHIVE_HASHES) -> str:
    """Check a downloaded archive against its published SHA-256, else the one recorded at its first
    download in ``dataset_root/manifest`` (recording it now if there is none); returns the digest.
    DataError naming both digests."""
    path = Path(path)
    digest = sha256_file(path)
    advice = "the download is damaged or the file changed on the server; delete it and fetch again"
    published = PUBLISHED_SHA256.get(url)
    if published and digest != published:
        raise DataError(f"{path}: SHA-256 {digest} differs from the published {published} ({url}): {advice}")
    hashes = read_archive_hashes(dataset_root, manifest)
    recorded = hashes.get(path.name)
    if recorded and digest != recorded:
        raise DataError(f"{path}: SHA-256 {digest} differs from the one recorded at its first download, {recorded} "
                        f"(in {Path(dataset_root) / manifest}): {advice}")
    if not recorded:
        hashes[path.name] = digest
        atomic_write(Path(dataset_root) / manifest, "".join(f"{h}  {n}\n" for n, h in sorted(hashes.items())))
    return digest


def verify_archives(dataset_root: str | Path) -> tuple[int, list[str]]:
    """(archives checked, problems): every archive still in ``downloads/`` against its recorded digest."""
    root = Path(dataset_root)
    checked, problems = 0, []
    for name, recorded in sorted(read_archive_hashes(root).items()):
        path = root / "downloads" / name
        if path.is_file():  # deleted after unpacking unless --keep-archives
            checked += 1
            digest = sha256_file(path)
            if digest != recorded:
                problems.append(f"{path}: SHA-256 {digest}, recorded at its first download {recorded}")
    return checked, problems


# ---- pretrained weights ------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """A pretrained network file: where it comes from, its name under ``<root>/weights/``, how to
    recognise it before hashing (a server's error page is not a network)."""

    file: str
    url: str
    min_bytes: int  # anything smaller is not this network
    magic: bytes  # how the file starts


#: The networks ``fetch weights`` downloads. VGG-M-2048 has ~92 M float32 parameters (~370 MB; fc6 alone
#: 75.5 M), so a file under 250 MB is a truncated copy or something else. MatConvNet saves its models as
#: MATLAB v5/v7 files, which start with this text header (a v7.3 file is HDF5 and scipy cannot read it).
WEIGHTS: dict[str, Weights] = {
    "vgg_m_2048": Weights("imagenet-vgg-m-2048.mat", "http://www.vlfeat.org/matconvnet/models/imagenet-vgg-m-2048.mat",
                          250_000_000, b"MATLAB 5.0 MAT-file"),
}
WEIGHT_HASHES = "weights.sha256"  # <root>/weights/weights.sha256, in `sha256sum` format


def fetch_weights(root: str | Path = "data", names: Sequence[str] = tuple(WEIGHTS), *,
                  progress: bool = True) -> list[Path]:
    """Download the pretrained networks ``names`` to ``<root>/weights/`` (resumable; a file already there is
    not fetched again) and verify each (:func:`check_weights`); returns their paths."""
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        raise ConfigError(f"unknown weights {unknown}; expected some of {sorted(WEIGHTS)}")
    folder = Path(root) / "weights"
    paths = []
    for name in names:
        w = WEIGHTS[name]
        path = download(w.url, folder / w.file, progress=progress)
        check_weights(path, w)
        paths.append(path)
    return paths


def check_weights(path: str | Path, w: Weights) -> str:
    """Check a network file: its first bytes and size (a file that is not the network, e.g. an HTML error
    page, is moved aside to ``<file>.rejected`` so that the next fetch downloads again), then its SHA-256
    against the one recorded at its first download in ``weights.sha256`` (recorded now if there is none).
    Returns the digest; DataError naming the file and what was expected."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(len(w.magic))
    size = path.stat().st_size
    problem = (f"starts with {head[:24]!r}, not {w.magic!r}" if head != w.magic else
               f"is {size} bytes, less than the {w.min_bytes} of this network" if size < w.min_bytes else None)
    if problem:
        rejected = path.with_name(path.name + ".rejected")
        os.replace(path, rejected)
        raise DataError(f"{path} {problem}: not the network from {w.url} (moved to {rejected.name}); check the "
                        f"address, or download it by hand and put it at {path}")
    return check_archive(path, w.url, path.parent, manifest=WEIGHT_HASHES)


# ---- split zip parts ---------------------------------------------------------------------


def part_number(path: str | Path) -> int:
    """1 for ``x.zip.001``, 2 for ``x.zip.002``, ...; DataError for other names."""
    m = re.fullmatch(r".*\.(\d{3})", Path(path).name)
    if not m:
        raise DataError(f"{path} is not a numbered archive part (expected a name ending in .001, .002, ...)")
    return int(m.group(1))


def concat_parts(parts: Sequence[str | Path], out: str | Path) -> Path:
    """Concatenate split archive parts ``.001 .002 ...`` in numeric order into ``out`` (atomically).

    DataError if the parts do not share one base name, do not start at .001, or have a gap.
    """
    if not parts:
        raise DataError(f"no archive parts given for {out}")
    paths = sorted((Path(p) for p in parts), key=part_number)
    bases = {p.name[:-4] for p in paths}
    if len(bases) > 1:
        raise DataError(f"archive parts belong to different archives: {sorted(bases)}")
    for expected, path in enumerate(paths, 1):
        if part_number(path) != expected:
            missing = path.with_name(f"{path.name[:-4]}.{expected:03d}")
            raise DataError(f"archive part {missing} is missing (have {', '.join(p.name for p in paths)})")
        if not path.is_file():
            raise DataError(f"archive part {path} is missing")
    def join(tmp: Path) -> None:
        with open(tmp, "wb") as dst:
            for path in paths:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 22)

    return atomic_write(out, join)


# ---- safe unpacking ----------------------------------------------------------------------


def archive_format(path: str | Path) -> str:
    """"rar", "zip" or "tar", from the file's content (not its name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"archive {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(RAR_MAGIC):
        return "rar"
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise DataError(f"{path} is not a zip, tar or RAR archive")


#: Unpacking caps, checked before anything is written. The largest known archive, the authors' UCF101
#: JPEG frames, unpacks to tens of GB; JPEGs and videos hardly compress (ratio ~1), split lists ~15:1.
MAX_UNPACKED_BYTES = 200 * 10**9
MAX_RATIO = 100  # unpacked bytes per archive byte; a zip bomb reaches ~1000:1


@dataclass(frozen=True)
class _Member:
    """One archive member that passed the checks: its name in the archive and where it goes."""

    name: str
    path: str  # relative to the target folder, "/"-separated
    is_dir: bool
    size: int  # bytes unpacked, as the archive declares (zipfile and tarfile stop reading there)
    info: object = None  # the ZipInfo / TarInfo


def safe_extract(
    archive: str | Path,
    dest: str | Path,
    *,
    progress: bool = False,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_ratio: float = MAX_RATIO,
) -> list[str]:
    """Unpack a zip, tar (any compression) or RAR archive into ``dest``; returns the member names.

    Zip and tar: every member is checked before anything is written. Absolute paths, ``..``, link
    members of any kind (the official archives hold none, and a chain of links that each look
    harmless can lead outside), members that would be written through a link already in ``dest``,
    and device files raise DataError naming the member; an archive unpacking to more than
    ``max_bytes`` or ``max_ratio`` times its own size raises DataError, and one larger than the free
    space at ``dest`` raises StorageError. Members are then written one by one with ``atomic_write``,
    so a corrupt member (DataError naming it) or a full disk (StorageError naming the file) leaves no
    half-written file. No tar extraction filter is needed (or used), so any Python 3.10 behaves alike.
    RAR: see ``_extract_rar``.
    """
    archive, dest = Path(archive), Path(dest)
    kind = archive_format(archive)
    if kind == "rar":
        return _extract_rar(archive, dest, max_bytes, max_ratio)
    with _open_archive(archive, kind, dest) as (members, read):
        _check_before_writing(archive, dest, members, max_bytes, max_ratio)
        dest.mkdir(parents=True, exist_ok=True)
        for m in tqdm(members, desc=f"unpack {archive.name}", unit="file", disable=not progress):
            target = dest / m.path
            if m.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            try:
                atomic_write(target, lambda tmp, m=m: _copy_member(read, m, tmp), fsync=False)
            except _CorruptMember as err:
                raise DataError(f"{archive}: member {m.name!r} is corrupt or truncated ({err.__cause__}); "
                                f"delete the archive and download it again") from None
        return [m.name for m in members]


class _CorruptMember(Exception):
    """Reading a member's bytes from the archive failed (the cause says how)."""


def _copy_member(read, member: _Member, tmp: Path) -> None:
    with read(member) as src, open(tmp, "wb") as dst:
        while True:
            try:
                chunk = src.read(1 << 20)
            except Exception as err:  # bad CRC, truncated stream, ...: the archive's fault, not the disk's
                raise _CorruptMember() from err
            if not chunk:
                return
            dst.write(chunk)


@contextlib.contextmanager
def _open_archive(archive: Path, kind: str, dest: Path):
    """(checked members, a function opening one member's bytes) of a zip or tar archive."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                yield [_zip_member(zf, info, dest, archive) for info in zf.infolist()], lambda m: zf.open(m.info)
        else:
            with tarfile.open(archive) as tf:
                yield [_tar_member(m, dest, archive) for m in tf.getmembers()], lambda m: tf.extractfile(m.info)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as err:
        raise DataError(f"{archive}: corrupt or truncated archive ({type(err).__name__}: {err}); "
                        f"delete it and download it again") from None


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, archive: Path) -> _Member:
    path = check_member(info.filename, dest, archive)
    if stat.S_ISLNK(info.external_attr >> 16):
        _refuse_link(info.filename, zf.read(info).decode("utf-8", "replace"), archive)
    return _Member(info.filename, path, info.is_dir(), 0 if info.is_dir() else info.file_size, info)


def _tar_member(m: tarfile.TarInfo, dest: Path, archive: Path) -> _Member:
    path = check_member(m.name, dest, archive)
    if m.issym() or m.islnk():
        _refuse_link(m.name, m.linkname, archive, hard=m.islnk())
    if not (m.isfile() or m.isdir()):
        raise DataError(f"{archive}: refusing member {m.name!r}: device, fifo or other special file")
    return _Member(m.name, path, m.isdir(), 0 if m.isdir() else m.size, m)


def check_member(name: str, dest: Path, archive: Path) -> str:
    """The member's relative path if it stays inside ``dest``; DataError naming it otherwise."""
    parts = [p for p in re.split(r"[\\/]+", name) if p not in ("", ".")]
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DataError(f"{archive}: refusing member {name!r}: absolute path")
    if ".." in parts:
        raise DataError(f"{archive}: refusing member {name!r}: '..' would leave {dest}")
    return "/".join(parts)


def _refuse_link(name: str, target: str | None, archive: Path, *, hard: bool = False) -> None:
    """Links are never unpacked; the message says where this one points (symlinks relative to their folder)."""
    if target is None:
        raise DataError(f"{archive}: refusing link member {name!r}: archives with links are not unpacked "
                        f"(the official ones hold none)")
    if target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
        why = "absolute target; "
    else:
        base = "" if hard else os.path.dirname(name)
        outside = os.path.normpath(os.path.join(base, target)).split(os.sep)[0] == ".."
        why = "it points outside the target folder; " if outside else ""
    raise DataError(f"{archive}: refusing link member {name!r} -> {target!r}: {why}archives with links are not "
                    f"unpacked (the official ones hold none)")


def _check_before_writing(archive: Path, dest: Path, members: list[_Member], max_bytes: int, max_ratio: float) -> None:
    """Before writing: no member through a link already in ``dest``; total, ratio and free disk within bounds."""
    checked: set[Path] = set()
    for m in members:
        folder = dest
        for part in m.path.split("/"):
            folder = folder / part
            if folder not in checked:
                if folder.is_symlink():
                    raise DataError(f"{archive}: refusing member {m.name!r}: it would be written through the link "
                                    f"{folder} -> {os.readlink(folder)}")
                checked.add(folder)
    total = sum(m.size for m in members)
    if total > max_bytes:
        raise DataError(f"{archive}: unpacks to {_size(total)}, more than the cap of {_size(max_bytes)} "
                        f"(max_bytes); nothing was written")
    ratio = total / max(1, archive.stat().st_size)
    if ratio > max_ratio:
        raise DataError(f"{archive}: a compression ratio of {ratio:.0f}:1 ({archive.stat().st_size} bytes unpack "
                        f"to {_size(total)}) is above the cap of {max_ratio:g}:1 (max_ratio): an archive bomb? "
                        f"Nothing was written")
    existing = next(p for p in (dest, *dest.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if total > free:
        raise StorageError(errno.ENOSPC, f"{archive} unpacks to {_size(total)} but only {_size(free)} are free "
                                         f"at {dest}; nothing was written")


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


# -- RAR: through the rarfile package or an unrar / bsdtar / 7z program ---------------------

_RAR_TOOLS = ("unrar", "bsdtar", "7z", "7zz")
NO_RAR_BACKEND = (
    "cannot unpack RAR archive {archive}: no RAR backend found. Install one of: `unrar` "
    "(apt install unrar / brew install rar), `bsdtar` (apt install libarchive-tools), `7z` "
    "(apt install p7zip-full), or `pip install rarfile` together with one of these programs"
)


def rar_backend() -> tuple[str, str | None]:
    """("rarfile", None) if the rarfile package can extract, else (tool, path) of the first program found.

    Raises DataError when none is available.
    """
    try:
        import rarfile  # optional dependency

        rarfile.tool_setup()
        return "rarfile", None
    except Exception:  # not installed, or no program behind it
        pass
    for tool in _RAR_TOOLS:
        path = shutil.which(tool)
        if path:
            return tool, path
    raise DataError(NO_RAR_BACKEND.format(archive="(any)"))


def _extract_rar(archive: Path, dest: Path, max_bytes: int, max_ratio: float) -> list[str]:
    """RAR through the ``rarfile`` package: checked as zip and tar are, before writing. Through an
    ``unrar``/``bsdtar``/``7z`` program, whose listings give names only: the names are checked before,
    sizes are not, and links are refused after extraction (``unrar`` >= 6.12 and ``bsdtar`` refuse to
    write through links themselves)."""
    try:
        backend, exe = rar_backend()
    except DataError:
        raise DataError(NO_RAR_BACKEND.format(archive=archive)) from None
    if backend == "rarfile":
        import rarfile

        with rarfile.RarFile(archive) as rf:
            infos = rf.infolist()
            members = []
            for info in infos:
                if info.is_symlink():
                    _refuse_link(info.filename, None, archive)
                path = check_member(info.filename, dest, archive)
                members.append(_Member(info.filename, path, info.is_dir(), 0 if info.is_dir() else info.file_size))
            _check_before_writing(archive, dest, members, max_bytes, max_ratio)
            dest.mkdir(parents=True, exist_ok=True)
            rf.extractall(dest)
        names = [m.name for m in members]
    else:
        names = _rar_list(backend, exe, archive)
        _check_before_writing(archive, dest, [_Member(n, check_member(n, dest, archive), False, 0) for n in names],
                     max_bytes, max_ratio)
        dest.mkdir(parents=True, exist_ok=True)
        _run_tool(_rar_extract_cmd(backend, exe, archive, dest), archive)
    _check_extracted_links(names, dest, archive)
    return names


def _rar_list(tool: str, exe: str, archive: Path) -> list[str]:
    if tool == "unrar":
        out = _run_tool([exe, "lb", "-p-", str(archive)], archive)
        return [line for line in out.splitlines() if line.strip()]
    if tool == "bsdtar":
        out = _run_tool([exe, "-tf", str(archive)], archive)
        return [line for line in out.splitlines() if line.strip()]
    out = _run_tool([exe, "l", "-ba", "-slt", str(archive)], archive)  # 7z
    return [line[len("Path = "):] for line in out.splitlines() if line.startswith("Path = ")]


def _rar_extract_cmd(tool: str, exe: str, archive: Path, dest: Path) -> list[str]:
    if tool == "unrar":
        return [exe, "x", "-o+", "-p-", "-y", str(archive), str(dest) + os.sep]
    if tool == "bsdtar":
        return [exe, "-xf", str(archive), "-C", str(dest)]
    return [exe, "x", "-y", f"-o{dest}", str(archive)]  # 7z


def _run_tool(cmd: list[str], archive: Path) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DataError(f"{Path(cmd[0]).name} failed on {archive} (exit {result.returncode}): {' / '.join(tail)}")
    return result.stdout


def _check_extracted_links(names: list[str], dest: Path, archive: Path) -> None:
    """After an external program ran: remove and refuse any extracted link (saying if it points outside)."""
    root = os.path.realpath(dest)
    for name in names:
        path = dest / check_member(name, dest, archive)
        if path.is_symlink():
            target = os.path.realpath(path)
            path.unlink()
            where = "it points outside" if target != root and not target.startswith(root + os.sep) else "inside"
            raise DataError(f"{archive}: refusing link member {name!r}: {where} {dest}; archives with links are "
                            f"not unpacked (the official ones hold none)")


# ---- fetch: download + unpack + move into place ------------------------------------------


def fetch_step(step: Step, dataset_root: str | Path, *, keep_archives: bool = False, progress: bool = True) -> Path:
    """Download, unpack and move one step's content into ``dataset_root/step.into``; resumable.

    Each archive is checked against its SHA-256 (``check_archive``) before unpacking. A step that
    finished before (marker ``.fetched/<name>.done``) is skipped.
    """
    root = Path(dataset_root)
    marker = root / ".fetched" / f"{step.name}.done"
    target = root / step.into
    if marker.is_file():
        return target
    downloads = root / "downloads"
    files = [download(url, downloads / url.rsplit("/", 1)[-1], progress=progress) for url in step.urls]
    for url, path in zip(step.urls, files):
        check_archive(path, url, root)
    archive = files[0] if len(files) == 1 else concat_parts(files, downloads / files[0].name[:-4])
    staging = root / ".unpack" / step.name
    shutil.rmtree(staging, ignore_errors=True)
    safe_extract(archive, staging, progress=progress)
    if step.nested:
        inner_root = root / ".unpack" / f"{step.name}-inner"
        for inner in tqdm(sorted(staging.rglob("*.rar")), desc="class archives", disable=not progress):
            safe_extract(inner, inner_root)
        shutil.rmtree(staging)
        staging = inner_root
    merge_move(staging / step.strip if step.strip else staging, target)
    shutil.rmtree(root / ".unpack", ignore_errors=True)
    atomic_write(marker, "\n".join(step.urls) + "\n")
    if not keep_archives:
        for path in {*files, archive}:
            path.unlink(missing_ok=True)
    return target


def merge_move(src: Path, dst: Path) -> None:
    """Move the content of folder ``src`` into ``dst`` (created if needed), merging sub-folders."""
    if not src.is_dir():
        raise DataError(f"expected folder {src} in the unpacked archive; the archive layout is not the known one")
    dst.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        target = dst / child.name
        if child.is_dir() and target.is_dir() and not target.is_symlink():
            merge_move(child, target)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(child, target)
    src.rmdir()


# ---- verify ------------------------------------------------------------------------------


@dataclass
class SplitCheck:
    """One split: what the split files list and how much of it is on disk."""

    split: int
    classes: int
    train_listed: int
    test_listed: int
    train_found: int
    test_found: int
    missing: list[str] = field(default_factory=list)  # relpaths of listed videos not found
    expected_classes: int | None = None
    train_expected: int | None = None  # official numbers (None for the synthetic set)
    test_expected: int | None = None

    @property
    def ok(self) -> bool:
        official = (self.expected_classes, self.train_expected, self.test_expected)
        listed = (self.classes, self.train_listed, self.test_listed)
        agrees = all(e is None or e == n for e, n in zip(official, listed))
        return agrees and not self.missing


@dataclass
class VerifyReport:
    """``verify_dataset``'s findings; ``summary()`` is what the commands print."""

    dataset: str
    root: Path
    kind: str  # "videos", or "frames (<layout> layout)"
    on_disk: int  # videos (files or frame folders) found under root
    splits: list[SplitCheck] = field(default_factory=list)
    case_mismatch: list[str] = field(default_factory=list)  # found only with other letter case
    incomplete: list[str] = field(default_factory=list)  # frames: no RGB or no flow frames
    damaged: list[str] = field(default_factory=list)  # frames disagreeing with prepare's marker (or without one)
    archives_checked: int = 0  # archives in downloads/ checked against archives.sha256
    archive_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.splits) and not (self.incomplete or self.damaged or self.archive_problems)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self, max_list: int = 20) -> str:
        lines = [f"{self.dataset}: {self.on_disk} {self.kind} under {self.root}"]
        for s in self.splits:
            lines.append(
                f"  split {s.split}: {s.classes} classes{_vs(s.expected_classes, s.classes)}, "
                f"train {s.train_found}/{s.train_listed} found{_vs(s.train_expected, s.train_listed)}, "
                f"test {s.test_found}/{s.test_listed} found{_vs(s.test_expected, s.test_listed)}"
            )
        missing = sorted({m for s in self.splits for m in s.missing})
        if missing:
            lines.append(f"  MISSING {len(missing)} listed video(s):")
            lines += [f"    {m}" for m in missing[:max_list]]
            if len(missing) > max_list:
                lines.append(f"    ... and {len(missing) - max_list} more")
        if self.incomplete:
            lines.append(f"  INCOMPLETE {len(self.incomplete)} video(s) without RGB or flow frames:")
            lines += [f"    {m}" for m in self.incomplete[:max_list]]
        if self.damaged:
            lines.append(f"  DAMAGED {len(self.damaged)} video(s) whose frames on disk disagree with prepare's marker:")
            lines += [f"    {m}" for m in self.damaged[:max_list]]
        if self.archives_checked or self.archive_problems:
            lines.append(f"  archives: {self.archives_checked} checked against {ARCHIVE_HASHES}, "
                         f"{len(self.archive_problems)} differ")
            lines += [f"    {m}" for m in self.archive_problems]
        if self.case_mismatch:
            lines.append(
                f"  note: {len(self.case_mismatch)} video(s) found only with different letter case "
                f"(accepted), e.g. {self.case_mismatch[0]}"
            )
        lines.append("  OK: everything listed is present" if self.ok else "  PROBLEMS FOUND (see above)")
        return "\n".join(lines)


def _vs(expected: int | None, got: int) -> str:
    if expected is None:
        return ""
    return f" (official {expected})" if expected == got else f" (OFFICIAL {expected}: split files differ!)"


def verify_dataset(
    dataset: str, root: str | Path, split_dir: str | Path, *, splits: Sequence[int] = (1, 2, 3)
) -> VerifyReport:
    """Check the videos (or a frame store) under ``root`` against the split files in ``split_dir``.

    Per split: classes, listed vs official train/test counts, and every listed video present (by
    name, so flat and per-class folders both work; a different letter case is accepted and noted).
    For a frame store, videos with no RGB or no flow frames are reported as incomplete, and videos
    whose frames disagree with prepare's marker as damaged. Archives kept in ``root/../downloads`` are
    checked against ``root/../archives.sha256``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist; expected the unpacked videos or frames there")
    loaded = [load_split(dataset, split_dir, s) for s in splits]
    kind, names, store = _inventory(root)
    folded = {n.casefold(): n for n in names}
    report = VerifyReport(dataset=loaded[0].dataset, root=root, kind=kind, on_disk=len(names))
    found: dict[str, str] = {}  # listed name -> name on disk
    for sp in loaded:
        check = _check_split(sp, names, folded, found)
        report.splits.append(check)
    report.case_mismatch = sorted(k for k, v in found.items() if k != v)
    if store is not None:
        for listed, disk in sorted(found.items()):
            try:
                counts = store.counts(disk)  # checks prepare's marker against the disk
            except DataError as err:
                report.damaged.append(f"{listed}: {err}")
                continue
            if min(counts.rgb, counts.flow) == 0:
                report.incomplete.append(listed)
    report.archives_checked, report.archive_problems = verify_archives(root.parent)
    return report


def _inventory(root: Path):
    """(kind, video names on disk, frame store or None)."""
    try:
        layout = detect_layout(root)
    except DataError:
        names = {
            os.path.splitext(f)[0]
            for _, _, files in os.walk(root)
            for f in files
            if os.path.splitext(f)[1].lower() in VIDEO_SUFFIXES
        }
        return "video files", names, None
    store = open_store(root, layout)
    return f"videos in a frame store ({layout} layout)", set(store.videos()), store


def _check_split(sp, names: set[str], folded: dict[str, str], found: dict[str, str]) -> SplitCheck:
    official = OFFICIAL_SPLIT_SIZES.get(sp.dataset, {}).get(sp.split, (None, None))
    counts, missing = {}, []
    for part, items in (("train", sp.train), ("test", sp.test)):
        n = 0
        for item in items:
            disk = item.name if item.name in names else folded.get(item.name.casefold())
            if disk is None:
                missing.append(item.relpath)
            else:
                found[item.name] = disk
                n += 1
        counts[part] = n
    return SplitCheck(
        split=sp.split,
        classes=len(sp.classes),
        train_listed=len(sp.train),
        test_listed=len(sp.test),
        train_found=counts["train"],
        test_found=counts["test"],
        missing=missing,
        expected_classes=OFFICIAL_NUM_CLASSES.get(sp.dataset),
        train_expected=official[0],
        test_expected=official[1],
    )


# ---- command line ------------------------------------------------------------------------


def cli_main(argv: list[str]) -> int:
    """``fetch`` and ``verify`` commands (``argv[0]`` is the command name)."""
    command, rest = argv[0], argv[1:]
    try:
        if command == "fetch":
            return _fetch_cli(rest)
        if command == "verify":
            return _verify_cli(rest)
    except (ConfigError, DataError, StorageError) as err:
        print(f"error: {err.strerror if isinstance(err, StorageError) else err}", file=sys.stderr)
        return 2
    print(f"unknown command {command!r}; expected 'fetch' or 'verify'", file=sys.stderr)
    return 2


def _verify_cli(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twostream_lib verify",
        description="Check videos or a frame store against the official split files: classes, "
        "train/test counts per split, every listed video present. Exit code 1 if anything is missing.",
    )
    parser.add_argument("dataset", choices=["ucf101", "hmdb51", "synthetic"])
    parser.add_argument("root", help="video folder, or frame store root (jpegs_256/, packed/ or rawframes)")
    parser.add_argument("--splits", default=None, help="split files folder (default: ROOT/../splits)")
    parser.add_argument("--split", type=int, nargs="+", default=[1, 2, 3], help="which splits (default 1 2 3)")
    a = parser.parse_args(args)
    split_dir = a.splits or Path(a.root).parent / "splits"
    report = verify_dataset(a.dataset, a.root, split_dir, splits=a.split)
    print(report.summary())
    return report.exit_code


def _fetch_cli(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twostream_lib fetch",
        description="Download, unpack and verify UCF101/HMDB51 (needs internet; resumable: run it again "
        "after an interruption). Archives fetched by hand can be put in <root>/<dataset>/downloads/. "
        "'weights' downloads the ImageNet VGG-M-2048 network (imagenet-vgg-m-2048.mat) to <root>/weights/, "
        "where the paper profile expects it (run from the repository root with the default --root).",
    )
    parser.add_argument("datasets", nargs="+", choices=[*sorted(SOURCES), "weights"])
    parser.add_argument("--root", default="data", help="data folder (default: data)")
    parser.add_argument("--precomputed", action="store_true", help="also fetch the authors' jpegs_256 + tvl1_flow")
    parser.add_argument("--no-videos", action="store_true", help="skip the video archives")
    parser.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    a = parser.parse_args(args)
    status = 0
    if "weights" in a.datasets:
        for path in fetch_weights(a.root, progress=not a.quiet):
            print(f"[weights] {path} ({path.stat().st_size / 1e6:.1f} MB, SHA-256 in {path.parent / WEIGHT_HASHES})")
    for dataset in (d for d in a.datasets if d != "weights"):
        root = Path(a.root) / dataset
        groups = ["splits"] + ([] if a.no_videos else ["videos"]) + (["precomputed"] if a.precomputed else [])
        for group in groups:
            for step in SOURCES[dataset][group]:
                print(f"[{dataset}] {step.name}: {', '.join(step.urls)}")
                fetch_step(step, root, keep_archives=a.keep_archives, progress=not a.quiet)
        for sub in ("videos", "frames"):
            if (root / sub).is_dir():
                report = verify_dataset(dataset, root / sub, root / "splits")
                print(report.summary())
                status = max(status, report.exit_code)
    return status
