"""minisam.utils.transforms against the official ResizeLongestSide, Sam.preprocess and set_image.

Everything here must be BIT-identical (assert_array_equal): the resize is the same Pillow
call, and normalization is the same float32 subtract-and-divide.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from segment_anything.modeling.sam import Sam
from segment_anything.utils.transforms import ResizeLongestSide as RefResize

from minisam.config import VIT_B
from minisam.errors import ImageError
from minisam.utils.images import to_rgb_uint8
from minisam.utils.transforms import ResizeLongestSide, preprocess

# smaller and larger than 1024, portrait, landscape, square, 1-pixel thin, already 1024
SIZES = [(600, 900), (1500, 2250), (1999, 777), (17, 5), (1, 700), (1300, 1), (1, 1), (1024, 1024),
         (1023, 1025), (513, 1024), (2048, 2048)]


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed + h * 7 + w)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # add smooth structure so the antialiasing filter is exercised on edges, not only noise
    yy, xx = np.mgrid[0:h, 0:w]
    base[..., 0] = ((xx * 3 + yy) % 256).astype(np.uint8)
    return base


def _official_preprocess(x_uint8_bchw, cfg=VIT_B):
    fake = SimpleNamespace(pixel_mean=torch.Tensor(list(cfg.pixel_mean)).view(-1, 1, 1),
                           pixel_std=torch.Tensor(list(cfg.pixel_std)).view(-1, 1, 1),
                           image_encoder=SimpleNamespace(img_size=cfg.img_size))
    return Sam.preprocess(fake, torch.as_tensor(x_uint8_bchw)).numpy()


@pytest.mark.parametrize("h,w", SIZES)
def test_resize_and_preprocess_bit_identical(h, w):
    img = _image(h, w)
    ref = RefResize(1024).apply_image(img)
    ours = ResizeLongestSide(1024).apply_image(img)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)
    assert ResizeLongestSide.get_preprocess_shape(h, w, 1024) == RefResize.get_preprocess_shape(h, w, 1024)
    chw = ours.transpose(2, 0, 1)[None]                                    # [1, 3, h, w]
    np.testing.assert_array_equal(preprocess(chw, VIT_B), _official_preprocess(chw))


def test_preprocess_float_input_and_batch():
    x = np.random.default_rng(1).uniform(0, 255, (2, 3, 100, 37)).astype(np.float32)
    np.testing.assert_array_equal(preprocess(x, VIT_B), _official_preprocess(x))


@pytest.mark.parametrize("h,w", [(600, 900), (1, 700), (1999, 777)])
def test_coords_and_boxes(h, w):
    rng = np.random.default_rng(2)
    coords = rng.uniform(0, max(h, w), (5, 3, 2))
    boxes = rng.uniform(0, max(h, w), (4, 4))
    ref, ours = RefResize(1024), ResizeLongestSide(1024)
    np.testing.assert_array_equal(ours.apply_coords(coords, (h, w)), ref.apply_coords(coords, (h, w)))
    np.testing.assert_array_equal(ours.apply_boxes(boxes, (h, w)), ref.apply_boxes(boxes, (h, w)))
    ints = rng.integers(0, 500, (3, 2))
    assert ours.apply_coords(ints, (h, w)).dtype == np.float64


def test_to_rgb_uint8_formats():
    rgb = _image(13, 9)
    np.testing.assert_array_equal(to_rgb_uint8(rgb), rgb)
    # BGR is flipped exactly as SamPredictor.set_image does (image[..., ::-1])
    np.testing.assert_array_equal(to_rgb_uint8(rgb[..., ::-1], "BGR"), rgb)
    grey = rgb[..., 1]
    np.testing.assert_array_equal(to_rgb_uint8(grey), np.stack([grey] * 3, -1))
    np.testing.assert_array_equal(to_rgb_uint8(grey[..., None]), np.stack([grey] * 3, -1))
    rgba = np.concatenate([rgb, np.full((13, 9, 1), 7, np.uint8)], -1)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgba[..., [2, 1, 0, 3]], "BGR"), rgb)
    # whole-valued floats and in-range ints are images stored in a wider dtype
    np.testing.assert_array_equal(to_rgb_uint8(rgb.astype(np.float64)), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgb.astype(np.int64)), rgb)
    out = to_rgb_uint8(rgb[:, ::2])
    assert out.flags.c_contiguous and out.dtype == np.uint8


def test_set_image_pipeline_matches_official_bgr_and_grey():
    """to_rgb_uint8 + apply_image + preprocess == the official set_image path (BGR input)."""
    img = _image(300, 451)
    bgr = np.ascontiguousarray(img[..., ::-1])
    ref_img = RefResize(1024).apply_image(bgr[..., ::-1])                  # set_image flips, then resizes
    ref = _official_preprocess(torch.as_tensor(ref_img).permute(2, 0, 1).contiguous()[None].numpy())
    t = ResizeLongestSide(1024).apply_image(to_rgb_uint8(bgr, "BGR"))
    np.testing.assert_array_equal(preprocess(t.transpose(2, 0, 1)[None], VIT_B), ref)


@pytest.mark.parametrize("bad", [
    np.zeros((0, 5, 3), np.uint8), np.zeros((4, 0), np.uint8), np.zeros((2, 3, 4, 5), np.uint8),
    np.zeros(7, np.uint8), np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), bool),
    np.full((4, 4, 3), 1.5), np.full((4, 4, 3), np.nan), np.full((4, 4, 3), 300, np.int32),
    np.full((4, 4, 3), -1, np.int16), np.zeros((4, 4, 3), complex), "not an image"])
def test_to_rgb_uint8_refuses(bad):
    with pytest.raises(ImageError):
        to_rgb_uint8(bad)


def test_bad_format_and_preprocess_shapes():
    with pytest.raises(ImageError):
        to_rgb_uint8(np.zeros((4, 4, 3), np.uint8), "RGBA")
    with pytest.raises(ImageError):
        preprocess(np.zeros((1, 3, 1025, 10), np.uint8), VIT_B)
    with pytest.raises(ImageError):
        preprocess(np.zeros((3, 10, 10), np.uint8), VIT_B)
