"""Backbones with named fusion points (Sections 3.2, 3.5): architecture, shapes, LRN, weights."""
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.models import backbones as bb
from twostream_lib.models.backbones import (LAYERS, LRN, build_backbone, inflate_conv1_to_flow, list_backbones,
                                            local_response_norm)

torch.set_num_threads(1)


def narrow_vgg_m(in_channels=3, num_classes=5):
    """VGG-M-2048's exact layer geometry with narrow widths (fast at 224x224)."""
    spec = bb._narrow_spec(bb._VGG_M_2048, {96: 4, 256: 6, 512: 8, 4096: 16, 2048: 12})
    return bb._make_backbone("vgg_m_2048", spec, in_channels=in_channels, num_classes=num_classes, dropout=0.5)


def test_registry_and_unknown_name():
    assert list_backbones() == ("vgg_m_2048", "vgg16", "demo_shallow", "demo_deep")
    with pytest.raises(ConfigError, match=r"'resnet50'.*'vgg_m_2048'.*'demo_deep'"):
        build_backbone("resnet50")
    with pytest.raises(ConfigError, match="num_classes"):
        build_backbone("demo_shallow", num_classes=0)


def test_paper_backbones_shapes_at_224():
    """ReLU5 is 13x13 for VGG-M-2048 and 14x14 (ReLU5_3) for VGG-16 at 224x224 (Section 3.5)."""
    with torch.device("meta"):
        vgg_m, vgg16 = build_backbone("vgg_m_2048"), build_backbone("vgg16")
    assert vgg_m.layer_names == LAYERS == vgg16.layer_names
    m, v = vgg_m.feature_shapes(224), vgg16.feature_shapes(224)
    assert m["relu1"] == (96, 109, 109) and m["relu2"] == (256, 26, 26)
    assert m["relu5"] == (512, 13, 13) and v["relu5"] == (512, 14, 14)
    assert m["fc6"] == (4096, 1, 1) and m["fc7"] == (2048, 1, 1) and m["fc8"] == (101, 1, 1)
    assert v["fc7"] == (4096, 1, 1)
    assert vgg_m.feature_shapes(256)["fc8"] == (101, 2, 2)  # whole-frame testing: 2x2 score map


def test_vgg_m_2048_is_the_released_architecture():
    with torch.device("meta"):
        rgb, flow = build_backbone("vgg_m_2048"), build_backbone("vgg_m_2048", in_channels=20)
    geometry = [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
                for _, m in rgb.weight_layers()]
    assert geometry == [(3, 96, 7, 2, 0), (96, 256, 5, 2, 1), (256, 512, 3, 1, 1), (512, 512, 3, 1, 1),
                        (512, 512, 3, 1, 1), (512, 4096, 6, 1, 0), (4096, 2048, 1, 1, 0), (2048, 101, 1, 1, 0)]
    pools = [m for m in rgb.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.ceil_mode) for p in pools] == [(3, 2, True)] * 3
    lrns = [m for m in rgb.modules() if isinstance(m, LRN)]
    assert len(lrns) == 2 and all(n.matconvnet_param() == pytest.approx((5, 2, 1e-4, 0.75)) for n in lrns)
    assert (lrns[0].size, lrns[0].alpha, lrns[0].beta, lrns[0].k) == (5, 5e-4, 0.75, 2.0)
    # the temporal variant: 20 input channels, no norm2
    assert [n for n, m in flow.named_modules() if isinstance(m, LRN)] == ["stages.relu2.norm1"]
    assert flow.weight_layers()[0][1].in_channels == 20


@pytest.mark.parametrize("name,size", [("demo_shallow", 48), ("demo_deep", 48), ("demo_shallow", 64),
                                       ("demo_deep", 56)])
def test_demo_backbones_shapes_match_a_forward(name, size):
    net = build_backbone(name, in_channels=20, num_classes=7).eval()
    shapes = net.feature_shapes(size)
    if size == 48:
        assert shapes["relu5"] == (32, 6, 6)  # positions survive for conv fusion
    x = torch.randn(2, 20, size, size)
    prev = None
    for layer in LAYERS:
        y = net(x, upto=layer) if prev is None else net.run(prev[1], prev[0], layer)
        assert tuple(y.shape[1:]) == shapes[layer], layer
        prev = (layer, y)
    assert net(x).shape == (2, 7)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # documented departure


def test_vgg_m_real_forward_at_224_has_13x13_relu5():
    net = build_backbone("vgg_m_2048", in_channels=20).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 20, 224, 224), upto="relu5").shape == (1, 512, 13, 13)


def test_forward_from_and_upto_compose():
    net = build_backbone("demo_deep").eval()
    x = torch.randn(3, 3, 48, 48)
    torch.testing.assert_close(net.forward_from("relu3", net(x, upto="relu3")), net(x))
    with pytest.raises(ConfigError, match=r"'conv5'.*'relu1'"):
        net(x, upto="conv5")


def test_larger_input_runs_fully_convolutionally():
    """FC layers are convolutions: each fc8 position is the classical (flatten + linear) network on one
    pool5 window, and the scores are averaged over the positions (Section 3.5, whole-frame testing)."""
    net = build_backbone("demo_shallow", num_classes=6).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        p5 = net.stages["fc6"].pool5(net(x, upto="relu5"))  # [2, 64, 4, 4]
        fc6, fc7, fc8 = (getattr(net.stages[n], n) for n in ("fc6", "fc7", "fc8"))
        k = fc6.kernel_size[0]
        scores = []
        for i in range(p5.shape[2] - k + 1):
            for j in range(p5.shape[3] - k + 1):
                v = p5[:, :, i:i + k, j:j + k].flatten(1)
                v = F.relu(F.linear(v, fc6.weight.flatten(1), fc6.bias))
                v = F.relu(F.linear(v, fc7.weight.flatten(1), fc7.bias))
                scores.append(F.linear(v, fc8.weight.flatten(1), fc8.bias))
        assert len(scores) == 4
        torch.testing.assert_close(net(x), torch.stack(scores).mean(0), rtol=1e-5, atol=1e-5)


