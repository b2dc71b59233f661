"""Fusion functions (Section 3.1, Eqs. 1-5) and temporal fusion (Section 3.3) against hand computations."""
import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from twostream_lib.errors import ConfigError
from twostream_lib.models.fusion import CONV_INITS, FUSION_METHODS, build_fusion, pad_to_match, stack_channels
from twostream_lib.models.temporal import (Conv3dFusion, MaxPool3d, build_pool3d, conv3d_as_gemm, from_5d,
                                           gaussian_kernel3d, max_pool3d_by_slices, to_5d)

torch.set_num_threads(1)


@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)


def test_elementwise_fusions_match_eqs_1_2_and_product(maps):
    xa, xb = maps
    a, b = xa.numpy(), xb.numpy()
    expected = {"sum": a + b, "max": np.maximum(a, b), "product": a * b}
    for method, want in expected.items():
        f = build_fusion(method, 3)
        assert f.out_channels == 3
        np.testing.assert_allclose(f(xa, xb).numpy(), want, rtol=1e-6)


def test_concat_stacked_and_eq3_interleaved(maps):
    xa, xb = maps
    stacked = build_fusion("concat", 3)(xa, xb)
    assert stacked.shape == (2, 6, 4, 5) and build_fusion("concat", 3).out_channels == 6
    assert torch.equal(stacked[:, :3], xa) and torch.equal(stacked[:, 3:], xb)
    inter = build_fusion("concat", 3, order="interleaved")(xa, xb)
    for d in range(1, 4):  # Eq. 3 (1-based): y_2d = x^a_d, y_2d-1 = x^b_d
        assert torch.equal(inter[:, 2 * d - 1], xa[:, d - 1])
        assert torch.equal(inter[:, 2 * d - 2], xb[:, d - 1])


def test_conv_fusion_is_eq4_one_by_one_filter_over_the_stack(maps):
    xa, xb = maps
    f = build_fusion("conv", 3, init="gaussian")
    w, b = f.conv.weight[:, :, 0, 0].detach().numpy(), f.conv.bias.detach().numpy()
    y = np.concatenate([xa.numpy(), xb.numpy()], 1)
    want = np.einsum("od,ndhw->nohw", w, y) + b[None, :, None, None]
    np.testing.assert_allclose(f(xa, xb).detach().numpy(), want, rtol=1e-5, atol=1e-6)
    assert w.shape == (3, 6) and abs(w.std() - np.sqrt(2 / 3)) < 0.6  # N(0, 2/D)


@pytest.mark.parametrize("order", ["stacked", "interleaved"])
def test_conv_fusion_sum_init_equals_sum_fusion(maps, order):
    xa, xb = maps
    conv = build_fusion("conv", 3, init="sum", order=order)
    torch.testing.assert_close(conv(xa, xb), build_fusion("sum", 3)(xa, xb))
    released = build_fusion("conv", 3, init="released", order=order)
    torch.testing.assert_close(released(xa, xb), 0.25 * xa + 0.75 * xb)


def test_bilinear_is_eq5_outer_product_summed_then_signed_sqrt_and_l2(maps):
    xa, xb = maps
    xb = xb[:, :2]  # D_a = 3, D_b = 2
    f = build_fusion("bilinear", 3, channels_b=2)
    got = f(xa, xb).numpy()
    assert got.shape == (2, 6) and f.out_channels == 6
    a, b = xa.numpy(), xb.numpy()
    for n in range(2):
        y = np.zeros((3, 2))
        for i in range(4):
            for j in range(5):
                y += np.outer(a[n, :, i, j], b[n, :, i, j])
        y = np.sign(y) * np.sqrt(np.abs(y))
        y = y.reshape(-1) / np.linalg.norm(y)
        np.testing.assert_allclose(got[n], y, rtol=1e-5, atol=1e-6)


def test_bilinear_gradient_is_finite_at_zero_features():
    xa = torch.zeros(1, 2, 3, 3, requires_grad=True)
    xb = torch.rand(1, 2, 3, 3)
    build_fusion("bilinear", 2)(xa, xb).sum().backward()
    assert torch.isfinite(xa.grad).all()


def test_smaller_map_is_zero_padded_one_row_and_column():
    """Section 3.5: VGG-M's 13x13 ReLU5 into VGG-16's 14x14, padded with a row and a column of zeros."""
    xa, xb = torch.rand(1, 2, 14, 14), torch.rand(1, 2, 13, 13)
    pa, pb = pad_to_match(xa, xb)
    assert pa is xa and pb.shape == (1, 2, 14, 14)
    assert torch.equal(pb[..., :13, :13], xb) and not pb[..., 13, :].any() and not pb[..., :, 13].any()
    y = build_fusion("sum", 2)(xa, xb)
    assert torch.equal(y[..., 13, :], xa[..., 13, :])


