"""twostream_lib: a thin PyTorch library reproducing Feichtenhofer, Pinz & Zisserman,
"Convolutional Two-Stream Network Fusion for Video Action Recognition", CVPR 2016.

Sub-packages: ``data`` (UCF101, HMDB51, synthetic set, frames and TV-L1 flow, sampling),
``models`` (backbones and every fusion of the paper), ``idt`` (hand-crafted features for
Table 6); modules ``train``, ``evaluate``, ``tables``, ``plots``, ``experiments``, ``paper``.
"""

__version__ = "0.1.0"
