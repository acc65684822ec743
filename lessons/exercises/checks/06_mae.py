"""Checks for lesson 06's exercises: MAE's masking rules, its unshuffle, and finite differences."""

import numpy as np
from _common import close


def check_masking(m):
    for n, ratio in [(64, 0.75), (196, 0.75), (16, 0.5), (10, 0.75)]:
        len_keep = int(n * (1 - ratio))
        answer = m.random_masking(n, ratio, np.random.default_rng(3))
        ids_keep, masked, ids_restore = (np.asarray(v) for v in answer)
        assert ids_keep.shape == (len_keep,), \
            f"{n} tokens, ratio {ratio}: {ids_keep.shape[0]} kept, expected {len_keep}"
        assert masked.shape == (n,) and masked.dtype == bool, f"masked: shape {masked.shape} dtype {masked.dtype}"
        assert masked.sum() == n - len_keep, (f"{n} tokens, ratio {ratio}: {masked.sum()} masked, expected exactly "
                                              f"{n - len_keep} (a fixed count, not a coin per token)")
        assert not masked[ids_keep].any() and len(set(ids_keep.tolist())) == len_keep, \
            "ids_keep must be distinct tokens, none of them masked"
        assert sorted(ids_restore.tolist()) == list(range(n)), "ids_restore is not a permutation of 0 .. N-1"
        ids_shuffle = np.argsort(ids_restore)
        assert np.array_equal(ids_shuffle[:len_keep], ids_keep), \
            "ids_restore does not undo the shuffle: argsort(ids_restore) must start with ids_keep"
        assert np.array_equal(masked, ids_restore >= len_keep), "a token is masked exactly when ids_restore >= len_keep"
        again = np.asarray(m.random_masking(n, ratio, np.random.default_rng(3))[1])
        assert np.array_equal(again, masked), "the same rng state must give the same mask (draw from rng only)"
    rng = np.random.default_rng(4)                              # uniform: each token masked 75% of the time
    draws = np.stack([np.asarray(m.random_masking(16, 0.75, rng)[1]) for _ in range(2000)])
    frequency = draws.mean(axis=0)
    assert np.abs(frequency - 0.75).max() < 0.05, \
        f"token masking frequencies {np.round(frequency, 2).tolist()}: every token should be masked 75% of the time"
    assert len({d.tobytes() for d in draws}) > 1000, "the masks of successive images should differ"
    pairs = (draws[:, 0] & draws[:, 1]).mean()                  # both masked: 12/16 * 11/15 = 0.55
    assert abs(pairs - 0.55) < 0.05, f"tokens 0 and 1 are both masked {pairs:.2f} of the time, expected 0.55"
    return f"{int(196 * 0.25)} of ViT's 196 tokens (224 px, 16 px patches) reach the encoder"


def reference_masking(n, ratio, rng):
    len_keep = int(n * (1 - ratio))
    ids_shuffle = np.argsort(rng.random(n))
    return ids_shuffle[:len_keep], np.argsort(ids_shuffle)


def check_decoder_input(m):
    rng = np.random.default_rng(5)
    for n, D in [(64, 8), (16, 3), (196, 4)]:
        tokens = rng.normal(0, 1, (n, D))
        mask_token = rng.normal(0, 1, D)
        ids_keep, ids_restore = reference_masking(n, 0.75, rng)
        mine = np.asarray(m.decoder_input(tokens[ids_keep], mask_token, ids_restore))
        masked = np.ones(n, bool)
        masked[ids_keep] = False
        expected = np.where(masked[:, None], mask_token, tokens)
        assert mine.shape == (n, D), f"shape {mine.shape}, expected {(n, D)}"
        wrong = np.flatnonzero(~np.isclose(mine, expected).all(axis=1))
        assert not len(wrong), (f"{n} tokens: row {wrong[0]} ({'masked' if masked[wrong[0]] else 'kept'}) is wrong, "
                                f"{len(wrong)} rows differ (gather with ids_restore, not with the shuffle)")


def check_loss(m):
    rng = np.random.default_rng(6)
    B, N, P = 2, 16, 12
    pred, target = rng.normal(0, 1, (B, N, P)), rng.normal(0, 1, (B, N, P))
    masked = np.zeros((B, N), bool)
    for b in range(B):
        masked[b, rng.permutation(N)[:12]] = True
    masked[1, :3] = True                                       # the two images need not mask the same number
    loss, dpred = m.mae_loss_and_grad(pred, target, masked)
    expected = ((pred - target) ** 2).mean(-1)[masked].mean()
    assert np.isclose(float(loss), expected, rtol=1e-10), (f"loss {float(loss):.6f}, expected {expected:.6f} (the "
                                                           f"mean over the masked patches only; on all: "
                                                           f"{((pred - target) ** 2).mean():.6f})")
    dpred = np.asarray(dpred)
    assert dpred.shape == pred.shape, f"dpred has shape {dpred.shape}, expected {pred.shape}"
    assert not dpred[~masked].any(), "the gradient must be zero on the visible patches"
    h, fd = 1e-6, np.zeros_like(pred)
    for idx in np.ndindex(pred.shape):
        up, down = pred.copy(), pred.copy()
        up[idx] += h
        down[idx] -= h
        fd[idx] = (m.mae_loss_and_grad(up, target, masked)[0] - m.mae_loss_and_grad(down, target, masked)[0]) / (2 * h)
    close(dpred, fd, "dpred vs finite differences", rtol=1e-5, atol=1e-8)
    return f"{masked.sum()} of {B * N} patches carry the loss"


CHECKS = [("06.1 random masking, MAE style", check_masking),
          ("06.2 mask tokens back, unshuffled", check_decoder_input),
          ("06.3 the loss on masked patches and its gradient", check_loss)]
