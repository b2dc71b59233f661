"""Fetch and verify, offline: split parts, safe unpacking (zip, tar, RAR dispatch), resumable HTTP
against a local server, and verification of a fake UCF101 tree built from the real split files."""
from __future__ import annotations

import http.server
import io
import os
import shutil
import stat
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from twostream_lib.data import download as dl
from twostream_lib.data.download import (
    Step,
    archive_format,
    cli_main,
    concat_parts,
    download,
    fetch_step,
    rar_backend,
    safe_extract,
    verify_dataset,
)
from twostream_lib.errors import DataError


def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, files: dict[str, bytes], links: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in links:
            tf.addfile(info)
    return path


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


# ---- split parts ------------------------------------------------------------------------------


def test_concat_parts_in_numeric_order(tmp_path):
    whole = make_zip(tmp_path / "frames.zip", {f"jpegs_256/v_{i}/frame000001.jpg": os.urandom(3000) for i in range(5)})
    data = whole.read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for k in range(3):
        part = tmp_path / f"ucf101_jpegs_256.zip.00{k + 1}"
        part.write_bytes(data[cuts[k]:cuts[k + 1]])
        parts.append(part)
    out = concat_parts([parts[2], parts[0], parts[1]], tmp_path / "ucf101_jpegs_256.zip")
    assert out.read_bytes() == data and not (tmp_path / "ucf101_jpegs_256.zip.tmp").exists()
    assert len(safe_extract(out, tmp_path / "x")) == 5


def test_concat_parts_errors(tmp_path):
    for n in (1, 3):
        (tmp_path / f"a.zip.00{n}").write_bytes(b"x")
    with pytest.raises(DataError, match=r"archive part .*a\.zip\.002 is missing"):
        concat_parts([tmp_path / "a.zip.001", tmp_path / "a.zip.003"], tmp_path / "a.zip")
    with pytest.raises(DataError, match=r"a\.zip\.001 is missing"):
        concat_parts([tmp_path / "a.zip.003"], tmp_path / "a.zip")
    with pytest.raises(DataError, match="not a numbered archive part"):
        concat_parts([tmp_path / "a.zip"], tmp_path / "b.zip")
    (tmp_path / "b.zip.002").write_bytes(b"y")
    with pytest.raises(DataError, match="belong to different archives"):
        concat_parts([tmp_path / "a.zip.001", tmp_path / "b.zip.002"], tmp_path / "c.zip")
    assert not (tmp_path / "a.zip").exists()


# ---- safe unpacking ---------------------------------------------------------------------------


def test_safe_extract_zip_and_tar(tmp_path):
    files = {"ucfTrainTestlist/classInd.txt": b"1 A\n", "ucfTrainTestlist/testlist01.txt": b"A/v_A_g01_c01.avi\n"}
    z = make_zip(tmp_path / "s.zip", files)
    assert archive_format(z) == "zip"
    assert sorted(safe_extract(z, tmp_path / "z")) == sorted(files)
    assert (tmp_path / "z" / "ucfTrainTestlist" / "classInd.txt").read_bytes() == b"1 A\n"
    t = make_tar(tmp_path / "s.tar.gz", files)
    assert archive_format(t) == "tar"
    assert sorted(safe_extract(t, tmp_path / "t")) == sorted(files)
    assert (tmp_path / "t" / "ucfTrainTestlist" / "testlist01.txt").read_bytes() == b"A/v_A_g01_c01.avi\n"
    t = make_tar(tmp_path / "l.tar.gz", files, [_link("ucfTrainTestlist/alias.txt", "classInd.txt")])
    with pytest.raises(DataError, match=r"refusing link member 'ucfTrainTestlist/alias\.txt' -> 'classInd\.txt': "
                                        r"archives with links are not unpacked"):
        safe_extract(t, tmp_path / "l")  # a link, even inside: refused (issue 13)


@pytest.mark.parametrize(
    "member, message",
    [
        ("../evil", r"refusing member '\.\./evil': '\.\.' would leave"),
        ("ok/../../evil", r"refusing member 'ok/\.\./\.\./evil'"),
        ("/abs/evil", r"refusing member '/abs/evil': absolute path"),
        ("..\\evil", r"refusing member '\.\.\\\\evil'"),
    ],
)
def test_malicious_zip_is_refused_before_writing(tmp_path, member, message):
    z = make_zip(tmp_path / "bad.zip", {"fine.txt": b"ok", member: b"pwned"})
    with pytest.raises(DataError, match=message):
        safe_extract(z, tmp_path / "dest")
    assert _files(tmp_path / "dest") == [] and not (tmp_path / "evil").exists()


