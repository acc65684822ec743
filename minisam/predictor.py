"""``SamPredictor``: encode an image once, then prompt it many times.

Mirrors ``segment_anything/predictor.py`` (``SamPredictor``) on NumPy arrays:

- ``set_image`` resizes the image (longest side to img_size, Pillow bilinear), runs the image
  encoder once and keeps the G x G embedding (``features``);
- ``predict`` takes prompts in *original image pixels*, maps them to the model input frame,
  runs the prompt encoder and the mask decoder (a few ms) and returns masks at the original
  size;
- ``predict_torch`` and ``set_torch_image`` are the official methods, taking ndarrays or torch
  tensors and returning the kind they were given (:mod:`minisam.utils.tensors`);
- ``predict_batch`` (minisam) is ``predict_torch`` after ``apply_coords_torch`` /
  ``apply_boxes_torch`` (float32 coordinate scaling, as the torch path does): B prompts at once,
  in original image pixels.

Additions: ``save_embedding`` / ``load_embedding`` (.npz) so that the slow encoder runs once
per image and not once per session; every malformed prompt raises :class:`PromptError`, and
a prompt that is valid but probably not what was meant warns with :class:`PromptWarning`.

Speed (same outputs, bit for bit): the decoder inputs that depend on the image alone (its
tokens, their positional encoding and layer 0's projections of them, ~1/4 of the decoder's
GEMM work at vit_b size) are an explicit value, :meth:`decoder_state`, computed on the first
prompt after an image is set and passed to the fast decoder for the next ones (prompts without
``mask_input``); boolean masks are thresholded inside the last resize pass.
``SamPredictor(sam, fast=False)`` runs the readable path of :mod:`minisam.modeling` instead.

What the prompts mean (official PyTorch semantics, ``modeling/prompt_encoder.py``):
- point labels: ``1`` foreground, ``0`` background, ``-1`` not-a-point (padding: the point's
  position is ignored and the learned not-a-point embedding is used; use it to pad batches
  of different lengths). ``2`` and ``3`` are the box corner labels of the ONNX export, but the
  PyTorch path gives a point with label 2 or 3 only its positional encoding and no learned
  embedding, which is not a box corner: minisam accepts them as the official code does and
  warns (pass boxes as ``box=``). Any other label is refused.
- boxes are ``[x0, y0, x1, y1]``; an inverted box (x1 < x0 or y1 < y0) is used as given, as
  the official code does (its corners get the top-left / bottom-right embeddings the other
  way round), with a warning; a zero-area box is used as given, silently.
- points and boxes outside the image are allowed (the official code allows them; the
  positional encoding is defined everywhere) and used as given. Coordinates must be finite
  and fit float32 once scaled to the model input.
- an empty point set (``[0, 2]`` coordinates, ``[0]`` labels) is allowed as in the official
  code: the decoder then sees only the padding token. ``predict_batch`` with B = 0 returns
  empty arrays (the official ``predict_torch`` fails on them).
- ``mask_input`` is the **low-res logits** of a previous call (the third output, one mask:
  ``low_res[i][None]``), [1, R, R] float. A binary mask (0/1, 0/255 or bool) is accepted but
  warns: SAM was trained with its own logits there, and a thresholded mask gives poor masks
  (official issues #169, #242). Full-size masks, other shapes, and non-numeric dtypes are refused.

Shapes (``docs/shapes.md``): Np points, N prompts, K' masks (3 or 1), H x W original image,
Hr x Wr resized image, R low-res mask side.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple

import numpy as np

from minisam.errors import ImageError, MinisamError, PromptError, PromptWarning  # noqa: F401 (PromptWarning re-exported)
from minisam.utils.tensors import first_tensor, like, to_numpy

EMBEDDING_FORMAT_VERSION = 1


class ImageNotSetError(MinisamError, RuntimeError):
    """``predict`` before ``set_image``. A RuntimeError, as the official predictor raises."""


# point label -> meaning in the official PyTorch path (see the module docstring)
POINT_LABELS = {-1: "not-a-point (padding)", 0: "background", 1: "foreground",
                2: "box top-left corner (ONNX only)", 3: "box bottom-right corner (ONNX only)"}


def _finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        raise PromptError(f"{name} contains NaN or inf: {a.tolist() if a.size <= 16 else a.shape}")


def _as_float(name: str, value, shape_hint: str) -> np.ndarray:
    raw = value if isinstance(value, np.ndarray) else None
    if raw is not None and not (raw.dtype == np.bool_ or np.issubdtype(raw.dtype, np.integer)
                                or np.issubdtype(raw.dtype, np.floating)):
        raise PromptError(f"{name} must be a real-valued array {shape_hint}, got dtype {raw.dtype}")
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{name} must be numbers {shape_hint}, got {value!r}") from None
    _finite(name, a)
    return a


def _fits_f32(name: str, a: np.ndarray) -> np.ndarray:  # float64 [...] -> float32 [...]
    """Cast to float32, refusing values that would overflow to inf (e.g. a coordinate of 1e300)."""
    if a.size and np.abs(a).max() > np.finfo(np.float32).max:
        raise PromptError(f"{name} has values too large for float32 (max |value| {np.abs(a).max():.3g})")
    return a.astype(np.float32)


def _warn_inverted(b: np.ndarray) -> None:  # [N, 4] xyxy in original pixels
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bad.any():
        warnings.warn(f"box {b[bad][0].tolist()} is inverted (x1 < x0 or y1 < y0); it is used as given, as the "
                      "official code does, but SAM expects [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1",
                      PromptWarning, stacklevel=3)


def _check_mask_input(m: np.ndarray, raw) -> None:  # [..., R, R]
    """Warn when mask_input looks like a thresholded mask rather than logits."""
    values = np.unique(m)
    dtype = np.asarray(raw).dtype
    binary = values.size <= 2 and (set(values.tolist()) <= {0.0, 1.0} or set(values.tolist()) <= {0.0, 255.0})
    if binary or not np.issubdtype(dtype, np.floating):
        what = f"only the values {values.tolist()}" if binary else f"dtype {dtype}"
        warnings.warn(f"mask_input has {what}: it looks like a mask, not logits; SAM "
                      "expects the low-res logits a previous predict call returned (its third output, e.g. "
                      "low_res[np.argmax(scores)][None]); a binary mask gives poor masks", PromptWarning,
                      stacklevel=3)


class SamPredictor:
    def __init__(self, sam_model, fast: Optional[bool] = None) -> None:
        """``fast=False`` runs the readable path of :mod:`minisam.modeling` (to step through it);
        the default follows ``sam_model.fast``: the fused path of :mod:`minisam.kernels`."""
        from minisam.utils.transforms import ResizeLongestSide
        self.model = sam_model
        self.fast = sam_model.fast if fast is None else bool(fast)
        self.transform = ResizeLongestSide(sam_model.config.img_size)
        self.reset_image()

    @property
    def device(self) -> str:
        """``SamPredictor.device``: the model's device, always ``"cpu"`` here."""
        return self.model.device

    # ----------------------------------------------------------------- image

    def set_image(self, image: np.ndarray, image_format: str = "RGB", trace: Optional[dict] = None) -> None:
        """Compute the embedding of an HWC uint8 image ("RGB" or "BGR").

        Other arrays are converted by the rules of :mod:`minisam.utils.images` (grey, RGBA, uint16,
        float in [0, 1], ...) or refused with :class:`ImageError`; so are images over the pixel
        limit (:func:`minisam.utils.images.max_image_pixels`), since masks come back at this size.
        """
        from minisam.utils.images import to_rgb_uint8
        self.reset_image()  # a refused image must not leave the previous image's embedding in place
        if image_format not in ("RGB", "BGR"):
            raise ImageError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = to_rgb_uint8(image, image_format)  # [H, W, 3] uint8 in the model's format (RGB)
        input_image = self.transform.apply_image(image)  # [Hr, Wr, 3] uint8, long side = img_size
        x = np.ascontiguousarray(input_image.transpose(2, 0, 1))[None]  # [1, 3, Hr, Wr]
        self.set_preprocessed_image(x, image.shape[:2], trace=trace)

    def set_preprocessed_image(self, transformed_image: np.ndarray, original_image_size: Tuple[int, int],
                               trace: Optional[dict] = None) -> None:
        """``set_torch_image``: a [1, 3, h, w] image already resized (long side = img_size)."""
        S = self.model.config.img_size
        x = np.asarray(transformed_image)
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3 or max(x.shape[2:]) != S:
            raise ImageError(f"set_preprocessed_image expects [1, 3, h, w] with long side {S}, got {x.shape}")
        self.reset_image()
        self.original_size = tuple(int(v) for v in original_image_size)
        self.input_size = tuple(int(v) for v in x.shape[-2:])
        self.features = self.model.image_encoder(self.model.preprocess(x), trace=trace, fast=self.fast)  # [1, C, G, G]
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:  # -> [1, C, G, G]
        if not self.is_image_set:
            raise ImageNotSetError("An image must be set with .set_image(...) to generate an embedding.")
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self._decoder_state = None
        self.original_size = None
        self.input_size = None

    # ----------------------------------------------------------------- embeddings on disk

    def save_embedding(self, path) -> None:
        """Write the current embedding with the sizes needed to use it (.npz)."""
        feats = self.get_image_embedding()
        with open(os.fspath(path), "wb") as f:
            np.savez(f, format_version=np.int64(EMBEDDING_FORMAT_VERSION), embedding=feats,
                     original_size=np.asarray(self.original_size, np.int64),
                     input_size=np.asarray(self.input_size, np.int64),
                     img_size=np.int64(self.model.config.img_size))

    def load_embedding(self, path) -> None:
        """Set the image from a file written by :meth:`save_embedding` (no encoder run)."""
        name = os.fspath(path)
        cfg = self.model.config
        want = (1, cfg.prompt_embed_dim, cfg.image_embedding_size, cfg.image_embedding_size)
        try:
            with np.load(name, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ImageError(f"{name}: not a minisam embedding file ({exc})") from None
        missing = [k for k in ("format_version", "embedding", "original_size", "input_size") if k not in data]
        if missing:
            raise ImageError(f"{name}: not a minisam embedding file (missing {', '.join(missing)})")
        if int(data["format_version"]) != EMBEDDING_FORMAT_VERSION:
            raise ImageError(f"{name}: embedding format version {int(data['format_version'])}, "
                             f"this minisam reads version {EMBEDDING_FORMAT_VERSION}")
        emb = data["embedding"]
        if emb.shape != want or emb.dtype != np.float32:
            raise ImageError(f"{name}: embedding is {emb.dtype} {emb.shape}, this model needs float32 {want}")
        orig, inp = data["original_size"], data["input_size"]
        if orig.shape != (2,) or inp.shape != (2,) or max(inp) != cfg.img_size or min(orig) < 1:
            raise ImageError(f"{name}: bad sizes original_size={orig.tolist()} input_size={inp.tolist()} "
                             f"for a model of input size {cfg.img_size}")
        if not np.all(np.isfinite(emb)):
            raise ImageError(f"{name}: embedding contains NaN or inf")
        self.reset_image()
        self.features = np.ascontiguousarray(emb)
        self.original_size = tuple(int(v) for v in orig)
        self.input_size = tuple(int(v) for v in inp)
        self.is_image_set = True

    # ----------------------------------------------------------------- prompts

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False, trace: Optional[dict] = None):
        """Masks for one prompt, in original image pixels.

        point_coords [Np, 2] (x, y) pixels; point_labels [Np]: 1 foreground, 0 background, -1 padding
        (2 and 3 are accepted with a warning, anything else is refused; see the module docstring);
        box [4] x0, y0, x1, y1; mask_input [1, R, R] low-res logits of a previous call (its third
        output), not a binary mask. Points and boxes may lie outside the image.
        -> (masks [K', H, W] bool, or float32 logits with return_logits; iou [K']; low_res [K', R, R]).
        """
        if not self.is_image_set:
            raise ImageNotSetError("An image must be set with .set_image(...) before mask prediction.")
        M = self.model.config.mask_input_size
        coords = labels = boxes = masks = None
        if point_coords is not None or point_labels is not None:
            pts, labs = self._check_points(point_coords, point_labels, batched=False)
            coords = _fits_f32("point_coords", self.transform.apply_coords(pts, self.original_size))[None]  # [1, Np, 2]
            labels = labs.astype(np.int32)[None]  # [1, Np]
        if box is not None:
            b = _as_float("box", box, "[x0, y0, x1, y1]")
            if b.size != 4:
                raise PromptError(f"box must be 4 numbers [x0, y0, x1, y1], got shape {b.shape}")
            _warn_inverted(b.reshape(1, 4))
            boxes = _fits_f32("box", self.transform.apply_boxes(b.reshape(1, 4), self.original_size))  # [1, 4]
        if mask_input is not None:
            m = _as_float("mask_input", mask_input, f"[1, {M}, {M}]")
            if m.shape != (1, M, M):
                full = " (that is the image size: give the low-res logits, not a full-size mask)" \
                    if m.shape[-2:] == tuple(self.original_size) else ""
                raise PromptError(f"mask_input must have shape [1, {M}, {M}] (low-res logits of a previous "
                                  f"prediction, its third output), got {list(m.shape)}{full}")
            _check_mask_input(m, mask_input)
            masks = _fits_f32("mask_input", m)[None]  # [1, 1, R, R]
        out_masks, iou, low_res = self._predict_model_frame(coords, labels, boxes, masks, multimask_output,
                                                            return_logits, trace)
        return out_masks[0], iou[0], low_res[0]

    def predict_batch(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
                      multimask_output: bool = True, return_logits: bool = False, trace: Optional[dict] = None):
        """B prompts at once, in original image pixels (official ``predict_torch`` after ``apply_*_torch``).

        point_coords [N, Np, 2], point_labels [N, Np], boxes [N, 4], mask_input [N, 1, R, R]
        -> (masks [N, K', H, W], iou [N, K'], low_res [N, K', R, R]).
        """
        pts, labs, b, m = self._check_batch(point_coords, point_labels, boxes, mask_input)
        coords = None if pts is None else self._scale_f32(pts, "point_coords")  # [N, Np, 2] model frame
        bxs = None if b is None else self._scale_f32(b.reshape(-1, 2, 2), "boxes").reshape(-1, 4)  # [N, 4]
        return self._predict_model_frame(coords, labs, bxs, m, multimask_output, return_logits, trace)

    def predict_torch(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
                      multimask_output: bool = True, return_logits: bool = False, trace: Optional[dict] = None):
        """``predict_torch``: B prompts already in the model input frame (after ``apply_coords_torch`` /
        ``apply_boxes_torch``): point_coords [N, Np, 2], point_labels [N, Np], boxes [N, 4],
        mask_input [N, 1, R, R] -> (masks [N, K', H, W], iou [N, K'], low_res [N, K', R, R]).

        The prompts may be ndarrays or torch tensors; with a tensor among them the outputs are
        tensors on its device (:mod:`minisam.utils.tensors`), with the same bits as the ndarrays.
        Coordinates are used in float32, as the official prompt encoder uses them.
        """
        tensor = first_tensor([point_coords, point_labels, boxes, mask_input])
        pts, labs, b, m = self._check_batch(*(to_numpy(v) for v in (point_coords, point_labels, boxes, mask_input)))
        coords = None if pts is None else _fits_f32("point_coords", pts)  # [N, Np, 2]
        bxs = None if b is None else _fits_f32("boxes", b)  # [N, 4]
        out = self._predict_model_frame(coords, labs, bxs, m, multimask_output, return_logits, trace)
        return tuple(like(tensor, o) for o in out)

    def set_torch_image(self, transformed_image, original_image_size: Tuple[int, int],
                        trace: Optional[dict] = None) -> None:
        """``set_torch_image``: :meth:`set_preprocessed_image` for a [1, 3, h, w] tensor or ndarray
        (``torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)[None]``)."""
        self.set_preprocessed_image(to_numpy(transformed_image), original_image_size, trace=trace)

    # ----------------------------------------------------------------- internals

    def _check_batch(self, point_coords, point_labels, boxes, mask_input):
        """Batched prompts checked: (coords [N, Np, 2] float64, labels [N, Np] int32, boxes [N, 4]
        float64, mask_input [N, 1, R, R] float32), each None when not given."""
        if not self.is_image_set:
            raise ImageNotSetError("An image must be set with .set_image(...) before mask prediction.")
        M = self.model.config.mask_input_size
        pts = labels = b = masks = None
        sizes = {}
        if point_coords is not None or point_labels is not None:
            pts, labs = self._check_points(point_coords, point_labels, batched=True)
            labels = labs.astype(np.int32)  # [N, Np]
            sizes["point_coords"] = pts.shape[0]
        if boxes is not None:
            b = _as_float("boxes", boxes, "[B, 4]")
            if b.ndim != 2 or b.shape[1] != 4:
                raise PromptError(f"boxes must have shape [B, 4] (x0, y0, x1, y1), got {list(b.shape)}")
            _warn_inverted(b)
            sizes["boxes"] = b.shape[0]
        if mask_input is not None:
            m = _as_float("mask_input", mask_input, f"[B, 1, {M}, {M}]")
            if m.ndim != 4 or m.shape[1:] != (1, M, M):
                raise PromptError(f"mask_input must have shape [B, 1, {M}, {M}] (low-res logits of a previous "
                                  f"prediction), got {list(m.shape)}")
            masks = _fits_f32("mask_input", m)  # [N, 1, R, R]
            sizes["mask_input"] = m.shape[0]
            if masks.size:
                _check_mask_input(m, mask_input)
        if len(set(sizes.values())) > 1:
            raise PromptError(f"prompt batch sizes differ: {sizes}")
        return pts, labels, b, masks

    def _check_points(self, point_coords, point_labels, batched: bool):
        want = "[B, N, 2]" if batched else "[N, 2]"
        if point_coords is None:
            raise PromptError("point_labels given without point_coords")
        if point_labels is None:
            raise PromptError("point_labels must be supplied if point_coords is supplied")
        pts = _as_float("point_coords", point_coords, want)
        labs = _as_float("point_labels", point_labels, "[B, N]" if batched else "[N]")
        nd = 3 if batched else 2
        if pts.ndim != nd or pts.shape[-1] != 2:
            empty = f"; for no points pass None (or shape {want.replace('N', '0')})" if pts.size == 0 else ""
            raise PromptError(f"point_coords must have shape {want} (x, y pixels), got {list(pts.shape)}{empty}")
        if labs.shape != pts.shape[:-1]:
            raise PromptError(f"point_labels has shape {list(labs.shape)}, it must match point_coords "
                              f"{list(pts.shape)}: one label per point")
        if np.any(labs != np.round(labs)):
            raise PromptError(f"point_labels must be integers (1 foreground, 0 background), got {labs.tolist()}")
        unknown = sorted(set(labs.ravel().tolist()) - set(POINT_LABELS))
        if unknown:
            raise PromptError(f"point_labels {[int(v) for v in unknown]} have no meaning; use 1 (foreground), "
                              "0 (background) or -1 (padding, position ignored)")
        corners = sorted(set(labs.ravel().tolist()) & {2.0, 3.0})
        if corners:
            warnings.warn(f"point label(s) {[int(v) for v in corners]} are box-corner labels of the ONNX export; "
                          "the PyTorch path (and minisam, which follows it) gives such points only their positional "
                          "encoding, no learned embedding: pass a box as box=[x0, y0, x1, y1] instead",
                          PromptWarning, stacklevel=3)
        return pts, labs

    def _scale_f32(self, coords, name="coordinates"):  # [..., 2] original pixels -> [..., 2] f32 model frame
        """``apply_coords_torch`` (float32 arithmetic, x * (w/W), y * (h/H)), refusing overflow."""
        out = self.transform.apply_coords_torch(_fits_f32(name, coords), self.original_size)  # [..., 2]
        if not np.all(np.isfinite(out)):
            raise PromptError(f"{name} are too large for float32 once scaled to the model input")
        return out

    def decoder_state(self):
        """The decoder's inputs that depend on the image alone (:class:`minisam.kernels.mask_decoder.DecoderImageState`:
        the image tokens, their PE and layer 0's image-side projections), computed on the first
        prompt after an image is set and kept for the next ones. Tied to the ``features`` array
        itself, so it starts afresh when code assigns ``predictor.features`` directly."""
        if not self.is_image_set:
            raise ImageNotSetError("An image must be set with .set_image(...) before mask prediction.")
        state = self._decoder_state
        if state is None or state[0] is not self.features:
            state = (self.features, self.model.mask_decoder.image_state(self.features, self.model.get_dense_pe()))
            self._decoder_state = state
        return state[1]

    def predict_low_res(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
                        multimask_output: bool = True, trace: Optional[dict] = None):
        """The prompt encoder and mask decoder on prompts in the model input frame, without
        upsampling: point_coords [N, Np, 2], point_labels [N, Np], boxes [N, 4], mask_input
        [N, 1, R, R] -> (low_res [N, K', R, R] logits, iou [N, K']).

        :meth:`predict`, :meth:`predict_torch` and the automatic mask generator all decode here.
        The arrays are used as given (float32, or float64 coordinates as the generator passes
        them); :meth:`predict` and :meth:`predict_batch` check and scale user prompts first.
        ``trace`` only observes: the same path runs with and without it.
        """
        if not self.is_image_set:
            raise ImageNotSetError("An image must be set with .set_image(...) before mask prediction.")
        model = self.model
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=mask_input, trace=trace)
        image_pe = model.get_dense_pe(trace)  # [1, C, G, G]
        if not self.fast:
            return model.mask_decoder(self.features, image_pe, sparse, dense, multimask_output,
                                      trace=trace, fast=False)  # [N, K', R, R], [N, K']
        return model.mask_decoder.decode(self.decoder_state(), sparse, None if mask_input is None else dense,
                                         multimask_output, trace=trace)  # [N, K', R, R], [N, K']

    def _predict_model_frame(self, point_coords, point_labels, boxes, mask_input, multimask_output: bool,
                             return_logits: bool, trace: Optional[dict]):
        """Checked float32 prompts in the model input frame -> (masks [N, K', H, W], iou [N, K'],
        low_res [N, K', R, R]): :meth:`predict`, :meth:`predict_batch` and :meth:`predict_torch` end here."""
        low_res, iou = self.predict_low_res(point_coords, point_labels, boxes, mask_input, multimask_output,
                                            trace)  # [N, K', R, R], [N, K']
        threshold = None if return_logits else self.model.mask_threshold  # bool masks: fused into the resize
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size, threshold)  # [N, K', H, W]
        return masks, iou, low_res
