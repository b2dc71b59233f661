"""Clip sampling and augmentation for two-stream training and testing (paper Sec. 3.4-3.5).

Temporal sampling (Sec. 3.4, Fig. 4). A clip is T RGB frames at positions t, t + tau, ..., t + (T-1) tau
and, for each of them, a flow stack of L flow frames *centred* on it (the temporal stream sees
t +- L/2): flow frames t - L/2 .. t + L/2 - 1, where flow frame i is the flow from RGB frame i to i+1.
A stack has 2L channels with u and v interleaved (u0, v0, u1, v1, ...), the layout of [22]. Indices
are clamped at both ends of the video, so every video with >= 2 frames gives a valid clip for any
T, tau and L (the first and last frames/flows repeat).

Training (Sec. 3.5). "At each training iteration we sample the T = 5 frames [...] by randomly sampling
the starting frame, and then randomly sampling the temporal stride (tau) in [1, 10]" (the released
code samples tau in 5..15: ``ClipSampling(tau=(5, 15))``). When the clip spans more than the video,
the start is drawn so that the clamping may fall on either end. Spatial augmentation is drawn once
per clip and applied to every frame of both streams ("the same spatial crop is applied to all frames
in the stack"):

``"jitter"``      the paper's 3D-training augmentation: the crop's width and height are jittered
                  independently by +-25% around ``size``, "only cropped at a maximum of 25% distance
                  from the image borders", and rescaled to size x size (the aspect ratio may change);
``"multiscale"``  corner/centre cropping with scale jitter for the single streams (Sec. 4.4, [35]:
                  Wang et al., "Towards good practices for very deep two-stream ConvNets"): width and
                  height from {256, 224, 192, 168}/256 of the short side (differing by at most one
                  step), at one of 5 positions (4 corners + centre), rescaled to size x size;
``"center"``      a centre crop of size x size (no rescaling);
``"full"``        the whole frame, unresized;

and the rules of the authors' released code (``cnn_ucf101_get_*_batch.m``), named as there:

``"noCtr"``       fusion training (``cnn_ucf101_fusion.m``, ``cnn_ucf101_get_im_flow_batch.m``): width and
                  height jittered by +-``jitter`` around ``size`` as in "jitter", but the offset, as a
                  fraction of the free range (frame minus crop), is on a 20-step grid within ``border``
                  of either end: both fractions in [0, border] (top-left zone) or both in [1 - border, 1]
                  (bottom-right zone), never in between. The released tables pair x and y this way
                  (``tx = [tx1 tx2]; ty = [ty1 ty2]``), so the top-right and bottom-left zones are never
                  drawn; this is reproduced, not repaired;
``"borders25"``   spatial stream training (``cnn_ucf101_spatial.m``, ``cnn_ucf101_get_frame_batch.m``): the
                  same rule as "noCtr" (the released code draws one position and flip per batch for it,
                  here they are drawn per clip, as for every other mode);
``"multiScaleRegular"``  temporal stream training (``cnn_ucf101_temporal.m``, ``cnn_ucf101_get_flow_batch.m``):
                  width and height each drawn from ``scales`` of the short side ({256, 224, 192, 168} px
                  of 256), independently (any pair, unlike "multiscale"), at one of 5 positions (4
                  corners + centre, the centre rounded up as ``floor((W - w + 1) / 2)``).

A horizontal flip (probability 1/2 when ``flip``) mirrors both streams and inverts the horizontal
flow, u := 255 - u, before the offset is removed. Inputs: RGB as ImageNet-normalised floats
((x / 255 - mean) / std), flow as JPEG value - 128 (Sec. 3.5: flow stored as JPEG, clipped at 20 px).

Testing (Sec. 3.5 "Testing", Sec. 4.6). ``TwoStreamViews`` yields every (video, view) pair; each mode is
named after what it samples:

``"spread_flips"``   T samples at the centres of T equal segments of the video, and their horizontal
                     flips: 2 views. For per-frame models (the streams, fusion at one frame): "only the
                     T = 5 frames (and their horizontal flips) are sampled" (Sec. 3.5);
``"strided_flips"``  ``test_clips`` clips of T samples ``test_tau`` frames apart (default: the ceiling
                     of the median of the training range ``tau``, as the released code tests), their
                     starts evenly spread over the video (one clip: centred), and their flips. For
                     models that fuse the T samples of a clip (Sec. 3.3-3.4): tested at a spacing they
                     were trained at. 20 clips is the paper's final protocol ("we average 20 temporal
                     predictions [...] by densely sampling the input-frame-stacks and their horizontal
                     flips", Sec. 4.6);
``"frames25"``       25 evenly spaced single frames with their flow stacks (the protocol of [22]):
                     25 views with T = 1;

each with crop ``"center"``, ``"full"`` (the entire frame: fully convolutional testing) or
``"corners"`` (4 corners + centre: 5 times the views).

Randomness is drawn per sample from ``numpy.random.default_rng([seed, epoch, index])``, so a sample
does not depend on the DataLoader worker that loads it nor on the order of loading.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from twostream_lib.errors import ConfigError, DataError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
FLOW_OFFSET = 128.0
#: The released code's training crops (see the module docstring), by their names there.
RELEASED_CROPS = ("noCtr", "borders25", "multiScaleRegular")
TRAIN_CROPS = ("jitter", "multiscale", "center", "full", *RELEASED_CROPS)
TEST_CROPS = ("center", "full", "corners")
CROPS = ("jitter", "multiscale", "center", "full", "corners", *RELEASED_CROPS)
#: Steps of the released code's border grids: ``linspace(0, .25, 20)`` and ``linspace(.75, 1, 20)``.
BORDER_GRID_STEPS = 20
VIEW_MODES = ("spread_flips", "strided_flips", "frames25")
#: Wang et al. [35]: crop sides {256, 224, 192, 168} relative to a short side of 256.
MULTISCALE_RATIOS = (1.0, 0.875, 0.75, 0.66)
DENSE_CLIPS = 20  # the paper's final test protocol (Sec. 4.6)
FRAMES25 = 25


@dataclass
class ClipSampling:
    """How clips are sampled (Sec. 3.4-3.5); the defaults are the paper's.

    ``T`` samples ``tau`` frames apart (tau drawn uniformly from the inclusive range; released code
    (5, 15)), flow stacks of ``L`` frames, output side ``size``, crop mode (``TRAIN_CROPS`` for
    ``TwoStreamClips``; ``TEST_CROPS`` for ``TwoStreamViews``), random horizontal ``flip`` in
    training. ``jitter`` and ``border`` are the +-25% size jitter and the 25% border limit of the
    "jitter" crop (and of the released "noCtr"/"borders25", whose positions lie within ``border`` of
    the free range's ends); ``scales`` the sides of the "multiscale" and "multiScaleRegular" crops
    (relative to the short side), ``max_distort`` how many steps apart the two "multiscale" sides
    may be; ``test_tau`` and
    ``test_clips`` the stride and number of clips of the "strided_flips" test mode (``test_tau`` None:
    the ceiling of the median of ``tau``, the released code's rule).
    """

    T: int = 5
    L: int = 10
    tau: tuple[int, int] = (1, 10)
    size: int = 224
    crop: str = "jitter"
    flip: bool = True
    jitter: float = 0.25
    border: float = 0.25
    scales: tuple[float, ...] = MULTISCALE_RATIOS
    max_distort: int = 1
    test_tau: int | None = None
    test_clips: int = 1

    @property
    def stride_at_test(self) -> int:
        """``test_tau``, or the ceiling of the median of the training range (5..15 -> 10, 1..10 -> 6)."""
        return self.test_tau if self.test_tau is not None else math.ceil((int(self.tau[0]) + int(self.tau[1])) / 2)

    def validate(self, crops: Sequence[str] = CROPS) -> "ClipSampling":
        """Check every field; ConfigError naming the field and what was expected."""
        for name in ("T", "L", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"ClipSampling.{name} must be a positive integer, got {value!r}")
        try:
            lo, hi = (int(v) for v in self.tau)
        except (TypeError, ValueError):
            raise ConfigError(f"ClipSampling.tau must be a pair (min, max) of strides, got {self.tau!r}") from None
        if not 1 <= lo <= hi:
            raise ConfigError(f"ClipSampling.tau must satisfy 1 <= min <= max, got {self.tau!r}")
        if self.crop not in crops:
            raise ConfigError(f"ClipSampling.crop must be one of {list(crops)}, got {self.crop!r}")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"ClipSampling.jitter must be in [0, 1), got {self.jitter!r}")
        if not 0 <= self.border <= 0.5:
            raise ConfigError(f"ClipSampling.border must be in [0, 0.5], got {self.border!r}")
        if not self.scales or any(not 0 < s <= 1 for s in self.scales):
            raise ConfigError(f"ClipSampling.scales must be ratios in (0, 1], got {self.scales!r}")
        if self.max_distort < 0:
            raise ConfigError(f"ClipSampling.max_distort must be >= 0, got {self.max_distort!r}")
        if self.test_tau is not None and (not isinstance(self.test_tau, (int, np.integer)) or self.test_tau < 1):
            raise ConfigError(f"ClipSampling.test_tau must be None or a positive integer, got {self.test_tau!r}")
        if isinstance(self.test_clips, bool) or not isinstance(self.test_clips, (int, np.integer)) or self.test_clips < 1:
            raise ConfigError(f"ClipSampling.test_clips must be a positive integer, got {self.test_clips!r}")
        return self


@dataclass(frozen=True)
class Crop:
    """A spatial crop shared by all frames of both streams: source window, output size, flip."""

    x0: int
    y0: int
    w: int
    h: int
    out_w: int
    out_h: int
    flip: bool = False


# ---- temporal indices ----------------------------------------------------------------------------


def clip_indices(n_frames: int, positions: Sequence[int], L: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB indices [T] and flow indices [T, L] of a clip at ``positions`` (Sec. 3.4).

    The stack of RGB frame t holds flow frames t - L//2 .. t - L//2 + L - 1 (for L = 10: t-5 .. t+4,
    i.e. the motion between frames t-5 and t+5). Everything is clamped to the video: RGB to
    0..n-1, flow to 0..n-2 (n frames give n-1 flow frames).
    """
    if n_frames < 2:
        raise DataError(f"a clip needs a video with at least 2 frames (1 flow frame), got {n_frames}")
    t = np.clip(np.asarray(positions, dtype=np.int64), 0, n_frames - 1)
    flow = np.clip(t[:, None] + np.arange(L)[None, :] - L // 2, 0, n_frames - 2)
    return t, flow


def train_positions(n_frames: int, T: int, tau: int, rng: np.random.Generator) -> np.ndarray:
    """T positions tau apart from a random start (Sec. 3.5), clamped to the video.

    If the clip is shorter than the video, the start is uniform over all starts that fit; if it is
    longer, over all starts that keep the video inside the clip (so clamping falls on either end).
    """
    span = (T - 1) * tau
    lo, hi = min(0, n_frames - 1 - span), max(0, n_frames - 1 - span)
    start = int(rng.integers(lo, hi + 1))
    return np.clip(start + tau * np.arange(T), 0, n_frames - 1)


def spread_positions(n_frames: int, count: int) -> np.ndarray:
    """``count`` evenly spaced positions: the centres of ``count`` equal segments of the video.

    Mirror-symmetric (p and n-1-p both appear) unless a centre falls on an integer (n even, count odd).
    """
    return np.minimum(((np.arange(count) + 0.5) * n_frames / count).astype(np.int64), n_frames - 1)


def _strided_positions(n_frames: int, T: int, tau: int, start: int) -> np.ndarray:
    return np.clip(start + tau * np.arange(T), 0, n_frames - 1)


def _test_clips(n_frames: int, mode: str, s: ClipSampling) -> list[np.ndarray]:
    """The temporal clips (positions) of a test mode."""
    if mode == "frames25":
        return [np.array([p]) for p in spread_positions(n_frames, FRAMES25)]
    if mode == "spread_flips":
        return [spread_positions(n_frames, s.T)]
    tau = s.stride_at_test
    free = n_frames - 1 - (s.T - 1) * tau
    if s.test_clips == 1:
        starts = [free // 2]  # centred (a clip longer than the video overhangs both ends)
    else:
        starts = np.rint(np.linspace(min(0, free), max(0, free), s.test_clips)).astype(np.int64).tolist()
    return [_strided_positions(n_frames, s.T, tau, int(a)) for a in starts]


# ---- spatial crops ---------------------------------------------------------------------------------


def _check_fits(video: str, width: int, height: int, s: ClipSampling, crop: str) -> None:
    if crop != "full" and (s.size > width or s.size > height):
        raise DataError(f"video {video!r}: frames are {width}x{height} px, smaller than the crop size "
                        f"{s.size} of crop mode {crop!r}; expected frames of at least {s.size}x{s.size} "
                        f"(or crop='full')")


def jitter_crop(width: int, height: int, s: ClipSampling, rng: np.random.Generator) -> Crop:
    """The paper's crop (Sec. 3.5): width and height jittered by +-``s.jitter`` around ``s.size``,
    at most ``s.border`` of the frame from each border, rescaled to size x size."""
    w = int(np.clip(round(s.size * rng.uniform(1 - s.jitter, 1 + s.jitter)), 1, width))
    h = int(np.clip(round(s.size * rng.uniform(1 - s.jitter, 1 + s.jitter)), 1, height))
    x0 = _border_limited_offset(width, w, s.border, rng)
    y0 = _border_limited_offset(height, h, s.border, rng)
    return Crop(x0, y0, w, h, s.size, s.size)


def _border_limited_offset(extent: int, length: int, border: float, rng) -> int:
    """Offset of a crop ``length`` long with at most ``border * extent`` left out on either side."""
    lo = max(0, math.ceil(extent * (1 - border) - length))
    hi = min(math.floor(extent * border), extent - length)
    if lo > hi:  # crop too small to satisfy both limits: centre it
        return (extent - length) // 2
    return int(rng.integers(lo, hi + 1))


def border_grid(border: float) -> tuple[np.ndarray, np.ndarray]:
    """The released code's offset fractions: ``linspace(0, border, 20)`` and ``linspace(1 - border, 1, 20)``."""
    return (np.linspace(0.0, border, BORDER_GRID_STEPS), np.linspace(1.0 - border, 1.0, BORDER_GRID_STEPS))


def no_centre_crop(width: int, height: int, s: ClipSampling, rng: np.random.Generator) -> Crop:
    """The released "noCtr" / "borders25" crop (Sec. 3.5's augmentation as the authors ran it): sides as
    :func:`jitter_crop`, offsets ``floor((W - w) f_x)``, ``floor((H - h) f_y)`` with f_x and f_y on the
    same border grid (:func:`border_grid`: both near 0 or both near 1), rescaled to size x size.

    Released (``cnn_ucf101_get_im_flow_batch.m``): ``sz = round(min(imageSize .* (.75 + .5 rand(2,1)),
    [h; w]))``, ``dx = floor((w - sz(2)) * tf(2)) + 1`` with ``tf`` a random column of the grid tables.
    """
    w = int(np.clip(round(s.size * rng.uniform(1 - s.jitter, 1 + s.jitter)), 1, width))
    h = int(np.clip(round(s.size * rng.uniform(1 - s.jitter, 1 + s.jitter)), 1, height))
    grid = border_grid(s.border)[int(rng.integers(2))]  # one zone for both axes, as the released tables pair them
    fx, fy = grid[int(rng.integers(BORDER_GRID_STEPS))], grid[int(rng.integers(BORDER_GRID_STEPS))]
    return Crop(math.floor((width - w) * fx), math.floor((height - h) * fy), w, h, s.size, s.size)


def multiscale_regular_crop(width: int, height: int, s: ClipSampling, rng: np.random.Generator) -> Crop:
    """The released "multiScaleRegular" crop (``cnn_ucf101_get_flow_batch.m``): width and height each one of
    ``s.scales`` of the short side, independently, at a corner or the centre, rescaled to size x size.

    Released: ``reg_szs = [256, 224, 192, 168]; sz(1) = reg_szs(randi(4)); sz(2) = reg_szs(randi(4))`` on
    frames 256 px high; ``dx = [0 w-sz(2) w-sz(2) 0 floor((w-sz(2)+1)/2)] + 1``, likewise ``dy``.
    """
    base = min(width, height)
    sides = [max(1, int(base * r)) for r in s.scales]
    w, h = sides[int(rng.integers(len(sides)))], sides[int(rng.integers(len(sides)))]
    fw, fh = width - w, height - h
    positions = [(0, 0), (fw, fh), (fw, 0), (0, fh), ((fw + 1) // 2, (fh + 1) // 2)]
    x0, y0 = positions[int(rng.integers(5))]
    return Crop(x0, y0, w, h, s.size, s.size)


def multiscale_crop(width: int, height: int, s: ClipSampling, rng: np.random.Generator) -> Crop:
    """Corner/centre crop with scale jitter (Wang et al. [35]), rescaled to size x size."""
    base = min(width, height)
    sides = [max(1, int(base * r)) for r in s.scales]
    pairs = [(i, j) for i in range(len(sides)) for j in range(len(sides)) if abs(i - j) <= s.max_distort]
    i, j = pairs[int(rng.integers(len(pairs)))]
    w, h = sides[i], sides[j]
    x0, y0 = _five_positions(width, height, w, h)[int(rng.integers(5))]
    return Crop(x0, y0, w, h, s.size, s.size)


#: The random training crops by mode name: ``rule(width, height, sampling, rng) -> Crop``.
RANDOM_CROPS = {"jitter": jitter_crop, "multiscale": multiscale_crop, "noCtr": no_centre_crop,
                "borders25": no_centre_crop, "multiScaleRegular": multiscale_regular_crop}


def _five_positions(width: int, height: int, w: int, h: int) -> list[tuple[int, int]]:
    """Top-left, top-right, bottom-left, bottom-right and centre offsets of a w x h crop."""
    return [(0, 0), (width - w, 0), (0, height - h), (width - w, height - h), ((width - w) // 2, (height - h) // 2)]


def fixed_crops(width: int, height: int, size: int, crop: str) -> list[Crop]:
    """The deterministic crops of a test crop mode: "center" (1), "full" (1), "corners" (5)."""
    if crop == "full":
        return [Crop(0, 0, width, height, width, height)]
    if crop == "center":
        return [Crop((width - size) // 2, (height - size) // 2, size, size, size, size)]
    if crop == "corners":
        return [Crop(x, y, size, size, size, size) for x, y in _five_positions(width, height, size, size)]
    raise ConfigError(f"test crop must be one of {list(TEST_CROPS)}, got {crop!r}")


def apply_crop(frames: np.ndarray, crop: Crop, *, flow: bool = False) -> np.ndarray:
    """Crop (and rescale, bilinear) uint8 frames [n, H, W, C]; flip mirrors them and, for flow
    (C = 2: u, v), inverts the horizontal component: u := 255 - u (Sec. 3.5)."""
    window = frames[:, crop.y0:crop.y0 + crop.h, crop.x0:crop.x0 + crop.w]
    resize = (crop.w, crop.h) != (crop.out_w, crop.out_h)
    if not resize and not crop.flip:
        return np.ascontiguousarray(window)
    out = np.empty((len(frames), crop.out_h, crop.out_w, frames.shape[3]), np.uint8)
    for i, image in enumerate(window):  # frame by frame: no transposition of the whole stack
        if resize:
            image = cv2.resize(image, (crop.out_w, crop.out_h), interpolation=cv2.INTER_LINEAR)
        if crop.flip:
            image = cv2.flip(image, 1)
        out[i] = image.reshape(out.shape[1:])
    if crop.flip and flow:
        np.subtract(255, out[..., 0], out=out[..., 0])
    return out


# ---- loading -----------------------------------------------------------------------------------------


def _num_frames(store, video: str) -> int:
    n = int(store.num_frames(video))
    if n < 2:
        raise DataError(f"video {video!r} has {n} usable frame(s) in the frame store; expected at least 2 "
                        f"(RGB frames with the flow between them)")
    return n


def load_clip(store, video: str, positions: Sequence[int], L: int,
              crop: Crop | Callable[[int, int], Crop] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read, crop and normalise one clip: rgb float32 [T, 3, S, S], flow float32 [T, 2L, S, S].

    ``crop`` is a Crop, a function (width, height) -> Crop called with the frame size, or None for
    the whole frame. Each distinct frame is decoded once (stacks overlap when tau < L). Flow
    channels are u0, v0, u1, v1, ... of the stack, minus 128; RGB is ImageNet-normalised.
    """
    n = _num_frames(store, video)
    rgb_idx, flow_idx = clip_indices(n, positions, L)
    rgb_u, rgb_inv = np.unique(rgb_idx, return_inverse=True)
    flow_u, flow_inv = np.unique(flow_idx, return_inverse=True)
    rgb = np.asarray(store.read_rgb(video, rgb_u.tolist()))
    flow = np.asarray(store.read_flow(video, flow_u.tolist()))
    if rgb.shape[1:3] != flow.shape[1:3]:
        raise DataError(f"video {video!r}: RGB frames are {rgb.shape[2]}x{rgb.shape[1]} but flow frames are "
                        f"{flow.shape[2]}x{flow.shape[1]}; expected the same size")
    height, width = rgb.shape[1:3]
    if crop is None:
        crop = Crop(0, 0, width, height, width, height)
    elif callable(crop):
        crop = crop(width, height)
    rgb = apply_crop(rgb, crop)
    flow = apply_crop(flow, crop, flow=True)
    T, (S_h, S_w) = len(rgb_idx), rgb.shape[1:3]
    x = np.empty((T, 3, S_h, S_w), np.float32)
    picked = rgb[rgb_inv.reshape(-1)]
    for c in range(3):  # (x / 255 - mean) / std in one pass per channel
        np.multiply(picked[..., c], np.float32(1 / (255 * IMAGENET_STD[c])), out=x[:, c], casting="unsafe")
        x[:, c] -= np.float32(IMAGENET_MEAN[c] / IMAGENET_STD[c])
    f = np.empty((T, L, 2, S_h, S_w), np.float32)  # channel 2l + c: u0, v0, u1, v1, ...
    inv = flow_inv.reshape(T, L)
    for c in range(2):
        f[:, :, c] = flow[..., c][inv]
    f -= np.float32(FLOW_OFFSET)
    return torch.from_numpy(x), torch.from_numpy(f.reshape(T, 2 * L, S_h, S_w))


class TwoStreamClips(Dataset):
    """Training (``train=True``: one random clip per video and epoch, Sec. 3.5) or validation
    (``train=False``: T samples spread over the video, centre (or full) crop, no flip) clips.

    ``__getitem__`` returns ``{"rgb": [T,3,S,S], "flow": [T,2L,S,S], "label", "video", "view": 0}``.
    Call ``set_epoch`` before each epoch (before creating the DataLoader iterator; with
    ``persistent_workers`` the workers would keep the old epoch).
    """

    def __init__(self, store, items: Sequence, sampling: ClipSampling, *, train: bool, seed: int = 0):
        self.store = store
        self.items = tuple(items)
        self.sampling = sampling.validate(TRAIN_CROPS)
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Draw different clips in epoch ``epoch`` (deterministic given seed, epoch and index)."""
        self.epoch = int(epoch)

    def _plan(self, index: int) -> tuple[np.ndarray, Callable[[int, int], Crop]]:
        """Positions of sample ``index`` and a function (width, height) -> its crop. Every random
        draw (tau, start, crop, flip, in this order) comes from default_rng([seed, epoch, index])."""
        s, item = self.sampling, self.items[index]
        n = _num_frames(self.store, item.name)
        if not self.train:
            mode = "full" if s.crop == "full" else "center"

            def fixed(width: int, height: int) -> Crop:
                _check_fits(item.name, width, height, s, mode)
                return fixed_crops(width, height, s.size, mode)[0]

            return _test_clips(n, "spread_flips", s)[0], fixed
        rng = np.random.default_rng([self.seed, self.epoch, index])
        tau = int(rng.integers(int(s.tau[0]), int(s.tau[1]) + 1))
        positions = train_positions(n, s.T, tau, rng)

        def random_crop(width: int, height: int) -> Crop:
            _check_fits(item.name, width, height, s, s.crop)
            if s.crop in RANDOM_CROPS:
                c = RANDOM_CROPS[s.crop](width, height, s, rng)
            else:
                c = fixed_crops(width, height, s.size, s.crop)[0]
            flip = bool(s.flip and rng.random() < 0.5)
            return Crop(c.x0, c.y0, c.w, c.h, c.out_w, c.out_h, flip)

        return positions, random_crop

    def sample_plan(self, index: int, width: int, height: int) -> tuple[np.ndarray, Crop]:
        """Positions and crop of sample ``index`` in the current epoch for frames of width x height:
        exactly what ``__getitem__`` loads."""
        positions, crop_for = self._plan(index)
        return positions, crop_for(width, height)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.items):
            raise IndexError(f"sample {index} out of range for {len(self.items)} videos")
        item = self.items[index]
        positions, crop_for = self._plan(index)
        rgb, flow = load_clip(self.store, item.name, positions, self.sampling.L, crop_for)
        return {"rgb": rgb, "flow": flow, "label": int(item.label), "video": item.name, "view": 0}


class TwoStreamViews(Dataset):
    """Every (video, view) pair of a test protocol (Sec. 3.5 "Testing", Sec. 4.6); see the module
    docstring for ``mode`` and ``crop`` (default: ``sampling.crop`` if it is a test crop, else
    "center"). Index i is video ``i // views_per_video``, view ``i % views_per_video``; views are
    ordered (temporal clip, crop, flip). Evaluation averages the predictions over the views of a video.
    """

    def __init__(self, store, items: Sequence, sampling: ClipSampling, *, mode: str = "spread_flips",
                 crop: str | None = None):
        if mode not in VIEW_MODES:
            raise ConfigError(f"test mode must be one of {list(VIEW_MODES)}, got {mode!r}")
        self.sampling = sampling.validate()
        crop = crop if crop is not None else (sampling.crop if sampling.crop in TEST_CROPS else "center")
        if crop not in TEST_CROPS:
            raise ConfigError(f"test crop must be one of {list(TEST_CROPS)}, got {crop!r}")
        self.store = store
        self.items = tuple(items)
        self.mode = mode
        self.crop = crop
        self.n_clips = {"spread_flips": 1, "strided_flips": self.sampling.test_clips, "frames25": FRAMES25}[mode]
        self.n_crops = 5 if crop == "corners" else 1
        self.n_flips = 1 if mode == "frames25" else 2

    @property
    def views_per_video(self) -> int:
        return self.n_clips * self.n_crops * self.n_flips

    def __len__(self) -> int:
        return len(self.items) * self.views_per_video

    def view_info(self, view: int) -> dict:
        """{"clip", "crop", "flip"} indices of view number ``view``."""
        if not 0 <= view < self.views_per_video:
            raise IndexError(f"view {view} out of range: {self.views_per_video} views per video")
        rest, flip = divmod(view, self.n_flips)
        clip, crop = divmod(rest, self.n_crops)
        return {"clip": clip, "crop": crop, "flip": bool(flip)}

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range: {len(self)} (video, view) pairs")
        item = self.items[index // self.views_per_video]
        view = index % self.views_per_video
        info = self.view_info(view)
        n = _num_frames(self.store, item.name)
        positions = _test_clips(n, self.mode, self.sampling)[info["clip"]]

        def crop_for(width: int, height: int) -> Crop:
            _check_fits(item.name, width, height, self.sampling, self.crop)
            c = fixed_crops(width, height, self.sampling.size, self.crop)[info["crop"]]
            return Crop(c.x0, c.y0, c.w, c.h, c.out_w, c.out_h, info["flip"])

        rgb, flow = load_clip(self.store, item.name, positions, self.sampling.L, crop_for)
        return {"rgb": rgb, "flow": flow, "label": int(item.label), "video": item.name, "view": view}
