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
# # Section 3 — The approach: fusing two streams in space and in time
#
# Feichtenhofer, Pinz, Zisserman, *Convolutional Two-Stream Network Fusion for Video Action
# Recognition*, CVPR 2016, Section 3 (Eqs. 1-6, Figs. 2-4).
#
# A two-stream network has a *spatial* tower that sees one RGB frame (appearance) and a *temporal*
# tower that sees a stack of optical flow (motion). The classic two-stream network averages the two
# towers' softmax outputs at the very end ("late fusion"). This section asks two questions:
#
# 1. **How and where should the towers be fused in space** (Sec. 3.1-3.2), so that the network can
#    tell *which* thing moves *how*: brushing teeth and brushing hair are the same motion at
#    different places?
# 2. **How should the fused maps be combined over time** (Sec. 3.3), so that the network sees how
#    the motion evolves over longer than one flow stack?
#
# This notebook states each fusion function, applies the library's own modules
# (`twostream_lib.models.fusion`, `twostream_lib.models.temporal`) to toy feature maps small enough to
# check by hand, counts their parameters at the paper's size, and then runs one real clip of the
# synthetic set through both trained towers of the profile to show why late fusion cannot tell which
# disc moved. The tables that follow (Tables 1-6) measure what this section predicts.
#
# **Regenerates:** nothing; it reuses the profile's trained towers (trained here if not cached yet).
#
# **Departures:** the toy maps have 2 channels on a 3x3 grid instead of 512 channels on 13x13; the
# real clip goes through the `demo` profile's small towers trained from scratch, not VGG-M on UCF101.

# %% tags=["parameters"]
profile: str = "demo"  # "demo" | "paper" | "smoke"
device: str = None  # "cpu" | "cuda" | "cuda:N"; None: the profile's (demo: cpu, paper: cuda)
dataset: str = None  # "synthetic" | "ucf101" | "hmdb51"; None: the profile's
synthetic_seed: int = None  # seed of the generated data set (synthetic only); None: the profile's
results_dir: str = None  # folder of tables, figures and runs; None: the profile's ("results")
video_index: int = 0  # which test video to show

# %%
from twostream_lib import experiments as ex  # noqa: I001  (first: it pins the CPU arithmetic before NumPy loads)

import pandas as pd
import torch
from IPython.display import Markdown
from torch import nn

from twostream_lib import plots
from twostream_lib.data.sampling import TwoStreamViews
from twostream_lib.experiments.registry import parameter_rows
from twostream_lib.models import Conv3dFusion, build_backbone, build_fusion, build_pool3d, count_parameters
from twostream_lib.models.params import markdown_table
from twostream_lib.models.temporal import from_5d, to_5d

cfg = ex.setup(profile, device=device, dataset=dataset, synthetic_seed=synthetic_seed, results_dir=results_dir)
torch.set_grad_enabled(False)  # illustrations only: nothing here is trained

