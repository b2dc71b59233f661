"""IDT pipeline for Table 6: descriptors per video (cached, parallel, resumable) -> Fisher vectors ->
one-vs-rest linear SVM -> per-video scores -> late fusion with the ConvNet.

Feichtenhofer, Pinz, Zisserman, CVPR 2016, Sec. 4.6: "We simply average the SVM scores of the
FV-encoded IDT descriptors (i.e. HOG, HOF, MBH) with the predictions (taken before softmax) of our
ConvNet representations" (Table 6). IDT = improved dense trajectories of Wang & Schmid (ICCV 2013),
see :mod:`.trajectories`; Fisher vectors of Perronnin et al. (ECCV 2010), see :mod:`.fisher`.

Steps (each a function; :func:`idt_scores` chains them for one split)::

    extract_descriptors(source, videos, cache_dir)   # per-video .npz cache, process pool, resumable
    encoder = fit_encoder(cache_dir, train_videos)    # PCA to D/2 + diagonal GMM per descriptor type
    X = encode(encoder, cache_dir, videos)             # improved Fisher vectors, per type, concatenated
    svm = train_svm(X_train, y_train, C=100)           # one-vs-rest linear SVM
    S = svm_scores(svm, X_test, num_classes)           # [N, C] decision values
    late_fuse_idt(convnet_scores, idt_scores)          # z-score per video, then average (Table 6)

Score normalisation for the fusion. SVM decision values (about -1..1) and pre-softmax ConvNet
scores (any scale, set by training) are not on a common scale, so a plain average would be
dominated by whichever is larger. The paper does not say how it scaled them; we standardise each
video's score vector over the classes (subtract its mean over classes, divide by its standard
deviation) before averaging with equal weights. This needs no training data, leaves each method's
own ranking of classes unchanged, and makes both contribute equally (``normalise="none"`` gives the
raw average).

Command line (``python -m twostream_lib idt ...``)::

    idt extract SOURCE --cache DIR (--split-dir DIR --dataset D --split N | --videos A B ...)
    idt encode --cache DIR --split-dir DIR --dataset D --split N --out DIR [--components 256]
    idt evaluate --features DIR/features.npz --out scores.npz [--C 100] [--convnet SCORES.npz]
"""
from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.files import atomic_write
from twostream_lib.workers import worker_context

from .descriptors import DESCRIPTOR_TYPES
from .fisher import FisherEncoder, fit_fisher_encoder, svm_scores, train_svm
from .trajectories import DTParams, Trajectories, extract_trajectories

__all__ = [
    "ExtractReport",
    "cache_path",
    "cli_main",
    "encode",
    "extract_descriptors",
    "extract_video",
    "fit_encoder",
    "idt_scores",
    "late_fuse_idt",
    "load_descriptors",
    "read_video_frames",
    "svm_scores",
    "train_svm",
    "zscore_per_video",
]

CACHE_VERSION = 1
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
_STORE_CHUNK = 32  # frames read from a frame store at a time


# ----------------------------------------------------------------------------- reading videos

def read_video_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Grey frames of a video file, decoded lazily with OpenCV; DataError names the file.

    The container's frame count is not trusted (real UCF101/HMDB51 headers disagree with the
    decoder); frames are read until the decoder stops.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open the video (corrupt file or unsupported format)")

    def gen() -> Iterator[np.ndarray]:
        n = 0
        try:
            while max_frames is None or n < max_frames:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                n += 1
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        finally:
            cap.release()
        if n == 0:
            raise DataError(f"{path}: no frame could be decoded (corrupt or empty video)")

    return gen()


def _store_frames(store, video: str, max_frames: int | None, where: str) -> Iterator[np.ndarray]:
    try:
        counts = getattr(store, "counts", None)
        n = int(counts(video).rgb) if counts is not None else int(store.num_frames(video))
    except DataError:
        raise
    except Exception as e:  # a store-specific lookup error
        raise DataError(f"{where}: video {video!r} not readable from the frame store ({e})") from e
    if n <= 0:
        raise DataError(f"{where}: video {video!r} has no RGB frames in the frame store")
    if max_frames is not None:
        n = min(n, max_frames)

    def gen() -> Iterator[np.ndarray]:
        for start in range(0, n, _STORE_CHUNK):
            block = store.read_rgb(video, list(range(start, min(n, start + _STORE_CHUNK))))
            yield from block

    return gen()


