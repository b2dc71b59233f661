"""Feature caching: training the fusion head on cached tower outputs equals recomputing them."""
from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from twostream_lib import features
from twostream_lib.errors import ConfigError, DataError, StorageError
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


def test_cache_folder_is_reused_extended_and_recomputed_when_the_model_changes(tmp_path, monkeypatch):
    model, clips = frozen_model(), SignalClips(6)
    path = tmp_path / "cache" / "train"
    first = cache_fusion_inputs(model, clips, epochs=2, path=path, dtype="float16")
    assert path.is_dir() and first.fa.dtype == np.float16 and isinstance(first.fa, np.memmap)
    assert sorted(f.name for f in path.iterdir()) == ["fa.bin", "fb.bin", "index.npz", "meta.json"]
    calls = []
    real = features._compute
    monkeypatch.setattr(features, "_compute", lambda *a, **k: calls.append(k.get("start")) or real(*a, **k))
    again = cache_fusion_inputs(model, clips, epochs=2, path=path, dtype="float16")
    assert calls == [] and np.array_equal(again.fa, first.fa) and again.videos == first.videos
    assert cache_fusion_inputs(model, clips, epochs=1, path=path, dtype="float16").passes == 1  # a prefix: no work
    cache_fusion_inputs(model, clips, epochs=3, path=path, dtype="float16")
    assert calls == [2]  # more passes: only the new one is computed
    with torch.no_grad():
        model.fuse.weight.add_(1.0)  # any weight change invalidates the cache
    cache_fusion_inputs(model, clips, epochs=2, path=path, dtype="float16")
    assert calls == [2, 0]
    cache_fusion_inputs(model, clips, epochs=2, path=path, dtype="float32")  # another dtype: recomputed
    assert calls == [2, 0, 0]
    loaded = FeatureSet.load(path)
    assert loaded.passes == 2 and loaded.feature_bytes() == loaded.fa.nbytes + loaded.fb.nbytes
    assert loaded.nbytes() == 0 and loaded.fa.dtype == np.float32  # memory-mapped: nothing held in memory


def test_disk_cache_holds_the_memory_caches_values(tmp_path):
    model, clips = frozen_model(), SignalClips(10)
    memory = cache_fusion_inputs(model, clips, epochs=2, batch_size=4)
    disk = cache_fusion_inputs(model, clips, epochs=2, batch_size=4, path=tmp_path / "c")
    assert disk.fa.shape == memory.fa.shape and disk.uniform and disk.path == tmp_path / "c"
    assert np.array_equal(disk.fa, memory.fa) and np.array_equal(disk.fb, memory.fb)
    assert disk.labels.tolist() == memory.labels.tolist() and disk.videos == memory.videos
    half = cache_fusion_inputs(model, clips, epochs=2, batch_size=4, path=tmp_path / "h", dtype="float16")
    assert np.array_equal(half.fa, memory.fa.astype(np.float16))  # float16 = the float32 values rounded
    saved = FeatureSet.open(memory.save(tmp_path / "saved"))
    assert np.array_equal(saved.fb, memory.fb) and saved.fingerprint == memory.fingerprint
    restored = pickle.loads(pickle.dumps(disk))  # as DataLoader workers get it: the folder, not the maps
    assert len(pickle.dumps(disk)) < disk.feature_bytes() / 4
    assert np.array_equal(restored.fa, disk.fa) and isinstance(restored.fa, np.memmap)


def test_default_dtype_is_float16_on_a_gpu_and_float32_on_the_cpu():
    assert features.default_dtype("cuda") == "float16" and features.default_dtype("cuda:1") == "float16"
    assert features.default_dtype("cpu") == "float32"
    assert cache_fusion_inputs(frozen_model(), SignalClips(3)).fa.dtype == np.float32


class OneByOne(FeatureSet):
    """The same cached features read one sample at a time (torch falls back to __getitem__)."""

    __getitems__ = None


def one_by_one(feats: FeatureSet) -> FeatureSet:
    clone = copy.copy(feats)
    clone.__class__ = OneByOne
    return clone


def test_batched_reading_gives_default_collates_batches_and_bit_identical_training(tmp_path):
    """``__getitems__`` returns the collated batch (torch's fetcher hands it to collate, and
    default_collate passes it through): the same tensors as collating the samples one by one, and a
    training run that ends with bit-identical weights, in memory (float32) and on disk (float16)."""
    model = frozen_model()
    sets = {"memory": cache_fusion_inputs(model, SignalClips(30), epochs=2),
            "disk": cache_fusion_inputs(model, SignalClips(30), epochs=2, path=tmp_path / "c", dtype="float16")}
    for feats in sets.values():
        feats.set_epoch(1)
        indices = [7, 2, 29, 2, 0]
        got = torch.utils.data.default_collate(feats.__getitems__(indices))
        want = torch.utils.data.default_collate([feats[i] for i in indices])
        assert got.keys() == want.keys() and got["video"] == want["video"]
        for key in ("fa", "fb", "label", "view"):
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    cfg = small_cfg(epochs=3, batch_size=8, input_keys=FEATURE_KEYS)
    for name, feats in sets.items():
        batched = train(FeatureHead(frozen_model()), feats, None, cfg)
        single = train(FeatureHead(frozen_model()), one_by_one(feats), None, cfg)
        assert [r["train_loss"] for r in batched.history] == [r["train_loss"] for r in single.history], name
        for key, value in single.model.state_dict().items():
            assert torch.equal(batched.model.state_dict()[key], value), (name, key)