# %% [markdown]
# ## 3.1 Spatial fusion: how to combine two maps at the same positions
#
# A fusion function $f: \mathbf{x}^a, \mathbf{x}^b \rightarrow \mathbf{y}$ takes the spatial tower's map
# $\mathbf{x}^a \in \mathbb{R}^{H \times W \times D}$ and the temporal tower's map
# $\mathbf{x}^b \in \mathbb{R}^{H \times W \times D}$ at the same layer, where $i, j$ index the position
# ($1 \le i \le H$, $1 \le j \le W$) and $d$ the channel ($1 \le d \le D$):
#
# | fusion | definition | output |
# |---|---|---|
# | sum (Eq. 1) | $y^{\text{sum}}_{i,j,d} = x^a_{i,j,d} + x^b_{i,j,d}$ | $H \times W \times D$ |
# | max (Eq. 2) | $y^{\max}_{i,j,d} = \max\{x^a_{i,j,d},\, x^b_{i,j,d}\}$ | $H \times W \times D$ |
# | concatenation (Eq. 3) | $y^{\text{cat}}_{i,j,2d} = x^a_{i,j,d}, \quad y^{\text{cat}}_{i,j,2d-1} = x^b_{i,j,d}$ | $H \times W \times 2D$ |
# | conv (Eq. 4) | $\mathbf{y}^{\text{conv}} = \mathbf{y}^{\text{cat}} * \mathbf{f} + b, \quad \mathbf{f} \in \mathbb{R}^{1 \times 1 \times 2D \times D},\ b \in \mathbb{R}^D$ | $H \times W \times D$ |
# | bilinear (Eq. 5) | $\mathbf{y}^{\text{bil}} = \sum_{i=1}^{H} \sum_{j=1}^{W} \mathbf{x}^{a\top}_{i,j}\, \mathbf{x}^b_{i,j}$ | $D^2$ (no positions) |
#
# Sum and max pair channel $d$ of one tower with channel $d$ of the other, an arbitrary
# correspondence that training has to make useful; concatenation defines none and leaves it to the next
# layer; conv fusion *learns* it with the filter $\mathbf{f}$ (and halves the channels again); bilinear
# fusion multiplies every channel of one tower with every channel of the other at each position and
# sums over the positions. The library stacks $[\mathbf{x}^a, \mathbf{x}^b]$ instead of interleaving
# them as Eq. 3 does (the released code's order): a fixed permutation of channels that the next layer
# absorbs (`twostream_lib/models/fusion.py`).
#
# **A toy clip.** Two discs on a 3x3 grid: the spatial tower has a "red" channel that fires at the
# top-left disc and a "blue" channel at the bottom-right one; the temporal tower has a "moves
# horizontally" channel and a "moves vertically" one. In one clip the blue disc moves horizontally, in
# the other the red one does; one frame looks the same in both.

# %% tags=["illustration"]
xa = torch.zeros(1, 2, 3, 3)  # [N, D, H, W]: the spatial tower's map
xa[0, 0, 0, 0] = 1.0  # channel 0, "red", at the top-left disc
xa[0, 1, 2, 2] = 1.0  # channel 1, "blue", at the bottom-right disc
xb = torch.zeros(1, 2, 3, 3)  # the temporal tower's map when the blue disc moves
xb[0, 0, 2, 2] = 1.0  # channel 0, "moves horizontally", at the bottom-right disc
xb_red = torch.zeros(1, 2, 3, 3)  # ... when the red disc moves instead
xb_red[0, 0, 0, 0] = 1.0
plots.show(plots.maps_figure({"x^a (spatial)": xa, "x^b (temporal): blue moves": xb,
                              "x^b (temporal): red moves": xb_red}))

# %% [markdown]
# Each fusion of Eqs. 1-5, built by the library (`build_fusion(method, D)`), applied to the clip in which
# the blue disc moves:

# %% tags=["illustration", "nbval-check-output"]
fusions = {m: build_fusion(m, 2) for m in ("sum", "max", "concat", "conv", "bilinear")}
fused = {m: f(xa, xb) for m, f in fusions.items()}
pd.DataFrame({"out_channels": [f.out_channels for f in fusions.values()],
              "output shape": [tuple(y.shape) for y in fused.values()],
              "parameters": [count_parameters(f)[0] for f in fusions.values()]},
             index=pd.Index(list(fusions), name="fusion"))

# %% tags=["illustration"]
plots.show(plots.maps_figure({m: fused[m] for m in ("sum", "max", "concat", "conv")}))

# %% [markdown]
# Sum and max put "red" and "moves horizontally" into the same channel 0, because the channels happen
# to have the same number; the position (bottom-right, where blue is) is what still tells them apart.
# Concatenation keeps all four channels. Conv fusion is initialised as $\mathbf{f} = [I\ I]$ (Sec. 3.5),
# i.e. it starts *as* sum fusion, and training then learns which channels belong together:

