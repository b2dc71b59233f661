"""Golden digests: the same bytes on every x86-64 machine (twostream_lib.arithmetic).

The demo's notebooks are compared with nbval on whatever machine runs the tests; that only works if
the synthetic data and the trained models are bit-identical there. These tests recompute both on a
small scale and compare SHA-256 digests with the ones recorded in ``tests/data/golden.json``:

* the generated synthetic set: every class, 3 groups x 1 clip, its RGB frames and TV-L1 flow (NumPy,
  OpenCV drawing, MJPG/JPEG coding and TV-L1);
* both demo backbones, spatial and temporal, trained a few steps on it through the engine (PyTorch's
  kernels, MKL's GEMM for the convolutions, batch norm, SGD);
* Table 6's IDT on a few of its videos: trajectories and descriptors (OpenCV's Farneback flow and
  homography, NumPy histograms), the Fisher encoder (PCA and GMM: OpenBLAS) and the linear SVM's scores.

Re-record on purpose (after a change that is meant to change these bytes) with
``TWOSTREAM_ACCEPT_GOLDEN=1 python -m pytest tests/test_golden.py``; the file says on which machine.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform

import pytest
import torch

from twostream_lib.arithmetic import check_pinned, describe
from twostream_lib.data.sampling import ClipSampling, TwoStreamClips
from twostream_lib.data.splits import load_split
from twostream_lib.data.stores import open_store
from twostream_lib.data.synthetic import make_synthetic_dataset
from twostream_lib.determinism import set_threads
from twostream_lib.experiments.cache import weights_digest
from twostream_lib.models import FrameAverage, build_backbone
from twostream_lib.train import TrainConfig, train

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "golden.json")
ACCEPT = os.environ.get("TWOSTREAM_ACCEPT_GOLDEN") == "1"


def _machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "avx512f": "avx512f" in flags, "avx2": "avx2" in flags, "platform": platform.platform(),
            "torch": torch.__version__, **describe()}


def _check(name: str, digest: str) -> None:
    """Compare with (or, when accepting, record) the golden digest ``name``."""
    golden = json.load(open(GOLDEN)) if os.path.exists(GOLDEN) else {"digests": {}}
    if ACCEPT:
        golden["digests"][name] = digest
        golden["recorded_on"] = _machine()
        with open(GOLDEN, "w") as f:
            json.dump(golden, f, indent=2, sort_keys=True)
            f.write("\n")
        return
    expected = golden["digests"].get(name)
    assert expected is not None, f"no golden digest {name!r} in {GOLDEN}: record it (see the module docstring)"
    assert digest == expected, (
        f"{name}: digest {digest[:16]} differs from the golden {expected[:16]} recorded on "
        f"{golden.get('recorded_on')}; this machine: {_machine()}. Either the arithmetic is not the same "
        f"here (see twostream_lib.arithmetic) or a change altered these bytes on purpose (re-record).")


@pytest.fixture(scope="module")
def golden_set(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("golden"), seed=0, groups=3, clips=1, workers=1,
                                  progress=False)


def _digest_files(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_the_synthetic_set_is_the_same_everywhere(golden_set):
    root = golden_set.frames_root
    frames = sorted((root / "jpegs_256").rglob("*.jpg"))
    flow = sorted((root / "tvl1_flow").rglob("*.jpg"))
    assert len(frames) == 42 * 29 and len(flow) == 2 * 42 * 28
    _check("synthetic/frames", _digest_files(frames))
    _check("synthetic/flow", _digest_files(flow))


@pytest.mark.parametrize("backbone", ["demo_shallow", "demo_deep"])
@pytest.mark.parametrize("stream", ["spatial", "temporal"])
def test_a_demo_tower_trained_a_few_steps_is_the_same_everywhere(golden_set, backbone, stream, tmp_path):
    assert not check_pinned(), check_pinned()  # conftest.py pins the arithmetic for every test
    set_threads(2)  # the demo profile's threads; MKL's strict mode makes GEMM independent of them anyway
    split = load_split("synthetic", golden_set.split_dir, 1)
    clips = TwoStreamClips(open_store(golden_set.frames_root), split.train,
                           ClipSampling(T=1, size=48, crop="multiscale"), train=True, seed=0)
    torch.manual_seed(0)
    net = build_backbone(backbone, in_channels=3 if stream == "spatial" else 20, num_classes=14, dropout=0.5)
    key = "rgb" if stream == "spatial" else "flow"
    train(FrameAverage(net), clips, None, TrainConfig(lr=0.01, epochs=2, batch_size=8, seed=0, progress=False,
                                                       lr_schedule="cosine", input_keys=(key,)))
    _check(f"tower/{backbone}/{stream}", weights_digest(net))


def test_a_3d_conv_fusion_head_trained_a_few_steps_is_the_same_everywhere():
    """Tables 4-6's 3D conv fusion on its pinned path (the batch's columns times the filters in one MKL
    GEMM, models.temporal.conv3d_as_gemm), then 3D max pooling and a classifier: a few SGD steps."""
    import torch.nn.functional as F
    from torch import nn

    from twostream_lib.models import Conv3dFusion

    assert not check_pinned(), check_pinned()
    set_threads(2)
    g = torch.Generator().manual_seed(0)
    xa, xb = (torch.relu(torch.randn(16, 32, 5, 6, 6, generator=g)) for _ in range(2))
    labels = torch.randint(0, 14, (16,), generator=g)
    torch.manual_seed(0)
    head = nn.ModuleDict({"fusion": Conv3dFusion(32, init="gaussian"), "fc": nn.Linear(32 * 2 * 3 * 3, 14)})
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    for _ in range(5):
        opt.zero_grad()
        pooled = F.max_pool3d(head["fusion"](xa, xb), 3, 2, ceil_mode=True)  # [16, 32, 2, 3, 3]
        F.cross_entropy(head["fc"](pooled.flatten(1)), labels).backward()
        opt.step()
    _check("head/conv3d_pool3d", weights_digest(head))


def test_idt_descriptors_and_svm_scores_are_the_same_everywhere(golden_set, tmp_path):
    """Table 6's pipeline (twostream_lib.idt.idt_scores) on 12 of the set's videos, in this process:
    every video's descriptors, then the scores of a linear SVM on 4-Gaussian Fisher vectors."""
    from twostream_lib.idt import idt_scores, load_descriptors

    assert not check_pinned(), check_pinned()
    split = load_split("synthetic", golden_set.split_dir, 1)
    train, test = split.train[:8], split.test[:4]
    assert len({v.label for v in train}) >= 2
    scores = idt_scores(open_store(golden_set.frames_root), train, test, cache_dir=tmp_path, num_classes=14,
                        n_components=4, C=1.0, workers=1, seed=0, progress=False)
    h = hashlib.sha256()
    for v in train + test:
        d = load_descriptors(tmp_path, v.name)
        for key in sorted(set(d) - {"meta"}):  # meta: the settings and the seconds the extraction took
            h.update(key.encode())
            h.update(d[key].tobytes())
    _check("idt/descriptors", h.hexdigest())
    _check("idt/scores", hashlib.sha256(scores.scores.tobytes()).hexdigest())
