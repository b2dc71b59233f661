"""Faults of unpacking (issue 13): link tricks, archive bombs, a disk too small, corrupt archives.
Each test states the fault and what must survive it; nothing may be written before the checks pass.
(Checksums of downloads are tested in test_download.py, next to its local HTTP server.)"""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections import namedtuple

import pytest
from test_download import _files, _link, make_tar, make_zip

from twostream_lib.data import download as dl
from twostream_lib.data.download import safe_extract
from twostream_lib.errors import DataError, StorageError


@pytest.mark.fault
def test_a_tar_symlink_chain_is_refused_before_writing(tmp_path):
    """A tar symlink chain (a/b -> .., a/b/c -> .., a/b/c/x) that would write outside the target: refused by name, nothing written."""
    t = tmp_path / "chain.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        tf.addfile(_link("a/b", ".."))
        tf.addfile(_link("a/b/c", ".."))
        info = tarfile.TarInfo("a/b/c/x")
        info.size = 7
        tf.addfile(info, io.BytesIO(b"escaped"))
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(DataError, match=r"chain\.tar\.gz: refusing link member 'a/b'"):
        safe_extract(t, dest)
    assert _files(dest) == [] and not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()


@pytest.mark.fault
@pytest.mark.parametrize("kind", ["tar symlink", "tar hard link", "zip symlink"])
def test_link_members_are_refused_outright(tmp_path, kind):
    """A link member, even one pointing inside the target (the official archives hold none): refused by name before writing."""
    files = {"splits/classInd.txt": b"1 A\n"}
    if kind == "zip symlink":
        archive = make_zip(tmp_path / "l.zip", files, symlinks={"splits/alias.txt": "classInd.txt"})
    else:
        link = _link("splits/alias.txt", "splits/classInd.txt" if kind == "tar hard link" else "classInd.txt",
                     tarfile.LNKTYPE if kind == "tar hard link" else tarfile.SYMTYPE)
        archive = make_tar(tmp_path / "l.tar.gz", files, [link])
    with pytest.raises(DataError, match=r"refusing link member 'splits/alias\.txt'"):
        safe_extract(archive, tmp_path / "dest")
    assert _files(tmp_path / "dest") == []


@pytest.mark.fault
def test_a_member_under_a_link_in_the_target_is_refused(tmp_path):
    """The target already holds a link to elsewhere and a member would be written through it: refused, nothing written outside."""
    dest, elsewhere = tmp_path / "dest", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    (dest / "videos").symlink_to(elsewhere)
    z = make_zip(tmp_path / "v.zip", {"videos/A/v_A_g01_c01.avi": b"avi"})
    with pytest.raises(DataError, match=r"refusing member 'videos/A/v_A_g01_c01\.avi': .*link"):
        safe_extract(z, dest)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.fault
def test_a_zip_bomb_is_refused_before_writing(tmp_path):
    """A ~20 KB zip that expands to 20 MB (ratio ~1000:1, the 204 KB -> 210 MB case scaled down): refused naming the ratio, nothing written."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(20_000_000))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(DataError, match=r"bomb\.zip: .*compression ratio of \d+:1.*above"):
        safe_extract(bomb, tmp_path / "dest")
    assert _files(tmp_path / "dest") == []


@pytest.mark.fault
def test_size_cap_and_free_disk_are_checked_before_writing(tmp_path, monkeypatch):
    """An archive larger than the unpacking cap, or than the free disk: refused naming sizes and folder, nothing written."""
    z = make_zip(tmp_path / "big.zip", {"a.bin": os.urandom(600_000), "b.bin": os.urandom(600_000)})
    with pytest.raises(DataError, match=r"big\.zip: unpacks to 1\.2 MB, more than the cap of 1\.0 MB"):
        safe_extract(z, tmp_path / "dest", max_bytes=1_000_000)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 50_000, 50_000))
    with pytest.raises(StorageError, match=r"big\.zip unpacks to 1\.2 MB but only 0\.1 MB are free .*dest"):
        safe_extract(z, tmp_path / "dest")
    assert _files(tmp_path / "dest") == []


@pytest.mark.fault
def test_corrupt_archives_give_named_errors(tmp_path):
    """A truncated tar.gz and a zip with a damaged member: a DataError naming the archive (and member), no half-written member."""
    t = make_tar(tmp_path / "cut.tar.gz", {f"f{i}.bin": os.urandom(200_000) for i in range(3)})
    t.write_bytes(t.read_bytes()[:300_000])
    with pytest.raises(DataError, match=r"cut\.tar\.gz.*(corrupt|truncated)"):
        safe_extract(t, tmp_path / "t")
    z = make_zip(tmp_path / "crc.zip", {"good.txt": b"fine", "bad.bin": os.urandom(5000)})
    data = bytearray(z.read_bytes())
    at = data.index(b"bad.bin") + len(b"bad.bin") + 100  # inside the member's stored bytes
    data[at] ^= 0xFF
    z.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"crc\.zip: member 'bad\.bin' is corrupt"):
        safe_extract(z, tmp_path / "z")
    assert not (tmp_path / "z" / "bad.bin").exists()
