"""Reference solutions for lesson 18's exercises."""

from collections import deque

import numpy as np


def _upsample_axis(v, out, axis):
    n = v.shape[axis]
    src = np.maximum((np.arange(out) + 0.5) * n / out - 0.5, 0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    l = src - i0
    shape = [1, 1]
    shape[axis] = out
    l = l.reshape(shape)
    return (1 - l) * np.take(v, i0, axis=axis) + l * np.take(v, i1, axis=axis)


def lowres_mask(mask, low_res):
    S = mask.shape[0]
    f = S // low_res
    area = mask.reshape(low_res, f, low_res, f).mean(axis=(1, 3)) - 0.5          # [low_res, low_res]
    return _upsample_axis(_upsample_axis(area, S, 1), S, 0) > 0


def stray_components(mask, truth):
    H, W = mask.shape
    seen = np.zeros((H, W), bool)
    stray = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        seen[y, x] = True
        queue, touches = deque([(y, x)]), False
        while queue:
            cy, cx = queue.popleft()
            touches |= bool(truth[cy, cx])
            for ny in range(max(cy - 1, 0), min(cy + 2, H)):
                for nx in range(max(cx - 1, 0), min(cx + 2, W)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        stray += not touches
    return stray


def zoom_window(truth):
    H, W = truth.shape
    ys, xs = np.nonzero(truth)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    side = max(24, 2 * max(x1 - x0 + 1, y1 - y0 + 1))
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    left = int(np.clip(round(cx - side / 2), 0, W - side))
    top = int(np.clip(round(cy - side / 2), 0, H - side))
    return left, top, int(side)
