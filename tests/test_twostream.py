"""Two-stream networks (Sections 3.1-3.5): every fusion variant, late fusion, Section 3.4, training support."""
import copy

import pytest
import torch
import torch.nn.functional as F

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.models import (TwoStreamNet, build_backbone, build_two_stream, set_deterministic, to_device,
                                  trainable_parameters)
from twostream_lib.models.temporal import Conv3dFusion

torch.set_num_threads(1)
C = 6  # classes


def towers(name="demo_shallow", seed=0):
    torch.manual_seed(seed)
    return (build_backbone(name, in_channels=3, num_classes=C).eval(),
            build_backbone(name, in_channels=20, num_classes=C).eval())


@pytest.fixture(scope="module")
def clip():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 3, 48, 48, generator=g), torch.randn(2, 3, 20, 48, 48, generator=g)


VARIANTS = {
    "sum@relu5": dict(fusion="sum"),
    "max@relu5": dict(fusion="max"),
    "concat@relu5": dict(fusion="concat"),
    "conv@relu5": dict(fusion="conv"),
    "conv@relu5/released": dict(fusion="conv", conv_init="released", fusion_relu=True),
    "conv@relu5/gaussian": dict(fusion="conv", conv_init="gaussian"),
    "bilinear@relu5": dict(fusion="bilinear"),
    "product@relu5": dict(fusion="product"),
    "conv@relu1": dict(layers=("relu1",)),
    "conv@relu2": dict(layers=("relu2",)),
    "conv@relu3": dict(layers=("relu3",)),
    "conv@relu4": dict(layers=("relu4",)),
    "concat@relu2/interleaved": dict(fusion="concat", layers=("relu2",), order="interleaved"),
    "conv@fc6": dict(layers=("fc6",)),
    "conv@fc7": dict(layers=("fc7",)),
    "sum@fc8": dict(fusion="sum", layers=("fc8",)),
    "softmax": dict(fusion="softmax"),
    "conv@relu5+fc8": dict(layers=("relu5", "fc8")),
    "conv,sum@relu5+fc8/keep": dict(layers=("relu5", "fc8"), fusion=("conv", "sum"), truncate=False),
    "conv@relu3+relu5+fc6": dict(layers=("relu3", "relu5", "fc6")),
    "conv@relu5/keep/into-temporal": dict(truncate=False, fuse_into="temporal"),
    "conv2d+pool2d": dict(truncate=False, temporal_fusion="pool2d"),
    "conv2d+pool3d": dict(truncate=False, temporal_fusion="pool3d"),
    "conv2d+pool3d/released": dict(truncate=False, temporal_fusion="pool3d", pool3d="released"),
    "conv3d+pool3d": dict(truncate=False, temporal_fusion="conv3d_pool3d"),
    "conv3d+pool3d/released": dict(truncate=False, temporal_fusion="conv3d_pool3d", pool3d="released",
                                   conv3d_init="released"),
    "conv3d+pool3d/relu3+relu5": dict(layers=("relu3", "relu5"), temporal_fusion="conv3d_pool3d"),
}


@pytest.mark.parametrize("key", list(VARIANTS))
def test_every_variant_forward_backward_at_demo_size(key, clip):
    rgb, flow = clip
    kw = VARIANTS[key]
    model = TwoStreamNet(*towers(), **kw).train()
    out = model(rgb, flow)
    kept = 2 if not kw.get("truncate", True) or kw.get("fusion") == "softmax" else 1
    assert out["scores"].shape == (2, C) and len(out["logits"]) == kept
    assert all(l.shape == (2, C) for l in out["logits"])
    params = trainable_parameters(model) or trainable_parameters(model, "all")  # late/sum@fc8: nothing above
    loss = sum(F.cross_entropy(l, torch.tensor([0, 1])) for l in out["logits"])
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_forward_equals_head_of_fusion_inputs_and_per_frame_average(clip):
    rgb, flow = clip
    model = TwoStreamNet(*towers(), fusion="conv")
    fa, fb = model.fusion_inputs(rgb, flow)
    assert fa.shape == (2, 3, 32, 6, 6) and fb.shape == (2, 3, 32, 6, 6)
    out = model(rgb, flow)
    torch.testing.assert_close(model.head(fa, fb)["scores"], out["scores"])
    half = model.head(fa.half(), fb.half())["scores"]  # a float16 feature cache
    assert half.dtype == torch.float32 and (half - out["scores"]).abs().max() < 1e-3
    per_frame = torch.stack([model(rgb[:, t], flow[:, t])["scores"] for t in range(3)]).mean(0)
    torch.testing.assert_close(out["scores"], per_frame)  # a 4-D input is one frame
    none = TwoStreamNet(*towers(), truncate=False, temporal_fusion="none")
    pool2d = TwoStreamNet(*towers(), truncate=False, temporal_fusion="pool2d")
    torch.testing.assert_close(none(rgb, flow)["scores"], pool2d(rgb, flow)["scores"])
    with pytest.raises(DataError, match="same B, T"):
        model(rgb, flow[:, :2])


