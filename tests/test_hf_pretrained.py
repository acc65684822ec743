"""Hugging Face ``save_pretrained`` directories: they load, their config.json is obeyed and
checked, and the outputs equal ``transformers.SamModel``'s on the same input.

The HF model gets its weights from the randomized official model (every parameter and buffer,
:func:`minisam.reference.official.randomize`), renamed by the official converter's rules
(:func:`minisam.checkpoints.hf_keys.official_to_hf`) and loaded strictly. The tiny directory's
config.json sets values no tensor shape shows and minisam must read from the file: 4 decoder
heads (minisam would otherwise assume the official 8) and LayerNorm eps of 1e-3 / 1e-2 (the
official values are 1e-6 / 1e-5), large enough that ignoring them moves the outputs far past
the tolerance; a test shows that it does.

Tolerances: the parity bounds of ``test_mask_decoder.py`` (fp32 on both sides, different
summation orders): image embedding and IoU predictions 1e-4 x max|ref| (IoU also 1e-3 absolute),
low-res logits 1e-3 x max|ref| (they pass through the transposed convolutions and the
hypernetwork product, which amplify the differences of the 2-D LayerNorm statistics).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from conftest import TINY_CONFIGS
from minisam import build_sam, sam_model_registry
from minisam.checkpoints.formats import load_state_dict, save_safetensors
from minisam.checkpoints.hf_keys import official_to_hf
from minisam.config import VIT_B
from minisam.errors import CheckpointError
from minisam.reference.official import build_official, randomize
from official import rel_err

transformers = pytest.importorskip("transformers")

RTOL = 1e-4
LOGIT_RTOL = 1e-3
IOU_ATOL = 1e-3

TINY = TINY_CONFIGS["pad_window"].replace(decoder_num_heads=4)
EPS = dict(vision=1e-3, prompt=1e-2, decoder=1e-2)


def hf_config(cfg, eps=None):
    """A transformers SamConfig for a minisam SamConfig (HF's default eps unless ``eps`` is given)."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig
    eps = eps or {}
    C = cfg.prompt_embed_dim
    vision = SamVisionConfig(hidden_size=cfg.encoder_embed_dim, num_hidden_layers=cfg.encoder_depth,
                             num_attention_heads=cfg.encoder_num_heads, image_size=cfg.img_size,
                             patch_size=cfg.patch_size, window_size=cfg.window_size,
                             global_attn_indexes=list(cfg.encoder_global_attn_indexes), output_channels=C,
                             num_pos_feats=C // 2, mlp_dim=cfg.encoder_mlp_dim,
                             **({"layer_norm_eps": eps["vision"]} if "vision" in eps else {}))
    prompt = SamPromptEncoderConfig(hidden_size=C, image_size=cfg.img_size, patch_size=cfg.patch_size,
                                    mask_input_channels=cfg.mask_in_chans,
                                    **({"layer_norm_eps": eps["prompt"]} if "prompt" in eps else {}))
    decoder = SamMaskDecoderConfig(hidden_size=C, mlp_dim=cfg.decoder_mlp_dim, num_hidden_layers=cfg.decoder_depth,
                                   num_attention_heads=cfg.decoder_num_heads,
                                   attention_downsample_rate=cfg.attention_downsample_rate,
                                   num_multimask_outputs=cfg.num_multimask_outputs,
                                   iou_head_depth=cfg.iou_head_depth, iou_head_hidden_dim=cfg.iou_head_hidden_dim,
                                   **({"layer_norm_eps": eps["decoder"]} if "decoder" in eps else {}))
    return SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                     mask_decoder_config=decoder.to_dict())


def hf_model(cfg, seed, eps=None):
    """transformers.SamModel holding the randomized official weights at ``cfg``."""
    official = randomize(build_official(cfg), seed)
    sd = {official_to_hf(k): v for k, v in official.state_dict().items()}
    sd["shared_image_embedding.positional_embedding"] = sd["prompt_encoder.shared_embedding.positional_embedding"]
    model = transformers.SamModel(hf_config(cfg, eps)).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert not [k for k in missing if "shared_embedding" not in k], missing  # tied copies only
    return model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model = hf_model(TINY, seed=5, eps=EPS)
    path = tmp_path_factory.mktemp("hf") / "tiny"
    model.save_pretrained(str(path))
    return model, str(path)


def _inputs(cfg, seed):
    rng = np.random.default_rng(seed)
    S = cfg.img_size
    x = rng.normal(size=(1, 3, S, S)).astype(np.float32)                    # [1, 3, S, S] preprocessed
    pts = rng.uniform(0, S, size=(3, 2, 2)).astype(np.float32)             # [N=3, Np=2, 2] model frame
    labs = np.array([[1, 0], [1, 1], [1, -1]], np.int64)                   # [N, Np]
    boxes = np.sort(rng.uniform(0, S, size=(3, 2, 2)), axis=1).reshape(3, 4).astype(np.float32)  # [N, 4]
    return x, pts, labs, boxes


