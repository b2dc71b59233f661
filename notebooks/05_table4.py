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
# # Table 4 — How to fuse the two streams temporally (Section 4.5)
#
# Both towers are kept ("ReLU5 +"): the temporal ReLU5 is fused into the spatial tower, then over
# T=5 samples tau frames apart either 2D pooling (each sample on its own, predictions averaged),
# 3D max pooling, or 3D conv fusion (3x3x3, initialised as identity x Gaussian) + 3D pooling; one
# loss per tower, both towers' predictions averaged at test (the architecture of Section 3.4).
#
# **Regenerates:** `results/tables/table4.{csv,md}`.
#
# **Departures:** spatial tower = the profile's deep backbone, temporal = its shallow one (VGG-16 and
# VGG-M in the paper). In the `demo` profile the towers are frozen below ReLU5 and features cached.

# %% tags=["parameters"]
profile: str = "demo"  # "demo" | "paper" | "smoke"
device: str = "cpu"  # "cpu" | "cuda"
seeds: list = None  # training seeds; None: the profile's value
epochs_fusion: int = None  # None: the profile's value

# %%
from twostream_lib import experiments as ex

cfg = ex.setup(profile, device=device, seeds=seeds, epochs_fusion=epochs_fusion)
data = ex.prepare_data(cfg)
result = ex.run_table(cfg, data, "table4")

# %% tags=["nbval-check-output"]
result.show()

# %% tags=["nbval-check-output"]
result.show_findings()
