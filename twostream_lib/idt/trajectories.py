"""Dense trajectories and improved (camera-motion compensated) trajectories, vectorised with NumPy.

Wang & Schmid, "Action recognition with improved trajectories", ICCV 2013 (IDT), building on
Wang, Klaser, Schmid, Liu, "Action recognition by dense trajectories", CVPR 2011 / IJCV 2013.
The Fusion paper (Feichtenhofer, Pinz, Zisserman, CVPR 2016, Sec. 4.6, Table 6) late-fuses
Fisher-vector encoded IDT features with its ConvNet. This module follows the authors' C++ release
(``DenseTrackStab.cpp``) step by step:

1. **Spatial pyramid**: up to 8 scales spaced by 1/sqrt(2), as many as keep the short side
   >= the 32 px patch (``InitPyramid``).
2. **Dense sampling** every W = 5 px on each scale; points in homogeneous areas are dropped: the
   smaller eigenvalue of the 3x3 auto-correlation matrix must exceed 0.001 x its maximum over the
   frame (``DenseSample``). Every frame, grid cells left without a tracked point are re-sampled, so
   the density stays constant.
3. **Tracking**: Farneback dense flow (poly_n 7, sigma 1.5, window 10, 2 iterations, pyramid
   scale 1/sqrt(2) as the authors), median filtered (3x3); a point moves by the filtered flow at
   its rounded position, ``P_{t+1} = P_t + (M * w)|_{round(P_t)}``; points leaving the frame die.
4. **Trajectories** of L = 15 frames; pruning (``IsValid``): static if the standard deviation of
   the positions is < sqrt(3) px in both x and y; random if it is > 50 px; erratic if its largest
   step is > 20 px *and* > 70% of the total length.
5. **Descriptors** along the trajectory (see :mod:`.descriptors`): trajectory shape (the L
   displacement vectors normalised by the sum of their magnitudes, 2L = 30 dims), HOG 96, HOF 108,
   MBHx 96, MBHy 96, in a 32x32 px (at the scale) x 15 frame volume with 2x2x3 cells.
6. **Improved** (``improved=True``): a homography between consecutive frames from keypoint matches
   (ORB or SIFT here; SURF in the paper, which OpenCV ships only in non-free builds) merged with
   flow correspondences at good-features-to-track corners, RANSAC (1 px, used only with > 50
   matches and > 25 inliers, else identity); the second frame is warped with it and the flow
   recomputed. HOF, MBH and the trajectory shape use this compensated flow; trajectories whose
   compensated displacement never exceeds 1 px are removed as camera motion (``IsCameraMotion``).
   The paper also removes matches on people found by a human detector. There is none here; the
   nearest thing we do is a *residual-motion mask*: pixels whose compensated flow in the previous
   frame pair exceeded ``foreground_flow`` px (dilated) are treated as independently moving and
   their matches are excluded from the next homography (skipped when the mask covers more than
   half of the frame, which means the estimate was wrong rather than that the scene moved).

Departures from the C++ code (all documented in ``docs/idt.md``): one Farneback flow per
frame pair at full resolution, resized to each pyramid scale (the authors compute it coarse to
fine on their own pyramid); median filtering with OpenCV's ``medianBlur`` (border pixels use
replicated neighbours); ORB/SIFT instead of SURF; no human detector.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from twostream_lib.errors import ConfigError, DataError

from .descriptors import (
    cell_descriptors,
    descriptor_dims,
    hof_integral,
    hog_integral,
    mbh_integrals,
)

__all__ = [
    "DTParams",
    "Trajectories",
    "dense_sample",
    "extract_trajectories",
    "farneback_flow",
    "pyramid_scales",
]


@dataclass(frozen=True)
class DTParams:
    """Parameters of (improved) dense trajectories; defaults are Wang & Schmid's (ICCV 2013)."""

    # ---- sampling and tracking (Wang et al. CVPR 2011, Sec. 2) --------------------------------
    track_length: int = 15  # L, frames per trajectory
    min_distance: int = 5  # W, dense sampling step in pixels (at each scale)
    scale_num: int = 8  # at most this many spatial scales ...
    scale_stride: float = math.sqrt(2.0)  # ... spaced by this factor
    init_gap: int = 1  # re-sample empty grid cells every this many frames
    quality: float = 0.001  # min-eigenvalue threshold, relative to the frame's maximum
    median_ksize: int = 3  # median filter applied to the flow before tracking
    # ---- descriptors (Sec. 3 of IJCV 2013) ---------------------------------------------------
    patch_size: int = 32  # N, pixels at the point's scale
    nxy_cell: int = 2  # n_sigma
    nt_cell: int = 3  # n_tau
    hof_min_flow: float = 0.4  # HOF zero bin: |flow| <= this
    cell_epsilon: float = 0.05  # added to each cell histogram before L1 + sqrt
    # ---- pruning (IsValid / IsCameraMotion of the C++ release) -------------------------------
    min_var: float = math.sqrt(3.0)  # static: std of x and of y positions both below this (px)
    max_var: float = 50.0  # random: std of x or y above this (px)
    max_dis: float = 20.0  # erratic: largest step above this (px) ...
    erratic_fraction: float = 0.7  # ... and above this fraction of the total length
    # ---- Farneback flow (the authors' settings) -----------------------------------------------
    fb_winsize: int = 10
    fb_iterations: int = 2
    fb_poly_n: int = 7
    fb_poly_sigma: float = 1.5
    # ---- improved trajectories: camera-motion compensation (ICCV 2013, Sec. 2) ---------------
    improved: bool = True
    keypoints: str = "orb"  # "orb" | "sift" | "none" (flow correspondences only); SURF in the paper
    max_keypoints: int = 1000
    match_window: int = 25  # px, keypoint matches must lie within this window
    max_flow_corners: int = 1000  # good-features-to-track corners giving flow correspondences
    min_matches: int = 50  # estimate a homography only with more matches than this ...
    min_inliers: int = 25  # ... and keep it only with more RANSAC inliers than this
    ransac_threshold: float = 1.0  # px
    identity_tolerance: float = 0.05  # px; a homography moving no frame corner further is identity
    camera_min_disp: float = 1.0  # remove trajectories whose compensated steps are all <= this (px)
    foreground_flow: float | None = 2.0  # residual-motion mask threshold (px); None = no mask
    foreground_dilate: int = 9  # px, dilation of the residual-motion mask
    foreground_max_fraction: float = 0.5  # ignore the mask when it covers more of the frame

    def validate(self) -> DTParams:
        """Raise ConfigError for a parameter out of range; return self."""
        checks = [
            (self.track_length >= 2, "track_length must be >= 2"),
            (self.min_distance >= 1, "min_distance must be >= 1"),
            (self.scale_num >= 1, "scale_num must be >= 1"),
            (self.scale_stride > 1.0, "scale_stride must be > 1"),
            (self.init_gap >= 1, "init_gap must be >= 1"),
            (0.0 <= self.quality < 1.0, "quality must be in [0, 1)"),
            (self.median_ksize in (1, 3, 5), "median_ksize must be 1, 3 or 5"),
            (self.nxy_cell >= 1 and self.patch_size % self.nxy_cell == 0,
             "patch_size must be a positive multiple of nxy_cell"),
            (1 <= self.nt_cell <= self.track_length, "nt_cell must be in [1, track_length]"),
            (self.keypoints in ("orb", "sift", "none"), "keypoints must be 'orb', 'sift' or 'none'"),
            (0.0 < self.erratic_fraction <= 1.0, "erratic_fraction must be in (0, 1]"),
            (self.fb_poly_n in (5, 7), "fb_poly_n must be 5 or 7"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"DTParams: {msg} (got {self})")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Trajectories:
    """Valid trajectories of one video and their descriptors.

    ``points[i]`` holds the L+1 positions (x, y) in pixels of the input frames, ``end_frame[i]`` the
    0-based index of the frame of the last one, ``scale[i]`` the pyramid scale factor it was
    tracked at (1, sqrt 2, 2, ...). ``descriptors`` maps "traj", "hog", "hof", "mbhx", "mbhy" to
    float32 arrays ``[n, dim]``. ``info`` records frame counts and how many frame pairs got a
    homography (improved mode).
    """

    points: np.ndarray
    end_frame: np.ndarray
    scale: np.ndarray
    descriptors: dict[str, np.ndarray]
    num_frames: int
    frame_size: tuple[int, int]  # (H, W)
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.points.shape[0])


