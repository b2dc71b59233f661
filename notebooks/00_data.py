# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Section 4.1 — Data: the data set, its frames and its optical flow
#
# Feichtenhofer, Pinz, Zisserman, *Convolutional Two-Stream Network Fusion for Video Action
# Recognition*, CVPR 2016, Section 4.1 (and the input pipeline of Sections 3.4-3.5).
#
# **Regenerates:** `results/figures/data_samples.png` and the data card of the data set in use.
#
# **Departures from the paper:** the `demo` profile replaces UCF101/HMDB51 by a synthetic data set
# generated on this machine, written as real videos in the UCF101 layout and split format and then
# prepared by the same frame and TV-L1 code as the real sets (with a faster TV-L1 setting). Its
# classes are built so that the paper's findings can be seen on a CPU in minutes: see the data card.

# %% tags=["parameters"]
profile: str = "demo"  # "demo" (synthetic, CPU) | "paper" (UCF101/HMDB51, GPU) | "smoke"
synthetic_seed: int = 0  # seed of the generated data set (demo profile only)
split: int = 1  # official split (1, 2 or 3)

# %%
from IPython.display import Markdown, display

from twostream_lib import experiments as ex

cfg = ex.setup(profile, synthetic_seed=synthetic_seed, split=split)
data = ex.prepare_data(cfg)

# %% [markdown]
# Videos per class and split part, read from the split files (for UCF101 split 1: 9537 train and
# 3783 test videos; HMDB51: 3570 / 1530 per split).

# %% tags=["nbval-check-output"]
ex.split_summary(data)

# %% [markdown]
# One video: T=5 RGB frames tau frames apart, and the horizontal (u) and vertical (v) TV-L1 flow at
# the same times, as stored (clipped at ±20 px and mapped to 0..255; grey 128 is no motion).

# %%
ex.data_figure(cfg, data)

# %% [markdown]
# The data card written beside the data.

# %%
display(Markdown(ex.data_card(data)))
