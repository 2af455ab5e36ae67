"""Run every detector on one set of embeddings and build the per-sample score table.

Probability sources (each (N, K)): zero-shot ``zs`` (CLIP text tower only), linear probe ``probe`` (out-of-fold
by default) and neighbours ``knn``. Detectors, each giving a flag (N,) bool and a score (N,) (higher = more
likely mislabelled):

- ``ensemble`` (the default): p_ens = mean of the available sources; flagged when another class beats the given
  label by more than ``margin`` (max_k p_ens(k) − p_ens(given) > margin, default 0.1); score 1 − p_ens(given).
  Measured best on the demo benchmarks (README, "Evaluation"); the margin was chosen on demo seeds 0–2 and
  checked on seeds 3–6.
- ``clipcleaner``: exactly METHOD.md (four criteria, per-class GMM, AND, fallback).
- ``cleanlab``: confident learning on the out-of-fold probe probabilities.
- ``knn``: majority label of the k nearest neighbours ≠ given label.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import registry
from .baselines import cleanlab_flags, knn_flags, knn_probs_block, nearest_neighbors
from .config import METHODS, ScoreConfig
from .probs import Probs, collect
from .scoring import ZeroShot, block_rows, clipcleaner_select, fit_probe, resolve_device

CRITERIA = tuple(c.key for c in registry.CRITERIA)


@dataclass
class Detection:
    """Per-sample table plus the arrays the app needs (probabilities, neighbours, class similarity)."""

    table: pd.DataFrame
    probs: dict[str, Probs]
    neighbors: np.ndarray
    neighbor_sims: np.ndarray
    criteria: list[str]
    info: dict = field(default_factory=dict)


def detect(features: np.ndarray, y: np.ndarray, classes: list[str], config: ScoreConfig,
           text_features: np.ndarray | None = None, text_class: np.ndarray | None = None,
           progress: Callable[[str, int, int], None] | None = None,
           dense_max_classes: int | None = None) -> Detection:
    """All sources and detectors on ``features`` (N, D unit-norm) with given labels ``y`` (N,) in [0, K).

    ``text_features`` (M, D) / ``text_class`` (M,) enable the zero-shot source; without them the zero-shot
    criteria are reported as unavailable (NaN scores) and only the probe criteria are used.
    ``progress("score", done, total)`` is called after every step (each probe fold, neighbours, selection, …).
    ``dense_max_classes``: store probabilities dense up to this many classes (default
    :data:`probs.DENSE_MAX_CLASSES`), else as top-t (``Detection.probs`` are :class:`probs.Probs`).
    """
    config.validate()
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    n, k = len(y), len(classes)
    names = np.asarray(classes, dtype=object)
    n_folds = config.effective_folds(n)
    folds = 1 if config.probe == "faithful" else n_folds
    total = folds + (n_folds if config.probe == "faithful" else 0) + 5
    step = [0]

    def tick(n_steps: int = 1) -> None:
        step[0] += n_steps
        if progress:
            progress("score", min(step[0], total), total)

    # every source gives (b, K) row blocks (torch on config.device); no (N, K) matrix is formed except the one
    # cleanlab needs (float32) and the stored dense form when K is small (probs.py)
    dev = resolve_device(config.device)
    blocks: dict = {}
    if text_features is not None and len(text_features):
        zs = ZeroShot(text_features, np.asarray(text_class), k, config.temperature, dev)
        blocks["zs"] = lambda s, e: zs.block(x[s:e])
    tick()
    probe = fit_probe(x, y, k, mode=config.probe, n_folds=n_folds, C=config.C, seed=config.seed, device=dev,
                      on_fold=lambda i, m: tick())
    blocks["probe"] = lambda s, e: probe.block(s, x[s:e])
    nn_idx, nn_sim = nearest_neighbors(x, effective_k(y, config.knn_k), seed=config.seed, device=dev)
    blocks["knn"] = lambda s, e: knn_probs_block(nn_idx[s:e], y, k)
    tick()
    p_cv = None if config.probe == "cv" else fit_probe(x, y, k, "cv", n_folds, config.C, seed=config.seed,
                                                       device=dev, on_fold=lambda i, m: tick())
    built, cv_dense = collect(y, k, blocks, ensemble=("zs", "probe", "knn"), keep="probe" if p_cv is None else None,
                              extra=None if p_cv is None else (lambda s, e: p_cv.block(s, x[s:e])),
                              rows=block_rows(k), dense_max_classes=dense_max_classes)
    probs = {src: b.build() for src, b in built.items()}
    gm = {src: (b.given, b.max) for src, b in built.items()}

    sel = clipcleaner_select(y, k, gm["probe"], gm.get("zs"), config.theta_gmm, config.theta_cons, config.seed)
    tick()
    cl_flag, cl_score = cleanlab_flags(y, cv_dense, seed=config.seed, overwrite=True)
    del cv_dense
    tick()
    kn_flag, kn_score = knn_flags(nn_idx, y, k)
    ens_given = built["ens"].given
    ens_flag = (built["ens"].max - ens_given) > config.margin
    ens_score = 1.0 - ens_given

    flags = {"ensemble": ens_flag, "clipcleaner": ~sel.clean, "cleanlab": cl_flag, "knn": kn_flag}
    scores = {"ensemble": ens_score, "clipcleaner": sel.noise_score, "cleanlab": cl_score, "knn": kn_score}

    t = pd.DataFrame({"label_idx": y, "label": names[y] if n else np.array([], dtype=object)})
    suggest_src = "zs" if "zs" in probs else "ens"
    t["suggested_label"] = names[built[suggest_src].top_idx[:, 0]] if n else []
    t["suggested_prob"] = built[suggest_src].top_p[:, 0] if n else []
    t["suggested_source"] = registry.source(suggest_src).title
    t["noise_score"] = scores[config.method]
    t["flagged"] = flags[config.method]
    t["method"] = config.method
    for m in METHODS:
        d = registry.detector(m)
        t[d.flag_column] = flags[m]
        t[d.score_column] = scores[m]
    t["cc_fallback"] = sel.fallback
    for c in CRITERIA:
        if c in sel.criteria:
            t[f"{c}_score"] = sel.scores[c]
            t[f"{c}_kept"] = sel.kept[c]
            if c.endswith("_loss"):
                t[f"{c}_posterior"] = sel.posterior[c]
        else:
            t[f"{c}_score"] = np.nan
            t[f"{c}_kept"] = pd.array([pd.NA] * n, dtype="boolean")
            if c.endswith("_loss"):
                t[f"{c}_posterior"] = np.nan
    for src in (e.key for e in registry.SOURCES):
        if src in probs:
            t[f"p_given_{src}"] = built[src].given
            for j in range(built[src].top_idx.shape[1]):
                t[f"{src}_top{j + 1}_label"] = names[built[src].top_idx[:, j]]
                t[f"{src}_top{j + 1}_prob"] = built[src].top_p[:, j]
        else:
            t[f"p_given_{src}"] = np.nan
    t["knn_agreement"] = 1.0 - kn_score
    t["reasons"] = explain(t, sel.criteria)
    tick(total)
    info = {
        "criteria_used": sel.criteria,
        "criteria_unavailable": [c for c in CRITERIA if c not in sel.criteria],
        "zero_shot": "zs" in probs,
        "sources": list(probs),
        "suggestion_source": registry.source(suggest_src).title,
        "flag_counts": {m: int(f.sum()) for m, f in flags.items()},
        "criterion_rejects": {c: int((~sel.kept[c]).sum()) for c in sel.criteria},
        "fallback_added": int(sel.fallback.sum()),
        "knn_k": int(nn_idx.shape[1]),
        "probe_folds": int(n_folds),
    }
    return Detection(table=t, probs=probs, neighbors=nn_idx, neighbor_sims=nn_sim, criteria=sel.criteria, info=info)


def effective_k(y: np.ndarray, k: int) -> int:
    """Neighbours to use: ``k``, but fewer than a typical class holds (median class size − 1, at least 1), so that
    on a tiny dataset a sample's own class can still be the majority of its neighbours."""
    counts = np.bincount(np.asarray(y, dtype=np.int64))
    present = counts[counts > 0]
    if len(present) == 0:
        return int(k)
    return int(max(1, min(k, int(np.median(present)) - 1)))


def explain(t: pd.DataFrame, criteria: list[str]) -> list[str]:
    """Reason codes per sample (:mod:`registry` keys, ``;``-separated, "" when nothing flags it): each used
    criterion that rejects the given label, then each detector that flags the sample, then each issue type
    (:data:`registry.ISSUES`) whose flag column ``t`` already has (call it again once they are added)."""
    parts = [np.where(~t[f"{c}_kept"].to_numpy(dtype=bool), c, "") for c in criteria]
    parts += [np.where(t[d.flag_column].to_numpy(dtype=bool), d.key, "") for d in registry.DETECTORS]
    parts += [np.where(t[e.flag_column].fillna(False).to_numpy(dtype=bool), e.key, "") for e in registry.ISSUES
              if e.flag_column in t]
    cols = np.stack(parts, axis=1) if parts else np.zeros((len(t), 0), dtype=object)
    return [registry.join_reasons([p for p in row if p]) for row in cols]
