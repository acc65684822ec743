"""build_sam / sam_model_registry: configuration inference and strict key checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minisam import CheckpointError, ConfigError, build_sam, sam_model_registry
from minisam.config import VIT_B, infer_config

from conftest import TINY_CONFIGS


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_build_sam_infers_tiny_configs(name, tiny_checkpoints):
    cfg, path = tiny_checkpoints[name]
    sam = build_sam(path, config={"decoder_num_heads": cfg.decoder_num_heads})
    assert sam.config == cfg
    blocks = sam.params["image_encoder"]["blocks"]
    assert sorted(blocks) == list(range(cfg.encoder_depth))
    assert blocks[0]["attn"]["qkv"]["weight"].shape == (3 * cfg.encoder_embed_dim, cfg.encoder_embed_dim)
    assert blocks[0]["attn"]["qkv"]["weight"].dtype == np.float32


def test_registry_vit_b_and_default_heads(vit_b_checkpoint):
    cfg, path = vit_b_checkpoint
    sam = sam_model_registry["vit_b"](checkpoint=path)
    assert sam.config == VIT_B
    assert build_sam(path).config.decoder_num_heads == 8
    with pytest.raises(CheckpointError, match="is not a vit_l checkpoint: encoder_embed_dim=768"):
        sam_model_registry["vit_l"](checkpoint=path)
    with pytest.raises(ConfigError, match="unknown model 'vit_x'"):
        sam_model_registry["vit_x"]


def test_registry_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MINISAM_WEIGHTS", str(tmp_path))
    with pytest.raises(CheckpointError, match="minisam weights download vit_b"):
        sam_model_registry["vit_b"]()


def test_missing_and_misshaped_keys_are_named(tiny_checkpoints, tmp_path):
    cfg, path = tiny_checkpoints["pad_window"]
    sd = torch.load(path, weights_only=True)
    one_missing = dict(sd)
    del one_missing["mask_decoder.iou_token.weight"]
    torch.save(one_missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \['mask_decoder.iou_token.weight'\]"):
        build_sam(tmp_path / "missing.pth", config={"decoder_num_heads": 2})
    wrong = dict(sd)
    wrong["image_encoder.blocks.1.mlp.lin2.bias"] = torch.zeros(5)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"image_encoder.blocks.1.mlp.lin2.bias: \(5,\) != expected \(32,\)"):
        build_sam(tmp_path / "wrong.pth", config={"decoder_num_heads": 2})
    extra = dict(sd)
    extra["image_encoder.blocks.1.extra"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\) \['image_encoder.blocks.1.extra'\]"):
        build_sam({k: v.numpy() for k, v in extra.items()}, config={"decoder_num_heads": 2})
    nan = {k: v.numpy().copy() for k, v in sd.items()}
    nan["image_encoder.pos_embed"][0, 0, 0, 0] = np.nan
    with pytest.raises(CheckpointError, match="image_encoder.pos_embed contains NaN"):
        build_sam(nan, config={"decoder_num_heads": 2})
    with pytest.raises(ConfigError, match="decoder_num_heads=3"):
        build_sam(path, config={"decoder_num_heads": 3})
    with pytest.raises(ConfigError, match="unknown config field"):
        build_sam(path, config={"decoder_heads": 3})


def test_infer_config_reports_missing_key():
    with pytest.raises(ConfigError, match="patch_embed"):
        infer_config({})
