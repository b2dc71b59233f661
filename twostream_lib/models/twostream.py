"""Two-stream networks fused at any named layer(s), spatially and temporally (Sections 3.1-3.5).

Fusion at one layer, fused-from tower truncated (Fig. 2 left; Tables 1, 2)::

    rgb  [B,T,3,H,W]  -> spatial  relu1 .. relu5 ─┐
                                                  f ─> fc6 -> fc7 -> fc8 -> scores (one loss)
    flow [B,T,2L,H,W] -> temporal relu1 .. relu5 ─┘      (the fused-into tower's layers)

Fusion at several layers (``layers=("relu5", "fc8")``, Fig. 2 right): the fused-into tower
continues from each fusion output, the other tower from its own map, and is fused in again at the
next layer. ``truncate=False`` keeps the fused-from tower to fc8 with a loss of its own; the
prediction is then the average of the towers' fc8 scores (Table 4 caption).

The Section 3.4 architecture (:meth:`TwoStreamNet.spatiotemporal`, Fig. 4)::

    spatial  relu5 [B,512,T,H,W] ─┐
                                  3D conv ─> 3D pool ─> fc6 .. fc8 ─> loss 1 ─┐
    temporal relu5 ───────────────┤                                           average ─> scores
                                  └──────> 3D pool ─> fc6 .. fc8 ─> loss 2 ─┘

Late fusion (``fusion="softmax"`` or ``layers=("softmax",)``, Table 1 row 1): both towers whole;
``scores`` is the average of the two towers' softmax outputs (over frames too), ``logits`` the two
towers' T-averaged fc8 scores.

Inputs are clips: rgb [B, T, 3, H, W] and flow [B, T, 2L, H, W] (a 4-D input is one frame, T = 1).
Per-frame models (``temporal_fusion`` "none" or "pool2d", which are the same computation: Fig. 3a
pools in 2D per frame and the predictions are averaged over T) run every frame through the network
and average the class scores over T. Outputs: ``{"scores": [B, C], "logits": [[B, C], ...]}`` with one
logits entry per kept tower (the fused-into tower first).

``forward = head(*fusion_inputs(rgb, flow))``: ``fusion_inputs`` runs both towers up to the first
fusion layer and returns their maps [B, T, C, h, w]; ``head`` does everything above. Section 3.5
back-propagates only down to the injected fusion layer: :func:`trainable_parameters` selects exactly
the parameters ``head`` uses (and freezes the rest), so the towers' outputs can be cached.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twostream_lib.errors import ConfigError, DataError

from ._common import check_choice
from .backbones import CONV_LAYERS, LAYERS, LRN, Backbone, build_backbone
from .fusion import CONCAT_ORDERS, CONV_INITS, FUSION_METHODS, build_fusion
from .temporal import (CONV3D_INITS, POOL3D_PRESETS, TEMPORAL_FUSIONS, Conv3dFusion, MaxPool3d, build_pool3d,
                       from_5d, to_5d)

__all__ = ["TwoStreamNet", "build_two_stream", "trainable_parameters", "TRAINABLE_MODES", "to_device",
           "set_deterministic"]

TRAINABLE_MODES = ("fusion_and_above", "all")
_TOWERS = ("spatial", "temporal")


class TwoStreamNet(nn.Module):
    """Two towers (:class:`~twostream_lib.models.backbones.Backbone`) fused as described in the module doc.

    Fusion (Sections 3.1, 3.2):
      ``fusion``: a method of :data:`~twostream_lib.models.fusion.FUSION_METHODS` (or one per layer),
        or ``"softmax"`` for late fusion (``layers`` is then ignored);
      ``layers``: fusion layer(s) from :data:`~twostream_lib.models.backbones.LAYERS`, e.g. ``("relu5",)``,
        ``("relu5", "fc8")``, ``("relu3", "relu5", "fc6")``; ``("softmax",)`` = late fusion;
      ``truncate``: drop the fused-from tower above the last fusion layer (one loss), or keep it to
        fc8 with its own loss;
      ``fuse_into``: the tower that continues after fusion ("spatial", as in the paper, or "temporal");
      ``conv_init``: conv fusion init, "sum" ([I I], paper), "released" ([.25 I, .75 I]), "gaussian";
      ``order``: channel order of concatenation, "stacked" (released code) or "interleaved" (Eq. 3);
      ``fusion_relu``: ReLU after conv / 3D conv fusion (the released code adds one; Eq. 4 has none).
    Temporal fusion (Section 3.3):
      ``temporal_fusion``: "none" | "pool2d" (per frame) | "pool3d" (3D pooling instead of pool5 in every
        tower that reaches it) | "conv3d_pool3d" (3D conv fusion at relu5, then 3D pooling);
      ``pool3d``: "paper" (3x3x3) | "released" ([pool5, T], temporal stride 2);
      ``conv3d_init``: "paper" | "released" | "gaussian" (see :mod:`.temporal`).
    Other: ``deterministic`` (LRN and 3D max pooling formulation, see :func:`set_deterministic`; None
    leaves the towers' setting, whose default is auto).

    The model takes ownership of the towers: a truncated tower loses its upper stages, concatenation
    widens the first layer after the fusion layer (initialised as ``[W, W]``: where no pooling lies
    between, concatenation starts as sum fusion), bilinear fusion replaces the fused-into tower's
    layers above it by a linear classifier.
    """

    def __init__(self, spatial: Backbone, temporal: Backbone, *,
                 # ---- spatial fusion (Sections 3.1, 3.2) ----
                 fusion: str | Sequence[str] = "conv",
                 layers: str | Sequence[str] = ("relu5",),
                 truncate: bool = True,
                 fuse_into: str = "spatial",
                 conv_init: str = "sum",
                 order: str = "stacked",
                 fusion_relu: bool = False,
                 # ---- temporal fusion (Section 3.3) ----
                 temporal_fusion: str = "none",
                 pool3d: str = "paper",
                 conv3d_init: str = "paper",
                 # ---- implementation ----
                 deterministic: bool | None = None):
        super().__init__()
        if spatial.num_classes != temporal.num_classes:
            raise ConfigError(f"the towers predict different numbers of classes: {spatial.num_classes} "
                              f"(spatial) and {temporal.num_classes} (temporal)")
        for tower, what in ((spatial, "spatial"), (temporal, "temporal")):
            if tower.layer_names != LAYERS:
                raise ConfigError(f"the {what} tower {tower.name!r} has stages {tower.layer_names}; "
                                  f"expected a whole backbone with {LAYERS}")
        self.spatial, self.temporal = spatial, temporal
        self.num_classes = spatial.num_classes
        self.fuse_into = check_choice("fuse_into", fuse_into, _TOWERS)
        self.fuse_from = "temporal" if fuse_into == "spatial" else "spatial"
        self.conv_init = check_choice("conv_init", conv_init, CONV_INITS)
        self.order = check_choice("order", order, CONCAT_ORDERS)
        self.temporal_fusion = check_choice("temporal_fusion", temporal_fusion, TEMPORAL_FUSIONS)
        self.pool3d_preset = check_choice("pool3d", pool3d, POOL3D_PRESETS)
        self.conv3d_init = check_choice("conv3d_init", conv3d_init, CONV3D_INITS)
        self.fusion_relu = bool(fusion_relu)
        self.truncate = bool(truncate)
        self.frozen_upto: str | None = None  # set by trainable_parameters()

        self.classifier = None
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        self.late = fusion == "softmax" or "softmax" in layers
        if self.late:  # fusion="softmax" ignores `layers`; layers=("softmax",) must stand alone
            if fusion != "softmax" and set(layers) - {"softmax"}:
                raise ConfigError(f"late (softmax) fusion takes no other fusion layer, got layers={layers}")
            if self.temporal_fusion in ("pool3d", "conv3d_pool3d"):
                raise ConfigError(f"temporal_fusion={temporal_fusion!r} needs a fusion layer at or below relu5, "
                                  "not late (softmax) fusion")
            self.layers, self.methods = ("softmax",), ("softmax",)
            self.truncate = False
            self.fusions = nn.ModuleDict()
            self.pool3d = nn.ModuleDict()
            if deterministic is not None:
                set_deterministic(self, deterministic)
            return

        if not layers:
            raise ConfigError("layers: give at least one fusion layer (or fusion='softmax' for late fusion)")
        for layer in layers:
            check_choice("fusion layer", layer, LAYERS + ("softmax",))
        if len(set(layers)) != len(layers):
            raise ConfigError(f"layers: {layers} names a layer twice")
        self.layers = tuple(sorted(layers, key=LAYERS.index))
        methods = (fusion,) * len(self.layers) if isinstance(fusion, str) else tuple(fusion)
        if len(methods) != len(self.layers):
            raise ConfigError(f"fusion: {len(methods)} methods for {len(self.layers)} layers {self.layers}")
        if not isinstance(fusion, str) and tuple(layers) != self.layers:
            raise ConfigError(f"layers {tuple(layers)} must be given in network order when fusion is per layer")
        for m in methods:
            check_choice("fusion", m, FUSION_METHODS)
        self.methods = methods
        for i, (layer, m) in enumerate(zip(self.layers, methods)):
            if m == "bilinear" and (layer not in CONV_LAYERS or i != len(self.layers) - 1):
                raise ConfigError(f"bilinear fusion marginalises out all positions: only at a conv layer "
                                  f"(relu1..relu5) and as the last fusion layer, got {layer!r} in {self.layers}")
            if m == "concat" and layer == "fc8":
                raise ConfigError("concat fusion at fc8 leaves 2C class scores with no layer to reduce them; "
                                  "use conv or sum fusion at fc8")
        first = LAYERS.index(self.layers[0])
        if self.temporal_fusion in ("pool3d", "conv3d_pool3d"):
            if first > LAYERS.index("relu5"):
                raise ConfigError(f"temporal_fusion={temporal_fusion!r} replaces pool5, which must come after the "
                                  f"first fusion layer; got layers={self.layers}")
            if "bilinear" in methods:
                raise ConfigError("bilinear fusion has no pool5 after it; use temporal_fusion='none'")
        if self.temporal_fusion == "conv3d_pool3d":
            if "relu5" not in self.layers or methods[self.layers.index("relu5")] != "conv":
                raise ConfigError("temporal_fusion='conv3d_pool3d' is 3D conv fusion at relu5: "
                                  f"need 'relu5' in layers with fusion 'conv', got {dict(zip(self.layers, methods))}")

        into, other = self.tower(self.fuse_into), self.tower(self.fuse_from)
        ca, cb, ci = spatial.channels, temporal.channels, into.channels
        self.fusions = nn.ModuleDict()
        for layer, m in zip(self.layers, methods):
            if self.temporal_fusion == "conv3d_pool3d" and layer == "relu5":
                mod = Conv3dFusion(ca[layer], channels_b=cb[layer], out_channels=ci[layer], init=conv3d_init,
                                   order=order)
            else:
                mod = build_fusion(m, ca[layer], channels_b=cb[layer], init=conv_init, order=order,
                                   out_channels=ci[layer] if m == "conv" else None)
            self.fusions[layer] = mod
            if m == "concat":
                self._widen_next_layer(into, layer, ca[layer], cb[layer])
        last = self.layers[-1]
        if methods[-1] == "bilinear":
            self.classifier = nn.Linear(self.fusions[last].out_channels, self.num_classes)
            into.truncate_after(last)
        if self.truncate and last != "fc8":
            other.truncate_after(last)
        self.pool3d = nn.ModuleDict()
        if self.temporal_fusion in ("pool3d", "conv3d_pool3d"):
            for name in _TOWERS:
                tower = self.tower(name)
                if "fc6" in tower.layer_names:
                    self.pool3d[name] = build_pool3d(pool3d, pool5=tower.pool5)
        if deterministic is not None:  # None keeps the towers' own setting (auto by default)
            set_deterministic(self, deterministic)

    # ---- construction helpers ---------------------------------------------------------------
    @classmethod
    def spatiotemporal(cls, spatial: Backbone, temporal: Backbone, *, pool3d: str = "paper",
                       conv3d_init: str = "paper", **kwargs) -> TwoStreamNet:
        """The proposed architecture of Section 3.4 (Fig. 4): the temporal ReLU5 fused into the spatial
        tower by 3D conv + 3D pooling, the temporal tower kept with 3D pooling, one loss per tower,
        the two towers' predictions averaged at test time."""
        kwargs = {"fusion": "conv", "layers": ("relu5",), "truncate": False, **kwargs}
        return cls(spatial, temporal, temporal_fusion="conv3d_pool3d", pool3d=pool3d,
                   conv3d_init=conv3d_init, **kwargs)

    def tower(self, name: str) -> Backbone:
        return self.spatial if check_choice("tower", name, _TOWERS) == "spatial" else self.temporal

    @torch.no_grad()
    def _widen_next_layer(self, into: Backbone, layer: str, ca: int, cb: int) -> None:
        """Concatenation doubles the input of the next layer (Table 1: fc6 after ReLU5); start it as
        ``[W, W]`` (zeros for a part of another width): ``W x^a + W x^b``, sum fusion where no pooling
        lies between (pool5 does lie between ReLU5 and fc6)."""
        stage = into.stages[LAYERS[LAYERS.index(layer) + 1]]
        name, conv = next((n, m) for n, m in stage.named_children() if isinstance(m, nn.Conv2d))
        new = nn.Conv2d(ca + cb, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        if self.order == "stacked":
            parts = {"spatial": slice(0, ca), "temporal": slice(ca, ca + cb)}
        else:
            parts = {"spatial": slice(1, None, 2), "temporal": slice(0, None, 2)}
        w = conv.weight
        for tower, part in parts.items():
            same = w.shape[1] == (ca if tower == "spatial" else cb)
            new.weight[:, part] = w if same else 0.0
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
        setattr(stage, name, new)

    # ---- forward --------------------------------------------------------------------------
    @property
    def first_layer(self) -> str:
        """The layer whose maps :meth:`fusion_inputs` returns ("fc8" for late fusion)."""
        return "fc8" if self.late else self.layers[0]

    def fusion_inputs(self, rgb: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """Both towers' maps at the first fusion layer, [B, T, C, h, w] each."""
        if rgb.dim() == 4:
            rgb, flow = rgb.unsqueeze(1), flow.unsqueeze(1)
        if rgb.dim() != 5 or flow.dim() != 5 or rgb.shape[:2] != flow.shape[:2]:
            raise DataError(f"TwoStreamNet: expected rgb [B,T,3,H,W] and flow [B,T,2L,H,W] with the same B, T; "
                            f"got {list(rgb.shape)} and {list(flow.shape)}")
        b, t = rgb.shape[:2]
        first = self.first_layer
        fa = self.spatial.run(rgb.flatten(0, 1), None, first)
        fb = self.temporal.run(flow.flatten(0, 1), None, first)
        return fa.unflatten(0, (b, t)), fb.unflatten(0, (b, t))

    def head(self, fa: Tensor, fb: Tensor) -> dict:
        """Everything above the first fusion layer: ``{"scores": [B, C], "logits": [[B, C], ...]}``."""
        b, t = fa.shape[:2]
        dtype = next(self.parameters()).dtype
        if fa.dtype != dtype and not torch.is_autocast_enabled(fa.device.type):  # e.g. a float16 feature cache
            fa, fb = fa.to(dtype), fb.to(dtype)
        maps = {"spatial": fa.flatten(0, 1), "temporal": fb.flatten(0, 1)}
        if self.late:
            sa = maps["spatial"].mean((2, 3)).view(b, t, -1)
            sb = maps["temporal"].mean((2, 3)).view(b, t, -1)
            scores = 0.5 * (sa.float().softmax(-1).mean(1) + sb.float().softmax(-1).mean(1))
            return {"scores": scores, "logits": [sa.mean(1), sb.mean(1)]}
        frames = {"spatial": t, "temporal": t}
        into, other = self.fuse_into, self.fuse_from
        at = self.layers[0]
        for i, layer in enumerate(self.layers):
            if i:
                for name in (into, other):
                    maps[name], frames[name] = self._advance(name, maps[name], at, layer, b, frames[name])
                at = layer
            maps[into] = self._fuse(layer, maps["spatial"], maps["temporal"], b)
        if self.classifier is not None:
            logits = [self.classifier(maps[into]).view(b, frames[into], -1).mean(1)]
        else:
            x, n = self._advance(into, maps[into], at, "fc8", b, frames[into])
            logits = [self._collapse(x, b, n)]
        if not self.truncate:
            x, n = self._advance(other, maps[other], at, "fc8", b, frames[other])
            logits.append(self._collapse(x, b, n))
        scores = logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)
        return {"scores": scores, "logits": logits}

    def forward(self, rgb: Tensor, flow: Tensor) -> dict:
        return self.head(*self.fusion_inputs(rgb, flow))

    def _fuse(self, layer: str, xs: Tensor, xt: Tensor, b: int) -> Tensor:
        if xs.shape[0] != xt.shape[0]:
            raise ConfigError(f"fusion at {layer}: the towers have {xs.shape[0]} and {xt.shape[0]} frame maps "
                              "(different temporal pooling?)")
        mod = self.fusions[layer]
        if isinstance(mod, Conv3dFusion):
            y = from_5d(mod(to_5d(xs, b), to_5d(xt, b)))
        else:
            y = mod(xs, xt)
        if self.fusion_relu and self.methods[self.layers.index(layer)] == "conv":
            y = F.relu(y)
        return y

    def _advance(self, name: str, x: Tensor, start: str, end: str, b: int, t: int) -> tuple[Tensor, int]:
        """Run tower ``name``'s stages after ``start`` up to ``end``; pool5 becomes 3D pooling if set."""
        tower = self.tower(name)
        i, j = tower.layer_names.index(start), tower.layer_names.index(end)
        for stage_name in tower.layer_names[i + 1:j + 1]:
            stage = tower.stages[stage_name]
            if stage_name == "fc6" and name in self.pool3d:
                x5 = self.pool3d[name](to_5d(x, b))
                t, x = x5.shape[2], stage[1:](from_5d(x5))
            else:
                x = stage(x)
        return x, t

    @staticmethod
    def _collapse(x: Tensor, b: int, t: int) -> Tensor:
        """fc8 maps [B*t, C, h, w] -> class scores averaged over positions and time, [B, C]."""
        return x.mean((2, 3)).view(b, t, -1).mean(1)

    # ---- training support -------------------------------------------------------------------
    def frozen_modules(self) -> list[nn.Module]:
        """The towers' stages up to and including the first fusion layer (below the injected layer)."""
        out = []
        for name in _TOWERS:
            tower = self.tower(name)
            for s in tower.layer_names[:tower.layer_names.index(self.first_layer) + 1]:
                out.append(tower.stages[s])
        return out

    def train(self, mode: bool = True) -> TwoStreamNet:
        """As nn.Module.train, but stages frozen by :func:`trainable_parameters` stay in eval mode
        (their batch-norm statistics and dropout do not change, so cached features stay valid)."""
        super().train(mode)
        if mode and self.frozen_upto is not None:
            for m in self.frozen_modules():
                m.eval()
        return self


def trainable_parameters(model: nn.Module, mode: str = "fusion_and_above", *,
                         freeze: bool = True) -> list[nn.Parameter]:
    """The parameters to optimise.

    ``"all"``: every parameter (full back-propagation). ``"fusion_and_above"``: Section 3.5, "we only
    propagate back to the injected fusion layer": the fusion layers and every layer above the first
    fusion layer in both towers (exactly what :meth:`TwoStreamNet.head` uses); empty for late fusion.
    With ``freeze`` (default) the other parameters get ``requires_grad=False`` and their stages stay in
    eval mode under ``model.train()``; the selected ones get ``requires_grad=True``.
    """
    check_choice("trainable mode", mode, TRAINABLE_MODES)
    frozen: set[int] = set()
    if mode == "fusion_and_above":
        if not isinstance(model, TwoStreamNet):
            raise ConfigError(f"trainable_parameters(mode='fusion_and_above') needs a TwoStreamNet, "
                              f"got {type(model).__name__}; use mode='all'")
        frozen = {id(p) for m in model.frozen_modules() for p in m.parameters()}
    params = [p for p in model.parameters() if id(p) not in frozen]
    if freeze:
        for p in model.parameters():
            p.requires_grad_(id(p) not in frozen)
        if isinstance(model, TwoStreamNet):
            model.frozen_upto = model.first_layer if frozen else None
            model.train(model.training)
    return params


def set_deterministic(model: nn.Module, enabled: bool | None = True) -> nn.Module:
    """Choose the formulation of the ops whose CUDA backward is nondeterministic (LRN, 3D max pooling):
    True = the deterministic formulations, False = the standard kernels, None = auto (deterministic
    ones exactly when on CUDA with ``torch.use_deterministic_algorithms(True)``)."""
    for m in model.modules():
        if isinstance(m, (LRN, MaxPool3d)):
            m.deterministic = enabled
    return model


def to_device(model: nn.Module, device: str | torch.device, *, channels_last: bool = False) -> nn.Module:
    """Move ``model`` to ``device``; with ``channels_last``, 4-D weights become channels_last (5-D:
    channels_last_3d) and backbones convert their inputs, which is what tensor cores want. Works on
    CPU too (the default everywhere). bf16 autocast needs nothing from the model:
    ``with torch.autocast(device.type, dtype=torch.bfloat16): model(rgb, flow)``."""
    model.to(device)
    if channels_last:
        for p in model.parameters():
            if p.dim() in (4, 5):
                fmt = torch.channels_last if p.dim() == 4 else torch.channels_last_3d
                p.data = p.data.contiguous(memory_format=fmt)
        for m in model.modules():
            if isinstance(m, Backbone):
                m.channels_last = True
    return model


def build_two_stream(*, backbone: str = "demo_shallow", temporal_backbone: str | None = None,
                     num_classes: int = 101, dropout: float = 0.5, temporal_dropout: float | None = None,
                     flow_channels: int = 20, spatial_weights: str | Path | None = None,
                     temporal_weights: str | Path | None = None, spatiotemporal: bool = False,
                     **kwargs) -> TwoStreamNet:
    """Build both towers by name (:func:`~twostream_lib.models.backbones.build_backbone`) and fuse them:
    ``TwoStreamNet(spatial, temporal, **kwargs)``, or :meth:`TwoStreamNet.spatiotemporal` with
    ``spatiotemporal=True``. ``temporal_backbone`` defaults to ``backbone``, ``temporal_dropout`` to
    ``dropout`` (paper: 0.85 for both; released code: 0.9 for the temporal tower)."""
    spatial = build_backbone(backbone, in_channels=3, num_classes=num_classes, dropout=dropout,
                             weights=spatial_weights)
    temporal = build_backbone(temporal_backbone or backbone, in_channels=flow_channels, num_classes=num_classes,
                              dropout=dropout if temporal_dropout is None else temporal_dropout,
                              weights=temporal_weights)
    if spatiotemporal:
        return TwoStreamNet.spatiotemporal(spatial, temporal, **kwargs)
    return TwoStreamNet(spatial, temporal, **kwargs)

