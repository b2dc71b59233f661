"""HOG, HOF and MBH descriptors along dense trajectories, computed from integral histograms.

Wang & Schmid, "Action recognition with improved trajectories", ICCV 2013 (and Wang, Klaser,
Schmid, Liu, "Dense trajectories and motion boundary descriptors", IJCV 2013, Sec. 3): around every
trajectory point a ``N x N`` patch (N = 32 px at the point's pyramid scale) is divided into
``n_sigma x n_sigma`` = 2 x 2 spatial cells; the trajectory's L = 15 frames are divided into
``n_tau`` = 3 temporal cells of 5 frames. In each cell:

* HOG: orientation of the grey-level gradient, 8 bins over 360 degrees;
* HOF: orientation of the optical flow, 8 bins + 1 "zero" bin for flow of magnitude <= 0.4 px;
* MBHx / MBHy: orientation of the spatial gradient of the horizontal / vertical flow component
  (the motion boundaries), 8 bins each.

Each pixel votes with its magnitude, split linearly between the two nearest orientation bins
(the zero bin of HOF receives a vote of 1). As in the authors' C++ release (``Descriptors.h``)
the per-frame cell histogram is ``sqrt(L1-normalise(max(h, 0) + 0.05))`` ("RootSIFT") and the
temporal cell averages its 5 frames, giving 2*2*3*8 = 96 (HOG, MBHx, MBHy) and 2*2*3*9 = 108
(HOF) dimensions. Cell histograms are read from integral histograms in O(1) per cell.

The Fusion paper (Feichtenhofer et al., CVPR 2016, Sec. 4.6, Table 6) uses these IDT
descriptors (HOG, HOF, MBH), Fisher-vector encoded, for its late fusion with the ConvNet.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "DESCRIPTOR_TYPES",
    "cell_descriptors",
    "descriptor_dims",
    "hof_integral",
    "hog_integral",
    "integral_histogram",
    "mbh_integrals",
    "orientation_histogram",
]

#: Descriptor types in the order they are stored, encoded and concatenated.
DESCRIPTOR_TYPES: tuple[str, ...] = ("traj", "hog", "hof", "mbhx", "mbhy")

HOG_BINS = 8
HOF_BINS = 8  # + 1 zero bin
MBH_BINS = 8


def descriptor_dims(track_length: int = 15, nxy_cell: int = 2, nt_cell: int = 3) -> dict[str, int]:
    """Dimension of each descriptor type: traj 2L, HOG/MBH 8 n_sigma^2 n_tau, HOF 9 n_sigma^2 n_tau.

    With the paper's parameters (L=15, n_sigma=2, n_tau=3): traj 30, HOG 96, HOF 108, MBHx/MBHy 96
    (Wang & Schmid, ICCV 2013, Sec. 4 / IJCV 2013, Sec. 3).
    """
    cells = nxy_cell * nxy_cell * nt_cell
    return {"traj": 2 * track_length, "hog": HOG_BINS * cells, "hof": (HOF_BINS + 1) * cells,
            "mbhx": MBH_BINS * cells, "mbhy": MBH_BINS * cells}


def orientation_histogram(dx: np.ndarray, dy: np.ndarray, nbins: int = 8,
                          zero_threshold: float | None = None) -> np.ndarray:
    """Per-pixel orientation votes ``[H, W, nbins (+1)]`` of the vector field (dx, dy).

    Orientation is measured over the full 360 degrees in image coordinates (y pointing down, as
    OpenCV's ``fastAtan2``), so +x is bin 0 and +y ("down") is bin ``nbins / 4``. The magnitude is
    split linearly between the two nearest bins. With ``zero_threshold`` (HOF), vectors of magnitude
    ``<= zero_threshold`` vote 1 into an extra last bin instead.
    """
    dx = np.ascontiguousarray(dx, np.float32)
    dy = np.ascontiguousarray(dy, np.float32)
    # cartToPolar's angle is OpenCV's fastAtan2 (about 0.3 degree accuracy), as the authors' code
    mag, ang = cv2.cartToPolar(dx, dy, angleInDegrees=True)
    fbin = ang * (nbins / 360.0)
    b0 = np.floor(fbin).astype(np.int64)
    frac = fbin - b0
    b0 %= nbins  # an angle rounding to exactly 360 degrees
    b1 = (b0 + 1) % nbins
    m1 = frac * mag
    m0 = mag - m1
    total = nbins + (1 if zero_threshold is not None else 0)
    if zero_threshold is not None:
        still = mag <= zero_threshold
        b0 = np.where(still, nbins, b0)
        m0 = np.where(still, 1.0, m0)
        m1 = np.where(still, 0.0, m1)
    h, w = dx.shape
    out = np.zeros((h * w, total), np.float32)
    rows = np.arange(h * w)
    out[rows, b0.ravel()] = m0.ravel()
    out[rows, b1.ravel()] += m1.ravel()
    return out.reshape(h, w, total)


def integral_histogram(hist: np.ndarray) -> np.ndarray:
    """Integral image ``I[y, x] = sum(hist[:y, :x])`` of a ``[H, W, B]`` histogram, shape ``[H+1, W+1, B]``.

    Accumulated in float64 so that differences of large sums keep their precision.
    """
    hist = np.ascontiguousarray(hist, np.float32)
    h, w, b = hist.shape
    if b <= 512:  # OpenCV's channel limit
        return cv2.integral(hist, sdepth=cv2.CV_64F).reshape(h + 1, w + 1, b)
    out = np.zeros((h + 1, w + 1, b), np.float64)
    np.cumsum(hist, axis=0, dtype=np.float64, out=out[1:, 1:])
    np.cumsum(out[1:, 1:], axis=1, out=out[1:, 1:])
    return out


def _sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # ksize=1: the [-1, 0, 1] derivative of the authors' HogComp/MbhComp.
    return (cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1), cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1))


def hog_integral(grey: np.ndarray) -> np.ndarray:
    """Integral histogram of grey-level gradient orientations (8 bins), ``[H+1, W+1, 8]``."""
    dx, dy = _sobel(np.asarray(grey))
    return integral_histogram(orientation_histogram(dx, dy, HOG_BINS))


def hof_integral(flow: np.ndarray, min_flow: float = 0.4) -> np.ndarray:
    """Integral histogram of flow orientations, 8 bins + a zero bin for ``|flow| <= min_flow``."""
    return integral_histogram(orientation_histogram(flow[..., 0], flow[..., 1], HOF_BINS, min_flow))


def mbh_integrals(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integral histograms of the gradient orientations of the u and of the v flow component."""
    ux, uy = _sobel(np.ascontiguousarray(flow[..., 0]))
    vx, vy = _sobel(np.ascontiguousarray(flow[..., 1]))
    return (integral_histogram(orientation_histogram(ux, uy, MBH_BINS)),
            integral_histogram(orientation_histogram(vx, vy, MBH_BINS)))


def cell_descriptors(integral: np.ndarray, x0: np.ndarray, y0: np.ndarray, *, patch: int = 32,
                     ncells: int = 2, epsilon: float = 0.05) -> np.ndarray:
    """Per-frame descriptors ``[n, ncells^2 * B]`` of the ``patch x patch`` windows at (x0, y0).

    ``(x0, y0)`` are the integer top-left corners (already clipped into the image). Cells are
    ordered x-major then y, as the authors' ``GetDesc``; each cell histogram is
    ``sqrt(h' / sum(h'))`` with ``h' = max(h, 0) + epsilon``.
    """
    stride = patch // ncells
    steps = np.arange(ncells + 1) * stride
    xs = np.asarray(x0, np.int64)[:, None] + steps  # [n, c+1] corner columns
    ys = np.asarray(y0, np.int64)[:, None] + steps  # [n, c+1] corner rows
    corners = integral[ys[:, :, None], xs[:, None, :]]  # [n, c+1 (y), c+1 (x), B]
    s = corners[:, 1:, 1:] - corners[:, :-1, 1:] - corners[:, 1:, :-1] + corners[:, :-1, :-1]
    v = np.maximum(s.transpose(0, 2, 1, 3), 0.0) + epsilon  # [n, cx, cy, B]: x-major cell order
    v /= v.sum(axis=3, keepdims=True)
    return np.sqrt(v).reshape(len(xs), -1).astype(np.float32)
