"""Checks for lesson 02's exercises: the lesson's tiny U-Net, a receptive field traced backwards, least squares."""

import numpy as np

from minisam.training.shapes import make_scene

UNET = [("conv", 3), ("pool", 2), ("conv", 3), ("pool", 2), ("conv", 3), ("pool", 2), ("conv", 3)]


def traced_field(layers, n=160):
    """The input pixels one output pixel depends on, found by tracing its dependence backwards
    through the layers (a conv widens it by k // 2 on each side, a pool turns each pixel into a
    k x k block). -> (side, stride), with the stride from two neighbouring output pixels."""
    pools = int(np.prod([k for kind, k in layers if kind == "pool"]))
    side = n // pools                                   # the last map's side

    def support(r, c):
        m = np.zeros((side, side), bool)
        m[r, c] = True
        for kind, k in reversed(layers):
            if kind == "pool":
                m = m.repeat(k, axis=0).repeat(k, axis=1)
            else:
                h = k // 2
                p = np.pad(m, h)
                m = np.zeros_like(m)
                for dy in range(k):
                    for dx in range(k):
                        m |= p[dy:dy + m.shape[0], dx:dx + m.shape[1]]
        return m

    a, b = support(side // 2, side // 2), support(side // 2, side // 2 + 1)
    cols_a, cols_b = np.flatnonzero(a.any(0)), np.flatnonzero(b.any(0))
    rows_a = np.flatnonzero(a.any(1))
    assert cols_a[0] > 0 and cols_a[-1] < n - 1 and len(rows_a) == len(cols_a)   # away from the border
    return len(cols_a), int(cols_b[0] - cols_a[0])


def check_receptive_field(m):
    cases = [UNET, [("conv", 3)], [("conv", 5), ("conv", 5)], [("pool", 2)], [("pool", 4), ("conv", 3)],
             [("conv", 3), ("pool", 2)] * 4 + [("conv", 3)], [("conv", 7), ("pool", 2), ("conv", 1), ("pool", 3)]]
    for layers in cases:
        mine = tuple(int(v) for v in m.receptive_field(layers))
        expected = traced_field(layers)
        assert mine == expected, f"{layers}: (side, stride) {mine}, expected {expected}"
    side, stride = traced_field(UNET)
    return f"a bottleneck pixel of the lesson's U-Net sees {side} x {side} input pixels, {stride} apart"


def reference_features(levels):
    S = levels[0].shape[-1]
    up = [x.repeat(S // x.shape[-1], axis=1).repeat(S // x.shape[-1], axis=2) for x in levels]
    b = levels[-1]
    c = b - b.mean(axis=(1, 2), keepdims=True)
    c = c.repeat(S // b.shape[-1], axis=1).repeat(S // b.shape[-1], axis=2)
    feats = np.concatenate([up[-1], c, np.ones((1, S, S))] + up[-2::-1], axis=0)
    return feats.reshape(len(feats), -1).T


def check_decoder(m):
    rng = np.random.default_rng(0)
    for widths, S in [((8, 16, 32, 32), 32), ((3, 5), 8), ((2, 4, 6), 24)]:
        levels = [rng.random((w, S >> i, S >> i)).astype(np.float32) for i, w in enumerate(widths)]
        before = [l.copy() for l in levels]
        mine = np.asarray(m.decoder_features(levels))
        assert all(np.array_equal(a, b) for a, b in zip(levels, before)), "decoder_features changed its input"
        expected = reference_features(levels)
        F = 2 * widths[-1] + 1 + sum(widths[:-1])
        assert mine.shape == (S * S, F), f"widths {widths}, S {S}: shape {mine.shape}, expected {(S * S, F)}"
        for j in range(F):
            if not np.allclose(mine[:, j], expected[:, j], atol=1e-6):
                bad = int(np.flatnonzero(~np.isclose(mine[:, j], expected[:, j], atol=1e-6))[0])
                raise AssertionError(f"widths {widths}, S {S}: channel {j} differs first at pixel (x={bad % S}, "
                                     f"y={bad // S}): {mine[bad, j]!r} instead of {expected[bad, j]!r} "
                                     f"(is each pixel repeated into a block, and are the channels in order?)")
    return f"F = {2 * 32 + 1 + 8 + 16 + 32} read-out inputs for the lesson's widths"


def check_readout(m):
    rng = np.random.default_rng(1)
    S = 32
    batches = []
    scenes = [make_scene(np.random.default_rng(100 + k), S, min_area=20) for k in range(8)]
    for scene in [s for s in scenes if s.objects][:4]:   # features of real scenes: colour, noise, a bias
        fg = np.any([scene.masks[i] for i in scene.objects], axis=0).ravel()   # the union of the objects
        assert fg.shape == (S * S,) and 0 < fg.sum() < S * S
        X = np.concatenate([scene.image.reshape(-1, 3) / 255.0, rng.normal(0, 1, (S * S, 4)), np.ones((S * S, 1)),
                            scene.image.reshape(-1, 3)[:, :1] / 255.0], axis=1)    # a repeated column: X^T X singular
        batches.append((X, fg))
    X = np.concatenate([b[0] for b in batches])
    y = np.where(np.concatenate([b[1] for b in batches]), 1.0, -1.0)
    for ridge in (1.0, 0.01):
        w = np.asarray(m.fit_readout(iter(batches), ridge), np.float64)
        assert w.shape == (X.shape[1],), f"w has shape {w.shape}, expected ({X.shape[1]},)"
        gradient = X.T @ (X @ w - y) + ridge * w          # zero at the minimum
        assert np.abs(gradient).max() < 1e-6 * len(y), \
            f"ridge {ridge}: w is not the minimum (largest |gradient| {np.abs(gradient).max():.3g}; labels are +1/-1?)"
        A = np.concatenate([X, np.sqrt(ridge) * np.eye(X.shape[1])])
        expected = np.linalg.lstsq(A, np.concatenate([y, np.zeros(X.shape[1])]), rcond=None)[0]
        assert np.allclose(w, expected, rtol=1e-6, atol=1e-8), f"ridge {ridge}: w {w}, expected {expected}"
    accuracy = float(((X @ w > 0) == (y > 0)).mean())
    return f"pixel accuracy of the fitted read-out on its training pixels: {accuracy:.0%}"


CHECKS = [("02.1 the receptive field of a bottleneck pixel", check_receptive_field),
          ("02.2 upsampling and skip connections", check_decoder),
          ("02.3 the least-squares read-out", check_readout)]
