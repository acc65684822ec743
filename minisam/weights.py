"""The weights registry and a resumable, checksummed downloader.

The registry (``minisam/registry.json``) lists the official files with URL, byte size,
MD5 (the 6 hex digits in each file name are its prefix) and SHA-256 (SAM_NOTES 3.1).

Where weights live: ``$MINISAM_WEIGHTS`` if set, else ``weights/`` of a source checkout,
else the user cache folder (``$XDG_CACHE_HOME/minisam`` or ``~/.cache/minisam``).

A download streams to ``NAME.part`` with a progress bar, resumes an interrupted ``.part``
with an HTTP Range request, checks the size and MD5, and only then renames the file to its
final name. A bad checksum, an HTTP error or a broken connection leaves nothing under the
final name and raises :class:`DownloadError` saying what happened.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from typing import Dict, Optional

from .errors import CheckpointError, DownloadError

_HERE = os.path.dirname(os.path.abspath(__file__))
CHUNK = 1 << 20


def registry() -> Dict[str, dict]:
    with open(os.path.join(_HERE, "registry.json")) as f:
        return json.load(f)


def weights_dir() -> str:
    env = os.environ.get("MINISAM_WEIGHTS")
    if env:
        return env
    checkout = os.path.join(os.path.dirname(_HERE), "weights")
    if os.path.isdir(checkout) and os.path.isfile(os.path.join(os.path.dirname(_HERE), "pyproject.toml")):
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
    return os.path.join(os.path.dirname(_HERE), "weights")


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

    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    part = dest + ".part"
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
            declared = resp.headers.get("Content-Length")
            expected_total = size if size is not None else (have + int(declared) if declared else None)
            mode = "ab" if have else "wb"
            got = 0
            try:
                with open(part, mode) as out, tqdm(total=expected_total, initial=have, unit="B", unit_scale=True,
                                                   desc=os.path.basename(dest), disable=not progress) as bar:
                    while True:
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        h.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
            except OSError as exc:  # broken connection, disk full, ...
                raise DownloadError(f"{url}: transfer interrupted after {have + got} bytes ({exc}); "
                                    f"the partial file {part} is kept for a resume") from None
            if declared is not None and got != int(declared):
                raise DownloadError(f"{url}: connection closed after {got} of {declared} bytes; "
                                    f"the partial file {part} is kept for a resume")
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


def download(name: str, progress: bool = True, force: bool = False) -> str:
    """Download registered weights ``name`` into :func:`weights_dir`."""
    e = entry(name)
    dest = path_of(name)
    if os.path.isfile(dest) and not force:
        return dest
    base = os.environ.get("MINISAM_WEIGHTS_BASE_URL")
    url = base.rstrip("/") + "/" + e["file"] if base else e["url"]
    return download_file(url, dest, e["md5"], e["bytes"], progress=progress)
