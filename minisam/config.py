"""Model configuration: the hyperparameters of ``segment_anything/build_sam.py``.

The official builders fix everything except four encoder numbers (embed dim, depth, heads,
global blocks). minisam also runs small configurations (for tests and the trained offline
model), so every size is a field, and :func:`infer_config` reads them back from the tensor
shapes of a state dict. Only the decoder's head count cannot be seen in any shape: it
defaults to 8 (the official value) and can be overridden.

Paper: Kirillov et al. 2023, section 3 (model) and appendix A (architecture details).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from minisam.errors import ConfigError


@dataclass(frozen=True)
class SamConfig:
    # image encoder (ImageEncoderViT)
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    # prompt encoder / neck output
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    # mask decoder (MaskDecoder + TwoWayTransformer)
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # LayerNorm eps where a checkpoint's config may set it (docs/numerics.md section 3); the
    # defaults are the official values. A Hugging Face config.json states its own (its mask
    # decoder's blocks use 1e-6 where the official TwoWayTransformer uses nn.LayerNorm's 1e-5).
    encoder_norm_eps: float = 1e-6      # image encoder blocks' norm1, norm2
    decoder_norm_eps: float = 1e-5      # two-way transformer blocks' norm1..norm4
    mask_embed_norm_eps: float = 1e-6   # prompt encoder mask_downscaling's two LayerNorm2d
    # Sam
    pixel_mean: Tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: Tuple[float, float, float] = (58.395, 57.12, 57.375)

    @property
    def image_embedding_size(self) -> int:
        """Side of the embedding grid, 1024 // 16 = 64 for the official models."""
        return self.img_size // self.patch_size

    @property
    def mask_input_size(self) -> int:
        """Side of a low-res mask (mask prompt and low_res_logits), 4 * 64 = 256."""
        return 4 * self.image_embedding_size

    @property
    def encoder_head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_num_heads

    @property
    def encoder_mlp_dim(self) -> int:
        return int(self.encoder_embed_dim * self.mlp_ratio)

    @property
    def num_mask_tokens(self) -> int:
        return self.num_multimask_outputs + 1

    def block_window_size(self, i: int) -> int:
        """0 for a global block (attention over the whole grid), else ``window_size``."""
        return 0 if i in self.encoder_global_attn_indexes else self.window_size

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        d["pixel_mean"] = list(self.pixel_mean)
        d["pixel_std"] = list(self.pixel_std)
        return d

    def replace(self, **changes) -> "SamConfig":
        return replace(self, **_normalize(changes))


