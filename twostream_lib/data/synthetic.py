"""The synthetic data set of the ``demo`` profile: small videos on which the paper's findings hold by
construction.

The paper (Sec. 1, 3.1) argues that two-stream fusion must *register* appearance with motion: "we
would like to learn the correspondences between the two streams at particular pixel locations (e.g.
to distinguish between brushing teeth and brushing hair)", which a late (softmax) fusion cannot do,
and (Sec. 3.3-3.4) that temporal fusion over T samples tau frames apart adds context beyond one flow
stack of L = 10 frames. This module generates videos in which exactly these cues decide the class.

Scene. Every video shows K = 4 look-alike discs, one of each colour (red, blue, yellow, green), on a
random dark background texture with static grain. The colours have *equal luminance*: they lie on a
circle of chroma radius ~55 around Y = 140 in the YCbCr plane that both JPEG and OpenCV's grey
conversion use (BT.601 weights w = (0.299, 0.587, 0.114); the same idea as 140 + 100 (e_k - w_k)),
so the grey frames from which TV-L1 flow is computed show four identical discs, and the flow carries
no colour at all. Every colour is present exactly once per frame, so one frame cannot say which
colour moves. One disc (the *mover*) moves; the others stand still, each displaced from its anchor
by a random offset drawn like the mover's instantaneous offset, so its position gives nothing away.
The discs sit on a jittered 2x2 grid (anchors at ~24% and ~76% of the frame) so that the mover and
the distractors stay far apart (>= 8 px of background between their edges at 56 px, scaled with the size).

Class families (``CLASSES``; cue = what a model must see):

(a) *what moves where* (8 classes, ``<Colour><Motion>``): the mover has a given colour and oscillates
    horizontally or vertically. A frame shows all four colours, the flow shows the motion but not the
    colour: only fusion that keeps spatial positions (conv fusion, Sec. 3.1-3.2) can solve them.
(b) *appearance* (2 classes, ``OrangeSquare``, ``CyanSquare``): a static square in the centre whose
    colour (between the discs' hues, so never one of theirs) names the class; a random disc moves
    horizontally or vertically as in (a), so the motion says nothing. One frame solves them.
(c) *motion* (2 classes, ``Orbit``, ``Diagonal``): a random-colour disc circles around its anchor or
    oscillates along a diagonal. One flow stack solves them.
(d) *order* (2 classes, ``HorizontalThenVertical``, ``VerticalThenHorizontal``): rest, a horizontal
    push, a rest of at least L - 1 = 9 flow frames, a vertical push, rest (or the reverse;
    ``order_phases``).
    No flow stack of L = 10 sees both phases, and the mirror-symmetric layout makes every local
    window occur in both classes alike, so the order is only visible to a model that fuses T samples
    in time without pooling their order away (3D conv fusion, Sec. 3.3).

``principle_accuracy`` computes the Bayes accuracy each model family can reach from the cues it can
see; for all 14 classes: single frame 3/14, flow stacks 5/14, late fusion 7/14, 2D conv fusion
13/14, 3D (temporal) fusion 14/14.

Output layout (UCF101 format, :mod:`twostream_lib.data.splits`)::

    root/videos/<Class>/v_<Class>_gXX_cYY.avi      MJPG AVI, size x size, 25 fps
    root/splits/classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt
    root/hmdb51_splits/<Class>_test_split{1,2,3}.txt   the same splits in HMDB51 format
    root/frames/                                   prepared by prepare_videos (authors' layout)
    root/DATA_CARD.md, root/synthetic.json         data card and the generation record

Groups g01..gG (like UCF101's 25 groups); split k tests on the k-th third of the groups (like UCF101's
7 test groups per split), so the default (9 groups of 5 clips) gives 30 train and 15 test videos per
class in every split. Each video is generated from ``SeedSequence([seed, crc32(class), group, clip])``
alone, so a video does not depend on which other classes or groups are generated.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
import zlib
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.files import atomic_write
from twostream_lib.workers import worker_context

#: Bump when the rendering changes, so that existing data sets are regenerated.
GENERATOR_VERSION = 4
RECORD_NAME = "synthetic.json"
CARD_NAME = "DATA_CARD.md"
FLOW_STACK = 10  # L of the paper; the order classes rest for L - 1 flow frames between phases
FPS = 25
#: Sigma of per-frame sensor noise (grey levels). 0 by default: temporal noise makes TV-L1 run all
#: its iterations (8.7 instead of 5.4 ms per 56x56 frame pair with the fast preset), which breaks
#: the one-minute budget; the static grain of the background and JPEG artefacts remain.
FRAME_NOISE = 0.0
LUMA = 140.0  # common luminance (BT.601 Y) of every object
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: Mover colours: hue angle (degrees) in the (Cb, Cr) plane at chroma radius ~55, luminance 140.
COLOURS = {"Red": 90.0, "Blue": 0.0, "Yellow": 180.0, "Green": 270.0}
#: Appearance classes: a static square whose hue lies halfway between two of the discs' hues.
SQUARE_HUES = {"Orange": 135.0, "Cyan": 315.0}
MOTION_NAMES = {"H": "Horizontal", "V": "Vertical", "O": "Orbit", "X": "Diagonal"}
FAMILIES = ("what-moves-where", "appearance", "motion", "order")
TVL1_FAST = {"preset": "fast"}


@dataclass(frozen=True)
class ClassSpec:
    """One synthetic class: its family, the cue that decides it and how its videos are drawn.

    ``colour`` is the mover's colour (None: random); ``motions`` the mover's motion phases in order
    (("H",) a horizontal oscillation; ("H", "V") horizontal, rest, vertical); ``motion_choices`` a
    set of motions of which one is drawn per video (appearance classes); ``shape`` a static shape.
    """

    name: str
    family: str
    cue: str
    colour: str | None = None
    motions: tuple[str, ...] = ()
    motion_choices: tuple[str, ...] = ()
    shape: str | None = None
    shape_hue: float | None = None  # the shape's colour (hue angle); None: random


def _class_table() -> tuple[ClassSpec, ...]:
    specs = []
    for colour in COLOURS:
        for m in ("H", "V"):
            specs.append(ClassSpec(
                f"{colour}{MOTION_NAMES[m]}", "what-moves-where",
                f"the {colour.lower()} disc moves {MOTION_NAMES[m].lower()}ly: colour AND motion at the same place",
                colour=colour, motions=(m,)))
    for name, hue in SQUARE_HUES.items():
        specs.append(ClassSpec(f"{name}Square", "appearance",
                               f"a static {name.lower()} square in the centre (motion is random)",
                               shape="square", shape_hue=hue, motion_choices=("H", "V")))
    specs.append(ClassSpec("Orbit", "motion", "a disc of any colour circles around its place", motions=("O",)))
    specs.append(ClassSpec("Diagonal", "motion", "a disc of any colour oscillates diagonally", motions=("X",)))
    specs.append(ClassSpec("HorizontalThenVertical", "order",
                           "horizontal, rest, then vertical motion: the order over > L frames", motions=("H", "V")))
    specs.append(ClassSpec("VerticalThenHorizontal", "order",
                           "vertical, rest, then horizontal motion: the order over > L frames", motions=("V", "H")))
    return tuple(sorted(specs, key=lambda s: s.name))


#: All synthetic classes in label order (alphabetical, as UCF101's classInd.txt and HMDB51's splits).
CLASSES: tuple[ClassSpec, ...] = _class_table()
CLASS_NAMES: tuple[str, ...] = tuple(s.name for s in CLASSES)
_SPEC = {s.name: s for s in CLASSES}


@dataclass(frozen=True)
class SyntheticParams:
    """Everything that determines the generated videos (the idempotence key)."""

    seed: int = 0
    size: int = 48  # frame width = height (= the prepared frames' short side)
    frames: int = 29  # frames per video (odd: the T = 5 test samples are then placed symmetrically)
    groups: int = 9  # groups g01..gG; split k tests on the k-th third of the groups
    clips: int = 5  # clips per group and class
    classes: tuple[str, ...] = CLASS_NAMES
    version: int = GENERATOR_VERSION

    def validate(self) -> "SyntheticParams":
        for name, low in (("size", 32), ("frames", 8), ("groups", 3), ("clips", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"synthetic {name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"synthetic seed must be a non-negative integer, got {self.seed!r}")
        unknown = [c for c in self.classes if c not in _SPEC]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ConfigError(
                f"synthetic classes must be distinct names from {list(CLASS_NAMES)}, got {list(self.classes)!r}")
        if any(_SPEC[c].family == "order" for c in self.classes) and self.frames < MIN_ORDER_FRAMES:
            raise ConfigError(
                f"synthetic frames={self.frames} is too short for the order classes: they need two motion "
                f"phases of >= 2 flow frames around a rest of {FLOW_STACK - 1}, i.e. frames >= {MIN_ORDER_FRAMES}")
        return self

    def to_json(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d


@dataclass
class SyntheticDataset:
    """Paths and parameters of a generated (and prepared) synthetic data set."""

    root: Path
    video_root: Path
    split_dir: Path  # UCF101 format: load_split("synthetic", split_dir, k)
    hmdb_split_dir: Path  # the same splits in HMDB51 format: load_split("hmdb51", hmdb_split_dir, k)
    frames_root: Path  # open_store(frames_root) works
    card_path: Path
    classes: tuple[str, ...]
    seed: int
    size: int
    frames: int
    groups: int
    clips: int
    timings: dict = field(default_factory=dict)  # seconds: "generate", "prepare"

    @property
    def families(self) -> dict[str, str]:
        """Class name -> family ("what-moves-where", "appearance", "motion", "order")."""
        return {c: _SPEC[c].family for c in self.classes}


# ---- colours and geometry ---------------------------------------------------------------------


def equal_luminance_rgb(hue_deg: float, chroma: float = 55.0, luma: float = LUMA) -> np.ndarray:
    """RGB (float, 0..255) of BT.601 luminance ``luma`` with chroma ``chroma`` at hue ``hue_deg``.

    Y = 0.299 R + 0.587 G + 0.114 B is the same for every hue, so the grey frames that TV-L1 sees
    (and the Y channel that JPEG stores) do not depend on the colour.
    """
    cb, cr = chroma * np.cos(np.deg2rad(hue_deg)), chroma * np.sin(np.deg2rad(hue_deg))
    rgb = _ycbcr_to_rgb(np.float64(luma), cb, cr)
    if rgb.min() < 0 or rgb.max() > 255:
        raise ConfigError(f"colour hue={hue_deg} chroma={chroma} luma={luma} is outside 0..255: {rgb}")
    return rgb


def _motion_offset(kind: str, t: np.ndarray, amp: float, period: float, phase: float, sign: float) -> np.ndarray:
    """Offsets [len(t), 2] (dx, dy) of a periodic motion at times t (frames)."""
    w = 2 * np.pi * t / period + phase
    s = amp * np.sin(w)
    zero = np.zeros_like(s)
    if kind == "H":
        return np.stack([s, zero], 1)
    if kind == "V":
        return np.stack([zero, s], 1)
    if kind == "X":
        return np.stack([s, sign * s], 1) / np.sqrt(2)
    if kind == "O":
        return amp * np.stack([np.cos(w), sign * np.sin(w)], 1)
    raise ConfigError(f"unknown motion {kind!r}; expected one of {sorted(MOTION_NAMES)}")


MIN_ORDER_FRAMES = FLOW_STACK + 6  # 9 rest + two phases of 2 + two outer rests of 1, in flow frames, + 1


def order_phases(n_frames: int) -> tuple[int, int, int, int, int]:
    """Flow-frame lengths (rest, first phase, rest, second phase, rest) of an order-class video.

    The middle rest lasts at least L - 1 = 9 flow frames, so no flow stack of L consecutive flow
    frames sees both phases (Sec. 3.4: one stack spans t +- L/2). Each phase is bracketed by rests
    (up to L/2 - 1 = 4 flow frames at the ends) and the layout is mirror-symmetric in time: every
    local window ("rest, then H", "H, then rest", ...) then occurs in both order classes alike, so a
    model that pools per-stack predictions over time (2D) cannot tell the order; only fusion that
    keeps the T samples' order (3D conv) can.
    """
    n_flow = n_frames - 1
    rest_mid = FLOW_STACK - 1
    if n_flow < rest_mid + 6:
        raise ConfigError(f"an order-class video needs at least {MIN_ORDER_FRAMES} frames, got {n_frames}")
    rest_out = min(FLOW_STACK // 2 - 1, (n_flow - rest_mid - 4) // 2)
    phase = (n_flow - rest_mid - 2 * rest_out) // 2
    rest_mid = n_flow - 2 * rest_out - 2 * phase  # the odd flow frame, if any, goes to the middle
    return rest_out, phase, rest_mid, phase, rest_out


def _mover_track(spec: ClassSpec, motions: tuple[str, ...], n: int, rng, scale: float):
    """Offsets [n, 2] of the mover from its anchor, and the motion label of every flow frame."""
    amp = rng.uniform(3.0, 4.2) * scale
    period = rng.uniform(9.0, 12.0)
    sign = rng.choice([-1.0, 1.0])
    t = np.arange(n, dtype=np.float64)
    if len(motions) == 1:
        phase = rng.uniform(0, 2 * np.pi)
        return _motion_offset(motions[0], t, amp, period, phase, sign), [motions[0]] * (n - 1)
    # order class: rest, phase A, rest, phase B, rest; each phase whole half-cycles (back at the anchor)
    rest_out, length, rest_mid, _, _ = order_phases(n)
    off = np.zeros((n, 2))
    labels = ["-"] * (n - 1)
    half_cycles = max(1, round(2 * length / period))
    for kind, start in ((motions[0], rest_out), (motions[1], rest_out + length + rest_mid)):
        tt = t[start:start + length + 1] - start
        off[start:start + length + 1] = _motion_offset(kind, tt, amp, 2 * length / half_cycles, 0.0, 1.0) * sign
        labels[start:start + length] = [kind] * length
        sign = rng.choice([-1.0, 1.0])
    return off, labels


def _disc_mask(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (int(round(cx * 16)), int(round(cy * 16))), int(round(r * 16)), 255, -1, cv2.LINE_AA, 4)
    return m.astype(np.float32) / 255.0


def _shape_mask(h: int, w: int, shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    if shape == "square":
        pts = np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
    elif shape == "triangle":
        a = np.deg2rad([-90, 30, 150])
        pts = np.stack([cx + 1.25 * r * np.cos(a), cy + 1.25 * r * np.sin(a) + 0.2 * r], 1)
    else:
        raise ConfigError(f"unknown shape {shape!r}")
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return m.astype(np.float32) / 255.0


def _background(h: int, w: int, rng) -> np.ndarray:
    """Dark, low-contrast random texture (Y about 55..85, faint chroma) as float RGB [h, w, 3]."""
    luma = cv2.resize(rng.normal(size=(6, 6)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    luma = rng.uniform(55, 85) + 7.0 * luma / max(float(luma.std()), 1e-6)
    luma += rng.normal(0, 3.0, size=(h, w)).astype(np.float32)  # fine static grain
    cb, cr = (cv2.resize(rng.normal(size=(4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
              * 6.0 + rng.uniform(-8, 8) for _ in range(2))
    return _ycbcr_to_rgb(luma, cb, cr)


def _ycbcr_to_rgb(y, cb, cr) -> np.ndarray:
    """BT.601 (JPEG) YCbCr -> RGB, with G solved from Y = w . RGB so that the luminance is exact."""
    wr, wg, wb = LUMA_WEIGHTS
    r, b = y + 2 * (1 - wr) * cr, y + 2 * (1 - wb) * cb
    return np.stack([r, (y - wr * r - wb * b) / wg, b], -1)


def video_rng(seed: int, class_name: str, group: int, clip: int) -> np.random.Generator:
    """The generator of one video: depends only on (seed, class, group, clip)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(class_name.encode()), group, clip]))


