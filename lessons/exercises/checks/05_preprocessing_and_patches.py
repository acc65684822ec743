"""Checks for lesson 05's exercises: against minisam/utils/transforms.py and the patch embedding."""

import numpy as np
from _common import TINY, close, random_sam

from minisam.config import MICRO
from minisam.modeling.image_encoder import patch_embed
from minisam.utils.transforms import ResizeLongestSide, preprocess


def check_shape(m):
    rng = np.random.default_rng(0)
    sizes = [(480, 640), (640, 480), (1, 1000), (333, 500), (1024, 1024), (7, 3)] + \
            [tuple(int(v) for v in rng.integers(1, 3000, 2)) for _ in range(200)]
    for S in (1024, 128, 64):
        for h, w in sizes:
            mine = tuple(int(v) for v in m.preprocess_shape(h, w, S))
            expected = ResizeLongestSide.get_preprocess_shape(h, w, S)
            assert mine == expected, f"{h} x {w} -> {S}: {mine}, expected {expected}"
    return f"{3 * len(sizes)} sizes"


def check_normalize(m):
    rng = np.random.default_rng(1)
    for S, (h, w) in [(64, (64, 40)), (64, (17, 64)), (128, (128, 128))]:
        image = rng.integers(0, 256, (3, h, w)).astype(np.uint8)
        cfg = TINY if S == 64 else MICRO
        mine = m.normalize_and_pad(image, S)
        assert np.asarray(mine).dtype == np.float32, f"dtype {np.asarray(mine).dtype}, expected float32"
        close(mine, preprocess(image[None], cfg)[0], f"a {h} x {w} image padded to {S}", rtol=0, atol=1e-6)


def check_patchify(m):
    sam = random_sam(TINY)
    enc = sam.params["image_encoder"]["patch_embed"]
    P, S = TINY.patch_size, TINY.img_size
    x = np.random.default_rng(2).normal(size=(3, S, S)).astype(np.float32)
    patches = m.patchify(x, P)
    G = S // P
    assert np.shape(patches) == (G * G, 3 * P * P), f"shape {np.shape(patches)}, expected {(G * G, 3 * P * P)}"
    weight, bias = enc["proj"]["weight"], enc["proj"]["bias"]      # [D, 3, P, P], [D]
    tokens = np.asarray(patches) @ weight.reshape(weight.shape[0], -1).T + bias
    close(tokens, patch_embed(enc, x[None], P)[0].reshape(G * G, -1), "patches @ W.T + b vs the conv",
          rtol=1e-4, atol=1e-5)


CHECKS = [("05.1 the resized shape", check_shape),
          ("05.2 normalize, then pad", check_normalize),
          ("05.3 a stride-P conv is patchify + one matmul", check_patchify)]
