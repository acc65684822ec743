"""The weights registry and the downloader, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading

import pytest

from minisam import DownloadError
from minisam.checkpoints import registry as weights
from minisam.cli import main

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)   # a generated "checkpoint", 3 MB, several chunks
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    # behaviour per path; `cut` makes the server drop the connection after N bytes
    state = {"cut": None, "requests": []}

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.state["requests"].append((self.path, self.headers.get("Range")))
        if self.path == "/missing.pth":
            self.send_error(404, "Not Found")
            return
        body = PAYLOAD
        start = 0
        rng = self.headers.get("Range")
        if rng and self.path != "/norange.pth":
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        data = body[start:]
        if self.path == "/corrupt.pth":
            data = bytes([data[0] ^ 1]) + data[1:]
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        cut = self.state["cut"]
        if cut is not None:
            self.state["cut"] = None
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(data)


@pytest.fixture()
def server():
    _Handler.state = {"cut": None, "requests": []}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.state
    httpd.shutdown()
    httpd.server_close()


def test_registry_has_the_three_official_files_and_the_bundled_micro_model():
    reg = weights.registry()
    assert set(reg) == {"vit_b", "vit_l", "vit_h", "micro"}
    assert reg["micro"]["bundled"] and weights.download("micro") == weights.find("micro")
    for e in (reg[k] for k in ("vit_b", "vit_l", "vit_h")):
        assert e["md5"][:6] in e["file"] and len(e["md5"]) == 32 and len(e["sha256"]) == 64
        assert e["url"].endswith(e["file"])


def test_download_success(server, tmp_path):
    url, _ = server
    dest = tmp_path / "model.pth"
    weights.download_file(f"{url}/model.pth", str(dest), MD5, len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "model.pth.part").exists()


def test_download_resumes_after_interruption(server, tmp_path):
    url, state = server
    dest = tmp_path / "model.pth"
    state["cut"] = 1_000_000
    with pytest.raises(DownloadError, match="kept for a resume"):
        weights.download_file(f"{url}/model.pth", str(dest), MD5, len(PAYLOAD), progress=False)
    assert not dest.exists()
    assert (tmp_path / "model.pth.part").stat().st_size == 1_000_000
    weights.download_file(f"{url}/model.pth", str(dest), MD5, len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert state["requests"][-1] == ("/model.pth", "bytes=1000000-")


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    url, state = server
    dest = tmp_path / "m.pth"
    (tmp_path / "m.pth.part").write_bytes(b"garbage" * 100)
    weights.download_file(f"{url}/norange.pth", str(dest), MD5, len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    url, _ = server
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match="MD5 .* does not match"):
        weights.download_file(f"{url}/corrupt.pth", str(dest), MD5, len(PAYLOAD), progress=False)
    assert not dest.exists() and not (tmp_path / "model.pth.part").exists()


def test_404_leaves_nothing(server, tmp_path):
    url, _ = server
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match="HTTP 404"):
        weights.download_file(f"{url}/missing.pth", str(dest), MD5, len(PAYLOAD), progress=False)
    assert not dest.exists() and not (tmp_path / "model.pth.part").exists()


def test_cli_download_through_registry_and_verify(server, tmp_path, monkeypatch, capsys):
    """`minisam weights download` with a mirror base URL; a registry entry patched to the payload."""
    url, _ = server
    monkeypatch.setenv("MINISAM_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("MINISAM_WEIGHTS_BASE_URL", url)
    reg = weights.registry()
    reg["vit_b"].update(md5=MD5, bytes=len(PAYLOAD))
    monkeypatch.setattr(weights, "registry", lambda: reg)
    assert main(["weights", "download", "vit_b", "--no-progress"]) == 0
    assert (tmp_path / "sam_vit_b_01ec64.pth").read_bytes() == PAYLOAD
    assert main(["weights", "verify", "vit_b"]) == 0
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "vit_b: ok" in out and str(tmp_path) in out
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert main(["weights", "verify", "vit_b"]) == 1


def test_cli_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["weights"])
    assert e.value.code == 2
    assert main(["weights", "download", "vit_q"]) == 1
    assert "unknown weights 'vit_q'" in capsys.readouterr().err
