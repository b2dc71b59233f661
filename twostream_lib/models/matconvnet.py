"""Import MatConvNet networks (``.mat``) into this library's backbones.

VGG-M-2048's ImageNet weights exist only as MatConvNet's ``imagenet-vgg-m-2048.mat``, and the
authors released their two-stream models as MatConvNet DagNN files, so both formats are read with
``scipy.io.loadmat``:

* **simplenn**: ``net.layers`` is a cell array of structs with ``type`` ('conv', 'relu', 'lrn'
  (or 'normalize'), 'pool', 'dropout', 'softmax', ...), ``name``, ``weights`` = {filters, biases}
  (older files: ``filters``/``biases`` fields), ``stride``, ``pad``, ``param`` (LRN);
* **DagNN**: ``net.layers`` is a struct array with ``name``, ``type`` ('dagnn.Conv', ...),
  ``inputs``, ``outputs``, ``params`` (names) and ``block`` (``size``, ``pad``, ``stride``,
  ``hasBias``; LRN ``param``; Pooling ``poolSize`` ...), and ``net.params`` a struct array of
  ``name``/``value``.

The convolutions (conv1..conv5, fc6..fc8; fully connected layers are convolutions in MatConvNet
too) are matched to the backbone's in network order; filters go from MatConvNet's
H x W x C_in x C_out to PyTorch's C_out x C_in x H x W (both correlate, rows = height). LRN
parameters ``[N kappa alpha beta]`` become ``LRN(N, N * alpha, beta, kappa)``. ``tower="spatial"``
or ``"temporal"`` picks one stream of the authors' fused models (layer names ending ``_spatial`` /
``_temporal``); :func:`load_twostream_matconvnet` also loads their 1x1 and 3D fusion convolutions.

Input normalisation. MatConvNet networks take pixels in 0-255 minus ``meta.normalization.averageImage``;
this library's RGB input is ImageNet-normalised ((x/255 - mean)/std) and its flow input is JPEG - 128.
The importer folds the difference into conv1 (``input_norm``):
``"imagenet"`` ``W' = 255 std_c W``, ``b' = b + sum W (255 mean_c - avg_c)`` (exact for conv1 without
padding, as VGG-M's; at padded borders approximate); ``"flow"`` ``b' = b + sum W (128 - avg_c)``;
``"none"`` raw weights. ``"auto"`` picks "imagenet" for an RGB network going into an RGB backbone,
"flow" for a flow network, and "none" when RGB weights are inflated into a flow backbone (the raw
weights act on 0-255 units, the flow input's units: the authors' initialisation). The average image
is reduced to one value per channel (as the authors' fusion code does).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from twostream_lib.errors import ConfigError, DataError

from ._common import check_choice
from .backbones import IMAGENET_MEAN, IMAGENET_STD, LRN, Backbone, assign_by_order

__all__ = [
    "MatLayer",
    "MatConvNet",
    "ImportReport",
    "read_matconvnet",
    "load_matconvnet_into",
    "load_twostream_matconvnet",
    "filters_to_torch",
    "INPUT_NORMS",
]

INPUT_NORMS = ("auto", "imagenet", "flow", "none")

_SIMPLENN_TYPES = {"conv": "conv", "convt": "convt", "relu": "relu", "lrn": "lrn", "normalize": "lrn",
                   "pool": "pool", "dropout": "dropout", "softmax": "softmax", "softmaxloss": "loss",
                   "loss": "loss", "bnorm": "bnorm", "concat": "concat"}
_DAGNN_TYPES = {"dagnn.Conv": "conv", "dagnn.ConvTranspose": "convt", "dagnn.ReLU": "relu", "dagnn.LRN": "lrn",
                "dagnn.Pooling": "pool", "dagnn.DropOut": "dropout", "dagnn.SoftMax": "softmax",
                "dagnn.Loss": "loss", "dagnn.BatchNorm": "bnorm", "dagnn.Concat": "concat",
                "dagnn.Sum": "sum", "dagnn.Conv3D": "conv3d", "dagnn.Pooling3D": "pool3d"}


@dataclass
class MatLayer:
    """One MatConvNet layer, normalised across the two formats (weights in MatConvNet layout)."""

    name: str
    type: str  # "conv", "lrn", "pool", "relu", "dropout", "softmax", "loss", "bnorm", "concat", "conv3d", ...
    weights: list[np.ndarray] = field(default_factory=list)  # conv: [filters H x W x Cin x Cout, biases]
    stride: tuple[int, ...] = (1, 1)
    pad: tuple[int, ...] = (0, 0, 0, 0)  # top, bottom, left, right
    size: tuple[int, ...] | None = None  # declared filter size (DagNN)
    param: tuple[float, ...] | None = None  # LRN [N kappa alpha beta]


@dataclass
class MatConvNet:
    """A MatConvNet network read from a ``.mat`` file."""

    path: Path
    format: str  # "simplenn" | "dagnn"
    layers: list[MatLayer]
    meta: dict

    def average_color(self) -> np.ndarray | None:
        """``meta.normalization.averageImage`` reduced to one value per input channel (None if absent)."""
        norm = self.meta.get("normalization") or {}
        avg = norm.get("averageImage") if isinstance(norm, dict) else None
        if avg is None:
            return None
        a = np.asarray(avg, dtype=np.float64)
        if a.size == 0:
            return None
        return a.reshape(-1, a.shape[-1]).mean(0) if a.ndim >= 3 else a.reshape(-1)

    def convs(self, tower: str | None = None) -> list[MatLayer]:
        """The tower's 2D convolutions in network order (fusion convolutions excluded)."""
        return [l for l in self._tower(tower) if l.type == "conv" and "fusion" not in l.name]

    def _tower(self, tower: str | None) -> list[MatLayer]:
        if tower is None:
            return self.layers
        return [l for l in self.layers if l.name.endswith("_" + tower)]


