"""MatConvNet importer: tiny VGG-M-shaped networks written with scipy.io.savemat in both structures."""
import numpy as np
import pytest
import scipy.io
import torch

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.models import backbones as bb
from twostream_lib.models.backbones import IMAGENET_MEAN, IMAGENET_STD, LAYERS, build_backbone
from twostream_lib.models.matconvnet import (load_matconvnet_into, load_twostream_matconvnet, read_matconvnet)
from twostream_lib.models.twostream import TwoStreamNet

torch.set_num_threads(1)

WIDTHS = {96: 4, 256: 6, 512: 8, 4096: 16, 2048: 12}
CLASSES = 5
LRN_PARAM = [5.0, 1.5, 3e-4, 0.8]  # not the defaults: the importer must read them


def narrow(in_channels=3):
    return bb._make_backbone("vgg_m_2048", bb._narrow_spec(bb._VGG_M_2048, WIDTHS), in_channels=in_channels,
                             num_classes=CLASSES, dropout=0.5)


def mcn_layers(in_channels=3, seed=0, suffix=""):
    """A narrow VGG-M-2048 as MatConvNet layer descriptions (MatConvNet layout, H x W x Cin x Cout)."""
    rng = np.random.default_rng(seed)
    conv = [("conv1", 7, in_channels, 4, 2, 0), ("conv2", 5, 4, 6, 2, 1), ("conv3", 3, 6, 8, 1, 1),
            ("conv4", 3, 8, 8, 1, 1), ("conv5", 3, 8, 8, 1, 1), ("fc6", 6, 8, 16, 1, 0), ("fc7", 1, 16, 12, 1, 0),
            ("fc8", 1, 12, CLASSES, 1, 0)]
    out = []
    for i, (name, k, cin, cout, s, p) in enumerate(conv):
        scale = 1e-3 if i == 0 else np.sqrt(2.0 / (k * k * cin))
        out.append(dict(name=name + suffix, type="conv", W=rng.normal(0, scale, (k, k, cin, cout)).astype(np.float32),
                        b=rng.normal(0, 0.1, (1, cout)).astype(np.float32), stride=s, pad=p))
        if name.startswith("conv") or name in ("fc6", "fc7"):
            out.append(dict(name=name.replace("conv", "relu").replace("fc", "relu") + suffix, type="relu"))
        if name in ("conv1", "conv2") and not (name == "conv2" and in_channels != 3):
            out.append(dict(name=f"norm{name[-1]}{suffix}", type="lrn", param=LRN_PARAM))
        if name in ("conv1", "conv2", "conv5"):
            out.append(dict(name=f"pool{name[-1]}{suffix}", type="pool", pool=[3, 3], stride=2, pad=[0, 1, 0, 1]))
    out.append(dict(name="prob" + suffix, type="softmax"))
    return out


def cell(items):
    arr = np.empty((1, len(items)), dtype=object)
    for i, v in enumerate(items):
        arr[0, i] = v
    return arr


def write_simplenn(path, layers, average):
    entries = []
    for l in layers:
        e = {"name": l["name"], "type": l["type"]}
        if l["type"] == "conv":
            e.update(weights=cell([l["W"], l["b"]]), stride=np.array([[l["stride"]] * 2], float),
                     pad=np.array([[l["pad"]] * 4], float))
        elif l["type"] == "lrn":
            e["param"] = np.array([l["param"]])
        elif l["type"] == "pool":
            e.update(method="max", pool=np.array([l["pool"]], float), stride=np.array([[2, 2]], float),
                     pad=np.array([l["pad"]], float))
        entries.append(e)
    norm = {"averageImage": average, "imageSize": np.array([[224, 224, 3]])}
    scipy.io.savemat(path, {"layers": cell(entries), "meta": {"normalization": norm}})


