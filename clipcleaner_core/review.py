"""The review loop's logic, without Streamlit: what a page of review cards and the detail view show, what a
decision writes, the per-tab undo stack, and how a refused stale write is described.

The app's review grid (``pages/_grid.py``, a browser component) only draws these records. Conventions as in
:mod:`views`: ``scores`` is the workspace's scores table; "rows" are positions 0..N-1 in it. Card and detail
records are plain JSON-able dicts whose strings are *data*: whoever draws them must treat them as text.
Everything that flags a sample comes from the ``reasons`` codes through :mod:`registry`, so a new detector or
issue type shows on the cards without a change here.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from . import registry
from .decisions import ReviewConflict
from .ood import none_of_the_classes_items
from .views import neighbours, topk_table

ACTION_WORDS = {"accept": "keep", "relabel": "relabel", "exclude": "exclude", "unsure": "unsure",
                "clear": "clear", "none": "none of the classes"}
"""One word per action, as the undo message names it ("Undid: exclude of 01770.png")."""
STATUS_WORDS = {None: "not reviewed", "undecided": "not reviewed", "accept": "kept", "relabel": "relabelled",
                "exclude": "excluded", "unsure": "unsure", "clear": "cleared"}
HOTKEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "0")
"""Digit keys that relabel to the first ten classes, in the workspace's class order."""


def file_name(path: object) -> str:
    """The last part of a sample's path (what cards and messages call it)."""
    return PurePath(str(path)).name or str(path)


def class_hotkeys(classes: Sequence[str]) -> list[list[str]]:
    """``[[key, class], ...]`` for the first ten classes: keys 1..9, 0."""
    return [[k, str(c)] for k, c in zip(HOTKEYS, classes)]


def decision_items(scores: pd.DataFrame, rows: Sequence[int], action: str, label: str | None = None,
                   to_suggestion: bool = False) -> list[dict[str, Any]]:
    """Items for :meth:`ReviewStore.record_many`: ``action`` for each row (``to_suggestion``: relabel each to its
    own suggested label; ``"none"``: none of the classes, :func:`ood.none_of_the_classes_items`), with the given
    label kept in the history."""
    sub = scores.iloc[np.asarray(rows, dtype=np.int64)]
    if action == "none":  # the image shows none of the classes: an exclude with that reason
        return none_of_the_classes_items(list(sub["sample_id"]), list(sub["label"]))
    if to_suggestion:
        return [{"sample_id": s, "action": "relabel", "label": sug, "given_label": g}
                for s, sug, g in zip(sub["sample_id"], sub["suggested_label"], sub["label"])]
    return [{"sample_id": s, "action": action, "label": label if action == "relabel" else None, "given_label": g}
            for s, g in zip(sub["sample_id"], sub["label"])]


def describe(action: str, label: str | None, names: Sequence[str], note: str | None = None) -> str:
    """A confirmation sentence: "Excluded 01770.png", "Relabelled 3 samples", "Relabelled 01.png → cat",
    "Excluded 7.png (none of the classes)" (``note``: the decision's reason)."""
    what = {"accept": "Kept the given label of", "exclude": "Excluded", "unsure": "Marked unsure",
            "relabel": "Relabelled", "clear": "Cleared the decision of"}[action]
    if note:
        return f"{what} {names[0] if len(names) == 1 else f'{len(names)} samples'} ({note})"
    target = f" → {label}" if len(names) == 1 and action == "relabel" and label else ""
    who = names[0] if len(names) == 1 else f"{len(names)} samples"
    return f"{what} {who}{target}"


def undo_sentence(entry: UndoEntry) -> str:
    """"Undid: exclude of 01770.png" / "Undid: relabel → cat of 01.png" / "Undid: keep of 12 samples"."""
    word = ACTION_WORDS.get(entry.action, entry.action)
    if entry.action == "relabel" and entry.label and len(entry.names) == 1:
        word = f"relabel → {entry.label}"
    who = entry.names[0] if len(entry.names) == 1 else f"{len(entry.names)} samples"
    return f"Undid: {word} of {who}"


def conflict_sentence(c: ReviewConflict, name: str) -> str:
    """Who changed a sample since the view was drawn, and to what."""
    if c.kind == "undo":
        what = f"undid a decision (now {STATUS_WORDS.get(c.action, c.action)})"
    elif c.action == "relabel":
        what = f"relabelled it → {c.label}"
    else:
        what = f"set it to {STATUS_WORDS.get(c.action, c.action)}"
    return f"{c.reviewer} {what} at {str(c.created_at)[11:19]} UTC, after this page showed {name}"


# --- cards -----------------------------------------------------------------------------------------------------
def _present(v: object) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v))