def render_video(class_name: str, *, seed: int = 0, group: int = 1, clip: int = 1, size: int = 48,
                 frames: int = 29) -> tuple[np.ndarray, dict]:
    """Render one synthetic video: uint8 RGB frames [frames, size, size, 3] and a description.

    The description holds the ground truth used by tests and probes: ``mover_colour``, ``motions``
    (the motion of every flow frame, "-" at rest), ``positions`` [frames, K, 2] of the K discs
    (x, y, in the order of ``colours``), ``radii``, ``shape`` and ``luma``.
    """
    if class_name not in _SPEC:
        raise ConfigError(f"unknown synthetic class {class_name!r}; expected one of {list(CLASS_NAMES)}")
    spec = _SPEC[class_name]
    rng = video_rng(seed, class_name, group, clip)
    n, h = frames, size
    s = size / 56.0
    colours = list(COLOURS)
    mover = spec.colour if spec.colour is not None else colours[rng.integers(len(colours))]
    motions = spec.motions if spec.motions else (spec.motion_choices[rng.integers(len(spec.motion_choices))],)
    luma = LUMA + rng.uniform(-6, 6)  # one luminance for every object of the video
    rgb_of = {c: equal_luminance_rgb(COLOURS[c] + rng.uniform(-8, 8), rng.uniform(48, 60), luma) for c in colours}

    # anchors on a jittered 2x2 grid, colours assigned at random
    cells = [(fx, fy) for fy in (0.24, 0.76) for fx in (0.24, 0.76)]
    order = rng.permutation(len(colours))
    anchors = np.array([cells[order[k]] for k in range(len(colours))]) * size
    anchors += rng.uniform(-0.03, 0.03, size=anchors.shape) * size
    radii = rng.uniform(4.5, 5.5, size=len(colours)) * s

    positions = np.repeat(anchors[None], n, axis=0)
    for k, c in enumerate(colours):
        if c == mover:
            track, flow_motions = _mover_track(spec, motions, n, rng, s)
            positions[:, k] += track
        else:  # static, displaced like a snapshot of a moving disc
            ang = rng.uniform(0, 2 * np.pi)
            positions[:, k] += rng.uniform(3.0, 4.2) * s * np.sin(rng.uniform(0, 2 * np.pi)) * np.array(
                [np.cos(ang), np.sin(ang)])

    background = _background(h, h, rng)
    if spec.shape is not None:
        c = (size / 2 + rng.uniform(-1.5, 1.5) * s, size / 2 + rng.uniform(-1.5, 1.5) * s)
        shape_mask = _shape_mask(h, h, spec.shape, c[0], c[1], rng.uniform(4.6, 5.4) * s)[..., None]
        hue = rng.uniform(0, 360) if spec.shape_hue is None else spec.shape_hue + rng.uniform(-8, 8)
        shape_rgb = equal_luminance_rgb(hue, rng.uniform(48, 60), luma)
        background = background * (1 - shape_mask) + shape_rgb * shape_mask

    noise = rng.normal(0, FRAME_NOISE, size=(n, h, h, 1)) if FRAME_NOISE else np.zeros((n, 1, 1, 1))
    video = np.empty((n, h, h, 3), np.uint8)
    for t in range(n):
        img = background.copy()
        for k, c in enumerate(colours):
            m = _disc_mask(h, h, positions[t, k, 0], positions[t, k, 1], radii[k])[..., None]
            img = img * (1 - m) + rgb_of[c] * m
        video[t] = np.clip(np.rint(img + noise[t]), 0, 255)
    info = {"class": class_name, "family": spec.family, "mover_colour": mover, "motions": flow_motions,
            "colours": colours, "positions": positions, "radii": radii, "shape": spec.shape, "luma": luma}
    return video, info


