"""Video-level evaluation: view averaging, metrics, score files, late fusion, split means, uncertainty."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.evaluate import (VideoScores, accuracy, binomial_ci, confusion, group_collate, late_fuse,
                                    load_scores, per_class_accuracy, predict, save_scores, standard_error)

torch.set_num_threads(1)


class KnownViews(Dataset):
    """Views whose "x" is the score vector the identity model returns: averages are known exactly."""

    def __init__(self, scores, videos, labels, views=None):
        self.scores = torch.as_tensor(scores, dtype=torch.float32)
        self.videos, self.labels = videos, labels
        self.views = views or [0] * len(videos)

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        return {"x": self.scores[i], "label": self.labels[i], "video": self.videos[i], "view": self.views[i]}


class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return {"scores": x * self.w, "logits": [x]}


def vs(videos, labels, scores):
    return VideoScores(videos, np.array(labels), np.array(scores, dtype=np.float32))


def test_predict_averages_each_video_over_its_views_in_order_of_first_view():
    data = KnownViews([[1, 0, 0], [3, 0, 0], [0, 2, 0], [0, 0, 5], [0, 4, 0]],
                      ["b", "b", "a", "c", "a"], [0, 0, 1, 2, 1], [0, 1, 0, 0, 1])
    model = Identity().train()
    s = predict(model, data, batch_size=2, input_keys=("x",))
    assert s.videos == ["b", "a", "c"] and s.labels.tolist() == [0, 1, 2] and s.views.tolist() == [2, 2, 1]
    np.testing.assert_allclose(s.scores, [[2, 0, 0], [0, 3, 0], [0, 0, 5]])
    assert model.training, "predict must restore the training mode"
    soft = predict(model, data, batch_size=4, input_keys=("x",), softmax=True)
    expected = (torch.tensor([1.0, 0, 0]).softmax(0) + torch.tensor([3.0, 0, 0]).softmax(0)) / 2
    np.testing.assert_allclose(soft.scores[0], expected.numpy(), rtol=1e-6)
    assert accuracy(s) == 1.0


def test_predict_on_a_two_stream_model_and_its_errors():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_train import SignalClips, TinyTwoStream

    views = SignalClips(12, views=3, augment=False)
    model = TinyTwoStream()
    s = predict(model, views, batch_size=5)
    assert len(s.videos) == 4 and s.scores.shape == (4, 3) and s.views.tolist() == [3, 3, 3, 3]
    with torch.no_grad():
        x = torch.utils.data.default_collate([views[i] for i in range(3)])
        expected = model(x["rgb"], x["flow"])["scores"].mean(0)
    np.testing.assert_allclose(s.scores[0], expected.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="different labels"):
        predict(Identity(), KnownViews([[1.0], [2.0]], ["a", "a"], [0, 1]), input_keys=("x",))
    with pytest.raises(DataError, match="empty"):
        predict(Identity(), KnownViews(torch.zeros(0, 2), [], []), input_keys=("x",))
    with pytest.raises(ConfigError, match="batch_size"):
        predict(Identity(), views, batch_size=0)


def test_group_collate_batches_samples_of_equal_shape_together():
    a, b = {"x": torch.zeros(2, 3), "label": 0}, {"x": torch.ones(2, 5), "label": 1}
    groups = group_collate([(0, a), (1, b), (2, a), (3, a)])
    assert [g[0].tolist() for g in groups] == [[0, 2, 3], [1]]
    assert groups[0][1]["x"].shape == (3, 2, 3) and groups[1][1]["x"].shape == (1, 2, 5)
    one = group_collate([(4, a), (5, a)])  # one shape: default_collate's batch
    assert len(one) == 1 and torch.equal(one[0][1]["x"], torch.utils.data.default_collate([a, a])["x"])


def test_predict_on_whole_frames_of_different_widths():
    """HMDB51 clips keep their aspect ratio (height 240, widths vary): fully convolutional whole-frame
    testing (Sec. 3.5) batches frames 48 and 64 px wide together, split into groups of one width, and
    gives each video the scores it gets alone."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_sampling import ArrayStore, item, planted_video
    from test_train import TinyTwoStream

    from twostream_lib.data.sampling import ClipSampling, TwoStreamViews

    store = ArrayStore({"a": planted_video(9, h=40, w=48), "b": planted_video(12, h=40, w=64),
                        "c": planted_video(10, h=40, w=48)})
    views = TwoStreamViews(store, [item("a", 0), item("b", 1), item("c", 2)], ClipSampling(T=2, L=2, size=32),
                           mode="spread_flips", crop="full")
    assert views[0]["rgb"].shape[-1] == 48 and views[2]["rgb"].shape[-1] == 64
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):  # what plain batching does
        torch.utils.data.default_collate([views[0], views[2]])
    model = TinyTwoStream()
    together = predict(model, views, batch_size=6)
    alone = predict(model, views, batch_size=1)
    assert together.videos == ["a", "b", "c"] and together.views.tolist() == [2, 2, 2]
    np.testing.assert_allclose(together.scores, alone.scores, rtol=1e-5, atol=1e-6)