def test_unknown_names_and_bad_combinations_raise_config_error():
    with pytest.raises(ConfigError, match="'avg'.*'sum'.*'bilinear'"):
        build_fusion("avg", 4)
    with pytest.raises(ConfigError, match="'identity'.*'released'"):
        build_fusion("conv", 4, init="identity")
    with pytest.raises(ConfigError, match="equal channels"):
        build_fusion("sum", 4, channels_b=8)
    with pytest.raises(ConfigError, match="'zigzag'"):
        build_fusion("concat", 2, order="zigzag")
    with pytest.raises(ConfigError, match="equal channels"):
        stack_channels(torch.zeros(1, 2, 1, 1), torch.zeros(1, 3, 1, 1), "interleaved")
    assert set(FUSION_METHODS) == {"sum", "max", "concat", "conv", "bilinear", "product"}
    assert CONV_INITS == ("sum", "released", "gaussian")


# ---- temporal fusion (Section 3.3) ---------------------------------------------------------

def test_fold_and_unfold_time_round_trip():
    x = torch.arange(2 * 3 * 4).float().view(2 * 3, 4, 1, 1)  # [B*T, C, 1, 1], frame-major per clip
    x5 = to_5d(x, 2)
    assert x5.shape == (2, 4, 3, 1, 1) and torch.equal(x5[1, :, 2, 0, 0], x[5, :, 0, 0])
    assert torch.equal(from_5d(x5), x)


@pytest.mark.parametrize("kernel,stride,padding,ceil", [((3, 3, 3), (2, 2, 2), (0, 0, 0), True),
                                                        ((5, 3, 3), (2, 2, 2), (0, 0, 0), True),
                                                        ((2, 2, 2), (1, 2, 2), (1, 1, 0), False)])
def test_deterministic_max_pool3d_equals_standard_values_and_gradients(kernel, stride, padding, ceil):
    x = torch.randn(2, 3, 5, 13, 13, dtype=torch.float64, requires_grad=True)
    y = F.max_pool3d(x, kernel, stride, padding, ceil_mode=ceil)
    x2 = x.detach().clone().requires_grad_(True)
    y2 = max_pool3d_by_slices(x2, kernel, stride, padding, ceil)
    assert y.shape == y2.shape
    torch.testing.assert_close(y2, y)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x.grad)


def test_maxpool3d_module_presets_and_deterministic_switch():
    paper = build_pool3d("paper")
    assert paper.kernel == (3, 3, 3) and paper.stride == (2, 2, 2)
    released = build_pool3d("released", pool5=torch.nn.MaxPool2d(2, 2))
    assert released.kernel == (None, 2, 2) and released.stride == (2, 2, 2)  # [2, 2, T], stride 2
    x = torch.randn(1, 4, 5, 14, 14)
    assert paper(x).shape == (1, 4, 2, 7, 7)  # T=5 -> 2 (3x3x3/2, ceil); 14 -> 7
    assert released(x).shape == (1, 4, 1, 7, 7)  # whole clip in time
    assert paper(x[:, :, :1]).shape[2] == 1  # temporal window clipped to T
    det = MaxPool3d((3, 3, 3), (2, 2, 2), deterministic=True)
    torch.testing.assert_close(det(x), paper(x))
    with pytest.raises(ConfigError, match="'xyz'"):
        build_pool3d("xyz")
    with pytest.raises(ConfigError, match="pool5"):
        build_pool3d("released")


def test_gaussian_kernel_paper_peak_one_released_sum_one():
    g = gaussian_kernel3d(3, 1.0)
    assert g[1, 1, 1] == 1.0 and g[0, 0, 0] == pytest.approx(np.exp(-1.5))
    assert gaussian_kernel3d(3, 1.0, normalize=True).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("init,pair,norm", [("paper", (1.0, 3.0), False), ("released", (0.25, 0.75), True)])
def test_conv3d_identity_times_gaussian_init_blurs_the_weighted_sum(init, pair, norm):
    """Section 3.5: the 3D fusion kernel starts as [w_a I, w_b I] times a 3x3x3 Gaussian (sigma 1), i.e. a
    spatio-temporal Gaussian blur of w_a x^a + w_b x^b (computed here with scipy, zero padding)."""
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.randn(2, 3, 5, 6, 6, generator=g), torch.randn(2, 3, 5, 6, 6, generator=g)
    f = Conv3dFusion(3, init=init)
    got = f(xa, xb).detach().numpy()
    r = np.arange(-1, 2)
    k = np.exp(-(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) / 2.0)
    if norm:
        k = k / k.sum()
    mix = (pair[0] * xa + pair[1] * xb).numpy()
    for n in range(2):
        for c in range(3):
            want = scipy.ndimage.correlate(mix[n, c].astype(np.float64), k, mode="constant", cval=0.0)
            np.testing.assert_allclose(got[n, c], want, rtol=1e-4, atol=1e-5)


def test_conv3d_fusion_shapes_random_init_and_errors():
    f = Conv3dFusion(4, channels_b=2, out_channels=4, init="gaussian")
    assert f.conv.weight.shape == (4, 6, 3, 3, 3)
    y = f(torch.randn(1, 4, 5, 13, 13), torch.randn(1, 2, 5, 12, 12))  # smaller map zero-padded
    assert y.shape == (1, 4, 5, 13, 13)
    assert Conv3dFusion(2, pair=(1.0, 0.0)).conv.weight[0, 2].abs().sum() == 0  # pair override
    with pytest.raises(ConfigError, match="'identity'"):
        Conv3dFusion(2, init="identity")