DAG_TYPES = {"conv": "dagnn.Conv", "relu": "dagnn.ReLU", "lrn": "dagnn.LRN", "pool": "dagnn.Pooling",
             "softmax": "dagnn.SoftMax", "conv3d": "dagnn.Conv3D", "concat": "dagnn.Concat"}


def write_dagnn(path, layers, average):
    fields = ("name", "type", "inputs", "outputs", "params", "block")
    L = np.empty((1, len(layers)), dtype=[(f, object) for f in fields])
    params = []
    for i, l in enumerate(layers):
        L[0, i]["name"], L[0, i]["type"] = l["name"], DAG_TYPES[l["type"]]
        L[0, i]["inputs"], L[0, i]["outputs"] = cell([f"x{i}"]), cell([f"x{i + 1}"])
        block, names = {}, []
        if l["type"] in ("conv", "conv3d"):
            names = [l["name"] + "f", l["name"] + "b"]
            params += [(names[0], l["W"]), (names[1], l["b"].reshape(-1, 1))]
            block = {"size": np.array([l["W"].shape], float), "hasBias": True,
                     "stride": np.array([[l.get("stride", 1)] * 2], float),
                     "pad": np.array([[l.get("pad", 0)] * 4], float)}
        elif l["type"] == "lrn":
            block = {"param": np.array([l["param"]])}
        elif l["type"] == "pool":
            block = {"method": "max", "poolSize": np.array([l["pool"]], float), "stride": np.array([[2, 2]], float),
                     "pad": np.array([l["pad"]], float)}
        L[0, i]["params"] = cell(names)
        L[0, i]["block"] = block
    P = np.empty((1, len(params)), dtype=[("name", object), ("value", object)])
    for i, (n, v) in enumerate(params):
        P[0, i]["name"], P[0, i]["value"] = n, v
    scipy.io.savemat(path, {"net": {"layers": L, "params": P, "vars": np.zeros((0, 0)),
                                    "meta": {"normalization": {"averageImage": average}}}})


# ---- a direct MatConvNet-semantics forward in NumPy (independent of the importer) ---------------

def np_conv(x, W, b, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw, _, cout = W.shape
    ho, wo = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    y = np.zeros((x.shape[0], cout, ho, wo))
    for h in range(kh):
        for w in range(kw):
            patch = x[:, :, h:h + stride * (ho - 1) + 1:stride, w:w + stride * (wo - 1) + 1:stride]
            y += np.einsum("nchw,co->nohw", patch, W[h, w].astype(np.float64))
    return y + b.reshape(1, -1, 1, 1)


def np_pool(x, k, s, pad):
    t, bo, l, r = pad
    x = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)), constant_values=-np.inf)
    ho, wo = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    return np.stack([np.stack([x[:, :, i * s:i * s + k, j * s:j * s + k].max((2, 3)) for j in range(wo)], -1)
                     for i in range(ho)], -2)


def np_lrn(x, param):
    n, kappa, alpha, beta = param
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        y[:, c] = x[:, c] / (kappa + alpha * (x[:, max(0, c - 2):c + 3] ** 2).sum(1)) ** beta
    return y


def mcn_forward(layers, x):
    for l in layers:
        if l["type"] == "conv":
            x = np_conv(x, l["W"], l["b"], l["stride"], l["pad"])
        elif l["type"] == "relu":
            x = np.maximum(x, 0)
        elif l["type"] == "lrn":
            x = np_lrn(x, l["param"])
        elif l["type"] == "pool":
            x = np_pool(x, 3, 2, l["pad"])
    return x.mean((2, 3))


@pytest.fixture(scope="module")
def rgb_input():
    return torch.from_numpy(np.random.default_rng(5).normal(0, 1, (2, 3, 224, 224)).astype(np.float32))


