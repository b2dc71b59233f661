"""atomic_write: the target is either the old file or the whole new one; temp files never stay behind."""
import errno
import json

import numpy as np
import pytest

from twostream_lib.errors import StorageError
from twostream_lib.files import atomic_write, atomic_write_json, exclusive, temporary_name


def test_text_bytes_json_and_callable(tmp_path):
    assert atomic_write(tmp_path / "a" / "t.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    assert atomic_write(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert json.loads(atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]}).read_text()) == {"a": [1, 2], "b": 1}
    assert (tmp_path / "c.json").read_text().endswith("\n")
    path = atomic_write(tmp_path / "d.npz", lambda tmp: np.savez(tmp, x=np.arange(3)))
    assert np.load(path)["x"].tolist() == [0, 1, 2]  # np.savez kept the name: the temp name ends in .npz
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.bin", "c.json", "d.npz", "t.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path):
    target = atomic_write(tmp_path / "x.txt", "old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(target, boom)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_disk_full_names_the_file_and_cleans_up(tmp_path, monkeypatch):
    def full(tmp):
        tmp.write_text("part")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError, match=r"x\.json: no space left on the device") as info:
        atomic_write(tmp_path / "x.json", full)
    assert info.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_temporary_name_is_hidden_per_process_and_keeps_the_suffix(tmp_path):
    name = temporary_name(tmp_path / "scores.npz").name
    assert name.startswith(".scores.") and name.endswith(".tmp.npz")


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(StorageError, match="produced no file"):
        atomic_write(tmp_path / "y.png", lambda tmp: None)


HOLD = """\
import sys, time
from pathlib import Path
from twostream_lib.files import exclusive
with exclusive(sys.argv[1]):
    Path(sys.argv[2]).write_text("held")
    time.sleep(1.5)
    Path(sys.argv[2]).write_text("done")
"""


def test_exclusive_makes_a_second_process_wait_until_the_first_leaves(tmp_path):
    import subprocess
    import sys
    import time

    lock, state = tmp_path / "sub" / ".x.lock", tmp_path / "state"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(state)])
    try:
        deadline = time.monotonic() + 30
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state.read_text() == "held"
        with exclusive(lock):  # waits for the holder's block to end
            assert state.read_text() == "done"
    finally:
        holder.wait(30)
    with exclusive(lock), exclusive(tmp_path / "other.lock"):  # free again; other files lock apart
        pass
