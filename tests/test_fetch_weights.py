"""``python -m twostream_lib fetch weights``: the ImageNet VGG-M-2048 network where the paper profile expects
it, checked (first bytes, size, SHA-256 recorded on the first download), against a local HTTP server only."""
from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import pytest

from twostream_lib.config import PROFILES, REPO_ROOT
from twostream_lib.data import download as dl
from twostream_lib.errors import ConfigError, DataError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_download import http_server  # noqa: E402,F401  (the local server fixture)

MAT = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Jan  4 12:00:00 2016" + bytes(range(256)) * 400


@pytest.fixture
def local_weights(http_server, monkeypatch):  # noqa: F811
    """The VGG-M-2048 entry pointed at the local server, with a size floor that a test file can meet."""
    http_server.files["/imagenet-vgg-m-2048.mat"] = MAT
    w = dataclasses.replace(dl.WEIGHTS["vgg_m_2048"], url=http_server.url + "/imagenet-vgg-m-2048.mat",
                            min_bytes=len(MAT) // 2)
    monkeypatch.setitem(dl.WEIGHTS, "vgg_m_2048", w)
    return http_server


def test_the_entry_is_the_matconvnet_file_the_paper_profile_expects():
    w = dl.WEIGHTS["vgg_m_2048"]
    assert w.url == "http://www.vlfeat.org/matconvnet/models/imagenet-vgg-m-2048.mat"
    assert w.file == "imagenet-vgg-m-2048.mat" and w.magic == b"MATLAB 5.0 MAT-file"
    assert PROFILES["paper"].path(PROFILES["paper"].weights) == REPO_ROOT / "data" / "weights" / w.file


def test_fetch_weights_downloads_verifies_and_records_the_digest(tmp_path, local_weights, capsys):
    code = dl.cli_main(["fetch", "weights", "--root", str(tmp_path / "data"), "--quiet"])
    path = tmp_path / "data" / "weights" / "imagenet-vgg-m-2048.mat"
    assert code == 0 and path.read_bytes() == MAT
    digest = hashlib.sha256(MAT).hexdigest()
    assert (path.parent / "weights.sha256").read_text() == f"{digest}  imagenet-vgg-m-2048.mat\n"
    assert str(path) in capsys.readouterr().out
    assert dl.fetch_weights(tmp_path / "data", progress=False) == [path]  # there and intact: no request
    assert len(local_weights.requests) == 1
    path.write_bytes(MAT[:-1] + b"!")  # damaged on disk: named with both digests
    with pytest.raises(DataError, match=rf"imagenet-vgg-m-2048\.mat: SHA-256 \w+ differs .* {digest}"):
        dl.fetch_weights(tmp_path / "data", progress=False)
    with pytest.raises(ConfigError, match="vgg16"):
        dl.fetch_weights(tmp_path / "data", ["vgg16"], progress=False)


def test_fetch_weights_resumes_a_partial_download(tmp_path, local_weights):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "imagenet-vgg-m-2048.mat.part").write_bytes(MAT[:5000])
    assert dl.fetch_weights(tmp_path, progress=False)[0].read_bytes() == MAT
    assert local_weights.requests == [("/imagenet-vgg-m-2048.mat", "bytes=5000-")]


def test_what_is_not_the_network_is_moved_aside_and_not_recorded(tmp_path, local_weights):
    local_weights.files["/imagenet-vgg-m-2048.mat"] = b"<!DOCTYPE html><html>moved</html>" * 3000
    with pytest.raises(DataError, match=r"imagenet-vgg-m-2048\.mat starts with b'<!DOCTYPE html>.*not the network"):
        dl.fetch_weights(tmp_path, progress=False)
    folder = tmp_path / "weights"
    assert sorted(p.name for p in folder.iterdir()) == ["imagenet-vgg-m-2048.mat.rejected"]
    local_weights.files["/imagenet-vgg-m-2048.mat"] = MAT[:1000]  # truncated at the source
    with pytest.raises(DataError, match=r"is 1000 bytes, less than the \d+ of this network"):
        dl.fetch_weights(tmp_path, progress=False)
    assert not (folder / "weights.sha256").exists()
    local_weights.files["/imagenet-vgg-m-2048.mat"] = MAT  # the next fetch downloads again
    assert dl.fetch_weights(tmp_path, progress=False)[0].read_bytes() == MAT
