"""Reference solutions for lesson 19's exercises."""

import numpy as np


def stability_score(logits, threshold=0.0, offset=1.0):
    strict = (logits > threshold + offset).sum((-2, -1))
    loose = (logits > threshold - offset).sum((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (strict / loose).astype(np.float32)


def sweep_thresholds(pred_iou, stability, matched_object, num_objects, iou_thresholds, stability_thresholds):
    kept = np.zeros((len(iou_thresholds), len(stability_thresholds)), int)
    recall = np.zeros(kept.shape)
    for i, t_iou in enumerate(iou_thresholds):
        for j, t_stab in enumerate(stability_thresholds):
            keep = (pred_iou > t_iou) & (stability >= t_stab)
            kept[i, j] = keep.sum()
            found = set(matched_object[keep].tolist()) - {-1}
            recall[i, j] = len(found) / num_objects
    return kept, recall


def box_nms(boxes, scores, iou_threshold):
    boxes = np.asarray(boxes, np.float64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    for i in order:
        ok = True
        for k in keep:
            w = max(0.0, min(boxes[i, 2], boxes[k, 2]) - max(boxes[i, 0], boxes[k, 0]))
            h = max(0.0, min(boxes[i, 3], boxes[k, 3]) - max(boxes[i, 1], boxes[k, 1]))
            inter = w * h
            if inter / (area[i] + area[k] - inter) > iou_threshold:
                ok = False
                break
        if ok:
            keep.append(int(i))
    return np.array(keep, int)
