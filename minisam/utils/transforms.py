"""Preprocessing: resize the longest side to 1024, normalize, pad; and the input image checks.

Paper: Kirillov et al. 2023, appendix A ("Image encoder": the input is rescaled so the
longest side is 1024 and the shorter side is padded). Official code mirrored:
``segment_anything/utils/transforms.py`` (ResizeLongestSide), ``modeling/sam.py``
(``Sam.preprocess``) and ``predictor.py`` (``SamPredictor.set_image``). Numerics: SAM_NOTES 2.1.

The resize is Pillow's BILINEAR resampler (an antialiased fixed-point convolution, not
OpenCV's or PyTorch's bilinear): the official code reaches it through torchvision's
``resize`` on a PIL image, which calls ``PIL.Image.resize((neww, newh), BILINEAR)``. We call
Pillow the same way, so the resized pixels are bit-identical to the official ones.

Shape alphabet: B images, H, W original size, h, w resized size, S model input side (1024).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Tuple

import numpy as np
from PIL import Image

from minisam.config import SamConfig
from minisam.errors import ImageError


class ResizeLongestSide:
    """Resize images so the longest side is ``target_length``, and map prompts to match."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        """(newh, neww): scale = L / max(h, w) in float64, each side rounded half up."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        newh, neww = oldh * scale, oldw * scale
        return int(newh + 0.5), int(neww + 0.5)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """[H, W, 3] uint8 -> [h, w, 3] uint8, via Pillow BILINEAR exactly as the official code."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or 0 in image.shape:
            raise ImageError(f"apply_image expects a non-empty HxWxC uint8 array, got {image.dtype} {image.shape}")
        newh, neww = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        if (newh, neww) == image.shape[:2]:
            return image.copy()                           # torchvision returns the image untouched
        pil = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
        return np.array(pil.resize((neww, newh), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """[..., 2] (x, y) in the original image -> float64 [..., 2] in the resized image."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = deepcopy(coords).astype(float)                                # [..., 2] float64
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """[N, 4] (x0, y0, x1, y1) -> float64 [N, 4] in the resized image."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)


def preprocess(x: np.ndarray, cfg: SamConfig) -> np.ndarray:
    """``Sam.preprocess``: normalize, then zero-pad bottom/right.  [B, 3, h, w] -> float32 [B, 3, S, S]

    uint8 or float input; everything is computed in float32 with float32 constants and a true
    division by std (not a multiplication by 1/std), as PyTorch does, so the result is bit-identical.
    The padding is 0 in normalized space (it is added after normalization).
    """
    x = np.asarray(x)
    S = cfg.img_size
    if x.ndim != 4 or x.shape[1] != 3:
        raise ImageError(f"preprocess expects [B, 3, h, w], got shape {x.shape}")
    B, _, h, w = x.shape
    if h > S or w > S or h == 0 or w == 0:
        raise ImageError(f"preprocess expects 1 <= h, w <= {S} (resize first), got {h}x{w}")
    mean = np.asarray(cfg.pixel_mean, np.float32)[:, None, None]           # [3, 1, 1]
    std = np.asarray(cfg.pixel_std, np.float32)[:, None, None]             # [3, 1, 1]
    out = np.zeros((B, 3, S, S), np.float32)                               # [B, 3, S, S]
    out[:, :, :h, :w] = (x.astype(np.float32) - mean) / std                # [B, 3, h, w]
    return out


def as_rgb_uint8(image, image_format: str = "RGB") -> np.ndarray:
    """Any reasonable image array -> C-contiguous [H, W, 3] uint8 RGB, or ImageError.

    - [H, W, 3] uint8: used as is (``image_format="BGR"`` flips the channels, as
      ``SamPredictor.set_image`` does);
    - greyscale [H, W] or [H, W, 1]: the one channel repeated three times;
    - [H, W, 4] (RGBA / BGRA): the alpha channel is dropped;
    - other integer dtypes: accepted when every value is in 0..255;
    - float dtypes: accepted only when every value is a whole number in 0..255 (an
      image stored as float). Floats in [0, 1] are refused rather than guessed at: scale
      them yourself with ``(img * 255).round().astype(np.uint8)``;
    - anything else (bool, complex, object, wrong ndim, zero size, NaN) raises ImageError.
    """
    if image_format not in ("RGB", "BGR"):
        raise ImageError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    try:
        image = np.asarray(image)
    except Exception as exc:  # ragged lists and the like
        raise ImageError(f"not an image array: {exc}") from exc
    if image.ndim not in (2, 3):
        raise ImageError(f"expected an HxW or HxWxC image, got an array of shape {image.shape}")
    if image.size == 0:
        raise ImageError(f"empty image of shape {image.shape}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ImageError(f"expected 1, 3 or 4 channels (last axis), got shape {image.shape}")
    image = _to_uint8(image)
    if image.ndim == 2:
        image = image[:, :, None]                                          # [H, W, 1]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)                                # [H, W, 3]
    elif image.shape[2] == 4:
        image = image[:, :, :3]                                            # [H, W, 3] drop alpha
    if image_format == "BGR":
        image = image[:, :, ::-1]                                          # [H, W, 3] BGR -> RGB
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_ or not (np.issubdtype(image.dtype, np.integer)
                                       or np.issubdtype(image.dtype, np.floating)):
        raise ImageError(f"image dtype {image.dtype} is not supported; give uint8 pixels in 0..255")
    if np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)):
            raise ImageError("float image contains NaN or infinity")
        if np.any(image != np.round(image)):
            raise ImageError(
                f"float image with fractional values (range {float(image.min()):g}..{float(image.max()):g}); "
                "minisam does not guess the scale: pass uint8, e.g. (img * 255).round().astype(np.uint8)")
    lo, hi = image.min(), image.max()
    if lo < 0 or hi > 255:
        raise ImageError(f"{image.dtype} image has values {lo}..{hi}, outside 0..255")
    return image.astype(np.uint8)
