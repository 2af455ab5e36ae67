"""2-D layouts of the embeddings for the embedding map: PCA (instant) and UMAP (cached, computed in background).

Both are cached in the workspace: ``WS/cache/layout_pca.npy`` and ``WS/cache/layout_umap.npy`` (float32 (N, 2),
rows aligned with ``scores.parquet``), each with a ``.json`` sidecar recording the embedding key and row count it
was computed from, so a re-scan with other embeddings invalidates them. UMAP uses umap-learn with a fixed
``random_state`` (deterministic, single-threaded); its numba JIT costs ~40 s in a fresh process, so the app starts
it with :func:`start_umap` (a background thread with epoch progress) and shows PCA meanwhile.

Large workspaces: the scatter shows at most :data:`MAX_POINTS` points, a fixed-seed random sample that always
includes every flagged sample (see :func:`plot_sample`).
"""
from __future__ import annotations

import json
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .workspace import Workspace, array_bytes, atomic_write_bytes, atomic_write_text

MAX_POINTS = 50_000
"""Most points drawn in the embedding map; beyond it a documented sample is shown (flagged always included)."""
UMAP_PARAMS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "random_state": 42, "n_jobs": 1}
PCA_FIT_ROWS = 200_000
"""PCA is fitted on at most this many rows (fixed-seed sample) and applied to all."""

Progress = Callable[[str, int, int], None]


def _cache_file(ws: Workspace, kind: str) -> tuple:
    return ws.cache_dir / f"layout_{kind}.npy", ws.cache_dir / f"layout_{kind}.json"


def _stamp(ws: Workspace) -> dict:
    """What a layout was computed from: the embedding run (content + encoder key) and its row count."""
    m = ws.manifest()
    return {"embedding_key": m.settings.embedding_key, "rows": m.artifacts["embeddings"].rows}


def cached_layout(ws: Workspace, kind: str) -> np.ndarray | None:
    """The cached (N, 2) layout ``kind`` ("pca" | "umap") when it matches the current embeddings, else None."""
    arr_p, meta_p = _cache_file(ws, kind)
    if not arr_p.is_file() or not meta_p.is_file():
        return None
    try:
        meta = json.loads(meta_p.read_text(encoding="utf-8"))
        cur = _stamp(ws)
        if any(meta.get(k) != cur[k] for k in cur):
            return None
        arr = np.load(arr_p)
    except (OSError, ValueError):
        return None
    return arr if arr.shape == (cur["rows"], 2) else None


def _save(ws: Workspace, kind: str, xy: np.ndarray, stamp: dict, extra: dict | None = None) -> None:
    arr_p, meta_p = _cache_file(ws, kind)
    atomic_write_bytes(arr_p, array_bytes(xy.astype(np.float32)))
    atomic_write_text(meta_p, json.dumps({**stamp, **(extra or {}), "kind": kind}, indent=1))


def _normalise(xy: np.ndarray) -> np.ndarray:
    """Centre and scale to unit standard deviation (so plots of PCA and UMAP have similar ranges)."""
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) == 0:
        return xy.reshape(0, 2).astype(np.float32)
    xy = xy - xy.mean(axis=0)
    sd = xy.std()
    return (xy / (sd if sd > 0 else 1.0)).astype(np.float32)


def pca_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """First two principal components of ``features`` (N, D) as float32 (N, 2); N < 2 gives zeros."""
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    n = len(x)
    if n < 3 or x.shape[1] < 2:
        return np.zeros((n, 2), dtype=np.float32)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, PCA_FIT_ROWS, replace=False)) if n > PCA_FIT_ROWS else slice(None)
    pca = PCA(n_components=2, random_state=seed).fit(x[fit_rows])
    out = np.empty((n, 2), dtype=np.float32)
    for s in range(0, n, 50_000):
        out[s:s + 50_000] = pca.transform(x[s:s + 50_000])
    return _normalise(out)


class _TqdmSink:
    """File-like object that tqdm writes to; parses ``n/total`` and forwards it to a progress callback."""

    _pat = re.compile(r"(\d+)/(\d+)")

    def __init__(self, progress: Progress):
        self.progress = progress

    def write(self, s: str) -> int:
        m = None
        for m in self._pat.finditer(s):  # noqa: B007 - the last match is the one wanted
            pass
        if m:
            self.progress("umap-epochs", int(m.group(1)), int(m.group(2)))
        return len(s)

    def flush(self) -> None:
        pass