# %% tags=["illustration"]
g = torch.Generator().manual_seed(0)
ra, rb = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
print("conv fusion filter f, [out, in] (1x1):", fusions["conv"].conv.weight[:, :, 0, 0].tolist())
print("largest |conv - sum| on the toy maps:  ", float((fused["conv"] - fused["sum"]).abs().max()))
print("largest |conv - sum| on random maps:   ", float((fusions["conv"](ra, rb) - fusions["sum"](ra, rb)).abs().max()))

# %% [markdown]
# **Bilinear fusion** gives one number per pair of channels ($D^2$), each summed over all positions:
# here (red, horizontal), (red, vertical), (blue, horizontal), (blue, vertical), after the signed square
# root and L2 normalisation of [15]. It registers colour with motion (the product is taken at each
# position) and then discards *where*: moving every position of both maps to another place, with the
# same permutation, leaves it unchanged, while the sum-fused map moves with the positions.

# %% tags=["illustration"]
perm = torch.randperm(9, generator=g)
xa_moved, xb_moved = xa.flatten(2)[..., perm].reshape(xa.shape), xb.flatten(2)[..., perm].reshape(xb.shape)
print("bilinear y (red.H, red.V, blue.H, blue.V):", [round(v, 3) for v in fused["bilinear"][0].tolist()])
print("largest change of bilinear y when the positions are permuted:",
      float((fusions["bilinear"](xa_moved, xb_moved) - fused["bilinear"]).abs().max()))
print("largest change of the sum-fused map:                         ",
      float((fusions["sum"](xa_moved, xb_moved) - fused["sum"]).abs().max()))

# %% [markdown]
# **Why fusing late cannot tell which disc moved.** Late fusion lets each tower collapse its map
# first (pooling, fully connected layers, softmax) and only then averages the two predictions. What
# each tower keeps after pooling over positions is the same in both toy clips (a red and a blue disc;
# something moves horizontally), so any function of the two, the average of their softmax outputs
# included, gives the same answer for both. Fusion at a convolutional layer, or the bilinear product,
# meets the maps while they still have positions:

# %% tags=["illustration"]
pd.DataFrame({
    "spatial, pooled over positions": [xa.amax((2, 3))[0].tolist()] * 2,
    "temporal, pooled over positions": [xb.amax((2, 3))[0].tolist(), xb_red.amax((2, 3))[0].tolist()],
    "bilinear y (red.H, red.V, blue.H, blue.V)": [[round(v, 3) for v in fusions["bilinear"](xa, x)[0].tolist()]
                                                  for x in (xb, xb_red)],
    "sum-fused map equal to the other clip's": [bool(torch.equal(fusions["sum"](xa, xb), fusions["sum"](xa, xb_red)))] * 2,
}, index=["the blue disc moves", "the red disc moves"])

# %% [markdown]
# ## 3.2 Where to fuse, and what it costs: parameters at the paper's size
#
# Where a fusion layer goes also decides how many parameters the network has (Sec. 3.1-3.2, Tables 1
# and 2): fusing at ReLU5 into the spatial tower and truncating the temporal one above it keeps one
# set of fully connected layers instead of two. First the fusion layers themselves, for two
# VGG-M-2048 towers (the channel count $D$ at ReLU5 read off the library's VGG-M-2048), then every
# row of Table 1 counted on the real modules (built without memory on PyTorch's `meta` device,
# `twostream_lib.models.params`), beside the paper's counts:

# %% tags=["illustration", "nbval-check-output"]
with torch.device("meta"):
    vgg_m = build_backbone("vgg_m_2048")
    D = vgg_m.channels["relu5"]
    layers = {**{m: build_fusion(m, D) for m in ("sum", "max", "concat", "conv", "bilinear")},
              "3D conv (Eq. 6), 3x3x3": Conv3dFusion(D)}
