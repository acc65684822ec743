"""Checks for lesson 09's exercises: against minisam/modeling/prompt_encoder.py."""

import numpy as np
from _common import TINY, close, random_sam

from minisam.modeling.prompt_encoder import embed_boxes, pe_encoding

GAUSS = np.random.default_rng(5).normal(size=(2, 64)).astype(np.float32)   # C = 128, as micro-sized models


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_fourier(m):
    coords = np.random.default_rng(0).random((3, 7, 2)).astype(np.float32)
    close(m.fourier_pe(coords, GAUSS), pe_encoding(GAUSS, coords), "Fourier PE of 21 points", rtol=1e-4, atol=1e-4)


def check_raw_then_pair(m):
    rng = np.random.default_rng(1)
    coords = rng.random((5, 2)).astype(np.float32)
    raw = np.asarray(m.raw_xy_pe(coords, 128))
    expected = np.tile(2 * coords - 1, 64)
    close(raw, expected, "raw (x, y) encoding [x, y, x, y, ...]")
    S = 128
    (x0, y0), (x1, y1) = m.confusable_pair(S, GAUSS)
    for x, y in ((x0, y0), (x1, y1)):
        assert 0 <= x < S and 0 <= y < S, f"({x}, {y}) is not a pixel of a {S} x {S} image"
    distance = float(np.hypot(x1 - x0, y1 - y0))
    assert distance >= S / 4, f"the pixels are {distance:.1f} apart, need at least {S / 4}"
    centres = (np.array([[x0, y0], [x1, y1]], np.float32) + 0.5) / S
    raw_sim = cosine(*m.raw_xy_pe(centres, 128))
    fourier_sim = cosine(*pe_encoding(GAUSS, centres))
    assert raw_sim > 0.99, f"raw encodings' cosine similarity {raw_sim:.3f}, need > 0.99"
    assert fourier_sim < 0.5, f"Fourier encodings' cosine similarity {fourier_sim:.3f}, need < 0.5"
    return f"{distance:.0f} px apart: raw similarity {raw_sim:.3f}, Fourier {fourier_sim:.3f}"


def check_box(m):
    sam = random_sam(TINY)
    p = sam.params["prompt_encoder"]
    gauss = p["pe_layer"]["positional_encoding_gaussian_matrix"]
    corners = np.stack([p["point_embeddings"][2]["weight"][0], p["point_embeddings"][3]["weight"][0]])
    for box in ([3, 5, 40, 61], [0, 0, 63, 63], [10.5, 2.25, 11, 30]):
        box = np.asarray(box, np.float32)
        close(m.box_tokens(box, gauss, corners, TINY.img_size), embed_boxes(p, TINY, box[None])[0],
              f"the tokens of box {box.tolist()}", rtol=1e-4, atol=1e-4)


CHECKS = [("09.1 the random-Fourier PE", check_fourier),
          ("09.2 raw (x, y) instead: two far pixels that look alike", check_raw_then_pair),
          ("09.3 a box's two tokens", check_box)]