def umap_2d(features: np.ndarray, progress: Progress | None = None, **params) -> np.ndarray:
    """UMAP (umap-learn, cosine, fixed random_state) of ``features`` (N, D) to float32 (N, 2).

    ``progress(stage, done, total)`` receives ``("umap-graph", 0, 1)`` before the neighbour graph and
    ``("umap-epochs", epoch, n_epochs)`` during the layout optimisation. Tiny inputs (N < 4) fall back to PCA.
    """
    x = np.asarray(features, dtype=np.float32)
    if len(x) < 4:
        return pca_2d(x)
    import umap

    p = {**UMAP_PARAMS, **params}
    p["n_neighbors"] = int(min(p["n_neighbors"], len(x) - 1))
    kw: dict = {}
    if progress is not None:
        progress("umap-graph", 0, 1)
        kw["tqdm_kwds"] = {"disable": False, "file": _TqdmSink(progress), "bar_format": "{n}/{total}",
                           "mininterval": 0.25, "ascii": True}
    reducer = umap.UMAP(n_components=2, **p, **kw)
    xy = reducer.fit_transform(x)
    return _normalise(xy)


def layout(ws: Workspace, kind: str = "pca", progress: Progress | None = None) -> np.ndarray:
    """The (N, 2) layout ``kind`` of the workspace's embeddings, from the cache or computed (and cached) now."""
    if kind not in ("pca", "umap"):
        raise ValueError("layout kind must be 'pca' or 'umap'")
    hit = cached_layout(ws, kind)
    if hit is not None:
        return hit
    stamp = _stamp(ws)
    feats = ws.embeddings()
    t0 = time.perf_counter()
    xy = pca_2d(feats) if kind == "pca" else umap_2d(feats, progress)
    extra = {"seconds": round(time.perf_counter() - t0, 2)}
    if kind == "umap":
        extra["params"] = UMAP_PARAMS
    _save(ws, kind, xy, stamp, extra)
    return xy


# --- background UMAP -------------------------------------------------------------------------------------------
@dataclass
class LayoutJob:
    """State of one background layout computation (read by the app to show progress)."""

    workspace: str
    kind: str
    state: str = "running"  # running | done | failed
    stage: str = "starting"
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def fraction(self) -> float:
        """Rough overall progress in [0, 1]: graph building counts as the first 30 %."""
        if self.state == "done":
            return 1.0
        if self.stage == "umap-epochs" and self.total:
            return 0.3 + 0.7 * self.done / self.total
        return 0.05 if self.stage == "starting" else 0.15

    @property
    def message(self) -> str:
        el = (self.finished or time.time()) - self.started
        if self.state == "failed":
            return f"UMAP failed: {self.error}"
        if self.state == "done":
            return f"UMAP ready ({el:.0f} s)"
        if self.stage == "umap-epochs":
            return f"UMAP: optimising the layout, epoch {self.done}/{self.total} ({el:.0f} s)"
        if self.stage == "umap-graph":
            return f"UMAP: building the neighbour graph (first run also compiles numba code, ~40 s; {el:.0f} s)"
        return f"UMAP: loading umap-learn ({el:.0f} s)"


_JOBS: dict[tuple[str, str], LayoutJob] = {}
_JOBS_LOCK = threading.Lock()


def job_status(ws: Workspace, kind: str = "umap") -> LayoutJob | None:
    """The background job of ``ws`` (running or finished in this process), if any."""
    with _JOBS_LOCK:
        return _JOBS.get((str(ws.path), kind))


def start_umap(ws: Workspace) -> LayoutJob:
    """Start (or return the already running) background UMAP computation of ``ws``; result cached on disk."""
    key = (str(ws.path), "umap")
    with _JOBS_LOCK:
        job = _JOBS.get(key)
        if job is not None and (job.state == "running" or (job.state == "done" and cached_layout(ws, "umap")
                                                            is not None)):
            return job
        job = LayoutJob(workspace=str(ws.path), kind="umap")
        _JOBS[key] = job

    def progress(stage: str, done: int, total: int) -> None:
        job.stage, job.done, job.total = stage, done, total

    def run() -> None:
        try:
            layout(ws, "umap", progress)
            job.state = "done"
        except Exception as e:  # noqa: BLE001 - reported to the user by the app
            job.error = f"{type(e).__name__}: {e}"
            job.state = "failed"
            traceback.print_exc()
        finally:
            job.finished = time.time()

    job.thread = threading.Thread(target=run, name=f"umap-{ws.path.name}", daemon=True)
    job.thread.start()
    return job


def plot_sample(flagged: np.ndarray, max_points: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Row indices to draw: all rows when N <= ``max_points``; else every flagged row plus a fixed-seed uniform
    sample of the others up to ``max_points`` in total (all flagged rows even when they alone exceed it). Sorted."""
    flagged = np.asarray(flagged, dtype=bool)
    n = len(flagged)
    if n <= max_points:
        return np.arange(n)
    f_idx = np.flatnonzero(flagged)
    rest = np.flatnonzero(~flagged)
    room = max(max_points - len(f_idx), 0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(rest, size=min(room, len(rest)), replace=False) if room else np.array([], dtype=np.int64)
    return np.sort(np.concatenate([f_idx, pick]).astype(np.int64))
