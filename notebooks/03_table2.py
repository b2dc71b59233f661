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
# # Table 2 — Where to fuse the two streams (Section 4.3)
#
# Conv fusion (initialised to sum) after ReLU2, ReLU3, ReLU4 or ReLU5, truncating the temporal tower,
# and fusion at two or three layers keeping both towers (ReLU5 + FC8; ReLU3 + ReLU5 + FC6).
#
# **Regenerates:** `results/tables/table2.{csv,md}`.
#
# **Departures:** as in Table 1, the towers are frozen below the first fusion layer in the `demo`
# profile and the layers above it are trained on cached features.

# %% tags=["parameters"]
profile: str = "demo"  # "demo" | "paper" | "smoke"
device: str = "cpu"  # "cpu" | "cuda"
seeds: list = None  # training seeds of the fusion heads; None: the profile's value
epochs_fusion: int = None  # epochs of fusion training; None: the profile's value

# %%
from twostream_lib import experiments as ex

cfg = ex.setup(profile, device=device, seeds=seeds, epochs_fusion=epochs_fusion)
data = ex.prepare_data(cfg)
result = ex.run_table(cfg, data, "table2")

# %% tags=["nbval-check-output"]
result.show()

# %% tags=["nbval-check-output"]
result.show_findings()
