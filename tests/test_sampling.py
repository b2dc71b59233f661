"""Clip sampling and augmentation (paper Sec. 3.4-3.5) on hand-made frame stores with planted values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from twostream_lib.data.sampling import (
    DENSE_CLIPS, FRAMES25, IMAGENET_MEAN, IMAGENET_STD, RELEASED_CROPS, TEST_CROPS, VIEW_MODES, ClipSampling,
    Crop, TwoStreamClips, TwoStreamViews, apply_crop, border_grid, clip_indices, fixed_crops, jitter_crop,
    load_clip, multiscale_crop, multiscale_regular_crop, no_centre_crop, spread_positions, train_positions)
from twostream_lib.data.splits import VideoItem
from twostream_lib.data.stores import FrameStore
from twostream_lib.errors import ConfigError, DataError


class ArrayStore:
    """In-memory FrameStore: rgb [N, H, W, 3] and flow [N-1, H, W, 2] uint8 arrays per video."""

    def __init__(self, videos: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.data = videos
        self.reads: list[tuple[str, list[int]]] = []

    def videos(self):
        return sorted(self.data)

    def num_frames(self, video):
        return len(self.data[video][0])

    def read_rgb(self, video, indices):
        self.reads.append(("rgb", list(indices)))
        return self.data[video][0][list(indices)]

    def read_flow(self, video, indices):
        self.reads.append(("flow", list(indices)))
        return self.data[video][1][list(indices)]


def planted_video(n: int, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """RGB frame i: R = x, G = y, B = i. Flow frame i: u = 10 + 2i (+ x pattern), v = 100 + 2i."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.zeros((n, h, w, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 4 * x, 4 * y
    rgb[..., 2] = np.arange(n)[:, None, None]
    flow = np.zeros((n - 1, h, w, 2), np.uint8)
    flow[..., 0] = (10 + 2 * np.arange(n - 1))[:, None, None]
    flow[..., 1] = (100 + 2 * np.arange(n - 1))[:, None, None]
    return rgb, flow


