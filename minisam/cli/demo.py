"""``minisam demo``: the whole pipeline offline on a synthetic scene, in one figure.

A scene of shapes from :mod:`minisam.training.shapes`, then the three ways of prompting SAM:
a point (three masks, ranked by the IoU head), a box (one mask), and the automatic mask
generator ("segment everything", with the model's own default settings), each scored against
the scene's true masks. The scene is drawn from micro's training domain (every part, object and
group of at least ``SHIPPED_RECIPE["scene_min_area"]`` visible pixels). Runs on the shipped small
model (``micro``) with no network and no torch.
"""

from __future__ import annotations

import time

from minisam.cli.model_args import add_model_args

def add_parser(sub):
    p = sub.add_parser("demo", help="run the offline demo (synthetic scene: point, box, automatic masks)",
                       description="Segment a synthetic scene with a point, a box and the automatic mask "
                                   "generator; write one figure and print the IoUs.")
    p.add_argument("--out", default="minisam_demo", help="output folder (default: minisam_demo)")
    add_model_args(p)
    p.add_argument("--seed", type=int, default=3, help="which synthetic scene")
    p.add_argument("--force", action="store_true", help="overwrite an existing figure")
    return p


def run(args) -> int:
    import numpy as np

    from minisam.build_sam import DEFAULT_MODEL
    from minisam.cli.model_args import load_model
    from minisam.training.micro import MATCH_IOU, SHIPPED_RECIPE
    from minisam.training.shapes import interior_point, make_scene
    from minisam.errors import MinisamError
    from minisam.modeling.common import mask_iou
    from minisam.training.interactive import mask_box
    from minisam.cli.drawing import prepare_out_file

    t0 = time.time()
    fig_path = prepare_out_file(args.out, "demo.png", force=args.force)
    sam = load_model(args)
    from minisam.automatic_mask_generator import SamAutomaticMaskGenerator
    from minisam.predictor import SamPredictor

    size = sam.config.img_size
    scene = make_scene(np.random.default_rng(args.seed), size, min_area=SHIPPED_RECIPE["scene_min_area"])
    objects = scene.instance_masks
    if not objects:
        raise MinisamError(f"scene {args.seed} has no objects; try another --seed")
    target = max(objects, key=lambda m: m.sum())
    predictor = SamPredictor(sam)
    predictor.set_image(scene.image)
    point = interior_point(target) - 0.5
    masks, scores, _ = predictor.predict(point_coords=point[None], point_labels=np.array([1]))
    best = int(np.argmax(scores))
    point_ious = [mask_iou(m, target) for m in masks]
    box = mask_box(target)
    box_mask, box_score, _ = predictor.predict(box=box, multimask_output=False)
    box_iou = mask_iou(box_mask[0], target)
    generator = SamAutomaticMaskGenerator(sam, progress=False)     # the model's defaults (micro: its registry entry)
    records = generator.generate(scene.image)
    auto_best = [max([mask_iou(r["segmentation"], m) for r in records] or [0.0]) for m in objects]
    found = sum(q >= MATCH_IOU for q in auto_best)

    print(f"model: {sam.config.encoder_depth}-block ViT, {size}x{size} input "
          f"({'checkpoint ' + args.checkpoint if args.checkpoint else args.model or DEFAULT_MODEL})")
    print(f"point {point.round(1).tolist()}: scores {[round(float(s), 3) for s in scores]}, "
          f"IoU with the object {np.round(point_ious, 3).tolist()} (picked mask {best}: {point_ious[best]:.3f})")
    print(f"box {box.tolist()}: score {float(box_score[0]):.3f}, IoU {box_iou:.3f}")
    print(f"automatic masks: {len(records)}; best IoU per object {np.round(auto_best, 3).tolist()} "
          f"(mean {np.mean(auto_best):.3f}): {found} of {len(objects)} objects found (IoU >= {MATCH_IOU})")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from minisam.cli.drawing import show_anns, show_box, show_mask, show_points
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    axes[0].imshow(scene.image)
    for i, m in enumerate(objects):
        show_mask(m, axes[0], color=np.r_[plt.cm.tab10(i % 10)[:3], 0.45])
    axes[0].set_title(f"scene {args.seed}: {len(objects)} objects (truth)")
    axes[1].imshow(scene.image)
    show_mask(masks[best], axes[1])
    show_points(point[None], np.array([1]), axes[1])
    axes[1].set_title(f"point: score {scores[best]:.2f}, IoU {point_ious[best]:.2f}")
    axes[2].imshow(scene.image)
    show_mask(box_mask[0], axes[2])
    show_box(box, axes[2])
    axes[2].set_title(f"box: IoU {box_iou:.2f}")
    axes[3].imshow(scene.image)
    show_anns(records, axes[3])
    axes[3].set_title(f"automatic: {found} of {len(objects)} objects found ({len(records)} masks)")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(fig_path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    print(f"figure: {fig_path}  ({time.time() - t0:.1f} s)")
    return 0
