"""Preprocessing: resize the longest side to 1024, normalize, pad; and the input image checks.

Paper: Kirillov et al. 2023, appendix A ("Image encoder": the input is rescaled so the
longest side is 1024 and the shorter side is padded). Official code mirrored:
``segment_anything/utils/transforms.py`` (ResizeLongestSide), ``modeling/sam.py``
(``Sam.preprocess``) and ``predictor.py`` (``SamPredictor.set_image``). Numerics: ``docs/numerics.md``
sections 1.1 and 2.

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
from minisam.errors import ImageError, NotSupportedError
from minisam.utils.tensors import first_tensor, like, to_numpy


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

    def apply_image_torch(self, image):
        """Not provided: the official method resizes a float [B, 3, H, W] tensor with torch's
        antialiased ``F.interpolate``, a different resampler from the Pillow one of
        :meth:`apply_image` that minisam's pipeline (and the official predictor) uses."""
        raise NotSupportedError("ResizeLongestSide.apply_image_torch (torch's antialiased interpolate) is not "
                                "provided by minisam; resize with apply_image on the HxWx3 uint8 image, as "
                                "SamPredictor.set_image does")

    def apply_coords_torch(self, coords, original_size: Tuple[int, ...]):
        """[..., 2] (x, y) -> float32 [..., 2] in the resized image, in float32 arithmetic as the
        official tensor method computes it (the scale factor is rounded to float32 first).

        Takes an ndarray or a torch tensor and returns the same kind (:mod:`minisam.utils.tensors`).
        """
        tensor = first_tensor([coords])
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        out = np.array(to_numpy(coords), dtype=np.float32)                      # [..., 2] float32 copy
        with np.errstate(over="ignore"):
            out[..., 0] = out[..., 0] * np.float32(new_w / old_w)
            out[..., 1] = out[..., 1] * np.float32(new_h / old_h)
        return like(tensor, out)

    def apply_boxes_torch(self, boxes, original_size: Tuple[int, ...]):
        """[N, 4] (x0, y0, x1, y1) -> float32 [N, 4], as :meth:`apply_coords_torch` (ndarray or tensor)."""
        tensor = first_tensor([boxes])
        b = np.asarray(to_numpy(boxes)).reshape(-1, 2, 2)                       # [N, 2, 2]
        return like(tensor, self.apply_coords_torch(b, original_size).reshape(-1, 4))


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