def _normalize(d: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(d)
    names = set(SamConfig.__dataclass_fields__)
    unknown = sorted(set(out) - names)
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; known: {sorted(names)}")
    for k in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std"):
        if k in out:
            out[k] = tuple(out[k])
    return out


def make_config(**fields) -> SamConfig:
    return SamConfig(**_normalize(fields))


# The official presets (build_sam.py L14-45).
VIT_B = SamConfig(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                  encoder_global_attn_indexes=(2, 5, 8, 11))
VIT_L = SamConfig(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                  encoder_global_attn_indexes=(5, 11, 17, 23))
VIT_H = SamConfig(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                  encoder_global_attn_indexes=(7, 15, 23, 31))
# minisam's own small model (weights/microsam_shapes.pth, trained by `minisam train-micro`):
# a 6-block ViT on 128x128 inputs (8x8 patches -> a 16x16 grid, so the 64x64 low-res masks
# are half the input side rather than a quarter: finer edges for shapes), windows of 8 with two
# global blocks, and a 96-wide prompt encoder/decoder with the official 8 heads (so that
# build_sam needs no override: the head count is the one size no tensor shape shows).
MICRO = SamConfig(encoder_embed_dim=160, encoder_depth=6, encoder_num_heads=5,
                  encoder_global_attn_indexes=(2, 5), img_size=128, patch_size=8, window_size=8,
                  prompt_embed_dim=96, mask_in_chans=16, decoder_depth=2, decoder_mlp_dim=384,
                  decoder_num_heads=8, iou_head_hidden_dim=96)
PRESETS = {"vit_b": VIT_B, "vit_l": VIT_L, "vit_h": VIT_H, "micro": MICRO}


def _shape(sd: Mapping[str, np.ndarray], key: str) -> Tuple[int, ...]:
    if key not in sd:
        raise ConfigError(f"cannot infer the configuration: state dict has no key {key!r}")
    return tuple(np.shape(sd[key]))


def infer_config(sd: Mapping[str, np.ndarray], overrides: Optional[Mapping[str, Any]] = None) -> SamConfig:
    """Read every size of the model from the tensor shapes of a flat official state dict.

    - embed dim, patch and image size: ``patch_embed.proj.weight`` [D, 3, P, P], ``pos_embed`` [1, G, G, D]
    - depth: the number of ``image_encoder.blocks.N`` indexes
    - heads: D / head dim, where ``rel_pos_h`` is [L, head dim]
    - global blocks: ``rel_pos_h`` of length 2G-1; the others have length 2w-1 (window w)
    - prompt dim, decoder depth and MLP width, IoU head depth and width, number of mask tokens
    The decoder's head count is not in any shape: 8 unless ``overrides`` says otherwise.
    """
    overrides = _normalize(overrides or {})
    D, in_ch, P, P2 = _shape(sd, "image_encoder.patch_embed.proj.weight")
    pe = _shape(sd, "image_encoder.pos_embed")
    if len(pe) != 4 or pe[1] != pe[2] or pe[3] != D:
        raise ConfigError(f"image_encoder.pos_embed has shape {pe}, expected [1, G, G, {D}]")
    grid = pe[1]
    block_ids = sorted({int(k.split(".")[2]) for k in sd if k.startswith("image_encoder.blocks.")})
    depth = len(block_ids)
    if depth == 0 or block_ids != list(range(depth)):
        raise ConfigError(f"image_encoder.blocks indexes are {block_ids}, expected 0..N-1")
    lengths = [_shape(sd, f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in range(depth)]
    head_dim = lengths[0][1]
    if head_dim == 0 or D % head_dim:
        raise ConfigError(f"rel_pos_h head dim {head_dim} does not divide the embed dim {D}")
    global_len = 2 * grid - 1
    global_idx = tuple(i for i, s in enumerate(lengths) if s[0] == global_len)
    windowed = [s[0] for i, s in enumerate(lengths) if i not in global_idx]
    if windowed and len(set(windowed)) != 1:
        raise ConfigError(f"windowed blocks have different rel_pos lengths {sorted(set(windowed))}")
    window = (windowed[0] + 1) // 2 if windowed else 14
    C = _shape(sd, "image_encoder.neck.0.weight")[0]
    mlp_hidden = _shape(sd, "image_encoder.blocks.0.mlp.lin1.weight")[0]
    dec_layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("mask_decoder.transformer.layers.")})
    dec_mlp = _shape(sd, "mask_decoder.transformer.layers.0.mlp.lin1.weight")[0]
    num_mask_tokens = _shape(sd, "mask_decoder.mask_tokens.weight")[0]
    iou_layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("mask_decoder.iou_prediction_head.layers.")})
    iou_hidden = _shape(sd, "mask_decoder.iou_prediction_head.layers.0.weight")[0]
    mask_in = _shape(sd, "prompt_encoder.mask_downscaling.3.weight")[0]
    self_attn_internal = _shape(sd, "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight")[0]
    fields = dict(
        encoder_embed_dim=D, encoder_depth=depth, encoder_num_heads=D // head_dim,
        encoder_global_attn_indexes=global_idx, img_size=grid * P, patch_size=P,
        window_size=window, mlp_ratio=mlp_hidden / D, prompt_embed_dim=C, mask_in_chans=mask_in,
        decoder_depth=len(dec_layers), decoder_mlp_dim=dec_mlp,
        attention_downsample_rate=max(1, C // max(1, self_attn_internal)),
        num_multimask_outputs=num_mask_tokens - 1, iou_head_depth=len(iou_layers),
        iou_head_hidden_dim=iou_hidden,
    )
    fields.update(overrides)
    return SamConfig(**fields)


def expected_shapes(cfg: SamConfig) -> Dict[str, Tuple[int, ...]]:
    """Every key of the official ``Sam.state_dict()`` at this configuration, with its shape.

    Mirrors the module tree of segment_anything/modeling (registration order), so a
    checkpoint can be checked strictly: missing, unexpected and mis-shaped keys.
    """
    D, C, G = cfg.encoder_embed_dim, cfg.prompt_embed_dim, cfg.image_embedding_size
    hd, H4, P = cfg.encoder_head_dim, cfg.encoder_mlp_dim, cfg.patch_size
    s: Dict[str, Tuple[int, ...]] = {}
    e = "image_encoder."
    s[e + "pos_embed"] = (1, G, G, D)
    s[e + "patch_embed.proj.weight"] = (D, 3, P, P)
    s[e + "patch_embed.proj.bias"] = (D,)
    for i in range(cfg.encoder_depth):
        b = f"{e}blocks.{i}."
        w = cfg.block_window_size(i)
        L = 2 * (w if w > 0 else G) - 1
        s[b + "norm1.weight"] = (D,); s[b + "norm1.bias"] = (D,)
        s[b + "attn.rel_pos_h"] = (L, hd); s[b + "attn.rel_pos_w"] = (L, hd)
        s[b + "attn.qkv.weight"] = (3 * D, D); s[b + "attn.qkv.bias"] = (3 * D,)
        s[b + "attn.proj.weight"] = (D, D); s[b + "attn.proj.bias"] = (D,)
        s[b + "norm2.weight"] = (D,); s[b + "norm2.bias"] = (D,)
        s[b + "mlp.lin1.weight"] = (H4, D); s[b + "mlp.lin1.bias"] = (H4,)
        s[b + "mlp.lin2.weight"] = (D, H4); s[b + "mlp.lin2.bias"] = (D,)
    s[e + "neck.0.weight"] = (C, D, 1, 1)
    s[e + "neck.1.weight"] = (C,); s[e + "neck.1.bias"] = (C,)
    s[e + "neck.2.weight"] = (C, C, 3, 3)
    s[e + "neck.3.weight"] = (C,); s[e + "neck.3.bias"] = (C,)
    p = "prompt_encoder."
    s[p + "pe_layer.positional_encoding_gaussian_matrix"] = (2, C // 2)
    for i in range(4):
        s[p + f"point_embeddings.{i}.weight"] = (1, C)
    s[p + "not_a_point_embed.weight"] = (1, C)
    m = cfg.mask_in_chans
    s[p + "mask_downscaling.0.weight"] = (m // 4, 1, 2, 2); s[p + "mask_downscaling.0.bias"] = (m // 4,)
    s[p + "mask_downscaling.1.weight"] = (m // 4,); s[p + "mask_downscaling.1.bias"] = (m // 4,)
    s[p + "mask_downscaling.3.weight"] = (m, m // 4, 2, 2); s[p + "mask_downscaling.3.bias"] = (m,)
    s[p + "mask_downscaling.4.weight"] = (m,); s[p + "mask_downscaling.4.bias"] = (m,)
    s[p + "mask_downscaling.6.weight"] = (C, m, 1, 1); s[p + "mask_downscaling.6.bias"] = (C,)
    s[p + "no_mask_embed.weight"] = (1, C)
    d = "mask_decoder."
    t = d + "transformer."
    ci = C // cfg.attention_downsample_rate
    for i in range(cfg.decoder_depth):
        L_ = f"{t}layers.{i}."
        for name, internal in (("self_attn", C), ("cross_attn_token_to_image", ci), ("cross_attn_image_to_token", ci)):
            for proj in ("q_proj", "k_proj", "v_proj"):
                s[L_ + f"{name}.{proj}.weight"] = (internal, C); s[L_ + f"{name}.{proj}.bias"] = (internal,)
            s[L_ + f"{name}.out_proj.weight"] = (C, internal); s[L_ + f"{name}.out_proj.bias"] = (C,)
        for n in (1, 2, 3, 4):
            if n == 3:
                s[L_ + "mlp.lin1.weight"] = (cfg.decoder_mlp_dim, C); s[L_ + "mlp.lin1.bias"] = (cfg.decoder_mlp_dim,)
                s[L_ + "mlp.lin2.weight"] = (C, cfg.decoder_mlp_dim); s[L_ + "mlp.lin2.bias"] = (C,)
            s[L_ + f"norm{n}.weight"] = (C,); s[L_ + f"norm{n}.bias"] = (C,)
    for proj in ("q_proj", "k_proj", "v_proj"):
        s[t + f"final_attn_token_to_image.{proj}.weight"] = (ci, C); s[t + f"final_attn_token_to_image.{proj}.bias"] = (ci,)
    s[t + "final_attn_token_to_image.out_proj.weight"] = (C, ci); s[t + "final_attn_token_to_image.out_proj.bias"] = (C,)
    s[t + "norm_final_attn.weight"] = (C,); s[t + "norm_final_attn.bias"] = (C,)
    K = cfg.num_mask_tokens
    s[d + "iou_token.weight"] = (1, C)
    s[d + "mask_tokens.weight"] = (K, C)
    s[d + "output_upscaling.0.weight"] = (C, C // 4, 2, 2); s[d + "output_upscaling.0.bias"] = (C // 4,)
    s[d + "output_upscaling.1.weight"] = (C // 4,); s[d + "output_upscaling.1.bias"] = (C // 4,)
    s[d + "output_upscaling.3.weight"] = (C // 4, C // 8, 2, 2); s[d + "output_upscaling.3.bias"] = (C // 8,)
    for k in range(K):
        dims = [C] + [C] * 2 + [C // 8]
        for j in range(3):
            s[d + f"output_hypernetworks_mlps.{k}.layers.{j}.weight"] = (dims[j + 1], dims[j])
            s[d + f"output_hypernetworks_mlps.{k}.layers.{j}.bias"] = (dims[j + 1],)
    hid = cfg.iou_head_hidden_dim
    dims = [C] + [hid] * (cfg.iou_head_depth - 1) + [K]
    for j in range(cfg.iou_head_depth):
        s[d + f"iou_prediction_head.layers.{j}.weight"] = (dims[j + 1], dims[j])
        s[d + f"iou_prediction_head.layers.{j}.bias"] = (dims[j + 1],)
    return s