# ----------------------------------------------------------------------------- building blocks

def pyramid_scales(width: int, height: int, params: DTParams) -> tuple[list[float], list[tuple[int, int]]]:
    """Scale factors and (width, height) of each pyramid level, as the authors' ``InitPyramid``.

    Levels are added while the short side, divided by ``scale_stride`` each time, stays >= the
    patch size; at least one level, at most ``scale_num``.
    """
    min_size = float(min(width, height))
    nlayers = 0
    while min_size >= params.patch_size:
        min_size /= params.scale_stride
        nlayers += 1
    n = max(1, min(params.scale_num, nlayers))
    scales = [params.scale_stride ** i for i in range(n)]
    sizes = [(round(width / s), round(height / s)) for s in scales]
    return scales, sizes


def _pyramid(grey: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    out = [grey]
    for size in sizes[1:]:
        out.append(cv2.resize(out[-1], size, interpolation=cv2.INTER_LINEAR))
    return out


def dense_sample(grey: np.ndarray, existing: np.ndarray | None, params: DTParams) -> np.ndarray:
    """New points ``[m, 2]`` (x, y) on the ``min_distance`` grid, as the authors' ``DenseSample``.

    A grid cell gets its centre point if no ``existing`` point lies in it and the minimum
    eigenvalue of the structure tensor there (``cornerMinEigenVal``, 3x3) exceeds
    ``quality`` x its maximum over the image (homogeneous areas cannot be tracked).
    """
    step = params.min_distance
    h, w = grey.shape
    gw, gh = w // step, h // step
    if gw == 0 or gh == 0:
        return np.zeros((0, 2), np.float32)
    eig = cv2.cornerMinEigenVal(grey, 3, ksize=3)
    threshold = float(eig.max()) * params.quality
    occupied = np.zeros((gh, gw), bool)
    if existing is not None and len(existing):
        xf = np.floor(existing[:, 0]).astype(np.int64)
        yf = np.floor(existing[:, 1]).astype(np.int64)
        ok = (xf >= 0) & (yf >= 0) & (xf < gw * step) & (yf < gh * step)
        occupied[yf[ok] // step, xf[ok] // step] = True
    off = step // 2
    ys = np.arange(gh) * step + off
    xs = np.arange(gw) * step + off
    strong = eig[np.ix_(ys, xs)] > threshold
    iy, ix = np.nonzero(strong & ~occupied)
    return np.stack([xs[ix], ys[iy]], axis=1).astype(np.float32)


def farneback_flow(prev: np.ndarray, nxt: np.ndarray, params: DTParams, levels: int) -> np.ndarray:
    """Dense Farneback flow ``[H, W, 2]`` (u, v) from ``prev`` to ``nxt`` with the authors' settings."""
    return cv2.calcOpticalFlowFarneback(
        prev, nxt, None, 1.0 / params.scale_stride, max(1, levels), params.fb_winsize,
        params.fb_iterations, params.fb_poly_n, params.fb_poly_sigma, 0)


def _flow_at_scale(flow: np.ndarray, size: tuple[int, int], scale: float) -> np.ndarray:
    if scale == 1.0:
        return flow
    return cv2.resize(flow, size, interpolation=cv2.INTER_AREA) * np.float32(1.0 / scale)


def _median_flow(flow: np.ndarray, ksize: int) -> np.ndarray:
    if ksize <= 1:
        return flow
    return np.stack([cv2.medianBlur(np.ascontiguousarray(flow[..., c]), ksize) for c in (0, 1)], axis=-1)


def _to_grey(frame, index: int) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 3:
        return cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    if a.ndim == 3 and a.shape[2] == 1:
        return np.ascontiguousarray(a[..., 0])
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    raise DataError(f"frame {index}: expected an [H, W] grey or [H, W, 3] RGB image, got shape {a.shape}")


# ----------------------------------------------------------------------------- camera motion

class _CameraMotion:
    """Homography between consecutive frames and the compensated flow (ICCV 2013, Sec. 2)."""

    def __init__(self, params: DTParams, height: int, width: int):
        self.p = params
        if params.keypoints == "orb":
            self.detector = cv2.ORB_create(nfeatures=params.max_keypoints)
            self.norm = cv2.NORM_HAMMING
        elif params.keypoints == "sift":
            self.detector = cv2.SIFT_create(nfeatures=params.max_keypoints)
            self.norm = cv2.NORM_L2
        else:
            self.detector = None
        self.prev_kp: np.ndarray | None = None
        self.prev_desc: np.ndarray | None = None
        self.allowed: np.ndarray | None = None  # uint8 mask (255 = static background) of the prev frame
        gx, gy = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        self.grid = (gx, gy)
        self.found = 0

    def _detect(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        kps, desc = self.detector.detectAndCompute(grey, None)
        pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
        return pts, desc

    def _keypoint_matches(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros((0, 2), np.float32)
        if self.detector is None:
            return empty, empty
        if self.prev_kp is None:
            raise AssertionError("start() must be called with the first frame")
        kp, desc = self._detect(grey)
        prev_kp, prev_desc = self.prev_kp, self.prev_desc
        self.prev_kp, self.prev_desc = kp, desc
        if desc is None or prev_desc is None or len(kp) == 0 or len(prev_kp) == 0:
            return empty, empty
        # windowedMatchingMask: a match may move by at most match_window px in x and in y
        near = ((np.abs(kp[:, None, 0] - prev_kp[None, :, 0]) <= self.p.match_window)
                & (np.abs(kp[:, None, 1] - prev_kp[None, :, 1]) <= self.p.match_window))
        matcher = cv2.BFMatcher(self.norm)
        matches = matcher.match(desc, prev_desc, near.astype(np.uint8))
        if not matches:
            return empty, empty
        q = np.array([m.queryIdx for m in matches])
        t = np.array([m.trainIdx for m in matches])
        ok = near[q, t]
        return prev_kp[t[ok]], kp[q[ok]]

    def start(self, grey: np.ndarray) -> None:
        if self.detector is not None:
            self.prev_kp, self.prev_desc = self._detect(grey)

    def _flow_matches(self, prev: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        corners = cv2.goodFeaturesToTrack(prev, self.p.max_flow_corners, 0.001, 3, mask=self.allowed)
        if corners is None:
            z = np.zeros((0, 2), np.float32)
            return z, z
        c = corners.reshape(-1, 2)
        h, w = prev.shape
        x = np.clip(np.rint(c[:, 0]), 0, w - 1).astype(np.int64)
        y = np.clip(np.rint(c[:, 1]), 0, h - 1).astype(np.int64)
        src = np.stack([x, y], axis=1).astype(np.float32)
        return src, src + flow[y, x]

    def compensate(self, prev: np.ndarray, grey: np.ndarray, flow: np.ndarray, levels: int) -> np.ndarray:
        """Compensated flow from ``prev`` to ``grey`` (``flow`` itself when no homography is found)."""
        kp_src, kp_dst = self._keypoint_matches(grey)
        if self.allowed is not None and len(kp_src):
            h, w = prev.shape
            xi = np.clip(np.rint(kp_src[:, 0]), 0, w - 1).astype(np.int64)
            yi = np.clip(np.rint(kp_src[:, 1]), 0, h - 1).astype(np.int64)
            keep = self.allowed[yi, xi] > 0
            kp_src, kp_dst = kp_src[keep], kp_dst[keep]
        fl_src, fl_dst = self._flow_matches(prev, flow)
        src = np.concatenate([kp_src, fl_src])
        dst = np.concatenate([kp_dst, fl_dst])
        H = None
        if len(src) > self.p.min_matches:
            est, inliers = cv2.findHomography(src, dst, cv2.RANSAC, self.p.ransac_threshold)
            if est is not None and inliers is not None and int(inliers.sum()) > self.p.min_inliers:
                H = est
        if H is not None:
            self.found += 1
        if H is None or self._near_identity(H, prev.shape):
            out = flow  # warping by (almost) nothing would reproduce the same flow
        else:
            # warp the second frame back onto the first: warped(x) = grey(H x); pixels mapped
            # outside the frame take the first frame's value (zero flow), as MyWarpPerspective.
            gx, gy = self.grid
            den = H[2, 0] * gx + H[2, 1] * gy + H[2, 2]
            mx = ((H[0, 0] * gx + H[0, 1] * gy + H[0, 2]) / den).astype(np.float32)
            my = ((H[1, 0] * gx + H[1, 1] * gy + H[1, 2]) / den).astype(np.float32)
            h, w = grey.shape
            warped = cv2.remap(grey, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            outside = (mx < 0) | (my < 0) | (mx > w - 1) | (my > h - 1)
            warped[outside] = prev[outside]
            out = farneback_flow(prev, warped, self.p, levels)
        self._update_mask(out, H is not None)
        return out

    def _near_identity(self, H: np.ndarray, shape: tuple[int, int]) -> bool:
        h, w = shape
        c = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
        m = cv2.perspectiveTransform(c[None], H)[0]
        return float(np.abs(m - c).max()) < self.p.identity_tolerance

    def _update_mask(self, comp_flow: np.ndarray, have_h: bool) -> None:
        """Residual-motion mask for the next pair (our stand-in for the paper's human detector)."""
        if self.p.foreground_flow is None or not have_h:
            self.allowed = None
            return
        moving = (np.hypot(comp_flow[..., 0], comp_flow[..., 1]) > self.p.foreground_flow).astype(np.uint8)
        if self.p.foreground_dilate > 1:
            k = np.ones((self.p.foreground_dilate, self.p.foreground_dilate), np.uint8)
            moving = cv2.dilate(moving, k)
        if moving.mean() > self.p.foreground_max_fraction or not moving.any():
            self.allowed = None
        else:
            self.allowed = np.where(moving > 0, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- tracks

class _Tracks:
    """The live tracks of one pyramid scale, as parallel arrays (one row per track)."""

    def __init__(self, params: DTParams, dims: dict[str, int]):
        L = params.track_length
        self.L = L
        self.nt = params.nt_cell
        self.t_stride = L // params.nt_cell
        self.points = np.zeros((0, L + 1, 2), np.float32)
        self.disp = np.zeros((0, L, 2), np.float32)
        self.age = np.zeros(0, np.int64)
        self.frame_dims = {k: d // params.nt_cell for k, d in dims.items() if k != "traj"}
        self.acc = {k: np.zeros((0, self.nt, d), np.float32) for k, d in self.frame_dims.items()}

    def __len__(self) -> int:
        return len(self.age)

    def current(self) -> np.ndarray:
        return self.points[np.arange(len(self.age)), self.age]

    def add(self, pts: np.ndarray) -> None:
        m = len(pts)
        if m == 0:
            return
        new_points = np.zeros((m, self.L + 1, 2), np.float32)
        new_points[:, 0] = pts
        self.points = np.concatenate([self.points, new_points])
        self.disp = np.concatenate([self.disp, np.zeros((m, self.L, 2), np.float32)])
        self.age = np.concatenate([self.age, np.zeros(m, np.int64)])
        for k in self.acc:
            self.acc[k] = np.concatenate([self.acc[k], np.zeros((m, self.nt, self.frame_dims[k]), np.float32)])

    def _select(self, keep: np.ndarray) -> None:
        self.points, self.disp, self.age = self.points[keep], self.disp[keep], self.age[keep]
        for k in self.acc:
            self.acc[k] = self.acc[k][keep]

    def step(self, track_flow: np.ndarray, desc_flow: np.ndarray, integrals: dict[str, np.ndarray],
             params: DTParams) -> dict[str, np.ndarray] | None:
        """Describe every track at its current point, move it by the flow, return finished tracks."""
        n = len(self.age)
        if n == 0:
            return None
        h, w = track_flow.shape[:2]
        idx = np.arange(n)
        pts = self.points[idx, self.age]
        rx = np.rint(pts[:, 0]).astype(np.int64)
        ry = np.rint(pts[:, 1]).astype(np.int64)
        xi = np.clip(rx, 0, w - 1)
        yi = np.clip(ry, 0, h - 1)
        # descriptors in the patch around the point (GetRect + GetDesc), summed per temporal cell
        half = params.patch_size // 2
        x0 = np.clip(rx - half, 0, w - params.patch_size)
        y0 = np.clip(ry - half, 0, h - params.patch_size)
        cell = self.age // self.t_stride
        use = np.flatnonzero(cell < self.nt)
        if len(use):
            for k, integ in integrals.items():
                d = cell_descriptors(integ, x0[use], y0[use], patch=params.patch_size,
                                     ncells=params.nxy_cell, epsilon=params.cell_epsilon)
                self.acc[k][use, cell[use]] += d
        new = pts + track_flow[yi, xi]
        self.disp[idx, self.age] = desc_flow[yi, xi]
        self.points[idx, self.age + 1] = new
        self.age += 1
        inside = (new[:, 0] > 0) & (new[:, 0] < w) & (new[:, 1] > 0) & (new[:, 1] < h)
        self._select(inside)
        done = self.age >= self.L
        if not done.any():
            return None
        m = int(done.sum())
        out = {"points": self.points[done], "disp": self.disp[done],
               **{k: (v[done] / self.t_stride).reshape(m, -1) for k, v in self.acc.items()}}
        self._select(~done)
        return out


def _validate(fin: dict[str, np.ndarray], scale: float, params: DTParams) -> tuple[np.ndarray, np.ndarray]:
    """Pruning of finished tracks (``IsValid`` + ``IsCameraMotion``): (keep mask, shape descriptor)."""
    pts = fin["points"].astype(np.float64) * scale
    std = pts.std(axis=1)  # population std over the L+1 positions, per coordinate
    static = (std[:, 0] < params.min_var) & (std[:, 1] < params.min_var)
    random_ = (std[:, 0] > params.max_var) | (std[:, 1] > params.max_var)
    steps = np.diff(pts, axis=1)
    step_len = np.hypot(steps[..., 0], steps[..., 1])
    length = step_len.sum(axis=1)
    max_step = step_len.max(axis=1)
    erratic = (max_step > params.max_dis) & (max_step > params.erratic_fraction * length)
    keep = ~(static | random_ | erratic) & (length > 0)
    if params.improved:
        disp = fin["disp"].astype(np.float64) * scale
        dlen = np.hypot(disp[..., 0], disp[..., 1])
        keep &= dlen.max(axis=1) > params.camera_min_disp
        shape = disp / np.maximum(dlen.sum(axis=1), 1e-12)[:, None, None]
    else:
        shape = steps / np.maximum(length, 1e-12)[:, None, None]
    return keep, shape.reshape(len(pts), -1).astype(np.float32)


# ----------------------------------------------------------------------------- main entry

def extract_trajectories(frames: Iterable, params: DTParams | None = None, *,
                         max_frames: int | None = None) -> Trajectories:
    """(Improved) dense trajectories and their descriptors for one video.

    ``frames`` is an array ``[T, H, W]`` (grey) or ``[T, H, W, 3]`` (RGB, uint8) or any iterable of
    such frames (read lazily, so a long video need not be held in memory). See the module docstring
    for the algorithm (Wang & Schmid, ICCV 2013). A video of T frames yields trajectories ending at
    frames L..T-1; fewer than L+1 frames yield none. Raises DataError for an empty video, frames of
    changing size or frames smaller than the 32 px descriptor patch.
    """
    p = (params or DTParams()).validate()
    dims = descriptor_dims(p.track_length, p.nxy_cell, p.nt_cell)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise DataError("extract_trajectories: the video has no frames")
    prev = _to_grey(first, 0)
    h, w = prev.shape
    if min(h, w) < p.patch_size:
        raise DataError(f"extract_trajectories: frames of {h}x{w} px are smaller than the "
                        f"{p.patch_size} px descriptor patch")
    scales, sizes = pyramid_scales(w, h, p)
    prev_pyr = _pyramid(prev, sizes)
    tracks = [_Tracks(p, dims) for _ in scales]
    for s, ts in enumerate(tracks):
        ts.add(dense_sample(prev_pyr[s], None, p))
    cam = _CameraMotion(p, h, w) if p.improved else None
    if cam is not None:
        cam.start(prev)

    out: dict[str, list] = {k: [] for k in ("points", "end", "scale", *dims)}
    t = 0
    for frame in it:
        if max_frames is not None and t + 1 >= max_frames:
            break
        t += 1
        grey = _to_grey(frame, t)
        if grey.shape != (h, w):
            raise DataError(f"extract_trajectories: frame {t} is {grey.shape}, frame 0 was {(h, w)}")
        flow = farneback_flow(prev, grey, p, len(scales))
        comp = cam.compensate(prev, grey, flow, len(scales)) if cam is not None else flow
        cur_pyr = _pyramid(grey, sizes)
        for s, ts in enumerate(tracks):
            if len(ts):
                f_s = _flow_at_scale(flow, sizes[s], scales[s])
                c_s = f_s if comp is flow else _flow_at_scale(comp, sizes[s], scales[s])
                mbhx, mbhy = mbh_integrals(c_s)
                integrals = {"hog": hog_integral(prev_pyr[s]), "hof": hof_integral(c_s, p.hof_min_flow),
                             "mbhx": mbhx, "mbhy": mbhy}
                fin = ts.step(_median_flow(f_s, p.median_ksize), c_s, integrals, p)
                if fin is not None:
                    keep, shape = _validate(fin, scales[s], p)
                    if keep.any():
                        out["points"].append(fin["points"][keep] * np.float32(scales[s]))
                        out["end"].append(np.full(int(keep.sum()), t, np.int32))
                        out["scale"].append(np.full(int(keep.sum()), scales[s], np.float32))
                        out["traj"].append(shape[keep])
                        for k in ("hog", "hof", "mbhx", "mbhy"):
                            out[k].append(fin[k][keep])
            if t % p.init_gap == 0:
                ts.add(dense_sample(cur_pyr[s], ts.current(), p))
        prev, prev_pyr = grey, cur_pyr

    L = p.track_length

    def cat(key: str, shape: tuple, dtype) -> np.ndarray:
        return np.concatenate(out[key]) if out[key] else np.zeros(shape, dtype)

    desc = {k: cat(k, (0, d), np.float32) for k, d in dims.items()}
    info = {"frame_pairs": t, "scales": len(scales)}
    if cam is not None:
        info["homography_pairs"] = cam.found
    return Trajectories(points=cat("points", (0, L + 1, 2), np.float32), end_frame=cat("end", (0,), np.int32),
                        scale=cat("scale", (0,), np.float32), descriptors=desc, num_frames=t + 1,
                        frame_size=(h, w), info=info)
