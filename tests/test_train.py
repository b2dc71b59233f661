"""Training engine: protocol, outputs, exact resume, worker independence, schedules, config checks.

The tiny model and data set defined here are reused by test_evaluate, test_features and test_ddp.
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.models import DenseColour, FrameAverage
from twostream_lib.train import GlobalBatchSampler, LRSchedule, TrainConfig, load_checkpoint, train

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- tiny stand-ins

class SignalClips(Dataset):
    """Random two-stream "clips" [T, C, S, S] whose class shifts one RGB and one flow channel.

    ``views`` > 1 makes consecutive samples views of one video (like TwoStreamViews). Augmentation
    noise and a horizontal flip are drawn per sample from (seed, epoch, index), as the contract asks.
    """

    def __init__(self, n: int = 24, classes: int = 3, *, T: int = 2, size: int = 6, seed: int = 0,
                 views: int = 1, augment: bool = True, strength: float = 2.0):
        g = torch.Generator().manual_seed(1000 + seed)
        self.n, self.classes, self.views, self.seed, self.augment = n, classes, views, seed, augment
        videos = (n + views - 1) // views
        self.labels = [(i // views) % classes for i in range(n)]
        self.rgb = torch.randn(videos, T, 3, size, size, generator=g)
        self.flow = torch.randn(videos, T, 4, size, size, generator=g)
        for v in range(videos):
            c = v % classes
            self.rgb[v, :, c % 3] += strength
            self.flow[v, :, c % 4] += strength
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        v = i // self.views
        rgb, flow = self.rgb[v].clone(), self.flow[v].clone()
        if self.augment:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + i)
            rgb += 0.3 * torch.randn(rgb.shape, generator=g)
            flow += 0.3 * torch.randn(flow.shape, generator=g)
            if torch.rand(1, generator=g).item() < 0.5:
                rgb, flow = rgb.flip(-1), flow.flip(-1)
        return {"rgb": rgb, "flow": flow, "label": self.labels[i], "video": f"v{v:03d}", "view": i % self.views}


class TinyTwoStream(nn.Module):
    """Two conv towers, conv fusion of the towers' maps, global pooling, dropout, linear classifier."""

    def __init__(self, classes: int = 3, dropout: float = 0.0, two_losses: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.rgb = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.flow = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.fuse = nn.Conv2d(8, 6, 1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(6, classes)
        self.fc_flow = nn.Linear(4, classes)
        self.two_losses = two_losses

    def fusion_inputs(self, rgb, flow):
        b, t = rgb.shape[:2]
        fa = self.rgb(rgb.flatten(0, 1))
        fb = self.flow(flow.flatten(0, 1))
        return fa.unflatten(0, (b, t)), fb.unflatten(0, (b, t))

    def head(self, fa, fb):
        b, t = fa.shape[:2]
        x = torch.relu(self.fuse(torch.cat([fa, fb], 2).flatten(0, 1)))
        logits = self.fc(self.drop(x.mean((2, 3)).unflatten(0, (b, t)).mean(1)))
        if not self.two_losses:
            return {"scores": logits, "logits": [logits]}
        flow_logits = self.fc_flow(fb.mean((3, 4)).mean(1))
        return {"scores": (logits + flow_logits) / 2, "logits": [logits, flow_logits]}

    def forward(self, rgb, flow):
        return self.head(*self.fusion_inputs(rgb, flow))


def small_cfg(tmp_path: Path | None = None, **kw) -> TrainConfig:
    base = dict(lr=0.3, batch_size=8, epochs=3, lr_schedule="constant", progress=False,
                out_dir=None if tmp_path is None else str(tmp_path))
    base.update(kw)
    return TrainConfig(**base)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rows_without_time(history):
    """Metric rows without the wall-clock column, NaN (no validation) as None so rows compare equal."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if k != "time"}
            for r in history]


# ----------------------------------------------------------------------------- tests

def test_train_learns_and_writes_config_metrics_checkpoint(tmp_path):
    model = TinyTwoStream(dropout=0.2)
    res = train(model, SignalClips(30), SignalClips(12, seed=1, views=2), small_cfg(tmp_path, epochs=4))
    assert res.model is model and res.out_dir == tmp_path
    losses = [r["train_loss"] for r in res.history]
    assert losses[-1] < losses[0] and res.history[-1]["train_acc"] > 0.6
    assert res.best_val == max(r["val_acc"] for r in res.history) and res.best_val > 0.5

    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["train"]["lr"] == 0.3 and cfg["train"]["input_keys"] == ["rgb", "flow"]
    assert cfg["run"]["world_size"] == 1 and cfg["run"]["train_samples"] == 30
    assert cfg["run"]["trainable_parameters"] == sum(p.numel() for p in model.parameters())

    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_acc", "time"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) == pytest.approx(losses[-1])

    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 4 and len(ckpt["history"]) == 4 and ckpt["config"]["batch_size"] == 8
    assert states_equal(ckpt["model"], model.state_dict())
    assert not list(tmp_path.glob("*.tmp"))
    # a finished run keeps its last, verified checkpoint and not the fallback before it
    assert sorted(p.name for p in tmp_path.glob("checkpoint*")) == ["checkpoint.pt", "checkpoint.pt.sha256"]


def test_one_step_equals_sgd_with_momentum_and_weight_decay_on_the_batch_mean():
    """Section 3.5 optimiser: w <- w - lr (grad of mean CE + wd w), momentum buffer = that gradient."""
    data = SignalClips(10, augment=False)
    model, ref = TinyTwoStream(), TinyTwoStream()
    batch = torch.utils.data.default_collate([data[i] for i in range(10)])
    out = ref(batch["rgb"], batch["flow"])["scores"]
    loss = nn.functional.cross_entropy(out, batch["label"])
    grads = torch.autograd.grad(loss, list(ref.parameters()), allow_unused=True)
    train(model, data, None, small_cfg(batch_size=10, epochs=1, lr=0.1, weight_decay=0.01, deterministic=False))
    for p, q, g in zip(model.parameters(), ref.parameters(), grads):
        expected = q if g is None else q - 0.1 * (g + 0.01 * q)  # unused (fc_flow): no update, no decay
        torch.testing.assert_close(p, expected, rtol=1e-5, atol=1e-6)


def test_losses_of_all_towers_are_summed():
    """Section 3.4: both towers' losses are kept; the loss is their sum (scores give the prediction)."""
    class Twice(TinyTwoStream):
        def head(self, fa, fb):
            out = super().head(fa, fb)
            return {"scores": out["scores"], "logits": out["logits"] * 2}

    data = SignalClips(12)
    one = train(TinyTwoStream(), data, None, small_cfg(batch_size=12, epochs=1))
    two = train(Twice(), data, None, small_cfg(batch_size=12, epochs=1))
    assert two.history[0]["train_loss"] == pytest.approx(2 * one.history[0]["train_loss"], rel=1e-6)


def _interrupt_after(k):
    def callback(row):
        if row["epoch"] == k:
            raise KeyboardInterrupt
    return callback


def test_interrupted_run_resumes_to_identical_weights_and_metrics(tmp_path):
    # dropout (global RNG), augmentation (set_epoch), momentum and a plateau schedule that reduces
    # the lr (patience 0) all have to carry over the interruption
    cfg = dict(epochs=5, lr_schedule="plateau", patience=0, max_reductions=3, stop_on_plateau=False)
    val = SignalClips(9, seed=3, views=3)
    full = train(TinyTwoStream(dropout=0.3), SignalClips(20), val, small_cfg(tmp_path / "full", **cfg))
    with pytest.raises(KeyboardInterrupt):
        train(TinyTwoStream(dropout=0.3), SignalClips(20), val, small_cfg(tmp_path / "cut", **cfg),
              on_epoch_end=_interrupt_after(2))
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    # a fresh model object (different init) must be overwritten by the checkpoint
    resumed = train(TinyTwoStream(dropout=0.3, seed=7), SignalClips(20), val, small_cfg(tmp_path / "cut", **cfg))
    assert states_equal(resumed.model.state_dict(), full.model.state_dict())
    assert rows_without_time(resumed.history) == rows_without_time(full.history)
    assert len({r["lr"] for r in full.history}) > 1, "the test should exercise an lr reduction"
    with open(tmp_path / "cut" / "metrics.csv") as f, open(tmp_path / "full" / "metrics.csv") as g:
        strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
        assert strip(csv.DictReader(f)) == strip(csv.DictReader(g))
    # calling again on a finished run trains nothing and returns the same weights
    again = train(TinyTwoStream(seed=9, dropout=0.3), SignalClips(20), val, small_cfg(tmp_path / "cut", **cfg))
    assert states_equal(again.model.state_dict(), full.model.state_dict())


def _train_then_sigkill(out: str, cfg: dict) -> None:
    def kill(row):
        if row["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: as if the machine died
    train(TinyTwoStream(dropout=0.3), SignalClips(20), None, small_cfg(out, **cfg), on_epoch_end=kill)


def test_killed_process_resumes_to_identical_weights(tmp_path):
    # a child forked while the parent's OpenMP pool has several threads can hang in its first parallel
    # region (an earlier test may have set 2 threads, as the demo profile does): fork from one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _killed_process_resumes(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _killed_process_resumes(tmp_path):
    cfg = dict(epochs=4)
    full = train(TinyTwoStream(dropout=0.3), SignalClips(20), None, small_cfg(tmp_path / "full", **cfg))
    # a forked child inherits the imported torch (a fresh interpreter would spend seconds importing)
    child = multiprocessing.get_context("fork").Process(target=_train_then_sigkill, args=(tmp_path / "cut", cfg))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    resumed = train(TinyTwoStream(dropout=0.3), SignalClips(20), None, small_cfg(tmp_path / "cut", **cfg))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert states_equal(resumed.model.state_dict(), full.model.state_dict())
    assert rows_without_time(resumed.history) == rows_without_time(full.history)


def test_results_do_not_depend_on_the_number_of_workers():
    runs = [train(TinyTwoStream(dropout=0.3), SignalClips(20), None, small_cfg(epochs=2, workers=w))
            for w in (0, 2)]
    assert states_equal(runs[0].model.state_dict(), runs[1].model.state_dict())
    assert rows_without_time(runs[0].history) == rows_without_time(runs[1].history)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (train(TinyTwoStream(dropout=0.3), SignalClips(16), None, small_cfg(epochs=1, seed=s)).model
               for s in (0, 0, 1))
    assert states_equal(a.state_dict(), b.state_dict())
    assert not states_equal(a.state_dict(), c.state_dict())


def test_only_trainable_parameters_change_and_others_are_frozen():
    model = TinyTwoStream()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = list(model.fuse.parameters()) + list(model.fc.parameters())
    train(model, SignalClips(16), None, small_cfg(epochs=1), trainable=head)
    for name, value in model.state_dict().items():
        changed = not torch.equal(value, before[name])
        assert changed == name.startswith(("fuse", "fc.")), name
    assert not any(p.requires_grad for p in model.rgb.parameters())
    with pytest.raises(ConfigError, match="not the model's"):
        train(model, SignalClips(16), None, small_cfg(epochs=1), trainable=[nn.Parameter(torch.zeros(1))])
    with pytest.raises(ConfigError, match="no trainable"):
        train(model, SignalClips(16), None, small_cfg(epochs=1), trainable=[])


def test_dropout_override_sets_every_dropout_module():
    model = TinyTwoStream(dropout=0.1)
    train(model, SignalClips(8), None, small_cfg(epochs=1, dropout=0.85))
    assert model.drop.p == 0.85


def test_single_stream_input_keys_and_frame_average():
    backbone = nn.Sequential(nn.Conv2d(4, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = FrameAverage(backbone)
    x = torch.randn(5, 2, 4, 6, 6)
    torch.testing.assert_close(model(x), (backbone(x[:, 0]) + backbone(x[:, 1])) / 2)
    res = train(model, SignalClips(16), None, small_cfg(epochs=3, input_keys=("flow",)))
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    with pytest.raises(DataError, match="no key 'depth'"):
        train(FrameAverage(backbone), SignalClips(16), None, small_cfg(epochs=1, input_keys=("depth",)))


def test_bf16_autocast_and_channels_last_run_on_cpu_when_asked():
    ref = train(TinyTwoStream(), SignalClips(16), None, small_cfg(epochs=2))
    res = train(TinyTwoStream(), SignalClips(16), None, small_cfg(epochs=2, amp="bf16", channels_last=True))
    assert res.model.rgb[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert math.isfinite(res.history[-1]["train_loss"])
    assert res.history[0]["train_loss"] == pytest.approx(ref.history[0]["train_loss"], rel=0.05)
    # "auto" is a no-op on the CPU: identical to amp="off"
    auto = train(TinyTwoStream(), SignalClips(16), None, small_cfg(epochs=2, amp="auto"))
    off = train(TinyTwoStream(), SignalClips(16), None, small_cfg(epochs=2, amp="off"))
    assert states_equal(auto.model.state_dict(), off.model.state_dict())


def test_plateau_schedule_reduces_by_ten_then_stops():
    s = LRSchedule(TrainConfig(lr=1e-3, patience=1, max_reductions=2, min_lr=1e-6))
    lrs = []
    for epoch, acc in enumerate([0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7], start=1):
        s.step(epoch, {"val_acc": acc})
        lrs.append(s.lr)
        if s.stopped:
            break
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-5, 1e-5, 1e-5])
    assert s.stopped and s.reductions == 2
    restored = LRSchedule(TrainConfig())
    restored.load_state_dict(s.state_dict())
    assert restored.state_dict() == s.state_dict()
    nan_ignored = LRSchedule(TrainConfig(patience=0))
    nan_ignored.step(1, {"val_acc": math.nan})
    assert nan_ignored.best is None and nan_ignored.lr == 1e-3
    loss = LRSchedule(TrainConfig(monitor="train_loss", patience=0))
    loss.step(1, {"train_loss": 1.0})
    loss.step(2, {"train_loss": 0.5})
    loss.step(3, {"train_loss": 0.7})
    assert loss.lr == pytest.approx(1e-4)
    step = LRSchedule(TrainConfig(lr_schedule="step", step_size=2, lr=1.0))
    for epoch in range(1, 5):
        step.step(epoch, {})
    assert step.lr == pytest.approx(0.01)
    cosine = LRSchedule(TrainConfig(lr_schedule="cosine", epochs=4, lr=1.0, min_lr=0.0))
    lrs = []
    for epoch in range(1, 5):
        cosine.step(epoch, {})
        lrs.append(cosine.lr)
    assert lrs == pytest.approx([0.8535534, 0.5, 0.1464466, 0.0])


def test_plateau_stops_training_early(tmp_path):
    res = train(TinyTwoStream(), SignalClips(8), None,
                small_cfg(epochs=20, lr=1e-9, lr_schedule="plateau", monitor="train_acc", patience=0,
                          max_reductions=1))
    assert res.stopped_early and len(res.history) < 20


def test_global_batch_sampler_shards_each_global_batch():
    one = GlobalBatchSampler(21, 8, seed=3, epoch=1)
    parts = [GlobalBatchSampler(21, 8, seed=3, epoch=1, rank=r, world_size=2) for r in range(2)]
    assert one.global_sizes == [8, 8, 5] and parts[0].global_sizes == [8, 8, 5]
    for k, batch in enumerate(one):
        assert parts[0].batches[k] + parts[1].batches[k] == batch
    assert sorted(i for b in one for i in b) == list(range(21))
    assert list(GlobalBatchSampler(21, 8, seed=3, epoch=2)) != list(one)
    assert GlobalBatchSampler(21, 8, seed=3, epoch=1, drop_last=True).global_sizes == [8, 8]
    assert GlobalBatchSampler(9, 8, seed=0, epoch=0, world_size=2).global_sizes == [8]  # 1 < 2 processes


def test_config_checks_and_resume_mismatch(tmp_path):
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ConfigError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="unknown keys \\['lrate'\\]"):
        TrainConfig.from_dict({"lrate": 0.1})
    assert TrainConfig.from_dict(TrainConfig(amp=True).to_dict()) == TrainConfig(amp="auto")
    with pytest.raises(ConfigError, match="needs val_set or val_fn"):
        train(TinyTwoStream(), SignalClips(8), None, small_cfg(lr_schedule="plateau"))
    train(TinyTwoStream(), SignalClips(8), None, small_cfg(tmp_path, epochs=1))
    with pytest.raises(ConfigError, match="lr=0.3"):
        train(TinyTwoStream(), SignalClips(8), None, small_cfg(tmp_path, epochs=2, lr=0.1))
    fresh = train(TinyTwoStream(), SignalClips(8), None, small_cfg(tmp_path, epochs=1, lr=0.1, resume=False))
    assert fresh.history[0]["lr"] == 0.1
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable checkpoint"):
        train(TinyTwoStream(), SignalClips(8), None, small_cfg(tmp_path, epochs=2, lr=0.1))


def test_val_fn_replaces_default_validation():
    seen = []

    def val_fn(model):
        seen.append(model.training)
        return 0.25

    res = train(TinyTwoStream(), SignalClips(8), None, small_cfg(epochs=2), val_fn=val_fn)
    assert seen == [False, False] and [r["val_acc"] for r in res.history] == [0.25, 0.25]
    assert res.best_val == 0.25 and res.best_epoch == 1


def test_frozen_batch_norm_keeps_its_statistics():
    class WithNorm(TinyTwoStream):
        def __init__(self):
            super().__init__()
            self.rgb = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())

    model = WithNorm()
    model.rgb.requires_grad_(False)
    before = model.rgb[1].running_mean.clone()
    train(model, SignalClips(8), None, small_cfg(epochs=1))
    assert torch.equal(model.rgb[1].running_mean, before)
    trainable = WithNorm()
    train(trainable, SignalClips(8), None, small_cfg(epochs=1))
    assert not torch.equal(trainable.rgb[1].running_mean, before)


# ----------------------------------------------------------------------------- integration with the real modules

def test_a_model_with_its_own_loss_trains_and_reports_no_accuracy():
    """The demo's appearance pre-training (DenseColour) returns {"loss": [B]}: the engine minimises it."""
    from twostream_lib.models import build_backbone

    class RGBClips(SignalClips):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["rgb"] = item["rgb"][:, :3].repeat(1, 1, 8, 8)  # [T, 3, 48, 48]
            return item

    torch.manual_seed(0)
    net = build_backbone("demo_shallow", in_channels=3, num_classes=3)
    model = DenseColour(net, net.feature_shapes(48)["relu5"][0])
    res = train(model, RGBClips(16), None, small_cfg(epochs=4, input_keys=("rgb",), lr=0.05))
    losses = [r["train_loss"] for r in res.history]
    assert losses[-1] < losses[0] and all(math.isnan(r["train_acc"]) for r in res.history)


TINY = {"synthetic_size": 48, "synthetic_frames": 16, "synthetic_groups": 3, "synthetic_clips": 1,
        "synthetic_classes": ["OrangeSquare", "Orbit", "RedHorizontal"], "T": 2, "crop": 48, "batch_size": 4,
        "epochs_stream": 2, "epochs_temporal": 2, "epochs_fusion": 2, "feature_epochs": 1,
        "appearance_pretrain_epochs": 1, "threads": 1}


def test_cli_trains_both_streams_then_conv_fusion_of_them_where_the_notebooks_find_them(tmp_path, capsys):
    """`python -m twostream_lib train` runs the notebooks' code: streams, then conv fusion at ReLU5 on
    them (towers frozen below the fusion layer, Section 3.5), in the run folders the notebooks read."""
    from twostream_lib import experiments as ex
    from twostream_lib.__main__ import main
    from twostream_lib.evaluate import load_scores

    settings = {**TINY, "data_root": str(tmp_path / "data"), "results_dir": str(tmp_path / "results")}
    common = ["--profile", "demo", *[a for k, v in settings.items() for a in ("-p", k, repr(v))]]
    for stream in ("spatial", "temporal"):
        assert main(["train", *common, "--stream", stream]) == 0
    exp = {"profile": "demo", "settings": settings, "row": "table1:conv@relu5", "seed": 1}
    (tmp_path / "fusion.json").write_text(json.dumps(exp))
    assert main(["train", "--config", str(tmp_path / "fusion.json")]) == 0
    assert "video accuracy" in capsys.readouterr().out

    cfg = ex.setup("demo", **settings)
    variant = {v.key: v for v in ex.TABLES["table1"].variants}["conv@relu5"]
    out = ex.fusion.fusion_dir(cfg, variant, 1, 1)
    summary = json.loads((out / "eval.json").read_text())
    assert summary["videos"] == 3 and summary["ci95"][0] <= summary["accuracy"] <= summary["ci95"][1]
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 1
    scores = load_scores(out / f"scores-{cfg.test_mode}.npz")
    assert scores.views.tolist() == [2, 2, 2]
    tower = ex.streams.stream_dir(cfg, "demo_shallow", "spatial", 1, 0)
    assert not list(tower.rglob("checkpoint*"))  # a tower keeps final.pt only
    spatial = torch.load(tower / "final.pt", weights_only=True)
    fused = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    below = [k for k in spatial if k.startswith("net.stages.relu")]
    above = [k for k in spatial if k.startswith("net.stages.fc6") and k.endswith("weight")]
    assert below and above
    for k in below:  # frozen: identical to the trained stream
        assert torch.equal(fused["model.spatial." + k[len("net."):]], spatial[k]), k
    assert not all(torch.equal(fused["model.spatial." + k[len("net."):]], spatial[k]) for k in above)
    # the notebooks' call finds the same trained head and its scores
    again, _ = ex.run_fusion(cfg, ex.prepare_data(cfg), variant, seed=1)
    np.testing.assert_array_equal(again.scores, scores.scores)


def test_a_fusion_head_reads_its_inputs_from_memory_from_disk_or_from_the_towers_alike(tmp_path):
    """feature_cache "memory", "disk" (memory-mapped shards beside the heads, float32 on the CPU) and "none"
    (the frozen towers run under every step) train the same head: one pass of one epoch, so the three see
    the same clips in the same order."""
    from twostream_lib import experiments as ex

    settings = {**TINY, "epochs_fusion": 1, "data_root": str(tmp_path / "data"), "seeds": [0]}
    variant = {v.key: v for v in ex.TABLES["table1"].variants}["conv@relu5"]
    scores = {}
    for mode in ("memory", "disk", "none"):
        cfg = ex.setup("demo", **settings, feature_cache=mode, results_dir=str(tmp_path / mode))
        ex.MEMO.clear()
        scores[mode] = ex.run_fusion(cfg, ex.prepare_data(cfg), variant)[0]
        caches = sorted(p.parent.name for p in (tmp_path / mode).rglob("features/*/meta.json"))
        # on disk, only the training clips: the test views are read once, through the towers (cosine schedule)
        assert [c.split("-features")[0] for c in caches] == (["train"] if mode == "disk" else [])
    for mode in ("disk", "none"):
        np.testing.assert_allclose(scores[mode].scores, scores["memory"].scores, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match=r"feature_cache='ram': expected one of \['disk', 'memory', 'none'\]"):
        ex.setup("demo", feature_cache="ram")


def test_heads_trained_side_by_side_equal_heads_trained_one_after_another(tmp_path, monkeypatch):
    """train_heads (the demo: two processes, one thread each, the maps computed here and sent along) gives
    the scores that run_fusion gives one head after another in this process, bit for bit; run_fusion
    then reads the saved scores instead of training again."""
    import shutil

    from twostream_lib import experiments as ex
    from twostream_lib.experiments import fusion

    settings = {**TINY, "data_root": str(tmp_path / "data"), "results_dir": str(tmp_path / "results"),
                "seeds": [0, 1], "threads": 2, "tower_threads": 1}
    rows = {v.key: v for v in ex.TABLES["table1"].variants}
    jobs = [(rows[key], 1, seed, None) for key in ("conv@relu5", "sum@relu5") for seed in (0, 1)]
    one = ex.setup("demo", **settings, tower_processes=1)
    data = ex.prepare_data(one)
    ex.MEMO.clear()
    fusion.train_heads(one, data, jobs)  # one process: nothing to do here, run_fusion trains
    assert not any(fusion.scores_path(one, *job).exists() for job in jobs)
    alone = [ex.run_fusion(one, data, v, split=k, seed=seed)[0] for v, k, seed, _ in jobs]
    shutil.rmtree(fusion.fusion_dir(one, rows["conv@relu5"], 1, 0).parent)  # the heads, not the towers
    two = ex.setup("demo", **settings, tower_processes=2)
    ex.MEMO.clear()
    fusion.train_heads(two, data, jobs)
    monkeypatch.setattr(fusion, "train", lambda *a, **k: pytest.fail("run_fusion trained a head again"))
    for (v, k, seed, _), expected in zip(jobs, alone):
        got = ex.run_fusion(two, data, v, split=k, seed=seed)[0]
        np.testing.assert_array_equal(got.scores, expected.scores)


def test_a_head_whose_scores_another_process_is_computing_is_waited_for_and_read(tmp_path, monkeypatch):
    """Tables 5 and 6 run side by side test the same heads: run_fusion waits for the head's lock (held
    meanwhile by the notebook computing its scores) and then reads the scores instead of computing them."""
    import threading

    from twostream_lib import experiments as ex
    from twostream_lib.evaluate import save_scores
    from twostream_lib.experiments import fusion
    from twostream_lib.files import exclusive

    cfg = ex.setup("demo", **TINY, data_root=str(tmp_path / "data"), results_dir=str(tmp_path / "results"),
                   seeds=[0], tower_processes=1)
    data = ex.prepare_data(cfg)
    variant = {v.key: v for v in ex.TABLES["table1"].variants}["sum@relu5"]
    expected = ex.run_fusion(cfg, data, variant)[0]  # trains the head and saves its scores
    path = fusion.scores_path(cfg, variant, 1, 0)
    path.unlink()  # as if they were being computed elsewhere
    monkeypatch.setattr(fusion, "train", lambda *a, **k: pytest.fail("run_fusion trained a head again"))
    monkeypatch.setattr(fusion, "predict", lambda *a, **k: pytest.fail("run_fusion tested the head again"))
    ready = threading.Event()

    def other_notebook():  # flock locks belong to open files: a thread stands in for the other process
        with exclusive(fusion.scores_lock(path)):
            ready.set()
            threading.Event().wait(1.0)
            save_scores(expected, path)

    worker = threading.Thread(target=other_notebook)
    worker.start()
    ready.wait(30)
    got = ex.run_fusion(cfg, data, variant)[0]
    worker.join(30)
    np.testing.assert_array_equal(got.scores, expected.scores)


def test_a_towers_test_scores_are_computed_once_for_every_notebook(tmp_path, monkeypatch):
    """stream_scores saves a tower's scores in the towers' run folder: a later kernel (empty memo) reads
    them instead of running the tower over the test views again; other views are computed anew."""
    from twostream_lib import experiments as ex
    from twostream_lib.experiments import streams

    cfg = ex.setup("demo", **TINY, data_root=str(tmp_path / "data"), results_dir=str(tmp_path / "results"), seeds=[0])
    data = ex.prepare_data(cfg)
    towers = ex.train_streams(cfg, data)
    first = ex.stream_scores(cfg, data, towers, "temporal")
    saved = sorted((tmp_path / "results").rglob("*-towers-*/split1/scores/*.npz"))
    assert len(saved) == 1
    ex.MEMO.clear()
    real = streams.predict
    monkeypatch.setattr(streams, "predict", lambda *a, **k: pytest.fail("the tower was tested again"))
    np.testing.assert_array_equal(ex.stream_scores(cfg, data, towers, "temporal").scores, first.scores)
    monkeypatch.setattr(streams, "predict", real)
    ex.stream_scores(cfg, data, towers, "temporal", mode="strided_flips", clips=2)
    assert len(list((tmp_path / "results").rglob("*-towers-*/split1/scores/*.npz"))) == 2


def test_completed_model_is_the_state_of_a_finished_training_only(tmp_path):
    from twostream_lib.train import completed_model

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    data = [{"x": torch.randn(4), "label": i % 2} for i in range(8)]
    assert completed_model(tmp_path / "checkpoint.pt", 2) is None  # nothing trained yet
    train(model, data, None, small_cfg(tmp_path, epochs=2, batch_size=4, input_keys=("x",)))
    state = completed_model(tmp_path / "checkpoint.pt", 2)
    assert state is not None and states_equal(state, model.state_dict())
    assert completed_model(tmp_path / "checkpoint.pt", 3) is None  # asked for more epochs than it ran


def test_training_does_not_depend_on_the_callers_gradient_mode():
    """A notebook that turned gradients off for its figures (torch.set_grad_enabled(False)) can still train."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    before = model.weight.detach().clone()
    data = [{"x": torch.randn(4), "label": i % 2} for i in range(8)]
    try:
        torch.set_grad_enabled(False)
        train(model, data, None, small_cfg(epochs=1, batch_size=4, input_keys=("x",)))
        assert not torch.is_grad_enabled()  # the caller's mode is given back
    finally:
        torch.set_grad_enabled(True)
    assert not torch.equal(model.weight, before)


def test_cli_rejects_bad_input_with_one_line(tmp_path, capsys):
    from twostream_lib.experiments.cli import cli_main

    cases = [
        (["--config", str(tmp_path / "missing.json")], "no such file"),
        (["--config", str(tmp_path / "bad.json")], "not valid JSON"),
        (["--config", str(tmp_path / "typo.json")], "unknown key(s) ['fusoin']"),
        (["-p", "epochs_fusion", "x", "--stream", "spatial"], "epochs_fusion='x': expected int"),
        (["-p", "nosuchparam", "1", "--stream", "spatial"], "unknown profile setting 'nosuchparam'"),
        (["--row", "table1:nosuchrow"], "is not a fusion row"),
        ([], "give exactly one of stream, row or fusion"),
    ]
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "typo.json").write_text(json.dumps({"fusoin": {"layers": ["relu3"]}}))
    for argv, message in cases:
        assert cli_main(["train", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, (argv, err)
    with pytest.raises(ConfigError, match="unknown key"):
        cli_main(["train", "--config", str(tmp_path / "typo.json"), "--debug"])


# ----------------------------------------------------------------------------- determinism helpers

def test_seed_everything_and_rng_state_round_trip(tmp_path):
    import random

    from twostream_lib.determinism import derive_seed, rng_state, seed_everything, set_rng_state

    seed_everything(5)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    after = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == after
    assert derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(1, 0)
    assert 0 <= derive_seed(2**40, 7) < 2**63


def test_deterministic_mode_does_not_fill_new_memory_and_trains_the_same_weights_as_with_the_fill(monkeypatch):
    """deterministic() leaves uninitialised memory unfilled (the NaN fill is a debugging aid that cost 14%
    of a fusion head's step) and restores the caller's setting; the weights are bit for bit those
    trained with the fill on (no kernel of the engine reads memory it has not written)."""
    from twostream_lib.determinism import deterministic
    from twostream_lib.models.temporal import Conv3dFusion

    flag = torch.utils.deterministic
    monkeypatch.setattr(flag, "fill_uninitialized_memory", True)
    with deterministic():
        assert flag.fill_uninitialized_memory is False
        with deterministic(fill_memory=True):
            assert torch.empty(64).isnan().all()
    assert flag.fill_uninitialized_memory is True

    class Head3d(nn.Module):  # the demo's costliest head: 3D conv fusion (its GEMM columns) on cached maps
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.fuse, self.fc = Conv3dFusion(4, init="gaussian"), nn.Linear(4, 3)

        def forward(self, fa, fb):
            x = self.fuse(fa.transpose(1, 2), fb.transpose(1, 2))  # [B, C, T, H, W]
            return {"scores": self.fc(x.mean((2, 3, 4))), "logits": [self.fc(x.mean((2, 3, 4)))]}

    class Maps(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"fa": torch.randn(3, 4, 5, 5, generator=g), "fb": torch.randn(3, 4, 5, 5, generator=g),
                    "label": i % 3, "video": f"v{i}", "view": 0}

    import twostream_lib.train as engine

    weights = {}
    for fill in (True, False):  # the engine's deterministic() told to fill, then as it is
        if fill:
            monkeypatch.setattr(engine, "deterministic", lambda enabled=True, **kw: deterministic(
                enabled, **kw, fill_memory=True))
        else:
            monkeypatch.setattr(engine, "deterministic", deterministic)
        model = Head3d()
        train(model, Maps(), None, small_cfg(epochs=2, batch_size=4, input_keys=("fa", "fb")))
        weights[fill] = model.state_dict()
    assert states_equal(weights[True], weights[False])


def test_deterministic_context_restores_and_set_threads():
    from twostream_lib.determinism import deterministic, set_threads, worker_init_fn

    before = torch.are_deterministic_algorithms_enabled()
    with deterministic(not before):
        assert torch.are_deterministic_algorithms_enabled() is (not before)
        assert torch.backends.cudnn.benchmark is before
    assert torch.are_deterministic_algorithms_enabled() is before
    threads = torch.get_num_threads()
    try:
        set_threads(2)
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        set_threads(threads)
    with pytest.raises(ConfigError, match="n must be"):
        set_threads(0)
    torch.manual_seed(11)
    worker_init_fn(0)
    a = np.random.rand()
    torch.manual_seed(11)
    worker_init_fn(0)
    assert np.random.rand() == a
