"""Where trained models live on disk, and what one kernel session keeps in memory.

Everything expensive is cached under ``results/runs/<profile>/<dataset>-<settings digest>/``, so the
notebooks that share trained streams (Figure 1, Tables 1-4) train them once and a second
``./run_all.sh`` gives the same tables. The digest covers the profile fields that change what is
trained (:data:`RUN_FIELDS`) and the backbones' architecture tables: a changed setting or a
changed demo layer trains anew instead of silently reusing models trained otherwise
(``settings.json`` beside them says which).

In memory, :data:`MEMO` keeps features and scores shared by the rows of a table, keyed by content:
the digest of the weights that produced them (never an object's ``id``, which Python reuses once the
object is freed) and the settings of the data they were computed on. It holds at most
``MEMO.max_bytes``; the least recently used entries go first.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from twostream_lib.config import Profile
from twostream_lib.files import atomic_write
from twostream_lib.models.backbones import architecture_digest
from twostream_lib.paper import RELEASED_SCHEDULES, released_schedule

__all__ = ["RUN_FIELDS", "run_dir", "key_digest", "weights_digest", "Memo", "MEMO", "save_state"]

#: Profile fields that change what is computed, per kind of cached run: a run is keyed by their values, so
#: changing e.g. a fusion head's epochs retrains the heads but reuses the towers.
DATA_FIELDS = ("dataset", "synthetic_seed", "synthetic_size", "synthetic_frames", "synthetic_groups",
               "synthetic_clips", "synthetic_classes", "max_videos")
TOWER_FIELDS = DATA_FIELDS + ("L", "crop", "stream_crop", "temporal_crop", "temporal_init", "backbone", "deep_backbone", "weights", "deep_weights",
                              "appearance_pretrain_epochs", "appearance_weight", "batch_size", "schedule",
                              "lr_stream", "bias_lr_factor", "bias_decay", "warmup_epochs", "dropout",
                              "epochs_stream", "epochs_temporal", "tower_threads", "threads")
HEAD_FIELDS = TOWER_FIELDS + ("T", "tau", "fusion_crop", "lr_fusion", "dropout_fusion", "fusion_relu",
                              "conv3d_init", "pool3d", "epochs_fusion", "feature_epochs", "seeds")
IDT_FIELDS = DATA_FIELDS + ("idt_components", "idt_C")
RUN_FIELDS = {"towers": TOWER_FIELDS, "heads": HEAD_FIELDS, "idt": IDT_FIELDS}


def run_dir(cfg: Profile, kind: str, *parts) -> Path:
    """``results/runs/<profile>/<dataset>-<kind>-<settings digest>/<parts...>``: where the trained towers,
    fusion heads or IDT features (``kind``) of these settings are cached. The digest covers the fields
    of :data:`RUN_FIELDS` for that kind and the backbones' architecture tables, so a changed setting or
    a changed demo layer computes anew instead of silently reusing results computed otherwise
    (``settings.json`` beside them says which)."""
    settings = {k: getattr(cfg, k) for k in RUN_FIELDS[kind]}
    if kind == "heads":  # heads train and test with the towers' thread count wherever they run (fusion.train_heads)
        settings["head_threads"] = cfg.tower_threads or cfg.threads
    if kind != "idt":
        settings["architectures"] = {bb: architecture_digest(bb) for bb in (cfg.backbone, cfg.deep_backbone)}
    if kind != "idt" and cfg.schedule != "cosine":  # the released tables these runs take their numbers from
        settings["released_schedules"] = {
            f"{stage}/{bb or 'any'}": dataclasses.asdict(released_schedule(stage, bb, cfg.dataset))
            for stage, bb in (("spatial", cfg.backbone), ("spatial", cfg.deep_backbone), ("temporal", cfg.backbone),
                              ("temporal", cfg.deep_backbone), ("fusion", None))
            if stage == "fusion" or bb in RELEASED_SCHEDULES[stage]}
    text = json.dumps(settings, sort_keys=True, default=list)
    root = (cfg.results_path / "runs" / cfg.name /
            f"{cfg.dataset}-{kind}-{hashlib.sha1(text.encode()).hexdigest()[:10]}")
    if not (root / "settings.json").exists():
        atomic_write(root / "settings.json", json.dumps(settings, indent=2, sort_keys=True, default=list) + "\n")
    return root / Path(*[str(p) for p in parts])


def key_digest(key, length: int = 12) -> str:
    """A short SHA-1 of a JSON-able key: the file or folder name of something cached under that key."""
    return hashlib.sha1(json.dumps(key, default=str).encode()).hexdigest()[:length]


def weights_digest(module: nn.Module) -> str:
    """SHA-1 over a module's state (names, shapes, dtypes and values): equal digests, equal models."""
    h = hashlib.sha1()
    for name, t in module.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_state(module: nn.Module, path: Path) -> Path:
    """Write a module's ``state_dict`` atomically (a reader never loads half a file)."""
    state = module.state_dict()
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def _nbytes(value: Any) -> int:
    """Memory held by a cached value: a FeatureSet's arrays, a VideoScores' scores (tuples summed)."""
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "nbytes") and callable(value.nbytes):
        return int(value.nbytes())
    scores = getattr(value, "scores", None)
    return int(getattr(scores, "nbytes", 0))


class Memo:
    """A least-recently-used cache of computed values, bounded by the bytes they hold."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value stored under ``key``, computed (and stored, if it fits) on first use."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        return self.put(key, compute())

    def peek(self, key: Hashable) -> Any:
        """The value stored under ``key`` (marked as recently used), or None."""
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key][0]

    def put(self, key: Hashable, value: Any) -> Any:
        """Store ``value`` under ``key`` (if it fits); returns ``value``."""
        size = _nbytes(value)
        if size <= self.max_bytes:
            self._items[key] = (value, size)
            self._items.move_to_end(key)
            while sum(s for _, s in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()

    @property
    def nbytes(self) -> int:
        return sum(s for _, s in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


#: Features and scores shared by the rows of one kernel session (4 GiB: the demo needs ~0.3 GiB).
MEMO = Memo(4 << 30)
