"""Images nobody should have to pre-clean: each is converted by the documented rule
(``minisam/utils/images.py``) or refused with :class:`ImageError` naming the file or the shape.

Where the official tooling has an answer (``scripts/amg.py`` reads files with ``cv2.imread``)
the converted pixels are compared with OpenCV's, exactly: alpha dropped, palette expanded,
16-bit reduced to the high byte, all eight EXIF orientations applied. Sizes: 1 x 1 works end
to end and matches the official predictor; zero-size is refused; images over the pixel limit
are refused from their header, before any pixel is decoded, in a child process with an
address-space limit so that a regression cannot take the machine's memory.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from minisam import ImageError
from minisam.utils.images import MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, read_image, to_rgb_uint8
from minisam.checkpoints.param_tree import nest
from minisam.predictor import SamPredictor
from minisam.modeling.sam import Sam

from conftest import TINY_CONFIGS, official_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 17, 3), dtype=np.uint8)          # [H, W, 3]


def cv2_rgb(path) -> np.ndarray:
    """What the official scripts/amg.py reads: cv2.imread (BGR, 8-bit, EXIF applied) -> RGB."""
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int, colour_type: int = 2) -> bytes:
    """A PNG that declares width x height but carries one row of data: decoding it would first
    allocate the whole image, so it shows whether the size is checked from the header."""
    channels = {0: 1, 2: 3}[colour_type]
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(bytes(1 + width * channels)))
            + _chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- files: modes

def test_greyscale_palette_and_alpha_files_match_cv2(tmp_path):
    grey = RGB[..., 0]
    rgba = np.dstack([RGB, RNG.integers(0, 256, RGB.shape[:2], dtype=np.uint8)])   # [H, W, 4]
    rgba[0, 0, 3] = 0                                   # a fully transparent pixel keeps its colour
    files = {
        "L.png": Image.fromarray(grey),
        "LA.png": Image.fromarray(np.dstack([grey, grey // 2]), "LA"),
        "RGBA.png": Image.fromarray(rgba, "RGBA"),
        "P.png": Image.fromarray(RGB).quantize(colors=16),
        "1.png": Image.fromarray(grey > 128),
    }
    p_trans = Image.fromarray(RGB).quantize(colors=16)
    p_trans.info["transparency"] = 3
    files["P_transparent.png"] = p_trans
    for name, im in files.items():
        im.save(tmp_path / name)
        got = read_image(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == RGB.shape and got.flags.c_contiguous, name
        np.testing.assert_array_equal(got, cv2_rgb(tmp_path / name), err_msg=name)
    np.testing.assert_array_equal(read_image(tmp_path / "L.png"), np.repeat(grey[..., None], 3, 2))
    np.testing.assert_array_equal(read_image(tmp_path / "RGBA.png"), RGB)      # alpha dropped, not composited


def test_16_bit_files_take_the_high_byte_as_cv2(tmp_path):
    deep = RNG.integers(0, 65536, (9, 11), dtype=np.uint16)
    deep[0, :4] = [0, 255, 256, 65535]
    Image.fromarray(deep).save(tmp_path / "I16.png")
    assert Image.open(tmp_path / "I16.png").mode == "I;16"
    got = read_image(tmp_path / "I16.png")
    np.testing.assert_array_equal(got[..., 0], (deep >> 8).astype(np.uint8))
    np.testing.assert_array_equal(got, cv2_rgb(tmp_path / "I16.png"))
    assert got[0, :4, 0].tolist() == [0, 0, 1, 255]     # Pillow's convert("L") would give 0, 255, 255, 255
    # 16-bit PGM opens as Pillow mode I (int32): same rule
    (tmp_path / "deep.pgm").write_bytes(b"P5\n11 9\n65535\n" + deep.astype(">u2").tobytes())
    assert Image.open(tmp_path / "deep.pgm").mode == "I"
    np.testing.assert_array_equal(read_image(tmp_path / "deep.pgm"), got)
    # mode I outside 0..65535 has no defined scale
    Image.fromarray(np.array([[-5, 70000]], np.int32)).save(tmp_path / "I32.tif")
    with pytest.raises(ImageError, match=r"I32\.tif: 32-bit integer image with values -5\.\.70000"):
        read_image(tmp_path / "I32.tif")


def test_float_tiff_files_follow_the_float_array_rule(tmp_path):
    unit = RNG.random((6, 7)).astype(np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "unit.tif")[..., 0], np.rint(unit * 255).astype(np.uint8))
    Image.fromarray(unit * 1000).save(tmp_path / "wide.tif")
    with pytest.raises(ImageError, match=r"wide\.tif: .*fractional values"):
        read_image(tmp_path / "wide.tif")


def test_cmyk_jpeg(tmp_path):
    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    got = read_image(tmp_path / "cmyk.jpg")
    # JPEG at quality 100 on naive CMYK: within a few levels of the original (measured: max 1 on a smooth
    # image; this random image is all edges, so chroma rounding moves more); OpenCV agrees just as closely
    assert got.shape == RGB.shape and np.abs(got.astype(int) - RGB).mean() < 4
    assert np.abs(got.astype(int) - cv2_rgb(tmp_path / "cmyk.jpg")).mean() < 2


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_as_cv2(tmp_path, orientation):
    H, W = 40, 64
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :W // 2] = (220, 30, 30)                     # left half red, right half blue over green
    img[:H // 2, W // 2:] = (30, 30, 220)
    img[H // 2:, W // 2:] = (30, 200, 30)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(img).save(path, exif=exif.tobytes(), quality=95)
    got = read_image(path)
    assert got.shape == ((H, W, 3) if orientation <= 4 else (W, H, 3))
    np.testing.assert_array_equal(got, cv2_rgb(path))  # the same libjpeg decode, the same rotation
    if orientation == 6:                                # "rotate 90 CW to display": left half goes to the top
        assert got[5, got.shape[1] // 2, 0] > 180 and got[-5, 5, 1] > 150


# ----------------------------------------------------------------------------- files: refusals

def test_missing_folder_text_empty_and_truncated_files(tmp_path):
    cases = {}
    cases[str(tmp_path / "nope.png")] = "nope.png: no such file"
    cases[str(tmp_path)] = "is a folder"
    (tmp_path / "notes.png").write_text("this is not an image\n")
    cases[str(tmp_path / "notes.png")] = r"notes\.png: cannot read as an image"
    (tmp_path / "empty.jpg").write_bytes(b"")
    cases[str(tmp_path / "empty.jpg")] = r"empty\.jpg: cannot read as an image"
    (tmp_path / "zero.png").write_bytes(png_header_only(0, 5))
    cases[str(tmp_path / "zero.png")] = r"zero\.png: cannot read as an image"
    big = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for ext in ("png", "jpg"):
        Image.fromarray(big).save(tmp_path / f"full.{ext}")
        data = (tmp_path / f"full.{ext}").read_bytes()
        (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) // 2])
        cases[str(tmp_path / f"cut.{ext}")] = rf"cut\.{ext}: (truncated|corrupt) image data"
    for path, message in cases.items():
        with pytest.raises(ImageError, match=message):
            read_image(path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the broken tags it skips
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_image_files_load_or_raise_image_error(tmp_path, data):
    """Random byte flips and cuts of small PNG/JPEG/GIF/TIFF files: an image or ImageError, nothing else."""
    fmt = data.draw(st.sampled_from(["png", "jpg", "gif", "tif", "bmp"]))
    path = tmp_path / f"seed.{fmt}"
    Image.fromarray(RGB).save(path)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(1, len(raw)))]
    path.write_bytes(bytes(raw))
    try:
        got = read_image(path)
    except ImageError as exc:
        assert "seed." in str(exc)
    else:
        assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3


# ----------------------------------------------------------------------------- size limits

BOMB_READER = r"""
import json, resource, sys
import numpy, PIL.Image, PIL.PngImagePlugin, PIL.TiffImagePlugin, psutil   # map their pages before the limit
from minisam.utils.images import read_image
from minisam import ImageError
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (psutil.Process().memory_info().vms + (256 << 20), hard))
out = {}
for path in sys.argv[1:]:
    try:
        read_image(path)
        out[path] = "loaded"
    except ImageError as exc:
        out[path] = "ImageError: " + str(exc)
    except BaseException as exc:
        out[path] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def test_huge_files_refused_from_the_header_under_a_memory_limit(tmp_path):
    """20000 x 20000 (Pillow's own bomb guard fires first) and 9000 x 9000 RGB (under Pillow's
    guard, over minisam's 2**26 pixels): refused before decoding, with 256 MB of address space."""
    files = {"huge.png": png_header_only(20000, 20000, 0), "large.png": png_header_only(9000, 9000, 2)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    res = subprocess.run([sys.executable, "-c", BOMB_READER, *(str(tmp_path / n) for n in files)],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 0, res.stderr
    out = {os.path.basename(k): v for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}
    assert out["huge.png"].startswith("ImageError: ") and "huge.png: refused before decoding" in out["huge.png"]
    assert "400000000 pixels" in out["huge.png"]
    assert out["large.png"] == (
        f"ImageError: {tmp_path / 'large.png'}: 9000 x 9000 = 81,000,000 pixels is over minisam's limit of "
        f"{MAX_IMAGE_PIXELS:,} (masks come back at the original size: about 1.0 GB for three of them); "
        f"downscale the image, or raise the limit with {MAX_PIXELS_ENV}=N")


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    Image.fromarray(RGB).save(tmp_path / "small.png")                          # 12 x 17 = 204 pixels
    monkeypatch.setenv(MAX_PIXELS_ENV, "204")
    assert read_image(tmp_path / "small.png").shape == RGB.shape
    monkeypatch.setenv(MAX_PIXELS_ENV, "203")
    with pytest.raises(ImageError, match="204 pixels is over minisam's limit of 203"):
        read_image(tmp_path / "small.png")
    with pytest.raises(ImageError, match="over minisam's limit of 203"):
        to_rgb_uint8(RGB)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ImageError, match="is not a whole number"):
        to_rgb_uint8(RGB)


def test_huge_array_refused_without_copying():
    """A 20000 x 20000 x 3 array (a zero-cost broadcast view here) is refused from its shape."""
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=r"shape \(20000, 20000, 3\): 20000 x 20000 = 400,000,000 pixels "
                                             r"is over minisam's limit .* about 4\.8 GB"):
            to_rgb_uint8(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# ----------------------------------------------------------------------------- arrays

def test_array_rules():
    unit = RNG.random((5, 6, 3))
    np.testing.assert_array_equal(to_rgb_uint8(unit), np.rint(unit * 255).astype(np.uint8))
    np.testing.assert_array_equal(to_rgb_uint8(unit.astype(np.float32)),
                                  np.rint(unit.astype(np.float32) * 255).astype(np.uint8))
    np.testing.assert_array_equal(to_rgb_uint8(RGB.astype(np.float64)), RGB)               # whole 0..255
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[0.0, 1.0]])), [[[0] * 3, [255] * 3]])  # read as [0, 1]
    deep = RNG.integers(0, 65536, (4, 5), dtype=np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(deep)[..., 2], deep >> 8)
    np.testing.assert_array_equal(to_rgb_uint8(RGB.astype(np.int64)), RGB)
    np.testing.assert_array_equal(to_rgb_uint8(RGB.tolist()), RGB)
    np.testing.assert_array_equal(to_rgb_uint8(RGB[..., ::-1], "BGR"), RGB)
    np.testing.assert_array_equal(to_rgb_uint8(Image.fromarray(RGB).convert("RGBA")), RGB)
    np.testing.assert_array_equal(to_rgb_uint8(Image.fromarray(deep)), to_rgb_uint8(deep))
    assert to_rgb_uint8(np.full((1, 1), 7, np.uint8)).shape == (1, 1, 3)
    refusals = [
        (np.zeros((0, 5, 3), np.uint8), r"shape \(0, 5, 3\): empty image \(0 x 5 pixels\)"),
        (np.zeros((5, 0), np.uint8), r"empty image \(5 x 0 pixels\)"),
        (np.zeros((5, 5, 2), np.uint8), r"1, 3 or 4 channels .* \(5, 5, 2\)"),
        (np.zeros((1, 5, 5, 3), np.uint8), r"H x W or H x W x C .* \(1, 5, 5, 3\)"),
        (np.zeros(5, np.uint8), r"shape \(5,\)"),
        (np.array([[0.5, 2.5]]), "fractional values"),
        (np.array([[-0.5, 0.5]]), "fractional values"),
        (np.array([[np.nan, 0.5]]), "NaN or inf"),
        (np.array([[0, 300]]), "outside 0..255"),
        (np.array([[-1, 3]], np.int8), "outside 0..255"),
        (np.zeros((3, 3), bool), "dtype bool"),
        (np.zeros((3, 3), complex), "dtype complex128"),
        (np.zeros((3, 3), object), "dtype object"),
        ([[1, 2], [3]], "not an image array"),
    ]
    for bad, message in refusals:
        with pytest.raises(ImageError, match=message):
            to_rgb_uint8(bad)


