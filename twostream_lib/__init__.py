"""twostream_lib: a thin PyTorch library reproducing Feichtenhofer, Pinz & Zisserman,
"Convolutional Two-Stream Network Fusion for Video Action Recognition", CVPR 2016.

Sub-packages: ``data`` (UCF101, HMDB51, synthetic set, frames and TV-L1 flow, sampling),
``models`` (backbones and every fusion of the paper), ``idt`` (hand-crafted features for
Table 6), ``experiments`` (what the notebooks run, one registry of the tables); modules ``train``
(the engine), ``evaluate``, ``features``, ``tables``, ``plots``, ``paper``, ``config`` (profiles),
``arithmetic`` (the pinned CPU arithmetic), ``files`` (atomic writes).
"""

__version__ = "0.1.0"

# The demo's numbers must be the same on every x86-64 machine: pin the CPU code paths of PyTorch, MKL,
# oneDNN, OpenBLAS, NumPy and OpenCV before any of them computes (see twostream_lib.arithmetic; values
# the user set are kept).
from twostream_lib.arithmetic import pin_environment as _pin_environment  # noqa: E402

_pin_environment()
