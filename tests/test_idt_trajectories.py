"""Dense trajectories and their descriptors on hand-made clips (Wang & Schmid, ICCV 2013)."""
import math

import numpy as np
import pytest

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.idt.clips import (
    panning_clip_with_object,
    static_clip,
    texture,
    translating_clip,
)
from twostream_lib.idt.descriptors import (
    cell_descriptors,
    descriptor_dims,
    hof_integral,
    hog_integral,
    integral_histogram,
    mbh_integrals,
    orientation_histogram,
)
from twostream_lib.idt.trajectories import (
    DTParams,
    _validate,
    dense_sample,
    extract_trajectories,
    pyramid_scales,
)

DT = DTParams(improved=False)


@pytest.mark.parametrize("velocity, hof_bin", [((2, 0), 0), ((0, 2), 2), ((-2, 0), 4), ((0, -2), 6)])
def test_translating_pattern_gives_straight_trajectories_and_hof_bin(velocity, hof_bin):
    clip = translating_clip(24, (48, 48), velocity)
    tr = extract_trajectories(clip, DT)
    assert len(tr) > 30
    steps = np.diff(tr.points, axis=1)  # [n, L, 2] in pixels of the input frames
    np.testing.assert_allclose(steps.mean(axis=(0, 1)), velocity, atol=0.1)
    assert np.abs(steps - np.array(velocity)).max() < 0.5  # straight: every step matches
    # trajectory shape: L displacement vectors normalised by the total length -> each is v/(L|v|)
    L = DT.track_length
    unit = np.array(velocity, float) / np.hypot(*velocity) / L
    np.testing.assert_allclose(tr.descriptors["traj"].reshape(-1, L, 2).mean(axis=0),
                               np.broadcast_to(unit, (L, 2)), atol=0.01)
    # HOF: 3 temporal x 4 spatial cells x 9 bins; the energy sits in the motion's orientation bin
    hof = tr.descriptors["hof"].reshape(len(tr), 3, 4, 9) ** 2  # undo the root normalisation
    per_bin = hof.sum(axis=(0, 1, 2))
    assert per_bin.argmax() == hof_bin
    assert per_bin[hof_bin] > 0.8 * per_bin.sum()
    # trajectories end at frames L..T-1 and start on the 5 px grid of their scale
    assert tr.end_frame.min() >= L and tr.end_frame.max() == 23


def test_static_clip_gives_no_trajectories():
    clip = static_clip(24, (48, 48))
    # points are sampled and tracked (textured), then all removed as static
    assert len(dense_sample(clip[0], None, DT)) > 50
    assert len(extract_trajectories(clip, DT)) == 0
    assert len(extract_trajectories(clip, DTParams(improved=True))) == 0


def test_homogeneous_areas_are_not_sampled():
    frame = np.full((48, 48), 100, np.uint8)
    frame[:, 24:] = texture(48, 24)
    pts = dense_sample(frame, None, DT)
    assert len(pts) > 0
    # the flat half gets no points (min eigenvalue below 0.001 x max); its border column may
    assert pts[:, 0].min() >= 20
    # occupied grid cells are not re-sampled
    again = dense_sample(frame, pts, DT)
    assert len(again) == 0


def test_descriptor_dimensions_and_pyramid():
    assert descriptor_dims() == {"traj": 30, "hog": 96, "hof": 108, "mbhx": 96, "mbhy": 96}
    tr = extract_trajectories(translating_clip(20, (48, 48), (1, 1)), DT)
    assert len(tr) > 0
    for kind, dim in descriptor_dims().items():
        assert tr.descriptors[kind].shape == (len(tr), dim)
        assert np.isfinite(tr.descriptors[kind]).all()
    assert tr.points.shape == (len(tr), 16, 2)
    # 48 px: scales 1 and sqrt 2 (48/2 = 24 < 32); 320x240: 6 scales; never more than scale_num
    assert pyramid_scales(48, 48, DT)[0] == [1.0, math.sqrt(2)]
    scales, sizes = pyramid_scales(320, 240, DT)
    assert len(scales) == 6 and sizes[1] == (226, 170)
    assert len(pyramid_scales(4000, 3000, DT)[0]) == 8
    np.testing.assert_allclose(np.unique(tr.scale), [1.0, math.sqrt(2)], rtol=1e-6)


def test_pruning_rules():
    L = 15
    t = np.arange(L + 1, dtype=np.float32)
    straight = np.stack([10 + 2 * t, 10 + 0 * t], 1)
    static = np.stack([10 + 0.1 * t, 10 + 0 * t], 1)  # std 0.46 px < sqrt(3)
    erratic = np.stack([10 + 0.2 * t, 10 + 0 * t], 1)
    erratic[8:, 0] += 25.0  # one 25 px jump: > 20 px and > 70% of the length
    wild = np.stack([10 + 20 * t, 10 + 0 * t], 1)  # std 92 px > 50: random
    pts = np.stack([straight, static, erratic, wild])
    fin = {"points": pts, "disp": np.diff(pts, axis=1)}
    keep, shape = _validate(fin, 1.0, DT)
    assert keep.tolist() == [True, False, False, False]
    np.testing.assert_allclose(shape[0].reshape(L, 2), np.tile([1.0 / L, 0.0], (L, 1)), atol=1e-6)
    # improved: a trajectory whose compensated motion never exceeds 1 px is camera motion
    fin_cam = {"points": pts[:1], "disp": np.full((1, L, 2), 0.5, np.float32)}
    assert not _validate(fin_cam, 1.0, DTParams(improved=True))[0][0]
    # the same points at pyramid scale 2 are twice as long in frame pixels
    keep2, _ = _validate({"points": static[None], "disp": np.diff(static[None], axis=1)}, 8.0, DT)
    assert keep2[0]


