"""Video-level evaluation: scores averaged over each video's views, accuracy, late fusion.

Paper protocol (Section 3.5, "Testing"; Section 4.6): a video's prediction is the average of the
network's predictions over its sampled clips and their horizontal flips (T=5 frames and flips for
the ablations, 20 dense temporal samples and flips for Table 5); whole-frame fully convolutional
testing is the model's business (its FC layers run as convolutions and average over space). For a
two-tower architecture the model's ``"scores"`` already average both towers' predictions.

``predict`` averages the *pre-softmax* scores by default: Table 3's late fusion "averages the
prediction layer outputs" and Table 6 fuses IDT's SVM scores with "predictions (taken before
softmax)". ``late_fuse(..., mode="softmax")`` gives the classic two-stream softmax averaging of
Table 1 ("Sum, Softmax").

Accuracy is reported with its uncertainty (DESIGN.md: a finding holds only if a difference is larger
than it): :func:`standard_error` and the Wilson interval :func:`binomial_ci` over test videos.

Under ``torch.distributed`` (``torchrun``), :func:`predict` splits the (video, view) samples over the
processes without padding, gathers (index, video, view, scores) from all of them and counts every
video exactly once.

Whole frames of different sizes (HMDB51 keeps each clip's aspect ratio: height 240, widths vary;
Section 3.5's fully convolutional testing uses the entire frame) cannot share one tensor: each
DataLoader batch is split into groups of equal shapes (:func:`group_collate`), one forward pass each.
Frames of one size give the batches as before.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .engine import autocast, model_inputs, output_scores, unwrap, world
from .errors import ConfigError, DataError
from .files import atomic_write

__all__ = [
    "VideoScores",
    "predict",
    "group_collate",
    "accuracy",
    "confusion",
    "per_class_accuracy",
    "save_scores",
    "load_scores",
    "late_fuse",
    "standard_error",
    "binomial_ci",
]

@dataclass
class VideoScores:
    """Per-video scores: ``scores[i]`` is the average over video ``videos[i]``'s views."""

    videos: list[str]
    labels: np.ndarray  # int64 [N]
    scores: np.ndarray  # float32 [N, C], pre-softmax unless predict(softmax=True)
    views: np.ndarray | None = None  # int64 [N]: number of views averaged per video

    def __post_init__(self) -> None:
        self.videos = [str(v) for v in self.videos]
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if self.views is not None:
            self.views = np.asarray(self.views, dtype=np.int64)
        n = len(self.videos)
        if self.scores.ndim != 2 or self.scores.shape[0] != n or self.labels.shape != (n,):
            raise DataError(
                f"VideoScores: expected {n} videos, labels [{n}] and scores [{n}, C]; got labels "
                f"{list(self.labels.shape)} and scores {list(self.scores.shape)}")
        if self.views is not None and self.views.shape != (n,):
            raise DataError(f"VideoScores: views must have shape [{n}], got {list(self.views.shape)}")
        if len(set(self.videos)) != n:
            raise DataError("VideoScores: video names must be unique")

    @property
    def num_classes(self) -> int:
        return int(self.scores.shape[1])

    def predictions(self) -> np.ndarray:
        return self.scores.argmax(axis=1)


class _Indexed(Dataset):
    """Adds each sample's index in the wrapped data set (used to merge gathered results)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, dict]:
        return i, self.dataset[i]


def _shape_key(sample) -> tuple:
    """The shapes of a sample's tensors: samples with equal keys can be stacked into one batch."""
    if isinstance(sample, Mapping):
        return tuple((k, tuple(v.shape)) for k, v in sample.items() if isinstance(v, torch.Tensor))
    return ()


def group_collate(items: Sequence[tuple[int, object]]) -> list[tuple[torch.Tensor, object]]:
    """Collate ``(index, sample)`` pairs into ``[(indices, batch), ...]``, one batch per distinct set of
    tensor shapes (whole frames of different widths, HMDB51), groups in order of their first sample.
    Samples of one shape give one group: exactly ``default_collate``'s batch."""
    groups: dict[tuple, list] = {}
    for i, sample in items:
        groups.setdefault(_shape_key(sample), []).append((i, sample))
    return [(torch.tensor([i for i, _ in g], dtype=torch.int64),
             torch.utils.data.default_collate([s for _, s in g])) for g in groups.values()]


# ----------------------------------------------------------------------------- prediction

