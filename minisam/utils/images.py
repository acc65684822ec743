"""Reading image files and converting image arrays into what SAM takes: [H, W, 3] uint8 RGB.

The official code takes one kind of image, an HWC uint8 RGB (or BGR) array
(``segment_anything/predictor.py``, ``SamPredictor.set_image``), and its script
``scripts/amg.py`` reads files with ``cv2.imread`` (8-bit, 3 channels, EXIF orientation
applied). Anything else (a float image in [0, 1], a 16-bit scan, an RGBA screenshot) it
either rejects with a bare assertion or, worse, silently misreads. minisam converts each
such input by a rule written down here, or refuses it with :class:`ImageError` naming the
file or the shape.

Files (:func:`read_image`, used by the command line), read with Pillow:
- greyscale (L), bilevel (1), palette (P), greyscale + alpha (LA), RGBA, CMYK, YCbCr:
  Pillow's ``convert("RGB")``; **alpha is dropped, not composited** (the colour stored
  under a transparent pixel is used), as ``cv2.imread`` does; CMYK uses Pillow's plain
  formula, no ICC colour management;
- 16-bit (I;16, and mode I, which Pillow uses for 16-bit PGM/PPM): the high byte, ``v >> 8``,
  which is what ``cv2.imread`` does for the official script (Pillow's own ``convert("L")``
  would clip every value above 255 to white). Mode I with values outside 0..65535 is refused;
- float (F, e.g. a float TIFF): the float array rule below;
- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), as ``cv2.imread`` does, so
  the image and its prompts are in the orientation a viewer shows;
- multi-frame files (GIF, TIFF): the first frame;
- missing files, folders, non-images, truncated or corrupt data (unless the caller set
  Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES``), and images over the pixel limit are refused.
  The limit is checked from the header, **before** any pixel is decoded.

Arrays (:func:`to_rgb_uint8`, used by ``SamPredictor.set_image``), by dtype:
- uint8: as is; uint16: the high byte ``v >> 8`` (the same rule as 16-bit files);
- other integer dtypes: accepted when every value is in 0..255 (``np.array`` of a list of
  ints gives int64), refused otherwise;
- float dtypes: values all in [0, 1] are a [0, 1] image, scaled by 255 and rounded half to
  even (``np.rint(x * 255)``, as ``skimage.img_as_ubyte`` does); otherwise whole numbers in
  0..255 are taken as they are (an 8-bit image stored as float); fractional values above 1,
  negative values, NaN and inf are refused. (A float image whose values are all 0.0 and 1.0
  is read as [0, 1], i.e. black and white.)
- bool, complex, object arrays; shapes other than [H, W], [H, W, 1], [H, W, 3], [H, W, 4];
  zero-size images: refused. A 1 x 1 image is valid (it is upsampled to the model input).
- [H, W, 4] drops alpha; [H, W] and [H, W, 1] repeat the grey channel.

The pixel limit (:func:`max_image_pixels`, default 2**26 = 67,108,864, e.g. 8192 x 8192;
environment variable ``MINISAM_MAX_IMAGE_PIXELS`` to change it) holds for files and arrays
alike. The encoder only ever sees the image resized to 1024 on its long side, but masks come
back at the original size (``predict`` returns K' x H x W, computed as float32 logits: 12
bytes a pixel for three masks), so the original size is what bounds memory. At the limit a
prediction needs about 1 GB; a 20000 x 20000 image would need 5 GB and is refused with a
message that says so and how to proceed (downscale the image, or raise the limit).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from minisam.errors import ImageError

MAX_IMAGE_PIXELS = 1 << 26
MAX_PIXELS_ENV = "MINISAM_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The largest H * W accepted: ``$MINISAM_MAX_IMAGE_PIXELS`` if set, else :data:`MAX_IMAGE_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_ENV)
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise ImageError(f"{MAX_PIXELS_ENV}={text!r} is not a whole number of pixels") from None
    if value < 1:
        raise ImageError(f"{MAX_PIXELS_ENV}={text!r} must be at least 1")
    return value


def check_size(height: int, width: int, source: str = "image") -> None:
    """Refuse an empty image, or one with more pixels than :func:`max_image_pixels`."""
    if height < 1 or width < 1:
        raise ImageError(f"{source}: empty image ({height} x {width} pixels)")
    limit = max_image_pixels()
    if height * width > limit:
        gb = height * width * 12 / 1e9  # three float32 masks at the original size
        raise ImageError(
            f"{source}: {width} x {height} = {height * width:,} pixels is over minisam's limit of {limit:,} "
            f"(masks come back at the original size: about {gb:.1f} GB for three of them); "
            f"downscale the image, or raise the limit with {MAX_PIXELS_ENV}=N")


def to_rgb_uint8(image, image_format: str = "RGB", source: str = "image") -> np.ndarray:
    """An image array (or PIL image) -> C-contiguous [H, W, 3] uint8 RGB, by the rules above."""
    from PIL import Image

    if isinstance(image, Image.Image):
        check_size(image.height, image.width, source)
        image = _pil_to_array(image, source)
    elif not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image)
        except Exception as exc:  # ragged nested lists and the like
            raise ImageError(f"{source}: not an image array ({exc})") from None
    if image.ndim not in (2, 3):
        raise ImageError(f"{source}: expected an H x W or H x W x C image, got an array of shape {image.shape}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ImageError(f"{source}: expected 1, 3 or 4 channels on the last axis, got shape {image.shape}")
    check_size(image.shape[0], image.shape[1], f"{source} of shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)                               # [H, W, C] high byte, as cv2
    elif np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)):
            raise ImageError(f"{source}: float image of shape {image.shape} contains NaN or inf")
        if image.min() >= 0 and image.max() <= 1:
            scaled = image.astype(np.promote_types(image.dtype, np.float32)) * 255   # [H, W, C] in its precision
            image = np.rint(scaled).astype(np.uint8)                            # [H, W, C] [0, 1] -> 0..255
    try:
        return _channels_to_rgb(image, image_format)                          # [H, W, 3] uint8 RGB
    except ImageError as exc:
        raise ImageError(f"{source}: {exc}") from None


def _channels_to_rgb(image, image_format: str = "RGB") -> np.ndarray:
    """The last step of :func:`to_rgb_uint8`: an array of whole pixel values -> C-contiguous
    [H, W, 3] uint8 RGB, or ImageError.

    ``image_format="BGR"`` flips the channels, as ``SamPredictor.set_image`` does; grey
    [H, W] or [H, W, 1] is repeated to three channels; [H, W, 4] drops alpha; integer and
    float dtypes must hold whole numbers in 0..255 (the [0, 1] and uint16 rules ran before).
    """
    if image_format not in ("RGB", "BGR"):
        raise ImageError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
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
    image = _whole_uint8(image)
    if image.ndim == 2:
        image = image[:, :, None]                                          # [H, W, 1]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)                                # [H, W, 3]
    elif image.shape[2] == 4:
        image = image[:, :, :3]                                            # [H, W, 3] drop alpha
    if image_format == "BGR":
        image = image[:, :, ::-1]                                          # [H, W, 3] BGR -> RGB
    return np.ascontiguousarray(image)


def _whole_uint8(image: np.ndarray) -> np.ndarray:
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


def _pil_to_array(im, source: str) -> np.ndarray:  # PIL image -> [H, W] or [H, W, 3]
    """Pillow modes to arrays, keeping the bit depth where Pillow's own convert would lose it."""
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)                             # [H, W] uint16 (any byte order)
    if im.mode == "I":
        a = np.asarray(im)                                                  # [H, W] int32
        if a.min() < 0 or a.max() > 65535:
            raise ImageError(f"{source}: 32-bit integer image with values {a.min()}..{a.max()}; "
                             "minisam reads mode I as 16-bit (0..65535): convert it to 8 bits first")
        return a.astype(np.uint16)                                          # [H, W] uint16
    if im.mode == "F":
        return np.asarray(im)                                               # [H, W] float32
    return np.asarray(im.convert("RGB"))                                    # [H, W, 3] uint8


