"""Faults of `prepare` (issue 13): a second run on one output, killed or interrupted runs, truncated
videos, a full disk, frames changed behind a marker's back, slow TV-L1. Each test states the fault and
what must survive it; the subprocess tests start real processes and kill them by pid."""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_prepare import write_square_video

from twostream_lib.data import prepare as prep
from twostream_lib.data.download import verify_dataset
from twostream_lib.data.prepare import cli_main, prepare_video, prepare_videos
from twostream_lib.data.stores import open_store
from twostream_lib.errors import DataError, StorageError

ROOT = Path(__file__).resolve().parents[1]
FAST = {"short_side": 0, "tvl1": {"preset": "fast"}, "progress": False}
CLI_FAST = ["--short-side", "0", "--tvl1-preset", "fast", "--quiet"]


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    return [write_square_video(folder / f"v_Square_g0{i}_c01.avi", n=4 + i) for i in range(1, 4)]


def _python(code: str, *args, **kwargs) -> subprocess.Popen:
    """Start ``code`` in a fresh interpreter that imports the library from this checkout."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


HOLD_LOCK = """
    import sys
    from twostream_lib.data.prepare import lock_output
    shard = tuple(map(int, sys.argv[2].split("/"))) if len(sys.argv) > 2 else None
    with lock_output(sys.argv[1], shard=shard):
        print("locked", flush=True)
        sys.stdin.read()
