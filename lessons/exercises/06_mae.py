"""Exercises for lesson 06: MAE pre-training: random masking, the decoder's input, the loss.

Fill in each function, then run ``python lessons/exercises.py 06``. NumPy only in your answers;
``rng`` is a ``numpy.random.Generator``: draw every random number from it. Tokens (patches)
are numbered 0 .. N-1 in raster order.
"""

import numpy as np  # noqa: F401  (for your answers)


def random_masking(num_tokens, ratio, rng):
    """Exercise 06.1. MAE's per-image random masking (``random_masking`` in MAE's models_mae.py).

    Keep ``len_keep = int(num_tokens * (1 - ratio))`` tokens chosen uniformly at random (every
    subset of that size equally likely) and mask the others. Returns ``(ids_keep, masked,
    ids_restore)``: ids_keep [len_keep] int, the kept tokens in the order the encoder gets
    them; masked [N] bool, True for a masked token; ids_restore [N] int, the permutation that
    undoes the shuffle: with ids_shuffle = ids_keep followed by the masked tokens (in any
    order), ids_shuffle[ids_restore] = 0, 1, ..., N-1, i.e. ids_restore = argsort(ids_shuffle).
    (MAE sorts random noise: ids_shuffle = argsort(noise), ids_keep = ids_shuffle[:len_keep].)
    """
    raise NotImplementedError("06.1 random_masking")


def decoder_input(encoded, mask_token, ids_restore):
    """Exercise 06.2. The decoder's input: mask tokens put back, everything unshuffled.

    ``encoded``: [len_keep, D], the encoder's outputs for the kept tokens, in the order of
    ids_keep; ``mask_token``: [D], the one learned mask token; ``ids_restore``: [N] from 06.1.
    Returns [N, D]: at every kept token's position its encoded vector, at every masked
    position the mask token (MAE appends N - len_keep mask tokens to the encoded ones, then
    gathers the rows with ids_restore).
    """
    raise NotImplementedError("06.2 decoder_input")


def mae_loss_and_grad(pred, target, masked):
    """Exercise 06.3. The loss on the masked patches only, and its gradient.

    ``pred``, ``target``: [B, N, P] (P pixel values per patch); ``masked``: [B, N] bool. The
    loss is the mean over the masked patches of all B images of each patch's mean squared
    error, (1 / |M|) sum over masked (b, i) of (1 / P) ||pred[b, i] - target[b, i]||^2, with
    |M| the number of masked patches. Returns ``(loss float, dpred [B, N, P])``, dpred =
    d loss / d pred (zero on the visible patches: they teach the model nothing).
    """
    raise NotImplementedError("06.3 mae_loss_and_grad")
