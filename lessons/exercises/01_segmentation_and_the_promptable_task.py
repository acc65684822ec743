"""Exercises for lesson 01: segmentation kinds, the promptable task, and the shapes of SAM's stages.

Fill in each function, then run ``python lessons/exercises.py 01``. NumPy only in your answers.
"""

import numpy as np  # noqa: F401  (for your answers)


def instances_from_semantic(semantic):
    """Exercise 01.1. From a semantic map to instance masks.

    ``semantic``: [H, W] int, 0 = background, k > 0 = class k. A semantic map merges every
    object of a class; split each class into its 8-connected components (pixels touching by an
    edge or a corner belong together). Returns a list of ``(class_id, mask [H, W] bool)``, one
    per object, sorted by class, then by the position of the object's first pixel in raster
    order (row by row, left to right). Hint: a breadth-first flood fill from each unvisited pixel.
    """
    raise NotImplementedError("01.1 instances_from_semantic")


def masks_containing(point, masks):
    """Exercise 01.2. Which masks are valid answers to one click?

    ``point``: (x, y), a pixel's column and row (the prompt convention); ``masks``: a list of
    [H, W] bool masks (a scene's parts, objects and groups). Returns the sorted list of indices
    of the masks that contain the clicked pixel: with nested masks there are several, which is
    why SAM returns three masks for one point.
    """
    raise NotImplementedError("01.2 masks_containing")


def stage_shapes(img_size, patch_size, embed_dim, num_points, with_box):
    """Exercise 01.3. The shape of every stage, from the configuration alone.

    ``img_size`` S, ``patch_size`` P, ``embed_dim`` C (the prompt / decoder width); a prompt of
    ``num_points`` points and, if ``with_box``, one box; one image; multimask output. Returns a
    dict of shape tuples with keys:
      "input" (the preprocessed image), "image_embedding", "sparse" (the prompt tokens: a point
      is one token, a box two, and a padding token is added when there is no box), "dense"
      (the dense prompt embedding), "low_res_masks" (4x the embedding grid), "iou_predictions".
    """
    raise NotImplementedError("01.3 stage_shapes")
