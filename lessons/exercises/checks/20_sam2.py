"""Checks for lesson 20's exercises: the rules of sam2/modeling/sam2_base.py as lesson 20 states them."""

import numpy as np
from _common import close

NO_OBJ_SCORE = -1024.0


def check_gate(m):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (4, 3, 8, 8)).astype(np.float32)
    scores = np.array([2.0, -0.5, 0.0, 1e-3], np.float32)       # 0 exactly is "no object"
    before = logits.copy()
    gated = np.asarray(m.gate_masks(logits, scores))
    assert np.array_equal(logits, before), "gate_masks changed its input: return a new array"
    expected = logits.copy()
    expected[[1, 2]] = NO_OBJ_SCORE
    close(gated, expected, "gated mask logits", rtol=0, atol=0)
    assert not (gated[[1, 2]] > 0).any(), "an object judged absent must have an empty mask"


def check_memory(m):
    cases = [(0, {0}, []), (1, {0}, [0]), (5, {0}, [0, 1, 2, 3, 4]), (10, {0}, [0, 4, 5, 6, 7, 8, 9]),
             (20, {0, 12}, [0, 12, 14, 15, 16, 17, 18, 19]), (20, {0, 17, 25}, [0, 14, 15, 16, 17, 18, 19]),
             (9, set(), [3, 4, 5, 6, 7, 8])]
    for t, prompted, expected in cases:
        mine = [int(f) for f in m.memory_frames(t, prompted)]
        assert mine == expected, f"frame {t}, prompted {sorted(prompted)}: {mine}, expected {expected}"
    mine = [int(f) for f in m.memory_frames(10, {2}, num_maskmem=3)]
    assert mine == [2, 8, 9], f"frame 10, prompted [2], num_maskmem 3: {mine}, expected [2, 8, 9]"


CHECKS = [("20.1 the occlusion head empties the mask", check_gate),
          ("20.2 the frames in the memory bank", check_memory)]