def pattern_video(n: int, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Every frame: R = u = 4x, G = v = 4y: the same spatial pattern in both streams."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.zeros((n, h, w, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 4 * x, 4 * y, 50
    flow = np.zeros((n - 1, h, w, 2), np.uint8)
    flow[..., 0], flow[..., 1] = 4 * x, 4 * y
    return rgb, flow


def item(name: str, label: int = 0) -> VideoItem:
    return VideoItem(name=name, label=label, class_name="C", relpath=f"C/{name}.avi")


def denorm(rgb: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation: [T, 3, H, W] float -> [T, H, W, 3] in 0..255."""
    x = rgb.numpy().transpose(0, 2, 3, 1) * IMAGENET_STD + IMAGENET_MEAN
    return x * 255.0


def test_array_store_is_a_frame_store():
    assert isinstance(ArrayStore({"a": planted_video(3)}), FrameStore)


# ---- temporal indices -----------------------------------------------------------------------------


def test_flow_stack_is_centred_on_its_frame_and_clamped_at_both_ends():
    rgb, flow = clip_indices(30, [12], 10)
    assert rgb.tolist() == [12]
    assert flow[0].tolist() == list(range(7, 17))  # t-5 .. t+4: the motion between frames 7 and 17
    rgb, flow = clip_indices(8, [-3, 0, 7, 11], 10)
    assert rgb.tolist() == [0, 0, 7, 7]
    assert flow[1].tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
    assert flow[2].tolist() == [2, 3, 4, 5, 6, 6, 6, 6, 6, 6]  # 8 frames -> flow 0..6
    assert flow.min() == 0 and flow.max() == 6


def test_clip_needs_two_frames():
    with pytest.raises(DataError, match="at least 2 frames"):
        clip_indices(1, [0], 10)


def test_train_positions_use_one_stride_and_stay_inside_the_video():
    rng = np.random.default_rng(0)
    for n in (3, 20, 60):
        for tau in (1, 4, 10):
            for _ in range(20):
                p = train_positions(n, 5, tau, rng)
                assert p.min() >= 0 and p.max() <= n - 1
                if 4 * tau <= n - 1:
                    assert np.all(np.diff(p) == tau)
                else:  # longer than the video: clamped, the video is covered from end to end
                    assert p[0] == 0 or p[-1] == n - 1


def test_train_start_covers_every_possible_start():
    rng = np.random.default_rng(1)
    starts = {int(train_positions(20, 5, 3, rng)[0]) for _ in range(400)}
    assert starts == set(range(0, 20 - 12))


def test_spread_positions_are_segment_centres():
    assert spread_positions(25, 5).tolist() == [2, 7, 12, 17, 22]
    for n in (29, 31, 141):
        p = spread_positions(n, 5)
        assert np.array_equal(p + p[::-1], np.full(5, n - 1))  # symmetric in time
    p = spread_positions(7, 25)
    assert p.min() >= 0 and p.max() <= 6 and np.all(np.diff(p) >= 0) and len(p) == 25


# ---- crops -------------------------------------------------------------------------------------------


def test_jitter_crop_respects_size_jitter_and_border_limit():
    s = ClipSampling(size=224)
    rng = np.random.default_rng(0)
    W, H = 340, 256
    seen_w = set()
    for _ in range(500):
        c = jitter_crop(W, H, s, rng)
        assert (c.out_w, c.out_h) == (224, 224)
        assert 168 <= c.w <= min(280, W) and 168 <= c.h <= min(280, H)
        for off, length, extent in ((c.x0, c.w, W), (c.y0, c.h, H)):
            assert 0 <= off and off + length <= extent
            if length >= extent / 2:  # otherwise centred (both limits cannot hold)
                assert off <= 0.25 * extent + 1e-9 and extent - off - length <= 0.25 * extent + 1e-9
        seen_w.add(c.w)
    assert len(seen_w) > 50  # the width really varies, independently of the height


def test_multiscale_crop_sizes_and_positions():
    s = ClipSampling(size=224, crop="multiscale")
    rng = np.random.default_rng(0)
    sides = {256, 224, 192, 168}
    positions = set()
    for _ in range(300):
        c = multiscale_crop(340, 256, s, rng)
        assert c.w in sides and c.h in sides and abs(c.w - c.h) <= 32
        assert (c.out_w, c.out_h) == (224, 224)
        five = [(0, 0), (340 - c.w, 0), (0, 256 - c.h), (340 - c.w, 256 - c.h), ((340 - c.w) // 2, (256 - c.h) // 2)]
        assert (c.x0, c.y0) in five
        if c.h < 256:
            positions.add(five.index((c.x0, c.y0)))
    assert positions == {0, 1, 2, 3, 4}  # four corners and the centre


def test_no_centre_crop_positions_are_the_released_border_grid_never_the_centre():
    """Released ``noCtr`` (cnn_ucf101_get_im_flow_batch.m): offsets floor((W - w) f) with f on
    linspace(0, .25, 20) or linspace(.75, 1, 20), the same zone for x and y (top-left or bottom-right)."""
    W, H = 341, 256
    lo, hi = border_grid(0.25)
    assert lo[0] == 0 and lo[-1] == 0.25 and hi[0] == 0.75 and hi[-1] == 1 and len(lo) == len(hi) == 20
    # fixed size (jitter 0): the drawn positions are exactly the grid's, in both zones, and nothing else
    s = ClipSampling(size=224, jitter=0.0, crop="noCtr")
    rng = np.random.default_rng(0)
    drawn = {(c.x0, c.y0) for c in (no_centre_crop(W, H, s, rng) for _ in range(20000))}
    zone = {z: {(int(np.floor(117 * fx)), int(np.floor(32 * fy))) for fx in g for fy in g}
            for z, g in (("top-left", lo), ("bottom-right", hi))}
    assert drawn == zone["top-left"] | zone["bottom-right"]
    xs = sorted({x for x, _ in drawn})
    assert xs[:3] == [0, 1, 3] and max(x for x in xs if x < 58) == 29 and min(x for x in xs if x > 58) == 87
    assert not any(29 < x < 87 for x in xs)  # the central half of the free range is never drawn
    assert (0, 32) not in drawn and (117, 0) not in drawn  # nor the other two corners (the released pairing)
    # with the +-25% size jitter: sizes as "jitter", offsets in the border zones of their own free range
    s = ClipSampling(size=224, crop="noCtr")
    rng = np.random.default_rng(1)
    widths = set()
    for _ in range(3000):
        c = no_centre_crop(W, H, s, rng)
        assert 168 <= c.w <= 280 and 168 <= c.h <= 256 and (c.out_w, c.out_h) == (224, 224)
        assert 0 <= c.x0 <= W - c.w and 0 <= c.y0 <= H - c.h
        fx, fy = c.x0 / max(W - c.w, 1), c.y0 / max(H - c.h, 1)
        assert (fx <= 0.25 and fy <= 0.25) or (fx >= 0.75 - 1 / max(W - c.w, 1) and fy >= 0.75 - 1 / max(H - c.h, 1))
        widths.add(c.w)
    assert len(widths) > 80
    # the paper's "jitter" rule, by contrast, puts a 224 crop of a 341 px frame in the centre band x0 in [32, 85]
    rng = np.random.default_rng(0)
    jitter_x = {jitter_crop(W, H, ClipSampling(size=224, jitter=0.0), rng).x0 for _ in range(2000)}
    assert min(jitter_x) == 32 and max(jitter_x) == 85


def test_multiscale_regular_crop_sides_are_independent_and_the_centre_rounds_up():
    """Released ``multiScaleRegular`` (cnn_ucf101_get_flow_batch.m): sides from {256, 224, 192, 168}
    independently (all 16 pairs, unlike "multiscale"), at 4 corners or floor((W - w + 1) / 2)."""
    W, H = 341, 256
    s = ClipSampling(size=224, crop="multiScaleRegular")
    rng = np.random.default_rng(0)
    sides, places = set(), set()
    for _ in range(4000):
        c = multiscale_regular_crop(W, H, s, rng)
        sides.add((c.w, c.h))
        five = [(0, 0), (W - c.w, H - c.h), (W - c.w, 0), (0, H - c.h), ((W - c.w + 1) // 2, (H - c.h + 1) // 2)]
        assert (c.x0, c.y0) in five and (c.out_w, c.out_h) == (224, 224)
        if c.w < W - 1 and c.h < H:
            places.add(five.index((c.x0, c.y0)))
        if (c.w, c.h) == (224, 192) and c.x0 not in (0, W - 224):
            assert (c.x0, c.y0) == (59, 32)  # (117 + 1) // 2, (64 + 1) // 2: the released rounding
    assert sides == {(w, h) for w in (256, 224, 192, 168) for h in (256, 224, 192, 168)}
    assert places == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("crop", RELEASED_CROPS)
def test_released_crops_drive_training_clips(crop):
    """Each released rule is a training crop mode of TwoStreamClips: the clip's crop comes from it, is
    shared by both streams, flips about half the time, and is deterministic per (seed, epoch, index)."""
    store = ArrayStore({"a": pattern_video(12, h=40, w=64)})
    s = ClipSampling(T=2, L=2, tau=(1, 3), size=32, crop=crop)
    clips = TwoStreamClips(store, [item("a")] * 200, s, train=True, seed=7)
    plans = [clips.sample_plan(i, 64, 40)[1] for i in range(200)]
    assert plans == [clips.sample_plan(i, 64, 40)[1] for i in range(200)]
    rule = multiscale_regular_crop if crop == "multiScaleRegular" else no_centre_crop
    for i in (0, 1, 2):  # the crop is the rule's draw after tau and the start, as the module docstring says
        rng = np.random.default_rng([7, 0, i])
        tau = int(rng.integers(1, 4))
        train_positions(12, 2, tau, rng)
        c = rule(64, 40, s, rng)
        assert (plans[i].x0, plans[i].y0, plans[i].w, plans[i].h) == (c.x0, c.y0, c.w, c.h)
    assert 60 < sum(p.flip for p in plans) < 140
    sample = clips[0]
    assert sample["rgb"].shape == (2, 3, 32, 32) and sample["flow"].shape == (2, 4, 32, 32)


def test_fixed_crops():
    assert fixed_crops(48, 40, 32, "center") == [Crop(8, 4, 32, 32, 32, 32)]
    assert fixed_crops(48, 40, 32, "full") == [Crop(0, 0, 48, 40, 48, 40)]
    corners = fixed_crops(48, 40, 32, "corners")
    assert [(c.x0, c.y0) for c in corners] == [(0, 0), (16, 0), (0, 8), (16, 8), (8, 4)]
    with pytest.raises(ConfigError):
        fixed_crops(48, 40, 32, "jitter")


def test_apply_crop_resizes_many_channels_like_one_frame_at_a_time():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(70, 30, 36, 2), dtype=np.uint8)  # 140 channels > cv2's 128
    crop = Crop(3, 2, 25, 20, 16, 16)
    out = apply_crop(frames, crop)
    one = np.stack([apply_crop(frames[i:i + 1], crop)[0] for i in range(70)])
    assert out.shape == (70, 16, 16, 2)
    np.testing.assert_array_equal(out, one)


# ---- channel layout, flip, normalisation ----------------------------------------------------------------


def test_flow_channels_are_u_v_interleaved_and_centred():
    store = ArrayStore({"a": planted_video(30)})
    s = ClipSampling(T=5, L=10, size=32)
    rgb, flow = load_clip(store, "a", [2, 12, 27], 10, None)
    assert rgb.shape == (3, 3, 40, 48) and flow.shape == (3, 20, 40, 48)
    for k, t in enumerate([2, 12, 27]):
        idx = np.clip(np.arange(t - 5, t + 5), 0, 28)
        assert flow[k, 0::2, 0, 0].tolist() == (10 + 2 * idx - 128.0).tolist()  # u0, u1, ...
        assert flow[k, 1::2, 0, 0].tolist() == (100 + 2 * idx - 128.0).tolist()  # v0, v1, ...
        assert round(float(denorm(rgb)[k, 0, 0, 2])) == t  # B channel = frame index
    assert s.validate() is s


def test_rgb_is_imagenet_normalised_and_flow_is_offset_by_128():
    rgb = np.full((3, 8, 8, 3), (255, 128, 0), np.uint8)
    flow = np.full((2, 8, 8, 2), (128, 200), np.uint8)
    x, f = load_clip(ArrayStore({"a": (rgb, flow)}), "a", [1], 2, None)
    expected = (np.array([255, 128, 0]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(x[0, :, 3, 3].numpy(), expected, rtol=1e-6)
    assert f.dtype == torch.float32 and f[0, :, 3, 3].tolist() == [0.0, 72.0, 0.0, 72.0]


def test_flip_mirrors_both_streams_and_inverts_u_only():
    rgb, flow = pattern_video(12)
    flow[..., 0] = np.arange(48, dtype=np.uint8)[None, None, :] * 5  # u varies along x
    store = ArrayStore({"a": (rgb, flow)})
    views = TwoStreamViews(store, [item("a")], ClipSampling(T=3, L=4, size=32), mode="spread_flips", crop="full")
    plain, flipped = views[0], views[1]
    assert plain["view"] == 0 and flipped["view"] == 1
    u, v = plain["flow"][:, 0::2] + 128, plain["flow"][:, 1::2] + 128
    fu, fv = flipped["flow"][:, 0::2] + 128, flipped["flow"][:, 1::2] + 128
    assert torch.equal(fu, 255 - torch.flip(u, dims=[-1]))  # mirrored AND u := 255 - u
    assert torch.equal(fv, torch.flip(v, dims=[-1]))  # v only mirrored
    assert torch.allclose(flipped["rgb"], torch.flip(plain["rgb"], dims=[-1]))
    assert float(fu[0, 0, 0, 0]) == 255 - 47 * 5  # left column now holds the inverted right column


def test_same_crop_on_every_frame_of_both_streams():
    store = ArrayStore({"a": pattern_video(40, h=64, w=80)})
    s = ClipSampling(T=5, L=10, size=48, crop="jitter", flip=True)
    ds = TwoStreamClips(store, [item("a")] * 12, s, train=True, seed=3)
    flips = set()
    for i in range(len(ds)):
        out = ds[i]
        r = denorm(out["rgb"])  # [T, S, S, 3]
        u = out["flow"][:, 0::2].numpy() + 128  # [T, L, S, S]
        v = out["flow"][:, 1::2].numpy() + 128
        assert np.allclose(r, r[:1], atol=1e-3)  # every RGB frame cropped alike
        assert np.all(u == u[:1, :1]) and np.all(v == v[:1, :1])  # every flow frame alike
        _, crop = ds.sample_plan(i, 80, 64)
        flips.add(crop.flip)
        u_expected = 255 - r[0, ..., 0] if crop.flip else r[0, ..., 0]
        assert np.abs(u[0, 0] - u_expected).max() < 0.01  # the RGB and flow crops coincide
        assert np.abs(v[0, 0] - r[0, ..., 1]).max() < 0.01
    assert flips == {True, False}


# ---- randomness -------------------------------------------------------------------------------------------


def _batch(ds, n):
    return [ds[i] for i in range(n)]


def test_training_samples_are_deterministic_and_change_with_epoch_and_seed():
    store = ArrayStore({"a": planted_video(40, 48, 56), "b": planted_video(25, 48, 56)})
    items = [item("a"), item("b", 1)] * 3
    s = ClipSampling(T=4, L=6, size=32, crop="jitter")
    a1, a2 = TwoStreamClips(store, items, s, train=True, seed=7), TwoStreamClips(store, items, s, train=True, seed=7)
    x1, x2 = _batch(a1, 6), _batch(a2, 6)
    for p, q in zip(x1, x2):
        assert torch.equal(p["rgb"], q["rgb"]) and torch.equal(p["flow"], q["flow"])
        assert p["label"] == q["label"] and p["video"] == q["video"] and p["view"] == 0
    a2.set_epoch(1)
    assert any(not torch.equal(p["flow"], q["flow"]) for p, q in zip(x1, _batch(a2, 6)))
    a2.set_epoch(0)
    assert all(torch.equal(p["flow"], q["flow"]) for p, q in zip(x1, _batch(a2, 6)))
    other = TwoStreamClips(store, items, s, train=True, seed=8)
    assert any(not torch.equal(p["rgb"], q["rgb"]) for p, q in zip(x1, _batch(other, 6)))


def test_samples_do_not_depend_on_dataloader_workers():
    store = ArrayStore({"a": planted_video(30, 40, 40)})
    ds = TwoStreamClips(store, [item("a")] * 4, ClipSampling(T=3, L=4, size=32), train=True, seed=1)
    direct = torch.stack([ds[i]["flow"] for i in range(4)])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    loaded = torch.cat([b["flow"] for b in loader])
    assert torch.equal(direct, loaded)


def test_training_stride_range_is_respected():
    store = ArrayStore({"a": planted_video(80, 40, 40)})
    for tau_range in ((1, 10), (5, 15)):
        ds = TwoStreamClips(store, [item("a")] * 40, ClipSampling(T=5, L=2, size=32, tau=tau_range),
                            train=True)
        taus = set()
        for i in range(40):
            b = np.rint(denorm(ds[i]["rgb"])[:, 0, 0, 2]).astype(int)  # frame index planted in B
            (tau,) = set(np.diff(b).tolist())
            taus.add(tau)
        assert min(taus) >= tau_range[0] and max(taus) <= tau_range[1] and len(taus) >= 4


def test_validation_clips_are_centred_unflipped_and_fixed():
    store = ArrayStore({"a": planted_video(25, 40, 48)})
    ds = TwoStreamClips(store, [item("a")], ClipSampling(T=5, L=4, size=32), train=False)
    out = ds[0]
    assert np.rint(denorm(out["rgb"])[:, 0, 0, 2]).astype(int).tolist() == [2, 7, 12, 17, 22]
    assert round(float(denorm(out["rgb"])[0, 0, 0, 0]) / 4) == 8  # centre crop: x0 = (48 - 32) / 2
    ds.set_epoch(5)
    assert torch.equal(ds[0]["rgb"], out["rgb"])


def test_each_distinct_frame_is_read_once():
    store = ArrayStore({"a": planted_video(30)})
    load_clip(store, "a", [5, 7, 9, 11, 13], 10, None)  # tau = 2 < L: stacks overlap
    flow_reads = [idx for kind, idx in store.reads if kind == "flow"]
    assert flow_reads == [list(range(0, 18))]


# ---- test views ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", VIEW_MODES)
@pytest.mark.parametrize("crop", TEST_CROPS)
def test_view_counts_per_mode(mode, crop):
    store = ArrayStore({"a": planted_video(30, 40, 48), "b": planted_video(12, 40, 48)})
    sampling = ClipSampling(T=5, L=4, size=32, test_clips=DENSE_CLIPS)
    views = TwoStreamViews(store, [item("a"), item("b", 1)], sampling, mode=mode, crop=crop)
    clips = {"spread_flips": 1, "strided_flips": DENSE_CLIPS, "frames25": FRAMES25}[mode]
    per = clips * (5 if crop == "corners" else 1) * (1 if mode == "frames25" else 2)
    assert views.views_per_video == per and len(views) == 2 * per
    last = views[len(views) - 1]
    assert last["video"] == "b" and last["label"] == 1 and last["view"] == per - 1
    T = 1 if mode == "frames25" else 5
    side = (40, 48) if crop == "full" else (32, 32)
    assert tuple(last["rgb"].shape) == (T, 3, *side) and tuple(last["flow"].shape) == (T, 8, *side)


def test_strided_views_use_a_training_stride_and_spread_their_clips():
    """Models that fuse T samples are tested at a spacing they were trained at: by default the ceiling
    of the median of the training range (the released code's rule), not spread over the whole video."""
    store = ArrayStore({"a": planted_video(60, 40, 40)})
    dense = TwoStreamViews(store, [item("a")], ClipSampling(T=5, L=2, size=32, test_clips=DENSE_CLIPS),
                           mode="strided_flips")
    starts = [int(np.rint(denorm(dense[2 * k]["rgb"])[0, 0, 0, 2])) for k in range(DENSE_CLIPS)]
    assert starts[0] == 0 and starts[-1] == 59 - 4 * 6 and np.all(np.diff(starts) >= 1)
    frames = np.rint(denorm(dense[0]["rgb"])[:, 0, 0, 2]).astype(int)
    assert np.all(np.diff(frames) == 6)  # ceil(median(1..10)) = 6
    one = TwoStreamViews(store, [item("a")], ClipSampling(T=5, L=2, size=32), mode="strided_flips")
    frames = np.rint(denorm(one[0]["rgb"])[:, 0, 0, 2]).astype(int)
    assert one.views_per_video == 2 and frames.tolist() == [17, 23, 29, 35, 41]  # one clip, centred
    released = ClipSampling(T=5, L=2, size=32, tau=(5, 15))
    assert released.stride_at_test == 10  # cnn_train_dag.m: ceil(median(5:15))
    fixed = TwoStreamViews(store, [item("a")], ClipSampling(T=5, L=2, size=32, test_tau=15), mode="strided_flips")
    frames = np.rint(denorm(fixed[0]["rgb"])[:, 0, 0, 2]).astype(int)
    assert frames.tolist() == [0, 14, 29, 44, 59]  # stride 15 around the middle, clamped at the start
    spread = TwoStreamViews(store, [item("a")], ClipSampling(T=5, L=2, size=32), mode="spread_flips")
    frames = np.rint(denorm(spread[0]["rgb"])[:, 0, 0, 2]).astype(int)
    assert frames.tolist() == [6, 18, 30, 42, 54]  # centres of 5 equal segments: 12 frames apart


def test_view_info_order():
    views = TwoStreamViews(ArrayStore({"a": planted_video(9)}), [item("a")], ClipSampling(size=32), crop="corners")
    assert views.view_info(0) == {"clip": 0, "crop": 0, "flip": False}
    assert views.view_info(9) == {"clip": 0, "crop": 4, "flip": True}
    with pytest.raises(IndexError):
        views.view_info(10)


# ---- bad input --------------------------------------------------------------------------------------------------


def test_too_short_video_and_too_large_crop_name_the_video():
    store = ArrayStore({"short": planted_video(2)[0][:1, ...], "small": planted_video(10, 24, 30)})
    store.data["short"] = (planted_video(2)[0][:1], planted_video(2)[1][:0])
    with pytest.raises(DataError, match="short.*at least 2"):
        TwoStreamClips(store, [item("short")], ClipSampling(size=16), train=True)[0]
    for crop in ("jitter", "multiscale", "center", *RELEASED_CROPS):
        with pytest.raises(DataError, match=r"small.*30x24.*crop size 32"):
            TwoStreamClips(store, [item("small")], ClipSampling(size=32, crop=crop), train=True)[0]
    with pytest.raises(DataError, match="small"):
        TwoStreamViews(store, [item("small")], ClipSampling(size=32), crop="corners")[0]
    full = TwoStreamViews(store, [item("small")], ClipSampling(size=32), crop="full")[0]
    assert full["rgb"].shape[-2:] == (24, 30)


def test_bad_settings_raise_config_error():
    store = ArrayStore({"a": planted_video(9)})
    for bad in (dict(crop="random"), dict(tau=(0, 3)), dict(tau=(5, 2)), dict(T=0), dict(jitter=1.5),
                dict(test_tau=0), dict(test_clips=0)):
        with pytest.raises(ConfigError):
            TwoStreamClips(store, [item("a")], ClipSampling(**bad), train=True)
    with pytest.raises(ConfigError, match="corners"):
        TwoStreamClips(store, [item("a")], ClipSampling(crop="corners"), train=True)
    with pytest.raises(ConfigError, match="mode"):
        TwoStreamViews(store, [item("a")], ClipSampling(), mode="T25")
    with pytest.raises(ConfigError, match="crop"):
        TwoStreamViews(store, [item("a")], ClipSampling(), crop="jitter")
    assert TwoStreamViews(store, [item("a")], ClipSampling(crop="jitter")).crop == "center"


def test_paper_profile_trains_fusion_with_the_released_crop():
    """The ``paper`` profile follows the released code where it is explicit: fusion heads train on
    ``noCtr`` crops (cnn_ucf101_fusion.m); the demo's 48-px frames are used whole (its crop is 48)."""
    from twostream_lib.config import PROFILES
    from twostream_lib.data.sampling import TRAIN_CROPS

    assert PROFILES["paper"].fusion_crop == "noCtr" and PROFILES["demo"].fusion_crop == "full"
    assert PROFILES["paper"].fusion_crop in TRAIN_CROPS
