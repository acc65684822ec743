"""Shared fixtures: the official models at tiny and vit_b size, randomized and saved.

``--torch-device auto|cpu|cuda`` picks where the official code runs (auto = CUDA when
present, TF32 off). The first line of the run says which device and torch version.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # headless figures in every test

import numpy as np
import pytest

from minisam.config import SamConfig, VIT_B, make_config

# Small configurations that exercise the traps (docs/numerics.md section 4): windows that need padding,
# one head, odd head dims, global blocks first and last, window == grid.
TINY_CONFIGS = {
    # grid 8, window 3 -> pad to 9; global block in the middle; 2 heads of 16
    "pad_window": make_config(encoder_embed_dim=32, encoder_depth=3, encoder_num_heads=2,
                              encoder_global_attn_indexes=(1,), img_size=64, patch_size=8,
                              window_size=3, prompt_embed_dim=32, mask_in_chans=8,
                              decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32),
    # one head, global block first, window 4 divides grid 8 (no pad)
    "one_head_global_first": make_config(encoder_embed_dim=24, encoder_depth=2, encoder_num_heads=1,
                                         encoder_global_attn_indexes=(0,), img_size=128, patch_size=16,
                                         window_size=4, prompt_embed_dim=16, mask_in_chans=4,
                                         decoder_mlp_dim=32, decoder_num_heads=1, iou_head_hidden_dim=24,
                                         iou_head_depth=2),
    # odd head dim (3 heads of 5), global block last, window 5 on grid 7 -> pad to 10
    "odd_heads_global_last": make_config(encoder_embed_dim=15, encoder_depth=3, encoder_num_heads=3,
                                         encoder_global_attn_indexes=(2,), img_size=56, patch_size=8,
                                         window_size=5, prompt_embed_dim=32, mask_in_chans=8,
                                         decoder_depth=1, decoder_mlp_dim=48, decoder_num_heads=4,
                                         iou_head_hidden_dim=16),
}


def pytest_addoption(parser):
    parser.addoption("--torch-device", default=os.environ.get("MINISAM_TORCH_DEVICE", "auto"),
                     choices=["auto", "cpu", "cuda"],
                     help="where the official PyTorch code runs (auto = CUDA when present)")


def pytest_configure(config):
    os.environ["MINISAM_TORCH_DEVICE"] = config.getoption("--torch-device")


def pytest_report_header(config):
    try:
        import torch
        from official import torch_device
        dev = torch_device()
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
        return f"minisam parity: official side on {dev} ({name}), torch {torch.__version__}, TF32 off"
    except Exception as exc:  # torch missing: the torch-free tests still run
        return f"minisam parity: torch unavailable ({exc})"


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")


_CACHE = {}


def official_model(cfg: SamConfig, seed: int = 0):
    """The randomized official Sam at ``cfg`` on the test device (cached per session)."""
    from official import build_official, randomize, torch_device
    key = (cfg, seed)
    if key not in _CACHE:
        _CACHE[key] = randomize(build_official(cfg), seed).to(torch_device())
    return _CACHE[key]


def saved_checkpoint(cfg: SamConfig, directory, seed: int = 0, name: str = None):
    """``torch.save(sam.state_dict(), path)`` of the randomized official model, once per session."""
    import torch
    path = os.path.join(str(directory), name or f"sam_{abs(hash((cfg, seed))) % 10**10}_{seed}.pth")
    if not os.path.exists(path):
        model = official_model(cfg, seed)
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoints(checkpoint_dir):
    """{name: (cfg, path)} for every tiny configuration."""
    return {n: (c, saved_checkpoint(c, checkpoint_dir, seed=i, name=f"tiny_{n}.pth"))
            for i, (n, c) in enumerate(TINY_CONFIGS.items())}


@pytest.fixture(scope="session")
def vit_b_checkpoint(checkpoint_dir):
    """(cfg, path) of a randomized vit_b checkpoint written by the official package."""
    return VIT_B, saved_checkpoint(VIT_B, checkpoint_dir, seed=1234, name="sam_vit_b_random.pth")