def extract_video(source, video: str | None = None, *, params: DTParams | None = None,
                  max_frames: int | None = None) -> Trajectories:
    """Trajectories and descriptors of one video (Wang & Schmid, ICCV 2013).

    ``source`` is a video file path, a frame store (``open_store(root)``; then ``video`` names the
    video), or an array of frames ``[T, H, W(, 3)]``. Raises DataError naming the file for a
    missing, corrupt or empty video.
    """
    if isinstance(source, (str, Path)):
        frames = read_video_frames(source, max_frames)
        where = str(source)
    elif hasattr(source, "read_rgb"):
        if video is None:
            raise ConfigError("extract_video: name the video to read from the frame store")
        where = f"{getattr(source, 'root', source)}"
        frames = _store_frames(source, video, max_frames, where)
    else:
        frames = np.asarray(source)
        where = "frames"
    try:
        return extract_trajectories(frames, params, max_frames=max_frames)
    except DataError as e:
        msg = str(e)
        raise DataError(msg if msg.startswith(where) else f"{where}: {msg}") from e


# ----------------------------------------------------------------------------- cache

def cache_path(cache_dir: str | Path, video: str) -> Path:
    """The descriptor cache file of ``video``: ``cache_dir/<video>.npz``."""
    return Path(cache_dir) / f"{video}.npz"


def _meta_key(params: DTParams, max_frames: int | None, dtype: str) -> dict:
    return {"version": CACHE_VERSION, "params": params.to_dict(), "max_frames": max_frames, "dtype": dtype}


