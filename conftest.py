"""Loaded by pytest before any test module: pin the CPU arithmetic (twostream_lib.arithmetic) before torch
computes anything, here and in the notebook kernels nbval starts (they inherit this environment)."""
from twostream_lib.arithmetic import pin_environment, use_pinned_kernels

pin_environment()
use_pinned_kernels()  # every test sees the demo's kernels, whichever test called setup("demo") first