def _minisam_outputs(sam, x, pts, labs, boxes):
    emb = sam.image_encoder(x)                                             # [1, C, G, G]
    sparse, dense = sam.prompt_encoder(points=(pts, labs), boxes=boxes)    # [N, Ns, C], [N, C, G, G]
    low, iou = sam.mask_decoder(emb, sam.get_dense_pe(), sparse, dense, True)  # [N, 3, R, R], [N, 3]
    return emb, low, iou


@torch.no_grad()
def _hf_outputs(model, x, pts, labs, boxes):
    px = torch.from_numpy(x)
    emb = model.get_image_embeddings(px)                                   # [1, C, G, G]
    out = model(image_embeddings=emb, input_points=torch.from_numpy(pts)[None],
                input_labels=torch.from_numpy(labs)[None], input_boxes=torch.from_numpy(boxes)[None],
                multimask_output=True)
    return emb.numpy(), out.pred_masks[0].numpy(), out.iou_scores[0].numpy()   # [N, 3, R, R], [N, 3]


def _check(ref, got, label):
    (re, rl, ri), (ge, gl, gi) = ref, got
    for name, r, g, tol in (("embedding", re, ge, RTOL), ("low-res logits", rl, gl, LOGIT_RTOL)):
        a, rel = rel_err(r, g)
        print(f"{label} {name}: max abs {a:.3e}, rel {rel:.3e} (tolerance {tol:g})")
        assert rel <= tol, f"{label}: {name} off by {rel:.3e} x max|ref|"
    a, rel = rel_err(ri, gi)
    print(f"{label} iou: max abs {a:.3e}, rel {rel:.3e}")
    assert a <= IOU_ATOL and rel <= RTOL, f"{label}: IoU predictions off by {a:.3e}"


def test_tiny_directory_matches_sam_model(tiny_dir):
    model, path = tiny_dir
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    sam = build_sam(path)
    assert sam.config.decoder_num_heads == 4
    assert (sam.config.encoder_norm_eps, sam.config.mask_embed_norm_eps, sam.config.decoder_norm_eps) == \
        (EPS["vision"], EPS["prompt"], EPS["decoder"])
    inputs = _inputs(TINY, 0)
    ref = _hf_outputs(model, *inputs)
    _check(ref, _minisam_outputs(sam, *inputs), "hf tiny fast")
    sam.fast = False
    _check(ref, _minisam_outputs(sam, *inputs), "hf tiny readable")


def test_ignoring_config_json_would_fail(tiny_dir):
    """The weights file alone (no config.json: 8 heads and the official eps assumed) gives other
    outputs: the comparison above can fail, and config.json is what makes it pass."""
    model, path = tiny_dir
    sam = build_sam(os.path.join(path, "model.safetensors"), config={"decoder_num_heads": 4})
    inputs = _inputs(TINY, 0)
    ref = _hf_outputs(model, *inputs)
    with pytest.raises(AssertionError, match="off by"):
        _check(ref, _minisam_outputs(sam, *inputs), "hf tiny without config.json")


def _copy_dir(src, dst, config_edit=None):
    os.makedirs(dst)
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f:
            data = f.read()
        if name == "config.json" and config_edit is not None:
            cfg = json.loads(data)
            config_edit(cfg)
            data = json.dumps(cfg).encode()
        with open(os.path.join(dst, name), "wb") as f:
            f.write(data)
    return str(dst)


@pytest.mark.parametrize("section,field,value,message", [
    ("vision_config", "hidden_size", 48, "vision_config.hidden_size = 48, but the tensors show encoder_embed_dim = 32"),
    ("vision_config", "num_hidden_layers", 4, "vision_config.num_hidden_layers = 4"),
    ("vision_config", "num_attention_heads", 4, "vision_config.num_attention_heads = 4"),
    ("vision_config", "global_attn_indexes", [0], "vision_config.global_attn_indexes"),
    ("vision_config", "image_size", 128, "image_size"),
    ("mask_decoder_config", "num_attention_heads", 3, "mask_decoder_config.num_attention_heads = 3 does not divide"),
    ("mask_decoder_config", "mlp_dim", 128, "mask_decoder_config.mlp_dim = 128"),
    ("mask_decoder_config", "num_multimask_outputs", 2, "mask_decoder_config.num_multimask_outputs = 2"),
    ("mask_decoder_config", "layer_norm_eps", -1.0, "mask_decoder_config.layer_norm_eps = -1.0"),
    ("prompt_encoder_config", "mask_input_channels", 4, "prompt_encoder_config.mask_input_channels = 4"),
    ("vision_config", "qkv_bias", False, "vision_config.qkv_bias = False"),
    ("mask_decoder_config", "hidden_act", "gelu", "mask_decoder_config.hidden_act = 'gelu'"),
])
def test_config_that_disagrees_is_refused(tiny_dir, tmp_path, section, field, value, message):
    _, path = tiny_dir

    def edit(cfg):
        cfg[section][field] = value
    bad = _copy_dir(path, tmp_path / "bad", edit)
    with pytest.raises(CheckpointError, match="config.json: .*" + _escape(message)):
        build_sam(bad)