def test_conv_fusion_with_identity_init_equals_sum_fusion_and_concat_starts_as_sum(clip):
    rgb, flow = clip
    s, t = towers()
    by_sum = TwoStreamNet(copy.deepcopy(s), copy.deepcopy(t), fusion="sum")
    by_conv = TwoStreamNet(copy.deepcopy(s), copy.deepcopy(t), fusion="conv", conv_init="sum")
    by_concat = TwoStreamNet(copy.deepcopy(s), copy.deepcopy(t), fusion="concat")
    torch.testing.assert_close(by_conv(rgb, flow)["scores"], by_sum(rgb, flow)["scores"])
    fc6 = by_concat.spatial.stages.fc6.fc6  # concat doubles fc6's input (Table 1), initialised [W, W]
    assert fc6.in_channels == 64 and torch.equal(fc6.weight[:, :32], fc6.weight[:, 32:])
    # with no pooling between the fusion and the widened layer, concatenation starts as sum fusion
    at4 = dict(layers=("relu4",))
    torch.testing.assert_close(TwoStreamNet(copy.deepcopy(s), copy.deepcopy(t), fusion="concat", **at4)(rgb, flow)
                               ["scores"], TwoStreamNet(copy.deepcopy(s), copy.deepcopy(t), fusion="sum", **at4)
                               (rgb, flow)["scores"])


def test_late_fusion_averages_the_towers_softmax(clip):
    rgb, flow = clip
    s, t = towers()
    out = TwoStreamNet(copy.deepcopy(s), copy.deepcopy(t), fusion="softmax")(rgb, flow)
    ps = torch.stack([s(rgb[:, k]).softmax(1) for k in range(3)]).mean(0)
    pt = torch.stack([t(flow[:, k]).softmax(1) for k in range(3)]).mean(0)
    torch.testing.assert_close(out["scores"], (ps + pt) / 2)
    torch.testing.assert_close(out["logits"][1], torch.stack([t(flow[:, k]) for k in range(3)]).mean(0))
    assert TwoStreamNet(*towers(), layers=("softmax",)).late


def test_truncation_and_kept_towers(clip):
    rgb, flow = clip
    m = TwoStreamNet(*towers(), layers=("relu3", "relu5", "fc6"))
    assert m.temporal.layer_names[-1] == "fc6" and m.spatial.layer_names[-1] == "fc8"
    kept = TwoStreamNet(*towers(), truncate=False)
    out = kept(rgb, flow)
    assert kept.temporal.layer_names[-1] == "fc8"
    torch.testing.assert_close(out["scores"], (out["logits"][0] + out["logits"][1]) / 2)  # Table 4 caption
    bil = TwoStreamNet(*towers(), fusion="bilinear")
    assert bil.spatial.layer_names[-1] == "relu5" and bil.classifier.in_features == 32 * 32


def test_section_3_4_architecture(clip):
    rgb, flow = clip
    m = TwoStreamNet.spatiotemporal(*towers())
    assert (m.temporal_fusion, m.truncate, m.layers, m.fuse_into) == ("conv3d_pool3d", False, ("relu5",), "spatial")
    assert isinstance(m.fusions["relu5"], Conv3dFusion) and set(m.pool3d) == {"spatial", "temporal"}
    assert m.fusions["relu5"].conv.weight.shape == (32, 64, 3, 3, 3)
    out = m(rgb, flow)
    torch.testing.assert_close(out["scores"], torch.stack(out["logits"]).mean(0))
    released = build_two_stream(backbone="demo_deep", num_classes=C, spatiotemporal=True, pool3d="released",
                                dropout=0.85, temporal_dropout=0.9)
    assert released.pool3d["spatial"].kernel == (None, 6, 6)  # pool5's window (the whole demo ReLU5 map), all of T
    assert (released.spatial.stages.fc7.drop6.p, released.temporal.stages.fc7.drop6.p) == (0.85, 0.9)
    assert released(torch.randn(1, 5, 3, 48, 48), torch.randn(1, 5, 20, 48, 48))["scores"].shape == (1, C)


def test_trainable_parameters_back_propagate_only_to_the_fusion_layer(clip):
    rgb, flow = clip
    m = TwoStreamNet(*towers(), layers=("relu3", "relu5"), truncate=False)
    params = trainable_parameters(m)
    ids = {id(p) for p in params}
    assert ids == {id(p) for k in ("relu4", "relu5", "fc6", "fc7", "fc8") for t in (m.spatial, m.temporal)
                   for p in t.stages[k].parameters()} | {id(p) for p in m.fusions.parameters()}
    m.train()
    assert not m.spatial.stages.relu2.training and m.spatial.stages.relu4.training  # frozen BN stays eval
    fa, fb = m.fusion_inputs(rgb, flow)
    assert not fa.requires_grad and not fb.requires_grad  # cacheable
    sum(l.sum() for l in m(rgb, flow)["logits"]).backward()
    assert all(p.grad is None for p in m.spatial.stages.relu1.parameters())
    assert all(p.grad is not None for p in params)
    assert len(trainable_parameters(m, "all")) == len(list(m.parameters()))
    assert m.spatial.stages.relu1.conv1.weight.requires_grad
    assert trainable_parameters(TwoStreamNet(*towers(), fusion="softmax")) == []
    with pytest.raises(ConfigError, match="'everything'"):
        trainable_parameters(m, "everything")
    with pytest.raises(ConfigError, match="TwoStreamNet"):
        trainable_parameters(build_backbone("demo_shallow"))


