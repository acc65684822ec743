"""Segment everything: a grid of point prompts, quality filters, NMS, optional crops.

Paper: Kirillov et al. 2023, section 4 (the "fully automatic" stage of the data engine that
made SA-1B) and appendix B: prompt a 32x32 grid of points, keep a mask only if its
predicted IoU is high and it is *stable* (the same mask whether the logits are cut at
-1 or +1), remove duplicates with box NMS, optionally repeat on zoomed-in overlapping crops,
and clean holes and specks.
Mirrors ``segment_anything/automatic_mask_generator.py``: same arguments, same records,
same order.

One difference, on purpose: memory. The official ``_process_batch`` upsamples the
low-res logits of a whole batch (points_per_batch x 3 masks) to full image resolution
before filtering: 64 x 3 x 1500 x 2250 float32 is 2.6 GB. Here the cheap IoU filter runs
on the low-res output first, and only the surviving masks are upsampled, a few at a time
(``_MASKS_PER_UPSAMPLE``), to compute stability, box and RLE; only the RLEs are kept. The
numbers are those of the official code (same logits, same filters, same order).

Two corner cases where the official output is an accident of torch, not a rule:
- when a point batch keeps no mask, its empty box tensor is float32 and ``torch.cat``
  promotes the crop's boxes to float, so ``bbox``/``crop_box`` come out as floats (10.0);
  here they are always ints (equal values);
- NMS over more than 1000 boxes takes torchvision's per-class path, which re-sorts with an
  *unstable* sort: masks with exactly equal scores may come out in another order. Here
  ties always keep their original order (what the <= 1000-box path does).

Shapes (``docs/shapes.md``): N points in a batch (one prompt each), K' = 3 masks per point,
R the low-res side, Hc x Wc the crop, H x W the image, M kept masks.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from minisam.utils import amg
from minisam.errors import ImageError

_MASKS_PER_UPSAMPLE = 4  # masks upsampled to full resolution at once (bounds peak memory)
OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class MaskData:
    """Columns of per-mask data (arrays or lists) filtered and concatenated together."""

    def __init__(self, **columns):
        self.columns: Dict[str, Any] = dict(columns)

    def __getitem__(self, key):
        return self.columns[key]

    def __setitem__(self, key, value):
        self.columns[key] = value

    def __len__(self):
        return len(self.columns["rles"]) if "rles" in self.columns else 0

    def filter(self, keep: np.ndarray) -> None:
        """Keep rows by boolean mask or by index array (in that order)."""
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        for k, v in self.columns.items():
            self.columns[k] = [v[i] for i in idx] if isinstance(v, list) else v[idx]

    def cat(self, other: "MaskData") -> None:
        for k, v in other.columns.items():
            if k not in self.columns:
                self.columns[k] = list(v) if isinstance(v, list) else v.copy()
            elif isinstance(v, list):
                self.columns[k] = self.columns[k] + v
            else:
                self.columns[k] = np.concatenate([self.columns[k], v], axis=0)


def _empty_batch() -> MaskData:
    return MaskData(iou_preds=np.zeros(0, np.float32), points=np.zeros((0, 2), np.float64),
                    stability_score=np.zeros(0, np.float32), boxes=np.zeros((0, 4), np.int64), rles=[])


class _OfficialDefault:
    """Marks a default argument as "not given": the value is the official one (it compares,
    prints and computes as that number), but a model with its own ``generator_defaults`` (the
    registry's ``micro``) replaces it. A value the caller passes is never replaced."""


class _DefaultInt(int, _OfficialDefault):
    pass


class _DefaultFloat(float, _OfficialDefault):
    pass


# The settings a model may tune for itself (``Sam.generator_defaults``, from the registry).
MODEL_TUNABLE = ("points_per_side", "pred_iou_thresh", "stability_score_thresh")


class SamAutomaticMaskGenerator:
    def __init__(self, model, points_per_side: Optional[int] = _DefaultInt(32), points_per_batch: int = 64,
                 pred_iou_thresh: float = _DefaultFloat(0.88), stability_score_thresh: float = _DefaultFloat(0.95),
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7,
                 crop_overlap_ratio: float = 512 / 1500, crop_n_points_downscale_factor: int = 1,
                 point_grids: Optional[List[np.ndarray]] = None, min_mask_region_area: int = 0,
                 output_mode: str = "binary_mask", progress: Optional[bool] = None) -> None:
        """Arguments as the official class (its defaults are tuned for ViT-H), plus ``progress``:
        a tqdm bar over crops and point batches, on stderr. ``None`` (the default) shows it only
        when stderr is a terminal, so that library calls print nothing into logs and loops, as
        the official ones; ``True`` always, ``False`` never.

        ``points_per_side``, ``pred_iou_thresh`` and ``stability_score_thresh`` left out take
        the model's ``generator_defaults`` where it has them (``micro``: chosen on validation
        scenes, ``weights/README.md``), else the official defaults above."""
        from minisam.predictor import SamPredictor

        tuned = getattr(model, "generator_defaults", None) or {}
        if isinstance(points_per_side, _OfficialDefault):
            points_per_side = int(tuned.get("points_per_side", points_per_side))
        if isinstance(pred_iou_thresh, _OfficialDefault):
            pred_iou_thresh = float(tuned.get("pred_iou_thresh", pred_iou_thresh))
        if isinstance(stability_score_thresh, _OfficialDefault):
            stability_score_thresh = float(tuned.get("stability_score_thresh", stability_score_thresh))

        if (points_per_side is None) == (point_grids is None):
            raise ValueError("exactly one of points_per_side or point_grids must be given")
        if points_per_side is not None:
            self.point_grids = amg.build_all_layer_point_grids(points_per_side, crop_n_layers,
                                                               crop_n_points_downscale_factor)
        else:
            self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
        if len(self.point_grids) < crop_n_layers + 1:
            raise ValueError(f"point_grids has {len(self.point_grids)} grid(s) but crop_n_layers={crop_n_layers} "
                             f"needs {crop_n_layers + 1}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output_mode {output_mode!r}; use one of {OUTPUT_MODES}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        self.predictor = SamPredictor(model)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.progress = progress

    # ------------------------------------------------------------------ public

    def generate(self, image: np.ndarray) -> List[Dict[str, Any]]:
        """Masks for the whole image (HWC uint8 RGB), as the official list of records.

        Each record: ``segmentation`` (bool HxW, or an RLE dict per ``output_mode``),
        ``area`` (int), ``bbox`` (XYWH ints, w = x1 - x0 on inclusive corners),
        ``predicted_iou``, ``point_coords`` ([[x, y]] in image pixels),
        ``stability_score``, ``crop_box`` (XYWH).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"generate needs an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ImageError(f"generate got an empty image of shape {image.shape}")
        data = self._generate_masks(image)
        if self.min_mask_region_area > 0:
            data = self.postprocess_small_regions(data, self.min_mask_region_area,
                                                  max(self.box_nms_thresh, self.crop_nms_thresh))
        if self.output_mode == "coco_rle":
            segmentations = [amg.coco_encode_rle(rle) for rle in data["rles"]]
        elif self.output_mode == "binary_mask":
            segmentations = [amg.rle_to_mask(rle) for rle in data["rles"]]
        else:
            segmentations = data["rles"]
        return [{
            "segmentation": segmentations[i],
            "area": amg.area_from_rle(data["rles"][i]),
            "bbox": amg.box_xyxy_to_xywh(data["boxes"][i]).tolist(),
            "predicted_iou": data["iou_preds"][i].item(),
            "point_coords": [data["points"][i].tolist()],
            "stability_score": data["stability_score"][i].item(),
            "crop_box": amg.box_xyxy_to_xywh(data["crop_boxes"][i]).tolist(),
        } for i in range(len(segmentations))]

    # ------------------------------------------------------------------ pipeline

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        from tqdm.auto import tqdm

        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = amg.generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        n_steps = sum(-(-len(self.point_grids[i]) // self.points_per_batch) for i in layer_idxs)
        data = MaskData()
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        with tqdm(total=n_steps, disable=not show, desc="minisam auto", unit="batch") as bar:
            for i, (crop_box, layer_idx) in enumerate(zip(crop_boxes, layer_idxs)):
                bar.set_postfix_str(f"crop {i + 1}/{len(crop_boxes)}")
                data.cat(self._process_crop(image, crop_box, layer_idx, orig_size, bar))
        if len(crop_boxes) > 1:
            # Remove duplicates between crops, preferring masks from smaller crops.
            area = amg.box_area(data["crop_boxes"]).astype(np.float32)  # [M]
            scores = np.float32(1) / area  # [M] float32, as 1 / int64 tensor in torch
            data.filter(amg.box_nms(data["boxes"], scores, self.crop_nms_thresh))
        return data

    def _process_crop(self, image, crop_box: Sequence[int], layer_idx: int, orig_size, bar) -> MaskData:
        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1, :]  # [Hc, Wc, 3]
        crop_size = cropped.shape[:2]
        self.predictor.set_image(cropped)
        points_for_image = self.point_grids[layer_idx] * np.array(crop_size)[None, ::-1]  # [Ng, 2] the whole grid, (x, y) pixels

        data = _empty_batch()
        for (points,) in amg.batch_iterator(self.points_per_batch, points_for_image):
            data.cat(self._process_batch(points, crop_size, crop_box, orig_size))
            bar.update(1)
        self.predictor.reset_image()

        # Remove duplicates within this crop; the result is in descending predicted-IoU order.
        data.filter(amg.box_nms(data["boxes"], data["iou_preds"], self.box_nms_thresh))
        data["boxes"] = amg.uncrop_boxes_xyxy(data["boxes"], crop_box)  # [M, 4] image frame
        data["points"] = amg.uncrop_points(data["points"], crop_box)  # [M, 2] image frame
        data["crop_boxes"] = np.tile(np.asarray(crop_box, dtype=np.int64), (len(data), 1))  # [M, 4]
        return data

    def _decode(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Low-res logits [N, K', R, R] and predicted IoUs [N, K'] for one foreground point each.

        ``points`` [N, 2] are in the model-input frame, float64 as in the official code (its
        prompt encoder adds 0.5 and divides by the input size in float64, then casts). The
        predictor's own decoding method, so the generator runs the predictor's path.
        """
        coords = points[:, None, :]  # [N, 2] -> [N, 1, 2]
        labels = np.ones((points.shape[0], 1), dtype=np.int64)  # [N, 1] all foreground
        return self.predictor.predict_low_res(coords, labels, multimask_output=True)  # [N, K', R, R], [N, K']

    def _process_batch(self, points: np.ndarray, crop_size, crop_box, orig_size) -> MaskData:
        orig_h, orig_w = orig_size
        model = self.predictor.model
        threshold = np.float32(model.mask_threshold)
        in_points = self.predictor.transform.apply_coords(points, crop_size)  # [N, 2] float64 input frame
        low_res, iou_preds = self._decode(in_points)  # [N, K', R, R], [N, K']
        N, K = iou_preds.shape  # K = K' here
        low_res = low_res.reshape((N * K,) + low_res.shape[2:])  # [N*K', R, R], each point's K' rows together
        iou_preds = iou_preds.reshape(N * K).astype(np.float32)  # [N*K']
        rows_points = np.repeat(points, K, axis=0)  # [N*K', 2] crop frame

        # 1. Predicted IoU (strict >), on the low-res output: no upsampling needed.
        keep = np.arange(N * K)  # [N*K']
        if self.pred_iou_thresh > 0.0:
            keep = keep[iou_preds > self.pred_iou_thresh]

        # 2.-4. Upsample the survivors a few at a time: stability, box, crop-edge filter, RLE.
        out = _empty_batch()
        for start in range(0, len(keep), _MASKS_PER_UPSAMPLE):
            idx = keep[start:start + _MASKS_PER_UPSAMPLE]  # [m]
            logits = model.postprocess_masks(low_res[idx][None], self.predictor.input_size,
                                             self.predictor.original_size)[0]  # [1, m, R, R] -> [m, Hc, Wc]
            stability = amg.calculate_stability_score(logits, float(threshold), self.stability_score_offset)  # [m]
            ok = np.ones(len(idx), dtype=bool)
            if self.stability_score_thresh > 0.0:
                ok = stability >= self.stability_score_thresh  # NaN (empty mask) fails
            if not ok.any():
                continue
            masks = logits[ok] > threshold  # [m', Hc, Wc] bool
            del logits
            boxes = amg.batched_mask_to_box(masks)  # [m', 4] crop frame, inclusive
            edge_ok = ~amg.is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])  # [m']
            if not edge_ok.any():
                continue
            masks = amg.uncrop_masks(masks[edge_ok], crop_box, orig_h, orig_w)  # [m'', H, W]
            sel = idx[ok][edge_ok]
            out.cat(MaskData(iou_preds=iou_preds[sel], points=rows_points[sel],
                             stability_score=stability[ok][edge_ok], boxes=boxes[edge_ok],
                             rles=amg.mask_to_rle(masks)))
        return out

    @staticmethod
    def postprocess_small_regions(mask_data: MaskData, min_area: int, nms_thresh: float) -> MaskData:
        """Fill small holes and drop small islands, then NMS again preferring untouched masks.

        Edits ``mask_data`` in place (as the official), and returns it.
        """
        if len(mask_data["rles"]) == 0:
            return mask_data
        # One mask at a time (the official stacks them all at full resolution): keep only
        # each new box, and the new RLE of the masks that changed.
        new_boxes, new_rles, scores = [], {}, []
        for i, rle in enumerate(mask_data["rles"]):
            mask = amg.rle_to_mask(rle)  # [H, W]
            mask, changed = amg.remove_small_regions(mask, min_area, mode="holes")
            unchanged = not changed
            mask, changed = amg.remove_small_regions(mask, min_area, mode="islands")
            unchanged = unchanged and not changed
            new_boxes.append(amg.batched_mask_to_box(mask))  # [4]
            if not unchanged:
                new_rles[i] = amg.mask_to_rle(np.asarray(mask, dtype=bool)[None])[0]
            scores.append(float(unchanged))  # 1 for untouched masks: NMS prefers them
        boxes = np.stack(new_boxes)  # [M, 4]
        keep = amg.box_nms(boxes, np.asarray(scores, np.float32), nms_thresh)
        boxes_col = np.array(mask_data["boxes"], copy=True)
        for i in keep:  # only changed masks get their new RLE and box
            if scores[i] == 0.0:
                mask_data["rles"][i] = new_rles[i]
                boxes_col[i] = boxes[i]
        mask_data["boxes"] = boxes_col
        mask_data.filter(keep)
        return mask_data
