"""What the checkers share: a tiny model with random weights, and comparisons that say what differs."""

import numpy as np

from minisam.build_sam import build_sam
from minisam.config import expected_shapes, make_config

# A small SAM in every dimension (input 64, grid 8, width 32, decoder width 32, 4 heads), so
# that a check runs in well under a second.
TINY = make_config(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
                   img_size=64, patch_size=8, window_size=3, prompt_embed_dim=32, mask_in_chans=8,
                   decoder_mlp_dim=64, decoder_num_heads=4, iou_head_hidden_dim=32)


def random_sam(cfg=TINY, seed: int = 0):
    """A minisam Sam at ``cfg`` whose every weight is random (norm weights near 1)."""
    rng = np.random.default_rng(seed)
    sd = {}
    for name, shape in expected_shapes(cfg).items():
        if name.endswith("positional_encoding_gaussian_matrix"):
            sd[name] = rng.normal(0, 1, shape).astype(np.float32)
        elif "norm" in name.split(".")[-2] and name.endswith("weight"):
            sd[name] = (1 + 0.1 * rng.normal(0, 1, shape)).astype(np.float32)
        else:
            sd[name] = (0.3 * rng.normal(0, 1, shape) / np.sqrt(max(shape[-1], 1))).astype(np.float32)
    return build_sam(sd, cfg)


def close(mine, reference, name: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Assert ``mine`` matches ``reference`` in shape and values, with a message naming the worst element."""
    mine = np.asarray(mine)
    reference = np.asarray(reference)
    assert mine.shape == reference.shape, f"{name}: shape {mine.shape}, expected {reference.shape}"
    diff = np.abs(mine.astype(np.float64) - reference.astype(np.float64))
    bound = atol + rtol * np.abs(reference.astype(np.float64))
    if not np.all(diff <= bound):
        where = np.unravel_index(np.argmax(diff - bound), diff.shape)
        raise AssertionError(f"{name}: differs at index {tuple(int(i) for i in where)}: {mine[where]!r} instead of "
                             f"{reference[where]!r} (max |difference| {diff.max():.3g})")