ARRAY_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int32, np.int64, np.float16, np.float32,
                                np.float64, np.bool_])


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_any_array_converts_or_raises_image_error(a):
    try:
        out = to_rgb_uint8(a)
    except ImageError:
        return
    assert out.dtype == np.uint8 and out.shape == (*a.shape[:2], 3) and out.flags.c_contiguous


# ----------------------------------------------------------------------------- through the predictor

_SAM = {}


def tiny_pair():
    cfg = TINY_CONFIGS["pad_window"]
    if cfg not in _SAM:
        model = official_model(cfg, 0)
        params = nest({k: np.ascontiguousarray(v.detach().cpu().numpy(), np.float32)
                       for k, v in model.state_dict().items()})
        _SAM[cfg] = (model, Sam(cfg, params))
    return _SAM[cfg]


def test_one_pixel_image_end_to_end_matches_official():
    from segment_anything import SamPredictor as OfficialPredictor
    model, sam = tiny_pair()
    pixel = np.array([[[200, 40, 90]]], np.uint8)                          # [1, 1, 3]
    ours, theirs = SamPredictor(sam), OfficialPredictor(model)
    ours.set_image(pixel)
    theirs.set_image(pixel)
    kw = dict(point_coords=np.array([[0.0, 0.0]]), point_labels=np.array([1]), return_logits=True)
    m, iou, low = ours.predict(**kw)
    m_ref, iou_ref, low_ref = theirs.predict(**kw)
    assert m.shape == (3, 1, 1)
    # same tolerances as tests/test_predictor.py: logits 1e-3 x max|ref| (float32 noise through
    # the encoder and decoder), IoU 1e-3 absolute
    np.testing.assert_allclose(low, low_ref, rtol=0, atol=1e-3 * np.abs(low_ref).max())
    np.testing.assert_allclose(m, m_ref, rtol=0, atol=1e-3 * np.abs(low_ref).max())
    np.testing.assert_allclose(iou, iou_ref, rtol=0, atol=1e-3)
    print(f"1x1: max |low-res diff| / max|ref| = {np.abs(low - low_ref).max() / np.abs(low_ref).max():.2e}, "
          f"max |IoU diff| = {np.abs(iou - iou_ref).max():.2e}")


def test_predictor_converts_and_refuses_like_to_rgb_uint8(monkeypatch):
    _, sam = tiny_pair()
    pred = SamPredictor(sam)
    img = RGB
    pred.set_image(img)
    want = pred.get_image_embedding().copy()
    pred.set_image(img.astype(np.float32) / 255)                # [0, 1] floats: rint(x * 255) is exact here
    np.testing.assert_array_equal(pred.get_image_embedding(), want)
    pred.set_image(img.astype(np.uint16) * 257)                 # 16-bit: high byte
    np.testing.assert_array_equal(pred.get_image_embedding(), want)
    pred.set_image(np.dstack([img, np.zeros(img.shape[:2], np.uint8)]))   # RGBA
    np.testing.assert_array_equal(pred.get_image_embedding(), want)
    for bad, message in [(np.zeros((0, 4, 3), np.uint8), "empty image"), (img.astype(np.float32) * 1.5, "fractional"),
                         (np.broadcast_to(img[:1, :1], (20000, 20000, 3)), "over minisam's limit")]:
        with pytest.raises(ImageError, match=message):
            pred.set_image(bad)
        assert not pred.is_image_set                            # a refused image leaves no stale embedding
        pred.set_image(img)
