"""Building a model: ``build_sam`` and the official ``sam_model_registry``.

Mirrors ``segment_anything/build_sam.py``. The official builders construct a fixed
architecture and then ``load_state_dict(strict=True)``; minisam reads the architecture
from the tensor shapes instead (:func:`minisam.config.infer_config`), checks every key
and shape as strictly as torch does, and holds the parameters as a nested dict keyed like
the checkpoint (``p["image_encoder"]["blocks"][3]["attn"]["qkv"]["weight"]``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

import numpy as np

from minisam.checkpoints.formats import load_state_dict
from minisam.config import PRESETS, SamConfig, expected_shapes, infer_config
from minisam.config import _normalize as make_overrides
from minisam.errors import CheckpointError, ConfigError
from minisam.checkpoints.hf_keys import hf_to_official, is_hf_layout
from minisam.checkpoints.param_tree import nest
from minisam.checkpoints.pretrained_dir import config_from_hf, read_pretrained_dir

PathLike = Union[str, os.PathLike]


def check_state_dict(sd: Mapping[str, np.ndarray], cfg: SamConfig, source: str = "state dict") -> None:
    """Fail, naming the key, on any missing, unexpected or mis-shaped tensor (torch's strict load)."""
    want = expected_shapes(cfg)
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    wrong = [f"{k}: {tuple(np.shape(sd[k]))} != expected {want[k]}"
             for k in want if k in sd and tuple(np.shape(sd[k])) != want[k]]
    problems = []
    if missing:
        problems.append(f"missing key(s) {missing[:5]}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"unexpected key(s) {unexpected[:5]}" + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""))
    if wrong:
        problems.append("wrong shape(s): " + "; ".join(wrong[:5]))
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    for k in want:
        v = sd[k]
        if not np.issubdtype(np.asarray(v).dtype, np.floating):
            raise CheckpointError(f"{source}: {k} has dtype {np.asarray(v).dtype}, expected a float tensor")
        if not np.all(np.isfinite(v)):
            raise CheckpointError(f"{source}: {k} contains NaN or inf")


def build_sam(checkpoint: Union[PathLike, Mapping[str, np.ndarray]],
              config: Optional[Union[SamConfig, Mapping[str, Any]]] = None):
    """A :class:`minisam.modeling.sam.Sam` from a checkpoint file, a Hugging Face
    ``save_pretrained`` directory (:mod:`minisam.checkpoints.pretrained_dir`: its config.json is
    read and checked against the tensors) or a flat state dict.

    ``config``: ``None`` to infer everything from the shapes; a mapping of fields to override
    (the decoder head count is the one size no shape shows: default 8); or a full
    :class:`SamConfig`, which the tensors must then fit.
    """
    from minisam.modeling.sam import Sam
    hf_config = None
    if isinstance(checkpoint, Mapping):
        sd, source = dict(checkpoint), "state dict"
    else:
        source = os.fspath(checkpoint)
        if os.path.isdir(source):  # a Hugging Face save_pretrained directory
            sd, hf_config = read_pretrained_dir(source)
        else:
            sd = load_state_dict(source)
    if is_hf_layout(sd):
        sd = hf_to_official(sd)
    if isinstance(config, SamConfig):
        cfg = config
    elif hf_config is not None:
        cfg = config_from_hf(sd, hf_config, source)  # every field checked against the tensors
        if config:
            cfg = cfg.replace(**make_overrides(config))
    else:
        make_overrides(config or {})  # an unknown field is the caller's mistake: ConfigError, not the file's
        try:
            cfg = infer_config(sd, config)
        except ConfigError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
    check_state_dict(sd, cfg, source)
    if cfg.prompt_embed_dim % cfg.decoder_num_heads or \
            (cfg.prompt_embed_dim // cfg.attention_downsample_rate) % cfg.decoder_num_heads:
        raise ConfigError(f"decoder_num_heads={cfg.decoder_num_heads} does not divide the decoder width "
                          f"{cfg.prompt_embed_dim} (and {cfg.prompt_embed_dim // cfg.attention_downsample_rate})")
    # Model math runs in float32 on contiguous arrays (fp16/bf16/fp64 checkpoints are widened/narrowed once).
    flat = {k: np.ascontiguousarray(sd[k], dtype=np.float32) for k in expected_shapes(cfg)}
    return Sam(cfg, nest(flat))


def _registered(name: str, checkpoint: Optional[PathLike]):
    from minisam.checkpoints import registry as weights
    if checkpoint is None:
        checkpoint = weights.find(name)
    sam = build_sam(checkpoint)
    preset = PRESETS.get(name)
    if preset is not None:
        got = sam.config
        fields = ("encoder_embed_dim", "encoder_depth", "encoder_num_heads", "encoder_global_attn_indexes",
                  "img_size", "patch_size", "window_size", "prompt_embed_dim")
        diff = [f"{f}={getattr(got, f)} (expected {getattr(preset, f)})" for f in fields
                if getattr(got, f) != getattr(preset, f)]
        if diff:
            raise CheckpointError(f"{os.fspath(checkpoint)} is not a {name} checkpoint: " + ", ".join(diff))
    from minisam.automatic_mask_generator import MODEL_TUNABLE
    tuned = dict(weights.entry(name).get("generator_defaults", {}))
    unknown = sorted(set(tuned) - set(MODEL_TUNABLE))
    if unknown:
        raise CheckpointError(f"registry entry {name!r}: generator_defaults has unknown settings {unknown}; "
                              f"known: {list(MODEL_TUNABLE)}")
    sam.generator_defaults = tuned
    return sam


def build_sam_micro(checkpoint: Optional[PathLike] = None):
    """minisam's small model for synthetic shapes (shipped in ``weights/``; offline default)."""
    return _registered("micro", checkpoint)


def build_sam_vit_h(checkpoint: Optional[PathLike] = None):
    return _registered("vit_h", checkpoint)


def build_sam_vit_l(checkpoint: Optional[PathLike] = None):
    return _registered("vit_l", checkpoint)


def build_sam_vit_b(checkpoint: Optional[PathLike] = None):
    return _registered("vit_b", checkpoint)


class _Registry(dict):
    """``sam_model_registry[name](checkpoint=path)``, as in the official package.

    Unlike the official builders, ``checkpoint=None`` does not give a randomly initialised
    model (which only produces noise): it loads the downloaded weights of that name (see
    ``minisam weights download``) and says how to get them if they are absent.
    """

    def __missing__(self, name):
        raise ConfigError(f"unknown model {name!r}; known: {sorted(self)}")


sam_model_registry = _Registry({
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "micro": build_sam_micro,
})

DEFAULT_MODEL = "micro"  # what the CLI and the lessons use when no model is named