@pytest.mark.parametrize("kw,match", [
    (dict(fusion="average"), r"'average'.*'sum'"),
    (dict(layers=("conv5",)), r"'conv5'.*'relu1'"),
    (dict(temporal_fusion="lstm"), r"'lstm'.*'pool3d'"),
    (dict(pool3d="2x2"), r"'2x2'.*'paper'"),
    (dict(conv_init="xavier"), r"'xavier'.*'gaussian'"),
    (dict(conv3d_init="xavier"), r"'xavier'.*'released'"),
    (dict(fuse_into="both"), r"'both'.*'temporal'"),
    (dict(order="random"), r"'random'.*'interleaved'"),
    (dict(fusion="bilinear", layers=("fc6",)), "bilinear"),
    (dict(fusion="concat", layers=("fc8",)), "concat fusion at fc8"),
    (dict(layers=("fc6",), temporal_fusion="pool3d"), "pool5"),
    (dict(layers=("relu4",), temporal_fusion="conv3d_pool3d"), "relu5"),
    (dict(fusion=("conv", "sum"), layers=("relu5",)), "2 methods"),
    (dict(layers=()), "at least one"),
    (dict(layers=("relu5", "relu5")), "twice"),
])
def test_bad_configurations_raise_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        TwoStreamNet(*towers(), **kw)


def test_channels_last_bf16_autocast_and_deterministic_ops_on_cpu(clip):
    rgb, flow = clip
    m = TwoStreamNet.spatiotemporal(*towers(), conv3d_init="gaussian").eval()  # no ties at the 3D max pool
    ref = m(rgb, flow)["scores"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(rgb, flow)["scores"]
    assert torch.isfinite(low).all() and (low.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
    cl = to_device(copy.deepcopy(m), "cpu", channels_last=True)
    assert cl.spatial.stages.relu1.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert cl.fusions["relu5"].conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(cl(rgb, flow)["scores"], ref, rtol=1e-4, atol=1e-5)
    # deterministic formulations (3D max pooling) give the same values and gradients
    grads = []
    for flag in (False, True):
        mm = set_deterministic(copy.deepcopy(m), flag)
        trainable_parameters(mm)
        out = mm(rgb, flow)["scores"]
        out.sum().backward()
        grads.append((out.detach(), [p.grad for p in mm.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b)


def _fusion_layers_only(model):
    """Paper-size tests train the fusion layer only: the FC layers' gradients alone would be ~700 MB."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.fusions.requires_grad_(True)


def test_paper_size_section_3_4_architecture_vgg_m_batch_one():
    """Paper geometry (two VGG-M-2048 towers, 224x224, 101 classes, 3x3x3x1024x512 fusion kernel):
    forward + backward of the Section 3.4 architecture on one clip of T = 2."""
    s = build_backbone("vgg_m_2048", num_classes=101)
    t = build_backbone("vgg_m_2048", in_channels=20, num_classes=101)
    model = TwoStreamNet.spatiotemporal(s, t, conv3d_init="released")
    _fusion_layers_only(model)
    out = model(torch.randn(1, 2, 3, 224, 224), torch.randn(1, 2, 20, 224, 224))
    sum(l.sum() for l in out["logits"]).backward()
    assert model.fusions["relu5"].conv.weight.grad.shape == (512, 1024, 3, 3, 3)
    assert out["scores"].shape == (1, 101) and len(out["logits"]) == 2


def test_paper_size_vgg16_spatial_with_vgg_m_temporal_zero_pads_13_to_14():
    """Section 3.5 / Table 4: VGG-16 (ReLU5_3 14x14) conv-fused with VGG-M (ReLU5 13x13 padded with zeros)."""
    s = build_backbone("vgg16", num_classes=101)
    t = build_backbone("vgg_m_2048", in_channels=20, num_classes=101)
    model = TwoStreamNet(s, t, fusion="conv")
    _fusion_layers_only(model)
    with torch.no_grad():
        fa, fb = model.fusion_inputs(torch.randn(1, 1, 3, 224, 224), torch.randn(1, 1, 20, 224, 224))
    assert fa.shape == (1, 1, 512, 14, 14) and fb.shape == (1, 1, 512, 13, 13)
    out = model.head(fa, fb)
    out["scores"].sum().backward()
    assert model.fusions["relu5"].conv.weight.grad.shape == (512, 1024, 1, 1) and out["scores"].shape == (1, 101)
