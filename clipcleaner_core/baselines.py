"""Baselines and the neighbour source, on the same embeddings as the CLIPCleaner selection.

- cleanlab's confident learning (``cleanlab.filter.find_label_issues``) on out-of-fold probe probabilities;
- k-NN label agreement: a sample is flagged when the majority label of its k nearest neighbours (cosine,
  itself excluded) is not its given label.
"""
from __future__ import annotations

import warnings

import numpy as np


#: above this many rows :func:`nearest_neighbors` switches from exact brute force (O(N²·D)) to a cell-probe index
EXACT_KNN_MAX = 30_000


def _topk_rows(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``block`` (b, N) float32: indices and values of the k largest, largest first."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; numpy fallback
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        psim = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-psim, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(psim, order, axis=1)
    v, i = torch.topk(torch.from_numpy(block), k, dim=1, largest=True, sorted=True)
    return i.numpy().astype(np.int64), v.numpy()


def _exact_neighbors(x: np.ndarray, k: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    for s in range(0, n, batch):
        block = x[s:s + batch] @ x.T  # (b, N)
        rows = np.arange(block.shape[0])
        block[rows, s + rows] = -np.inf  # exclude self
        idx[s:s + batch], sim[s:s + batch] = _topk_rows(block, k)
    return idx, sim


def _spherical_kmeans(x: np.ndarray, n_cells: int, rng: np.random.Generator, iters: int = 6,
                      sample: int = 40) -> np.ndarray:
    """Unit-norm centroids (n_cells, D) of spherical k-means (Lloyd on cosine) fit on ≤ ``sample``·n_cells rows."""
    n = len(x)
    fit = x[np.sort(rng.choice(n, size=min(n, sample * n_cells), replace=False))]
    c = fit[rng.choice(len(fit), size=n_cells, replace=False)].copy()
    for _ in range(iters):
        a = np.argmax(fit @ c.T, axis=1)
        new = np.zeros_like(c)
        np.add.at(new, a, fit)
        norm = np.linalg.norm(new, axis=1, keepdims=True)
        empty = norm[:, 0] == 0
        new[empty] = c[empty]  # an empty cell keeps its centroid
        norm[empty] = 1.0
        c = new / norm
    return c


def _approx_neighbors(x: np.ndarray, k: int, seed: int, n_probe: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Cell-probe approximate k-NN (an IVF index, in numpy): spherical k-means splits the rows into ~sqrt(N)
    cells; the candidates of every row of a cell are the members of the cells whose centroids are nearest to
    that cell's centroid, about ``n_probe`` cells' worth of rows (at least 20·(k+1)); neighbours are the exact
    top-k cosines among the candidates (self excluded). Cost O(N · candidates · D) instead of O(N² · D); deterministic for a ``seed``.
    """
    n = len(x)
    rng = np.random.default_rng(seed)
    n_cells = int(max(4, min(n // 8, round(np.sqrt(n)))))
    cent = _spherical_kmeans(x, n_cells, rng)
    assign = np.empty(n, dtype=np.int64)
    for s in range(0, n, 16384):
        assign[s:s + 16384] = np.argmax(x[s:s + 16384] @ cent.T, axis=1)
    order = np.argsort(assign, kind="stable")
    starts = np.searchsorted(assign[order], np.arange(n_cells + 1))
    sizes = np.diff(starts)
    want = max(20 * (k + 1), n_probe * n // n_cells)
    csim = cent @ cent.T
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    for c in range(n_cells):
        q = order[starts[c]:starts[c + 1]]
        if len(q) == 0:
            continue
        near = np.argsort(-csim[c], kind="stable")
        take = int(np.searchsorted(np.cumsum(sizes[near]), min(want, n))) + 1
        cand = np.concatenate([order[starts[j]:starts[j + 1]] for j in near[:take]])
        xc = x[cand]
        kk = min(k, len(cand) - 1)
        step = max(1, (1 << 24) // len(cand))  # ≤ 16M similarities at once, even for a huge cell (duplicates)
        for a in range(0, len(q), step):
            qq = q[a:a + step]
            block = x[qq] @ xc.T
            block[cand[None, :] == qq[:, None]] = -np.inf  # exclude self
            top, val = _topk_rows(block, kk)
            idx[qq, :kk] = cand[top]
            sim[qq, :kk] = val
    return idx, sim


def nearest_neighbors(features: np.ndarray, k: int = 10, batch: int = 2048, method: str = "auto",
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-NN of every row among the others: (indices (N, k) int64, similarities (N, k) float32).

    ``features`` (N, D) should be unit-norm. ``method``: ``"exact"`` — brute force in row blocks of ``batch``
    (memory O(batch · N), time O(N² · D)); ``"approx"`` — a cell-probe (IVF) index: exact cosines among the
    members of the nearest k-means cells; on the benchmark's 100k × 512 data it finds 73 % of the exact 10
    nearest neighbours while the k-NN flags (label votes) match the exact ones for > 99.9 % of rows
    (``docs/PERFORMANCE.md``; small clustered sets: ≥ 95 %, ``tests/test_fast_paths.py``);
    ``"auto"`` — exact up to :data:`EXACT_KNN_MAX` rows, approximate above. Neighbours are sorted most similar
    first.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = len(x)
    k = int(min(k, max(n - 1, 0)))
    if k == 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    if method == "auto":
        method = "exact" if n <= EXACT_KNN_MAX else "approx"
    if method == "exact":
        return _exact_neighbors(x, k, batch)
    if method == "approx":
        # the index needs many times k points to pay off; small inputs are exact (and cheap)
        return _approx_neighbors(x, k, seed) if n > 4 * (k + 1) else _exact_neighbors(x, k, batch)
    raise ValueError(f"unknown k-NN method {method!r}; use auto, exact or approx")


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