pd.DataFrame({"D in": [D] * len(layers), "out channels": [f.out_channels for f in layers.values()],
              "parameters of the fusion layer": [count_parameters(f)[0] for f in layers.values()]},
             index=pd.Index(list(layers), name="fusion at ReLU5"))

# %% tags=["illustration", "nbval-check-output"]
Markdown(markdown_table(parameter_rows(ex.TABLES["table1"])))

# %% [markdown]
# Concatenation doubles the input of the first fully connected layer (fc6 takes $2D$ channels of
# $6 \times 6$ positions); conv fusion adds its $1 \times 1 \times 2D \times D$ filter to the sum-fusion
# network; bilinear fusion needs no fully connected layers at all but a $D^2$-dimensional descriptor
# and a classifier on it. The 3D conv fusion of Sec. 3.3 is the largest fusion layer, and the
# architecture of Sec. 3.4 keeps both towers (Table 4's rows, same size):

# %% tags=["illustration", "nbval-check-output"]
pd.DataFrame([{"row": r.key, "layers with weights": r.layers, "parameters (M)": round(r.params_M, 2)}
              for r in parameter_rows(ex.TABLES["table4"])]).set_index("row")

# %% [markdown]
# ## 3.3 Temporal fusion: what pooling over time keeps
#
# Stack the fused maps of $T$ samples, $\tau$ frames apart, into
# $\mathbf{x} \in \mathbb{R}^{H \times W \times T \times D}$ (Fig. 3):
#
# * **(a) 2D pooling**: pool each sample's map over $(x, y)$ on its own and average the $T$ predictions
#   (the classic two-stream network);
# * **(b) 3D pooling**: max-pool $\mathbf{x}$ within $W' \times H' \times T'$ cubes, never across channels;
# * **(c) 3D conv + 3D pooling**: first convolve with a bank of $D'$ filters
#   $\mathbf{f} \in \mathbb{R}^{W'' \times H'' \times T'' \times D \times D'}$ and biases $b$,
#
# $$\mathbf{y} = \mathbf{x}_t * \mathbf{f} + b, \tag{6}$$
#
#   then pool in 3D. The filter can weigh features at neighbouring times differently, e.g. "this
#   before that".
#
# **A toy clip over time.** $T = 5$ samples of the temporal map at one disc: a horizontal push at $t = 1$
# and a vertical one at $t = 3$ (the synthetic set's order classes), and the same clip reversed in time.
# Channel 0 is "moves horizontally", channel 1 "moves vertically"; each panel is channel × time at the
# disc.

# %% tags=["illustration"]
T = 5
h_then_v = torch.zeros(1, 2, T, 3, 3)  # [N, D, T, H, W]
h_then_v[0, 0, 1, 1, 1] = 1.0  # horizontal motion at t = 1
h_then_v[0, 1, 3, 1, 1] = 1.0  # vertical motion at t = 3
v_then_h = torch.flip(h_then_v, dims=(2,))  # the same clip, reversed in time
plots.show(plots.maps_figure({"H then V": h_then_v[0, :, :, 1, 1], "V then H": v_then_h[0, :, :, 1, 1]},
                             xlabel="time t", ylabel="channel"))

# %% [markdown]
# The library's 3D pooling comes in two presets (`twostream_lib/models/temporal.py`): the paper's text,
# $3 \times 3 \times 3$ cubes with stride 2 (with $T = 5$ this leaves two temporal positions, "early" and
# "late"), and the released code's, the tower's pool5 window in space and the whole clip in time. The 3D
# conv filter below is set by hand to detect "horizontal at $t - 1$ and vertical at $t + 1$" (training has
# to find such filters; the profile's own initialisation is printed at the end).

