"""Downloads that go wrong beyond a broken connection (tests/test_weights.py has those):
a full disk, and servers whose Content-Length is longer or shorter than what they send.

Every case must end in :class:`DownloadError` saying what happened, and leave nothing under
the final file name. A local HTTP server on 127.0.0.1 plays the server.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import os
import re
import subprocess
import sys
import threading

import pytest

from minisam import DownloadError
from minisam.checkpoints import registry as weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYLOAD = os.urandom(2 * (1 << 20) + 4321)   # a generated "checkpoint", a few chunks
MD5 = hashlib.md5(PAYLOAD).hexdigest()
LIE = 1000                                   # how many bytes the lying servers add or drop


class _Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0: the connection closes after each response, so a short body ends in EOF.

    /ok.pth         the payload, honest headers, Range honoured
    /long.pth       announces LIE more bytes than it sends
    /short.pth      announces LIE fewer bytes than it sends
    /endless.pth    no Content-Length, sends the payload and then LIE bytes more
    """
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append((self.path, self.headers.get("Range")))
        start = 0
        rng = self.headers.get("Range")
        if rng and self.path == "/ok.pth":
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        data = PAYLOAD[start:]
        announced = {"/long.pth": len(data) + LIE, "/short.pth": len(data) - LIE}.get(self.path, len(data))
        if self.path == "/endless.pth":
            data = data + b"\0" * LIE
        else:
            self.send_header("Content-Length", str(announced))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading, as it should
            pass


@pytest.fixture()
def server():
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _nothing_final(tmp_path, name="model.pth"):
    return not (tmp_path / name).exists()


# ----------------------------------------------------------------------------- lying Content-Length

@pytest.mark.parametrize("path", ["/long.pth", "/short.pth"])
def test_content_length_disagreeing_with_the_registry_is_refused_before_writing(server, tmp_path, path):
    """With the registered size known, a wrong announcement is caught before a byte is written."""
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match=r"announces \d+ bytes, but the file is \d+ bytes") as e:
        weights.download_file(server + path, str(dest), MD5, len(PAYLOAD), progress=False)
    assert "nothing written to" in str(e.value)
    assert _nothing_final(tmp_path) and not (tmp_path / "model.pth.part").exists()


def test_content_length_longer_than_sent_without_registered_size(server, tmp_path):
    """The body ends early: the message says so, the .part is kept, the final name stays empty."""
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match=rf"announced {len(PAYLOAD) + LIE} bytes but the connection "
                                            rf"closed after {len(PAYLOAD)}") as e:
        weights.download_file(server + "/long.pth", str(dest), MD5, None, progress=False)
    assert "kept for a resume" in str(e.value)
    assert _nothing_final(tmp_path)
    assert (tmp_path / "model.pth.part").stat().st_size == len(PAYLOAD)


def test_content_length_shorter_than_sent_without_registered_size(server, tmp_path):
    """Only the announced bytes are read; the checksum then fails and the .part is removed."""
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match="MD5 .* does not match"):
        weights.download_file(server + "/short.pth", str(dest), MD5, None, progress=False)
    assert _nothing_final(tmp_path) and not (tmp_path / "model.pth.part").exists()


def test_server_sending_more_than_the_registered_size_is_cut_off(server, tmp_path):
    """No Content-Length and a body that does not end where it should: stop at the size, remove."""
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match=f"sent more than the expected {len(PAYLOAD)} bytes"):
        weights.download_file(server + "/endless.pth", str(dest), MD5, len(PAYLOAD), progress=False)
    assert _nothing_final(tmp_path) and not (tmp_path / "model.pth.part").exists()


# ----------------------------------------------------------------------------- disk full

class _FullDisk(io.RawIOBase):
    """A raw file that accepts ``room`` bytes, writes a partial chunk, then fails with ENOSPC."""

    def __init__(self, real, room):
        self.real, self.room = real, room

    def writable(self):
        return True

    def write(self, data):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real.write(bytes(data[:self.room]))
        self.room -= n
        return n

    def close(self):
        self.real.close()
        super().close()


def test_disk_full_leaves_nothing_under_the_final_name_and_resumes(server, tmp_path, monkeypatch):
    dest = tmp_path / "model.pth"
    room = 1_500_000                                      # not a multiple of the 1 MiB chunk

    def full_open(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return _FullDisk(f, room) if ("w" in mode or "a" in mode) else f

    monkeypatch.setattr(weights, "open", full_open, raising=False)
    with pytest.raises(DownloadError) as e:
        weights.download_file(server + "/ok.pth", str(dest), MD5, len(PAYLOAD), progress=False)
    msg = str(e.value)
    assert "No space left on device (disk full)" in msg and "nothing written to" in msg
    assert "model.pth.part" in msg and "resumes" in msg
    assert _nothing_final(tmp_path)
    assert (tmp_path / "model.pth.part").read_bytes() == PAYLOAD[:room]   # a correct prefix
    monkeypatch.undo()                                    # space freed: the next call resumes
    weights.download_file(server + "/ok.pth", str(dest), MD5, len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "model.pth.part").exists()
    assert _Handler.requests[-1] == ("/ok.pth", f"bytes={room}-")


WRITER = r"""
import resource, signal, sys
from minisam import DownloadError
from minisam.checkpoints import registry as weights
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)        # get EFBIG from write() instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
try:
    weights.download_file(sys.argv[1], sys.argv[2], sys.argv[4], int(sys.argv[5]), progress=False)
    print("NO ERROR")
except DownloadError as exc:
    print("DownloadError:", exc)
"""


def test_real_write_failure_from_the_kernel(server, tmp_path):
    """The same with a real failing write(2): a file-size limit in a child process (EFBIG)."""
    dest = tmp_path / "model.pth"
    res = subprocess.run([sys.executable, "-c", WRITER, server + "/ok.pth", str(dest), "1200000", MD5,
                          str(len(PAYLOAD))], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip()
    assert out.startswith("DownloadError: cannot write") and "File too large (file size limit)" in out, out
    assert _nothing_final(tmp_path)
    assert (tmp_path / "model.pth.part").read_bytes() == PAYLOAD[:1200000]