def test_camera_motion_compensation_removes_background_trajectories():
    clip, _ = panning_clip_with_object(24, 96)
    dt = extract_trajectories(clip, DT)
    idt = extract_trajectories(clip, DTParams(improved=True))
    assert idt.info["homography_pairs"] == 23

    def split(tr):
        on_object = np.diff(tr.points, axis=1).mean(axis=1)[:, 1] > 1.0  # moves down with the square
        return int(on_object.sum()), int((~on_object).sum())

    obj_dt, bg_dt = split(dt)
    obj_idt, bg_idt = split(idt)
    assert obj_dt > 50 and bg_dt > 300
    assert obj_idt >= 0.8 * obj_dt  # the moving object survives
    assert bg_idt < 0.5 * bg_dt  # most of the panning background is removed as camera motion
    # HOF on compensated flow: the background's "leftward" motion is gone, the square's is "down"
    hof = (idt.descriptors["hof"].reshape(len(idt), 3, 4, 9) ** 2).sum(axis=(0, 1, 2))
    hof_dt = (dt.descriptors["hof"].reshape(len(dt), 3, 4, 9) ** 2).sum(axis=(0, 1, 2))
    assert hof_dt.argmax() == 4 and hof[4] / hof.sum() < hof_dt[4] / hof_dt.sum()


def test_orientation_histogram_interpolates_and_has_zero_bin():
    dx = np.array([[1.0, 0.0, 0.1, 1.0]], np.float32)
    dy = np.array([[0.0, 2.0, 0.0, math.tan(math.radians(22.5))]], np.float32)
    h = orientation_histogram(dx, dy, 8)
    assert h.shape == (1, 4, 8)
    assert h[0, 0, 0] == pytest.approx(1.0) and h[0, 1, 2] == pytest.approx(2.0, rel=1e-3)
    mag = math.hypot(1.0, math.tan(math.radians(22.5)))  # 22.5 deg: half in bin 0, half in bin 1
    np.testing.assert_allclose(h[0, 3, :2], [mag / 2, mag / 2], rtol=0.02)
    hof = orientation_histogram(dx, dy, 8, zero_threshold=0.4)
    assert hof.shape == (1, 4, 9) and hof[0, 2, 8] == 1.0 and hof[0, 2, :8].sum() == 0
    z = hof_integral(np.zeros((40, 40, 2), np.float32))
    assert z[-1, -1, 8] == 1600 and z[-1, -1, :8].sum() == 0


def test_hog_and_mbh_integrals_follow_gradients():
    step = np.zeros((40, 40), np.uint8)
    step[:, 20:] = 200  # dark -> bright along +x: gradient orientation 0 (bin 0)
    hog = hog_integral(step)[-1, -1]
    assert hog.shape == (8,) and hog[0] == pytest.approx(hog.sum()) and hog[0] > 0
    flow = np.zeros((40, 40, 2), np.float32)
    flow[..., 1] = np.arange(40, dtype=np.float32)[:, None] * 0.1  # v grows downwards
    mbhx, mbhy = mbh_integrals(flow)
    assert mbhx[-1, -1].sum() == 0  # u is constant: no motion boundary in u
    assert mbhy[-1, -1, 2] == pytest.approx(mbhy[-1, -1].sum())  # grad v points down: bin 2


def test_cell_descriptors_match_direct_sums():
    rng = np.random.default_rng(0)
    hist = rng.random((40, 50, 8)).astype(np.float32)
    integ = integral_histogram(hist)
    np.testing.assert_allclose(integ[-1, -1], hist.sum(axis=(0, 1), dtype=np.float64), rtol=1e-9)
    x0, y0 = np.array([0, 18, 7]), np.array([0, 8, 3])
    got = cell_descriptors(integ, x0, y0, patch=32, ncells=2, epsilon=0.05)
    for i in range(3):
        cells = []
        for cx in range(2):  # x-major, as the authors' GetDesc
            for cy in range(2):
                s = hist[y0[i] + 16 * cy: y0[i] + 16 * cy + 16, x0[i] + 16 * cx: x0[i] + 16 * cx + 16].sum((0, 1))
                v = s + 0.05
                cells.append(np.sqrt(v / v.sum()))
        np.testing.assert_allclose(got[i], np.concatenate(cells), rtol=1e-5)


def test_bad_input_and_parameters():
    with pytest.raises(DataError, match="smaller than"):
        extract_trajectories(np.zeros((5, 20, 20), np.uint8), DT)
    with pytest.raises(DataError, match="no frames"):
        extract_trajectories(np.zeros((0, 48, 48), np.uint8), DT)
    with pytest.raises(DataError, match="frame 1"):
        extract_trajectories([np.zeros((48, 48), np.uint8), np.zeros((40, 48), np.uint8)], DT)
    with pytest.raises(DataError, match="shape"):
        extract_trajectories(np.zeros((3, 48, 48, 2), np.uint8), DT)
    with pytest.raises(ConfigError, match="keypoints"):
        extract_trajectories(static_clip(3), DTParams(keypoints="surf"))
    with pytest.raises(ConfigError, match="patch_size"):
        DTParams(patch_size=33).validate()


def test_rgb_frames_and_max_frames():
    grey = translating_clip(24, (48, 48), (2, 0))
    rgb = np.repeat(grey[..., None], 3, axis=3)
    a = extract_trajectories(rgb, DT, max_frames=18)
    b = extract_trajectories(grey[:18], DT)
    assert a.num_frames == 18 and len(a) == len(b) > 0
    np.testing.assert_array_equal(a.points, b.points)
    # shorter than L + 1 frames: nothing can finish
    assert len(extract_trajectories(grey[:15], DT)) == 0
