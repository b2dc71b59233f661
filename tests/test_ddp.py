"""Two CPU processes with gloo (as under torchrun) give the single-process result on the same global batch.

Also: evaluation under DDP gathers every (video, view) once, with an odd number of views so that a
padding distributed sampler would have duplicated one.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from twostream_lib.evaluate import predict
from twostream_lib.train import cleanup_distributed, train

torch.set_num_threads(1)
TESTS = str(Path(__file__).resolve().parent)
sys.path.insert(0, TESTS)
from test_train import SignalClips, TinyTwoStream, small_cfg  # noqa: E402

# 21 training samples in global batches of 8: the last batch (5) splits 3/2 over the processes.
# 21 test views = 7 videos x 3 views: the processes score 11 and 10 of them.
# TinyTwoStream's fc_flow is unused (one loss): DDP must be told, and it stays untouched as in one process.
RUN = dict(epochs=2, batch_size=8, deterministic=False, ddp_find_unused=True)


def _data():
    return SignalClips(21), SignalClips(9, seed=4, views=3, augment=False), SignalClips(21, seed=2, views=3)


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train_set, val_set, views = _data()
    try:
        res = train(TinyTwoStream(), train_set, val_set, small_cfg(Path(out) / "run", **RUN))
        s = predict(res.model, views, batch_size=4)
        torch.save({"state": res.model.state_dict(), "history": res.history, "videos": s.videos,
                    "labels": torch.from_numpy(s.labels), "scores": torch.from_numpy(s.scores),
                    "views": torch.from_numpy(s.views)}, Path(out) / f"rank{rank}.pt")
    finally:
        cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_gloo_processes_match_one_process_and_gather_each_video_once(tmp_path):
    train_set, val_set, views = _data()
    ref = train(TinyTwoStream(), train_set, val_set, small_cfg(None, **RUN))
    ref_scores = predict(ref.model, views, batch_size=4)
    # fork (not spawn): the children inherit the imported torch instead of paying 5-10 s each for it
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for got in ranks:
        for name, value in ref.model.state_dict().items():
            torch.testing.assert_close(got["state"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        for a, b in zip(got["history"], ref.history):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
            assert a["train_acc"] == b["train_acc"] and a["val_acc"] == b["val_acc"]
        assert got["videos"] == ref_scores.videos and len(got["videos"]) == 7
        assert got["views"].tolist() == [3] * 7
        assert got["labels"].tolist() == ref_scores.labels.tolist()
        np.testing.assert_allclose(got["scores"].numpy(), ref_scores.scores, rtol=1e-5, atol=1e-6)

    run_info = json.loads((tmp_path / "run" / "config.json").read_text())["run"]
    assert run_info["world_size"] == 2
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2
    for name, value in ranks[0]["state"].items():
        assert torch.equal(ckpt["model"][name], value)
