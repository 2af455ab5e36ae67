"""Exact and near duplicates: groups, label conflicts inside a group, and leakage across a ``split`` column.

- **exact**: the same content hash of the decoded pixels (:func:`quality.image_stats`): identical images whatever
  their file name or format;
- **near**: a pair whose cosine similarity is above a threshold calibrated on the dataset, in each similarity
  space given (the encoder's embeddings, and the pixel-level thumbnail descriptors of :func:`quality.descriptor`).
  Calibration (:func:`calibrate`): how close an image's nearest neighbour usually is differs by encoder and by
  dataset, so the threshold is the point where the nearest-neighbour similarity becomes an outlier for this
  dataset: with u = −log(1 − s) of each sample's nearest-neighbour similarity s, threshold u* = median(u) +
  :data:`DUP_Z` · 1.4826 · MAD(u), never below :data:`MIN_SIMILARITY`. Copies are far out in u (a copy at cosine
  0.9993 is u = 7.3 while the digits' median is 3.6 with a MAD of 0.5).

Pairs become groups by connected components. ``dup_group`` numbers them from 0 in the order of their first row
(−1: no duplicate); ``dup_conflict``: the group's given labels disagree; ``dup_leak``: the group holds more than
one value of the table's ``split`` column.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .baselines import nearest_neighbors

DUP_Z = 4.0
MIN_SIMILARITY = 0.9
DUP_K = 5
"""Neighbours examined per sample for near duplicates (a group larger than this is still joined through its
members' own neighbours)."""


@dataclass
class Duplicates:
    """Per-row duplicate facts (all (N,)) and what was calibrated."""

    group: np.ndarray  # int64, -1 none
    kind: np.ndarray  # object: "" | "exact" | "near"
    score: np.ndarray  # float: highest similarity to another member (1 for exact), 0 none
    conflict: np.ndarray  # bool
    leak: np.ndarray  # bool
    thresholds: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def calibrate(nn_sim: np.ndarray, exclude: np.ndarray | None = None, z: float = DUP_Z) -> float:
    """The near-duplicate cosine threshold for a space whose rows have nearest-neighbour similarity ``nn_sim``
    (N,); rows in ``exclude`` (e.g. exact copies) are left out of the reference. See the module doc."""
    s = np.asarray(nn_sim, dtype=np.float64)
    if exclude is not None:
        s = s[~np.asarray(exclude, dtype=bool)]
    s = s[np.isfinite(s)]
    if len(s) < 3:
        return 1.0
    u = -np.log(np.clip(1.0 - s, 1e-9, 1.0))
    med = np.median(u)
    mad = 1.4826 * np.median(np.abs(u - med))
    thr = 1.0 - np.exp(-(med + z * max(mad, 1e-3)))
    return float(max(thr, MIN_SIMILARITY))


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def find_duplicates(labels: Sequence, *, hashes: Sequence[str] | None = None,
                    spaces: Mapping[str, np.ndarray] | None = None,
                    neighbors: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                    splits: Sequence | None = None, k: int = DUP_K, seed: int = 0) -> Duplicates:
    """Duplicate groups among N samples with given ``labels`` (N,).

    ``hashes`` (N,): content hashes ("" = unknown); ``spaces``: name → (N, D) unit-norm vectors whose nearest
    neighbours are computed here (:func:`baselines.nearest_neighbors`); ``neighbors``: name → (indices (N, k),
    similarities (N, k)) already computed (e.g. the scoring stage's k-NN of the embeddings); ``splits`` (N,):
    the table's split per sample (empty / None = unknown).
    """
    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    ia: list[np.ndarray] = []
    ib: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    exact = np.zeros(n, dtype=bool)
    if hashes is not None and n:
        h = pd.Series(np.asarray(hashes, dtype=object))
        known = h.ne("") & h.notna()
        codes = pd.factorize(h.where(known))[0]
        first = pd.Series(np.arange(n)).groupby(codes).transform("min").to_numpy()
        pair = known.to_numpy() & (first != np.arange(n)) & (codes >= 0)
        ia.append(np.flatnonzero(pair))
        ib.append(first[pair])
        sims.append(np.ones(int(pair.sum())))
        exact[ia[-1]] = True
        exact[ib[-1]] = True
    all_nn = dict(neighbors or {})
    for name, x in (spaces or {}).items():
        x = np.asarray(x, dtype=np.float32)
        if n > 1 and len(x) == n:
            all_nn[name] = nearest_neighbors(x, min(k, n - 1), seed=seed)
    thresholds: dict[str, float] = {}
    for name, (idx, sim) in all_nn.items():
        idx, sim = np.asarray(idx, dtype=np.int64), np.asarray(sim, dtype=np.float64)
        if idx.shape[1] == 0:
            continue
        thr = calibrate(sim[:, 0], exclude=exact)
        thresholds[name] = thr
        r, c = np.nonzero(sim >= thr)
        ia.append(r)
        ib.append(idx[r, c])
        sims.append(sim[r, c])
    a = np.concatenate(ia) if ia else np.zeros(0, dtype=np.int64)
    b = np.concatenate(ib) if ib else np.zeros(0, dtype=np.int64)
    s = np.concatenate(sims) if sims else np.zeros(0)
    group = np.full(n, -1, dtype=np.int64)
    score = np.zeros(n)
    if len(a):
        comp = _components(n, a, b)
        member = np.zeros(n, dtype=bool)
        member[a] = member[b] = True
        np.maximum.at(score, a, s)
        np.maximum.at(score, b, s)
        # number the groups 0.. in the order of their first row
        comps = comp[member]
        _, first_idx = np.unique(comps, return_index=True)
        order = np.argsort(np.flatnonzero(member)[first_idx], kind="stable")
        renum = {int(comps[first_idx[j]]): i for i, j in enumerate(order)}
        group[member] = [renum[int(c)] for c in comps]
    in_group = group >= 0
    kind = np.where(exact, "exact", np.where(in_group, "near", "")).astype(object)
    conflict = np.zeros(n, dtype=bool)
    leak = np.zeros(n, dtype=bool)
    if in_group.any():
        df = pd.DataFrame({"g": group[in_group], "label": labels[in_group]})
        conflict[in_group] = (df.groupby("g")["label"].transform("nunique") > 1).to_numpy()
        if splits is not None:
            sp = pd.Series(np.asarray(splits, dtype=object)[in_group]).fillna("").astype(str).str.strip()
            df["split"] = sp.where(sp != "").to_numpy()
            leak[in_group] = (df.groupby("g")["split"].transform("nunique") > 1).to_numpy()
    n_groups = int(group.max() + 1) if in_group.any() else 0
    info = {"groups": n_groups, "samples_in_groups": int(in_group.sum()), "exact_samples": int(exact.sum()),
            "conflict_groups": int(len(np.unique(group[conflict]))), "leak_groups": int(len(np.unique(group[leak]))),
            "thresholds": thresholds, "z": DUP_Z}
    return Duplicates(group=group, kind=kind, score=score, conflict=conflict, leak=leak, thresholds=thresholds,
                      info=info)


def group_table(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per duplicate group of a scores table: ``dup_group``, ``size``, ``labels`` (distinct given labels,
    "; "-joined), ``conflict``, ``leak``, ``kind`` (exact / near / mixed), ``rows`` (list of row positions).
    Sorted: conflicts first, then leaks, then larger groups."""
    cols = ["dup_group", "size", "labels", "conflict", "leak", "kind", "rows"]
    if "dup_group" not in scores or not (scores["dup_group"] >= 0).any():
        return pd.DataFrame(columns=cols)
    g = scores["dup_group"].to_numpy()
    rows = np.flatnonzero(g >= 0)
    df = pd.DataFrame({"dup_group": g[rows], "row": rows, "label": scores["label"].to_numpy()[rows].astype(str),
                       "conflict": scores["dup_conflict"].to_numpy(dtype=bool)[rows],
                       "leak": scores["dup_leak"].to_numpy(dtype=bool)[rows] if "dup_leak" in scores else False,
                       "kind": scores["dup_kind"].to_numpy()[rows] if "dup_kind" in scores else ""})
    out = df.groupby("dup_group", sort=True).agg(
        size=("row", "size"), labels=("label", lambda v: "; ".join(sorted(set(v)))), conflict=("conflict", "any"),
        leak=("leak", "any"), kind=("kind", lambda v: v.iloc[0] if v.nunique() == 1 else "mixed"),
        rows=("row", list)).reset_index()
    return out.sort_values(["conflict", "leak", "size", "dup_group"], ascending=[False, False, False, True],
                           kind="stable").reset_index(drop=True)[cols]
