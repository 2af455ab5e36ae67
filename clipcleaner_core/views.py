"""Computations behind the review app's pages (no Streamlit here): review state, filters, confusion matrices,
similar class pairs, the hard/easy split of injected label flips, scan summaries. (The small-loss baseline lives in
:mod:`baselines`, the workspace's truth file in :mod:`evaluate`.)

Conventions: ``scores`` is the workspace's ``scores.parquet`` (N rows); "rows" are positions 0..N-1 in it, which
index ``embeddings.npy``, ``probs_*.npy`` and ``neighbors.npy`` too. Everything is vectorised (no Python loop over
samples), so it stays fast on 100k samples.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import registry
from .noise import most_similar_class
from .workspace import Settings

STATUSES = ("undecided", "accept", "relabel", "exclude", "unsure")
STATUS_TITLES = {"undecided": "not reviewed", "accept": "given label kept", "relabel": "relabelled",
                 "exclude": "excluded", "unsure": "unsure"}


# --- review state ---------------------------------------------------------------------------------------------
def review_state(sample_ids: pd.Series, decisions: pd.DataFrame) -> pd.DataFrame:
    """Decision state per sample, aligned with ``sample_ids`` (index 0..N-1).

    Columns: ``status`` (one of :data:`STATUSES`), ``new_label`` (relabel target or None), ``reviewer``.
    ``decisions`` is :meth:`ReviewStore.current` (sample_id, action, label, reviewer, updated_at).
    """
    ids = pd.Series(np.asarray(sample_ids, dtype=object))
    if len(decisions) == 0:
        return pd.DataFrame({"status": pd.Series(np.full(len(ids), "undecided", dtype=object), dtype=object),
                             "new_label": pd.Series([None] * len(ids), dtype=object),
                             "reviewer": pd.Series([None] * len(ids), dtype=object)})
    d = decisions.drop_duplicates("sample_id", keep="last").set_index("sample_id")
    status = ids.map(d["action"]).to_numpy(dtype=object)
    status = np.where(pd.notna(status) & np.isin(status, STATUSES[1:]), status, "undecided").astype(object)
    new_label = ids.map(d["label"]).to_numpy(dtype=object)
    new_label = np.where((status == "relabel") & pd.notna(new_label), new_label, None)
    who = ids.map(d["reviewer"]).to_numpy(dtype=object)
    who = np.where(pd.notna(who), who, None)
    return pd.DataFrame({"status": pd.Series(status, dtype=object), "new_label": pd.Series(new_label, dtype=object),
                         "reviewer": pd.Series(who, dtype=object)})


def decision_counts(state: pd.DataFrame, flagged: np.ndarray | None = None) -> dict[str, int]:
    """Samples per status (all of :data:`STATUSES`), optionally only among ``flagged`` rows."""
    s = state["status"] if flagged is None else state["status"][np.asarray(flagged, dtype=bool)]
    vc = s.value_counts()
    return {k: int(vc.get(k, 0)) for k in STATUSES}


# --- filters --------------------------------------------------------------------------------------------------
def criterion_options(scores: pd.DataFrame, settings: Settings) -> dict[str, str]:
    """Filter keys -> titles for "which criterion flagged it": each CLIPCleaner criterion that was used (key
    ``<criterion>_kept``, a sample matches when the criterion rejects its label), each detector and each issue
    type (``<prefix>_flag``), all from :mod:`registry`."""
    used = settings.detection.criteria_used
    out = {f"{c.prefix}_kept": f"criterion: {c.title}" for c in registry.CRITERIA
           if c.key in used and f"{c.prefix}_kept" in scores}
    out.update({d.flag_column: f"{d.kind}: {d.title}" for d in registry.DETECTORS + registry.ISSUES
                if d.flag_column in scores})
    return out


def criterion_mask(scores: pd.DataFrame, key: str) -> np.ndarray:
    """Rows matched by filter ``key`` of :func:`criterion_options` (bool (N,))."""
    col = scores[key]
    if key.endswith("_kept"):
        return ~col.fillna(True).to_numpy(dtype=bool)
    return col.fillna(False).to_numpy(dtype=bool)


def filter_rows(scores: pd.DataFrame, state: pd.DataFrame, *, flagged_only: bool = True,
                given: Sequence[str] | None = None, suggested: Sequence[str] | None = None,
                criterion: str | None = None, status: Sequence[str] | None = None,
                rows: np.ndarray | None = None) -> np.ndarray:
    """Row positions matching all filters, most suspicious first (``noise_score`` descending, ties by row).

    Empty / None filters match everything; ``rows`` restricts to a candidate set first.
    """
    n = len(scores)
    m = np.ones(n, dtype=bool)
    if rows is not None:
        keep = np.zeros(n, dtype=bool)
        keep[np.asarray(rows, dtype=np.int64)] = True
        m &= keep
    if flagged_only:
        m &= scores["flagged"].to_numpy(dtype=bool)
    if given:
        m &= scores["label"].isin(list(given)).to_numpy()
    if suggested:
        m &= scores["suggested_label"].isin(list(suggested)).to_numpy()
    if criterion:
        m &= criterion_mask(scores, criterion)
    if status:
        m &= state["status"].isin(list(status)).to_numpy()
    idx = np.flatnonzero(m)
    ns = scores["noise_score"].to_numpy(dtype=np.float64)[idx]
    order = np.lexsort((idx, -np.nan_to_num(ns, nan=-np.inf)))
    return idx[order]


def page_slice(n_items: int, page: int, page_size: int) -> tuple[int, int, int]:
    """(start, stop, number of pages) of 1-based ``page`` (clamped into range) for ``n_items``."""
    pages = max(1, -(-n_items // max(page_size, 1)))
    page = min(max(int(page), 1), pages)
    start = (page - 1) * page_size
    return start, min(start + page_size, n_items), pages


# --- per-sample detail ----------------------------------------------------------------------------------------
def topk_table(row: pd.Series) -> pd.DataFrame:
    """Top-3 classes of each probability source for one scores row: columns source, rank, label, probability."""
    recs = []
    for src in (s.key for s in registry.SOURCES):
        for j in (1, 2, 3):
            lab = row.get(f"{src}_top{j}_label")
            if lab is None or (isinstance(lab, float) and np.isnan(lab)):
                continue
            recs.append({"source": registry.source(src).title, "rank": j, "label": lab,
                         "probability": float(row[f"{src}_top{j}_prob"])})
    return pd.DataFrame(recs, columns=["source", "rank", "label", "probability"])


def neighbours(row: int, neighbors: np.ndarray, sims: np.ndarray | None, scores: pd.DataFrame,
               k: int = 8) -> pd.DataFrame:
    """The ``k`` nearest neighbours of ``row``: columns row, sample_id, path, abs_path, label, similarity."""
    if neighbors is None or row >= len(neighbors):
        return pd.DataFrame(columns=["row", "sample_id", "path", "abs_path", "label", "similarity"])
    nb = np.asarray(neighbors[row][:k], dtype=np.int64)
    out = scores.iloc[nb][["sample_id", "path", "abs_path", "label"]].reset_index(drop=True)
    out.insert(0, "row", nb)
    out["similarity"] = np.asarray(sims[row][:k], dtype=np.float64) if sims is not None else np.nan
    return out


# --- confusion ------------------------------------------------------------------------------------------------
def confusion_counts(given_idx: np.ndarray, probs: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) int64 counts: rows = given label, columns = the source's top class (argmax of ``probs`` (N, K))."""
    y = np.asarray(given_idx, dtype=np.int64)
    pred = np.asarray(probs).argmax(axis=1) if len(y) else np.zeros(0, dtype=np.int64)
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows of zeros stay zero)."""
    c = np.asarray(counts, dtype=np.float64)
    s = c.sum(axis=1, keepdims=True)
    return np.divide(c, s, out=np.zeros_like(c), where=s > 0)


def confused_pairs(counts: np.ndarray, similarity: np.ndarray | None, classes: Sequence[str],
                   top: int = 15) -> pd.DataFrame:
    """Off-diagonal cells with the most samples: given, suggested, samples, share of the given class, similarity
    of the two class prototypes (NaN without a similarity matrix). Sorted by samples, then similarity."""
    c = np.asarray(counts)
    k = len(classes)
    gi, si = np.nonzero(c * (1 - np.eye(k, dtype=c.dtype)))
    if len(gi) == 0:
        return pd.DataFrame(columns=["given", "suggested", "samples", "share_of_given", "similarity"])
    tot = c.sum(axis=1)
    sim = np.asarray(similarity)[gi, si] if similarity is not None else np.full(len(gi), np.nan)
    df = pd.DataFrame({"given": np.asarray(classes, dtype=object)[gi],
                       "suggested": np.asarray(classes, dtype=object)[si],
                       "samples": c[gi, si].astype(int), "share_of_given": c[gi, si] / np.maximum(tot[gi], 1),
                       "similarity": sim.astype(float), "given_idx": gi, "suggested_idx": si})
    return df.sort_values(["samples", "similarity"], ascending=[False, False]).head(top).reset_index(drop=True)


def similar_pairs(similarity: np.ndarray, classes: Sequence[str], top: int = 10) -> pd.DataFrame:
    """The ``top`` most similar unordered class pairs (a, b, similarity, a_idx, b_idx), most similar first."""
    s = np.asarray(similarity, dtype=np.float64)
    k = len(classes)
    a, b = np.triu_indices(k, 1)
    df = pd.DataFrame({"a": np.asarray(classes, dtype=object)[a], "b": np.asarray(classes, dtype=object)[b],
                       "similarity": s[a, b], "a_idx": a, "b_idx": b})
    return df.sort_values("similarity", ascending=False, kind="stable").head(top).reset_index(drop=True)


def class_examples(scores: pd.DataFrame, class_name: str, n: int = 6, by: str = "confident") -> np.ndarray:
    """Rows of ``n`` example images given label ``class_name``: the ``confident`` ones (lowest noise score,
    typical of the class) or the ``suspicious`` ones (highest)."""
    idx = np.flatnonzero(scores["label"].to_numpy() == class_name)
    ns = scores["noise_score"].to_numpy(dtype=np.float64)[idx]
    order = np.argsort(ns if by == "confident" else -ns, kind="stable")
    return idx[order[:n]]


# --- ground truth: hard vs easy flips ---------------------------------------------------------------------------
def flip_kinds(given_idx: np.ndarray, truth_idx: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """Per sample: "clean" (given == truth), "hard" (flipped to the most similar other class of its true class,
    by ``similarity`` (K, K)), "easy" (flipped elsewhere) or "unknown" (truth_idx < 0). Object array (N,)."""
    g = np.asarray(given_idx, dtype=np.int64)
    t = np.asarray(truth_idx, dtype=np.int64)
    nearest = most_similar_class(similarity)
    out = np.full(len(g), "easy", dtype=object)
    known = t >= 0
    out[~known] = "unknown"
    out[known & (g == t)] = "clean"
    hard = known & (g != t) & (g == nearest[np.clip(t, 0, len(nearest) - 1)])
    out[hard] = "hard"
    return out


def truth_indices(scores: pd.DataFrame, truth: pd.Series, classes: Sequence[str]) -> np.ndarray:
    """Truth labels (aligned with ``scores``, e.g. :func:`evaluate.truth_labels`) as class indices; -1 = unknown."""
    lookup = {c: i for i, c in enumerate(classes)}
    return truth.map(lookup).fillna(-1).to_numpy(dtype=np.int64)


def catch_table(kinds: np.ndarray, flags: dict[str, np.ndarray]) -> pd.DataFrame:
    """How many injected flips each detector caught, split into hard and easy.

    ``kinds`` from :func:`flip_kinds`; ``flags`` maps a detector title to its bool flag (N,). Columns: detector,
    flagged, precision, hard_caught, hard_total, hard_recall, easy_caught, easy_total, easy_recall, recall.
    """
    kinds = np.asarray(kinds, dtype=object)
    known = kinds != "unknown"
    hard, easy = kinds == "hard", kinds == "easy"
    noisy = hard | easy
    recs = []
    for name, f in flags.items():
        f = np.asarray(f, dtype=bool) & known
        nf = int(f.sum())
        recs.append({
            "detector": name, "flagged": nf,
            "precision": float((f & noisy).sum() / nf) if nf else float("nan"),
            "hard_caught": int((f & hard).sum()), "hard_total": int(hard.sum()),
            "hard_recall": float((f & hard).sum() / hard.sum()) if hard.any() else float("nan"),
            "easy_caught": int((f & easy).sum()), "easy_total": int(easy.sum()),
            "easy_recall": float((f & easy).sum() / easy.sum()) if easy.any() else float("nan"),
            "recall": float((f & noisy).sum() / noisy.sum()) if noisy.any() else float("nan"),
        })
    return pd.DataFrame(recs)


# --- summaries ------------------------------------------------------------------------------------------------------
def scan_summary(settings: Settings, scores: pd.DataFrame, dataset: pd.DataFrame | None) -> dict:
    """Headline numbers of a scanned workspace for the app's first page."""
    det = settings.detection
    n = int(len(scores))
    flagged = int(scores["flagged"].sum()) if n else 0
    problems = (dataset[dataset["status"] != "ok"][["path", "status", "reason"]].reset_index(drop=True)
                if dataset is not None and "status" in dataset else
                pd.DataFrame(columns=["path", "status", "reason"]))

    def title(c: str) -> str:
        return registry.criterion(c).title

    return {
        "samples": int(len(dataset)) if dataset is not None else n,
        "scored": n,
        "classes": len(settings.classes),
        "flagged": flagged,
        "flagged_share": flagged / n if n else 0.0,
        "method": settings.method,
        "flag_counts": dict(det.flag_counts),
        "criteria_used": [title(c) for c in det.criteria_used],
        "criteria_unavailable": [title(c) for c in det.criteria_unavailable],
        "criterion_rejects": {title(c): int(v) for c, v in det.criterion_rejects.items()},
        "zero_shot": settings.zero_shot.available,
        "zero_shot_reason": settings.zero_shot.reason,
        "encoder_kind": settings.encoder_kind or "?",
        "suggestion_source": det.suggestion_source,
        "problems": problems,
        "class_counts": scores["label"].value_counts().reindex(list(settings.classes), fill_value=0)
        if n else pd.Series(dtype=int),
    }


