"""The SAM model: image encoder + prompt encoder + mask decoder, over a nested parameter dict.

Paper: Kirillov et al. 2023, section 3 and figure 4. Mirrors ``segment_anything/modeling/sam.py``
(``Sam``): the same attributes and methods, on NumPy arrays instead of tensors.

``sam.image_encoder``, ``sam.prompt_encoder`` and ``sam.mask_decoder`` are small callable
objects with the official modules' attributes (``img_size``, ``embed_dim``,
``num_multimask_outputs``, ...) and the official call signatures. They hold no weights of their
own: each call runs a pure function of :mod:`minisam.modeling` (the readable path) or of
:mod:`minisam.kernels` (the fused fast path, tested equal to it) on ``sam.params``.

Which path runs: ``fast=True`` (the default) or ``False`` per call, else the model's ``fast``
attribute, which starts ``False`` when the environment variable ``MINISAM_READABLE=1`` is set.
``SamPredictor(sam, fast=False)`` picks the readable path for one predictor.

Shapes: ``docs/shapes.md``.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from minisam.config import SamConfig
from minisam.errors import MinisamWarning, PromptError
from minisam.kernels import image_encoder as image_encoder_fast
from minisam.kernels import mask_decoder as mask_decoder_fast
from minisam.kernels.resize import postprocess_masks
from minisam.modeling import image_encoder as image_encoder_readable
from minisam.modeling import mask_decoder as mask_decoder_readable
from minisam.modeling import prompt_encoder as prompt_encoder_readable
from minisam.utils.tensors import first_tensor, like, to_numpy
from minisam.utils.transforms import preprocess


def readable_by_default() -> bool:
    """True when ``MINISAM_READABLE`` is set to 1 / true / yes: models start on the readable path."""
    return os.environ.get("MINISAM_READABLE", "").strip().lower() in ("1", "true", "yes")


class _Part:
    """One of the three model parts: a view of the model's config and parameters."""

    def __init__(self, sam: "Sam", key: str) -> None:
        self._sam = sam
        self._key = key

    @property
    def params(self) -> Dict[Any, Any]:
        return self._sam.params[self._key]

    @property
    def config(self) -> SamConfig:
        return self._sam.config

    def _fast(self, fast: Optional[bool]) -> bool:
        return self._sam.fast if fast is None else bool(fast)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._sam!r})"


class ImageEncoderViT(_Part):
    """``ImageEncoderViT``: ``sam.image_encoder(x)`` [B, 3, S, S] preprocessed -> [B, C, G, G]."""

    @property
    def img_size(self) -> int:
        return self.config.img_size

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def embed_dim(self) -> int:
        return self.config.encoder_embed_dim

    @property
    def depth(self) -> int:
        return self.config.encoder_depth

    @property
    def num_heads(self) -> int:
        return self.config.encoder_num_heads

    @property
    def window_size(self) -> int:
        return self.config.window_size

    @property
    def global_attn_indexes(self):
        return self.config.encoder_global_attn_indexes

    @property
    def out_chans(self) -> int:
        return self.config.prompt_embed_dim

    def __init__(self, sam: "Sam", key: str) -> None:
        super().__init__(sam, key)
        self._workspaces = threading.local()

    def __call__(self, x, trace: Optional[dict] = None, fast: Optional[bool] = None):  # [B, 3, S, S] -> [B, C, G, G]
        if not self._fast(fast):
            return image_encoder_readable.image_encoder(self.params, self.config, x, trace=trace)
        # The fast path's activation arrays, kept for the next call of this thread (~250 MB for
        # vit_b; why: ``minisam.kernels.image_encoder.image_encoder``); free_workspace() drops them.
        workspace = self._workspaces.__dict__.setdefault("arrays", {})
        return image_encoder_fast.image_encoder(self.params, self.config, x, trace=trace, workspace=workspace)

    def free_workspace(self) -> None:
        """Drop the calling thread's kept activation arrays of the fast path (the next call allocates them again)."""
        self._workspaces.__dict__.pop("arrays", None)


class PromptEncoder(_Part):
    """``PromptEncoder``: points, boxes and mask logits -> (sparse [N, Ns, C], dense [N, C, G, G])."""

    num_point_embeddings = 4  # positive/negative point, two box corners

    @property
    def embed_dim(self) -> int:
        return self.config.prompt_embed_dim

    @property
    def input_image_size(self):
        return (self.config.img_size, self.config.img_size)

    @property
    def image_embedding_size(self):
        return (self.config.image_embedding_size, self.config.image_embedding_size)

    @property
    def mask_input_size(self):
        return (self.config.mask_input_size, self.config.mask_input_size)

    def get_dense_pe(self, trace: Optional[dict] = None):  # -> [1, C, G, G]
        return prompt_encoder_readable.get_dense_pe(self.params, self.config, trace)

    def __call__(self, points=None, boxes=None, masks=None, trace: Optional[dict] = None):
        """points = (coords [N, Np, 2], labels [N, Np]) in the model input frame, boxes [N, 4],
        masks [N, 1, R, R] -> (sparse [N, Ns, C], dense [N, C, G, G])."""
        return prompt_encoder_readable.prompt_encoder(self.params, self.config, points, boxes, masks, trace)


