"""Baselines and the neighbour source, on the same embeddings as the CLIPCleaner selection.

- cleanlab's confident learning (``cleanlab.filter.find_label_issues``) on out-of-fold probe probabilities;
- k-NN label agreement: a sample is flagged when the majority label of its k nearest neighbours (cosine,
  itself excluded) is not its given label.
"""
from __future__ import annotations

import warnings

import numpy as np


def nearest_neighbors(features: np.ndarray, k: int = 10, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-NN of every row among the others: (indices (N, k) int64, similarities (N, k) float32).

    ``features`` (N, D) should be unit-norm. Brute force in row blocks of ``batch`` (memory O(batch · N)).
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = len(x)
    k = int(min(k, max(n - 1, 0)))
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    if k == 0:
        return idx, sim
    for s in range(0, n, batch):
        block = x[s:s + batch] @ x.T  # (b, N)
        rows = np.arange(block.shape[0])
        block[rows, s + rows] = -np.inf  # exclude self
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        psim = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-psim, axis=1, kind="stable")
        idx[s:s + batch] = np.take_along_axis(part, order, axis=1)
        sim[s:s + batch] = np.take_along_axis(psim, order, axis=1)
    return idx, sim


def knn_label_counts(neighbor_idx: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Votes (N, K): how many of each sample's neighbours carry each given label."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.zeros((len(neighbor_idx), n_classes))
    rows = np.arange(len(neighbor_idx))
    for j in range(neighbor_idx.shape[1]):
        np.add.at(counts, (rows, y[neighbor_idx[:, j]]), 1.0)
    return counts


def knn_probs(neighbor_idx: np.ndarray, y: np.ndarray, n_classes: int, alpha: float = 1.0) -> np.ndarray:
    """Neighbour label distribution p_knn (N, K), smoothed: (votes + alpha/K) / (k + alpha)."""
    counts = knn_label_counts(neighbor_idx, y, n_classes)
    k = max(neighbor_idx.shape[1], 0)
    return (counts + alpha / n_classes) / (k + alpha)


def knn_flags(neighbor_idx: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """k-NN baseline: (flag (N,) bool — neighbours' majority label ≠ given label, score (N,) = 1 − agreement)."""
    y = np.asarray(y, dtype=np.int64)
    counts = knn_label_counts(neighbor_idx, y, n_classes)
    k = max(neighbor_idx.shape[1], 1)
    agree = counts[np.arange(len(y)), y] / k
    flag = counts.argmax(axis=1) != y
    flag &= counts.max(axis=1) > counts[np.arange(len(y)), y]  # ties keep the given label
    return flag, 1.0 - agree


def cleanlab_flags(y: np.ndarray, pred_probs: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Confident learning: (flag (N,) bool from ``find_label_issues``, score (N,) = 1 − label quality).

    ``pred_probs`` (N, K) should be out-of-fold. Classes absent from ``y`` are dropped before calling cleanlab
    (it needs every class present); with fewer than two classes nothing is flagged.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y = np.asarray(y, dtype=np.int64)
    present = np.unique(y)
    if len(present) < 2:
        return np.zeros(len(y), dtype=bool), np.zeros(len(y))
    remap = {c: i for i, c in enumerate(present)}
    yy = np.array([remap[v] for v in y])
    p = np.asarray(pred_probs, dtype=np.float64)[:, present]
    p = np.clip(p, 1e-12, None)
    p = p / p.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.random.seed(seed)
        flag = find_label_issues(yy, p, n_jobs=1)
        quality = get_label_quality_scores(yy, p)
    return np.asarray(flag, dtype=bool), 1.0 - np.asarray(quality)
