"""Faults of training checkpoints (issue 13, part 3): flipped bytes, a cut-short file, a process killed
between the steps of a save. Each test states the fault and what must survive it: resuming falls back
to the previous checkpoint (named, with the reason) and ends with the weights of an uninterrupted run."""
from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from test_train import SignalClips, TinyTwoStream, rows_without_time, small_cfg, states_equal

from twostream_lib import train as engine
from twostream_lib.errors import DataError
from twostream_lib.train import load_checkpoint, train

EPOCHS = 4
SETTINGS = {"epochs": EPOCHS}


class Killed(BaseException):
    """Stands for the process dying at that point (nothing after it runs)."""


def _run(out: Path, **kw):
    return train(TinyTwoStream(dropout=0.3), SignalClips(20), None, small_cfg(out, **SETTINGS), **kw)


def _stop_after(epoch: int):
    def callback(row):
        if row["epoch"] == epoch:
            raise Killed
    return callback


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run without interruption."""
    return _run(tmp_path_factory.mktemp("full"))


def _cut_after_three_epochs(out: Path) -> None:
    with pytest.raises(Killed):
        _run(out, on_epoch_end=_stop_after(3))
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 3
    assert load_checkpoint(out / "checkpoint.prev.pt")["epoch"] == 2


def _resume_and_compare(out: Path, uninterrupted) -> None:
    # a fresh model object (another init): everything must come from the checkpoint
    resumed = train(TinyTwoStream(dropout=0.3, seed=7), SignalClips(20), None, small_cfg(out, **SETTINGS))
    assert [r["epoch"] for r in resumed.history] == list(range(1, EPOCHS + 1))
    assert states_equal(resumed.model.state_dict(), uninterrupted.model.state_dict())
    assert rows_without_time(resumed.history) == rows_without_time(uninterrupted.history)


def tensor_span(checkpoint: Path, tensor: torch.Tensor) -> tuple[int, int]:
    """(offset, length) of ``tensor``'s bytes inside the checkpoint's zip (torch stores entries uncompressed)."""
    data = tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    raw = checkpoint.read_bytes()
    with zipfile.ZipFile(checkpoint) as z:
        for info in z.infolist():
            if "/data/" not in info.filename or info.file_size != len(data):
                continue
            assert info.compress_type == zipfile.ZIP_STORED
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            start = info.header_offset + 30 + name_len + extra_len
            if raw[start:start + len(data)] == data:
                return start, len(data)
    raise AssertionError(f"{checkpoint}: no zip entry holds the tensor's bytes")


@pytest.mark.fault
def test_flipped_bytes_in_a_weight_tensor_fall_back_to_the_previous_checkpoint(tmp_path, uninterrupted, capsys):
    """64 flipped bytes inside a weight tensor of the latest checkpoint: refused by its SHA-256, resumed from the previous one to the uninterrupted run's weights."""
    out = tmp_path / "cut"
    _cut_after_three_epochs(out)
    latest = out / "checkpoint.pt"
    recorded = (out / "checkpoint.pt.sha256").read_text().split()
    assert recorded == [hashlib.sha256(latest.read_bytes()).hexdigest(), "checkpoint.pt"]  # sha256sum format

    weight = torch.load(latest, weights_only=True)["model"]["rgb.0.weight"]
    start, _ = tensor_span(latest, weight)
    raw = bytearray(latest.read_bytes())
    raw[start + 16:start + 80] = bytes(b ^ 0xFF for b in raw[start + 16:start + 80])
    latest.write_bytes(bytes(raw))
    # without the digest the damage is silent: torch reads the file and gets other weights
    damaged = torch.load(latest, weights_only=True)["model"]["rgb.0.weight"]
    assert not torch.equal(damaged, weight)
    with pytest.raises(DataError, match=r"checkpoint\.pt: its SHA-256 .* is not the one recorded"):
        load_checkpoint(latest)

    _resume_and_compare(out, uninterrupted)
    said = capsys.readouterr().out
    assert f"{latest}: its SHA-256" in said
    assert f"resuming from the previous checkpoint {out / 'checkpoint.prev.pt'} (epoch 2)" in said
    # the finished run keeps its last checkpoint, verified; the previous one (the fallback) is removed
    assert load_checkpoint(latest)["epoch"] == EPOCHS
    assert not (out / "checkpoint.prev.pt").exists() and not (out / "checkpoint.prev.pt.sha256").exists()


