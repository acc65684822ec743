"""Hugging Face ``save_pretrained`` directories: ``config.json`` plus one or more weight files.

A ``transformers`` ``SamModel.save_pretrained(path)`` writes a directory, not a file:

- ``config.json``: the sizes of the three parts (``vision_config``, ``prompt_encoder_config``,
  ``mask_decoder_config``), among them the two things no tensor shape shows: the mask
  decoder's head count and the LayerNorm eps of each part;
- ``model.safetensors``, or shards ``model-0000k-of-0000n.safetensors`` listed by
  ``model.safetensors.index.json`` (its ``weight_map``: tensor name -> shard file); or the
  older ``pytorch_model.bin`` (a torch zip) and its ``pytorch_model.bin.index.json``.

:func:`read_pretrained_dir` reads both without torch and maps ``config.json`` onto
:class:`minisam.config.SamConfig` fields (:data:`HF_FIELDS`); :func:`config_from_hf` then checks
every field a shape can show against the tensors and refuses a disagreement, naming the
``config.json`` field: a file that says 12 decoder heads where minisam would assume 8 must not
load into a model that silently computes something else. Fields for options minisam does not
implement (``qkv_bias: false``, another activation, ...) are refused the same way.

A shard name in an index must be a plain file name inside the directory: an absolute path,
``..`` or a link that leads outside is refused (a downloaded directory is not trusted to read
the rest of the disk).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from minisam.checkpoints.formats import load_state_dict
from minisam.errors import CheckpointError, ConfigError

CONFIG_NAME = "config.json"
# (index file, single file), in the order transformers looks for them
WEIGHT_FILES = (("model.safetensors.index.json", "model.safetensors"),
                ("pytorch_model.bin.index.json", "pytorch_model.bin"))

# config.json section -> {HF field: (SamConfig field, HF's default when the field is absent)}
HF_FIELDS = {
    "vision_config": {
        "hidden_size": ("encoder_embed_dim", 768),
        "num_hidden_layers": ("encoder_depth", 12),
        "num_attention_heads": ("encoder_num_heads", 12),
        "global_attn_indexes": ("encoder_global_attn_indexes", [2, 5, 8, 11]),
        "image_size": ("img_size", 1024),
        "patch_size": ("patch_size", 16),
        "window_size": ("window_size", 14),
        "output_channels": ("prompt_embed_dim", 256),
        "layer_norm_eps": ("encoder_norm_eps", 1e-6),
    },
    "prompt_encoder_config": {
        "hidden_size": ("prompt_embed_dim", 256),
        "image_size": ("img_size", 1024),
        "patch_size": ("patch_size", 16),
        "mask_input_channels": ("mask_in_chans", 16),
        "layer_norm_eps": ("mask_embed_norm_eps", 1e-6),
    },
    "mask_decoder_config": {
        "hidden_size": ("prompt_embed_dim", 256),
        "num_hidden_layers": ("decoder_depth", 2),
        "mlp_dim": ("decoder_mlp_dim", 2048),
        "num_attention_heads": ("decoder_num_heads", 8),
        "attention_downsample_rate": ("attention_downsample_rate", 2),
        "num_multimask_outputs": ("num_multimask_outputs", 3),
        "iou_head_depth": ("iou_head_depth", 3),
        "iou_head_hidden_dim": ("iou_head_hidden_dim", 256),
        "layer_norm_eps": ("decoder_norm_eps", 1e-6),
    },
}
# Options of the HF model that minisam (the official architecture) has one value for.
HF_FIXED = {
    "vision_config": {"qkv_bias": True, "use_abs_pos": True, "use_rel_pos": True, "hidden_act": "gelu",
                      "num_channels": 3},
    "prompt_encoder_config": {"num_point_embeddings": 4, "hidden_act": "gelu"},
    "mask_decoder_config": {"hidden_act": "relu"},
}
# SamConfig fields that no tensor shape shows: config.json is the only source of these.
NOT_IN_SHAPES = ("decoder_num_heads", "encoder_norm_eps", "decoder_norm_eps", "mask_embed_norm_eps")


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the {what} is not valid JSON ({exc})") from None


def _inside(directory: str, name: Any, index_path: str) -> str:
    """The path of shard ``name`` of an index, refusing anything that leads outside ``directory``."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or os.path.normpath(name).startswith(".."):
        raise CheckpointError(f"{index_path}: shard {name!r} is not a file name inside the directory")
    path = os.path.join(directory, name)
    real_dir = os.path.realpath(directory)
    if os.path.commonpath([os.path.realpath(path), real_dir]) != real_dir:
        raise CheckpointError(f"{index_path}: shard {name!r} leads outside the directory")
    return path


