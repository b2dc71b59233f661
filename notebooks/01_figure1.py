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
# trained streams of the profile's backbone, for one clip (a test clip, or any prepared clip named by
# the `clip` parameter), with the clip's frame and its optical flow as inputs.
#
# **Regenerates:** `results/figures/figure1.png`.
#
# **Departures:** the paper visualises the filters' responses of ImageNet-initialised VGG-M towers on
# UCF101; the `demo` profile shows small towers trained from scratch on the synthetic set.

# %% tags=["parameters"]
profile: str = "demo"  # "demo" | "paper" | "smoke"
device: str = None  # "cpu" | "cuda" | "cuda:N"; None: the profile's (demo: cpu, paper: cuda)
dataset: str = None  # "synthetic" | "ucf101" | "hmdb51"; None: the profile's
synthetic_seed: int = None  # seed of the generated data set (synthetic only); None: the profile's
results_dir: str = None  # folder of tables, figures and runs; None: the profile's ("results")
video_index: int = 0  # which test video to show (when clip is None)
clip: str = None  # name of any prepared video of the split, e.g. "v_RedVertical_g01_c01"; None: test video video_index

# %%
from twostream_lib import experiments as ex

cfg = ex.setup(profile, device=device, dataset=dataset, synthetic_seed=synthetic_seed,
               results_dir=results_dir)
data = ex.prepare_data(cfg)
streams = ex.train_streams(cfg, data)

# %% tags=["nbval-check-output"]
ex.stream_summary(cfg, data, streams)

# %% [markdown]
# The figure below (saved as `figure1.png`): the first row is the input, one RGB frame, its
# horizontal (u) and vertical (v) TV-L1 flow as stored (grey 128 is no motion), and the same flow in
# the colour-wheel coding of the Middlebury benchmark (Baker et al., IJCV 2011): the hue is the
# direction of motion (see the wheel: red to the right, cyan to the left, yellow down, blue-violet
# up), the saturation its speed, white is still. Then, for relu1-relu3, the six strongest channels
# of the spatial tower (first column: its input frame) above those of the temporal tower (first
# column: its flow).

# %%
ex.figure1(cfg, data, streams, video_index=video_index, clip=clip)

# %% [markdown]
# **What to look for.** In a what-moves-where clip (the default: the first test video) all four
# discs are in every frame, each in another colour, and one of them moves. The spatial tower's relu1
# responds at all four discs: it sees colour and edges wherever they are. The temporal tower's
# strongest relu1 channels fire only at the moving disc: flow is computed on grey frames, where the
# equal-luminance discs look alike, so it knows *where* something moves but not its colour. Higher
# up (relu2, relu3) the maps get coarser, and the temporal ones stay on the moving disc. Neither tower
# alone can say which colour moved; the answer is where the two maps overlap, which is why the paper
# fuses the towers while their maps still have positions (Section 3.1; notebook `01_approach`).
#
# ## Try it
#
# * `-p clip v_HorizontalThenVertical_g01_c01` (any name of the data set's `splits/` lists): the same
#   figure for another clip. In an order class, which flow frame shows motion, and do the temporal
#   channels fire anywhere in a frame at rest?
# * `-p clip v_OrangeSquare_g01_c01`: an appearance class. Does the spatial tower respond at the
#   square, and the temporal one at the square or at the moving disc?
# * `-p video_index 15` (with no clip): another test video of the split, in class order.
# * `-p synthetic_seed 3`: another synthetic data set (its towers are trained first). Do the same
#   channels play the same roles?