def test_accuracy_confusion_and_per_class_accuracy():
    s = vs(["a", "b", "c", "d", "e"], [0, 0, 1, 1, 2],
           [[5, 1, 0], [0, 3, 1], [0, 2, 1], [1, 0, 0], [0, 1, 0]])
    assert accuracy(s) == pytest.approx(2 / 5)
    m = confusion(s)
    assert m.tolist() == [[1, 1, 0], [1, 1, 0], [0, 1, 0]]
    assert m.sum() == 5
    np.testing.assert_allclose(per_class_accuracy(s), [0.5, 0.5, 0.0])
    assert confusion(s, num_classes=4).shape == (4, 4)
    empty_class = vs(["a"], [0], [[1, 0]])
    assert np.isnan(per_class_accuracy(empty_class)[1])
    with pytest.raises(DataError, match="no videos"):
        accuracy(VideoScores([], np.zeros(0), np.zeros((0, 2))))


def test_video_scores_validation():
    with pytest.raises(DataError, match="scores"):
        VideoScores(["a", "b"], np.array([0, 1]), np.zeros((3, 2)))
    with pytest.raises(DataError, match="unique"):
        VideoScores(["a", "a"], np.array([0, 1]), np.zeros((2, 2)))


def test_save_and_load_scores_round_trip(tmp_path):
    s = vs(["v1", "v2"], [1, 0], [[0.1, 0.9], [0.7, 0.3]])
    s.views = np.array([10, 10])
    path = save_scores(s, tmp_path / "sub" / "spatial.npz")
    assert not list(path.parent.glob("*.tmp"))
    r = load_scores(path)
    assert r.videos == s.videos and r.labels.tolist() == [1, 0] and r.views.tolist() == [10, 10]
    np.testing.assert_array_equal(r.scores, s.scores)
    with pytest.raises(DataError, match="no such scores file"):
        load_scores(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        load_scores(tmp_path / "bad.npz")


def test_late_fuse_aligns_videos_and_averages_softmax_or_scores():
    a = vs(["x", "y"], [0, 1], [[2.0, 0.0], [0.0, 1.0]])
    b = vs(["y", "x"], [1, 0], [[0.0, 3.0], [0.0, 4.0]])  # other order
    fused = late_fuse(a, b)
    sa = torch.tensor(a.scores).softmax(1)
    sb = torch.tensor(b.scores[[1, 0]]).softmax(1)
    np.testing.assert_allclose(fused.scores, (0.5 * sa + 0.5 * sb).numpy(), rtol=1e-6)
    assert fused.videos == ["x", "y"]
    raw = late_fuse(a, b, weights=(1.0, 2.0), mode="scores")
    np.testing.assert_allclose(raw.scores, [[2.0, 8.0], [0.0, 7.0]])
    assert accuracy(late_fuse(a, b, weights=(1.0, 0.0))) == 1.0


def test_late_fuse_errors_name_the_mismatch():
    a = vs(["x", "y"], [0, 1], [[1, 0], [0, 1]])
    with pytest.raises(DataError, match=r"1 only in the first \(e.g. \['y'\]\), 1 only in the second .*'z'"):
        late_fuse(a, vs(["x", "z"], [0, 1], [[1, 0], [0, 1]]))
    with pytest.raises(DataError, match="different labels, e.g. \\['y'\\]"):
        late_fuse(a, vs(["x", "y"], [0, 0], [[1, 0], [0, 1]]))
    with pytest.raises(DataError, match="classes"):
        late_fuse(a, vs(["x", "y"], [0, 1], [[1, 0, 0], [0, 1, 0]]))
    with pytest.raises(ConfigError, match="mode"):
        late_fuse(a, a, mode="max")


def test_standard_error_and_wilson_interval():
    assert standard_error(0.5, 100) == pytest.approx(0.05)
    lo, hi = binomial_ci(0.5, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)  # Wilson, z = 1.96
    lo, hi = binomial_ci(1.0, 20)
    assert hi == 1.0 and lo == pytest.approx(0.8389, abs=1e-4)
    wide, narrow = binomial_ci(0.8, 50), binomial_ci(0.8, 5000)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    with pytest.raises(ConfigError, match="n must be"):
        binomial_ci(0.5, 0)
    with pytest.raises(ConfigError, match="acc"):
        binomial_ci(1.5, 10)


def test_engine_helpers_amp_and_outputs():
    from twostream_lib.engine import output_scores, unwrap, use_amp, world

    assert use_amp("auto", "cpu") is False and use_amp("auto", "cuda") is True
    assert use_amp("bf16", "cpu") is True and use_amp(False, "cuda") is False
    with pytest.raises(ConfigError, match="amp"):
        use_amp("fp16", "cpu")
    t = torch.zeros(2, 3)
    assert output_scores(t) is t and output_scores({"scores": t, "logits": [t]}) is t
    with pytest.raises(DataError, match="scores"):
        output_scores({"logits": [t]})
    net = Identity()
    assert unwrap(torch.nn.DataParallel(net)) is net and unwrap(net) is net
    assert world() == (0, 1)
