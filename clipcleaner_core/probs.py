"""Class probabilities of one source (zero-shot ``zs``, probe, k-NN, ensemble) for N samples over K classes,
stored so that a million samples over a thousand classes fit on disk and in the app.

Two forms, chosen by the number of classes:

- **dense** (K ≤ :data:`DENSE_MAX_CLASSES`): the (N, K) float16 matrix, 2·K bytes per sample — at most
  256 bytes per sample, 256 MB per source at 1M samples — and every class's probability is known;
- **top-t** (K above it): per sample the :data:`TOP` most probable classes, most probable first, plus the
  given label as one more column: ``idx`` (N, t + 1) class indices (int16 when K fits, else int32) and ``p``
  (N, t + 1) float16. 44 bytes per sample at t = 10 and any K: 44 MB per source at 1M, where dense float16
  would take 2 GB at K = 1,000 (the 8 GB float64 arrays that scoring held before are never formed).

Why 128: up to there the dense matrix is at most ~6× the top-t form and bounded (256 MB per source at 1M), and
K ≤ 128 covers the datasets whose full class distribution is worth showing (CIFAR-10/100, Clothing1M, most
domain sets); above it the tail beyond the top 10 carries little mass while dense grows linearly with K.

Ranking rule (both forms, so the app gives the same answers whichever is stored): probabilities are compared
*as stored* (float16) and ties go to the lower class index — exactly ``np.argmax`` on the dense float16 matrix.

Workspace arrays (written by ``pipeline._prob_arrays``, read by :func:`load_probs`): ``probs_<src>`` (dense) or
``probs_<src>_topk_idx`` + ``probs_<src>_topk_p`` (top-t).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: at most this many classes: the (N, K) matrix is stored dense (float16); above it, the top-t form
DENSE_MAX_CLASSES = 128
#: classes kept per sample in the top-t form (the given label is stored besides them)
TOP = 10


def _idx_dtype(n_classes: int) -> type:
    return np.int16 if n_classes <= np.iinfo(np.int16).max else np.int32


def _rank_keys(p16: np.ndarray) -> np.ndarray:
    """(b, K) int64 keys: larger = more probable as stored (float16), ties → the lower class index first."""
    k = p16.shape[1]
    bits = np.ascontiguousarray(p16, dtype=np.float16).view(np.uint16).astype(np.int64)  # monotone for p ≥ 0
    return bits * k + (k - 1 - np.arange(k, dtype=np.int64))


def top_classes(p16: np.ndarray, t: int) -> np.ndarray:
    """Indices (b, t) of the t most probable classes of each row of ``p16`` (b, K), most probable first, under
    the ranking rule of this module (float16 values, ties → lower index). O(K) per row plus O(t log t)."""
    b, k = p16.shape
    t = min(t, k)
    if t == 0:
        return np.zeros((b, 0), dtype=np.int64)
    key = _rank_keys(p16)
    cand = np.argpartition(-key, t - 1, axis=1)[:, :t] if t < k else np.broadcast_to(np.arange(k), (b, k)).copy()
    order = np.argsort(-np.take_along_axis(key, cand, axis=1), axis=1)  # keys are unique: no tie to break
    return np.take_along_axis(cand, order, axis=1)


@dataclass(frozen=True)
class Probs:
    """Probabilities of one source; see the module docstring for the two forms.

    Exactly one of ``dense`` ((N, K) float16) or ``idx`` / ``p`` ((N, t + 1); column t is the given label) is set.
    """

    n_classes: int
    dense: np.ndarray | None = None
    idx: np.ndarray | None = None
    p: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.dense is None) == (self.idx is None or self.p is None):
            raise ValueError("Probs needs either a dense (N, K) matrix or top-t idx and p arrays")
        if self.dense is not None and self.dense.ndim == 2 and self.dense.shape[1] != self.n_classes:
            raise ValueError(f"dense probabilities have {self.dense.shape[1]} columns, expected {self.n_classes}")
        if self.idx is not None and (self.idx.shape != self.p.shape or self.idx.ndim != 2 or self.idx.shape[1] < 2):
            raise ValueError(f"top-t arrays disagree: idx {self.idx.shape}, p {self.p.shape}")

    # ------------------------------------------------------------------------------------------ facts
    @property
    def is_dense(self) -> bool:
        return self.dense is not None

    @property
    def n(self) -> int:
        return len(self.dense) if self.is_dense else len(self.idx)

    @property
    def top(self) -> int:
        """How many classes per sample :meth:`topk` can return: K when dense, else t."""
        return self.n_classes if self.is_dense else self.idx.shape[1] - 1

    def __len__(self) -> int:
        return self.n

    # ---------------------------------------------------------------------------------------- queries
    def argmax(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """(N,) int64 most probable class of every sample (or of ``rows``)."""
        if not self.is_dense:
            return np.asarray(self.idx[rows if rows is not None else slice(None), 0], dtype=np.int64)
        d = self.dense if rows is None else self.dense[rows]
        out = np.empty(len(d), dtype=np.int64)
        for s in range(0, len(d), 65536):  # blocks: a memmap is never read whole at once
            out[s:s + 65536] = np.argmax(np.asarray(d[s:s + 65536]), axis=1)
        return out

    def confusion(self, y: np.ndarray) -> np.ndarray:
        """(K, K) int64 counts: rows = the given label ``y`` (N,), columns = this source's top class."""
        k = self.n_classes
        return np.bincount(np.asarray(y, dtype=np.int64) * k + self.argmax(), minlength=k * k).reshape(k, k)

    def topk(self, t: int, rows: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices (N, t) int64 and probabilities (N, t) float32 of the t most probable classes, most probable
        first. ``t`` may not exceed :attr:`top`."""
        if t > self.top:
            raise ValueError(f"only the top {self.top} classes are stored; asked for {t}")
        sel = rows if rows is not None else slice(None)
        if not self.is_dense:
            return (np.asarray(self.idx[sel, :t], dtype=np.int64), np.asarray(self.p[sel, :t], dtype=np.float32))
        d = self.dense[sel]
        idx = np.empty((len(d), t), dtype=np.int64)
        for s in range(0, len(d), 65536):
            idx[s:s + 65536] = top_classes(np.asarray(d[s:s + 65536]), t)
        return idx, np.take_along_axis(np.asarray(d), idx, axis=1).astype(np.float32)

    def given(self, y: np.ndarray) -> np.ndarray:
        """(N,) float32 p(y_i | x_i). Top-t form: known for the stored given label and the top-t classes; NaN for
        any other class (its probability is below the t-th and was not stored)."""
        y = np.asarray(y, dtype=np.int64)
        if len(y) != self.n:
            raise ValueError(f"{len(y)} labels for {self.n} samples")
        rows = np.arange(len(y))
        if self.is_dense:
            return np.asarray(self.dense[rows, y], dtype=np.float32)
        idx, p = np.asarray(self.idx), np.asarray(self.p, dtype=np.float32)
        hit = idx == y[:, None]
        col = np.where(hit[:, -1], idx.shape[1] - 1, np.argmax(hit, axis=1))  # the given column first
        out = p[rows, col]
        out[~hit.any(axis=1)] = np.nan
        return out

    def entropy(self) -> np.ndarray:
        """(N,) float64 entropy (nats) of each sample's distribution, every probability clipped to [1e-12, 1] and
        the row renormalised (as for a dense row). Top-t form: the stored classes (top t and the given label)
        as stored; the mass they leave is taken as spread evenly over the classes not stored (the most entropy it
        can have, so a flat distribution is never mistaken for a peaked one). When every class is stored this is
        the dense formula exactly."""
        k = self.n_classes
        out = np.empty(self.n, dtype=np.float64)
        for s in range(0, self.n, 65536):
            if self.is_dense:
                q = np.clip(np.asarray(self.dense[s:s + 65536], dtype=np.float64), 1e-12, 1.0)
                z = q.sum(axis=1, keepdims=True)
                out[s:s + 65536] = -(q / z * np.log(q / z)).sum(axis=1)
                continue
            idx = np.asarray(self.idx[s:s + 65536])
            raw = np.asarray(self.p[s:s + 65536], dtype=np.float64)
            stored = np.ones(raw.shape, dtype=bool)
            stored[:, -1] = ~(idx[:, -1:] == idx[:, :-1]).any(axis=1)  # the given label among the top t: once
            q = np.where(stored, np.clip(raw, 1e-12, 1.0), 0.0)
            m = k - stored.sum(axis=1)  # classes not stored
            rest = np.clip(1.0 - np.where(stored, raw, 0.0).sum(axis=1), 0.0, 1.0)
            u = np.clip(rest / np.maximum(m, 1), 1e-12, 1.0)  # each unstored class's share of the rest
            z = q.sum(axis=1) + m * u
            qz = q / z[:, None]
            h = -np.where(stored, qz * np.log(np.where(stored, qz, 1.0)), 0.0).sum(axis=1)
            uz = u / z
            out[s:s + 65536] = h - m * uz * np.log(uz)
        return out

    def dense_view(self) -> np.ndarray:
        """The (N, K) float16 matrix; only for the dense form (a top-t source never held it)."""
        if not self.is_dense:
            raise ValueError(f"probabilities over {self.n_classes} classes are stored as the top {self.top} per "
                             "sample; there is no dense matrix")
        return self.dense

    def arrays(self, src: str) -> dict[str, np.ndarray]:
        """The workspace arrays of this source, by name (see the module docstring)."""
        if self.is_dense:
            return {f"probs_{src}": np.asarray(self.dense, dtype=np.float16)}
        return {f"probs_{src}_topk_idx": np.asarray(self.idx), f"probs_{src}_topk_p": np.asarray(self.p)}


def array_names(src: str) -> tuple[str, ...]:
    """Every workspace array name a source may be stored under (dense and top-t)."""
    return f"probs_{src}", f"probs_{src}_topk_idx", f"probs_{src}_topk_p"


class ProbsBuilder:
    """Collects one source's probabilities row block by row block into a :class:`Probs`, never holding (N, K)
    unless the dense form is stored. Keeps beside it, from the unrounded values (float64): ``given`` (N,)
    p(given label), ``max`` (N,) the top probability, and the top ``table_top`` classes ``top_idx`` (N, t')
    under the ranking rule with their probabilities ``top_p`` (what the detectors and the score table need).
    ``dense_max_classes`` None: :data:`DENSE_MAX_CLASSES` at the time of the call."""

    def __init__(self, y: np.ndarray, n_classes: int, dense: bool | None = None, top: int = TOP,
                 dense_max_classes: int | None = None, table_top: int = 3):
        self.y = np.asarray(y, dtype=np.int64)
        n = len(self.y)
        self.n_classes = int(n_classes)
        limit = DENSE_MAX_CLASSES if dense_max_classes is None else int(dense_max_classes)
        self.dense_form = (self.n_classes <= limit) if dense is None else bool(dense)
        self.t = min(int(top), self.n_classes)
        self.tt = min(int(table_top), self.t)
        self.given = np.zeros(n)
        self.max = np.zeros(n)
        self.top_idx = np.zeros((n, self.tt), dtype=np.int64)
        self.top_p = np.zeros((n, self.tt))
        if self.dense_form:
            self.dense = np.zeros((n, self.n_classes), dtype=np.float16)
        else:
            self.idx = np.zeros((n, self.t + 1), dtype=_idx_dtype(self.n_classes))
            self.p = np.zeros((n, self.t + 1), dtype=np.float16)

    def add(self, start: int, block: np.ndarray) -> None:
        """Rows ``start : start + len(block)`` of the (N, K) probabilities (any float dtype)."""
        block = np.asarray(block)
        stop = start + len(block)
        y = self.y[start:stop]
        rows = np.arange(len(block))
        self.given[start:stop] = block[rows, y]
        self.max[start:stop] = block.max(axis=1)
        p16 = block.astype(np.float16)
        top = top_classes(p16, self.t if not self.dense_form else self.tt)
        self.top_idx[start:stop] = top[:, :self.tt]
        self.top_p[start:stop] = np.take_along_axis(block, top[:, :self.tt], axis=1)
        if self.dense_form:
            self.dense[start:stop] = p16
            return
        self.idx[start:stop, :self.t] = top
        self.p[start:stop, :self.t] = np.take_along_axis(p16, top, axis=1)
        self.idx[start:stop, self.t] = y
        self.p[start:stop, self.t] = p16[rows, y]

    def build(self) -> Probs:
        if self.dense_form:
            return Probs(self.n_classes, dense=self.dense)
        return Probs(self.n_classes, idx=self.idx, p=self.p)


def collect(y: np.ndarray, n_classes: int, blocks: dict, ensemble: tuple[str, ...] = (), keep: str | None = None,
            rows: int = 65536, dense_max_classes: int | None = None,
            extra: Callable[[int, int], np.ndarray] | None = None
            ) -> tuple[dict[str, ProbsBuilder], np.ndarray | None]:
    """One pass over row blocks of every source: ``blocks[src](start, stop)`` → (b, K) probabilities.

    Returns a :class:`ProbsBuilder` per source plus ``"ens"``, the mean of the ``ensemble`` sources present
    (when any), and a dense (N, K) float32 matrix of source ``keep`` — or of ``extra(start, stop)``, a source
    kept dense but not stored (the out-of-fold probe cleanlab needs when the stored probe is in-sample) — else
    None. Memory: the stored forms plus that one matrix, and ``rows`` · K per source at a time.
    """
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    out = {src: ProbsBuilder(y, n_classes, dense_max_classes=dense_max_classes) for src in blocks}
    ens = [s for s in ensemble if s in blocks]
    if ens:
        out["ens"] = ProbsBuilder(y, n_classes, dense_max_classes=dense_max_classes)
    kept = np.empty((n, n_classes), dtype=np.float32) if (keep or extra) else None
    for s in range(0, n, rows):
        e = min(n, s + rows)
        got = {src: np.asarray(fn(s, e)) for src, fn in blocks.items()}
        for src, b in got.items():
            out[src].add(s, b)
        if ens:
            acc = np.zeros((e - s, n_classes))
            for src in ens:
                acc += got[src]
            out["ens"].add(s, acc / len(ens))
        if kept is not None:
            kept[s:e] = got[keep] if keep else extra(s, e)
    return out, kept


def from_dense(p: np.ndarray, y: np.ndarray, dense: bool | None = None, top: int = TOP,
               dense_max_classes: int = DENSE_MAX_CLASSES) -> Probs:
    """A :class:`Probs` of a dense (N, K) matrix ``p`` with given labels ``y`` (the form chosen by K, or forced
    with ``dense``)."""
    p = np.asarray(p)
    b = ProbsBuilder(y, p.shape[1], dense=dense, top=top, dense_max_classes=dense_max_classes)
    for s in range(0, len(p), 65536):
        b.add(s, p[s:s + 65536])
    return b.build()


def load_probs(ws, src: str) -> Probs | None:
    """The probabilities of source ``src`` (``zs``, ``probe``, ``knn``, ``ens``) stored in workspace ``ws``, or
    None when the workspace has none for it (memory-mapped, read-only)."""
    dense = ws.array(f"probs_{src}")
    if dense is not None:
        return Probs(int(dense.shape[1]), dense=dense)
    idx, p = ws.array(f"probs_{src}_topk_idx"), ws.array(f"probs_{src}_topk_p")
    if idx is None or p is None:
        return None
    return Probs(len(ws.classes()), idx=idx, p=p)
