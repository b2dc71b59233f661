"""Training schedules: the authors' released ones (paper.RELEASED_SCHEDULES) in the `paper` profile, the
plateau rule of the paper's text, the demo's cosine; biases at twice the rate without weight decay; the
released back-propagation depth. The expected vectors are written out by hand from the MatConvNet scripts
(github.com/feichtenhofer/twostreamfusion), not read from the library."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau
from torch.utils.data import Dataset

from twostream_lib import paper
from twostream_lib.config import PROFILES, load_profile
from twostream_lib.errors import ConfigError
from twostream_lib.experiments.streams import train_config
from twostream_lib.models import FrameAverage, build_backbone
from twostream_lib.train import LRSchedule, TrainConfig, _params_below, load_checkpoint, train

# cnn_ucf101_spatial.m, vgg16 branch:
#   opts.train.learningRate = [1e-3*ones(1, 3) 5e-4*ones(1, 5) 5e-5*ones(1,2) 5e-6*ones(1,2)];
#   opts.train.backpropDepth = cell(1, 3); (:) = {'layer37'}; opts.train.batchSize = 128; epochFactor = 10
# cnn_ucf101_spatial.m, defaults (VGG-M-2048):
#   [1e-2*ones(1, 2) 1e-2*ones(1, 3) 1e-3*ones(1, 3) 1e-4*ones(1, 3)]; backpropDepth cell(1, 2) 'pool5'; 256
# cnn_ucf101_temporal.m, vgg16 branch: [5e-4*ones(1, 10) 5e-5*ones(1,5) 5e-6*ones(1,1)]; 128; epochFactor 100
# cnn_ucf101_temporal.m, defaults: [1e-2*ones(1,1) 1e-3*ones(1, 1) 1e-4*ones(1,1) 1e-5*ones(1,1)]; 128; 100
# cnn_ucf101_fusion.m: 1*[1e-3*ones(1,2) 1e-4*ones(1,1) 1e-5*ones(1,1) 1e-6*ones(1,1)]; batchSize 96; epochFactor 10
RELEASED = {
    ("spatial", "vgg16"): ([1e-3] * 3 + [5e-4] * 5 + [5e-5] * 2 + [5e-6] * 2, 10, 128, "fc8", 3),
    ("spatial", "vgg_m_2048"): ([1e-2] * 5 + [1e-3] * 3 + [1e-4] * 3, 10, 256, "fc6", 2),
    ("temporal", "vgg16"): ([5e-4] * 10 + [5e-5] * 5 + [5e-6], 100, 128, None, 0),
    ("temporal", "vgg_m_2048"): ([1e-2, 1e-3, 1e-4, 1e-5], 100, 128, None, 0),
    ("fusion", None): ([1e-3, 1e-3, 1e-4, 1e-5, 1e-6], 10, 96, None, 0),
}


def _rates(cfg: TrainConfig, epochs: int, optimizer=None) -> list[float]:
    """The rate of each epoch 0..epochs-1 as the engine's schedule sets it."""
    s = LRSchedule(cfg, optimizer)
    out = []
    for e in range(epochs):
        out.append(s.lr)
        s.step(e + 1, {})
    return out