def _escape(s):
    import re
    return re.escape(s)


def test_directory_problems_are_named(tiny_dir, tmp_path):
    _, path = tiny_dir
    no_config = _copy_dir(path, tmp_path / "no_config")
    os.remove(os.path.join(no_config, "config.json"))
    with pytest.raises(CheckpointError, match="without config.json"):
        build_sam(no_config)
    no_weights = _copy_dir(path, tmp_path / "no_weights")
    os.remove(os.path.join(no_weights, "model.safetensors"))
    with pytest.raises(CheckpointError, match="no weights .*model.safetensors"):
        build_sam(no_weights)
    other = _copy_dir(path, tmp_path / "other", lambda c: c.update(model_type="sam2"))
    with pytest.raises(CheckpointError, match="model_type is 'sam2'"):
        build_sam(other)
    broken = _copy_dir(path, tmp_path / "broken")
    with open(os.path.join(broken, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(CheckpointError, match="config.json: the model config is not valid JSON"):
        build_sam(broken)


def _shard(path, dst, n=3):
    """A sharded copy of ``path``: n safetensors files and model.safetensors.index.json."""
    sd = load_state_dict(os.path.join(path, "model.safetensors"))
    os.makedirs(dst)
    keys = sorted(sd)
    weight_map = {}
    for i in range(n):
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: sd[k] for k in keys[i::n]}
        save_safetensors(os.path.join(dst, name), part)
        weight_map.update({k: name for k in part})
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(path, "config.json")) as src, open(os.path.join(dst, "config.json"), "w") as out:
        out.write(src.read())
    return str(dst), weight_map


def _write_index(directory, weight_map):
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"weight_map": weight_map}, f)


def test_sharded_directory_loads_the_same_tensors(tiny_dir, tmp_path):
    model, path = tiny_dir
    sharded = tmp_path / "sharded"
    model.save_pretrained(str(sharded), max_shard_size="40KB")            # transformers' own sharding
    assert "model.safetensors.index.json" in os.listdir(sharded)
    a, b = build_sam(path), build_sam(str(sharded))
    fa = {k: v for k, v in _flat(a.params)}
    fb = {k: v for k, v in _flat(b.params)}
    assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)
    assert a.config == b.config


def _flat(tree, prefix=""):
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for k, v in items:
        if isinstance(v, (dict, list)):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_shard_outside_the_directory_is_refused(tiny_dir, tmp_path):
    _, path = tiny_dir
    d, weight_map = _shard(path, tmp_path / "s")
    victim = next(iter(weight_map))
    outside = tmp_path / "outside.safetensors"
    os.rename(os.path.join(d, weight_map[victim]), outside)
    moved = {k: v for k, v in weight_map.items()}
    for bad_name in ("../outside.safetensors", str(outside)):
        moved.update({k: bad_name for k, v in weight_map.items() if v == weight_map[victim]})
        _write_index(d, moved)
        with pytest.raises(CheckpointError, match="not a file name inside the directory"):
            build_sam(d)
    link = "linked.safetensors"
    os.symlink(outside, os.path.join(d, link))
    moved.update({k: link for k, v in weight_map.items() if v == weight_map[victim]})
    _write_index(d, moved)
    with pytest.raises(CheckpointError, match="leads outside the directory"):
        build_sam(d)


def test_index_and_shards_must_agree(tiny_dir, tmp_path):
    _, path = tiny_dir
    d, weight_map = _shard(path, tmp_path / "s")
    first = sorted(set(weight_map.values()))[0]
    missing = dict(weight_map)
    missing.update({k: "model-00009-of-00009.safetensors" for k, v in weight_map.items() if v == first})
    _write_index(d, missing)
    with pytest.raises(CheckpointError, match="shard 'model-00009-of-00009.safetensors' is missing"):
        build_sam(d)
    dropped = {k: v for k, v in weight_map.items() if not (v == first and k == min(
        kk for kk, vv in weight_map.items() if vv == first))}
    _write_index(d, dropped)
    with pytest.raises(CheckpointError, match="places elsewhere or not at all"):
        build_sam(d)
    _write_index(d, {})
    with pytest.raises(CheckpointError, match="no 'weight_map'"):
        build_sam(d)


@pytest.mark.vit_b
def test_vit_b_directory_through_the_registry(tmp_path):
    """A vit_b SamModel, HF's default config (its eps), saved sharded as transformers does it,
    loads through ``sam_model_registry["vit_b"](checkpoint=dir)`` and matches SamModel."""
    model = hf_model(VIT_B, seed=11)
    path = str(tmp_path / "vit_b")
    model.save_pretrained(path, max_shard_size="100MB")
    assert "model.safetensors.index.json" in os.listdir(path)
    sam = sam_model_registry["vit_b"](checkpoint=path)
    assert sam.config.decoder_norm_eps == 1e-6  # HF's value, read from config.json
    inputs = _inputs(VIT_B, 1)
    _check(_hf_outputs(model, *inputs), _minisam_outputs(sam, *inputs), "hf vit_b")