@pytest.mark.parametrize("fmt", ["simplenn", "dagnn"])
def test_import_lands_weights_and_forward_matches_matconvnet(tmp_path, fmt, rgb_input):
    layers = mcn_layers()
    average = np.stack([np.full((4, 4), v) for v in (120.0, 115.0, 100.0)], -1)  # H x W x 3 average image
    path = tmp_path / f"net-{fmt}.mat"
    (write_simplenn if fmt == "simplenn" else write_dagnn)(path, layers, average)
    net = read_matconvnet(path)
    assert net.format == fmt and [l.name for l in net.convs()][-1] == "fc8"
    np.testing.assert_allclose(net.average_color(), [120, 115, 100])

    ours = narrow()
    report = load_matconvnet_into(ours, path)
    assert report.input_norm == "imagenet" and not report.skipped and len(report.mapped) == 8
    # weights land in the right tensors: ours[o, c, h, w] == MatConvNet W[h, w, c, o]
    w3 = layers[[l["name"] for l in layers].index("conv3")]["W"]
    got = ours.stages.relu3.conv3.weight.detach().numpy()
    for o, c, h, w in [(0, 0, 0, 0), (7, 5, 2, 1), (3, 2, 1, 2)]:
        assert got[o, c, h, w] == w3[h, w, c, o]
    fc6 = layers[[l["name"] for l in layers].index("fc6")]
    assert ours.stages.fc6.fc6.weight[9, 4, 5, 0] == fc6["W"][5, 0, 4, 9]
    assert torch.equal(ours.stages.fc6.fc6.bias, torch.from_numpy(fc6["b"].reshape(-1)))
    lrn = ours.stages.relu2.norm1
    assert lrn.matconvnet_param() == pytest.approx(LRN_PARAM) and report.lrn
    # forward with our (ImageNet-normalised) input == MatConvNet forward on pixels - average
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    x_mcn = 255.0 * (rgb_input.double().numpy() * std + mean) - np.array([120, 115, 100.0])[:, None, None]
    want = mcn_forward(layers, x_mcn)
    with torch.no_grad():
        got = ours.eval()(rgb_input).double().numpy()
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-4 * np.abs(want).max())


def test_rgb_network_into_flow_backbone_inflates_raw_conv1(tmp_path):
    layers = mcn_layers()
    write_simplenn(tmp_path / "rgb.mat", layers, np.array([[[120.0, 115.0, 100.0]]]))
    flow = narrow(in_channels=20)
    report = load_matconvnet_into(flow, tmp_path / "rgb.mat")
    assert report.input_norm == "none"
    w1 = layers[0]["W"]  # 7 x 7 x 3 x 4
    got = flow.stages.relu1.conv1.weight.detach().numpy()
    assert got.shape == (4, 20, 7, 7)
    np.testing.assert_allclose(got[2, 13], w1[:, :, :, 2].mean(-1), rtol=1e-6)
    np.testing.assert_allclose(flow.stages.relu1.conv1.bias.detach().numpy(), layers[0]["b"].reshape(-1))
    assert [n for n, _ in report.lrn] == ["stages.relu2.norm1"]  # the flow net has no norm2


def test_flow_network_folds_its_average_into_the_bias(tmp_path):
    layers = mcn_layers(in_channels=20, seed=3)
    write_dagnn(tmp_path / "flow.mat", layers, np.full((1, 1, 20), 120.0))
    flow = narrow(in_channels=20)
    load_matconvnet_into(flow, tmp_path / "flow.mat")
    w, b = layers[0]["W"].astype(np.float64), layers[0]["b"].reshape(-1)
    np.testing.assert_allclose(flow.stages.relu1.conv1.bias.detach().numpy(), b + 8.0 * w.sum((0, 1, 2)),
                               rtol=1e-5)  # input here is JPEG - 128, the network's JPEG - 120