def _num(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f


def _column(sub: pd.DataFrame, name: str) -> np.ndarray:
    return sub[name].to_numpy(dtype=object) if name in sub else np.full(len(sub), None, dtype=object)


def card_records(scores: pd.DataFrame, rows: Sequence[int], snapshot: Mapping[str, Mapping[str, Any]]
                 ) -> list[dict[str, Any]]:
    """One dict per row: identity (``sid``, ``row``, ``name``, ``path``), labels (``label``, ``suggested``,
    ``prob``, ``top`` [[class, p]×3] of ``top_source`` — zero-shot when the scan has it, else the ensemble),
    ``noise``, ``flagged``, ``reasons`` (registry short titles of the codes), ``why`` (long titles), and the review
    state from :meth:`ReviewStore.snapshot` (``status``, ``new_label``, ``by``, ``seen`` — the newest event id,
    for compare-and-set)."""
    rows = np.asarray(rows, dtype=np.int64)
    wanted = ["sample_id", "path", "label", "suggested_label", "suggested_prob", "noise_score", "flagged", "reasons"]
    wanted += [f"{src}_top{j}_{kind}" for src in ("zs", "ens") for j in (1, 2, 3) for kind in ("label", "prob")]
    sub = scores[[c for c in wanted if c in scores.columns]].take(rows)  # only these columns: fast at 100k
    top = {src: [(_column(sub, f"{src}_top{j}_label"), _column(sub, f"{src}_top{j}_prob")) for j in (1, 2, 3)]
           for src in ("zs", "ens")}
    titles: dict[object, tuple[list[str], list[str]]] = {}
    cols = {c: _column(sub, c) for c in ("sample_id", "path", "label", "suggested_label", "suggested_prob",
                                         "noise_score", "flagged", "reasons")}
    out = []
    for i, row in enumerate(rows):
        sid = str(cols["sample_id"][i])
        snap = snapshot.get(sid) or {}
        src = "zs" if _present(top["zs"][0][0][i]) else "ens"
        reasons = cols["reasons"][i]
        if reasons not in titles:
            titles[reasons] = (registry.reason_titles(reasons, short=True), registry.reason_titles(reasons))
        out.append({
            "sid": sid, "row": int(row), "name": file_name(cols["path"][i]), "path": str(cols["path"][i]),
            "label": str(cols["label"][i]), "suggested": str(cols["suggested_label"][i]),
            "prob": _num(cols["suggested_prob"][i]), "top_source": registry.source(src).title,
            "top": [[str(lab[i]), float(p[i])] for lab, p in top[src] if _present(lab[i])],
            "noise": _num(cols["noise_score"][i]), "flagged": bool(cols["flagged"][i]),
            "reasons": titles[reasons][0], "why": titles[reasons][1],
            "status": snap.get("action") or "undecided", "new_label": snap.get("label"),
            "by": snap.get("reviewer"), "seen": int(snap.get("event_id") or 0),
        })
    return out


def detail_record(scores: pd.DataFrame, row: int, neighbor_idx: np.ndarray | None, neighbor_sims: np.ndarray | None,
                  history: pd.DataFrame, k: int = 8) -> dict[str, Any]:
    """The detail (focus-mode) view of one row: every source's top-3, ``k`` nearest neighbours (``row``,
    ``label``, ``similarity``, ``mark``: "same" given label / "suggested" label / ""), the history (newest
    first) and the longer facts (``source`` of the suggestion, ``knn_agreement``)."""
    r = scores.iloc[int(row)]
    tk = topk_table(r)
    sources = [{"source": str(src), "items": [[str(lab), float(p)] for lab, p in zip(g["label"], g["probability"])]}
               for src, g in tk.groupby("source", sort=False)]
    nb = neighbours(int(row), neighbor_idx, neighbor_sims, scores, k=k) if neighbor_idx is not None else None
    near = []
    if nb is not None:
        for n in nb.itertuples(index=False):
            mark = "same" if n.label == r["label"] else ("suggested" if n.label == r["suggested_label"] else "")
            near.append({"row": int(n.row), "sid": str(n.sample_id), "label": str(n.label),
                         "similarity": _num(n.similarity), "mark": mark})
    hist = [{"at": str(h.created_at)[:19].replace("T", " "), "reviewer": str(h.reviewer), "kind": str(h.kind),
             "action": None if pd.isna(h.action) else str(h.action),
             "label": None if pd.isna(h.label) else str(h.label), "undone": bool(h.undone)}
            for h in history.itertuples(index=False)]
    return {"sid": str(r["sample_id"]), "row": int(row), "path": str(r["path"]),
            "source": str(r.get("suggested_source", "")), "knn_agreement": _num(r.get("knn_agreement")),
            "sources": sources, "neighbours": near, "history": hist}


# --- paging ------------------------------------------------------------------------------------------------------
def rows_signature(rows: np.ndarray) -> str:
    """A short digest of an ordered row list: a grid resets its page when its rows change (a filter changed)."""
    return hashlib.blake2b(np.ascontiguousarray(rows, dtype=np.int64).tobytes(), digest_size=8).hexdigest()


def page_of(index: int, page_size: int) -> int:
    """The 1-based page holding position ``index`` of a list paged by ``page_size``."""
    return int(index) // max(int(page_size), 1) + 1


# --- the per-tab undo stack ------------------------------------------------------------------------------------------
@dataclass
class UndoEntry:
    """One action of this tab: the review-store group it wrote, what it was and which samples it touched."""

    group_id: int
    action: str
    label: str | None
    sample_ids: list[str]
    names: list[str]
    grid: str = ""


@dataclass
class TabHistory:
    """A browser tab's own actions, newest last. Undo pops from here and reverts exactly that group
    (``ReviewStore.undo(group_id=...)``), so one tab never undoes another tab's work, whoever the reviewer."""

    entries: list[UndoEntry] = field(default_factory=list)
    groups: set[int] = field(default_factory=set)
    """Every group id this tab wrote (undone ones too): a conflict with one's own write is no conflict."""

    def push(self, entry: UndoEntry) -> None:
        self.entries.append(entry)
        self.groups.add(int(entry.group_id))

    def pop(self) -> UndoEntry | None:
        return self.entries.pop() if self.entries else None

    def owns(self, conflicts: Sequence[ReviewConflict]) -> bool:
        """True when every newer event comes from this tab (its own earlier action or undo)."""
        return bool(conflicts) and all(int(c.group_id) in self.groups for c in conflicts)