# %% tags=["illustration"]
pool3d_paper = build_pool3d("paper")
pool3d_released = build_pool3d("released", pool5=nn.MaxPool2d(3))
conv3d = Conv3dFusion(1, channels_b=2, out_channels=1, init="centre")  # stacks [x^a, x^b]: channels a, H, V
conv3d.conv.weight.zero_()
conv3d.conv.weight[0, 1, 0, 1, 1] = 1.0  # "moves horizontally" one sample before (tap t - 1)
conv3d.conv.weight[0, 2, 2, 1, 1] = 1.0  # "moves vertically" one sample after (tap t + 1)
appearance = torch.zeros(1, 1, T, 3, 3)  # x^a: no appearance channel in this toy
ways = {
    "(a) 2D pooling, averaged over T": lambda x: to_5d(nn.MaxPool2d(3)(from_5d(x)), 1).mean(2),  # per sample
    "(b) 3D pooling, paper (3x3x3, stride 2)": pool3d_paper,
    "(b) 3D pooling, released ([pool5, T])": pool3d_released,
    "(c) 3D conv 'H, then V' + 3D pooling, released": lambda x: pool3d_released(torch.relu(conv3d(appearance, x))),
}
outputs = {name: (way(h_then_v), way(v_then_h)) for name, way in ways.items()}
pd.DataFrame({"output shape [N, D, T', H', W']": [tuple(a.shape) for a, _ in outputs.values()],
              "H then V": [[round(v, 2) for v in a.flatten().tolist()] for a, _ in outputs.values()],
              "V then H": [[round(v, 2) for v in b.flatten().tolist()] for _, b in outputs.values()],
              "tells the order apart": [not torch.equal(a, b) for a, b in outputs.values()]},
             index=pd.Index(list(outputs), name="temporal fusion"))

# %% [markdown]
# Averaging over $T$ (2D pooling) and a max over the whole clip (the released 3D pooling) give the same
# numbers for both orders: a maximum or an average does not know which sample came first. The paper's
# $3 \times 3 \times 3$ pooling keeps a coarse order (what was in the early half, what in the late
# half), and a 3D convolution can look for one thing *before* another before anything is pooled. This
# is why the order classes of the synthetic set need 3D conv fusion (Table 4), and why the data card
# gives 3D pooling after 2D conv fusion the same ceiling as 2D fusion when the pooling spans the whole
# clip. The profile's choices:

# %% tags=["illustration"]
print(f"pool3d = {cfg.pool3d!r}, conv3d_init = {cfg.conv3d_init!r}, T = {cfg.T}, tau = {cfg.tau}")

# %% [markdown]
# ## One real clip through both trained towers
#
# Now the same question on real maps: one test video of the profile's data set through the trained
# spatial and temporal towers of its shallow backbone, their ReLU5 maps side by side (the layer the
# paper fuses at), and their predictions.

# %%
data = ex.prepare_data(cfg)
streams = ex.train_streams(cfg, data)

# %% tags=["illustration"]
split = data.split(cfg.split)
video = split.test[video_index]
sample = TwoStreamViews(data.store, (video,), ex.clip_sampling(cfg, T=1, train=False), mode="spread_flips",
                        crop=cfg.test_crop)[0]