class MaskDecoder(_Part):
    """``MaskDecoder``: image embedding + prompt embeddings -> (low-res logits, predicted IoUs)."""

    @property
    def transformer_dim(self) -> int:
        return self.config.prompt_embed_dim

    @property
    def num_multimask_outputs(self) -> int:
        return self.config.num_multimask_outputs

    @property
    def num_mask_tokens(self) -> int:
        return self.config.num_mask_tokens

    @property
    def iou_head_depth(self) -> int:
        return self.config.iou_head_depth

    @property
    def iou_head_hidden_dim(self) -> int:
        return self.config.iou_head_hidden_dim

    def __call__(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                 multimask_output: bool, trace: Optional[dict] = None, fast: Optional[bool] = None):
        """``MaskDecoder.forward``: image_embeddings [1, C, G, G], image_pe [1, C, G, G],
        sparse [N, Ns, C], dense [N, C, G, G] -> (low_res [N, K', R, R], iou [N, K'])."""
        if not self._fast(fast):
            return mask_decoder_readable.mask_decoder(self.params, self.config, image_embeddings, image_pe,
                                                      sparse_prompt_embeddings, dense_prompt_embeddings,
                                                      multimask_output, trace=trace)
        dense = dense_prompt_embeddings
        if dense.shape[0] == 1 or dense.strides[0] == 0:  # one dense embedding for all prompts (no mask input)
            state = mask_decoder_fast.image_state(self.params, self.config, image_embeddings, image_pe, dense[:1])
            return self.decode(state, sparse_prompt_embeddings, None, multimask_output, trace)
        state = self.image_state(image_embeddings, image_pe)
        return self.decode(state, sparse_prompt_embeddings, dense, multimask_output, trace)

    def image_state(self, image_embeddings, image_pe):
        """The image's prompt-independent decoder inputs (:class:`minisam.kernels.mask_decoder.DecoderImageState`),
        computed once per image and passed to :meth:`decode`."""
        no_mask = self._sam.params["prompt_encoder"]["no_mask_embed"]["weight"]  # [1, C]
        C = self.config.prompt_embed_dim
        return mask_decoder_fast.image_state(self.params, self.config, image_embeddings, image_pe,
                                             no_mask.reshape(1, C, 1, 1))

    def decode(self, state, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output: bool,
               trace: Optional[dict] = None):
        """The fast decoder on a precomputed image state. ``dense_prompt_embeddings=None``: no mask
        prompt (the no-mask embedding the state was built with, shared by every prompt)."""
        return mask_decoder_fast.mask_decoder(self.params, self.config, state, sparse_prompt_embeddings,
                                              dense_prompt_embeddings, multimask_output, trace=trace)


