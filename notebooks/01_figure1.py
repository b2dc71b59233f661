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
# # Figure 1 — what the two streams see: conv1-conv3 activations
#
# Section 1, Figure 1 of the paper shows conv1-conv5 responses of the spatial (appearance) and
# temporal (motion) stream for one clip. Here: the strongest channels of relu1-relu3 of both
# trained streams of the profile's backbone, for one test clip.
#
# **Regenerates:** `results/figures/figure1.png`.
#
# **Departures:** the paper visualises the filters' responses of ImageNet-initialised VGG-M towers on
# UCF101; the `demo` profile shows small towers trained from scratch on the synthetic set.

# %% tags=["parameters"]
profile: str = "demo"  # "demo" | "paper" | "smoke"
device: str = "cpu"  # "cpu" | "cuda"
video_index: int = 0  # which test video to show

# %%
from twostream_lib import experiments as ex

cfg = ex.setup(profile, device=device)
data = ex.prepare_data(cfg)
streams = ex.train_streams(cfg, data)

# %% tags=["nbval-check-output"]
ex.stream_summary(cfg, data, streams)

# %%
ex.figure1(cfg, data, streams, video_index=video_index)