def test_lrn_equals_matconvnet_formula_with_alpha_converted():
    """MatConvNet: y = x / (kappa + alpha sum_{window} x^2)^beta, alpha not divided by N."""
    param = (5, 1.5, 3e-4, 0.8)
    lrn = LRN.from_matconvnet(param)
    assert lrn.alpha == pytest.approx(5 * 3e-4) and lrn.matconvnet_param() == pytest.approx(param)
    x = np.random.default_rng(0).normal(0, 20, (2, 7, 3, 3))
    want = np.empty_like(x)
    for c in range(7):
        s = (x[:, max(0, c - 2):c + 3] ** 2).sum(1)
        want[:, c] = x[:, c] / (1.5 + 3e-4 * s) ** 0.8
    np.testing.assert_allclose(lrn(torch.from_numpy(x)).numpy(), want, rtol=1e-10)


def test_lrn_deterministic_formulation_equals_torch_values_and_gradients():
    x = torch.randn(2, 9, 5, 5, dtype=torch.float64, requires_grad=True) * 10
    x.retain_grad()
    y = F.local_response_norm(x, 5, 5e-4, 0.75, 2.0)
    x2 = x.detach().clone().requires_grad_(True)
    y2 = local_response_norm(x2, 5, 5e-4, 0.75, 2.0)
    torch.testing.assert_close(y2, y)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x.grad)
    det = LRN(deterministic=True)
    torch.testing.assert_close(det(x2.detach()), LRN(deterministic=False)(x2.detach()))


def test_inflate_conv1_to_flow_averages_rgb_and_copies_without_rescaling():
    w = torch.randn(4, 3, 7, 7)
    f = inflate_conv1_to_flow(w, 20)
    assert f.shape == (4, 20, 7, 7)
    for c in (0, 7, 19):
        torch.testing.assert_close(f[:, c], w.mean(1))
    scaled = inflate_conv1_to_flow(w, 2, rgb_scale=(1.0, 2.0, 3.0))
    torch.testing.assert_close(scaled[:, 1], (w[:, 0] + 2 * w[:, 1] + 3 * w[:, 2]) / 3)
    with pytest.raises(ConfigError, match="RGB conv1"):
        inflate_conv1_to_flow(torch.randn(4, 20, 7, 7))


def test_state_dict_weights_round_trip_inflate_and_new_classes(tmp_path):
    rgb = build_backbone("demo_shallow", num_classes=7)
    path = tmp_path / "spatial.pt"
    torch.save({f"net.{k}": v for k, v in rgb.state_dict().items()}, path)  # a wrapper's prefix
    same = build_backbone("demo_shallow", num_classes=7, weights=path)
    for k, v in rgb.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    flow = build_backbone("demo_shallow", in_channels=20, num_classes=4, weights=path)
    w1 = rgb.stages.relu1.conv1.weight
    torch.testing.assert_close(flow.stages.relu1.conv1.weight[:, 5],
                               inflate_conv1_to_flow(w1, 1, rgb_scale=bb._torchvision_rgb_scale())[:, 0])
    assert torch.equal(flow.stages.relu3.conv3.weight, rgb.stages.relu3.conv3.weight)
    assert flow.stages.fc8.fc8.weight.shape == (4, 64, 1, 1)  # other classes: fc8 left as initialised


def test_torchvision_layout_state_dict_is_mapped_by_layer_order(tmp_path):
    net = narrow_vgg_m()
    g = torch.Generator().manual_seed(0)
    sd, k = {}, 0
    for _, m in net.weight_layers()[:5]:
        sd[f"features.{k}.weight"] = torch.randn(m.weight.shape, generator=g)
        sd[f"features.{k}.bias"] = torch.randn(m.out_channels, generator=g)
        k += 3
    for i, (_, m) in zip((0, 3, 6), net.weight_layers()[5:]):
        sd[f"classifier.{i}.weight"] = torch.randn(m.out_channels, m.weight[0].numel(), generator=g)
        sd[f"classifier.{i}.bias"] = torch.randn(m.out_channels, generator=g)
    torch.save(sd, tmp_path / "tv.pth")
    loaded = narrow_vgg_m()
    bb._weights_loader("vgg_m_2048", tmp_path / "tv.pth")(loaded)
    assert torch.equal(loaded.stages.relu4.conv4.weight, sd["features.9.weight"])
    assert torch.equal(loaded.stages.fc6.fc6.weight, sd["classifier.0.weight"].view(16, 8, 6, 6))
    assert torch.equal(loaded.stages.fc8.fc8.bias, sd["classifier.6.bias"])


def test_imagenet_weights_go_through_torchvision_and_fail_clearly_offline(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(DataError, match=r"VGG16_Weights\.IMAGENET1K_V1.*checkpoints"):
        build_backbone("vgg16", weights="imagenet")
    with pytest.raises(ConfigError, match=r"imagenet-vgg-m-2048\.mat"):
        build_backbone("vgg_m_2048", weights="imagenet")
    with pytest.raises(ConfigError, match="no pretrained weights"):
        build_backbone("demo_deep", weights="imagenet")
    with pytest.raises(DataError, match="not found"):
        build_backbone("demo_deep", weights=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a torch state_dict"):
        build_backbone("demo_deep", weights=tmp_path / "junk.pt")