def test_zip_symlink_escaping_is_refused(tmp_path):
    z = make_zip(tmp_path / "l.zip", {"a.txt": b"a"}, symlinks={"sub/link": "../../outside"})
    with pytest.raises(DataError, match=r"refusing link member 'sub/link' -> '\.\./\.\./outside': it points outside"):
        safe_extract(z, tmp_path / "dest")


@pytest.mark.parametrize(
    "link, message",
    [
        (_link("etc", "/etc"), r"refusing link member 'etc' -> '/etc': absolute target"),
        (_link("sub/up", "../../x"), r"refusing link member 'sub/up' -> '\.\./\.\./x': it points outside"),
        (_link("hard", "../x", tarfile.LNKTYPE), r"refusing link member 'hard'"),
        (_link("fifo", "", tarfile.FIFOTYPE), r"refusing member 'fifo': device, fifo"),
    ],
)
def test_malicious_tar_is_refused_before_writing(tmp_path, link, message):
    t = make_tar(tmp_path / "bad.tar.gz", {"fine.txt": b"ok"}, [link])
    with pytest.raises(DataError, match=message):
        safe_extract(t, tmp_path / "dest")
    assert _files(tmp_path / "dest") == []
    t = make_tar(tmp_path / "evil.tar.gz", {"../evil": b"x"})
    with pytest.raises(DataError, match=r"refusing member '\.\./evil'"):
        safe_extract(t, tmp_path / "dest")


def test_unknown_archive(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"a\.bin is not a zip, tar or RAR archive"):
        safe_extract(tmp_path / "a.bin", tmp_path / "d")
    with pytest.raises(DataError, match=r"archive .*none\.zip does not exist"):
        safe_extract(tmp_path / "none.zip", tmp_path / "d")


# ---- RAR dispatch -----------------------------------------------------------------------------

FAKE_UNRAR = """#!/bin/sh
# Stand-in for unrar: the "archive" is the RAR magic line followed by member names.
# Names ending in .lnk are extracted as links to /, names 'FAIL' make it exit 3.
case "$1" in
  lb) tail -n +2 "$3"; exit 0 ;;
  x)  archive="$5"; dest="$6"
      tail -n +2 "$archive" | while read -r name; do
        [ "$name" = FAIL ] && exit 3
        mkdir -p "$dest/$(dirname "$name")"
        case "$name" in
          *.lnk) ln -s / "$dest/$name" ;;
          *) echo "content of $name" > "$dest/$name" ;;
        esac
      done ;;
  *) exit 2 ;;
esac
"""


def _fake_rar(path: Path, names: list[str]) -> Path:
    path.write_bytes(b"Rar!\x1a\x07\x00\n" + "".join(n + "\n" for n in names).encode())
    return path


@pytest.fixture
def no_rarfile(monkeypatch):
    monkeypatch.setitem(sys.modules, "rarfile", None)  # `import rarfile` fails even if installed


def test_rar_without_backend_says_what_to_install(tmp_path, monkeypatch, no_rarfile):
    monkeypatch.setattr(dl.shutil, "which", lambda name: None)
    rar = _fake_rar(tmp_path / "UCF101.rar", ["UCF-101/A/v_A_g01_c01.avi"])
    assert archive_format(rar) == "rar"
    message = r"cannot unpack RAR archive .*UCF101\.rar: no RAR backend found.*unrar.*bsdtar.*7z"
    with pytest.raises(DataError, match=message):
        safe_extract(rar, tmp_path / "d")
    with pytest.raises(DataError, match="no RAR backend"):
        rar_backend()


def test_rar_through_a_command_line_tool(tmp_path, monkeypatch, no_rarfile):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "unrar").write_text(FAKE_UNRAR)
    (bin_dir / "unrar").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")
    assert rar_backend() == ("unrar", str(bin_dir / "unrar"))
    names = safe_extract(_fake_rar(tmp_path / "ok.rar", ["brush_hair/a.avi", "brush_hair/b.avi"]), tmp_path / "d")
    assert names == ["brush_hair/a.avi", "brush_hair/b.avi"]
    assert (tmp_path / "d" / "brush_hair" / "b.avi").read_text() == "content of brush_hair/b.avi\n"
    with pytest.raises(DataError, match=r"refusing member '\.\./evil'"):
        safe_extract(_fake_rar(tmp_path / "bad.rar", ["fine.avi", "../evil"]), tmp_path / "e")
    assert not (tmp_path / "e" / "fine.avi").exists() and not (tmp_path / "evil").exists()
    with pytest.raises(DataError, match=r"refusing link member 'x\.lnk': it points outside"):
        safe_extract(_fake_rar(tmp_path / "link.rar", ["x.lnk"]), tmp_path / "f")
    assert not (tmp_path / "f" / "x.lnk").is_symlink()
    with pytest.raises(DataError, match=r"unrar failed on .*fail\.rar \(exit 3\)"):
        safe_extract(_fake_rar(tmp_path / "fail.rar", ["FAIL"]), tmp_path / "g")


