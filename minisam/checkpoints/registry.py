"""The weights registry and a resumable, checksummed downloader.

The registry (``minisam/checkpoints/registry.json``) lists the official files with URL, byte size,
MD5 (the 6 hex digits in each file name are its prefix) and SHA-256 (``docs/numerics.md`` section 7).

Where weights live: ``$MINISAM_WEIGHTS`` if set, else ``weights/`` of a source checkout,
else the user cache folder (``$XDG_CACHE_HOME/minisam`` or ``~/.cache/minisam``).

A download streams to ``NAME.part`` with a progress bar, resumes an interrupted ``.part``
with an HTTP Range request, checks the size and MD5, and only then renames the file to its
final name. A bad checksum, an HTTP error, a broken connection, a full disk or a server whose
Content-Length disagrees with the registered size or with what it sends leaves nothing under
the final name and raises :class:`DownloadError` saying what happened.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from typing import Dict, Optional

from minisam.errors import CheckpointError, DownloadError

_HERE = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(os.path.dirname(_HERE))  # the source checkout, when installed with -e
CHUNK = 1 << 20


def registry() -> Dict[str, dict]:
    with open(os.path.join(_HERE, "registry.json")) as f:
        return json.load(f)


def weights_dir() -> str:
    env = os.environ.get("MINISAM_WEIGHTS")
    if env:
        return env
    checkout = os.path.join(_CHECKOUT, "weights")
    if os.path.isdir(checkout) and os.path.isfile(os.path.join(_CHECKOUT, "pyproject.toml")):
        return checkout
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minisam")


def entry(name: str) -> dict:
    reg = registry()
    if name == "default":
        name = "vit_h"
    if name not in reg:
        raise CheckpointError(f"unknown weights {name!r}; known: {sorted(reg)}")
    return reg[name]


def path_of(name: str) -> str:
    return os.path.join(weights_dir(), entry(name)["file"])


def bundled_dir() -> str:
    """``weights/`` of the source checkout, where the shipped micro model lives."""
    return os.path.join(_CHECKOUT, "weights")


def find(name: str) -> str:
    """The local path of registered weights ``name``; a clear error if not downloaded."""
    path = path_of(name)
    if not os.path.isfile(path) and entry(name).get("bundled"):
        path = os.path.join(bundled_dir(), entry(name)["file"])
    if not os.path.isfile(path):
        raise CheckpointError(f"weights {name!r} are not downloaded (looked for {path}); "
                              f"run `minisam weights download {name}` or pass checkpoint=PATH")
    return path


def file_md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(name: str, path: Optional[str] = None) -> bool:
    """True when the file has the registered size and MD5."""
    e = entry(name)
    path = path or path_of(name)
    return os.path.isfile(path) and os.path.getsize(path) == e["bytes"] and file_md5(path) == e["md5"]


def download_file(url: str, dest: str, md5: str, size: Optional[int] = None, progress: bool = True,
                  timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest`` through ``dest + '.part'``, resuming, checking size and MD5.

    Returns ``dest``. On success the file appears under its final name only after the MD5
    matched. A connection that breaks keeps the ``.part`` for the next call to resume; a
    checksum or size mismatch deletes it (its bytes are wrong).
    """
    from tqdm import tqdm

    part = dest + ".part"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the folder of {dest}: {exc.strerror or exc}") from None
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if size is not None and have > size:
        os.remove(part)
        have = 0
    h = hashlib.md5()
    if have:
        with open(part, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
    req = urllib.request.Request(url, headers={"User-Agent": "minisam"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and size is not None and have == size:
            resp = None  # the .part is already complete
        else:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; nothing written to {dest}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)}); nothing written to {dest}") from None
    if resp is not None:
        with resp:
            if have and resp.status != 206:  # server ignored Range: start over
                have, h = 0, hashlib.md5()
            declared = _content_length(resp, url)
            if size is not None and declared is not None and have + declared != size:
                raise DownloadError(f"{url}: the server announces {declared} bytes"
                                    f"{f' after the {have} already here' if have else ''}, but the file is "
                                    f"{size} bytes; nothing written to {dest}")
            expected_total = size if size is not None else (have + declared if declared is not None else None)
            mode = "ab" if have else "wb"
            got = 0
            try:  # unbuffered, so that a failed write is reported here and not again when the file closes
                out = open(part, mode, buffering=0)
            except OSError as exc:
                raise DownloadError(f"cannot write {part}: {exc.strerror or exc}; nothing written to {dest}") from None
            with out, tqdm(total=expected_total, initial=have, unit="B", unit_scale=True,
                           desc=os.path.basename(dest), disable=not progress) as bar:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:  # reset, timeout, bad chunking
                        raise DownloadError(f"{url}: transfer interrupted after {have + got} bytes "
                                            f"({type(exc).__name__}: {exc}); nothing written to {dest}, the partial "
                                            f"file {part} is kept for a resume") from None
                    if not chunk:
                        break
                    if size is not None and have + got + len(chunk) > size:
                        out.close()
                        os.remove(part)
                        raise DownloadError(f"{url}: the server sent more than the expected {size} bytes; "
                                            f"removed {part}, nothing written to {dest}")
                    try:
                        _write_all(out, chunk)
                    except OSError as exc:
                        full = {errno.ENOSPC: " (disk full)", errno.EDQUOT: " (disk quota exceeded)",
                                errno.EFBIG: " (file size limit)"}.get(exc.errno, "")
                        raise DownloadError(f"cannot write {part} after {have + got} bytes: "
                                            f"{exc.strerror or exc}{full}; nothing written to {dest}; the partial "
                                            "file is kept so that a later call resumes once there is room "
                                            "(delete it to free the space)") from None
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if declared is not None and got != declared:
                raise DownloadError(f"{url}: the server announced {declared} bytes but the connection closed "
                                    f"after {got}; nothing written to {dest}, the partial file {part} is kept "
                                    f"for a resume")
    total = os.path.getsize(part)
    if size is not None and total != size:
        if total < size:
            raise DownloadError(f"{url}: got {total} of {size} bytes; the partial file {part} is kept for a resume")
        os.remove(part)
        raise DownloadError(f"{url}: got {total} bytes, expected {size}; removed {part}")
    digest = h.hexdigest()
    if digest != md5:
        os.remove(part)
        raise DownloadError(f"{url}: MD5 {digest} does not match the registered {md5}; removed {part}, "
                            f"nothing written to {dest}")
    os.replace(part, dest)
    return dest


def _write_all(out, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered file (a raw write may write only part of it)."""
    view = memoryview(data)
    while view:
        n = out.write(view)
        if not n:
            raise OSError(errno.ENOSPC, "no bytes written")
        view = view[n:]


def _content_length(resp, url: str) -> Optional[int]:
    """The response's Content-Length as an int, None when absent; a clear error when malformed."""
    text = resp.headers.get("Content-Length")
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise DownloadError(f"{url}: the server sent a malformed Content-Length {text!r}")
    return value


def download(name: str, progress: bool = True, force: bool = False) -> str:
    """Download registered weights ``name`` into :func:`weights_dir` (bundled ones ship with minisam)."""
    e = entry(name)
    if e.get("bundled"):
        return find(name)
    dest = path_of(name)
    if os.path.isfile(dest) and not force:
        return dest
    base = os.environ.get("MINISAM_WEIGHTS_BASE_URL")
    url = base.rstrip("/") + "/" + e["file"] if base else e["url"]
    return download_file(url, dest, e["md5"], e["bytes"], progress=progress)
