"""Label-noise models used for demos and evaluation (as in the learning-with-noisy-labels literature).

All functions take integer labels ``y`` of shape (N,) in ``[0, K)`` and return a new array of noisy labels of
the same shape; exactly ``round(rate * N)`` samples (or fewer when a sample has no valid target) are flipped,
chosen with ``numpy.random.default_rng(seed)``, so results are deterministic.
"""
from __future__ import annotations

import numpy as np

#: MNIST-style pairwise flips (Patrini et al. 2017) for the digits demo: 2→7, 3→8, 7→1, 5↔6
DIGITS_PAIRS: dict[int, int] = {2: 7, 3: 8, 7: 1, 5: 6, 6: 5}


def _pick(n: int, rate: float, rng: np.random.Generator, candidates: np.ndarray | None = None) -> np.ndarray:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    pool = np.arange(n) if candidates is None else candidates
    k = int(round(rate * (n if candidates is None else len(pool))))
    return np.sort(rng.choice(pool, size=min(k, len(pool)), replace=False))


def symmetric_noise(y: np.ndarray, n_classes: int, rate: float, seed: int = 0) -> np.ndarray:
    """Replace the label of a ``rate`` share of samples by a uniformly drawn *other* class."""
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    idx = _pick(len(y), rate, rng)
    out = y.copy()
    shift = rng.integers(1, n_classes, size=len(idx))  # 1..K-1: never the same class
    out[idx] = (y[idx] + shift) % n_classes
    return out


def pairwise_noise(y: np.ndarray, pairs: dict[int, int], rate: float, seed: int = 0) -> np.ndarray:
    """Flip ``rate`` of the samples of each source class in ``pairs`` to its target class (asymmetric noise)."""
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    out = y.copy()
    for src, dst in sorted(pairs.items()):
        members = np.flatnonzero(y == src)
        idx = _pick(len(y), rate, rng, candidates=members)
        out[idx] = dst
    return out


def most_similar_class(similarity: np.ndarray) -> np.ndarray:
    """For a (K, K) class-similarity matrix, the most similar *other* class of each class, shape (K,)."""
    s = np.array(similarity, dtype=np.float64, copy=True)
    np.fill_diagonal(s, -np.inf)
    return s.argmax(axis=1)


def centroid_similarity(features: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Cosine similarity (K, K) between the class centroids of ``features`` (N, D) under labels ``y``.

    Classes without samples get similarity 0 to every other class.
    """
    f = np.asarray(features, dtype=np.float64)
    cents = np.zeros((n_classes, f.shape[1]))
    for k in range(n_classes):
        m = y == k
        if m.any():
            cents[k] = f[m].mean(axis=0)
    norms = np.linalg.norm(cents, axis=1, keepdims=True)
    cents = np.divide(cents, norms, out=np.zeros_like(cents), where=norms > 0)
    return cents @ cents.T


def hard_noise(y: np.ndarray, similarity: np.ndarray, rate: float, seed: int = 0) -> np.ndarray:
    """Flip a ``rate`` share of samples to the most similar other class of their class ("hard" noise)."""
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    target = most_similar_class(similarity)
    idx = _pick(len(y), rate, rng)
    out = y.copy()
    out[idx] = target[y[idx]]
    return out