@dataclass
class ImportReport:
    """What :func:`load_matconvnet_into` did."""

    source: str
    format: str
    mapped: list[tuple[str, str, tuple[int, ...]]]  # (MatConvNet layer, our parameter, torch shape)
    skipped: list[str]  # our layers left as they were (fc8 of another number of classes)
    input_norm: str
    average: tuple[float, ...] | None
    lrn: list[tuple[str, tuple[float, ...]]]  # (our LRN, MatConvNet param) applied
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _simplify(o):
    """loadmat(struct_as_record=False, squeeze_me=False) output -> dicts, lists, str, numeric arrays."""
    from scipy.io.matlab import mat_struct

    if isinstance(o, mat_struct):
        return {f: _simplify(getattr(o, f)) for f in o._fieldnames}
    if isinstance(o, np.ndarray):
        if o.dtype == object:
            return [_simplify(v) for v in o.ravel(order="F")]
        if o.dtype.kind in "US":
            return "".join(o.ravel().tolist())
        return o
    return o


def _one(x):
    return x[0] if isinstance(x, list) and len(x) == 1 else x


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, list):
        return x
    return [x]


def _ints(v, default: tuple[int, ...]) -> tuple[int, ...]:
    if v is None or (isinstance(v, np.ndarray) and v.size == 0):
        return default
    return tuple(int(round(float(x))) for x in np.ravel(np.asarray(v)))


def _floats(v) -> tuple[float, ...] | None:
    if v is None:
        return None
    return tuple(float(x) for x in np.ravel(np.asarray(v)))


def _pad4(v) -> tuple[int, int, int, int]:
    p = _ints(v, (0,))
    if len(p) == 1:
        return (p[0],) * 4
    if len(p) == 2:
        return (p[0], p[0], p[1], p[1])
    return tuple(p[:4])


def _stride2(v) -> tuple[int, int]:
    s = _ints(v, (1,))
    return (s[0], s[0]) if len(s) == 1 else tuple(s[:2])


def _name(v, i: int) -> str:
    v = _one(v)
    return v if isinstance(v, str) and v else f"layer{i + 1}"


