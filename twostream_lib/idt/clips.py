"""Hand-made clips with known motion, for tests and benchmarks of the trajectory code.

Each clip is a window moving over a smooth random texture (blurred noise: trackable everywhere,
unlike a flat image), so the true displacement of every pixel is known exactly.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["panning_clip_with_object", "static_clip", "texture", "translating_clip"]


def texture(height: int, width: int, *, seed: int = 0, sigma: float = 1.5) -> np.ndarray:
    """Uint8 grey texture ``[H, W]``: uniform noise blurred with a Gaussian of ``sigma`` px, stretched to 0..255."""
    r = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    r = cv2.GaussianBlur(r, (0, 0), sigma)
    r = (r - r.min()) / max(float(r.max() - r.min()), 1e-6) * 255.0
    return np.rint(r).astype(np.uint8)


def translating_clip(frames: int = 24, size: tuple[int, int] = (48, 48), velocity: tuple[int, int] = (2, 0),
                     *, seed: int = 0) -> np.ndarray:
    """``[T, H, W]`` clip whose whole content moves by ``velocity`` = (dx, dy) integer px per frame
    (+x right, +y down)."""
    h, w = size
    dx, dy = velocity
    big = texture(h + abs(dy) * frames + 1, w + abs(dx) * frames + 1, seed=seed)
    out = []
    for t in range(frames):
        x0 = abs(dx) * frames - dx * t if dx > 0 else -dx * t
        y0 = abs(dy) * frames - dy * t if dy > 0 else -dy * t
        out.append(big[y0:y0 + h, x0:x0 + w])
    return np.ascontiguousarray(np.stack(out))


def static_clip(frames: int = 24, size: tuple[int, int] = (48, 48), *, seed: int = 0) -> np.ndarray:
    """``[T, H, W]`` clip of one textured frame repeated (nothing moves)."""
    return np.repeat(texture(*size, seed=seed)[None], frames, axis=0)


def panning_clip_with_object(frames: int = 24, size: int = 96, *, pan: int = 2, speed: int = 2,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A camera panning right by ``pan`` px/frame (the background moves left) over which a textured
    square of side ``size // 3`` moves down by ``speed`` px/frame.

    Returns the clip ``[T, size, size]`` and the square's top-left corners ``[T, 2]`` (x, y).
    """
    side = size // 3
    bg = texture(size, size + pan * frames + 1, seed=seed)
    obj = texture(side, side, seed=seed + 1, sigma=1.0)
    out, corners = [], []
    for t in range(frames):
        f = bg[:, pan * t: pan * t + size].copy()
        ox, oy = side, min(4 + speed * t, size - side)
        f[oy:oy + side, ox:ox + side] = obj
        out.append(f)
        corners.append((ox, oy))
    return np.stack(out), np.array(corners, np.int64)