class WideTowers(torch.nn.Module):
    """Frozen "towers" with large maps (64 x 32 x 32 per sample and tower) from tiny inputs."""

    def fusion_inputs(self, rgb, flow):
        b, t = rgb.shape[:2]
        fa = rgb[:, :, :1, :1, :1].expand(b, t, 64, 32, 32) * torch.linspace(0, 1, 32)
        return fa, fa.flip(-1) + flow[:, :, :1, :1, :1]

    def head(self, fa, fb):
        return fa.mean((1, 3, 4))


def test_disk_cache_holds_one_batch_in_memory_while_writing_and_reading(tmp_path):
    """The RAM bound: writing a 67 MB cache (32 batches) and reading an epoch of it back allocate at most
    a few batches (numpy allocations, traced by tracemalloc); the in-memory cache holds all of it."""
    import tracemalloc

    clips = SignalClips(64, T=1)
    total = 2 * 64 * 2 * 64 * 32 * 32 * 4  # passes x samples x towers x map x float32
    batch = 4 * 2 * 64 * 32 * 32 * 4  # samples x towers x map x float32
    tracemalloc.start()
    try:
        feats = cache_fusion_inputs(WideTowers(), clips, epochs=2, batch_size=4, path=tmp_path / "c")
        _, write_peak = tracemalloc.get_traced_memory()
        assert feats.feature_bytes() == total
        tracemalloc.reset_peak()
        feats.set_epoch(1)
        loader = torch.utils.data.DataLoader(feats, batch_size=4, shuffle=True)
        seen = sum(len(b["label"]) for b in loader)
        _, read_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        memory = cache_fusion_inputs(WideTowers(), clips, epochs=2, batch_size=4)
        _, memory_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == 64 and np.array_equal(memory.fa, feats.fa)
    assert write_peak < batch and read_peak < 4 * batch, (write_peak, read_peak, batch)
    assert memory_peak >= total


def test_an_interrupted_cache_resumes_after_its_last_complete_pass(tmp_path, monkeypatch):
    model, clips = frozen_model(), SignalClips(9)
    real_end = features._DiskSink.end_pass

    def crash_in_pass_two(self, k, *args):
        if k == 2:
            raise KeyboardInterrupt
        real_end(self, k, *args)

    monkeypatch.setattr(features._DiskSink, "end_pass", crash_in_pass_two)
    with pytest.raises(KeyboardInterrupt):
        cache_fusion_inputs(model, clips, epochs=4, batch_size=2, path=tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["passes"] == 2 and not meta["complete"] and (tmp_path / "c" / "fa.bin.part").is_file()
    with pytest.raises(DataError, match="incomplete.*2 passes"):
        FeatureSet.open(tmp_path / "c")
    monkeypatch.setattr(features._DiskSink, "end_pass", real_end)
    starts = []
    real = features._compute
    monkeypatch.setattr(features, "_compute", lambda *a, **k: starts.append(k.get("start")) or real(*a, **k))
    resumed = cache_fusion_inputs(model, clips, epochs=4, batch_size=2, path=tmp_path / "c")
    assert starts == [2]
    whole = cache_fusion_inputs(model, clips, epochs=4, batch_size=4)
    assert np.array_equal(resumed.fa, whole.fa) and np.array_equal(resumed.fb, whole.fb)


def test_whole_frames_of_different_widths_are_cached_and_scored(tmp_path):
    """HMDB51 keeps each clip's aspect ratio: whole-frame test views of two clips 48 and 64 px wide give
    maps of two widths. They are cached (in memory and on disk) with each sample's own shape, and the
    head's video scores on them equal the full model's."""
    from test_sampling import ArrayStore, item, planted_video

    from twostream_lib.data.sampling import ClipSampling, TwoStreamViews

    store = ArrayStore({"narrow": planted_video(9, h=40, w=48), "wide": planted_video(9, h=40, w=64),
                        "narrow2": planted_video(11, h=40, w=48)})
    views = TwoStreamViews(store, [item("narrow", 0), item("wide", 1), item("narrow2", 2)],
                           ClipSampling(T=2, L=2, size=32), mode="spread_flips", crop="full")
    model = frozen_model()
    full = predict(model, views, batch_size=4)
    for feats in (cache_fusion_inputs(model, views, batch_size=4),
                  cache_fusion_inputs(model, views, batch_size=4, path=tmp_path / "c")):
        assert not feats.uniform and feats.fa.ndim == 2
        assert [tuple(feats[i]["fa"].shape) for i in (0, 2, 4)] == [(2, 4, 40, 48), (2, 4, 40, 64), (2, 4, 40, 48)]
        cached = predict(FeatureHead(model), feats, batch_size=3, input_keys=FEATURE_KEYS)
        assert cached.videos == full.videos and cached.views.tolist() == [2, 2, 2]
        np.testing.assert_allclose(cached.scores, full.scores, rtol=1e-5, atol=1e-6)
    ragged = FeatureSet.open(tmp_path / "c")
    with torch.no_grad():
        x = torch.utils.data.default_collate([views[2]])
        fa, _ = model.fusion_inputs(x["rgb"], x["flow"])
    torch.testing.assert_close(ragged[2]["fa"], fa[0])


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


def test_cache_refuses_a_file_for_a_folder_and_a_disk_too_small(tmp_path, monkeypatch):
    (tmp_path / "old.npz").write_bytes(b"an npz cache of an earlier version")
    with pytest.raises(DataError, match=r"old\.npz: expected a feature-cache folder, found a file"):
        cache_fusion_inputs(frozen_model(), SignalClips(4), path=tmp_path / "old.npz")
    monkeypatch.setattr(features.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(StorageError, match=r"needs about 0\.02 MB \(2 passes of 4 samples x .* but 0\.00 MB are free "
                                           r"there; use dtype='float16', fewer passes"):
        cache_fusion_inputs(frozen_model(), SignalClips(4), epochs=2, path=tmp_path / "c")


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
