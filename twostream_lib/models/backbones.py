"""Stream backbones with named fusion points (Sections 3.2 and 3.5).

Every backbone is a stack of eight named *stages*; stage ``k`` maps the output of stage ``k-1`` to
the map the paper calls by that name, so a fusion layer can be injected after any of them::

    input -> relu1 -> relu2 -> relu3 -> relu4 -> relu5 -> fc6 -> fc7 -> fc8 (class scores)

VGG-M-2048 as released with the paper's code (MatConvNet), input 224x224::

    conv1 96x7x7/2 -> ReLU -> LRN(5, alpha 5e-4, beta .75, k 2) -> maxpool 3x3/2 (ceil)    relu1 109x109
    conv2 256x5x5/2 pad 1 -> ReLU -> LRN -> maxpool 3x3/2 (ceil)                           relu2  26x26
    conv3 512x3x3 pad 1 -> ReLU                                                            relu3  13x13
    conv4 512x3x3 pad 1 -> ReLU                                                            relu4  13x13
    conv5 512x3x3 pad 1 -> ReLU                                                            relu5  13x13
    maxpool 3x3/2 (ceil) -> fc6 4096 (a 6x6 convolution) -> ReLU                           fc6     1x1
    dropout -> fc7 2048 (1x1 convolution) -> ReLU                                          fc7     1x1
    dropout -> fc8 num_classes (1x1 convolution)                                           fc8     1x1

The temporal (optical-flow) variant takes ``2L = 20`` input channels and has no norm2. VGG-16 is
torchvision's configuration "D" (``relu5`` = ReLU5_3, 14x14 at 224). The fully connected layers are
convolutions whose kernel equals the pool5 map at the training size, so a larger input (the paper's
whole-frame testing, Section 3.5) runs fully convolutionally and :meth:`Backbone.forward` averages
the class scores over the resulting positions.

The LRN follows PyTorch/Caffe: ``y = x / (k + alpha/n * sum_window x^2)^beta``. MatConvNet's
``vl_nnnormalize`` parameters ``[N kappa alpha beta]`` do not divide alpha by N; the MatConvNet
importer converts (``alpha_torch = N * alpha_matconvnet``). The Caffe-trained VGG-M-2048 uses
alpha 5e-4 in Caffe's convention, i.e. ``[5 2 1e-4 0.75]`` in ``imagenet-vgg-m-2048.mat``.

The ``demo_*`` backbones are small stand-ins for the CPU demo with the same stage names. Departures
from the paper (documented): they use batch normalisation after every convolution, which the paper's
networks do not (Section 3.5: "We do not use batch normalization"); and their pool5 covers the whole
6x6 ReLU5 map at the 48 px training size, so fc6 is a 1x1 layer on a global max (VGG's fc6 sees a
6x6 grid of positions). With 420 training videos a position-specific fc6 above a fusion layer
overfitted (80-85% training vs 35-45% test accuracy of conv fusion at ReLU5 on the synthetic set);
with the global pool the same fusion reaches ~70%. Larger inputs (whole-frame testing) still run
fully convolutionally: pool5 then yields several windows whose scores are averaged.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twostream_lib.errors import ConfigError, DataError

from ._common import PointwiseConv2d, check_choice, use_deterministic

__all__ = [
    "LAYERS",
    "CONV_LAYERS",
    "FC_LAYERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LRN",
    "Backbone",
    "build_backbone",
    "list_backbones",
    "architecture_digest",
    "inflate_conv1_to_flow",
    "local_response_norm",
]

LAYERS = ("relu1", "relu2", "relu3", "relu4", "relu5", "fc6", "fc7", "fc8")
CONV_LAYERS = LAYERS[:5]
FC_LAYERS = LAYERS[5:]

#: torchvision's ImageNet normalisation, which the data pipeline applies to RGB ((x/255 - mean)/std).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# Local response normalisation, with a formulation whose CUDA backward is deterministic
# --------------------------------------------------------------------------------------------
def local_response_norm(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """Cross-channel LRN as a sum of ``size`` shifted slices (no pooling kernel).

    Same values as ``torch.nn.functional.local_response_norm`` (which averages with ``avg_pool3d``,
    whose CUDA backward has no deterministic implementation); padding, slicing and addition have
    deterministic backward passes everywhere.
    """
    c = x.shape[1]
    sq = F.pad(x * x, (0, 0, 0, 0, size // 2, (size - 1) // 2))
    s = sq[:, 0:c]
    for i in range(1, size):
        s = s + sq[:, i:i + c]
    return x / (s * (alpha / size) + k).pow(beta)


class LRN(nn.Module):
    """Local response normalisation across channels (VGG-M-2048's norm1/norm2).

    ``y = x / (k + alpha/size * sum_{|c'-c| <= size//2} x_c'^2)^beta`` (PyTorch/Caffe convention).
    ``deterministic``: None (auto: the slice-sum formulation when on CUDA under
    ``torch.use_deterministic_algorithms(True)``), True or False to force one.
    """

    def __init__(self, size: int = 5, alpha: float = 5e-4, beta: float = 0.75, k: float = 2.0, *,
                 deterministic: bool | None = None):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)
        self.deterministic = deterministic

    @classmethod
    def from_matconvnet(cls, param: Sequence[float], **kw) -> LRN:
        """From MatConvNet's ``[N kappa alpha beta]`` (alpha not divided by N)."""
        n, kappa, alpha, beta = (float(v) for v in param)
        return cls(int(n), alpha * n, beta, kappa, **kw)

    def matconvnet_param(self) -> tuple[int, float, float, float]:
        """The same normalisation as MatConvNet's ``[N kappa alpha beta]``."""
        return self.size, self.k, self.alpha / self.size, self.beta

    def forward(self, x: Tensor) -> Tensor:
        if use_deterministic(self.deterministic, x):
            return local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha:g}, beta={self.beta:g}, k={self.k:g}"


# --------------------------------------------------------------------------------------------
# Architecture tables (torchvision-style configs): one entry per stage, ops in order.
#   ("conv", out, kernel, stride, pad)  conv [+ BN] + ReLU
#   ("lrn",)                            LRN(5, 5e-4, 0.75, 2)
#   ("pool", kernel, stride, ceil)      max pooling
#   ("fc", out, kernel)                 fully connected layer as a convolution (+ ReLU except fc8);
#                                       out None = num_classes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    stages: tuple[tuple[str, tuple[tuple, ...]], ...]
    train_size: int  # input side the FC kernels are sized for
    batch_norm: bool = False
    temporal_drops_norm2: bool = False  # VGG-M: the flow network has no norm2


_VGG_M_2048 = _Spec(
    stages=(
        ("relu1", (("conv", 96, 7, 2, 0),)),
        ("relu2", (("lrn",), ("pool", 3, 2, True), ("conv", 256, 5, 2, 1))),
        ("relu3", (("lrn",), ("pool", 3, 2, True), ("conv", 512, 3, 1, 1))),
        ("relu4", (("conv", 512, 3, 1, 1),)),
        ("relu5", (("conv", 512, 3, 1, 1),)),
        ("fc6", (("pool", 3, 2, True), ("fc", 4096, 6))),
        ("fc7", (("fc", 2048, 1),)),
        ("fc8", (("fc", None, 1),)),
    ),
    train_size=224,
    temporal_drops_norm2=True,
)

_DEMO_SHALLOW = _Spec(  # VGG-M-shaped: strided conv1, pool, conv2, pool, conv3-5, global pool5, fc 64-64
    stages=(
        ("relu1", (("conv", 16, 5, 2, 2),)),  # 48 -> 24
        ("relu2", (("pool", 3, 2, True), ("conv", 32, 3, 1, 1))),  # -> 12
        ("relu3", (("pool", 3, 2, True), ("conv", 32, 3, 1, 1))),  # -> 6
        ("relu4", (("conv", 32, 3, 1, 1),)),
        ("relu5", (("conv", 32, 3, 1, 1),)),  # 6x6
        ("fc6", (("pool", 6, 6, True), ("fc", 64, 1))),  # pool5 over the whole 6x6 map -> 1x1
        ("fc7", (("fc", 64, 1),)),
        ("fc8", (("fc", None, 1),)),
    ),
    train_size=48,
    batch_norm=True,
)

_DEMO_DEEP = _Spec(  # VGG-16-shaped (2-2-3-3-3 convs per block), same resolutions as demo_shallow
    stages=(
        ("relu1", (("conv", 16, 3, 2, 1), ("conv", 16, 3, 1, 1))),  # 48 -> 24
        ("relu2", (("pool", 2, 2, True), ("conv", 32, 3, 1, 1), ("conv", 32, 3, 1, 1))),  # -> 12
        ("relu3", (("pool", 2, 2, True),) + (("conv", 32, 3, 1, 1),) * 3),  # -> 6
        ("relu4", (("conv", 32, 3, 1, 1),) * 3),
        ("relu5", (("conv", 32, 3, 1, 1),) * 3),  # 6x6
        ("fc6", (("pool", 6, 6, True), ("fc", 64, 1))),  # as demo_shallow
        ("fc7", (("fc", 64, 1),)),
        ("fc8", (("fc", None, 1),)),
    ),
    train_size=48,
    batch_norm=True,
)


def _vgg16_spec() -> _Spec:
    """VGG-16 from torchvision's own configuration table (``torchvision.models.vgg.cfgs["D"]``)."""
    from torchvision.models.vgg import cfgs

    blocks, cur = [], []
    for v in cfgs["D"]:
        if v == "M":
            blocks.append(cur)
            cur = []
        else:
            cur.append(v)
    stages = []
    for k, widths in enumerate(blocks, start=1):
        ops = ((("pool", 2, 2, False),) if k > 1 else ()) + tuple(("conv", w, 3, 1, 1) for w in widths)
        stages.append((f"relu{k}", ops))
    stages += [("fc6", (("pool", 2, 2, False), ("fc", 4096, 7))), ("fc7", (("fc", 4096, 1),)),
               ("fc8", (("fc", None, 1),))]
    return _Spec(tuple(stages), train_size=224)


def _narrow_spec(spec: _Spec, widths: dict[int, int]) -> _Spec:
    """The same architecture with conv/fc widths replaced (``{old: new}``); tests use narrow VGG-Ms."""
    def op(o: tuple) -> tuple:
        return (o[0], widths.get(o[1], o[1]), *o[2:]) if o[0] in ("conv", "fc") else o

    return _Spec(tuple((name, tuple(op(o) for o in ops)) for name, ops in spec.stages), spec.train_size,
                 spec.batch_norm, spec.temporal_drops_norm2)


_REGISTRY: dict[str, Callable[[], _Spec]] = {
    "vgg_m_2048": lambda: _VGG_M_2048,
    "vgg16": _vgg16_spec,
    "demo_shallow": lambda: _DEMO_SHALLOW,
    "demo_deep": lambda: _DEMO_DEEP,
}


def list_backbones() -> tuple[str, ...]:
    """Names accepted by :func:`build_backbone`."""
    return tuple(_REGISTRY)


def architecture_digest(name: str) -> str:
    """A short hash of a registered backbone's architecture table: changes when its layers do, so
    models trained and cached with an older definition are not reused (``experiments.run_dir``)."""
    import hashlib

    check_choice("backbone", name, _REGISTRY)
    return hashlib.sha1(repr(_REGISTRY[name]()).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------------------------
# The backbone module
# --------------------------------------------------------------------------------------------
def _pool_out(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    num = n + 2 * p - k
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def _shape_after(m: nn.Module, c: int, h: int, w: int) -> tuple[int, int, int]:
    if isinstance(m, nn.Conv2d):
        (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, m.stride, m.padding
        return m.out_channels, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if isinstance(m, nn.MaxPool2d):
        k, s, p = (m.kernel_size, m.stride, m.padding)
        k, s, p = (v if isinstance(v, int) else v[0] for v in (k, s, p))
        return c, _pool_out(h, k, s, p, m.ceil_mode), _pool_out(w, k, s, p, m.ceil_mode)
    return c, h, w


class Backbone(nn.Module):
    """A stream network as eight named stages (``layer_names`` = :data:`LAYERS`).

    ``forward(x)`` gives class scores [N, num_classes] (fc8, pre-softmax, averaged over positions
    when the input is larger than ``train_size``); ``forward(x, upto=name)`` gives the map [N, C, H, W]
    at that layer; ``forward_from(name, feat)`` runs the stages after ``name`` and gives the scores.
    Fully connected layers are convolutions, so every map is 4-D (FC maps are 1x1 at ``train_size``).
    """

    def __init__(self, name: str, stages: OrderedDict[str, nn.Sequential], *, in_channels: int,
                 num_classes: int, train_size: int):
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.train_size = train_size
        self.stages = nn.ModuleDict(stages)
        self.layer_names: tuple[str, ...] = tuple(stages)
        self.channels_last = False  # set by to_device(..., channels_last=True)

    # ---- running ----------------------------------------------------------------------------
    def _index(self, layer: str | None, param: str) -> int:
        if layer is None:
            return -1
        check_choice(param, layer, self.layer_names)
        return self.layer_names.index(layer)

    def run(self, x: Tensor, after: str | None = None, upto: str | None = None) -> Tensor:
        """The map at ``upto`` (default: the last stage) from ``x``, the map at ``after`` (None: input)."""
        i = self._index(after, "layer")
        j = self._index(upto or self.layer_names[-1], "layer")
        if j < i:
            raise ConfigError(f"upto={upto!r} comes before after={after!r}")
        if after is None and self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        for name in self.layer_names[i + 1:j + 1]:
            x = self.stages[name](x)
        return x

    def forward(self, x: Tensor, upto: str | None = None) -> Tensor:
        if upto is not None:
            return self.run(x, None, upto)
        return self._scores(self.run(x))

    def forward_from(self, layer: str, feat: Tensor) -> Tensor:
        """Class scores [N, num_classes] from the map ``feat`` at ``layer`` (the stages after it)."""
        return self._scores(self.run(feat, layer))

    def _scores(self, x: Tensor) -> Tensor:
        if self.layer_names[-1] != "fc8":
            raise ConfigError(f"{self.name} was truncated after {self.layer_names[-1]!r}; it has no class scores")
        return x.mean((2, 3))

    # ---- introspection ----------------------------------------------------------------------
    def feature_shapes(self, size: int | tuple[int, int]) -> dict[str, tuple[int, int, int]]:
        """(C, H, W) of the map at every layer for a ``size`` x ``size`` (or (H, W)) input."""
        h, w = (size, size) if isinstance(size, int) else size
        c = self.in_channels
        shapes = {}
        for name in self.layer_names:
            for m in self.stages[name].modules():
                c, h, w = _shape_after(m, c, h, w)
            if h < 1 or w < 1:
                raise ConfigError(f"{self.name}: input {size} is too small (the map at {name} would be empty)")
            shapes[name] = (c, h, w)
        return shapes

    @property
    def channels(self) -> dict[str, int]:
        """Number of channels of the map at each layer."""
        return {k: v[0] for k, v in self.feature_shapes(self.train_size).items()}

    @property
    def pool5(self) -> nn.MaxPool2d:
        """The max pooling that opens the fc6 stage (replaced by 3D pooling in temporal fusion)."""
        return self.stages["fc6"][0]

    def weight_layers(self) -> list[tuple[str, nn.Conv2d]]:
        """The convolutions (conv1.. and fc6-fc8) in order, with qualified names."""
        return [(f"stages.{s}.{n}", m) for s in self.layer_names for n, m in self.stages[s].named_children()
                if isinstance(m, nn.Conv2d)]

    def truncate_after(self, layer: str) -> None:
        """Remove the stages above ``layer`` (a fused-from tower that is truncated, Fig. 2 left)."""
        i = self._index(layer, "layer")
        for name in self.layer_names[i + 1:]:
            del self.stages[name]
        self.layer_names = self.layer_names[:i + 1]


def _build_stages(spec: _Spec, *, in_channels: int, num_classes: int, dropout: float,
                  drop_norm2: bool) -> OrderedDict[str, nn.Sequential]:
    stages: OrderedDict[str, nn.Sequential] = OrderedDict()
    c = in_channels
    for k, (layer, ops) in enumerate(spec.stages, start=1):
        mods: OrderedDict[str, nn.Module] = OrderedDict()
        if layer in ("fc7", "fc8"):
            mods[f"drop{k - 1}"] = nn.Dropout(dropout)
        n_conv = sum(op[0] == "conv" for op in ops)
        j = 0
        for op in ops:
            kind = op[0]
            if kind == "lrn":
                if not (drop_norm2 and k == 3):
                    mods[f"norm{k - 1}"] = LRN()
            elif kind == "pool":
                mods[f"pool{k - 1}"] = nn.MaxPool2d(op[1], op[2], ceil_mode=op[3])
            elif kind == "conv":
                j += 1
                tag = f"{k}" if n_conv == 1 else f"{k}_{j}"
                mods[f"conv{tag}"] = nn.Conv2d(c, op[1], op[2], op[3], op[4], bias=not spec.batch_norm)
                if spec.batch_norm:
                    mods[f"bn{tag}"] = nn.BatchNorm2d(op[1])
                mods[f"relu{tag}"] = nn.ReLU(inplace=True)
                c = op[1]
            else:  # fc as a convolution
                out = num_classes if op[1] is None else op[1]
                mods[layer] = PointwiseConv2d(c, out) if op[2] == 1 else nn.Conv2d(c, out, op[2])
                if layer != "fc8":
                    mods[f"relu{k}"] = nn.ReLU(inplace=True)
                c = out
        stages[layer] = nn.Sequential(mods)
    return stages


def _init_weights(net: Backbone, *, fc_std: float | None = 0.01) -> None:
    """torchvision's VGG initialisation: Kaiming (fan_out) for convs, N(0, ``fc_std``) for FC layers.

    N(0, 0.01) suits 4096-wide FC layers; for the narrow demo heads (fan-in 64-576) it makes the
    activations and their gradients vanish (training from scratch stalls at chance), so the demo
    backbones pass ``fc_std=None``: Kaiming (fan_in) for fc6 and fc7, N(0, 0.01) for fc8 only, so
    that the initial scores are near zero (loss log C) while the hidden layers keep their scale.
    """
    for s in net.layer_names:
        for name, m in net.stages[s].named_children():
            if isinstance(m, nn.Conv2d):
                if name in FC_LAYERS and (fc_std is not None or name == "fc8"):
                    nn.init.normal_(m.weight, 0, fc_std or 0.01)
                elif name in FC_LAYERS:
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # weight 1, bias 0, running statistics reset


def build_backbone(name: str, *, in_channels: int = 3, num_classes: int = 101, dropout: float = 0.5,
                   weights: str | Path | None = None, deterministic: bool | None = None) -> Backbone:
    """Build a registered backbone (:func:`list_backbones`).

    ``in_channels``: 3 for the spatial (RGB) stream, ``2L`` (20) for the temporal (flow) stream;
    VGG-M-2048 with ``in_channels != 3`` is the released temporal variant without norm2.
    ``dropout``: rate of the two dropout layers before fc7 and fc8 (paper 0.85, Section 3.5).
    ``weights``:
      * None: random initialisation (torchvision's VGG scheme);
      * ``"imagenet"``: torchvision's ``VGG16_Weights.IMAGENET1K_V1`` for ``"vgg16"`` (through
        torchvision's weights API; it downloads once into ``torch.hub.get_dir()``);
        VGG-M-2048 ImageNet weights exist only as MatConvNet's ``imagenet-vgg-m-2048.mat``: pass its path;
      * a ``.mat`` path: a MatConvNet network (simplenn or DagNN, :mod:`.matconvnet`);
      * another path: a torch state_dict (this library's keys, or torchvision's VGG keys).
    With RGB weights and ``in_channels != 3``, conv1 is inflated as the authors did
    (:func:`inflate_conv1_to_flow`); a different number of classes leaves fc8 freshly initialised.
    ``deterministic``: LRN formulation (see :class:`LRN`).
    """
    check_choice("backbone", name, _REGISTRY)
    load = None if weights is None else _weights_loader(name, weights)  # fail before building on bad weights
    net = _make_backbone(name, _REGISTRY[name](), in_channels=in_channels, num_classes=num_classes,
                         dropout=dropout, deterministic=deterministic)
    if load is not None:
        load(net)
    return net


def _make_backbone(name: str, spec: _Spec, *, in_channels: int, num_classes: int, dropout: float,
                   deterministic: bool | None = None) -> Backbone:
    """A randomly initialised backbone from an architecture table (tests use reduced tables)."""
    if in_channels < 1 or num_classes < 1 or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"build_backbone({name!r}): need in_channels >= 1, num_classes >= 1 and "
                          f"0 <= dropout < 1; got {in_channels}, {num_classes}, {dropout}")
    device = torch.get_default_device()
    with torch.device("meta"):  # allocate once, initialise once (not torch's default init, then ours)
        stages = _build_stages(spec, in_channels=in_channels, num_classes=num_classes, dropout=dropout,
                               drop_norm2=spec.temporal_drops_norm2 and in_channels != 3)
    net = Backbone(name, stages, in_channels=in_channels, num_classes=num_classes, train_size=spec.train_size)
    if device.type != "meta":
        net.to_empty(device=device)
    _init_weights(net, fc_std=None if spec.batch_norm else 0.01)  # demo (BN) backbones: see _init_weights
    for m in net.modules():
        if isinstance(m, LRN):
            m.deterministic = deterministic
    return net


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------
def inflate_conv1_to_flow(weight: Tensor, in_channels: int = 20, *,
                          rgb_scale: Sequence[float] | Tensor | None = None) -> Tensor:
    """Flow conv1 from RGB conv1 weights [O, 3, kh, kw]: average the three input channels and copy
    the average to all ``in_channels`` (Section 3.5 / released code; no rescaling).

    ``rgb_scale`` (per RGB channel) first converts the weights to the units the flow input is in.
    The authors' MatConvNet weights act on 0-255 pixels, the same units as the flow input
    (JPEG - 128), so they need none (the default). torchvision weights (and this library's RGB
    towers) act on ImageNet-normalised input ((x/255 - mean)/std); their equivalent on 0-255 units
    is ``w / (255 std)``, which :func:`build_backbone` passes for them: a unit conversion, not the
    rescaling the authors left out.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ConfigError(f"inflate_conv1_to_flow: expected RGB conv1 weights [O, 3, kh, kw], got {list(weight.shape)}")
    if rgb_scale is not None:
        weight = weight * torch.as_tensor(rgb_scale, dtype=weight.dtype, device=weight.device).view(1, 3, 1, 1)
    return weight.mean(1, keepdim=True).expand(-1, in_channels, -1, -1).contiguous()


def _torchvision_rgb_scale() -> Tensor:
    return 1.0 / (255.0 * torch.tensor(IMAGENET_STD))


@torch.no_grad()
def assign_by_order(net: Backbone, tensors: Sequence[tuple[Tensor, Tensor | None]], *, source: str,
                    rgb_scale: Sequence[float] | Tensor | None = None) -> list[str]:
    """Copy (weight, bias) pairs, given in network order, into ``net``'s convolutions.

    Weights must be in PyTorch layout [out, in, kh, kw] (a Linear's [out, in*kh*kw] is reshaped).
    conv1 with 3 input channels going into a network with more is inflated; fc8 of another number
    of classes is skipped. Returns the names of the skipped layers. Shape mismatches raise DataError.
    """
    layers = net.weight_layers()
    if len(tensors) != len(layers):
        raise DataError(f"{source}: has {len(tensors)} conv/fc layers, {net.name} expects {len(layers)}")
    skipped = []
    for i, ((w, b), (name, m)) in enumerate(zip(tensors, layers)):
        w = torch.as_tensor(w).to(m.weight.dtype)
        if i == 0 and w.dim() == 4 and w.shape[1] == 3 and m.in_channels != 3 and w.shape[0] == m.out_channels:
            w = inflate_conv1_to_flow(w, m.in_channels, rgb_scale=rgb_scale)
        if i == len(layers) - 1 and w.shape[0] != m.out_channels:
            skipped.append(name)
            continue
        if w.shape != m.weight.shape and w.numel() == m.weight.numel() and w.shape[0] == m.out_channels:
            w = w.reshape(m.weight.shape)
        if w.shape != m.weight.shape:
            raise DataError(f"{source}: layer {i + 1} ({name}) has weights {list(w.shape)}, "
                            f"{net.name} expects {list(m.weight.shape)}")
        m.weight.copy_(w)
        if m.bias is not None:
            if b is None:
                m.bias.zero_()
            else:
                b = torch.as_tensor(b).to(m.bias.dtype).reshape(-1)
                if b.numel() != m.bias.numel():
                    raise DataError(f"{source}: layer {i + 1} ({name}) has {b.numel()} biases, "
                                    f"expected {m.bias.numel()}")
                m.bias.copy_(b)
        elif b is not None and bool(torch.as_tensor(b).any()):
            raise DataError(f"{source}: layer {i + 1} ({name}) has biases but {net.name}'s convolution has none")
    return skipped


def _torchvision_pairs(sd: dict) -> list[tuple[Tensor, Tensor]]:
    def index(k: str) -> tuple[int, int]:
        part, idx = k.split(".")[:2]
        return (0 if part == "features" else 1), int(idx)

    keys = sorted({k.rsplit(".", 1)[0] for k in sd if k.endswith(".weight") and sd[k].dim() in (2, 4)},
                  key=index)
    return [(sd[k + ".weight"], sd.get(k + ".bias")) for k in keys]


def _torchvision_vgg16_state_dict() -> dict:
    from torchvision.models import VGG16_Weights

    w = VGG16_Weights.IMAGENET1K_V1
    try:
        return w.get_state_dict(progress=False)
    except Exception as e:  # offline: URLError/OSError/HTTPError, whatever torch.hub raises
        raise DataError(
            f"weights='imagenet' for 'vgg16': could not obtain torchvision's {w} from {w.url} "
            f"({type(e).__name__}: {e}). Without internet, copy the file {Path(w.url).name} into "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'} (torchvision then loads it from there), "
            f"or pass weights=<path to a state_dict>") from e


def _read_state_dict(path: Path) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"weights file {path}: not a torch state_dict ({type(e).__name__}: {e})") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise DataError(f"weights file {path}: expected a state_dict (dict of tensors)")
    return sd


def _load_state_dict(net: Backbone, sd: dict, path: Path) -> None:
    if any(k.startswith("features.") for k in sd) and any(k.startswith("classifier.") for k in sd):
        assign_by_order(net, _torchvision_pairs(sd), source=str(path), rgb_scale=_torchvision_rgb_scale())
        return
    prefixes = {k[:k.index("stages.")] for k in sd if "stages." in k}
    if len(prefixes) != 1:
        raise DataError(f"weights file {path}: unrecognised keys (e.g. {sorted(sd)[:3]}); expected this "
                        "library's Backbone keys ('stages.relu1.conv1.weight', ...) or torchvision VGG keys")
    prefix = prefixes.pop()
    own = net.state_dict()
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix + "stages.")}
    layers = net.weight_layers()
    conv1, fc8 = layers[0][0], layers[-1][0]
    w1 = sd.get(conv1 + ".weight")
    if w1 is not None and w1.shape != own[conv1 + ".weight"].shape and w1.shape[1] == 3:
        # this library's RGB towers take ImageNet-normalised input, as torchvision's do
        sd[conv1 + ".weight"] = inflate_conv1_to_flow(w1, net.in_channels, rgb_scale=_torchvision_rgb_scale())
    w8 = sd.get(fc8 + ".weight")
    if w8 is not None and w8.shape[0] != net.num_classes:
        for suffix in (".weight", ".bias"):
            sd[fc8 + suffix] = own[fc8 + suffix]
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise DataError(f"weights file {path} does not fit {net.name}: {e}") from e


def _weights_loader(name: str, weights: str | Path) -> Callable[[Backbone], object]:
    """Check and read ``weights`` (before the backbone is built); returns the function that loads them."""
    if isinstance(weights, str) and weights == "imagenet":
        if name == "vgg16":
            sd = _torchvision_vgg16_state_dict()
            return lambda net: assign_by_order(net, _torchvision_pairs(sd), source="torchvision VGG16_Weights",
                                               rgb_scale=_torchvision_rgb_scale())
        if name == "vgg_m_2048":
            raise ConfigError("weights='imagenet' for 'vgg_m_2048': its ImageNet weights exist only as "
                              "MatConvNet's imagenet-vgg-m-2048.mat (www.vlfeat.org/matconvnet/pretrained); "
                              "pass weights=<path to that .mat>")
        raise ConfigError(f"weights='imagenet': the demo backbone {name!r} has no pretrained weights; "
                          "pass weights=None or a state_dict path")
    path = Path(weights)
    if not path.is_file():
        raise DataError(f"weights file {path} not found; expected 'imagenet', a MatConvNet .mat file "
                        "or a torch state_dict (.pt/.pth)")
    if path.suffix.lower() == ".mat":
        from .matconvnet import load_matconvnet_into, read_matconvnet

        mat = read_matconvnet(path)
        return lambda net: load_matconvnet_into(net, mat)
    sd = _read_state_dict(path)
    return lambda net: _load_state_dict(net, sd, path)