@pytest.mark.parametrize("stage,backbone", list(RELEASED))
def test_paper_profile_trains_with_the_released_vectors(stage, backbone):
    lrs, passes, batch, below, below_epochs = RELEASED[stage, backbone]
    table = paper.released_schedule(stage, backbone)
    assert (list(table.lrs), table.passes, table.batch_size) == (lrs, passes, batch)
    assert (table.backprop_from, table.backprop_epochs) == (below, below_epochs)

    # paper.py feeds the profile: its TrainConfig follows the table pass by pass
    cfg = train_config(PROFILES["paper"], stage=stage, backbone=backbone, seed=0, input_keys=("rgb",))
    assert (cfg.lr_schedule, cfg.epochs, cfg.batch_size) == ("table", len(lrs) * passes, batch)
    assert (cfg.backprop_from, cfg.backprop_epochs) == (below, below_epochs * passes)
    assert (cfg.bias_lr_factor, cfg.bias_decay, cfg.warmup_epochs) == (2.0, False, 0)
    rates = _rates(cfg, cfg.epochs + passes)  # one released "epoch" beyond the table: the last rate holds
    assert rates == [lrs[min(p // passes, len(lrs) - 1)] for p in range(cfg.epochs + passes)]
    # chosen passes, by hand: first and last pass of the first "epoch", first pass of the second
    assert (rates[0], rates[passes - 1], rates[passes]) == (lrs[0], lrs[0], lrs[1])


def test_released_hmdb51_spatial_rates_and_one_source_for_the_numbers():
    # cnn_ucf101_spatial.m: if strcmp(opts.dataSet, 'hmdb51'): [1e-2*ones(1, 2) 1e-2*ones(1, 1) 1e-3 1e-4]
    assert list(paper.released_schedule("spatial", "vgg_m_2048", "hmdb51").lrs) == [1e-2] * 3 + [1e-3, 1e-4]
    # ... set before the vgg16 branch, which overrides it for VGG-16
    assert paper.released_schedule("spatial", "vgg16", "hmdb51") == paper.released_schedule("spatial", "vgg16")
    hp, fusion, demo = paper.HYPERPARAMETERS, paper.RELEASED_SCHEDULES["fusion"], PROFILES["demo"]
    assert (hp["lr"], hp["batch_size"]) == (fusion.lrs[0], fusion.batch_size)  # Sec. 3.5 = cnn_ucf101_fusion.m
    assert (PROFILES["paper"].bias_lr_factor, PROFILES["paper"].bias_decay) == (hp["bias_lr_factor"],
                                                                                 hp["bias_decay"]) == (2.0, False)
    assert PROFILES["paper"].schedule == "released" and (demo.bias_lr_factor, demo.bias_decay) == (1.0, True)
    assert PROFILES["paper"].lr_stream is None and PROFILES["paper"].epochs_stream is None  # from the tables


def test_profile_caps_and_scales_a_released_table():
    capped = train_config(load_profile("paper", epochs_stream=35), stage="spatial", backbone="vgg16", seed=0,
                          input_keys=("rgb",))
    assert capped.epochs == 35 and _rates(capped, 35)[29:31] == [1e-3, 5e-4]  # 4th "epoch" from pass 31
    scaled = train_config(load_profile("paper", lr_stream=2e-3), stage="spatial", backbone="vgg16", seed=0,
                          input_keys=("rgb",))
    assert scaled.lr_table == pytest.approx([2 * r for r in RELEASED["spatial", "vgg16"][0]], rel=1e-12)
    temporal = train_config(load_profile("paper", epochs_stream=7), stage="temporal", backbone="vgg16", seed=0,
                            input_keys=("flow",))
    assert temporal.epochs == 7  # epochs_temporal None: epochs_stream


def test_the_demo_keeps_its_cosine_schedule():
    demo = PROFILES["demo"]
    assert demo.schedule == "cosine"
    for stage, lr, epochs in (("spatial", 0.05, 15), ("temporal", 0.05, 30), ("fusion", 0.02, 30)):
        cfg = train_config(demo, "out", stage=stage, backbone="demo_shallow", seed=0, input_keys=("rgb",))
        assert (cfg.lr_schedule, cfg.lr, cfg.epochs, cfg.warmup_epochs, cfg.batch_size) == ("cosine", lr, epochs, 2, 32)
        assert (cfg.bias_lr_factor, cfg.bias_decay, cfg.backprop_from, cfg.checkpoint_every) == \
               (1.0, True, None, epochs // 4)
    # the closed form the demo has always used (its digests in test_golden.py hold the bytes)
    cfg = train_config(demo, "out", stage="fusion", seed=0, input_keys=("fa", "fb"))
    cosine = [1e-6 + (0.02 - 1e-6) * 0.5 * (1 + math.cos(math.pi * (e / 30))) for e in range(1, 30)]
    expected = [0.02 * (1 / 3)] + [r * min(1.0, (e + 1) / 3) for e, r in enumerate(cosine, start=1)]
    assert _rates(cfg, 30) == expected
    assert isinstance(LRSchedule(cfg).torch, LambdaLR)


def test_plateau_is_torch_reduce_on_plateau_tenfold_after_a_stall_biases_included():
    model = nn.Linear(3, 2)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr_factor": 2.0, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=1.0, momentum=0.9, weight_decay=5e-4)
    s = LRSchedule(TrainConfig(lr=1e-3, patience=1, max_reductions=2), opt)
    assert isinstance(s.torch, ReduceLROnPlateau)
    seen = []
    for epoch, acc in enumerate([0.5, 0.6, 0.6, 0.6], start=1):  # two epochs without improvement > patience 1
        s.step(epoch, {"val_acc": acc})
        seen.append([g["lr"] for g in opt.param_groups])
    assert seen[2] == [1e-3, 2e-3] and seen[3] == pytest.approx([1e-4, 2e-4], rel=1e-12) and s.reductions == 1
    assert s.lr == pytest.approx(1e-4, rel=1e-12)
    fresh = [{**g, "params": [torch.zeros(1, requires_grad=True)]} for g in groups]
    restored = LRSchedule(TrainConfig(lr=1e-3, patience=1, max_reductions=2), torch.optim.SGD(fresh, lr=1.0))
    restored.load_state_dict(s.state_dict())
    assert restored.lr == s.lr and restored.best == 0.6 and restored.state_dict() == s.state_dict()
    # the plain state written before the schedules ran on torch.optim.lr_scheduler still resumes
    old = LRSchedule(TrainConfig(lr=1e-3, patience=1))
    old.load_state_dict({"lr": 1e-4, "best": 0.6, "bad_epochs": 1, "reductions": 1, "stopped": False})
    old.step(5, {"val_acc": 0.6})
    assert old.lr == pytest.approx(1e-5, rel=1e-12) and old.reductions == 2


def test_the_plateau_profile_validates_once_per_released_epoch_and_says_why_it_needs_validation():
    cfg = train_config(load_profile("paper", schedule="plateau"), stage="temporal", backbone="vgg16", seed=0,
                       input_keys=("flow",))
    assert (cfg.lr_schedule, cfg.lr, cfg.batch_size, cfg.val_every, cfg.epochs) == ("plateau", 5e-4, 128, 100, 1600)
    with pytest.raises(ConfigError, match="needs val_set or val_fn.*validation accuracy.*'table', 'step'"):
        train(Linear(), Points(), None, dataclasses.replace(cfg, device="cpu", amp="off", workers=0))


def test_unknown_schedule_names_name_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"schedule='step': expected one of \['released', 'plateau', 'cosine'\]"):
        load_profile("paper", schedule="step")
    with pytest.raises(ConfigError, match=r"lr_schedule='linear'.*'plateau', 'table', 'step', 'cosine', 'constant'"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ConfigError, match="lr_table=()"):
        TrainConfig(lr_schedule="table")
    with pytest.raises(ConfigError, match=r"unknown stage 'head'; expected one of \['spatial', 'temporal', 'fusion'"):
        train_config(PROFILES["paper"], stage="head", seed=0, input_keys=("rgb",))
    with pytest.raises(ConfigError, match=r"no 'demo_deep' spatial stream.*\['vgg16', 'vgg_m_2048'\].*cosine"):
        train_config(load_profile("demo", schedule="released"), stage="spatial", backbone="demo_deep", seed=0,
                     input_keys=("rgb",))
    with pytest.raises(ConfigError, match="schedule='cosine' needs the spatial run's learning rate and epochs"):
        train_config(load_profile("paper", schedule="cosine"), stage="spatial", backbone="vgg16", seed=0,
                     input_keys=("rgb",))


# ----------------------------------------------------------------------------- the engine

class Points(Dataset):
    """Fixed points in 4-D, two classes."""

    def __init__(self, n: int = 16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "label": int(self.y[i]), "video": f"v{i}", "view": 0}


class Linear(nn.Module):
    """below (4 -> 5) -> top (5 -> 2): a two-layer feed-forward stack."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.below = nn.Linear(4, 5)
        self.top = nn.Linear(5, 2)

    def forward(self, x):
        return self.top(torch.relu(self.below(x)))


def _cfg(tmp_path=None, **kw) -> TrainConfig:
    base = {"lr": 0.1, "batch_size": 16, "epochs": 1, "lr_schedule": "constant", "momentum": 0.0, "weight_decay": 0.01,
            "input_keys": ("x",), "progress": False, "out_dir": None if tmp_path is None else str(tmp_path)}
    return TrainConfig(**{**base, **kw})


def test_biases_learn_at_twice_the_rate_without_weight_decay(tmp_path):
    data, model, ref = Points(), Linear(), Linear()
    batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    loss = nn.functional.cross_entropy(ref(batch["x"]), batch["label"])
    grads = dict(zip([n for n, _ in ref.named_parameters()], torch.autograd.grad(loss, list(ref.parameters()))))
    train(model, data, None, _cfg(tmp_path, bias_lr_factor=2.0, bias_decay=False))
    for name, p in model.named_parameters():
        q, g = dict(ref.named_parameters())[name], grads[name]
        expected = q - 0.2 * g if name.endswith("bias") else q - 0.1 * (g + 0.01 * q)
        torch.testing.assert_close(p, expected, rtol=1e-5, atol=1e-7)
    groups = load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"]
    assert [(g["lr"], g["weight_decay"], g.get("lr_factor", 1.0), len(g["params"])) for g in groups] == \
           [(0.1, 0.01, 1.0, 2), (0.2, 0.0, 2.0, 2)]


def test_backprop_from_freezes_the_layers_below_for_the_first_epochs_then_resumes_exactly(tmp_path):
    cfg = {"epochs": 3, "lr_schedule": "table", "lr_table": (0.1, 0.05), "lr_table_epochs": 2, "backprop_from": "top",
           "backprop_epochs": 2, "bias_lr_factor": 2.0, "bias_decay": False, "batch_size": 4, "momentum": 0.9}
    start = Linear().state_dict()
    seen = []
    model = Linear()
    res = train(model, Points(), None, _cfg(**cfg),
                on_epoch_end=lambda row: seen.append({k: v.clone() for k, v in model.state_dict().items()}))
    assert [r["lr"] for r in res.history] == [0.1, 0.1, 0.05]
    for epoch in (0, 1):  # released backpropDepth: only `top` learns in the first backprop_epochs
        assert torch.equal(seen[epoch]["below.weight"], start["below.weight"])
        assert not torch.equal(seen[epoch]["top.weight"], start["top.weight"])
    assert not torch.equal(seen[2]["below.weight"], start["below.weight"])
    assert all(p.requires_grad for p in model.parameters())
    # interrupted inside the frozen phase and resumed: the same bytes as the uninterrupted run
    def stop_after_first(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(Linear(), Points(), None, _cfg(tmp_path, **cfg), on_epoch_end=stop_after_first)
    assert all(p.requires_grad for p in model.parameters())
    resumed = train(Linear(), Points(), None, _cfg(tmp_path, **cfg))
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match=r"backprop_from='fc9'.*components \['below', 'top'\]"):
        train(Linear(), Points(), None, _cfg(**{**cfg, "backprop_from": "fc9"}))


def test_released_backprop_depth_in_our_layer_names():
    """layer37 of the released VGG-16 spatial net is the dropout before fc8: only fc8 trains; VGG-M's
    'pool5' stops below fc6 (our stage fc6 starts with pool5)."""
    with torch.device("meta"):
        vgg16 = FrameAverage(build_backbone("vgg16", num_classes=101))
        vgg_m = FrameAverage(build_backbone("vgg_m_2048", num_classes=101))
    for net, layer in ((vgg16, "fc8"), (vgg_m, "fc6")):
        params = list(net.parameters())
        frozen = {id(p) for p in _params_below(net, params, layer)}
        training = [n.split(".")[-2] for n, p in net.named_parameters() if id(p) not in frozen]
        assert training == {"fc8": ["fc8", "fc8"], "fc6": ["fc6", "fc6", "fc7", "fc7", "fc8", "fc8"]}[layer]
    assert paper.released_schedule("spatial", "vgg16").backprop_from == "fc8"
    assert paper.released_schedule("spatial", "vgg_m_2048").backprop_from == "fc6"