def _read_meta(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except Exception:  # noqa: BLE001  (unreadable / partial file: treat as not cached)
        return None


def _is_cached(path: Path, key: dict) -> bool:
    if not path.is_file():
        return False
    meta = _read_meta(path)
    return meta is not None and all(meta.get(k) == v for k, v in key.items())


def _write_cache(path: Path, tr: Trajectories, key: dict, source: str, seconds: float) -> None:
    dtype = np.float16 if key["dtype"] == "float16" else np.float32
    meta = dict(key, source=source, num_frames=tr.num_frames, frame_size=list(tr.frame_size),
                trajectories=len(tr), info=tr.info, seconds=round(seconds, 3))
    arrays = {t: tr.descriptors[t].astype(dtype) for t in DESCRIPTOR_TYPES}
    arrays.update(points=tr.points.astype(np.float32), end_frame=tr.end_frame, scale=tr.scale,
                  meta=np.asarray(json.dumps(meta)))
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def load_descriptors(cache_dir: str | Path, video: str) -> dict[str, np.ndarray]:
    """Cached descriptors of ``video``: ``{"traj", "hog", "hof", "mbhx", "mbhy": float32 [n, dim]}``
    plus ``"points"`` ``[n, L+1, 2]``, ``"end_frame"``, ``"scale"`` and ``"meta"`` (a dict)."""
    path = cache_path(cache_dir, video)
    if not path.is_file():
        raise DataError(f"{path}: no cached descriptors for video {video!r}; run extract_descriptors first")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {t: z[t].astype(np.float32) for t in DESCRIPTOR_TYPES}
            out.update(points=z["points"], end_frame=z["end_frame"], scale=z["scale"])
            out["meta"] = json.loads(str(z["meta"]))
    except (KeyError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a descriptor cache written by extract_descriptors ({e})") from e
    return out


# ----------------------------------------------------------------------------- extraction (parallel)

@dataclass
class ExtractReport:
    """Outcome of :func:`extract_descriptors`: videos extracted, skipped (cached) and failed (reason)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    trajectories: dict[str, int] = field(default_factory=dict)  # per extracted video
    seconds: float = 0.0


def _video_name_and_locator(v, kind: str, root: Path | None) -> tuple[str, object]:
    """(cache name, what the worker opens) for one entry of ``videos``."""
    name = getattr(v, "name", None)
    if kind == "video":
        rel = getattr(v, "relpath", None) or str(v)
        p = Path(rel)
        if root is not None and not p.is_absolute():
            p = root / p if root.is_dir() else root
        return (name or p.stem), str(p)
    return (name or str(v)), (name or str(v))


def _resolve_kind(source, videos: Sequence, kind: str) -> str:
    if kind not in ("auto", "video", "store"):
        raise ConfigError(f"extract_descriptors: kind must be 'auto', 'video' or 'store', got {kind!r}")
    if kind != "auto":
        return kind
    if hasattr(source, "read_rgb"):
        return "store"
    root = Path(source)
    if root.is_file():
        return "video"
    if not root.is_dir():
        raise DataError(f"{root}: source is neither a video file, a video folder nor a frame store")
    for v in videos[:1]:
        rel = getattr(v, "relpath", None) or str(v)
        if Path(rel).suffix.lower() in VIDEO_SUFFIXES and ((root / rel).exists() or Path(rel).is_absolute()):
            return "video"
    return "store"


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _extract_task(task: tuple) -> tuple[str, str | None, int, float]:
    """Worker: extract one video and write its cache; (name, error or None, trajectories, seconds)."""
    name, kind, locator, store_spec, params_dict, max_frames, out_path, key = task
    t0 = time.perf_counter()
    params = DTParams(**params_dict)
    try:
        if kind == "video":
            tr = extract_video(locator, params=params, max_frames=max_frames)
            where = locator
        else:
            store = store_spec if hasattr(store_spec, "read_rgb") else _open_store(*store_spec)
            tr = extract_video(store, locator, params=params, max_frames=max_frames)
            where = f"{getattr(store, 'root', store_spec)}:{locator}"
        seconds = time.perf_counter() - t0
        _write_cache(Path(out_path), tr, key, str(where), seconds)
        return name, None, len(tr), seconds
    except DataError as e:
        return name, str(e), 0, time.perf_counter() - t0
    except (cv2.error, OSError, ValueError) as e:
        where = locator if kind == "video" else f"{store_spec}:{locator}"
        return name, f"{where}: {type(e).__name__}: {e}", 0, time.perf_counter() - t0


def _open_store(root: str, layout: str):
    try:
        from twostream_lib.data.stores import open_store
    except ImportError as e:  # pragma: no cover - the stores module ships with the package
        raise ConfigError(f"frame stores need twostream_lib.data.stores ({e})") from e
    return open_store(root, layout)


def extract_descriptors(source, videos: Sequence, cache_dir: str | Path, *, params: DTParams | None = None,
                        kind: str = "auto", layout: str = "auto", max_frames: int | None = None,
                        workers: int = 2, progress: bool = True, overwrite: bool = False,
                        errors: str = "raise", dtype: str = "float16") -> ExtractReport:
    """Extract IDT descriptors of ``videos`` into ``cache_dir/<video>.npz`` (one file per video).

    ``source``: a folder of video files (``videos`` are ``VideoItem`` with ``relpath``, or paths
    relative to it), a single video file, a frame store root (``open_store(root, layout)``; ``videos``
    are ``VideoItem``s or names) or a frame store object. ``kind="auto"`` tells them apart. Videos
    whose cache file exists with the same parameters are skipped (resumable; a file is written to a
    temporary name and renamed, so an interrupted run leaves no partial cache). ``workers`` > 1 runs
    a process pool (OpenCV single-threaded in each). Descriptors are stored as ``dtype``
    ("float16" halves the disk space; values are in [-1, 1]). ``errors="raise"`` raises DataError
    naming every failed video after the others are done; ``"record"`` only reports them.
    """
    if errors not in ("raise", "record"):
        raise ConfigError(f"extract_descriptors: errors must be 'raise' or 'record', got {errors!r}")
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"extract_descriptors: dtype must be 'float16' or 'float32', got {dtype!r}")
    if workers < 1:
        raise ConfigError(f"extract_descriptors: workers must be >= 1, got {workers}")
    params = (params or DTParams()).validate()
    videos = list(videos)
    kind = _resolve_kind(source, videos, kind)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _meta_key(params, max_frames, dtype)
    root = None if hasattr(source, "read_rgb") else Path(source)
    if kind == "store":
        store_spec = source if hasattr(source, "read_rgb") else (str(source), layout)
    else:
        store_spec = None
    report = ExtractReport()
    tasks, seen = [], set()
    for v in videos:
        name, locator = _video_name_and_locator(v, kind, root)
        if name in seen:
            continue
        seen.add(name)
        out = cache_path(cache_dir, name)
        if not overwrite and _is_cached(out, key):
            report.skipped.append(name)
            continue
        tasks.append((name, kind, locator, store_spec, params.to_dict(), max_frames, str(out), key))

    from tqdm import tqdm

    t0 = time.perf_counter()
    bar = tqdm(total=len(tasks), desc="idt extract", disable=not progress, unit="video")
    results = []
    try:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(_extract_task(task))
                bar.update(1)
        else:
            if store_spec is not None and hasattr(store_spec, "read_rgb"):
                try:
                    pickle.dumps(store_spec)
                except Exception as e:
                    raise ConfigError("extract_descriptors: this frame store object cannot be sent to "
                                      f"worker processes ({e}); pass its root folder or workers=1") from e
            # the library's fork server (spawn off Linux), not a fork of this process: a child forked
            # after this process ran OpenCV's thread pool (an extraction with workers=1 before) hung
            # forever in its first cv2 call; the workers only run OpenCV/NumPy, single-threaded
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=worker_context(),
                                     initializer=_init_worker) as pool:
                futures = [pool.submit(_extract_task, t) for t in tasks]
                try:
                    for fut in as_completed(futures):
                        results.append(fut.result())
                        bar.update(1)
                except BaseException:
                    # stopped (Ctrl-C, SystemExit from a stop signal, a worker's crash): the videos not
                    # started yet are left to the next call, not extracted while the pool shuts down
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    for name, err, n, _ in results:
        if err is None:
            report.done.append(name)
            report.trajectories[name] = n
        else:
            report.failed[name] = err
    report.seconds = time.perf_counter() - t0
    if report.failed and errors == "raise":
        lines = "; ".join(f"{k}: {v}" for k, v in sorted(report.failed.items())[:5])
        raise DataError(f"IDT extraction failed for {len(report.failed)} of {len(tasks)} videos "
                        f"(the others are cached): {lines}")
    return report


# ----------------------------------------------------------------------------- encoding and SVM

def _names(videos: Sequence) -> list[str]:
    return [getattr(v, "name", None) or str(v) for v in videos]


def fit_encoder(cache_dir: str | Path, train_videos: Sequence, *, n_components: int = 256,
                max_descriptors: int = 256_000, pca_fraction: float = 0.5,
                types: Sequence[str] = DESCRIPTOR_TYPES, seed: int = 0, max_iter: int = 100,
                progress: bool = True) -> FisherEncoder:
    """Fit the Fisher encoder (PCA to D/2 + diagonal GMM per type) on cached training descriptors.

    As Wang & Schmid (ICCV 2013, Sec. 4): a random sample of at most ``max_descriptors``
    trajectories (256,000 in the paper), drawn evenly over the training videos (the same
    trajectories for every type), and ``n_components`` Gaussians (256 on real data).
    """
    names = _names(train_videos)
    if not names:
        raise DataError("fit_encoder: no training videos")
    rng = np.random.default_rng(seed)
    per_video = max(1, math.ceil(max_descriptors / len(names)))
    parts: dict[str, list[np.ndarray]] = {t: [] for t in types}
    from tqdm import tqdm

    for name in tqdm(names, desc="idt sample", disable=not progress, unit="video"):
        d = load_descriptors(cache_dir, name)
        n = len(d[types[0]])
        if n == 0:
            continue
        rows = rng.choice(n, size=per_video, replace=False) if n > per_video else np.arange(n)
        for t in types:
            parts[t].append(d[t][rows])
    total = sum(len(p) for p in parts[types[0]])
    if total < max(n_components, 2):
        raise DataError(f"fit_encoder: only {total} training trajectories in {cache_dir} for {len(names)} "
                        f"videos; need at least n_components={n_components}")
    sample = {t: np.concatenate(parts[t]) for t in types}
    if total > max_descriptors:
        rows = rng.choice(total, size=max_descriptors, replace=False)
        sample = {t: x[rows] for t, x in sample.items()}
    return fit_fisher_encoder(sample, n_components=n_components, pca_fraction=pca_fraction, types=types,
                              seed=seed, max_iter=max_iter)


def encode(encoder: FisherEncoder, cache_dir: str | Path, videos: Sequence, *, progress: bool = True) -> np.ndarray:
    """Improved Fisher vectors ``[N, encoder.dim]`` (float32) of cached videos, in the given order.

    A video without any trajectory encodes to the zero vector.
    """
    from tqdm import tqdm

    names = _names(videos)
    out = np.zeros((len(names), encoder.dim), np.float32)
    for i, name in enumerate(tqdm(names, desc="idt encode", disable=not progress, unit="video")):
        out[i] = encoder.encode(load_descriptors(cache_dir, name))
    return out


# ----------------------------------------------------------------------------- scores and fusion

def _video_scores(videos, labels, scores):
    """A ``twostream_lib.evaluate.VideoScores`` (the type the rest of the library reads)."""
    from twostream_lib.evaluate import VideoScores

    return VideoScores(list(videos), np.asarray(labels, np.int64), np.asarray(scores, np.float32))


def _as_triplet(s, what: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    if hasattr(s, "videos") and hasattr(s, "scores") and hasattr(s, "labels"):
        return list(s.videos), np.asarray(s.labels), np.asarray(s.scores, np.float64)
    if isinstance(s, (tuple, list)) and len(s) == 3:
        return [str(v) for v in s[0]], np.asarray(s[1]), np.asarray(s[2], np.float64)
    raise ConfigError(f"late_fuse_idt: {what} must be a VideoScores or a (videos, labels, scores) triple")


def idt_scores(source, train: Sequence, test: Sequence, *, cache_dir: str | Path,
               num_classes: int | None = None, params: DTParams | None = None, n_components: int = 256,
               max_descriptors: int = 256_000, C: float = 100.0, kind: str = "auto", layout: str = "auto",
               max_frames: int | None = None, workers: int = 2, seed: int = 0, progress: bool = True):
    """Per-video IDT SVM scores of the ``test`` videos, trained on ``train`` (``VideoItem`` lists).

    Runs :func:`extract_descriptors` (cached, resumable) on both lists, :func:`fit_encoder` on the
    training descriptors, :func:`encode`, :func:`train_svm` and :func:`svm_scores`. Returns a
    ``twostream_lib.evaluate.VideoScores`` (videos in ``test`` order, labels, scores [N, C]).
    """
    train, test = list(train), list(test)
    if not train or not test:
        raise DataError(f"idt_scores: need training and test videos, got {len(train)} and {len(test)}")
    c = int(num_classes if num_classes is not None else 1 + max(int(v.label) for v in train + test))
    extract_descriptors(source, train + test, cache_dir, params=params, kind=kind, layout=layout,
                        max_frames=max_frames, workers=workers, progress=progress)
    encoder = fit_encoder(cache_dir, train, n_components=n_components, max_descriptors=max_descriptors,
                          seed=seed, progress=progress)
    x_train = encode(encoder, cache_dir, train, progress=progress)
    x_test = encode(encoder, cache_dir, test, progress=progress)
    svm = train_svm(x_train, np.array([v.label for v in train]), C=C, seed=seed)
    scores = svm_scores(svm, x_test, c)
    return _video_scores([v.name for v in test], np.array([v.label for v in test]), scores)


def zscore_per_video(scores: np.ndarray) -> np.ndarray:
    """Standardise each row (video) over the classes: ``(s - mean_c s) / std_c s`` (0 for a flat row)."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 2:
        raise DataError(f"zscore_per_video: expected scores [N, C], got {list(s.shape)}")
    mu = s.mean(axis=1, keepdims=True)
    sd = s.std(axis=1, keepdims=True)
    return np.where(sd > 0, (s - mu) / np.where(sd > 0, sd, 1.0), 0.0)


def late_fuse_idt(convnet_scores, idt: object, *, weights: tuple[float, float] = (0.5, 0.5),
                  normalise: str = "zscore"):
    """Table 6 fusion (Sec. 4.6): average the ConvNet's pre-softmax scores with the IDT SVM scores.

    Both arguments are ``VideoScores`` (or ``(videos, labels, scores)`` triples) over the same
    videos and classes; ``idt`` is aligned to the ConvNet's video order. ``normalise="zscore"``
    (default) standardises each video's scores over the classes before the weighted sum (see the
    module docstring for why); ``"none"`` averages the raw values. Returns a ``VideoScores``.
    """
    if normalise not in ("zscore", "none"):
        raise ConfigError(f"late_fuse_idt: normalise must be 'zscore' or 'none', got {normalise!r}")
    from twostream_lib.evaluate import late_fuse

    va, la, sa = _as_triplet(convnet_scores, "convnet_scores")
    vb, lb, sb = _as_triplet(idt, "idt")
    if normalise == "zscore":
        sa, sb = zscore_per_video(sa), zscore_per_video(sb)
    return late_fuse(_video_scores(va, la, sa), _video_scores(vb, lb, sb), tuple(weights), mode="scores")


# ----------------------------------------------------------------------------- command line

def _split_items(args) -> tuple[list, list, int]:
    from twostream_lib.data.splits import load_split

    sp = load_split(args.dataset, args.split_dir, args.split)
    train, test = list(sp.train), list(sp.test)
    if args.max_videos:
        train, test = train[: args.max_videos], test[: args.max_videos]
    return train, test, len(sp.classes)


def _params_from_args(args) -> DTParams:
    return DTParams(improved=not args.dt, keypoints=args.keypoints).validate()


def _cmd_extract(args) -> int:
    if args.videos:
        videos: list = list(args.videos)
    elif args.split_dir:
        train, test, _ = _split_items(args)
        videos = train + test
    else:
        src = Path(args.source)
        if not src.is_file():
            raise ConfigError("idt extract: give --videos, or --split-dir/--dataset/--split, or a single video file")
        videos = [src.name]
        args.source = str(src.parent)
    rep = extract_descriptors(args.source, videos, args.cache, params=_params_from_args(args), kind=args.kind,
                              layout=args.layout, max_frames=args.max_frames, workers=args.workers,
                              progress=not args.no_progress, errors="record")
    n = sum(rep.trajectories.values())
    print(f"extracted {len(rep.done)} videos ({n} trajectories) in {rep.seconds:.1f} s, "
          f"skipped {len(rep.skipped)} cached, failed {len(rep.failed)}")
    for name, why in sorted(rep.failed.items()):
        print(f"  FAILED {name}: {why}", file=sys.stderr)
    return 1 if rep.failed else 0


def _cmd_encode(args) -> int:
    train, test, num_classes = _split_items(args)
    enc = fit_encoder(args.cache, train, n_components=args.components, max_descriptors=args.max_descriptors,
                      seed=args.seed, progress=not args.no_progress)
    out = Path(args.out)
    enc.save(out / "encoder.npz")
    x_train = encode(enc, args.cache, train, progress=not args.no_progress)
    x_test = encode(enc, args.cache, test, progress=not args.no_progress)
    atomic_write(out / "features.npz", lambda tmp: np.savez(
                 tmp, train_videos=np.asarray([v.name for v in train], np.str_),
                 train_labels=np.array([v.label for v in train], np.int64), train_x=x_train,
                 test_videos=np.asarray([v.name for v in test], np.str_),
                 test_labels=np.array([v.label for v in test], np.int64), test_x=x_test,
                 num_classes=np.int64(num_classes)))
    print(f"Fisher vectors of {len(train)} train and {len(test)} test videos ({enc.dim} dims) -> {out}")
    return 0


def _cmd_evaluate(args) -> int:
    from twostream_lib.evaluate import accuracy, load_scores, save_scores

    path = Path(args.features)
    if not path.is_file():
        raise DataError(f"{path}: no features file (run 'idt encode' first)")
    with np.load(path, allow_pickle=False) as z:
        f = {k: z[k] for k in z.files}
    svm = train_svm(f["train_x"], f["train_labels"], C=args.C, seed=args.seed)
    num_classes = int(f["num_classes"])
    s = svm_scores(svm, f["test_x"], num_classes)
    vs = _video_scores([str(v) for v in f["test_videos"]], f["test_labels"], s)
    save_scores(vs, args.out)
    print(f"IDT (FV + linear SVM, C={args.C:g}): {100 * accuracy(vs):.1f}% on {len(vs.videos)} test videos "
          f"-> {args.out}")
    if args.convnet:
        conv = load_scores(args.convnet)
        fused = late_fuse_idt(conv, vs)
        print(f"ConvNet: {100 * accuracy(conv):.1f}%  ConvNet+IDT: {100 * accuracy(fused):.1f}%")
        if args.fused_out:
            save_scores(fused, args.fused_out)
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m twostream_lib idt",
                                 description="Improved dense trajectories + Fisher vectors + SVM (Table 6).")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def split_args(p, required: bool):
        p.add_argument("--split-dir", required=required, help="folder with the split files")
        p.add_argument("--dataset", default="synthetic", help="ucf101 | hmdb51 | synthetic")
        p.add_argument("--split", type=int, default=1)
        p.add_argument("--max-videos", type=int, default=None, help="cap train and test lists (smoke runs)")

    e = sub.add_parser("extract", help="descriptors per video into a cache folder (resumable)")
    e.add_argument("source", help="video folder, single video file or frame store root")
    e.add_argument("--cache", required=True)
    e.add_argument("--videos", nargs="*", help="video names or relative paths (instead of a split)")
    split_args(e, False)
    e.add_argument("--kind", default="auto", choices=("auto", "video", "store"))
    e.add_argument("--layout", default="auto", help="frame store layout")
    e.add_argument("--max-frames", type=int, default=None)
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--dt", action="store_true", help="plain dense trajectories (no camera-motion compensation)")
    e.add_argument("--keypoints", default="orb", choices=("orb", "sift", "none"))
    e.add_argument("--no-progress", action="store_true")

    c = sub.add_parser("encode", help="fit PCA + GMM on train descriptors; Fisher vectors of train and test")
    c.add_argument("--cache", required=True)
    split_args(c, True)
    c.add_argument("--out", required=True)
    c.add_argument("--components", type=int, default=256)
    c.add_argument("--max-descriptors", type=int, default=256_000)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--no-progress", action="store_true")

    v = sub.add_parser("evaluate", help="linear SVM on the Fisher vectors; test scores; optional fusion")
    v.add_argument("--features", required=True)
    v.add_argument("--out", required=True, help="scores .npz (evaluate.save_scores format)")
    v.add_argument("--C", type=float, default=100.0)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--convnet", default=None, help="ConvNet scores .npz to late-fuse with (Table 6)")
    v.add_argument("--fused-out", default=None)
    return ap


def cli_main(argv: Sequence[str]) -> int:
    """``python -m twostream_lib idt extract|encode|evaluate ...`` (``argv[0]`` is "idt")."""
    argv = list(argv)
    if argv and argv[0] == "idt":
        argv = argv[1:]
    args = _parser().parse_args(argv)
    try:
        return {"extract": _cmd_extract, "encode": _cmd_encode, "evaluate": _cmd_evaluate}[args.cmd](args)
    except (DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
