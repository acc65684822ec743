"""Exercises for lesson 03: a shared embedding, and the mask embedding probe of appendix D.6.

Fill in each function, then run ``python lessons/exercises.py 03``. NumPy only in your answers.
The cosine similarity of two vectors is a . b / (|a| |b|).
"""

import numpy as np  # noqa: F401  (for your answers)


def zero_shot_classify(image_vectors, class_vectors):
    """Exercise 03.1. CLIP's zero-shot classifier: the nearest class description.

    ``image_vectors``: [N, d], one embedding per image; ``class_vectors``: [K, d], one
    embedding per class description (in CLIP, the text encoder's output for "a photo of a
    <class>"), both from a shared embedding space and of arbitrary lengths. Returns [N] int,
    for each image the index of the class whose vector has the highest cosine similarity with
    it (the first one on a tie). No class needs a training image.
    """
    raise NotImplementedError("03.1 zero_shot_classify")


def mask_embedding(embedding, mask):
    """Exercise 03.2. The lesson's mask embedding (after appendix D.6).

    ``embedding``: [C, G, G], SAM's image embedding (one vector per cell of a G x G grid);
    ``mask``: [S, S] bool, with S a multiple of G, so that each cell is an (S/G) x (S/G) block
    of pixels. The weight of a cell is the fraction of its pixels in the mask; the mask
    embedding is the weighted mean of the cells' vectors (sum of weight x vector / sum of
    weights), scaled to unit length. Returns [C]. The mask is never empty here.
    """
    raise NotImplementedError("03.2 mask_embedding")


def leave_one_out_accuracy(vectors, labels):
    """Exercise 03.3. Nearest-centroid accuracy, each item left out of its own centroid.

    ``vectors``: [N, d]; ``labels``: [N] (strings or ints), each class with at least two
    items. For each item j: the centroid of each class is the mean of that class's vectors
    *other than j*; item j is assigned the class whose centroid has the highest cosine
    similarity with vectors[j] (on a tie, the first class in ``sorted(set(labels))``). Returns
    the fraction of items assigned their own label (a float).
    """
    raise NotImplementedError("03.3 leave_one_out_accuracy")
