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
dataset: str = None  # "synthetic" | "ucf101" | "hmdb51"; None: the profile's
synthetic_seed: int = None  # seed of the generated data set (synthetic only); None: the profile's
results_dir: str = None  # folder of tables, figures and runs; None: the profile's ("results")
split: int = 1  # official split (1, 2 or 3)

# %%
from IPython.display import Markdown, display

from twostream_lib import experiments as ex

cfg = ex.setup(profile, dataset=dataset, synthetic_seed=synthetic_seed, results_dir=results_dir, split=split)
data = ex.prepare_data(cfg)

# %% [markdown]
# Videos per class and split part, read from the split files (for UCF101 split 1: 9537 train and
# 3783 test videos; HMDB51: 3570 / 1530 per split).

# %% tags=["nbval-check-output"]
ex.split_summary(data)

# %% [markdown]
# One video: T=5 RGB frames spread over the video, and the horizontal (u) and vertical (v) TV-L1 flow
# at the same times, as stored (clipped at ±20 px and mapped to 0..255; grey 128 is no motion), and
# the same flow in the colour-wheel coding of the Middlebury benchmark (Baker et al., IJCV 2011): the
# hue is the direction of motion (see the wheel: red to the right, cyan to the left, yellow down,
# blue-violet up), the saturation its speed relative to the fastest pixel of the five frames (printed
# above the wheel), white is still.

# %%
ex.data_figure(cfg, data)

# %% [markdown]
# **What to look for.** In a synthetic what-moves-where video the four discs have different colours
# but the same luminance. The grey u/v rows hardly differ from 128: a displacement of a pixel or two
# is a faint shade. The colour row shows the motion at once: only one disc is coloured, its hue
# swinging between opposite directions as it oscillates, and the other discs are white, i.e. still.
# Nothing in the flow says which colour the moving disc has (flow is computed on grey frames, where
# the four discs look alike), and nothing in one frame says which disc moves: the class needs both,
# at the same place.

# %% [markdown]
# The data card written beside the data.

# %%
display(Markdown(ex.data_card(data)))