"""


def _hold_lock(out: Path, *shard: str) -> subprocess.Popen:
    holder = _python(HOLD_LOCK, out, *shard)
    line = holder.stdout.readline()
    if line != "locked\n":
        holder.kill()
        pytest.fail(f"the lock holder did not start: {line!r} {holder.stderr.read()}")
    return holder


def _alive(pid: int) -> bool:
    """Whether ``pid`` is running (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pids, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _kill_all(pids) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _leftovers(out: Path) -> list[str]:
    """Temporary files or folders left anywhere under ``out``."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if ".tmp" in p.name)


# ---- two runs on one output -----------------------------------------------------------------


@pytest.mark.fault
def test_second_prepare_on_one_output_refuses_naming_the_holder(tmp_path, videos, capsys):
    """Two prepare runs on one output folder: the second refuses at once, naming the holder's pid and host; the lock dies with its holder."""
    out = tmp_path / "out"
    holder = _hold_lock(out)
    try:
        who = rf"pid {holder.pid} on {socket.gethostname()}"
        with pytest.raises(DataError, match=who):
            prepare_videos(videos, out, workers=1, **FAST)
        assert cli_main(["prepare", str(videos[0].parent), str(out), *CLI_FAST]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert not (out / ".done").exists() and not (out / "jpegs_256").exists()  # nothing written
    finally:
        holder.kill()  # a crash: the kernel releases the lock
        holder.wait()
    report = prepare_videos(videos, out, workers=1, **FAST)
    assert sorted(report.done) == [v.stem for v in videos]


@pytest.mark.fault
def test_shards_share_an_output_but_one_shard_runs_once(tmp_path, videos):
    """Shard 0/2 is running: shard 1/2 proceeds on the same output, a second shard 0/2 and a whole run refuse."""
    out = tmp_path / "out"
    holder = _hold_lock(out, "0/2")
    try:
        other = prepare_videos(videos, out, shard=(1, 2), workers=1, **FAST)
        assert sorted(other.done) == ["v_Square_g02_c01"]
        for shard in ((0, 2), None):
            with pytest.raises(DataError, match=rf"pid {holder.pid}"):
                prepare_videos(videos, out, shard=shard, workers=1, **FAST)
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert sorted(prepare_videos(videos, out, shard=(0, 2), workers=1, **FAST).done) == ["v_Square_g01_c01",
                                                                                         "v_Square_g03_c01"]


# ---- the marker says what is on disk --------------------------------------------------------


@pytest.mark.fault
def test_marker_is_written_from_the_frames_on_disk(tmp_path, monkeypatch):
    """Frames vanish between the move and the marker (another writer): the video fails by name and gets no marker."""
    video = write_square_video(tmp_path / "v_Square_g01_c01.avi", n=14)
    real = prep._write_jpeg_folders

    def and_someone_deletes_frames(out_root, name, *args, **kwargs):
        real(out_root, name, *args, **kwargs)
        for frame in sorted((Path(out_root) / "jpegs_256" / name).iterdir())[3:]:
            frame.unlink()

    monkeypatch.setattr(prep, "_write_jpeg_folders", and_someone_deletes_frames)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"v_Square_g01_c01.*14 RGB frames .* 3 "):
        prepare_video(video, out, short_side=0, tvl1={"preset": "fast"})
    assert not (out / ".done" / "v_Square_g01_c01.json").exists()
    report = prepare_videos([video], out, workers=1, **FAST)
    assert "v_Square_g01_c01" in report.failed and not report.ok


@pytest.mark.fault
def test_store_verify_and_resume_catch_a_marker_that_disagrees_with_disk(tmp_path, videos):
    """A video marked done with 14 frames has 3 on disk: the store refuses it, verify names it, a re-run redoes it."""
    out = tmp_path / "out"
    prepare_videos(videos, out, workers=1, **FAST)
    name = "v_Square_g03_c01"  # 7 frames
    for frame in sorted((out / "jpegs_256" / name).iterdir())[3:]:
        frame.unlink()
    with pytest.raises(DataError, match=rf"{name}.*7 RGB .* 3 "):
        open_store(out).num_frames(name)
    assert open_store(out).num_frames("v_Square_g01_c01") == 5  # the others are served
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 Square\n")
    (splits / "trainlist01.txt").write_text("".join(f"Square/{v.name} 1\n" for v in videos))
    (splits / "testlist01.txt").write_text("")
    report = verify_dataset("synthetic", out, splits, splits=[1])
    assert not report.ok and name in report.summary() and report.exit_code == 1
    again = prepare_videos(videos, out, workers=1, **FAST)
    assert sorted(again.done) == [name] and open_store(out).num_frames(name) == 7


# ---- killed and interrupted runs ------------------------------------------------------------

RUN_PREPARE = """
    import multiprocessing, os, sys, time
    from pathlib import Path
    from twostream_lib.data import prepare as prep
    mode, out, started, *videos = sys.argv[1:]
    real = prep.extract_video

    def extract(path, **kwargs):  # videos named *slow* hang in the worker
        Path(started, Path(path).stem).write_text(str(os.getpid()))
        if "slow" in Path(path).stem:
            time.sleep(60)
        return real(path, **kwargs)

    prep.extract_video = extract
    if mode == "poll":  # the portable fallback instead of prctl
        prep._set_parent_death_signal = lambda: False
    multiprocessing.set_start_method("fork", force=True)  # the workers inherit the patch above
    sys.exit(prep.cli_main(["prepare", *videos, out, "--workers", "2", "--short-side", "0",
                            "--tvl1-preset", "fast", "--quiet"]))
"""


def _start_run(tmp_path: Path, mode: str, names: list[str]):
    folder = tmp_path / "videos"
    folder.mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{write_square_video(folder / f'{n}.avi', n=5)}\n" for n in names))
    started = tmp_path / "started"
    started.mkdir()
    out = tmp_path / "out"
    return _python(RUN_PREPARE, mode, out, started, listing), out, started


def _wait_started(run, started: Path, names: list[str]) -> list[int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all((started / n).exists() for n in names):
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    time.sleep(0.2)  # the pid is written before the worker sleeps
    return [int((started / n).read_text()) for n in names]


@pytest.mark.fault
@pytest.mark.parametrize("mode", ["prctl", "poll"])
def test_workers_exit_when_the_main_process_is_killed(tmp_path, mode):
    """SIGKILL of the main process during prepare: its workers exit within seconds instead of writing on as orphans."""
    run, _, started = _start_run(tmp_path, mode, ["v_A_slow", "v_B_slow"])
    workers = []
    try:
        workers = _wait_started(run, started, ["v_A_slow", "v_B_slow"])
        assert run.pid not in workers and len(set(workers)) == 2
        os.kill(run.pid, signal.SIGKILL)
        run.wait(10)
        assert _wait_gone(workers, 5) == []
    finally:
        _kill_all([run.pid, *workers])
        run.communicate()


@pytest.mark.fault
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_shut_the_pool_down(tmp_path, signum):
    """SIGTERM or SIGINT to prepare: pending videos cancelled, workers stopped, finished videos kept, no temp files."""
    names = ["v_A_fast", "v_B_slow", "v_C_slow", "v_D_pending"]
    run, out, started = _start_run(tmp_path, "prctl", names)
    workers = []
    try:
        workers = _wait_started(run, started, ["v_A_fast", "v_B_slow", "v_C_slow"])
        os.kill(run.pid, signum)
        try:
            run.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("prepare did not exit within 10 s of the signal")
        assert run.returncode == 128 + signum
        assert _wait_gone(workers, 5) == []
        err = run.stderr.read()
        assert "interrupted" in err and "Traceback" not in err
        assert sorted(p.stem for p in (out / ".done").iterdir()) == ["v_A_fast"]
        assert open_store(out).num_frames("v_A_fast") == 5
        assert not (started / "v_D_pending").exists()
        assert _leftovers(out) == []
    finally:
        _kill_all([run.pid, *workers])
        run.communicate()


# ---- truncated videos -----------------------------------------------------------------------


@pytest.mark.fault
def test_a_truncated_video_fails_by_name_unless_short_videos_are_allowed(real_data, tmp_path, capsys):
    """A UCF101 clip cut to 30% of its bytes (44 of 141 frames decode): failed by name, exit 1; --allow-short accepts and records it."""
    data = real_data.ucf_clip.read_bytes()
    cut = tmp_path / "videos" / real_data.ucf_clip.name
    cut.parent.mkdir()
    cut.write_bytes(data[: int(0.3 * len(data))])
    args = ["prepare", str(cut.parent), str(tmp_path / "out"), "--short-side", "32", "--tvl1-preset", "fast",
            "--workers", "1", "--quiet"]
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "FAILED v_Basketball_g01_c01" in err and "of the 141 frames" in err
    assert not (tmp_path / "out" / ".done" / "v_Basketball_g01_c01.json").exists()
    assert cli_main([*args, "--allow-short"]) == 0
    marker = json.loads((tmp_path / "out" / ".done" / "v_Basketball_g01_c01.json").read_text())
    assert marker["short"] is True and marker["header_frames"] == 141 and 30 < marker["frames"] < 60


# ---- a full disk ----------------------------------------------------------------------------


def _disk_full_for(monkeypatch, out: Path, match: str) -> None:
    """Writes under ``out`` whose path contains ``match`` fail with ENOSPC (a full disk, injected)."""
    for method in ("write_bytes", "write_text"):
        real = getattr(Path, method)

        def write(self, *args, _real=real, **kwargs):
            if Path(self).is_relative_to(out) and match in str(Path(self).relative_to(out)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Path, method, write)


@pytest.mark.fault
@pytest.mark.parametrize("where, packed", [("v_Square_g02_c01", False), ("v_Square_g02_c01", True),
                                            (".done", False), ("prepare", False)])
def test_a_full_disk_names_the_path_and_leaves_no_temp_files(tmp_path, videos, monkeypatch, capsys, where, packed):
    """ENOSPC while writing frames, a pack, a marker or prepare.json: an error naming the path, exit 2, no temp files, finished videos kept."""
    out = tmp_path / "out"
    _disk_full_for(monkeypatch, out, where)
    args = ["prepare", str(videos[0].parent), str(out), "--workers", "1", *CLI_FAST] + (["--packed"] * packed)
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}") and "no space left" in err and where in err.splitlines()[0]
    assert "Traceback" not in err
    assert _leftovers(out) == []
    done = sorted(p.stem for p in (out / ".done").glob("*.json")) if (out / ".done").exists() else []
    assert done == ([] if where in (".done", "prepare") else ["v_Square_g01_c01"])
    with pytest.raises(StorageError, match="no space left"):
        prepare_videos(videos, out, workers=1, packed=packed, **FAST)


# ---- slow videos ----------------------------------------------------------------------------


@pytest.mark.fault
def test_slow_videos_are_reported_with_seconds_per_pair(tmp_path, videos, capsys):
    """TV-L1 slower than a threshold per frame pair: the report and the CLI name the video and its seconds per pair; iterations can be capped."""
    report = prepare_videos(videos, tmp_path / "out", workers=1, slow_seconds=0.0, **FAST)
    assert sorted(report.slow) == [v.stem for v in videos] and all(s > 0 for s in report.slow.values())
    assert "SLOW v_Square_g01_c01: " in report.summary() and " s per frame pair" in report.summary()
    code = cli_main(["prepare", str(videos[0].parent), str(tmp_path / "capped"), "--short-side", "0", "--quiet",
                     "--tvl1", "outer_iterations=2", "--tvl1", "inner_iterations=5", "--slow-seconds", "0"])
    assert code == 0 and "SLOW v_Square_g03_c01" in capsys.readouterr().out
    settings = json.loads((tmp_path / "capped" / "prepare.json").read_text())["tvl1"]
    assert (settings["outer_iterations"], settings["inner_iterations"]) == (2, 5)