def test_build_backbone_reads_a_mat_file(tmp_path, monkeypatch):
    write_simplenn(tmp_path / "net.mat", mcn_layers(), np.zeros((1, 1, 3)))
    monkeypatch.setitem(bb._REGISTRY, "vgg_m_2048", lambda: bb._narrow_spec(bb._VGG_M_2048, WIDTHS))
    net = build_backbone("vgg_m_2048", num_classes=CLASSES, weights=tmp_path / "net.mat")
    assert net.stages.fc7.fc7.weight.shape == (12, 16, 1, 1)
    other = build_backbone("vgg_m_2048", num_classes=3, weights=tmp_path / "net.mat")  # fc8 re-initialised
    assert torch.equal(other.stages.fc7.fc7.weight, net.stages.fc7.fc7.weight)


@pytest.mark.parametrize("fusion", ["conv3d", "conv"])
def test_authors_two_stream_model_towers_and_fusion_layers(tmp_path, fusion):
    spatial = mcn_layers(3, seed=1, suffix="_spatial")
    temporal = mcn_layers(20, seed=2, suffix="_temporal")
    rng = np.random.default_rng(9)
    if fusion == "conv3d":
        extra = [dict(name="conv53D", type="conv3d", W=rng.normal(size=(3, 3, 3, 16, 8)).astype(np.float32),
                      b=rng.normal(size=(1, 8)).astype(np.float32), stride=1, pad=1)]
    else:
        extra = [dict(name="conv_fusion_1", type="conv", W=rng.normal(size=(1, 1, 16, 8)).astype(np.float32),
                      b=rng.normal(size=(1, 8)).astype(np.float32), stride=1, pad=0)]
    write_dagnn(tmp_path / "fused.mat", spatial + extra + temporal, np.zeros((1, 1, 23)))
    s, t = narrow(3), narrow(20)
    model = (TwoStreamNet.spatiotemporal(s, t, conv3d_init="released") if fusion == "conv3d"
             else TwoStreamNet(s, t, fusion="conv", layers=("relu5",), truncate=False))
    out = load_twostream_matconvnet(model, tmp_path / "fused.mat")
    assert len(out["fusion"]) == 1
    w = extra[0]["W"]
    got = model.fusions["relu5"].conv.weight.detach().numpy()
    if fusion == "conv3d":  # H x W x T x Cin x Cout -> Cout x Cin x T x H x W
        assert got[5, 11, 2, 0, 1] == w[0, 1, 2, 11, 5]
    else:
        assert got[5, 11, 0, 0] == w[0, 0, 11, 5]
    assert torch.equal(model.spatial.stages.relu4.conv4.weight,
                       torch.from_numpy(spatial[[l["name"] for l in spatial].index("conv4_spatial")]["W"]
                                        .transpose(3, 2, 0, 1).copy()))
    assert model.temporal.stages.relu1.conv1.weight.shape[1] == 20


def test_importer_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_matconvnet(tmp_path / "missing.mat")
    scipy.io.savemat(tmp_path / "other.mat", {"x": np.zeros(3)})
    with pytest.raises(DataError, match="'layers'"):
        read_matconvnet(tmp_path / "other.mat")
    layers = mcn_layers()
    write_simplenn(tmp_path / "short.mat", [l for l in layers if l["name"] != "fc8"], np.zeros((1, 1, 3)))
    with pytest.raises(DataError, match="7 convolutions"):
        load_matconvnet_into(narrow(), tmp_path / "short.mat")
    bad = [dict(l, stride=1) if l["name"] == "conv2" else l for l in layers]
    write_simplenn(tmp_path / "stride.mat", bad, np.zeros((1, 1, 3)))
    with pytest.raises(DataError, match="'conv2' has stride"):
        load_matconvnet_into(narrow(), tmp_path / "stride.mat")
    write_simplenn(tmp_path / "ok.mat", layers, np.zeros((1, 1, 3)))
    with pytest.raises(ConfigError, match="'zscore'"):
        load_matconvnet_into(narrow(), tmp_path / "ok.mat", input_norm="zscore")
    with pytest.raises(DataError, match="_temporal"):
        load_matconvnet_into(narrow(), tmp_path / "ok.mat", tower="temporal")
    assert LAYERS[-1] == "fc8"
