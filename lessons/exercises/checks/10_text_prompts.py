"""Checks for lesson 10's exercises: a tiny random SAM's prompt encoder and decoder, the lesson's colour space."""

import numpy as np
from _common import TINY, close, random_sam

from minisam.training.shapes import make_scene

COLOURS = {"red": (200, 40, 40), "orange": (230, 140, 30), "yellow": (220, 210, 50), "green": (50, 170, 60),
           "cyan": (50, 190, 200), "blue": (40, 70, 200), "purple": (140, 60, 180), "pink": (230, 120, 170),
           "white": (235, 235, 235), "grey": (128, 128, 128), "black": (30, 30, 30), "brown": (120, 80, 40)}


def check_text_token(m):
    S, C, G = TINY.img_size, TINY.prompt_embed_dim, TINY.image_embedding_size
    rng = np.random.default_rng(0)
    B, E = 3, 12
    embedding = (rng.uniform(0.5, 4, (B, 1)) * rng.normal(0, 1, (B, E))).astype(np.float32)
    projection = rng.normal(0, 1, (E, C)).astype(np.float32)
    unit = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
    for T in (1, 2, 3):                                                  # on made-up sparse tokens first
        sparse = rng.normal(0, 1, (B, T, C)).astype(np.float32)
        before = sparse.copy()
        mine = np.asarray(m.add_text_token(sparse, embedding, projection))
        assert np.array_equal(sparse, before), "add_text_token changed its input"
        assert mine.shape == (B, T + 1, C), f"{T} sparse tokens: shape {mine.shape}, expected {(B, T + 1, C)}"
        close(mine[:, 1:], sparse, f"tokens 1 .. {T} (the sparse tokens, after the text token)", rtol=0, atol=0)
        close(mine[:, 0], unit @ projection, "token 0, the text token (is the embedding l2-normalized first?)",
              rtol=1e-4, atol=1e-5)
    sam = random_sam(TINY)                                               # then through a (random) SAM's decoder
    coords = rng.uniform(0, S, (B, 2, 2)).astype(np.float32)
    sparse, dense = sam.prompt_encoder(points=(coords, np.array([[1, 0]] * B)))          # [B, 3, C] (with padding)
    mine = np.asarray(m.add_text_token(sparse, embedding, projection))
    close(mine, np.concatenate([(unit @ projection)[:, None], sparse], axis=1), "with the prompt encoder's tokens",
          rtol=1e-4, atol=1e-5)
    image_embedding = np.random.default_rng(1).normal(0, 1, (1, C, G, G)).astype(np.float32)
    pe = sam.get_dense_pe()
    low, scores = sam.mask_decoder(image_embedding, pe, sparse, dense, multimask_output=True)
    low_text, scores_text = sam.mask_decoder(image_embedding, pe, mine.astype(np.float32), dense,
                                             multimask_output=True)
    assert low_text.shape == low.shape and scores_text.shape == scores.shape, "the decoder's outputs changed shape"
    change = float(np.abs(low_text - low).max())
    assert change > 1e-3, "the decoder's masks did not move: is the token in the sparse tokens?"
    return f"sparse {sparse.shape} -> {mine.shape}; the random decoder's mask logits move by up to {change:.3g}"


def check_pick(m):
    n = 0
    for s in range(10):
        scene = make_scene(np.random.default_rng(70 + s), 64)
        masks = np.stack(scene.masks)
        for name, rgb in COLOURS.items():
            query = np.array(rgb, np.float64) / 255.0
            distances = [np.linalg.norm(scene.image[mk].mean(axis=0) / 255.0 - query) for mk in masks]
            expected = int(np.argmin(distances))
            mine = m.pick_by_text(query, scene.image, masks)
            assert int(mine) == expected, (f"scene {s}, text '{name}': mask {mine}, the nearest mean colour is mask "
                                           f"{expected} (distances {np.round(distances, 3).tolist()}; both in [0, 1]?)")
            n += 1
    return f"{n} queries over 10 scenes"


CHECKS = [("10.1 a text embedding as a sparse token", check_text_token),
          ("10.2 text picks a mask in a shared space", check_pick)]
