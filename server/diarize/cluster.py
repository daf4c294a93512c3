"""Clustering speaker embeddings with an automatic speaker count, in numpy.

Pure functions over L2-normalised vectors:
- `spherical_kmeans` splits the vectors into k groups by cosine (the caller tries k = 1, 2, …
  and keeps the k of the best silhouette, see `pipeline.assign`).
- `absorb_small` dissolves clusters with too little speech to be a voice (a cough, a laugh, a
  stretch the embedder got wrong) into the nearest remaining one.
- `smooth` re-labels a time-ordered sequence by Viterbi over cosine scores to each centroid
  with a penalty per change of speaker, so single noisy windows do not flip the speaker.
"""

from __future__ import annotations

import numpy as np


def unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-9)


def group_sums(labels: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """(k, dim) sums of the vectors of each label (a one-hot product: `np.add.at` is ~50x
    slower, and this runs for every final of a live stream)."""
    onehot = np.zeros((k, len(labels)))
    onehot[labels, np.arange(len(labels))] = 1.0
    return onehot @ vectors


def add_sums(
    sums: dict[int, np.ndarray], vectors: np.ndarray, labels: np.ndarray, weight: float
) -> dict[int, np.ndarray]:
    """`sums` (per label, a weighted sum of vectors) with these labelled vectors added, each
    weighing `weight`; a new dict, so a caller's copy never changes under it."""
    out = dict(sums)
    for label in np.unique(labels).tolist():
        own = vectors[labels == label].sum(axis=0) * weight
        out[label] = out[label] + own if label in out else own
    return out


def centroids(vectors: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    k = int(labels.max()) + 1 if len(labels) else 0
    return unit(group_sums(labels, vectors * weights[:, None], k))


def absorb_small(
    vectors: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    min_weight: float,
    keep_at_least: int = 1,
) -> np.ndarray:
    """Dissolve clusters whose total weight is under `min_weight` into their nearest neighbour,
    keeping the `keep_at_least` heaviest whatever their weight; labels come back dense."""
    if len(labels) == 0:
        return labels
    labels = labels.copy()
    while True:
        k = int(labels.max()) + 1
        totals = np.bincount(labels, weights=weights, minlength=k)
        order = np.argsort(totals)
        small = [c for c in order if totals[c] < min_weight and totals[c] > 0]
        alive = int(np.count_nonzero(totals > 0))
        if not small or alive <= keep_at_least:
            break
        victim = small[0]
        cents = centroids(vectors, labels, weights)
        score = cents @ cents[victim]
        score[victim] = -np.inf
        score[totals <= 0] = -np.inf
        labels[labels == victim] = int(np.argmax(score))
    _, dense = np.unique(labels, return_inverse=True)
    return dense.astype(np.int64)


def smooth(scores: np.ndarray, breaks: np.ndarray, switch_penalty: float) -> np.ndarray:
    """Viterbi path over (n, k) scores; a change costs `switch_penalty`, free where `breaks`
    marks a gap in the speech (a new region may well be a new speaker)."""
    n, k = scores.shape
    if n == 0 or k <= 1:
        return np.zeros(n, np.int64)
    back = np.zeros((n, k), np.int64)
    total = scores[0].astype(np.float64).copy()
    for t in range(1, n):
        penalty = 0.0 if breaks[t] else switch_penalty
        stay = total
        best_prev = int(np.argmax(total))
        move = total[best_prev] - penalty
        choose_move = move > stay
        back[t] = np.where(choose_move, best_prev, np.arange(k))
        total = np.where(choose_move, move, stay) + scores[t]
    path = np.empty(n, np.int64)
    path[-1] = int(np.argmax(total))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber so speaker 0 speaks first, then 1, ... (Deepgram numbers by appearance)."""
    mapping: dict[int, int] = {}
    for label in labels.tolist():
        mapping.setdefault(label, len(mapping))
    return np.array([mapping[label] for label in labels.tolist()], np.int64)


def spherical_kmeans(vectors: np.ndarray, k: int, *, seeds: int = 4, iters: int = 30) -> np.ndarray:
    """k clusters of unit vectors by cosine; the best of a few seeded k-means++ starts."""
    n = len(vectors)
    if k <= 1 or n <= k:
        return np.arange(n) if n <= k and k > 1 else np.zeros(n, np.int64)
    best: tuple[float, np.ndarray] | None = None
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        chosen = [int(rng.integers(n))]
        for _ in range(1, k):
            dist = 1.0 - np.max(vectors @ vectors[chosen].T, axis=1)
            dist = np.maximum(dist, 0.0)
            chosen.append(int(rng.choice(n, p=dist / dist.sum())) if dist.sum() > 0 else 0)
        cents = vectors[chosen]
        labels = np.zeros(n, np.int64)
        for _ in range(iters):
            new = np.argmax(vectors @ cents.T, axis=1)
            if _ and np.array_equal(new, labels):
                break
            labels = new
            sums = group_sums(labels, vectors, k)
            empty = np.linalg.norm(sums, axis=1) == 0
            sums[empty] = cents[empty]
            cents = unit(sums)
        score = float(np.sum(np.max(vectors @ cents.T, axis=1)))
        if best is None or score > best[0]:
            best = (score, labels)
    assert best is not None
    return best[1]


def runs_between(labels: np.ndarray, a: int, b: int) -> int:
    """Runs in the sequence of labels a and b alone: 2 for drift (a..ab..b), 4+ for turns."""
    seq = labels[(labels == a) | (labels == b)]
    return int(np.count_nonzero(seq[1:] != seq[:-1])) + 1 if len(seq) else 0


def turn_taking(labels: np.ndarray) -> int:
    """The fewest runs between any two labels: how clearly every pair of voices takes turns."""
    k = int(labels.max()) + 1 if len(labels) else 0
    return min((runs_between(labels, a, b) for a in range(k) for b in range(a + 1, k)), default=0)