# ---- files ----------------------------------------------------------------------------------------


def video_name(class_name: str, group: int, clip: int) -> str:
    """UCF101-style stem ``v_<Class>_gXX_cYY``."""
    return f"v_{class_name}_g{group:02d}_c{clip:02d}"


def split_test_groups(groups: int, split: int) -> list[int]:
    """Groups (1-based) tested in split 1..3: the split-th of three contiguous blocks of groups."""
    blocks = np.array_split(np.arange(1, groups + 1), 3)
    return [int(g) for g in blocks[split - 1]]


def write_video(path: Path, video: np.ndarray, fps: int = FPS) -> Path:
    """Write RGB frames [n, h, w, 3] as an MJPG AVI, atomically."""
    h, w = video.shape[1:3]

    def write(tmp: Path) -> None:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
        if not writer.isOpened():
            raise DataError(f"cannot open a video writer (MJPG) for {tmp}")
        for frame in video:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()

    return atomic_write(path, write)


def _render_and_write(job) -> str:
    class_name, group, clip, p, out_dir = job
    video, _ = render_video(class_name, seed=p["seed"], group=group, clip=clip, size=p["size"], frames=p["frames"])
    write_video(Path(out_dir) / class_name / f"{video_name(class_name, group, clip)}.avi", video)
    return class_name


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the worker pools)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _write_splits(root: Path, p: SyntheticParams) -> None:
    split_dir, hmdb_dir = root / "splits", root / "hmdb51_splits"
    split_dir.mkdir(parents=True, exist_ok=True)
    hmdb_dir.mkdir(parents=True, exist_ok=True)
    classes = p.classes
    atomic_write(split_dir / "classInd.txt", "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for k in (1, 2, 3):
        tested = set(split_test_groups(p.groups, k))
        train, test = [], []
        for i, c in enumerate(classes):
            hmdb = []
            for g in range(1, p.groups + 1):
                for j in range(1, p.clips + 1):
                    rel = f"{c}/{video_name(c, g, j)}.avi"
                    (test if g in tested else train).append(rel if g in tested else f"{rel} {i + 1}")
                    hmdb.append(f"{video_name(c, g, j)}.avi {2 if g in tested else 1} \n")
            atomic_write(hmdb_dir / f"{c}_test_split{k}.txt", "".join(hmdb))
        atomic_write(split_dir / f"trainlist0{k}.txt", "".join(x + "\n" for x in train))
        atomic_write(split_dir / f"testlist0{k}.txt", "".join(x + "\n" for x in test))


def _read_record(root: Path) -> dict | None:
    try:
        return json.loads((root / RECORD_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


_OWNED = ("videos", "videos.tmp", "splits", "hmdb51_splits", "frames", CARD_NAME, RECORD_NAME)


def _clean(root: Path) -> None:
    """Remove what a previous generation wrote (and only that)."""
    for name in _OWNED:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _params(seed, size, frames, groups, clips, classes) -> SyntheticParams:
    names = CLASS_NAMES if classes is None else tuple(classes)
    names = tuple(sorted(names)) if set(names) <= set(CLASS_NAMES) else names
    return SyntheticParams(seed=seed, size=size, frames=frames, groups=groups, clips=clips, classes=names).validate()


def generate_synthetic(root: str | Path, *, seed: int = 0, size: int = 48, frames: int = 29, groups: int = 9,
                       clips: int = 5, classes: Sequence[str] | None = None, workers: int = 2,
                       progress: bool = True) -> Path:
    """Write the synthetic videos, split files and data card under ``root``; returns ``root``.

    Idempotent: a root already generated with the same parameters is left as it is; one generated
    with other parameters is cleaned first (never mixed). A non-empty folder that is not a synthetic
    data set is refused (DataError). ``classes`` selects a subset of ``CLASS_NAMES`` (labels follow
    alphabetical order of the selection).
    """
    p = _params(seed, size, frames, groups, clips, classes)
    root = Path(root)
    record = _read_record(root)
    if record is not None and record.get("params") == p.to_json() and record.get("generated"):
        return root
    if record is None and root.is_dir() and any(root.iterdir()):
        if not set(os.listdir(root)) <= set(_OWNED):
            raise DataError(f"{root} is not empty and holds no {RECORD_NAME}: refusing to write a synthetic "
                            f"data set into it; expected an empty or a new folder")
    root.mkdir(parents=True, exist_ok=True)
    _clean(root)

    t0, c0 = time.perf_counter(), _cpu_seconds()
    tmp_videos = root / "videos.tmp"
    for c in p.classes:
        (tmp_videos / c).mkdir(parents=True, exist_ok=True)
    jobs = [(c, g, j, p.to_json(), str(tmp_videos))
            for c in p.classes for g in range(1, p.groups + 1) for j in range(1, p.clips + 1)]
    bar = tqdm(total=len(jobs), desc="synthetic videos", unit="video", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as pool:
            for _ in pool.map(_render_and_write, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                bar.update()
    else:
        for job in jobs:
            _render_and_write(job)
            bar.update()
    bar.close()
    os.replace(tmp_videos, root / "videos")
    _write_splits(root, p)
    timings = {"generate": round(time.perf_counter() - t0, 2), "generate_cpu": round(_cpu_seconds() - c0, 2)}
    record = {"params": p.to_json(), "generated": True, "prepared": False, "timings": timings,
              "workers": workers, "cpus": os.cpu_count()}
    write_data_card(root, p, record)
    atomic_write(root / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    return root


def make_synthetic_dataset(root: str | Path, *, seed: int = 0, size: int = 48, frames: int = 29, groups: int = 9,
                           clips: int = 5, classes: Sequence[str] | None = None, workers: int = 2,
                           progress: bool = True) -> SyntheticDataset:
    """Generate (unless already there) and prepare the synthetic set: the ``demo`` profile's data.

    Preparation is the real data's: :func:`twostream_lib.data.prepare.prepare_videos` turns every
    video into RGB JPEG frames and TV-L1 flow (paper Sec. 3.5: flow clipped at +-20 px, stored as
    JPEG), with short side = ``size`` (no resizing) and the fast TV-L1 preset. Returns immediately
    when the same parameters were already generated and prepared. Timings go to the data card.
    """
    from twostream_lib.data.prepare import prepare_videos

    p = _params(seed, size, frames, groups, clips, classes)
    root = Path(root)
    generate_synthetic(root, seed=seed, size=size, frames=frames, groups=groups, clips=clips,
                       classes=p.classes, workers=workers, progress=progress)
    record = _read_record(root)
    if not record.get("prepared"):
        videos = sorted((root / "videos").glob("*/*.avi"))
        t0, c0 = time.perf_counter(), _cpu_seconds()
        report = prepare_videos(videos, root / "frames", short_side=p.size, tvl1=dict(TVL1_FAST),
                                workers=workers, progress=progress)
        if report.failed:
            name, reason = next(iter(report.failed.items()))
            raise DataError(f"preparing the synthetic videos in {root / 'videos'} failed for "
                            f"{len(report.failed)} video(s), e.g. {name}: {reason}")
        record["timings"]["prepare"] = round(time.perf_counter() - t0, 2)
        record["timings"]["prepare_cpu"] = round(_cpu_seconds() - c0, 2)
        record["prepared"] = True
        record["workers"] = workers
        write_data_card(root, p, record)
        atomic_write(root / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    return _dataset(root, p, record)


def _dataset(root: Path, p: SyntheticParams, record: dict) -> SyntheticDataset:
    return SyntheticDataset(root=root, video_root=root / "videos", split_dir=root / "splits",
                            hmdb_split_dir=root / "hmdb51_splits", frames_root=root / "frames",
                            card_path=root / CARD_NAME, classes=p.classes, seed=p.seed, size=p.size,
                            frames=p.frames, groups=p.groups, clips=p.clips, timings=dict(record.get("timings", {})))


# ---- what each model family can reach ---------------------------------------------------------------

#: Model families of the paper and the cues each can see (Sec. 3.1-3.3): "shape" (appearance in one
#: frame), "motions" (the set of motions over the video, as per-stack predictions averaged over time),
#: "colour" (the mover's colour: needs appearance registered with motion at the same position),
#: "order" (the sequence of motions: needs fusion over T samples that keeps their order);
#: "grey shape" (a frame's shapes without their colours: what IDT's HOG sees of equal-luminance objects).
MODEL_FAMILIES = {
    "single frame (spatial stream)": ("shape",),
    "flow stacks (temporal stream)": ("motions",),
    "late fusion (softmax average)": ("shape", "motions"),
    "2D conv fusion (ReLU5)": ("shape", "motions", "colour"),
    "3D conv fusion + 3D pooling": ("shape", "motions", "colour", "order"),
    "IDT (grey frames, pooled over time)": ("grey shape", "motions"),
}


SPATIAL_FAMILY, TEMPORAL_FAMILY, LATE_FAMILY, CONV2D_FAMILY, CONV3D_FAMILY, IDT_FAMILY = MODEL_FAMILIES


def class_families(classes: Sequence[str]) -> dict[str, str]:
    """Class name -> class family ("what-moves-where", "appearance", "motion", "order"); classes that
    are not synthetic ones are left out."""
    return {c: _SPEC[c].family for c in classes if c in _SPEC}


def _signatures(spec: ClassSpec, cues: tuple[str, ...]) -> dict[tuple, float]:
    """Distribution over what a model with ``cues`` observes of a video of class ``spec``."""
    colours = [spec.colour] if spec.colour else list(COLOURS)
    motion_sets = [spec.motions] if spec.motions else [(m,) for m in spec.motion_choices]
    out: dict[tuple, float] = defaultdict(float)
    for c in colours:
        for ms in motion_sets:
            sig = []
            for cue in cues:
                if cue == "shape":  # what one frame shows besides the discs: the static square and its colour
                    sig.append((spec.shape, spec.shape_hue))
                elif cue == "grey shape":  # the same in grey: every object has one luminance
                    sig.append(spec.shape)
                elif cue == "colour":
                    sig.append(c)
                elif cue == "motions":
                    sig.append(tuple(sorted(set(ms) | ({"rest"} if len(ms) > 1 else set()))))
                elif cue == "order":
                    sig.append(ms)
            out[tuple(sig)] += 1.0 / (len(colours) * len(motion_sets))
    return out


def _bayes_hits(specs: Sequence[ClassSpec], cues: tuple[str, ...]) -> list[float]:
    """Per-class accuracy of the Bayes classifier that sees ``cues`` (equal priors, ties split evenly)."""
    table: dict[tuple, list[float]] = defaultdict(lambda: [0.0] * len(specs))
    for i, spec in enumerate(specs):
        for sig, prob in _signatures(spec, cues).items():
            table[sig][i] += prob
    hits = [0.0] * len(specs)
    for row in table.values():
        best = [i for i, v in enumerate(row) if v == max(row)]
        for i in best:
            hits[i] += row[i] / len(best)
    return hits


def principle_accuracy(classes: Sequence[str] | None = None, *, by_family: bool = False) -> dict:
    """Bayes accuracy (equal class priors) each model family of ``MODEL_FAMILIES`` can reach.

    A model that sees cues S classifies a video from the distribution of S given the class; the best
    possible accuracy is (1/C) sum over observations of max_c p(obs | c). Late fusion is counted as
    if it combined its two observations optimally (an upper bound for softmax averaging).
    ``by_family=True`` gives {model family: {class family: accuracy}} instead of {model family: acc}.
    """
    specs = [_SPEC[c] for c in (CLASS_NAMES if classes is None else classes)]
    out = {}
    for model, cues in MODEL_FAMILIES.items():
        hits = _bayes_hits(specs, cues)
        if not by_family:
            out[model] = float(np.mean(hits))
            continue
        per: dict[str, list[float]] = defaultdict(list)
        for spec, h in zip(specs, hits):
            per[spec.family].append(h)
        out[model] = {f: float(np.mean(v)) for f, v in sorted(per.items())}
    return out


# ---- data card ------------------------------------------------------------------------------------


def write_data_card(root: Path, p: SyntheticParams, record: dict) -> Path:
    """Write ``root/DATA_CARD.md``: classes, cues, counts, sizes, seed, timings, reachable accuracy."""
    n_cls = len(p.classes)
    tested = [split_test_groups(p.groups, k) for k in (1, 2, 3)]
    per_class = p.groups * p.clips
    n_test = [len(t) * p.clips for t in tested]
    timings = record.get("timings", {})
    gen = (f"{timings['generate']:.1f} s wall, {timings.get('generate_cpu', float('nan')):.1f} s CPU"
           if "generate" in timings else "n/a")
    prep = (f"{timings['prepare']:.1f} s wall, {timings.get('prepare_cpu', float('nan')):.1f} s CPU"
            if "prepare" in timings else "not prepared yet")
    layout = order_phases(p.frames) if p.frames >= MIN_ORDER_FRAMES else None
    scale = p.size / 56.0  # render_video's sizes are given at 56 px
    lines = [
        "# Synthetic two-stream data set: data card", "",
        "Generated by `twostream_lib.data.synthetic` (`python -m twostream_lib synthetic OUT_DIR`) for the "
        "`demo` profile of the reproduction of Feichtenhofer, Pinz and Zisserman, *Convolutional Two-Stream "
        "Network Fusion for Video Action Recognition* (CVPR 2016). Designed so that the paper's findings hold "
        "by construction: appearance alone and motion alone each solve only some classes, most classes need "
        "*what moves where* (Sec. 3.1-3.2), and two need the order of motion over longer than one flow stack "
        "(Sec. 3.3-3.4).", "",
        "## Parameters", "",
        "| parameter | value |", "|---|---|",
        f"| seed | {p.seed} |", f"| generator version | {p.version} |",
        f"| classes | {n_cls} |", f"| frame size | {p.size} x {p.size} px (= short side of the prepared frames) |",
        f"| frames per video | {p.frames} ({p.frames - 1} flow frames), {FPS} fps, MJPG AVI |",
        f"| groups x clips | {p.groups} x {p.clips} = {per_class} videos per class, {n_cls * per_class} videos |",
        f"| splits (UCF101 format, also HMDB51 format) | test groups {tested[0]}, {tested[1]}, {tested[2]} |",
        f"| train / test videos per class | split 1: {per_class - n_test[0]} / {n_test[0]}; "
        f"split 2: {per_class - n_test[1]} / {n_test[1]}; split 3: {per_class - n_test[2]} / {n_test[2]} |",
        "| optical flow | TV-L1, fast preset (prepare_videos(tvl1={'preset': 'fast'})), clipped at +-20 px, "
        "JPEG |",
        f"| generation time | {gen} ({record.get('workers', '?')} worker(s), {record.get('cpus', '?')} CPUs) |",
        f"| frames + flow time | {prep} |", "",
        "## Classes and the cue each needs", "",
        "| label | class | family | cue |", "|---|---|---|---|",
    ]
    for i, c in enumerate(p.classes):
        spec = _SPEC[c]
        lines.append(f"| {i} | {c} | {spec.family} | {spec.cue} |")
    families = sorted({_SPEC[c].family for c in p.classes})
    lines += ["", "## Accuracy each model family can reach in principle", "",
              "Bayes accuracy from the cues the model can see (equal class priors; a model that cannot tell "
              "k classes apart gets 1/k of them). Late fusion is counted as if it combined its two "
              "observations optimally, so its value is an upper bound.", "",
              "| model family | sees | all classes | " + " | ".join(families) + " |",
              "|---|---|---|" + "---|" * len(families)]
    acc = principle_accuracy(p.classes)
    per = principle_accuracy(p.classes, by_family=True)
    for model, cues in MODEL_FAMILIES.items():
        lines.append(f"| {model} | {', '.join(cues)} | {100 * acc[model]:.1f}% | "
                     + " | ".join(f"{100 * per[model][f]:.1f}%" for f in families) + " |")
    lines += [
        "", "## Construction", "",
        "- Four discs per frame, one of each colour (" + ", ".join(
            f"{c}: hue {h:.0f} deg" for c, h in COLOURS.items()) + " in the CbCr plane, chroma 48-60, hue "
        "jitter +-8 deg). All objects of a video share one BT.601 luminance (140 +- 6): the grey frames "
        "TV-L1 sees show identical discs, so the flow carries no colour; every colour is present exactly "
        "once, so a frame does not tell which colour moves.",
        f"- One disc moves (amplitude {3.0 * scale:.1f}-{4.2 * scale:.1f} px, period 9-12 frames, random "
        "phase); the others are static, displaced from their anchors like a snapshot of a moving disc. "
        f"Anchors: jittered 2x2 grid at 24% / 76% of the frame, so at least {8 * scale:.0f} px of background "
        "separate the mover from every distractor.",
        "- Appearance classes add a static square in the centre, of an equal-luminance colour halfway between "
        "two discs' hues (" + ", ".join(f"{c}: hue {h:.0f} deg" for c, h in SQUARE_HUES.items()) + "); "
        "their mover moves horizontally or vertically at random.",
        (f"- Order classes (flow frames): rest {layout[0]}, first phase {layout[1]}, rest {layout[2]} "
         f"(>= L - 1, so no flow stack of L = {FLOW_STACK} sees both phases), second phase {layout[3]}, rest "
         f"{layout[4]}. The layout is mirror-symmetric and each phase is bracketed by rests, so every local "
         "window occurs in both order classes: pooling per-stack predictions over time cannot tell the order. "
         "Each phase is whole half-cycles of the oscillation, so the disc rests at its anchor."
         if layout else "- Order classes: not generated (video too short)."),
        "- Nuisance: random dark background texture with faint chroma and static grain, disc radius "
        f"{4.5 * scale:.1f}-{5.5 * scale:.1f} px, colour jitter within the equal-luminance constraint, JPEG compression (MJPG video, "
        "then JPEG frames).",
        "- Every video is drawn from SeedSequence([seed, crc32(class), group, clip]).", "",
    ]
    path = root / CARD_NAME
    atomic_write(path, "\n".join(lines))
    return path


# ---- command line ------------------------------------------------------------------------------------


def cli_main(argv: Sequence[str]) -> int:
    """``python -m twostream_lib synthetic OUT_DIR [--seed N] [--size S] [--frames N] ... [--quiet]``."""
    ap = argparse.ArgumentParser(prog="python -m twostream_lib synthetic",
                                 description="Generate and prepare the synthetic demo data set (videos, splits, "
                                             "frames + TV-L1 flow, DATA_CARD.md).")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=48, help="frame width and height in pixels")
    ap.add_argument("--frames", type=int, default=29, help="frames per video")
    ap.add_argument("--groups", type=int, default=9, help="groups per class (split k tests on the k-th third)")
    ap.add_argument("--clips", type=int, default=5, help="clips per group")
    ap.add_argument("--classes", nargs="+", default=None, help=f"subset of {list(CLASS_NAMES)}")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-prepare", action="store_true", help="only write videos, splits and the card")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(list(argv)[1:])
    kw = dict(seed=args.seed, size=args.size, frames=args.frames, groups=args.groups, clips=args.clips,
              classes=args.classes, workers=args.workers, progress=not args.quiet)
    try:
        if args.no_prepare:
            root = generate_synthetic(args.out_dir, **kw)
            print(f"synthetic videos in {root / 'videos'}; data card {root / CARD_NAME}")
        else:
            ds = make_synthetic_dataset(args.out_dir, **kw)
            print(f"synthetic data set: {len(ds.classes)} classes, frames in {ds.frames_root}, "
                  f"splits in {ds.split_dir}; data card {ds.card_path}")
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