def headline_counts(scores: pd.DataFrame, dataset: pd.DataFrame | None) -> dict[str, int]:
    """The counts the Home page and the sidebar both show: ``samples`` (rows of the dataset, usable or not),
    ``scored``, ``unusable`` (samples - scored) and ``flagged`` (by the default method)."""
    scored = int(len(scores))
    samples = int(len(dataset)) if dataset is not None else scored
    flagged = int(scores["flagged"].sum()) if scored else 0
    return {"samples": samples, "scored": scored, "unusable": max(samples - scored, 0), "flagged": flagged}


def counts_line(c: dict[str, int]) -> str:
    """One line of :func:`headline_counts`: "1,797 samples · 540 flagged" (+ unusable ones when there are)."""
    extra = f" ({c['unusable']:,} unusable)" if c["unusable"] else ""
    return f"{c['samples']:,} samples{extra} · {c['flagged']:,} flagged"


def encoder_description(settings: Settings) -> str:
    """One honest line naming the encoder (the pixels encoder is *not* CLIP)."""
    enc = settings.encoder
    kind = settings.encoder_kind or enc.get("encoder", "?")
    if kind == "pixels":
        return (f"pixels encoder (raw {enc.get('size', '?')}x{enc.get('size', '?')} pixels, standardised) — "
                f"not CLIP: no zero-shot")
    if kind != "clip":  # never call an encoder CLIP unless it is one
        return f"{kind} encoder" + (f" ({enc['note']})" if enc.get("note") else "")
    parts = [str(enc.get("model", "?"))]
    if enc.get("pretrained"):
        parts.append(f"pretrained={enc['pretrained']}")
    if enc.get("checkpoint"):
        parts.append(f"checkpoint={Path(str(enc['checkpoint'])).name}")
    return "CLIP " + " ".join(parts)