def _read_sharded(directory: str, index_path: str) -> Dict[str, np.ndarray]:
    index = _read_json(index_path, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: no 'weight_map' (tensor name -> shard file)")
    shards: Dict[str, list] = {}
    for key, name in weight_map.items():
        shards.setdefault(_inside(directory, name, index_path), []).append(key)
    sd: Dict[str, np.ndarray] = {}
    for path, keys in shards.items():
        if not os.path.isfile(path):
            raise CheckpointError(f"{index_path}: shard {os.path.basename(path)!r} is missing from {directory}")
        part = load_state_dict(path)
        absent = [k for k in keys if k not in part]
        if absent:
            raise CheckpointError(f"{path}: the index puts {absent[:3]} in this shard, which does not hold them")
        stray = sorted(set(part) - set(keys))
        if stray:
            raise CheckpointError(f"{path}: holds {stray[:3]}, which the index {os.path.basename(index_path)} "
                                  "places elsewhere or not at all")
        sd.update(part)
    return sd


def read_pretrained_dir(directory) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """(flat state dict with the stored key names, config.json as a dict) of a save_pretrained directory."""
    directory = os.fspath(directory)
    config_path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{directory}: a directory without {CONFIG_NAME}; minisam reads a Hugging Face "
                              "save_pretrained directory (config.json and model.safetensors) or a checkpoint file")
    config = _read_json(config_path, "model config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: not a JSON object")
    for index_name, single_name in WEIGHT_FILES:
        index_path = os.path.join(directory, index_name)
        if os.path.isfile(index_path):
            return _read_sharded(directory, index_path), config
        single = os.path.join(directory, single_name)
        if os.path.isfile(single):
            return load_state_dict(single), config
    names = ", ".join(n for pair in WEIGHT_FILES for n in pair)
    raise CheckpointError(f"{directory}: no weights (looked for {names})")


def hf_fields(config: Mapping[str, Any], config_path: str) -> Dict[str, Tuple[Any, str]]:
    """SamConfig field -> (value, the config.json field it came from), HF's defaults filling gaps.

    Refuses a config of another model type, options minisam does not implement, and sections
    that disagree with each other (``vision_config.image_size`` vs ``prompt_encoder_config.image_size``).
    """
    model_type = config.get("model_type", "sam")
    if model_type != "sam":
        raise CheckpointError(f"{config_path}: model_type is {model_type!r}, not 'sam'")
    out: Dict[str, Tuple[Any, str]] = {}
    for section, fields in HF_FIELDS.items():
        sub = config.get(section, {})
        if not isinstance(sub, dict):
            raise CheckpointError(f"{config_path}: {section} is not a JSON object")
        for name, value in HF_FIXED[section].items():
            if name in sub and sub[name] != value:
                raise CheckpointError(f"{config_path}: {section}.{name} = {sub[name]!r}; minisam implements the "
                                      f"official SAM, which has {value!r}")
        for name, (field, default) in fields.items():
            value = sub.get(name, default)
            value = tuple(value) if isinstance(value, list) else value
            where = f"{section}.{name}"
            if field in out and out[field][0] != value:
                raise CheckpointError(f"{config_path}: {where} = {value!r} disagrees with "
                                      f"{out[field][1]} = {out[field][0]!r}")
            out.setdefault(field, (value, where))
    vision = config.get("vision_config", {})
    mlp_dim = vision.get("mlp_dim")
    if mlp_dim is not None:
        out["mlp_ratio"] = (mlp_dim / out["encoder_embed_dim"][0], "vision_config.mlp_dim")
    elif "mlp_ratio" in vision:
        out["mlp_ratio"] = (float(vision["mlp_ratio"]), "vision_config.mlp_ratio")
    return out


