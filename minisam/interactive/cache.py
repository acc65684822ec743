"""The image embedding cached on disk, so that reopening an image with the same model is instant.

Paper: Kirillov et al. 2023, section 3 ("Efficiency"): the image encoder runs once per image,
then any number of prompts are decoded from its embedding. Uses the embedding file of
:meth:`minisam.predictor.SamPredictor.save_embedding` (``segment_anything/predictor.py`` keeps
the embedding in memory only).

A cached file is named by two hashes: the decoded pixels (the [H, W, 3] uint8 RGB array that
``set_image`` encodes, with its shape) and the encoder (its weights and preprocessing, the key
``minisam finetune`` uses for its own embedding cache), plus the path that computed it (fast
kernels or the readable twin, whose float32 sums differ in the last bits). Another image, or
another model, never reuses a file. A file is written under a temporary name and renamed into
place when complete, so a killed process leaves no half-written file; a damaged file is
computed again.

Where the cache lives: ``$MINISAM_EMBEDDING_CACHE`` if set, else
``$XDG_CACHE_HOME/minisam/embeddings``, else ``~/.cache/minisam/embeddings``. A vit_b
embedding is 4 MB (256 x 64 x 64 float32); delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import weakref
from typing import Optional, Tuple

import numpy as np

from minisam.errors import ImageError, MinisamWarning

CACHE_ENV = "MINISAM_EMBEDDING_CACHE"

_encoder_ids: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # Sam -> encoder hash


def embedding_cache_dir() -> str:
    """The folder of cached embeddings (module docstring: env var, then the XDG cache folder)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minisam", "embeddings")


def image_digest(image: np.ndarray) -> str:  # [H, W, 3] uint8
    """Hash of the decoded pixels and their shape (hex)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).view(np.uint8).ravel())
    return h.hexdigest()


def encoder_id(sam) -> str:
    """Hash of the image encoder's weights and preprocessing (hex), computed once per model object
    (hashing vit_h's 2.5 GB of weights takes seconds). Weights changed in place after the first
    call are not seen: build a new model object after editing weights."""
    known = _encoder_ids.get(sam)
    if known is None:
        from minisam.training.finetune import model_identity
        known = model_identity(sam)["encoder"]
        _encoder_ids[sam] = known
    return known


def embedding_path(predictor, image: np.ndarray, folder: Optional[str] = None) -> str:  # [H, W, 3] uint8 RGB
    """Where the embedding of ``image`` under ``predictor``'s model and path is (or would be) cached."""
    path_kind = "fast" if predictor.fast else "readable"
    name = f"{image_digest(image)[:24]}-{encoder_id(predictor.model)[:24]}-{path_kind}.npz"
    return os.path.join(folder or embedding_cache_dir(), name)


def set_image_cached(predictor, image: np.ndarray, folder: Optional[str] = None) -> Tuple[bool, Optional[str]]:
    """``predictor.set_image(image)``, from the cache when it holds this image and model.

    ``image`` is [H, W, 3] uint8 RGB (what ``set_image`` encodes). Returns (loaded from the
    cache, path of the cached file or None when the cache folder cannot be written, which
    warns once and leaves the embedding in memory only).
    """
    path = embedding_path(predictor, image, folder)
    if os.path.isfile(path):
        try:
            predictor.load_embedding(path)
            if predictor.original_size == tuple(image.shape[:2]):
                return True, path
        except ImageError:  # damaged or from another version: computed again below
            pass
    predictor.set_image(image)
    try:
        write_atomic(path, predictor.save_embedding)
    except OSError as exc:
        warnings.warn(f"cannot cache the image embedding in {os.path.dirname(path)} "
                      f"({exc.strerror or exc}); set {CACHE_ENV} to a writable folder", MinisamWarning,
                      stacklevel=2)
        return False, None
    return False, path


def write_atomic(path: str, write) -> None:
    """``write(tmp)`` writes a temporary file beside ``path``, renamed over it once complete: a
    killed process leaves the old file or the new one, never half of one. Raises OSError."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.part")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
