"""Hugging Face ``transformers`` SAM key names <-> the official ones.

HF's ``convert_sam_to_hf.py`` renames the official keys by ordered substring replacements
(``docs/numerics.md`` section 8). This module holds that forward map (used in tests to write HF-layout files
from official tensors) and its inverse (used when loading). The inverse is written per
component so that generic renames such as ``.layer_norm`` -> ``.norm`` never touch
``neck.layer_norm1``, ``upscale_layer_norm`` or ``mask_embed.layer_norm1``, which map to
numbered Sequential children instead.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping

import numpy as np

# (official substring, HF substring), applied in order (convert_sam_to_hf.py KEYS_TO_MODIFY_MAPPING).
_FORWARD = [
    ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
    ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
    ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("image_encoder", "vision_encoder"),
    ("neck.0", "neck.conv1"),
    ("neck.1", "neck.layer_norm1"),
    ("neck.2", "neck.conv2"),
    ("neck.3", "neck.layer_norm2"),
    ("patch_embed.proj", "patch_embed.projection"),
    (".norm", ".layer_norm"),
    ("blocks", "layers"),
]
_HYPER = re.compile(r"output_hypernetworks_mlps\.(\d+)\.layers\.(\d+)")
_HYPER_NAMES = {"0": "proj_in", "1": "layers.0", "2": "proj_out"}


def official_to_hf(key: str) -> str:
    """One official key -> its HF name (the official converter's rules, 3-layer MLPs)."""
    for old, new in _FORWARD:
        if old in key:
            key = key.replace(old, new)
    return _HYPER.sub(lambda m: f"output_hypernetworks_mlps.{m.group(1)}.{_HYPER_NAMES[m.group(2)]}", key)


def is_hf_layout(keys) -> bool:
    return any(k.startswith("vision_encoder.") or k.startswith("shared_image_embedding.") for k in keys)


def _mlp_depths(keys) -> Dict[str, int]:
    """Number of layers of each HF MLP (proj_in + layers.k + proj_out), keyed by its prefix."""
    depth: Dict[str, int] = {}
    for k in keys:
        m = re.match(r"(.*(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.(proj_in|proj_out|layers\.(\d+))\.", k)
        if m:
            n = int(m.group(3)) + 3 if m.group(3) is not None else 2
            depth[m.group(1)] = max(depth.get(m.group(1), 2), n)
    return depth


def hf_to_official_key(key: str, mlp_depths: Mapping[str, int]) -> str:
    k = key
    if k.startswith("vision_encoder."):
        k = "image_encoder." + k[len("vision_encoder."):]
        k = k.replace("image_encoder.layers.", "image_encoder.blocks.")
        k = re.sub(r"(image_encoder\.blocks\.\d+)\.layer_norm([12])", r"\1.norm\2", k)
        for old, new in (("neck.conv1", "neck.0"), ("neck.layer_norm1", "neck.1"), ("neck.conv2", "neck.2"),
                         ("neck.layer_norm2", "neck.3"), ("patch_embed.projection", "patch_embed.proj")):
            k = k.replace(old, new)
    elif k.startswith("prompt_encoder."):
        for old, new in (("shared_embedding.positional_embedding", "pe_layer.positional_encoding_gaussian_matrix"),
                         ("prompt_encoder.point_embed.", "prompt_encoder.point_embeddings."), ("mask_embed.conv1", "mask_downscaling.0"),
                         ("mask_embed.layer_norm1", "mask_downscaling.1"), ("mask_embed.conv2", "mask_downscaling.3"),
                         ("mask_embed.layer_norm2", "mask_downscaling.4"), ("mask_embed.conv3", "mask_downscaling.6")):
            k = k.replace(old, new)
    elif k.startswith("mask_decoder."):
        for old, new in (("upscale_conv1", "output_upscaling.0"), ("upscale_layer_norm", "output_upscaling.1"),
                         ("upscale_conv2", "output_upscaling.3")):
            k = k.replace(old, new)
        k = re.sub(r"(transformer\.layers\.\d+)\.layer_norm([1-4])", r"\1.norm\2", k)
        k = k.replace("transformer.layer_norm_final_attn", "transformer.norm_final_attn")
        m = re.match(r"(.*(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.(proj_in|proj_out|layers\.(\d+))\.(.*)", key)
        if m:
            depth = mlp_depths[m.group(1)]
            idx = 0 if m.group(2) == "proj_in" else depth - 1 if m.group(2) == "proj_out" else int(m.group(3)) + 1
            prefix = hf_to_official_key(m.group(1) + ".x", mlp_depths)[:-2]
            k = f"{prefix}.layers.{idx}.{m.group(4)}"
    return k


def hf_to_official(sd: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Rename an HF-layout state dict to official names.

    The top-level ``shared_image_embedding.positional_embedding`` is HF's tied copy of the
    prompt encoder's Gaussian matrix: dropped when the prompt-encoder copy is present (and
    equal), used in its place otherwise.
    """
    depths = _mlp_depths(sd)
    out: Dict[str, np.ndarray] = {}
    tied = sd.get("shared_image_embedding.positional_embedding")
    for key, value in sd.items():
        if key == "shared_image_embedding.positional_embedding":
            continue
        out[hf_to_official_key(key, depths)] = value
    gk = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    if tied is not None and gk not in out:
        out[gk] = tied
    return out
