"""Reference solutions for lesson 01's exercises."""

from collections import deque

import numpy as np


def instances_from_semantic(semantic):
    H, W = semantic.shape
    seen = np.zeros((H, W), bool)
    found = []
    for y in range(H):
        for x in range(W):
            k = semantic[y, x]
            if k == 0 or seen[y, x]:
                continue
            mask = np.zeros((H, W), bool)
            queue = deque([(y, x)])
            seen[y, x] = True
            while queue:
                cy, cx = queue.popleft()
                mask[cy, cx] = True
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < H and 0 <= nx < W and not seen[ny, nx] and semantic[ny, nx] == k:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            found.append((int(k), (y, x), mask))
    found.sort(key=lambda item: (item[0], item[1]))
    return [(k, mask) for k, _, mask in found]


def masks_containing(point, masks):
    x, y = int(point[0]), int(point[1])
    return [i for i, m in enumerate(masks) if m[y, x]]


def stage_shapes(img_size, patch_size, embed_dim, num_points, with_box):
    S, C = img_size, embed_dim
    G = S // patch_size
    tokens = num_points + (2 if with_box else 1)
    return {"input": (1, 3, S, S), "image_embedding": (1, C, G, G), "sparse": (1, tokens, C),
            "dense": (1, C, G, G), "low_res_masks": (1, 3, 4 * G, 4 * G), "iou_predictions": (1, 3)}