def read_matconvnet(path: str | Path) -> MatConvNet:
    """Read a MatConvNet network (simplenn or DagNN) from a ``.mat`` file."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"MatConvNet file {path} not found")
    try:
        raw = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=False, chars_as_strings=True)
    except NotImplementedError as e:  # MATLAB v7.3 (HDF5)
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) files are not supported by scipy.io.loadmat; re-save the "
                        "network in MATLAB with save(..., '-v7') (MatConvNet's own files are v7)") from e
    except Exception as e:
        raise DataError(f"{path}: not a readable .mat file ({type(e).__name__}: {e})") from e
    top = {k: _simplify(v) for k, v in raw.items() if not k.startswith("__")}
    net = _one(top["net"]) if "net" in top else top
    if not isinstance(net, dict) or "layers" not in net:
        raise DataError(f"{path}: no MatConvNet network (expected a 'layers' field, at the top level or in 'net'); "
                        f"found variables {sorted(top)}")
    meta = _one(net.get("meta")) if isinstance(_one(net.get("meta")), dict) else {}
    if "normalization" not in meta and isinstance(_one(net.get("normalization")), dict):
        meta = {**meta, "normalization": _one(net["normalization"])}  # older simplenn files
    if isinstance(meta.get("normalization"), list):
        meta["normalization"] = _one(meta["normalization"])
    layers = [_one(l) for l in _as_list(net["layers"])]
    if not layers or not all(isinstance(l, dict) for l in layers):
        raise DataError(f"{path}: 'layers' is not a list of structs")
    if "params" in net and all("block" in l for l in layers):
        return MatConvNet(path, "dagnn", _parse_dagnn(path, layers, _as_list(net["params"])), meta)
    return MatConvNet(path, "simplenn", _parse_simplenn(path, layers), meta)


def _parse_simplenn(path: Path, layers: list[dict]) -> list[MatLayer]:
    out = []
    for i, l in enumerate(layers):
        t = _one(l.get("type"))
        kind = _SIMPLENN_TYPES.get(t if isinstance(t, str) else "", "other")
        if "weights" in l:
            weights = [np.asarray(w) for w in _as_list(l["weights"])]
        else:
            weights = [np.asarray(l[k]) for k in ("filters", "biases") if k in l]
        param = _floats(l.get("param")) if kind == "lrn" else None
        out.append(MatLayer(_name(l.get("name"), i), kind, weights, _stride2(l.get("stride")), _pad4(l.get("pad")),
                            param=param))
    return out


def _parse_dagnn(path: Path, layers: list[dict], params: list) -> list[MatLayer]:
    values = {}
    for p in params:
        p = _one(p)
        if not isinstance(p, dict) or "name" not in p:
            raise DataError(f"{path}: net.params must be a struct array with name and value")
        values[_one(p["name"])] = p.get("value")
    out = []
    for i, l in enumerate(layers):
        t = _one(l.get("type"))
        kind = _DAGNN_TYPES.get(t if isinstance(t, str) else "", "other")
        block = _one(l.get("block"))
        block = block if isinstance(block, dict) else {}
        names = [n for n in (_one(x) for x in _as_list(l.get("params"))) if isinstance(n, str) and n]
        missing = [n for n in names if n not in values]
        if missing:
            raise DataError(f"{path}: layer {_name(l.get('name'), i)!r} uses parameters {missing} not in net.params")
        size = _ints(block.get("size"), ()) or None
        param = _floats(block.get("param")) if kind == "lrn" else None
        out.append(MatLayer(_name(l.get("name"), i), kind, [np.asarray(values[n]) for n in names],
                            _stride2(block.get("stride")), _pad4(block.get("pad")), size, param))
    return out


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------
def filters_to_torch(w: np.ndarray, size: tuple[int, ...] | None = None) -> Tensor:
    """MatConvNet filters (H x W x Cin x Cout; 3D: H x W x T x Cin x Cout) -> PyTorch layout
    (Cout x Cin x H x W; 3D: Cout x Cin x T x H x W). MATLAB drops trailing singleton dimensions;
    ``size`` (or 4/5 dimensions) restores them."""
    w = np.asarray(w, dtype=np.float32)
    nd = 5 if (size is not None and len(size) == 5) or w.ndim == 5 else 4
    if w.ndim > nd:
        raise DataError(f"filters with {w.ndim} dimensions {list(w.shape)}; expected at most {nd}")
    w = w.reshape(w.shape + (1,) * (nd - w.ndim))
    if size is not None and len(size) == nd and w.shape != tuple(size):
        raise DataError(f"filters of shape {list(w.shape)} do not match the declared size {list(size)}")
    perm = (3, 2, 0, 1) if nd == 4 else (4, 3, 2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(w.transpose(perm)))


def _bias(layer: MatLayer) -> Tensor | None:
    if len(layer.weights) < 2 or layer.weights[1].size == 0:
        return None
    return torch.from_numpy(np.asarray(layer.weights[1], dtype=np.float32).reshape(-1).copy())


def _conv_pairs(net: MatConvNet, layers: list[MatLayer]) -> list[tuple[Tensor, Tensor | None]]:
    pairs = []
    for l in layers:
        if not l.weights:
            raise DataError(f"{net.path}: conv layer {l.name!r} has no weights")
        pairs.append((filters_to_torch(l.weights[0], l.size), _bias(l)))
    return pairs


def _fold_input(w: Tensor, b: Tensor | None, mode: str, avg: np.ndarray | None) -> tuple[Tensor, Tensor]:
    c = w.shape[1]
    b = torch.zeros(w.shape[0]) if b is None else b.clone()
    if mode == "imagenet":
        mean, std = torch.tensor(IMAGENET_MEAN, dtype=torch.float64), torch.tensor(IMAGENET_STD, dtype=torch.float64)
        a = torch.zeros(3, dtype=torch.float64) if avg is None else torch.as_tensor(avg, dtype=torch.float64)
        shift = 255.0 * mean - a.expand(3)
        b = b + (w.double().sum((2, 3)) @ shift).float()
        w = (w.double() * (255.0 * std).view(1, 3, 1, 1)).float()
    elif mode == "flow":
        a = torch.full((c,), 128.0, dtype=torch.float64) if avg is None else torch.as_tensor(avg, dtype=torch.float64)
        b = b + (w.double().sum((2, 3)) @ (128.0 - a.expand(c))).float()
    return w, b


def _check_geometry(net: MatConvNet, layer: MatLayer, name: str, m: nn.Conv2d) -> None:
    t, bt, l, r = layer.pad
    if layer.stride != tuple(m.stride) or (t, l) != tuple(m.padding) or (bt, r) != tuple(m.padding):
        raise DataError(f"{net.path}: layer {layer.name!r} has stride {layer.stride} and pad {layer.pad}, but "
                        f"{name} has stride {tuple(m.stride)} and padding {tuple(m.padding)}")


@torch.no_grad()
def load_matconvnet_into(backbone: Backbone, source: str | Path | MatConvNet, *, tower: str | None = None,
                         input_norm: str = "auto") -> ImportReport:
    """Copy a MatConvNet network's weights into ``backbone`` (see the module doc).

    ``tower``: None (a single network) or "spatial"/"temporal" (one stream of the authors' fused
    models). A truncated backbone takes the first of the file's layers. RGB weights going into a
    flow backbone are inflated (:func:`~twostream_lib.models.backbones.inflate_conv1_to_flow`); fc8 of
    another number of classes is left as it was (``report.skipped``).
    """
    net = source if isinstance(source, MatConvNet) else read_matconvnet(source)
    check_choice("input_norm", input_norm, INPUT_NORMS)
    if tower is not None:
        check_choice("tower", tower, ("spatial", "temporal"))
    chosen = net._tower(tower)
    if tower is not None and not chosen:
        raise DataError(f"{net.path}: no layers named '*_{tower}' (is this one of the authors' two-stream models?)")
    if any(l.type == "bnorm" for l in chosen):
        raise DataError(f"{net.path}: batch normalisation layers are not supported (the paper's networks have none)")
    convs = net.convs(tower)
    ours = backbone.weight_layers()
    if len(convs) > len(ours) and len(backbone.layer_names) < 8:
        convs = convs[:len(ours)]  # a truncated tower takes the lower layers
    if len(convs) != len(ours):
        raise DataError(f"{net.path}: {len(convs)} convolutions ({', '.join(l.name for l in convs)}); "
                        f"{backbone.name} has {len(ours)}")
    for layer, (name, m) in zip(convs, ours):
        _check_geometry(net, layer, name, m)
    pairs = _conv_pairs(net, convs)
    w1, b1 = pairs[0]
    file_c, our_c = w1.shape[1], backbone.in_channels
    mode = input_norm
    if mode == "auto":
        mode = "imagenet" if file_c == 3 and our_c == 3 else "flow" if file_c == our_c else "none"
    if mode == "imagenet" and file_c != 3:
        raise ConfigError(f"input_norm='imagenet' needs an RGB conv1, {net.path} has {file_c} input channels")
    avg = net.average_color()
    notes = []
    if avg is not None and avg.size not in (1, file_c):
        notes.append(f"averageImage has {avg.size} channels, conv1 {file_c}: ignored")
        avg = None
    if mode in ("imagenet", "flow"):
        if avg is None:
            notes.append("no meta.normalization.averageImage: " +
                         ("assumed 0 (raw pixels)" if mode == "imagenet" else "assumed 128"))
        if any(ours[0][1].padding):
            notes.append("conv1 is padded: the folded normalisation is exact except at the image border")
        pairs[0] = _fold_input(w1, b1, mode, avg)
    skipped = assign_by_order(backbone, pairs, source=str(net.path))
    lrn_applied = _apply_lrn(backbone, [l for l in chosen if l.type == "lrn" and l.param])
    mapped = [(l.name, f"{name}.weight", tuple(m.weight.shape)) for l, (name, m) in zip(convs, ours)
              if f"{name}" not in skipped]
    return ImportReport(str(net.path), net.format, mapped, skipped, mode,
                        None if avg is None else tuple(float(v) for v in avg), lrn_applied, notes)


def _apply_lrn(backbone: Backbone, layers: list[MatLayer]) -> list[tuple[str, tuple[float, ...]]]:
    ours = [(n, m) for n, m in backbone.named_modules() if isinstance(m, LRN)]
    applied = []

    def number(name: str) -> str | None:
        found = re.search(r"norm(\d+)", name)
        return found.group(1) if found else None

    by_number = {number(l.name): l for l in layers if number(l.name)}
    for i, (name, m) in enumerate(ours):
        layer = by_number.get(number(name)) or (layers[i] if i < len(layers) else None)
        if layer is None or len(layer.param) != 4:
            continue
        new = LRN.from_matconvnet(layer.param)
        m.size, m.alpha, m.beta, m.k = new.size, new.alpha, new.beta, new.k
        applied.append((name, layer.param))
    return applied


@torch.no_grad()
def load_twostream_matconvnet(model: nn.Module, path: str | Path, *, input_norm: str = "auto") -> dict:
    """Load one of the authors' two-stream fusion models (DagNN) into a
    :class:`~twostream_lib.models.twostream.TwoStreamNet`: both towers (``*_spatial``, ``*_temporal``),
    the 1x1 conv fusion layers (``conv_fusion*``, in network order) and the 3D conv fusion
    (``dagnn.Conv3D``, H x W x T x 2D x D). Returns {"spatial": report, "temporal": report, "fusion": [...]}.
    """
    from .fusion import ConvFusion
    from .temporal import Conv3dFusion

    net = read_matconvnet(path)
    out = {name: load_matconvnet_into(model.tower(name), net, tower=name, input_norm=input_norm)
           for name in ("spatial", "temporal")}
    file_2d = [l for l in net.layers if l.type == "conv" and "fusion" in l.name]
    file_3d = [l for l in net.layers if l.type == "conv3d"]
    ours_2d = [(k, m) for k, m in model.fusions.items() if isinstance(m, ConvFusion)]
    ours_3d = [(k, m) for k, m in model.fusions.items() if isinstance(m, Conv3dFusion)]
    if len(file_2d) != len(ours_2d) or len(file_3d) != len(ours_3d):
        raise DataError(f"{path}: {len(file_2d)} conv and {len(file_3d)} 3D conv fusion layers; the model has "
                        f"{len(ours_2d)} and {len(ours_3d)}")
    done = []
    for layer, (key, mod) in list(zip(file_2d, ours_2d)) + list(zip(file_3d, ours_3d)):
        w = filters_to_torch(layer.weights[0], layer.size)
        if mod.order == "interleaved":  # file: [spatial; temporal] stacked
            d = mod.channels_a
            w = torch.stack([w[:, d:], w[:, :d]], 2).flatten(1, 2)
        if w.shape != mod.conv.weight.shape:
            raise DataError(f"{path}: fusion layer {layer.name!r} has filters {list(w.shape)}, "
                            f"the model's {key} fusion expects {list(mod.conv.weight.shape)}")
        mod.conv.weight.copy_(w)
        b = _bias(layer)
        mod.conv.bias.copy_(torch.zeros_like(mod.conv.bias) if b is None else b)
        done.append((layer.name, key))
    out["fusion"] = done
    return out