@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv3d_as_one_gemm_equals_conv3d_forward_and_backward(k):
    """The pinned CPU path of 3D conv fusion (channels-last columns, one matrix product over the batch)
    computes F.conv3d with padding k // 2: outputs and the gradients of input, filters and bias."""
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, 6, 5, 7, 6, generator=g, requires_grad=True)
    w = torch.randn(4, 6, k, k, k, generator=g, requires_grad=True)
    b = torch.randn(4, generator=g, requires_grad=True)
    ours, ref = conv3d_as_gemm(x, w, b), F.conv3d(x, w, b, padding=k // 2)
    assert ours.shape == ref.shape == (2, 4, 5, 7, 6)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    up = torch.randn(ref.shape, generator=g)
    for a, r in zip(torch.autograd.grad(ours, (x, w, b), up), torch.autograd.grad(ref, (x, w, b), up)):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv3d_as_gemm(x, w, None), F.conv3d(x, w, None, padding=k // 2), rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match=r"odd cubic kernel, got \(2, 2, 2\)"):
        conv3d_as_gemm(x, torch.zeros(4, 6, 2, 2, 2), None)


def test_conv3d_fusion_runs_one_gemm_where_onednn_is_off(monkeypatch):
    """With oneDNN off (the demo's pinned arithmetic) and inputs that need no gradient (the frozen towers'
    maps) the layer takes the GEMM path, whose output is laid out channels-last; otherwise nn.Conv3d. All
    compute the same fusion."""
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(3, 8, 5, 6, 6, generator=g), torch.randn(3, 8, 5, 6, 6, generator=g)
    f = Conv3dFusion(8, init="gaussian")
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    pinned = f(xa, xb)
    assert pinned.is_contiguous(memory_format=torch.channels_last_3d) and not pinned.is_contiguous()
    with_grad = f(xa.requires_grad_(), xb)
    assert with_grad.is_contiguous()
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)
    native = f(xa.detach(), xb)
    assert native.is_contiguous()
    torch.testing.assert_close(pinned, native, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(with_grad, native, rtol=1e-4, atol=1e-4)


def test_conv3d_init_output_scale_paper_text_is_about_40x_the_released():
    """Section 3.5's 3D conv init read literally ("paper": [I, 3I] x a peak-1 Gaussian) starts 4 x sum(g) =
    4 x 10.84 = 43.4 times larger than the released one ([0.25 I, 0.75 I] x the Gaussian normalised to
    sum 1): the two kernels differ only by that factor, so every output does. On ReLU-like maps (half
    zeros, the temporal one 3x weaker as the paper says) the output std over the input std is about 5.0
    ("paper") against 0.12 ("released"); on a constant map the released fusion returns 0.25 x^a + 0.75 x^b
    (the scale fc6 was trained on) and the paper text 10.84 (x^a + 3 x^b). This is why the ``paper``
    profile defaults to ``conv3d_init="released"``."""
    from twostream_lib.config import PROFILES

    g = torch.Generator().manual_seed(0)
    xa = torch.relu(torch.randn(4, 64, 5, 14, 14, generator=g))
    xb = torch.relu(torch.randn(4, 64, 5, 14, 14, generator=g)) / 3
    x_std = torch.cat([xa, xb], 1).std()
    with torch.no_grad():
        out = {init: Conv3dFusion(64, init=init)(xa, xb) for init in ("paper", "released")}
    gain = 4 * float(gaussian_kernel3d(3, 1.0).sum())
    assert gain == pytest.approx(43.36, abs=0.01)
    torch.testing.assert_close(out["paper"], gain * out["released"], rtol=1e-4, atol=1e-4)
    scale = {init: float(y.std() / x_std) for init, y in out.items()}
    assert scale["paper"] == pytest.approx(5.0, rel=0.05) and scale["released"] == pytest.approx(0.116, rel=0.05)
    assert 40 < scale["paper"] / scale["released"] < 45
    # a constant map, away from the zero padding: the weighted sum itself (released) or 10.84 times it, with 3x
    a, b = torch.full((1, 2, 5, 7, 7), 2.0), torch.full((1, 2, 5, 7, 7), 1.0)
    with torch.no_grad():
        centre = {init: float(Conv3dFusion(2, init=init)(a, b)[0, 0, 2, 3, 3]) for init in ("paper", "released")}
    assert centre["released"] == pytest.approx(0.25 * 2 + 0.75 * 1, rel=1e-5)
    assert centre["paper"] == pytest.approx(gain / 4 * (2 + 3 * 1), rel=1e-5)
    # "centre" (the demo's): [I I] at the centre tap, so the head starts as sum fusion, x^a + x^b, everywhere
    with torch.no_grad():
        torch.testing.assert_close(Conv3dFusion(64, init="centre")(xa, xb), xa + xb)
    assert PROFILES["paper"].conv3d_init == "released" and PROFILES["demo"].conv3d_init == "centre"