def config_from_hf(sd: Mapping[str, np.ndarray], config: Mapping[str, Any], directory: str):
    """The :class:`SamConfig` of an HF directory: the fields of ``config.json``, each one a shape
    can show checked against the (official-named) tensors ``sd``; a disagreement is refused
    with the config.json field named."""
    from minisam.build_sam import check_state_dict
    from minisam.config import infer_config, make_config
    config_path = os.path.join(directory, CONFIG_NAME)
    fields = hf_fields(config, config_path)
    try:
        from_shapes = infer_config(sd)
    except ConfigError as exc:
        raise CheckpointError(f"{directory}: {exc}") from None
    for field, (value, where) in fields.items():
        if field in NOT_IN_SHAPES:
            continue
        shown = getattr(from_shapes, field)
        if field == "mlp_ratio":
            same = int(from_shapes.encoder_embed_dim * value) == from_shapes.encoder_mlp_dim
        elif field in ("encoder_global_attn_indexes", "window_size"):
            continue  # ambiguous when a window covers the whole grid: checked below, on the rel-pos shapes
        else:
            same = value == shown
        if not same:
            raise CheckpointError(f"{config_path}: {where} = {value!r}, but the tensors show "
                                  f"{field} = {shown!r}; the config does not describe these weights")
    pos_feats = config.get("vision_config", {}).get("num_pos_feats", 128)
    if pos_feats * 2 != from_shapes.prompt_embed_dim:
        raise CheckpointError(f"{config_path}: vision_config.num_pos_feats = {pos_feats!r}, but the prompt "
                              f"width {from_shapes.prompt_embed_dim} needs {from_shapes.prompt_embed_dim // 2} "
                              "(the random-Fourier positional encoding has 2 x num_pos_feats channels)")
    try:
        cfg = make_config(**{**from_shapes.to_dict(), **{f: v for f, (v, _) in fields.items()}})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: unusable values ({exc})") from None
    try:
        check_state_dict(sd, cfg, directory)
    except CheckpointError:
        where = {f: w for f, (_, w) in fields.items()}
        if (cfg.encoder_global_attn_indexes, cfg.window_size) == \
                (from_shapes.encoder_global_attn_indexes, from_shapes.window_size):
            raise  # the tensors themselves are off: check_state_dict named the key
        raise CheckpointError(
            f"{config_path}: {where['encoder_global_attn_indexes']} = {list(cfg.encoder_global_attn_indexes)} and "
            f"{where['window_size']} = {cfg.window_size} do not match the tensors' relative-position tables "
            f"(they show global blocks {list(from_shapes.encoder_global_attn_indexes)} and window "
            f"{from_shapes.window_size})") from None
    heads, width = cfg.decoder_num_heads, cfg.prompt_embed_dim // cfg.attention_downsample_rate
    if not isinstance(heads, int) or heads < 1 or cfg.prompt_embed_dim % heads or width % heads:
        raise CheckpointError(f"{config_path}: mask_decoder_config.num_attention_heads = {heads!r} does not "
                              f"divide the decoder width {cfg.prompt_embed_dim} (and {width})")
    for field in ("encoder_norm_eps", "decoder_norm_eps", "mask_embed_norm_eps"):
        eps = getattr(cfg, field)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1):
            raise CheckpointError(f"{config_path}: {fields[field][1]} = {eps!r} is not a LayerNorm eps in (0, 1)")
    return cfg
