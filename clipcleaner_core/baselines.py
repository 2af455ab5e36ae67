"""Baselines and the neighbour source, on the same embeddings as the CLIPCleaner selection.

- cleanlab's confident learning (``cleanlab.filter.find_label_issues``) on out-of-fold probe probabilities;
- k-NN label agreement: a sample is flagged when the majority label of its k nearest neighbours (cosine,
  itself excluded) is not its given label.
"""
from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

    from .workspace import Workspace


#: above this many rows :func:`nearest_neighbors` switches from exact brute force (O(N²·D)) to a cell-probe index
EXACT_KNN_MAX = 30_000


def _topk_rows(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``block`` (b, N) float32: indices and values of the k largest, largest first."""
    import torch

    v, i = torch.topk(torch.from_numpy(block), k, dim=1, largest=True, sorted=True)
    return i.numpy().astype(np.int64), v.numpy()


def _exact_neighbors(x: np.ndarray, k: int, batch: int | None = None, device: str | torch.device = "cpu"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Brute force on ``device`` (torch): one (b, N) float32 similarity block at a time, top-k per row, self
    excluded. ``batch`` rows per block (default: ~64 MB of similarities on the CPU, ~1 GB on CUDA)."""
    import torch

    from .scoring import block_rows, resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    n = len(x)
    b = int(batch or min(8192, block_rows(n, dev)))
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    for s in range(0, n, b):
        block = xt[s:s + b] @ xt.T  # (b, N)
        rows = torch.arange(block.shape[0], device=dev)
        block[rows, s + rows] = -torch.inf  # exclude self
        v, i = torch.topk(block, k, dim=1, largest=True, sorted=True)
        idx[s:s + b], sim[s:s + b] = i.cpu().numpy(), v.cpu().numpy()
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
    top-k cosines among the candidates (self excluded). Cost O(N · candidates · D) instead of O(N² · D); deterministic
    for a ``seed``.
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


def nearest_neighbors(features: np.ndarray, k: int = 10, batch: int | None = None, method: str = "auto",
                      seed: int = 0, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-NN of every row among the others: (indices (N, k) int64, similarities (N, k) float32).

    ``features`` (N, D) should be unit-norm. ``method``: ``"exact"`` — brute force in row blocks with torch on
    ``device`` (memory O(batch · N), time O(N² · D)); ``"approx"`` — a cell-probe (IVF) index: exact cosines
    among the members of the nearest k-means cells; on the benchmark's 100k × 512 data it finds 73 % of the exact 10
    nearest neighbours while the k-NN flags (label votes) match the exact ones for > 99.9 % of rows
    (``docs/PERFORMANCE.md``; small clustered sets: ≥ 95 %, ``tests/test_fast_paths.py``);
    ``"auto"`` — exact on CUDA and up to :data:`EXACT_KNN_MAX` rows on the CPU, approximate above. Neighbours are
    sorted most similar first.
    """
    from .scoring import resolve_device

    dev = resolve_device(device)
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = len(x)
    k = int(min(k, max(n - 1, 0)))
    if k == 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    if method == "auto":
        method = "exact" if n <= EXACT_KNN_MAX or dev.type == "cuda" else "approx"
    if method == "exact":
        return _exact_neighbors(x, k, batch, dev)
    if method == "approx":
        # the index needs many times k points to pay off; small inputs are exact (and cheap)
        return _approx_neighbors(x, k, seed) if n > 4 * (k + 1) else _exact_neighbors(x, k, batch, dev)
    raise ValueError(f"unknown k-NN method {method!r}; use auto, exact or approx")


def knn_label_counts(neighbor_idx: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Votes (N, K) float64: how many of each sample's neighbours carry each given label (dense: use it on a
    row block at a time for large N · K)."""
    y = np.asarray(y, dtype=np.int64)
    nb = np.asarray(neighbor_idx, dtype=np.int64)
    counts = np.zeros((len(nb), n_classes))
    if nb.size:
        rows = np.repeat(np.arange(len(nb)), nb.shape[1])
        np.add.at(counts, (rows, y[nb].ravel()), 1.0)
    return counts


def knn_probs_block(neighbor_idx: np.ndarray, y: np.ndarray, n_classes: int, alpha: float = 1.0) -> np.ndarray:
    """Neighbour label distribution p_knn (b, K) float32 for the rows of ``neighbor_idx`` (b, k), smoothed:
    (votes + alpha/K) / (k + alpha)."""
    counts = knn_label_counts(neighbor_idx, y, n_classes)
    k = max(np.asarray(neighbor_idx).shape[1], 0)
    return ((counts + alpha / n_classes) / (k + alpha)).astype(np.float32)


def knn_probs(neighbor_idx: np.ndarray, y: np.ndarray, n_classes: int, alpha: float = 1.0) -> np.ndarray:
    """Dense p_knn (N, K) float64 of :func:`knn_probs_block` (tests, small data)."""
    return knn_probs_block(neighbor_idx, y, n_classes, alpha).astype(np.float64)


def knn_flags(neighbor_idx: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """k-NN baseline: (flag (N,) bool — neighbours' majority label ≠ given label, score (N,) = 1 − agreement).

    Row blocks of votes, so memory stays O(block · K) at any N."""
    y = np.asarray(y, dtype=np.int64)
    nb = np.asarray(neighbor_idx)
    n, k = len(nb), max(nb.shape[1], 1)
    flag = np.zeros(n, dtype=bool)
    agree = np.zeros(n)
    step = max(1, (1 << 22) // max(n_classes, 1))
    for s in range(0, n, step):
        counts = knn_label_counts(nb[s:s + step], y, n_classes)
        rows = np.arange(len(counts))
        own = counts[rows, y[s:s + step]]
        agree[s:s + step] = own / k
        flag[s:s + step] = counts.max(axis=1) > own  # the majority is another label; ties keep the given one
    return flag, 1.0 - agree


def cleanlab_flags(y: np.ndarray, pred_probs: np.ndarray, seed: int = 0, overwrite: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Confident learning: (flag (N,) bool from ``find_label_issues``, score (N,) = 1 − label quality).

    ``pred_probs`` (N, K) should be out-of-fold; float32 is enough (cleanlab keeps the dtype) and halves the
    memory at large N · K. ``overwrite=True`` lets the clipping/renormalisation happen in ``pred_probs`` itself
    instead of a copy. Classes absent from ``y`` are dropped before calling cleanlab (it needs every class
    present); with fewer than two classes nothing is flagged.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y = np.asarray(y, dtype=np.int64)
    present = np.unique(y)
    if len(present) < 2:
        return np.zeros(len(y), dtype=bool), np.zeros(len(y))
    p = np.asarray(pred_probs)
    if len(present) < p.shape[1]:  # cleanlab needs every class present: drop the absent ones (a copy)
        p = p[:, present]
        y = np.searchsorted(present, y)
    elif p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float32)
    elif not overwrite:
        p = p.copy()
    step = max(1, (1 << 24) // p.shape[1])
    for s in range(0, len(p), step):  # in place, in row blocks: no second (N, K) array
        blk = p[s:s + step]
        np.clip(blk, 1e-12, None, out=blk)
        blk /= blk.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = np.random.get_state()  # cleanlab draws from the global RNG: seed it, then give it back
        try:
            np.random.seed(seed)
            flag = find_label_issues(y, p, n_jobs=1)
            quality = get_label_quality_scores(y, p)
        finally:
            np.random.set_state(state)
    return np.asarray(flag, dtype=bool), 1.0 - np.asarray(quality, dtype=np.float64)


# --- small-loss baseline (the Hard noise page) -------------------------------------------------------------------
def small_loss(features: np.ndarray, y: np.ndarray, n_classes: int, C: float = 1.0, seed: int = 0,
               max_iter: int = 300) -> np.ndarray:
    """Per-sample cross-entropy (N,) of the given label under a logistic regression trained *in-sample* on the
    noisy labels (the classic "small-loss" trick: mislabelled samples are fitted last, so their loss is large)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    present = np.unique(y)
    if len(present) < 2:
        return np.zeros(len(y))
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    clf.fit(x, y)
    p = clf.predict_proba(x)
    col = np.searchsorted(clf.classes_, y)
    return -np.log(np.clip(p[np.arange(len(y)), col], 1e-12, 1.0))


def small_loss_flags(loss: np.ndarray, share: float | None = None, seed: int = 0) -> np.ndarray:
    """Flag the largest-loss samples: the top ``share`` (0..1) of them, or with ``share=None`` those a 2-component
    GMM on the loss puts in the high-loss component (posterior > 0.5)."""
    loss = np.asarray(loss, dtype=np.float64)
    n = len(loss)
    if n == 0:
        return np.zeros(0, dtype=bool)
    if share is not None:
        k = int(round(min(max(share, 0.0), 1.0) * n))
        flag = np.zeros(n, dtype=bool)
        if k:
            flag[np.argsort(-loss, kind="stable")[:k]] = True
        return flag
    from sklearn.mixture import GaussianMixture

    if np.ptp(loss) == 0:
        return np.zeros(n, dtype=bool)
    gmm = GaussianMixture(2, random_state=seed, reg_covar=1e-6).fit(loss.reshape(-1, 1))
    high = int(np.argmax(gmm.means_.ravel()))
    return gmm.predict_proba(loss.reshape(-1, 1))[:, high] > 0.5


def _small_loss_stamp(ws: Workspace, seed: int) -> dict:
    return {"generation": ws.generation, "seed": seed}


def small_loss_is_cached(ws: Workspace, seed: int = 0) -> bool:
    """True when :func:`cached_small_loss` would return from the cache (no training)."""
    arr_p, meta_p = ws.cache_dir / "small_loss.npy", ws.cache_dir / "small_loss.json"
    try:
        return arr_p.is_file() and json.loads(meta_p.read_text(encoding="utf-8")) == _small_loss_stamp(ws, seed)
    except (OSError, ValueError):
        return False


def cached_small_loss(ws: Workspace, seed: int = 0) -> np.ndarray:
    """:func:`small_loss` of the workspace's embeddings and given labels, cached in ``WS/cache/small_loss.npy``
    (recomputed when a new scan set is published). Training takes ~1.5 min per 100k 256-d samples on 2 cores."""
    from .workspace import array_bytes, atomic_write_bytes, atomic_write_text

    arr_p, meta_p = ws.cache_dir / "small_loss.npy", ws.cache_dir / "small_loss.json"
    if small_loss_is_cached(ws, seed):
        return np.load(arr_p)
    stamp = _small_loss_stamp(ws, seed)
    scores = ws.scores()
    loss = small_loss(ws.embeddings(), scores["label_idx"].to_numpy(), len(ws.classes()), seed=seed)
    atomic_write_bytes(arr_p, array_bytes(loss.astype(np.float32)))
    atomic_write_text(meta_p, json.dumps(stamp))
    return np.load(arr_p)