def _truncated(exc: BaseException) -> bool:
    return isinstance(exc, EOFError) or "truncated" in str(exc).lower()


def read_image(path) -> np.ndarray:  # -> [H, W, 3] uint8 RGB
    """Read an image file as [H, W, 3] uint8 RGB, or raise :class:`ImageError` naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    name = os.fspath(path)
    if os.path.isdir(name):
        raise ImageError(f"{name}: is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            # minisam applies its own (lower) limit below, with its own message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(name)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: refused before decoding, over Pillow's decompression-bomb guard ({exc}); "
                         f"minisam's own limit is {max_image_pixels():,} pixels") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: cannot read as an image (not a format Pillow knows, or not an image)") from None
    except Exception as exc:  # a broken header can surface as many exception types
        what = "truncated image file" if _truncated(exc) else "cannot read as an image"
        raise ImageError(f"{name}: {what} ({type(exc).__name__}: {exc})") from None
    with im:
        width, height = im.size
        check_size(height, width, name)
        try:
            im.load()
        except MemoryError:
            raise ImageError(f"{name}: out of memory decoding a {width} x {height} image") from None
        except Exception as exc:
            what = "truncated" if _truncated(exc) else "corrupt"
            raise ImageError(f"{name}: {what} image data ({type(exc).__name__}: {exc})") from None
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as exc:  # a malformed EXIF block
            raise ImageError(f"{name}: cannot apply its EXIF orientation ({type(exc).__name__}: {exc})") from None
        try:
            array = _pil_to_array(im, name)
        except ImageError:
            raise
        except Exception as exc:  # e.g. a mode Pillow cannot convert to RGB
            raise ImageError(f"{name}: cannot convert {im.mode} pixels to RGB ({exc})") from None
    return to_rgb_uint8(array, "RGB", name)