@torch.no_grad()
def predict(model: torch.nn.Module, views_set: Dataset, *, batch_size: int = 32,
            device: str | torch.device = "cpu", input_keys: Sequence[str] = ("rgb", "flow"),
            progress: bool = False, softmax: bool = False, workers: int = 0,
            amp: str | bool = "off", channels_last: bool = False) -> VideoScores:
    """Video-level scores: the model's scores averaged over every view (clip x flip) of each video.

    ``views_set[i]`` is a dict with the ``input_keys`` tensors, ``"label"``, ``"video"`` and
    ``"view"`` (as ``TwoStreamViews`` returns; without ``"video"`` each sample is its own video).
    The model is called as ``model(*[batch[k] for k in input_keys])`` in eval mode and returns a
    [B, C] tensor or a dict with ``"scores"``. ``softmax=True`` averages softmax probabilities
    instead of the pre-softmax scores. Videos come out in the order of their first view. Samples whose
    tensors differ in shape (whole frames of different widths) are run in groups of equal shape.

    Under ``torch.distributed`` each process scores every ``world``-th sample (no padding), the
    results are gathered on every process and each video is counted once.
    """
    if batch_size < 1:
        raise ConfigError(f"predict: batch_size must be >= 1, got {batch_size}")
    if len(views_set) == 0:
        raise DataError("predict: the views data set is empty")
    rank, world_size = world()
    net = unwrap(model)
    was_training = net.training
    net.eval()
    indices = list(range(rank, len(views_set), world_size))
    loader = DataLoader(Subset(_Indexed(views_set), indices), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=group_collate,
                        pin_memory=torch.device(device).type == "cuda")
    idx_parts, video_parts, view_parts, label_parts, score_parts = [], [], [], [], []
    from tqdm import tqdm

    try:
        for groups in tqdm(loader, desc="predict", disable=not progress or rank != 0, leave=False):
            for idx, batch in groups:  # one group unless the frames differ in size
                with autocast(amp, device):
                    scores = output_scores(net(*model_inputs(batch, input_keys, device, channels_last)))
                scores = scores.float()
                if softmax:
                    scores = scores.softmax(dim=1)
                idx_parts.append(idx.numpy())
                score_parts.append(scores.cpu().numpy())
                label_parts.append(np.asarray(batch["label"], dtype=np.int64))
                video_parts += (list(batch["video"]) if "video" in batch else [str(i) for i in idx.tolist()])
                view_parts.append(np.asarray(batch["view"], dtype=np.int64) if "view" in batch
                                  else np.zeros(len(idx), np.int64))
    finally:
        net.train(was_training)

    def cat(parts, dtype, shape=(0,)):
        return np.concatenate(parts) if parts else np.zeros(shape, dtype)

    local = (cat(idx_parts, np.int64), video_parts, cat(view_parts, np.int64),
             cat(label_parts, np.int64), cat(score_parts, np.float32, (0, 0)))
    if world_size > 1:
        gathered: list = [None] * world_size
        torch.distributed.all_gather_object(gathered, local)
    else:
        gathered = [local]
    index = np.concatenate([g[0] for g in gathered])
    videos = [v for g in gathered for v in g[1]]
    labels = np.concatenate([g[3] for g in gathered])
    scores = np.concatenate([g[4] for g in gathered if len(g[0])])
    order = np.argsort(index, kind="stable")
    if len(np.unique(index)) != len(index) or len(index) != len(views_set):
        raise DataError(f"predict: gathered {len(index)} samples for a data set of {len(views_set)}")
    return _average_views([videos[i] for i in order], labels[order], scores[order])


def _average_views(videos: Sequence[str], labels: np.ndarray, scores: np.ndarray) -> VideoScores:
    """Average per-view rows into per-video rows (videos in order of first appearance)."""
    slot: dict[str, int] = {}
    for v in videos:
        slot.setdefault(v, len(slot))
    rows = np.fromiter((slot[v] for v in videos), dtype=np.int64, count=len(videos))
    n, c = len(slot), scores.shape[1] if scores.ndim == 2 else 0
    sums = np.zeros((n, c), np.float64)
    np.add.at(sums, rows, scores.astype(np.float64))
    counts = np.bincount(rows, minlength=n)
    video_labels = np.full(n, -1, np.int64)
    video_labels[rows] = labels
    bad = sorted({videos[i] for i in np.flatnonzero(labels != video_labels[rows])})
    if bad:
        raise DataError(f"videos whose views have different labels: {bad[:5]}")
    return VideoScores(list(slot), video_labels, (sums / counts[:, None]).astype(np.float32), counts)


# ----------------------------------------------------------------------------- metrics