@pytest.mark.fault
def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, uninterrupted, capsys):
    """The latest checkpoint cut to half its bytes (disk full, copy interrupted): named as unreadable, resumed from the previous one to the uninterrupted run's weights."""
    out = tmp_path / "cut"
    _cut_after_three_epochs(out)
    latest = out / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    _resume_and_compare(out, uninterrupted)
    said = capsys.readouterr().out
    assert f"{latest}: not a readable checkpoint" in said and "previous checkpoint" in said


@pytest.mark.fault
def test_no_good_checkpoint_is_a_clear_error(tmp_path):
    """Both the latest (flipped bytes) and the previous (truncated) checkpoint damaged: DataError naming both files and why; nothing resumes from a bad one."""
    out = tmp_path / "cut"
    _cut_after_three_epochs(out)
    latest, previous = out / "checkpoint.pt", out / "checkpoint.prev.pt"
    raw = bytearray(latest.read_bytes())
    start, _ = tensor_span(latest, torch.load(latest, weights_only=True)["model"]["fuse.weight"])
    raw[start:start + 64] = bytes(b ^ 0x55 for b in raw[start:start + 64])
    latest.write_bytes(bytes(raw))
    previous.write_bytes(previous.read_bytes()[:1000])
    with pytest.raises(DataError) as err:
        _run(out)
    message = str(err.value)
    assert "no checkpoint to resume from" in message
    assert f"{latest}: its SHA-256" in message and f"{previous}: not a readable checkpoint" in message


@pytest.mark.fault
@pytest.mark.parametrize("when", ["after moving the digest", "after rotating", "before the new digest"])
def test_killed_between_the_steps_of_a_save(tmp_path, uninterrupted, monkeypatch, when):
    """The process dies at each step of saving epoch 3's checkpoint: one checkpoint that matches its digest survives, and resuming reaches the uninterrupted run's weights."""
    out = tmp_path / "cut"
    saves = {"n": 0}
    real_replace, real_atomic_write, real_write_digest = os.replace, engine.atomic_write, engine._write_digest

    def replace(src, dst):
        if when == "after moving the digest" and Path(dst).name == "checkpoint.prev.pt" and saves["n"] == 2:
            raise Killed
        return real_replace(src, dst)

    def atomic_write(path, content, **kw):
        if Path(path).name == "checkpoint.pt":
            saves["n"] += 1
            if when == "after rotating" and saves["n"] == 3:
                raise Killed
        return real_atomic_write(path, content, **kw)

    def write_digest(path, digest):
        if when == "before the new digest" and path.name == "checkpoint.pt" and saves["n"] == 3:
            raise Killed
        return real_write_digest(path, digest)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(engine, "atomic_write", atomic_write)
    monkeypatch.setattr(engine, "_write_digest", write_digest)
    with pytest.raises(Killed):
        _run(out)
    monkeypatch.undo()
    ok = []
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        try:
            ok.append(load_checkpoint(out / name)["epoch"])
        except DataError:
            pass
    assert ok, "no checkpoint matching its digest survived"
    _resume_and_compare(out, uninterrupted)


def test_a_checkpoint_written_before_digests_resumes_with_a_note(tmp_path, uninterrupted, capsys):
    out = tmp_path / "cut"
    _cut_after_three_epochs(out)
    for p in out.glob("*.sha256"):
        p.unlink()
    (out / "checkpoint.prev.pt").unlink()
    _resume_and_compare(out, uninterrupted)
    assert "no SHA-256 beside it" in capsys.readouterr().out
    assert (out / "checkpoint.pt.sha256").exists()
