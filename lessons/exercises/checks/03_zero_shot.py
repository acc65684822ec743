"""Checks for lesson 03's exercises: the lesson's mask embedding and leave-one-out probe, on scenes and random data."""

import numpy as np
from _common import close

from minisam.training.shapes import make_unseen_scene


def cosine(a, b):   # [N, d], [K, d] -> [N, K]
    return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T


def check_classify(m):
    rng = np.random.default_rng(0)
    K, d = 5, 16
    directions = rng.normal(0, 1, (K, d))
    class_vectors = directions * np.array([0.2, 5.0, 1.0, 0.5, 3.0])[:, None]   # lengths carry no meaning
    truth = rng.integers(0, K, 200)
    images = (directions[truth] / np.linalg.norm(directions[truth], axis=1, keepdims=True)
              + rng.normal(0, 0.35, (200, d))) * rng.uniform(0.5, 4, (200, 1))
    mine = np.asarray(m.zero_shot_classify(images, class_vectors)).astype(int)
    expected = np.argmax(cosine(images, class_vectors), axis=1)
    assert mine.shape == (200,), f"shape {mine.shape}, expected (200,)"
    wrong = np.flatnonzero(mine != expected)
    assert not len(wrong), (f"image {wrong[0]}: class {mine[wrong[0]]}, the highest cosine similarity is class "
                            f"{expected[wrong[0]]} ({len(wrong)} of 200 differ; a dot product favours long vectors)")
    tie = np.asarray(m.zero_shot_classify(np.array([[1.0, 1.0]]), np.array([[2.0, 0.0], [0.0, 1.0]])))
    assert int(tie[0]) == 0, "on a tie, the first class"
    return f"{(expected == truth).mean():.0%} of 200 noisy images get their class, with no training image"


def check_mask_embedding(m):
    rng = np.random.default_rng(1)
    count = 0
    for S, G in [(128, 16), (64, 8), (48, 4)]:
        embedding = rng.normal(0, 1, (32, G, G)).astype(np.float32)
        scenes = [make_unseen_scene(np.random.default_rng(10 + k), S, min_area=20) for k in range(4)]
        for mask in [mk for sc in scenes for mk in sc.masks]:
            s = S // G
            cover = mask.reshape(G, s, G, s).mean(axis=(1, 3))
            expected = (embedding * cover).sum(axis=(1, 2)) / cover.sum()
            expected = expected / np.linalg.norm(expected)
            close(m.mask_embedding(embedding, mask), expected, f"mask embedding (S {S}, G {G}, {mask.sum()} pixels)",
                  rtol=1e-4, atol=1e-5)
            count += 1
    one_cell = np.zeros((64, 64), bool)
    one_cell[9:12, 17:23] = True                        # part of the cell at row 1, column 2 (8 x 8 cells)
    embedding = rng.normal(0, 1, (32, 8, 8))
    close(m.mask_embedding(embedding, one_cell), embedding[:, 1, 2] / np.linalg.norm(embedding[:, 1, 2]),
          "a mask inside one cell (its embedding is that cell's vector, normalized)", rtol=1e-5, atol=1e-6)
    return f"{count} masks of crosses and crescents"


def reference_loo(vectors, labels):
    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    hits = 0
    for j in range(len(labels)):
        others = np.arange(len(labels)) != j
        centroids = np.stack([vectors[others & (labels == k)].mean(axis=0) for k in classes])
        hits += classes[int(np.argmax(cosine(vectors[j][None], centroids)[0]))] == labels[j]
    return hits / len(labels)


def check_leave_one_out(m):
    rng = np.random.default_rng(2)
    cases = []
    for n, spread in [(12, 1.5), (30, 1.0), (9, 3.0)]:     # few items, much noise: leaving one out matters
        labels = np.array(["cross", "crescent", "ring"])[rng.integers(0, 3, n)]
        labels[:6] = ["cross", "crescent", "ring"] * 2
        means = {"cross": rng.normal(0, 1, 6), "crescent": rng.normal(0, 1, 6), "ring": rng.normal(0, 1, 6)}
        vectors = np.stack([means[k] for k in labels]) + rng.normal(0, spread, (n, 6))
        cases.append((vectors, labels))
    kinds = np.array([0, 0, 1, 1, 1, 0, 1, 0])                                   # integer labels
    cases.append((rng.normal(0, 1, (8, 3)) + kinds[:, None], kinds))
    for i, (vectors, labels) in enumerate(cases):
        mine = float(m.leave_one_out_accuracy(vectors, labels))
        expected = reference_loo(vectors, labels)
        assert np.isclose(mine, expected), (f"case {i} ({len(labels)} items): accuracy {mine:.3f}, expected "
                                            f"{expected:.3f} (is each item left out of its own class's centroid?)")
    return f"accuracies {', '.join(f'{reference_loo(v, l):.2f}' for v, l in cases)}"


CHECKS = [("03.1 zero-shot classification by cosine similarity", check_classify),
          ("03.2 the mask embedding", check_mask_embedding),
          ("03.3 leave-one-out nearest centroid", check_leave_one_out)]