# ---- resumable HTTP against a local server ----------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        data = server.files.get(self.path)
        rng = self.headers.get("Range")
        server.requests.append((self.path, rng))
        if data is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng and not server.ignore_range else 0
        if start >= len(data) > 0 and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in server.cut_once:  # drop the connection half-way, once
            server.cut_once.discard(self.path)
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(monkeypatch):
    monkeypatch.setattr(dl.time, "sleep", lambda s: None)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.requests, server.cut_once, server.ignore_range = {}, [], set(), False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_download_resumes_a_partial_file(tmp_path, http_server):
    data = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    http_server.files["/big.zip"] = data
    (tmp_path / "big.zip.part").write_bytes(data[:100_000])
    out = download(http_server.url + "/big.zip", tmp_path / "big.zip", progress=False)
    assert out.read_bytes() == data and not (tmp_path / "big.zip.part").exists()
    assert http_server.requests == [("/big.zip", "bytes=100000-")]
    download(http_server.url + "/big.zip", tmp_path / "big.zip", progress=False)  # complete: no request
    assert len(http_server.requests) == 1


def test_download_retries_after_a_dropped_connection(tmp_path, http_server):
    data = os.urandom(200_000)
    http_server.files["/f.rar"] = data
    http_server.cut_once.add("/f.rar")
    assert download(http_server.url + "/f.rar", tmp_path / "f.rar", progress=False).read_bytes() == data
    assert http_server.requests[0] == ("/f.rar", None) and http_server.requests[1][1] == "bytes=100000-"
    # out of tries: the partial file stays, and the next run resumes it
    http_server.files["/g.rar"] = data
    http_server.cut_once.add("/g.rar")
    with pytest.raises(DataError, match=r"g\.rar\.part is kept: run the command again to resume"):
        download(http_server.url + "/g.rar", tmp_path / "g.rar", retries=1, progress=False)
    assert download(http_server.url + "/g.rar", tmp_path / "g.rar", progress=False).read_bytes() == data
    assert http_server.requests[-1] == ("/g.rar", "bytes=100000-")


def test_download_without_range_support_and_errors(tmp_path, http_server):
    data = os.urandom(50_000)
    http_server.files["/f"] = data
    http_server.ignore_range = True
    (tmp_path / "f.part").write_bytes(b"stale bytes")
    assert download(http_server.url + "/f", tmp_path / "f", progress=False).read_bytes() == data
    with pytest.raises(DataError, match=r"download of .*/missing\.zip failed: HTTP 404"):
        download(http_server.url + "/missing.zip", tmp_path / "m.zip", progress=False)
    with pytest.raises(DataError, match=r"nothing failed after 2 tries \(.*\)$"):
        download("http://127.0.0.1:9/nothing", tmp_path / "n", retries=2, timeout=2, progress=False)


def test_fetch_step_downloads_joins_unpacks_and_moves(tmp_path, http_server):
    whole = make_zip(tmp_path / "w.zip", {"jpegs_256/v_A_g01_c01/frame000001.jpg": b"jpeg"}).read_bytes()
    http_server.files["/d.zip.001"], http_server.files["/d.zip.002"] = whole[:100], whole[100:]
    step = Step("jpegs_256", (http_server.url + "/d.zip.001", http_server.url + "/d.zip.002"), "frames")
    root = tmp_path / "ucf101"
    assert fetch_step(step, root, progress=False) == root / "frames"
    assert (root / "frames" / "jpegs_256" / "v_A_g01_c01" / "frame000001.jpg").read_bytes() == b"jpeg"
    assert not list((root / "downloads").iterdir()) and not (root / ".unpack").exists()
    fetch_step(step, root, progress=False)  # finished: nothing fetched again
    assert len(http_server.requests) == 2
    # a tar whose top folder is dropped ("UCF-101/" -> videos/)
    http_server.files["/v.tgz"] = make_tar(tmp_path / "v.tgz", {"UCF-101/A/v_A_g01_c01.avi": b"avi"}).read_bytes()
    fetch_step(Step("videos", (http_server.url + "/v.tgz",), "videos", strip="UCF-101"), root, progress=False)
    assert (root / "videos" / "A" / "v_A_g01_c01.avi").read_bytes() == b"avi"


