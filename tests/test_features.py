"""Feature caching: training the fusion head on cached tower outputs equals recomputing them."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from twostream_lib import features
from twostream_lib.errors import ConfigError, DataError
from twostream_lib.evaluate import predict
from twostream_lib.features import FEATURE_KEYS, FeatureHead, FeatureSet, cache_fusion_inputs
from twostream_lib.train import train

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import SignalClips, TinyTwoStream, small_cfg  # noqa: E402


def frozen_model(**kw) -> TinyTwoStream:
    model = TinyTwoStream(**kw)
    for tower in (model.rgb, model.flow):
        tower.requires_grad_(False)
    return model


def test_training_on_cached_features_equals_recomputing_the_towers(tmp_path):
    clips, views = SignalClips(20), SignalClips(9, seed=5, views=3, augment=False)
    cfg = small_cfg(epochs=3, lr_schedule="plateau", patience=0)
    direct = train(frozen_model(), clips, views, cfg)

    model = frozen_model()
    feats = cache_fusion_inputs(model, SignalClips(20), epochs=3, batch_size=7)
    test_feats = cache_fusion_inputs(model, views)
    assert feats.passes == 3 and len(feats) == 20 and feats.fa.shape[2:] == (2, 4, 6, 6)
    cached = train(FeatureHead(model), feats, test_feats, dataclasses.replace(cfg, input_keys=FEATURE_KEYS))

    for a, b in zip(cached.history, direct.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_acc"] == b["train_acc"] and a["val_acc"] == b["val_acc"] and a["lr"] == b["lr"]
    for name, value in direct.model.state_dict().items():  # equal up to rounding: the batches differ in size
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-3, atol=1e-4, msg=name)
    # the cached test views give the video scores of the full model
    s_full = predict(direct.model, views, batch_size=4)
    s_cached = predict(FeatureHead(model), test_feats, batch_size=4, input_keys=FEATURE_KEYS)
    assert s_cached.videos == s_full.videos and s_cached.views.tolist() == [3, 3, 3]
    np.testing.assert_allclose(s_cached.scores, s_full.scores, rtol=1e-4, atol=1e-5)


def test_passes_hold_the_epochs_augmentations_and_cycle():
    clips = SignalClips(6)
    feats = cache_fusion_inputs(frozen_model(), clips, epochs=2)
    model = frozen_model()
    for epoch in range(4):
        clips.set_epoch(epoch % 2)
        feats.set_epoch(epoch)
        x = clips[3]
        with torch.no_grad():
            fa, fb = model.fusion_inputs(x["rgb"][None], x["flow"][None])
        sample = feats[3]
        torch.testing.assert_close(sample["fa"], fa[0])
        torch.testing.assert_close(sample["fb"], fb[0])
        assert sample["label"] == x["label"] and sample["video"] == x["video"]
    assert not np.array_equal(feats.fa[0], feats.fa[1]), "the two passes should hold different augmentations"


def test_cache_file_is_reused_and_recomputed_when_the_model_changes(tmp_path, monkeypatch):
    model, clips = frozen_model(), SignalClips(6)
    path = tmp_path / "cache" / "train.npz"
    first = cache_fusion_inputs(model, clips, epochs=2, path=path, dtype="float16")
    assert path.is_file() and first.fa.dtype == np.float16 and not list(path.parent.glob("*.tmp"))
    calls = []
    real = features._compute
    monkeypatch.setattr(features, "_compute", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = cache_fusion_inputs(model, clips, epochs=2, path=path, dtype="float16")
    assert calls == [] and np.array_equal(again.fa, first.fa) and again.videos == first.videos
    with torch.no_grad():
        model.fuse.weight.add_(1.0)  # any weight change invalidates the cache
    cache_fusion_inputs(model, clips, epochs=2, path=path, dtype="float16")
    assert calls == [1]
    cache_fusion_inputs(model, clips, epochs=3, path=path, dtype="float16")
    assert calls == [1, 1]
    loaded = FeatureSet.load(path)
    assert loaded.passes == 3 and loaded.nbytes() == loaded.fa.nbytes + loaded.fb.nbytes


def test_cache_refuses_trainable_towers_and_models_without_fusion_inputs(tmp_path):
    with pytest.raises(ConfigError, match="frozen"):
        cache_fusion_inputs(TinyTwoStream(), SignalClips(4))
    with pytest.raises(ConfigError, match="fusion_inputs"):
        cache_fusion_inputs(torch.nn.Linear(2, 2), SignalClips(4))
    with pytest.raises(ConfigError, match="head"):
        FeatureHead(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="dtype"):
        cache_fusion_inputs(frozen_model(), SignalClips(4), dtype="int8")
    (tmp_path / "x.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="x.npz"):
        FeatureSet.load(tmp_path / "x.npz")
    with pytest.raises(DataError, match=r"\[K, 3, ...\]"):
        FeatureSet(np.zeros((1, 2, 4)), np.zeros((1, 2, 4)), np.zeros(3), ["a", "b", "c"], np.zeros(3))


def test_cached_fusion_of_the_library_two_stream_net_equals_recomputing(tmp_path, tiny_synthetic):
    """TwoStreamNet (demo towers with batch norm, frozen below ReLU5) on synthetic clips: the cached
    run's losses, accuracies and weights match the uncached run's."""
    from twostream_lib.data.sampling import ClipSampling, TwoStreamClips, TwoStreamViews
    from twostream_lib.data.splits import load_split
    from twostream_lib.data.stores import open_store
    from twostream_lib.models.twostream import build_two_stream, trainable_parameters

    ds = tiny_synthetic
    split, store = load_split("synthetic", ds.split_dir, 1), open_store(ds.frames_root)
    sampling = ClipSampling(T=2, L=10, tau=(1, 3), size=48, crop="jitter")

    def model():
        torch.manual_seed(0)
        net = build_two_stream(backbone="demo_shallow", num_classes=len(split.classes), dropout=0.0,
                               fusion="conv", layers=("relu5",))
        trainable_parameters(net)  # Section 3.5: freeze the towers below the fusion layer
        return net

    clips = TwoStreamClips(store, split.train, sampling, train=True, seed=3)
    views = TwoStreamViews(store, split.test, sampling, mode="spread_flips")
    cfg = small_cfg(epochs=2, batch_size=4, lr=0.01)
    direct = train(model(), clips, views, cfg)
    net = model()
    feats = cache_fusion_inputs(net, clips, epochs=2, batch_size=3)
    cached = train(FeatureHead(net), feats, cache_fusion_inputs(net, views),
                   dataclasses.replace(cfg, input_keys=FEATURE_KEYS))
    for a, b in zip(cached.history, direct.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["train_acc"] == b["train_acc"] and a["val_acc"] == b["val_acc"]
    for name, value in direct.model.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value, rtol=1e-3, atol=1e-5, msg=name)
