"""Backbones, fusion functions and two-stream networks (Sections 3.1-3.5 of the paper).

``build_backbone`` / ``list_backbones``: VGG-M-2048, VGG-16 and the demo backbones with named fusion
points; ``build_fusion``: sum, max, concat, conv, bilinear, product (Eqs. 1-5); ``temporal``: 3D
pooling and 3D conv fusion (Section 3.3); ``TwoStreamNet``: fusion at any layer(s), late fusion, the
Section 3.4 architecture; ``FrameAverage``: a stream over the frames of a clip; ``matconvnet``: MatConvNet importer; ``params``: Tables 1-2 parameter counts.
"""
from .backbones import (CONV_LAYERS, FC_LAYERS, LAYERS, LRN, Backbone, build_backbone, inflate_conv1_to_flow,
                        list_backbones)
from .fusion import CONV_INITS, FUSION_METHODS, build_fusion, pad_to_match
from .matconvnet import load_matconvnet_into, load_twostream_matconvnet, read_matconvnet
from .single_stream import DenseColour, FrameAverage, WithAppearance
from .params import count_parameters, parameter_rows
from .temporal import (CONV3D_INITS, POOL3D_PRESETS, TEMPORAL_FUSIONS, Conv3dFusion, MaxPool3d, build_pool3d,
                       max_pool3d_by_slices)
from .twostream import (TRAINABLE_MODES, TwoStreamNet, build_two_stream, set_deterministic, to_device,
                        trainable_parameters)

__all__ = [
    "LAYERS", "CONV_LAYERS", "FC_LAYERS", "LRN", "Backbone", "build_backbone", "list_backbones",
    "inflate_conv1_to_flow", "FUSION_METHODS", "CONV_INITS", "build_fusion", "pad_to_match",
    "TEMPORAL_FUSIONS", "POOL3D_PRESETS", "CONV3D_INITS", "MaxPool3d", "Conv3dFusion", "build_pool3d",
    "max_pool3d_by_slices", "TwoStreamNet", "build_two_stream", "trainable_parameters", "TRAINABLE_MODES",
    "set_deterministic", "to_device", "read_matconvnet", "load_matconvnet_into", "load_twostream_matconvnet",
    "count_parameters", "parameter_rows", "FrameAverage", "DenseColour", "WithAppearance",
]