def test_fetch_command_end_to_end_offline(real_data, tmp_path, http_server, monkeypatch, capsys):
    splits_zip = tmp_path / "splits.zip"
    with zipfile.ZipFile(splits_zip, "w") as zf:
        for f in real_data.ucf_splits.iterdir():
            zf.write(f, f"ucfTrainTestlist/{f.name}")
    http_server.files["/splits.zip"] = splits_zip.read_bytes()
    http_server.files["/UCF101.tgz"] = make_tar(
        tmp_path / "v.tgz", {"UCF-101/Basketball/v_Basketball_g01_c01.avi": b"avi"}
    ).read_bytes()
    monkeypatch.setitem(dl.SOURCES, "ucf101", {
        "splits": (Step("splits", (http_server.url + "/splits.zip",), "splits"),),
        "videos": (Step("videos", (http_server.url + "/UCF101.tgz",), "videos", strip="UCF-101"),),
    })
    code = cli_main(["fetch", "ucf101", "--root", str(tmp_path / "data"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1  # only one of 13320 videos arrived: verify says what is missing
    assert "split 1: 101 classes (official 101), train 0/9537 found (official 9537), test 1/3783 found" in out
    assert "MISSING 13319 listed video(s)" in out and "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi" in out


# ---- verify -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_ucf101(real_data, tmp_path_factory):
    """Empty files for all 13320 videos of the real UCF101 split lists, in <Class>/<video>.avi."""
    root = tmp_path_factory.mktemp("ucf101") / "videos"
    rels = {line.split()[0] for name in ("trainlist01.txt", "testlist01.txt")
            for line in (real_data.ucf_splits / name).read_text().splitlines() if line.strip()}
    for folder in {r.split("/")[0] for r in rels}:
        (root / folder).mkdir(parents=True)
    for rel in rels:
        os.close(os.open(root / rel, os.O_CREAT | os.O_WRONLY))
    return root


def test_verify_complete_tree(real_data, fake_ucf101):
    report = verify_dataset("ucf101", fake_ucf101, real_data.ucf_splits)
    assert report.ok and report.exit_code == 0 and report.on_disk == 13320
    assert [(s.train_found, s.test_found) for s in report.splits] == [(9537, 3783), (9586, 3734), (9624, 3696)]
    assert "OK: everything listed is present" in report.summary()


def test_verify_reports_missing_videos(real_data, fake_ucf101, capsys):
    gone = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "YoYo/v_YoYo_g07_c04.avi",
            "Basketball/v_Basketball_g01_c01.avi"]
    renamed = fake_ucf101 / "HandstandPushups" / "v_HandstandPushups_g01_c01.avi"
    try:
        for rel in gone:
            (fake_ucf101 / rel).rename(fake_ucf101 / (rel + ".gone"))
        renamed.rename(renamed.with_name("v_HandStandPushups_g01_c01.avi"))  # the official archive's spelling
        report = verify_dataset("ucf101", fake_ucf101, real_data.ucf_splits, splits=(1,))
        [s1] = report.splits
        assert (s1.train_found, s1.test_found) == (9537 - 1, 3783 - 2)  # g08 is train in split 1
        assert sorted(s1.missing) == sorted(gone) and not report.ok and report.exit_code == 1
        assert report.case_mismatch == ["v_HandstandPushups_g01_c01"]
        text = report.summary()
        assert "MISSING 3 listed video(s)" in text and "YoYo/v_YoYo_g07_c04.avi" in text
        assert "found only with different letter case" in text and "PROBLEMS FOUND" in text
        split_dir = fake_ucf101.parent / "splits"
        shutil.copytree(real_data.ucf_splits, split_dir, dirs_exist_ok=True)
        assert cli_main(["verify", "ucf101", str(fake_ucf101), "--split", "1"]) == 1  # default ROOT/../splits
        assert "MISSING 3" in capsys.readouterr().out
    finally:
        for rel in gone:
            (fake_ucf101 / (rel + ".gone")).rename(fake_ucf101 / rel)
        renamed.with_name("v_HandStandPushups_g01_c01.avi").rename(renamed)


def test_verify_flags_split_files_that_differ_from_the_official_ones(real_data, tmp_path):
    for name in ("wave_test_split1.txt", "brush_hair_test_split1.txt"):
        shutil.copy(real_data.hmdb_split_files / name, tmp_path / name)
    (tmp_path / "videos").mkdir()
    report = verify_dataset("hmdb51", tmp_path / "videos", tmp_path, splits=[1])
    assert not report.ok and report.splits[0].classes == 2
    assert "2 classes (OFFICIAL 51: split files differ!)" in report.summary()


def test_verify_a_frame_store(tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 A\n")
    (splits / "trainlist01.txt").write_text("A/v_A_g01_c01.avi 1\nA/v_A_g02_c01.avi 1\n")
    (splits / "testlist01.txt").write_text("A/v_A_g03_c01.avi\n")
    frames = tmp_path / "frames"
    for video, flow in (("v_A_g01_c01", True), ("v_A_g03_c01", False)):
        (frames / "jpegs_256" / video).mkdir(parents=True)
        (frames / "jpegs_256" / video / "frame000001.jpg").write_bytes(b"x")
        if flow:
            for c in "uv":
                (frames / "tvl1_flow" / c / video).mkdir(parents=True)
                (frames / "tvl1_flow" / c / video / "frame000001.jpg").write_bytes(b"x")
    report = verify_dataset("synthetic", frames, splits, splits=[1])
    assert report.kind == "videos in a frame store (authors layout)"
    assert report.splits[0].missing == ["A/v_A_g02_c01.avi"] and report.incomplete == ["v_A_g03_c01"]
    assert "INCOMPLETE 1 video(s)" in report.summary() and report.exit_code == 1
    with pytest.raises(DataError, match="data root .*nowhere does not exist"):
        verify_dataset("synthetic", tmp_path / "nowhere", splits)
    assert cli_main(["verify", "synthetic", str(tmp_path / "nowhere"), "--splits", str(splits)]) == 2


# ---- checksums ----------------------------------------------------------------------------------


@pytest.mark.fault
def test_archives_are_checked_against_sha256(tmp_path, http_server, monkeypatch, capsys):
    """An archive that differs from its published or first-recorded SHA-256 (server changed, disk damaged): fetch and verify name it."""
    import hashlib

    data = make_zip(tmp_path / "s.zip", {"ucfTrainTestlist/classInd.txt": b"1 A\n"}).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    http_server.files["/s.zip"] = data
    step = Step("splits", (http_server.url + "/s.zip",), "splits")
    root = tmp_path / "ucf101"
    fetch_step(step, root, keep_archives=True, progress=False)
    assert (root / "archives.sha256").read_text() == f"{digest}  s.zip\n"  # recorded on first download
    assert dl.verify_archives(root) == (1, [])
    # the kept archive is damaged on disk: verify names it
    (root / "downloads" / "s.zip").write_bytes(data[:-1] + b"!")
    checked, problems = dl.verify_archives(root)
    assert checked == 1 and len(problems) == 1 and "s.zip" in problems[0] and digest in problems[0]
    (root / "videos").mkdir()
    for g in (1, 2):
        (root / "videos" / f"v_A_g0{g}_c01.avi").write_bytes(b"avi")
    shutil.copytree(root / "splits" / "ucfTrainTestlist", root / "splits", dirs_exist_ok=True)
    (root / "splits" / "trainlist01.txt").write_text("A/v_A_g01_c01.avi 1\n")
    (root / "splits" / "testlist01.txt").write_text("A/v_A_g02_c01.avi\n")
    assert cli_main(["verify", "synthetic", str(root / "videos"), "--split", "1"]) == 1
    assert "s.zip" in capsys.readouterr().out
    # the server now sends other bytes: a new download is refused, naming both digests
    (root / "downloads" / "s.zip").unlink()
    (root / ".fetched" / "splits.done").unlink()
    http_server.files["/s.zip"] = data[:-1] + b"!"
    with pytest.raises(DataError, match=rf"s\.zip: SHA-256 \w+ differs from the one recorded .*{digest}"):
        fetch_step(step, root, keep_archives=True, progress=False)
    (root / "archives.sha256").write_text("not a digest  s.zip\n")
    with pytest.raises(DataError, match=r"archives\.sha256, line 1: expected '<sha256>  <file name>'"):
        dl.verify_archives(root)
    # a published digest is checked on the first download already
    monkeypatch.setitem(dl.PUBLISHED_SHA256, http_server.url + "/p.zip", "0" * 64)
    http_server.files["/p.zip"] = data
    with pytest.raises(DataError, match=r"p\.zip: SHA-256 \w+ differs from the published 0{64}"):
        fetch_step(Step("p", (http_server.url + "/p.zip",), "splits"), tmp_path / "hmdb51", progress=False)
