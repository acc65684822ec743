"""Checks for lesson 01's exercises: minisam's connected components, a scene's masks, a real model's shapes."""

import numpy as np
from _common import TINY, random_sam

from minisam.config import MICRO
from minisam.training.shapes import make_scene
from minisam.utils.amg import connected_components


def reference_instances(semantic):
    found = []
    for k in sorted(set(np.unique(semantic)) - {0}):
        n, labels, _ = connected_components(semantic == k)           # 8-connected, like cv2
        for label in range(1, n):
            mask = labels == label
            first = np.flatnonzero(mask)[0]
            found.append((int(k), first, mask))
    found.sort(key=lambda item: (item[0], item[1]))
    return [(k, m) for k, _, m in found]


def check_instances(m):
    rng = np.random.default_rng(0)
    semantic = np.zeros((12, 14), int)
    semantic[1:4, 1:4] = 1
    semantic[4:6, 4:6] = 1          # touches the first square by a corner: the same object
    semantic[8:11, 2:5] = 1         # a second object of class 1
    semantic[2:9, 9:12] = 2
    semantic[10, 12] = 2            # a one-pixel object of class 2
    maps = [semantic] + [(rng.random((20, 20)) < 0.35) * rng.integers(1, 4, (20, 20)) for _ in range(3)]
    for i, sem in enumerate(maps):
        mine = m.instances_from_semantic(sem)
        expected = reference_instances(sem)
        assert isinstance(mine, list), "return a list of (class_id, mask)"
        assert len(mine) == len(expected), f"map {i}: {len(mine)} objects, expected {len(expected)} " \
                                           f"(are corner neighbours joined?)"
        for j, ((k, mask), (k_ref, mask_ref)) in enumerate(zip(mine, expected)):
            assert int(k) == k_ref and np.array_equal(np.asarray(mask, bool), mask_ref), \
                f"map {i}: object {j} differs (class {k}, expected class {k_ref}, or its pixels)"
    return f"{sum(len(reference_instances(s)) for s in maps)} objects in {len(maps)} maps"


def check_masks_containing(m):
    rng = np.random.default_rng(1)
    ambiguous = 0
    for s in range(4):
        scene = make_scene(np.random.default_rng(s), 96)
        for _ in range(25):
            x, y = (int(v) for v in rng.integers(0, 96, 2))
            expected = [i for i, mask in enumerate(scene.masks) if mask[y, x]]
            mine = m.masks_containing((x, y), scene.masks)
            assert list(mine) == expected, f"click (x={x}, y={y}): {list(mine)}, expected {expected} " \
                                           f"(a mask is indexed [row, column] = [y, x])"
            ambiguous += len(expected) > 1
    assert ambiguous > 0, "no ambiguous click was drawn"
    return f"{ambiguous} of 100 clicks have more than one valid mask"


def check_shapes(m):
    for cfg in (TINY, MICRO):
        for n, box in [(1, False), (3, False), (2, True), (0, True)]:
            mine = m.stage_shapes(cfg.img_size, cfg.patch_size, cfg.prompt_embed_dim, n, box)
            expected = expected_shapes(cfg, n, box)
            for key, shape in expected.items():
                assert key in mine, f"missing key {key!r}"
                assert tuple(mine[key]) == shape, f"{key} with {n} points{' and a box' if box else ''} at " \
                                                  f"S={cfg.img_size}: {tuple(mine[key])}, the model gives {shape}"


def expected_shapes(cfg, n, box, _cache={}):
    """The shapes a real (random-weight) model produces."""
    key = (cfg, n, box)
    if key not in _cache:
        if cfg is TINY:
            sam = random_sam(cfg)
            S = cfg.img_size
            x = np.zeros((1, 3, S, S), np.float32)
            emb = sam.image_encoder(x)
            points = (np.full((1, n, 2), S / 2, np.float32), np.ones((1, n), np.int64)) if n else None
            boxes = np.array([[1, 2, S - 3, S - 4]], np.float32) if box else None
            sparse, dense = sam.prompt_encoder(points=points, boxes=boxes)
            masks, iou = sam.mask_decoder(emb, sam.get_dense_pe(), sparse, dense, multimask_output=True)
            _cache[key] = {"input": x.shape, "image_embedding": emb.shape, "sparse": sparse.shape,
                           "dense": dense.shape, "low_res_masks": masks.shape, "iou_predictions": iou.shape}
        else:   # the same rules, at another size (checked on the tiny model above)
            tiny = expected_shapes(TINY, n, box)
            G, C, S = cfg.image_embedding_size, cfg.prompt_embed_dim, cfg.img_size
            _cache[key] = {"input": (1, 3, S, S), "image_embedding": (1, C, G, G),
                           "sparse": (1, tiny["sparse"][1], C), "dense": (1, C, G, G),
                           "low_res_masks": (1, 3, 4 * G, 4 * G), "iou_predictions": (1, 3)}
    return _cache[key]


CHECKS = [("01.1 instances from a semantic map", check_instances),
          ("01.2 every valid mask for a click", check_masks_containing),
          ("01.3 the shape of every stage", check_shapes)]