class Sam:
    """``Sam(config, params)``: params is the nested dict of :func:`minisam.checkpoints.param_tree.nest`."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"
    _warned_device = False  # Sam.to warns once per process about a non-CPU device

    def __init__(self, config: SamConfig, params: Dict[Any, Any], fast: Optional[bool] = None) -> None:
        self.config = config
        self.params = params
        self.fast = (not readable_by_default()) if fast is None else bool(fast)
        # Settings of SamAutomaticMaskGenerator this model is tuned for (the registry's
        # "generator_defaults"; empty: the official defaults).
        self.generator_defaults: Dict[str, Any] = {}
        # Non-persistent buffers in the official model: not in the checkpoint.
        self.pixel_mean = np.asarray(config.pixel_mean, np.float32).reshape(3, 1, 1)  # [3, 1, 1]
        self.pixel_std = np.asarray(config.pixel_std, np.float32).reshape(3, 1, 1)  # [3, 1, 1]
        self.image_encoder = ImageEncoderViT(self, "image_encoder")
        self.prompt_encoder = PromptEncoder(self, "prompt_encoder")
        self.mask_decoder = MaskDecoder(self, "mask_decoder")

    def __repr__(self) -> str:
        c = self.config
        return (f"Sam(encoder {c.encoder_embed_dim}x{c.encoder_depth}, img_size {c.img_size}, "
                f"prompt dim {c.prompt_embed_dim})")

    # -------------------------------------------------- the nn.Module calls that users' code makes

    @property
    def device(self) -> str:
        """Always ``"cpu"``: minisam computes with NumPy on the CPU (``Sam.device`` in the official code)."""
        return "cpu"

    def to(self, device=None, *args, **kwargs) -> "Sam":
        """``nn.Module.to``: returns the model. minisam stays on the CPU; any other device (for
        example ``sam.to(device="cuda")`` from the official notebooks) warns once."""
        device = kwargs.get("device", device)
        name = str(getattr(device, "type", device)) if device is not None else "cpu"
        if name.split(":")[0] != "cpu" and not Sam._warned_device:
            Sam._warned_device = True
            warnings.warn(f"minisam runs on the CPU with NumPy; sam.to({str(device)!r}) leaves it there",
                          MinisamWarning, stacklevel=2)
        return self

    def eval(self) -> "Sam":
        """``nn.Module.eval``: returns the model (minisam has no training-mode layers)."""
        return self

    def get_dense_pe(self, trace: Optional[dict] = None):  # -> [1, C, G, G]
        """``sam.prompt_encoder.get_dense_pe()``, kept on the model for short lesson code."""
        return self.prompt_encoder.get_dense_pe(trace)

    def preprocess(self, x):  # [(B,) 3, Hr, Wr] -> [(B,) 3, S, S] float32
        """Normalize with pixel mean/std (division, as the official code), zero-pad bottom/right."""
        x = np.asarray(x)
        if x.ndim == 3:
            return preprocess(x[None], self.config)[0]  # [3, Hr, Wr] -> [3, S, S]
        return preprocess(x, self.config)  # [B, 3, Hr, Wr] -> [B, 3, S, S]

    def postprocess_masks(self, masks, input_size: Sequence[int], original_size: Sequence[int],
                          threshold: Optional[float] = None):
        """[N, K', R, R] logits -> [N, K', H, W] logits (upsample, crop the padding, resize).

        ``threshold`` (minisam only) returns ``logits > threshold`` as bool instead, fused into
        the last resize pass so the float masks are never stored.
        """
        return postprocess_masks(masks, input_size, original_size, self.config.img_size, threshold)

    def __call__(self, batched_input: List[Dict[str, Any]], multimask_output: bool,
                 trace: Optional[dict] = None) -> List[Dict[str, np.ndarray]]:
        """``Sam.forward``: a list of per-image dicts in, a list of per-image dicts out.

        Each input dict: ``image`` [3, Hr, Wr] (already resized with ResizeLongestSide),
        ``original_size`` (H, W), optional ``point_coords`` [N, Np, 2] + ``point_labels`` [N, Np],
        ``boxes`` [N, 4], ``mask_inputs`` [N, 1, R, R], all in the model input frame.
        Each output dict: ``masks`` [N, K', H, W] bool, ``iou_predictions`` [N, K'],
        ``low_res_logits`` [N, K', R, R].

        The values may be ndarrays or torch tensors (as the official notebooks build them); with a
        tensor among them the outputs are tensors on its device, with the same bits as for the
        ndarrays (:mod:`minisam.utils.tensors`).

        ``trace`` gets the official hook keys; a module called again (the decoder of the second
        image) gets ``key#1``, ``key#2``, ... as ``minisam.reference.official.record`` names it.
        """
        if not batched_input:
            raise PromptError("batched_input is empty: give at least one image record")
        tensor = first_tensor(v for rec in batched_input for v in rec.values())
        batched_input = [{k: to_numpy(v) for k, v in rec.items()} for rec in batched_input]
        images = []
        for i, rec in enumerate(batched_input):
            if "image" not in rec or "original_size" not in rec:
                raise PromptError(f"batched_input[{i}] needs 'image' and 'original_size'")
            images.append(self.preprocess(rec["image"]))  # [3, S, S]
        embeddings = self.image_encoder(np.stack(images), trace=trace)  # [B, C, G, G]

        outputs, calls = [], {}
        for i, (rec, emb) in enumerate(zip(batched_input, embeddings)):
            local = {} if trace is not None else None
            points = None
            if "point_coords" in rec:
                if rec.get("point_labels") is None:
                    raise PromptError(f"batched_input[{i}] has point_coords but no point_labels")
                points = (np.asarray(rec["point_coords"]), np.asarray(rec["point_labels"]))
            boxes = rec.get("boxes")
            masks_in = rec.get("mask_inputs")
            sparse, dense = self.prompt_encoder(
                points=points, boxes=None if boxes is None else np.asarray(boxes),
                masks=None if masks_in is None else np.asarray(masks_in, np.float32), trace=local)
            low_res, iou = self.mask_decoder(emb[None], self.get_dense_pe(local), sparse, dense,
                                             multimask_output, trace=local)  # [N, K', R, R], [N, K']
            masks = self.postprocess_masks(low_res, rec["image"].shape[-2:], rec["original_size"],
                                           self.mask_threshold)  # [N, K', H, W] bool
            outputs.append({"masks": like(tensor, masks), "iou_predictions": like(tensor, iou),
                            "low_res_logits": like(tensor, low_res)})
            if trace is not None:
                for k, v in local.items():  # the n-th call of a module is "key#n", as record() names it
                    n = calls.get(k, 0)
                    calls[k] = n + 1
                    trace[k if n == 0 else f"{k}#{n}"] = v
        return outputs
