"""The official PyTorch SAM at any configuration: build, randomize, trace.

Used by the parity suite (``tests/official.py``), ``minisam parity`` and the training script;
never by the inference path. torch and ``segment_anything`` are imported inside the functions,
so importing this module costs nothing and needs neither.

- :func:`build_official` builds ``segment_anything.modeling.Sam`` from a
  :class:`minisam.config.SamConfig`, exactly as ``build_sam._build_sam`` does for the presets.
- :func:`randomize` overwrites **every** parameter and buffer with seeded values at sensible
  scales. The official init leaves ``rel_pos`` at zero and LayerNorms at 1/0, which would
  hide bugs in exactly the places where reimplementations go wrong.
- :func:`record` runs a callable with forward hooks on every named module and returns the
  outputs keyed by the official module path (``image_encoder.blocks.3``). A module called
  more than once gets ``path#1``, ``path#2``, ... for the later calls.
- :func:`float64_torch_engine` makes the torch engine of ``minisam train-micro`` a float64
  witness for the NumPy engine in float64.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from functools import partial
from typing import Callable, Dict

import numpy as np

from minisam.config import SamConfig


def build_official(cfg: SamConfig):
    """``segment_anything.modeling.Sam`` at ``cfg`` (mirrors build_sam._build_sam)."""
    import torch
    from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                           TwoWayTransformer)
    G = cfg.image_embedding_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=cfg.encoder_depth, embed_dim=cfg.encoder_embed_dim, img_size=cfg.img_size,
            mlp_ratio=cfg.mlp_ratio, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=cfg.encoder_num_heads, patch_size=cfg.patch_size, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=list(cfg.encoder_global_attn_indexes),
            window_size=cfg.window_size, out_chans=cfg.prompt_embed_dim),
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_embed_dim, image_embedding_size=(G, G),
            input_image_size=(cfg.img_size, cfg.img_size), mask_in_chans=cfg.mask_in_chans),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=cfg.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_depth, embedding_dim=cfg.prompt_embed_dim,
                mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_num_heads,
                attention_downsample_rate=cfg.attention_downsample_rate),
            transformer_dim=cfg.prompt_embed_dim, iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim),
        pixel_mean=list(cfg.pixel_mean), pixel_std=list(cfg.pixel_std),
    )
    sam.eval()
    return sam


@contextmanager
def float64_torch_engine():
    """Within the context, :func:`minisam.training.micro.train` with ``engine="torch"`` runs in
    float64: the model of :func:`build_official` is widened (the same init: the float32 draws,
    widened), and the loss runs wholly in float64. The engine hands the loss float32 targets, with
    which ``binary_cross_entropy_with_logits`` returns float32 even for float64 logits, and the
    IoU target, a ratio of two pixel counts, is divided in torch's default dtype (float32); both
    would limit the witness to ~1e-7. The NumPy engine in float64 computes both in float64.
    Used by ``tests/test_train_micro_numpy.py`` and ``benchmarks/train_micro_engines.py --dtype float64``.
    """
    import torch
    from minisam.training import micro
    module = sys.modules[__name__]
    loss, build = micro.sam_loss_torch, module.build_official

    def loss64(logits, iou_pred, targets, *args, **kwargs):
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            return loss(logits, iou_pred, targets.to(logits.dtype), *args, **kwargs)
        finally:
            torch.set_default_dtype(default)

    def build64(cfg):
        model = build(cfg).double()
        # Sam's pixel mean and std are float32 buffers; widened they are the float32 roundings
        # of the constants, where the NumPy engine in float64 uses the constants themselves.
        model.pixel_mean = torch.tensor(cfg.pixel_mean, dtype=torch.float64).view(-1, 1, 1)
        model.pixel_std = torch.tensor(cfg.pixel_std, dtype=torch.float64).view(-1, 1, 1)
        pe_layer = model.prompt_encoder.pe_layer
        encode = pe_layer._pe_encoding
        pe_layer._pe_encoding = lambda coords: encode(coords.to(torch.float64))
        return model

    micro.sam_loss_torch, module.build_official = loss64, build64
    try:
        yield
    finally:
        micro.sam_loss_torch, module.build_official = loss, build


def randomize(model, seed: int = 0):
    """Give every persistent parameter and buffer seeded random values at sensible scales.

    - weights (ndim >= 2): N(0, 1/fan_in), the scale that keeps activations O(1);
    - biases: N(0, 0.02);
    - LayerNorm weights 1 + N(0, 0.1), LayerNorm biases N(0, 0.1), so a swapped or missing
      affine shows up;
    - ``rel_pos_h/w``: N(0, 0.2), so the relative-position terms matter;
    - ``pos_embed`` and learned tokens/embeddings: N(0, 0.5) and N(0, 1);
    - the random-Fourier matrix: N(0, 1), as the official init draws it.
    """
    import torch
    gen = torch.Generator().manual_seed(seed)
    norm_names = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, torch.nn.LayerNorm) or type(mod).__name__ == "LayerNorm2d":
            norm_names.add(mname)
    tensors = dict(model.named_parameters())
    tensors.update({k: v for k, v in model.state_dict().items() if k not in tensors})
    for name, t in tensors.items():
        mname, _, leaf = name.rpartition(".")
        shape = tuple(t.shape)
        if mname in norm_names:
            base = 1.0 if leaf == "weight" else 0.0
            val = base + 0.1 * torch.randn(shape, generator=gen)
        elif leaf in ("rel_pos_h", "rel_pos_w"):
            val = 0.2 * torch.randn(shape, generator=gen)
        elif leaf == "pos_embed":
            val = 0.5 * torch.randn(shape, generator=gen)
        elif leaf == "positional_encoding_gaussian_matrix":
            val = torch.randn(shape, generator=gen)
        elif any(s in name for s in ("point_embeddings", "not_a_point_embed", "no_mask_embed",
                                     "iou_token", "mask_tokens")):
            val = torch.randn(shape, generator=gen)
        elif leaf == "bias":
            val = 0.02 * torch.randn(shape, generator=gen)
        else:
            fan_in = shape[1] * int(np.prod(shape[2:])) if len(shape) >= 2 else shape[0]
            if type(_module(model, mname)).__name__ == "ConvTranspose2d":
                fan_in = shape[0]  # weight is (in, out, kh, kw); each output sums over `in`
            val = torch.randn(shape, generator=gen) / math.sqrt(max(fan_in, 1))
        with torch.no_grad():
            t.copy_(val.to(t.dtype))
    return model


def _module(model, path):
    return model.get_submodule(path) if path else model


def _to_numpy(out):
    import torch
    if isinstance(out, torch.Tensor):
        return out.detach().float().cpu().numpy() if out.is_floating_point() else out.detach().cpu().numpy()
    if isinstance(out, (tuple, list)):
        return type(out)(_to_numpy(o) for o in out)
    return out


def record(model, fn: Callable[[], object], prefix: str = ""):
    """Run ``fn()`` with a forward hook on every named submodule of ``model``.

    Returns ``(result, trace)``: trace maps official module paths (with ``prefix``
    prepended, e.g. "image_encoder.") to numpy copies of the module outputs.
    """
    trace: Dict[str, object] = {}
    counts: Dict[str, int] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue
        key = prefix + name

        def hook(_m, _inp, out, key=key):
            n = counts.get(key, 0)
            counts[key] = n + 1
            trace[key if n == 0 else f"{key}#{n}"] = _to_numpy(out)
        handles.append(mod.register_forward_hook(hook))
    import torch
    try:
        with torch.no_grad():
            result = fn()
    finally:
        for h in handles:
            h.remove()
    return result, trace
