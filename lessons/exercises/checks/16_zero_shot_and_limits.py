"""Checks for lesson 16's exercises: the lesson's detector (minisam's connected components) and IoUs."""

import numpy as np

from minisam.modeling.common import mask_iou, mask_to_box
from minisam.training.shapes import make_scene
from minisam.utils.amg import connected_components


def reference_boxes(image, threshold=60.0, min_area=60):
    img = image.astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    foreground = np.linalg.norm(img - np.median(border, axis=0), axis=-1) > threshold
    n, labels, areas = connected_components(foreground)
    keep = [k for k in range(1, n) if areas[k] >= min_area]
    return mask_to_box(np.stack([labels == k for k in keep])) if keep else np.zeros((0, 4), int)


def check_detector(m):
    total = 0
    for seed in range(3):
        image = make_scene(np.random.default_rng(seed), 96).image
        mine = np.asarray(m.detector_boxes(image)).reshape(-1, 4)
        expected = reference_boxes(image)
        assert mine.shape == expected.shape, f"scene {seed}: {len(mine)} boxes, expected {len(expected)}"
        assert np.array_equal(mine, expected), f"scene {seed}: boxes {mine.tolist()}, expected {expected.tolist()}"
        total += len(expected)
    return f"{total} boxes in 3 scenes"


def check_recall(m):
    rng = np.random.default_rng(1)
    for seed in range(6):
        scene = make_scene(np.random.default_rng(seed), 96)
        truth = np.stack(scene.instance_masks) if scene.objects else np.zeros((1, 96, 96), bool)
        noisy = [t ^ (rng.random(t.shape) < 0.04) for t in truth[: max(1, len(truth) - 1)]]   # one object missed
        predicted = np.stack(noisy + [rng.random((96, 96)) < 0.1])
        ious = mask_iou(truth[:, None], predicted[None]).max(1)              # [n] best IoU per object
        expected = (float((ious >= 0.75).mean()), float(ious.mean()))
        mine = tuple(float(v) for v in m.recall_and_mean_iou(truth, predicted))
        assert np.allclose(mine, expected), f"scene {seed}: {mine}, expected {expected}"
    assert tuple(m.recall_and_mean_iou(truth, np.zeros((0, 96, 96), bool))) == (0.0, 0.0), \
        "with no predicted mask, recall and mean IoU are 0"


CHECKS = [("16.1 the colour-distance detector's boxes", check_detector),
          ("16.2 recall and mean best IoU", check_recall)]
