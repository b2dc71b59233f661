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
# # Table 1 — How to fuse the two streams spatially (Section 4.2)
#
# Two towers of the profile's shallow backbone (VGG-M-2048 in the paper) are trained separately,
# then fused after the last convolutional layer (ReLU5) by sum, max, concatenation, conv (1x1,
# initialised as [I I]) or bilinear pooling, and compared with averaging the two towers' softmax
# outputs (late fusion, the baseline of Simonyan & Zisserman). Only the layers from the fusion on
# are trained (the paper back-propagates down to the injected fusion layer only).
#
# **Regenerates:** `results/tables/table1.{csv,md}`.
#
# **Departures:** the `demo` profile freezes both towers below the fusion layer and trains the fusion
# head on cached tower features (same model, same gradients, a fraction of the time). Bilinear fusion
# is classified by a linear layer instead of an SVM. Parameter counts are computed for the paper's own
# architecture (two VGG-M-2048 towers, 101 classes, 224x224) in every profile.

# %% tags=["parameters"]
profile: str = "demo"  # "demo" | "paper" | "smoke"
device: str = "cpu"  # "cpu" | "cuda"
seeds: list = None  # training seeds of the fusion heads; None: the profile's value
epochs_fusion: int = None  # epochs of fusion training; None: the profile's value

# %%
from twostream_lib import experiments as ex

cfg = ex.setup(profile, device=device, seeds=seeds, epochs_fusion=epochs_fusion)
data = ex.prepare_data(cfg)
result = ex.run_table(cfg, data, "table1")

# %% tags=["nbval-check-output"]
result.show()

# %% [markdown]
# The finding of Section 4.2, tested on our numbers (a difference counts only when it exceeds one
# standard error of the difference):

# %% tags=["nbval-check-output"]
result.show_findings()
