"""Exercises for lesson 10: text prompts: where the embedding enters, and why alignment is the trick.

Fill in each function, then run ``python lessons/exercises.py 10``. NumPy only in your answers.
"""

import numpy as np  # noqa: F401  (for your answers)


def add_text_token(sparse, text_embedding, projection):
    """Exercise 10.1. A text embedding as one more sparse prompt token.

    ``sparse``: [B, T, C] float32, the prompt encoder's sparse tokens for B prompts (points,
    boxes); ``text_embedding``: [B, E], one CLIP-like embedding per prompt; ``projection``:
    [E, C], the map to the decoder's width. As the paper does with CLIP's output, each
    embedding is first scaled to unit length (l2-normalized); its token is then
    ``normalized @ projection``. Returns [B, T + 1, C] float32: each prompt's text token first,
    then its T sparse tokens unchanged (the lesson's order; the decoder is not told which is
    which: the token's values are all it has).
    """
    raise NotImplementedError("10.1 add_text_token")


def pick_by_text(query, image, masks):
    """Exercise 10.2. Text picks one of SAM's masks through a shared embedding space.

    The lesson's stand-in encoders: a text's embedding is a colour in [0, 1]^3 (``query``,
    [3]); a mask's image embedding is the mean colour of its pixels in ``image`` ([H, W, 3]
    uint8), divided by 255 to land in the same space. ``masks``: [K, H, W] bool, SAM's
    proposals, none empty. Returns the index (int) of the mask whose embedding is nearest to
    the query in Euclidean distance (the first on a tie).
    """
    raise NotImplementedError("10.2 pick_by_text")