rgb, flow = sample["rgb"][:1], sample["flow"][:1]  # one frame [1, 3, H, W] and its flow stack [1, 2L, H, W]
s5, t5 = streams.spatial(rgb, upto="relu5"), streams.temporal(flow, upto="relu5")
n = data.store.num_frames(video.name)
uv = data.store.read_flow(video.name, [max(n // 2 - 1, 0)])[0]
print(f"{video.name} ({video.class_name}): rgb {tuple(rgb.shape)}, flow {tuple(flow.shape)} -> "
      f"ReLU5 spatial {tuple(s5.shape)}, temporal {tuple(t5.shape)}")
plots.show(plots.figure1({"relu5": s5[0].numpy()}, {"relu5": t5[0].numpy()},
                         rgb=data.store.read_rgb(video.name, [n // 2])[0], flow_u=uv[..., 0], flow_v=uv[..., 1],
                         title=f"{video.name} ({video.class_name}): ReLU5, strongest channels"))

# %% [markdown]
# **What to look for.** The top row is the input: the frame, its horizontal (u) and vertical (v) flow
# in grey as stored (128 is no motion, so a displacement of a pixel or two is a faint shade), and the
# same flow in the colour-wheel coding (hue is the direction, saturation the speed, white is still;
# see the wheel). In a what-moves-where clip all four discs are in every frame: the spatial tower's
# ReLU5 channels respond at several places across the frame, none singled out by the motion, while the
# temporal tower's strongest channels respond at the one disc that moves. Summed over channels, the two
# maps and their product position by position (what a fusion at this layer can form, and late fusion
# cannot):

# %% tags=["illustration"]
plots.show(plots.maps_figure({"spatial ReLU5, sum over channels": s5[0].sum(0),
                              "temporal ReLU5, sum over channels": t5[0].sum(0),
                              "their product, position by position": s5[0].sum(0) * t5[0].sum(0)},
                             annotate=False, shared_scale=False))

# %% [markdown]
# Late fusion never forms such a product: each tower first turns its map into class probabilities,
# and those are averaged. The spatial tower sees four discs of four colours in every frame of a
# what-moves-where class, so it cannot prefer one colour; the temporal tower sees a disc move
# horizontally or vertically, but flow (computed on grey frames, where the equal-luminance discs look
# alike) carries no colour. Their average spreads over all the classes that share the motion:

# %% tags=["illustration"]
p_spatial = torch.softmax(streams.spatial(rgb), 1)[0].numpy()
p_temporal = torch.softmax(streams.temporal(flow), 1)[0].numpy()
plots.show(plots.probabilities_figure({"spatial": p_spatial, "temporal": p_temporal,
                                       "late fusion (average)": (p_spatial + p_temporal) / 2},
                                      split.classes, true_class=video.class_name,
                                      title=f"{video.name}: class probabilities of one frame and its flow stack"))

# %% [markdown]
# A direct test: mirror the spatial ReLU5 map left to right, which puts each colour where another disc
# was, and so changes which colour sits at the moving disc. The spatial tower's class scores, all that
# late fusion takes from it, change by the first number printed below; the sum-fused map (the input of
# the layers above a fusion at ReLU5) by the second. If the first is zero, the tower's pool5 is a max
# over every position (as in the `demo` backbones): after it, nothing knows where a colour was, so no
# average of predictions can know which disc moved. The tables measure what fusing at a convolutional
# layer gains from this (Table 1) and where to fuse (Table 2).

# %% tags=["illustration"]
mirrored = torch.flip(s5, dims=(-1,))
scores_change = streams.spatial.forward_from("relu5", mirrored) - streams.spatial.forward_from("relu5", s5)
fused_change = (mirrored + t5) - (s5 + t5)
print(f"largest change of the spatial tower's class scores: {float(scores_change.abs().max()):.4f}")
print(f"largest change of the sum-fused ReLU5 map:          {float(fused_change.abs().max()):.4f}")

# %% [markdown]
# ## Try it
#
# Re-run this notebook with papermill, e.g. `papermill notebooks/01_approach.ipynb out.ipynb -p video_index 90`:
#
# * `-p video_index N` (0 to the number of test videos minus one): pick a clip of another class family
#   (the test videos are listed class by class, in the order of the classes). For an appearance class (a static square), which tower
#   responds where? For an order class, what does one frame and one flow stack show?
# * `-p synthetic_seed 3`: another synthetic data set (trains its towers first, a few minutes). Do the
#   spatial probabilities still spread evenly over the four colours?
# * In the toy cells, change the conv fusion's initialisation (`build_fusion("conv", 2, init="released")`):
#   is it still equal to sum fusion, and what is it equal to?
# * In the temporal toy, move the vertical push to $t = 2$: which of the four temporal fusions still
#   tell the orders apart?
