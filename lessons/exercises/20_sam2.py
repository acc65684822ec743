"""Exercises for lesson 20: SAM 2's memory and occlusion head.

Fill in each function, then run ``python lessons/exercises.py 20``. NumPy only in your answers.
"""

import numpy as np  # noqa: F401  (for your answers)

NO_OBJ_SCORE = -1024.0   # SAM 2's logit for "no object here" (sam2/modeling/sam2_base.py)


def gate_masks(mask_logits, object_score_logit):
    """Exercise 20.1. The occlusion head's effect on the masks.

    ``mask_logits``: [N, K, H, W] low-res mask logits of N objects; ``object_score_logit``: [N],
    the occlusion head's logit (is object n in this frame at all?). Where the object score logit
    is > 0 the masks pass unchanged; elsewhere every logit of that object's masks is replaced
    by NO_OBJ_SCORE, so its mask is empty (and so is the memory made from it). Returns a new
    array; leave the input unchanged.
    """
    raise NotImplementedError("20.1 gate_masks")


def memory_frames(t, prompted, num_maskmem=7):
    """Exercise 20.2. Which frames' memories does frame t attend to?

    Frames are numbered 0, 1, ...; ``prompted`` is the set of frames the user prompted. While
    tracking forward to frame t, memory attention reads the memories of every prompted frame
    before t, and of the ``num_maskmem - 1`` latest frames before t (t - 1, t - 2, ..., those
    that exist). Returns the sorted list of those frame indices, each once.
    """
    raise NotImplementedError("20.2 memory_frames")
