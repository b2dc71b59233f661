"""Parameter and layer counts of the paper's architectures (Tables 1 and 2, Section 3.1-3.2).

Every row is counted on the real modules: two VGG-M-2048 towers (spatial: 3 input channels,
temporal: 2L = 20, without norm2), 101 classes, 224x224 input, fused by :class:`TwoStreamNet` as
the row describes, built on PyTorch's ``meta`` device (no memory for the ~180M parameters).

How the paper counts (worked out from its numbers, see docs/models.md): ``#layers`` counts the
layers with weights (5 conv + 3 FC per VGG-M-2048, plus each injected fusion convolution); the
fused-from tower is truncated above the last fusion layer, except late fusion (both towers whole);
the bilinear row counts the towers' convolutions and leaves the classifier out ("+SVM"). Rows:

==========  ========================  ====================================  =================
table       key                       our model                             layers
==========  ========================  ====================================  =================
table1      sum@softmax               late fusion, both towers               8 + 8
table1      max@relu5, sum@relu5      max/sum at ReLU5, temporal truncated   8 + 5
table1      concat@relu5              concat at ReLU5 (fc6 takes 2 x 512)    8 + 5
table1      bilinear@relu5            bilinear at ReLU5 (+ classifier)       5 + 5 (+ 1)
table1/2    conv@reluK                1x1 conv fusion at ReLU K (K=2..5)     8 + K + 1
table2      conv@relu5+fc8            conv at ReLU5, sum at FC8              8 + 8 + 1
table2      conv@relu3+relu5+fc6      conv at ReLU3, ReLU5, FC6              8 + 6 + 3
==========  ========================  ====================================  =================
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from twostream_lib import paper

from .backbones import build_backbone
from .twostream import TwoStreamNet

__all__ = ["ParamRow", "count_parameters", "parameter_rows", "counts", "markdown_table"]


@dataclass(frozen=True)
class ParamRow:
    """One row of Table 1 or 2, counted on our modules."""

    table: str  # "table1" | "table2"
    key: str  # row key of twostream_lib.paper
    method: str  # fusion method(s), "," between layers: "conv", "conv,sum", "softmax"
    layer: str  # fusion layer(s), "+" between them: "relu5", "relu5+fc8", "softmax"
    layers: int  # layers with weights (the bilinear classifier excluded, as the paper's "+SVM")
    params: int  # parameters of those layers
    extra_params: int = 0  # parameters counted separately: the bilinear row's linear classifier
    truncate: bool = True  # the fused-from tower is truncated above the last fusion layer
    note: str = ""

    @property
    def params_M(self) -> float:  # noqa: N802 - the paper's unit
        return self.params / 1e6

    @property
    def params_m(self) -> float:
        """Same as ``params_M``, under :class:`twostream_lib.paper.PaperRow`'s name."""
        return self.params_M


def count_parameters(model: nn.Module, *, exclude: nn.Module | None = None) -> tuple[int, int]:
    """(parameters, layers with weights) of ``model``; a layer is a Conv2d, Conv3d or Linear.
    ``exclude``: a submodule left out of both counts."""
    skip = set() if exclude is None else {id(m) for m in exclude.modules()}
    params = sum(p.numel() for m in model.modules() if id(m) not in skip
                 for p in m.parameters(recurse=False))
    layers = sum(1 for m in model.modules() if id(m) not in skip and isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)))
    return params, layers


def _build(kwargs: dict, *, backbone: str, num_classes: int, flow_channels: int,
           spatial_in_channels: int) -> TwoStreamNet:
    with torch.device("meta"):
        spatial = build_backbone(backbone, in_channels=spatial_in_channels, num_classes=num_classes)
        temporal = build_backbone(backbone, in_channels=flow_channels, num_classes=num_classes)
        return TwoStreamNet(spatial, temporal, **kwargs)


def parameter_rows(architectures: Sequence[tuple[str, str, dict]], *, backbone: str = "vgg_m_2048",
                   num_classes: int = 101, flow_channels: int = 20, spatial_in_channels: int = 3) -> list[ParamRow]:
    """Our counts of ``architectures``: (table, row key, TwoStreamNet keyword arguments) each, as the
    table registry defines its rows (``twostream_lib.experiments.registry.parameter_rows``).

    The defaults are the paper's setting. ``spatial_in_channels=20`` reproduces the paper's apparent
    convention of counting conv1 of both towers with the flow network's 20 input channels.
    """
    rows = []
    for table, key, kwargs in architectures:
        net = _build(kwargs, backbone=backbone, num_classes=num_classes, flow_channels=flow_channels,
                     spatial_in_channels=spatial_in_channels)
        params, layers = count_parameters(net, exclude=net.classifier)
        extra = 0 if net.classifier is None else count_parameters(net.classifier)[0]
        method = ",".join(net.methods)
        note = "+ linear classifier (paper: + SVM)" if extra else ""
        rows.append(ParamRow(table, key, method, "+".join(net.layers), layers, params, extra, net.truncate, note))
    return rows


def counts(rows: Sequence[ParamRow]) -> dict[str, tuple[int, float]]:
    """{row key: (layers, parameters in millions)} for :func:`twostream_lib.tables.build_table`'s
    ``paper_counts``; Table 1's "Sum [22]" row (the same late-fusion architecture as "Sum (ours)") included."""
    out = {r.key: (r.layers, r.params_M) for r in rows}
    if "sum@softmax" in out:
        out["sum@softmax[22]"] = out["sum@softmax"]
    return out


def markdown_table(rows: Sequence[ParamRow]) -> str:
    """Ours beside the paper's #layers and #parameters (from :mod:`twostream_lib.paper`), as markdown;
    rows the paper gives no count for are left out."""
    printed = {(p.table, p.key): p for p in paper.ROWS if p.dataset == "ucf101" and p.params_m is not None}
    rows = [r for r in rows if (r.table, r.key) in printed]
    out = ["| Table | Row (paper) | Our model: fusion @ layer | #layers ours / paper | #params (M) ours | "
           "#params (M) paper | difference |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = printed[(r.table, r.key)]
        ours = f"{r.params_M:.2f}" + (f" + {r.extra_params / 1e6:.2f} (classifier)" if r.extra_params else "")
        theirs = f"{p.params_m:.2f}" + (" + SVM" if "SVM" in p.note else "")
        diff = 100 * (r.params_M - p.params_m) / p.params_m
        if r.method == "softmax":
            how = "softmax average (late), both towers"
        else:
            how = " + ".join(f"{m}@{l}" for m, l in zip(r.method.split(","), r.layer.split("+")))
            how += "" if r.truncate else ", both towers kept"
        out.append(f"| {r.table[-1]} | {p.label} | {how} | {r.layers} / {p.layers} | {ours} | {theirs} | "
                   f"{diff:+.2f}% |")
    return "\n".join(out) + "\n"
