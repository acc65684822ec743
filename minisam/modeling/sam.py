"""The SAM model: image encoder + prompt encoder + mask decoder, over a nested parameter dict.

Paper: Kirillov et al. 2023, section 3 and figure 4. Mirrors ``segment_anything/modeling/sam.py``
(``Sam``): the same attributes and methods, on NumPy arrays instead of tensors. The model
math lives in pure functions (``image_encoder.py``, ``prompt_encoder.py``,
``mask_decoder.py``, ``postprocess.py``); this class only holds the configuration and the
parameters and wires the parts together.

Shapes: B images (``__call__``) or prompts, C = prompt_embed_dim, G grid side, S = img_size,
M = 4G low-res mask side, K' masks per prompt (3 or 1), H x W original image.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from minisam.config import SamConfig
from minisam.errors import PromptError
from minisam.modeling.mask_decoder import mask_decoder as _mask_decoder
from minisam.kernels.resize import postprocess_masks as _postprocess_masks
from minisam.modeling.prompt_encoder import get_dense_pe as _get_dense_pe
from minisam.modeling.prompt_encoder import prompt_encoder as _prompt_encoder


class Sam:
    """``Sam(config, params)``: params is the nested dict of :func:`minisam.checkpoints.param_tree.nest`."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, config: SamConfig, params: Dict[Any, Any]) -> None:
        self.config = config
        self.params = params
        # Non-persistent buffers in the official model: not in the checkpoint.
        self.pixel_mean = np.asarray(config.pixel_mean, np.float32).reshape(3, 1, 1)  # [3, 1, 1]
        self.pixel_std = np.asarray(config.pixel_std, np.float32).reshape(3, 1, 1)  # [3, 1, 1]

    def __repr__(self) -> str:
        c = self.config
        return (f"Sam(encoder {c.encoder_embed_dim}x{c.encoder_depth}, img_size {c.img_size}, "
                f"prompt dim {c.prompt_embed_dim})")

    # ----------------------------------------------------------------- parts

    def image_encoder(self, x, trace: Optional[dict] = None):  # [B, 3, S, S] -> [B, C, G, G]
        from minisam.modeling.image_encoder import image_encoder
        return image_encoder(self.params["image_encoder"], self.config, x, trace=trace)

    def prompt_encoder(self, points=None, boxes=None, masks=None, trace: Optional[dict] = None):
        """-> (sparse [B, Ns, C], dense [B, C, G, G]); points = (coords [B, N, 2], labels [B, N])."""
        return _prompt_encoder(self.params["prompt_encoder"], self.config, points, boxes, masks, trace)

    def get_dense_pe(self, trace: Optional[dict] = None):  # -> [1, C, G, G]
        return _get_dense_pe(self.params["prompt_encoder"], self.config, trace)

    def mask_decoder(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                     multimask_output: bool, trace: Optional[dict] = None, image_cache: Optional[dict] = None):
        """-> (low_res_masks [B, K', M, M], iou_predictions [B, K']).

        ``image_cache`` (minisam only): see :func:`minisam.modeling.mask_decoder.predict_masks`.
        """
        return _mask_decoder(self.params["mask_decoder"], self.config, image_embeddings, image_pe,
                             sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output, trace,
                             image_cache)

    def preprocess(self, x):  # [(B,) 3, h, w] -> [(B,) 3, S, S] float32
        """Normalize with pixel mean/std (division, as the official code), zero-pad bottom/right."""
        from minisam.utils.transforms import preprocess
        x = np.asarray(x)
        if x.ndim == 3:
            return preprocess(x[None], self.config)[0]  # [3, h, w] -> [3, S, S]
        return preprocess(x, self.config)  # [B, 3, h, w] -> [B, 3, S, S]

    def postprocess_masks(self, masks, input_size: Sequence[int], original_size: Sequence[int],
                          threshold: Optional[float] = None):
        """[B, K', M, M] logits -> [B, K', H, W] logits (upsample, crop the padding, resize).

        ``threshold`` (minisam only) returns ``logits > threshold`` as bool instead, fused into
        the last resize pass so the float masks are never stored.
        """
        return _postprocess_masks(masks, input_size, original_size, self.config.img_size, threshold)

    # ----------------------------------------------------------------- end to end

    def __call__(self, batched_input: List[Dict[str, Any]], multimask_output: bool,
                 trace: Optional[dict] = None) -> List[Dict[str, np.ndarray]]:
        """``Sam.forward``: a list of per-image dicts in, a list of per-image dicts out.

        Each input dict: ``image`` [3, h, w] (already resized with ResizeLongestSide),
        ``original_size`` (H, W), optional ``point_coords`` [B, N, 2] + ``point_labels`` [B, N],
        ``boxes`` [B, 4], ``mask_inputs`` [B, 1, M, M], all in the model input frame.
        Each output dict: ``masks`` [B, K', H, W] bool, ``iou_predictions`` [B, K'],
        ``low_res_logits`` [B, K', M, M].

        ``trace`` gets the official hook keys; a module called again (the decoder of the second
        image) gets ``key#1``, ``key#2``, ... as ``tests/official.record`` names it.
        """
        if not batched_input:
            raise PromptError("batched_input is empty: give at least one image record")
        images = []
        for i, rec in enumerate(batched_input):
            if "image" not in rec or "original_size" not in rec:
                raise PromptError(f"batched_input[{i}] needs 'image' and 'original_size'")
            images.append(self.preprocess(rec["image"]))  # [3, S, S]
        embeddings = self.image_encoder(np.stack(images), trace=trace)  # [B_img, C, G, G]

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
                                             multimask_output, trace=local)  # [B, K', M, M], [B, K']
            masks = self.postprocess_masks(low_res, rec["image"].shape[-2:], rec["original_size"],
                                           self.mask_threshold)  # [B, K', H, W] bool
            outputs.append({"masks": masks, "iou_predictions": iou,
                            "low_res_logits": low_res})
            if trace is not None:
                for k, v in local.items():  # the n-th call of a module is "key#n", as record() names it
                    n = calls.get(k, 0)
                    calls[k] = n + 1
                    trace[k if n == 0 else f"{k}#{n}"] = v
        return outputs