def accuracy(s: VideoScores) -> float:
    """Video-level top-1 accuracy (fraction of videos whose highest score is the true class)."""
    if len(s.videos) == 0:
        raise DataError("accuracy: no videos")
    return float(np.mean(s.predictions() == s.labels))


def confusion(s: VideoScores, num_classes: int | None = None) -> np.ndarray:
    """Confusion matrix [C, C] of video counts: rows = true class, columns = predicted class."""
    c = int(num_classes or max(s.num_classes, int(s.labels.max(initial=-1)) + 1))
    m = np.zeros((c, c), np.int64)
    np.add.at(m, (s.labels, s.predictions()), 1)
    return m


def per_class_accuracy(s: VideoScores) -> np.ndarray:
    """Accuracy of each class [C] (NaN for a class without test videos)."""
    m = confusion(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(m) / m.sum(axis=1)


def standard_error(acc: float, n: int) -> float:
    """Binomial standard error sqrt(acc (1 - acc) / n) of an accuracy measured on ``n`` videos."""
    if n < 1:
        raise ConfigError(f"standard_error: n must be >= 1, got {n}")
    return math.sqrt(max(acc * (1.0 - acc), 0.0) / n)


def binomial_ci(acc: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an accuracy ``acc`` measured on ``n`` test videos.

    Better behaved than acc +- z*SE near 0 and 1 and for small ``n`` (the demo has ~200 test videos).
    """
    if n < 1:
        raise ConfigError(f"binomial_ci: n must be >= 1, got {n}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"binomial_ci: level must be in (0, 1), got {level}")
    if not 0.0 <= acc <= 1.0:
        raise ConfigError(f"binomial_ci: acc must be in [0, 1], got {acc}")
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------- files

def save_scores(s: VideoScores, path: str | Path) -> Path:
    """Write scores to ``path`` (npz: videos, labels, scores, views), atomically."""
    arrays = {"videos": np.asarray(s.videos, dtype=np.str_), "labels": s.labels, "scores": s.scores}
    if s.views is not None:
        arrays["views"] = s.views
    return atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def load_scores(path: str | Path) -> VideoScores:
    """Read scores written by :func:`save_scores`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such scores file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return VideoScores([str(v) for v in z["videos"]], z["labels"], z["scores"],
                               z["views"] if "views" in z else None)
    except (KeyError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a scores file written by save_scores ({e})") from e


# ----------------------------------------------------------------------------- fusion and summaries

def late_fuse(a: VideoScores, b: VideoScores, weights: tuple[float, float] = (0.5, 0.5),
              mode: str = "softmax") -> VideoScores:
    """Late fusion of two per-video score sets (no network is re-run).

    ``mode="softmax"``: weighted sum of the softmax outputs (two-stream "Sum, Softmax", Table 1);
    ``mode="scores"``: weighted sum of the raw scores (Table 6 averages IDT's SVM scores with the
    ConvNet's pre-softmax predictions). ``b`` is aligned to ``a``'s video order; both must hold
    the same videos with the same labels and class count.
    """
    if mode not in ("softmax", "scores"):
        raise ConfigError(f"late_fuse: mode must be 'softmax' or 'scores', got {mode!r}")
    if len(weights) != 2:
        raise ConfigError(f"late_fuse: weights must be a pair, got {weights!r}")
    only_a = sorted(set(a.videos) - set(b.videos))
    only_b = sorted(set(b.videos) - set(a.videos))
    if only_a or only_b:
        raise DataError(f"late_fuse: the score sets hold different videos: {len(only_a)} only in the "
                        f"first (e.g. {only_a[:3]}), {len(only_b)} only in the second (e.g. {only_b[:3]})")
    if a.num_classes != b.num_classes:
        raise DataError(f"late_fuse: {a.num_classes} classes in the first, {b.num_classes} in the second")
    pos = {v: i for i, v in enumerate(b.videos)}
    order = np.array([pos[v] for v in a.videos], dtype=np.int64)
    b_scores, b_labels = b.scores[order], b.labels[order]
    wrong = [a.videos[i] for i in np.flatnonzero(a.labels != b_labels)]
    if wrong:
        raise DataError(f"late_fuse: {len(wrong)} videos have different labels, e.g. {wrong[:3]}")
    if mode == "softmax":
        sa = torch.from_numpy(a.scores).softmax(1).numpy()
        sb = torch.from_numpy(b_scores).softmax(1).numpy()
    else:
        sa, sb = a.scores, b_scores
    return VideoScores(list(a.videos), a.labels.copy(), weights[0] * sa + weights[1] * sb, a.views)
