"""Reference solutions for lesson 06's exercises."""

import numpy as np


def random_masking(num_tokens, ratio, rng):
    len_keep = int(num_tokens * (1 - ratio))
    noise = rng.random(num_tokens)                       # [N] in [0, 1)
    ids_shuffle = np.argsort(noise)                      # ascending: the smallest noise is kept
    ids_restore = np.argsort(ids_shuffle)
    masked = np.ones(num_tokens, bool)
    masked[ids_shuffle[:len_keep]] = False
    return ids_shuffle[:len_keep], masked, ids_restore


def decoder_input(encoded, mask_token, ids_restore):
    n_masked = len(ids_restore) - len(encoded)
    shuffled = np.concatenate([encoded, np.broadcast_to(mask_token, (n_masked, len(mask_token)))])   # [N, D]
    return shuffled[ids_restore]


def mae_loss_and_grad(pred, target, masked):
    P = pred.shape[-1]
    per_patch = ((pred - target) ** 2).mean(axis=-1)     # [B, N]
    n = masked.sum()
    loss = float((per_patch * masked).sum() / n)
    dpred = 2 * (pred - target) * masked[..., None] / (n * P)
    return loss, dpred
