"""Session, workspace and caches of the Streamlit app, and the review actions every page shares.

No math here: computations live in ``clipcleaner_core`` (views, review, layout, thumbnails, export, evaluate). The
review grid is :mod:`pages._grid` (``sample_grid`` below forwards to it); the escaping of data is
:mod:`pages._safe`.

Caching: big read-only objects (scores table, arrays) use ``st.cache_resource`` keyed on the workspace path and
the published generation (no copy per rerun); the review state is keyed on the review database's version plus a
per-session counter bumped by every action, so a click never recomputes scores, layouts or thumbnails.

Actions: :func:`act` and :func:`undo` are the only writers. Each action is one review-store group; this browser
tab's groups form its own undo stack (:class:`clipcleaner_core.review.TabHistory`), so Z in one tab never undoes
another tab's work. A store that cannot be written (removed or replaced file, locked, read-only) gives one error
line, never a confirmation.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from clipcleaner_core import review, thumbnails, views
from clipcleaner_core.decisions import (
    ReviewConflict,
    ReviewConflictError,
    ReviewStore,
    ReviewStoreError,
    default_reviewer,
    open_store,
    resolve_store_url,
)
from clipcleaner_core.workspace import Settings, Workspace, WorkspaceError
from pages._safe import md

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
STATUS_BADGE = {
    "undecided": ":gray-badge[to review]",
    "accept": ":green-badge[:material/check: kept]",
    "relabel": ":violet-badge[:material/edit: relabelled]",
    "exclude": ":red-badge[:material/block: excluded]",
    "unsure": ":orange-badge[:material/help: unsure]",
}
STATUS_FILTERS = {
    "to review": ["undecided"],
    "all": [],
    "decided": ["accept", "relabel", "exclude", "unsure"],
    "kept": ["accept"],
    "relabelled": ["relabel"],
    "excluded": ["exclude"],
    "unsure": ["unsure"],
}


# --- workspace context -------------------------------------------------------------------------------------------
@st.cache_resource
def _server_memory() -> dict:
    """Process-wide memory: the workspace last opened on this server (so a reload or a second tab opens it too)."""
    return {}


def open_workspace(path: str | Path) -> None:
    """Make ``path`` the current workspace of this session and the server's default for new sessions."""
    p = str(Path(path).expanduser().absolute())
    st.session_state["ws_path"] = p
    _server_memory()["ws_path"] = p


def close_workspace() -> None:
    st.session_state["ws_path"] = ""
    _server_memory().pop("ws_path", None)


def current_workspace_path() -> str | None:
    if "ws_path" not in st.session_state:
        st.session_state["ws_path"] = _server_memory().get("ws_path") or os.environ.get("CLIPCLEANER_WORKSPACE", "")
    return st.session_state["ws_path"] or None


REVIEWER = "reviewer"
"""Session key of the reviewer name (the sidebar's text field)."""


def remember_reviewer() -> None:
    """Keep the reviewer name for this session and as the server's default for new sessions."""
    name = str(st.session_state.get(REVIEWER) or "").strip()
    if name:  # an emptied field keeps the last name (decisions always carry one)
        st.session_state["_cc_reviewer"] = name
        _server_memory()["reviewer"] = name


def reviewer_default() -> str:
    """The name the sidebar field starts with: this session's last name, else the server's, else
    :func:`decisions.default_reviewer` ($CLIPCLEANER_REVIEWER or "local")."""
    return st.session_state.get("_cc_reviewer") or _server_memory().get("reviewer") or default_reviewer()


def reviewer() -> str:
    """The name stored with this session's decisions."""
    name = str(st.session_state.get(REVIEWER) or st.session_state.get("_cc_reviewer") or "").strip()
    return name or default_reviewer()


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_resource(max_entries=8, show_spinner=False)
def _workspace(path: str) -> Workspace:
    """One Workspace object per folder: it re-reads the manifest only when workspace.json changes."""
    return Workspace(path)


@st.cache_resource(max_entries=8, show_spinner=False)
def _scores(path: str, generation: str) -> pd.DataFrame:
    return _workspace(path).scores()


@st.cache_resource(max_entries=8, show_spinner=False)
def _sid_index(path: str, generation: str) -> pd.Index:
    return pd.Index(_scores(path, generation)["sample_id"].astype(str))


@st.cache_resource(max_entries=8, show_spinner=False)
def _dataset(path: str, generation: str) -> pd.DataFrame:
    return _workspace(path).dataset()


@st.cache_resource(max_entries=32, show_spinner=False)
def _array(path: str, name: str, generation: str) -> np.ndarray | None:
    a = _workspace(path).array(name)
    return None if a is None else np.asarray(a)


@st.cache_resource(max_entries=32, show_spinner=False)
def _probs(path: str, src: str, generation: str):
    return _workspace(path).probs(src)


@st.cache_resource(max_entries=8, show_spinner=False)
def _store(path: str, url: str) -> ReviewStore:
    return open_store(path, url=url)


@st.cache_data(max_entries=64, show_spinner=False)
def _decisions(path: str, stamp: tuple) -> pd.DataFrame:
    return _store(path, stamp[0]).current()


@dataclass
class Ctx:
    """Everything a page needs about the open workspace (loaded through the caches)."""

    ws: Workspace
    settings: Settings
    scores: pd.DataFrame
    classes: list[str]
    generation: str
    """Id of the published scan set: every cache of scan results is keyed on it."""

    @property
    def path(self) -> str:
        return str(self.ws.path)

    def dataset(self) -> pd.DataFrame:
        return _dataset(self.path, self.generation)

    def array(self, name: str) -> np.ndarray | None:
        return _array(self.path, name, self.generation)

    def probs(self, src: str):
        """:class:`probs.Probs` of source ``src`` (registry SOURCES), None when the scan has none."""
        return _probs(self.path, src, self.generation)

    def sources(self) -> list[str]:
        return self.ws.sources()

    def rows_of(self, sample_ids: list[str]) -> np.ndarray:
        """Row positions of ``sample_ids`` (-1 for an id that is not in this scan)."""
        return _sid_index(self.path, self.generation).get_indexer(sample_ids)

    def store(self) -> ReviewStore:
        """The review store on the database this workspace uses (its review.sqlite, or a shared PostgreSQL
        database set with `clipcleaner db use` / $CLIPCLEANER_DB_URL)."""
        return _store(self.path, resolve_store_url(self.path)[0])

    def decisions_stamp(self) -> tuple:
        """(database URL, store version, generation): changes with every write by anybody, so other reviewers'
        decisions show on the next rerun without re-reading the decisions on every click."""
        url = resolve_store_url(self.path)[0]
        return (url, *_store(self.path, url).version(), st.session_state.get("_gen", 0))

    def decisions(self) -> pd.DataFrame:
        return _decisions(self.path, self.decisions_stamp())

    def state(self) -> pd.DataFrame:
        return _state(self.path, self.generation, self.decisions_stamp())


@st.cache_resource(max_entries=16, show_spinner=False)
def _state(path: str, generation: str, dec_stamp: tuple) -> pd.DataFrame:
    return views.review_state(_scores(path, generation)["sample_id"], _decisions(path, dec_stamp))


LOAD_ERROR = "_cc_ws_error"


def load_ctx() -> Ctx | None:
    """The open workspace, or None when there is none or it cannot be read (the reason is kept for
    :func:`require_ctx` / the Home page in ``st.session_state[LOAD_ERROR]``)."""
    st.session_state.pop(LOAD_ERROR, None)
    p = current_workspace_path()
    if not p:
        return None
    ws = _workspace(str(Path(p).expanduser().absolute()))
    try:
        m = ws.manifest()
        scores = _scores(str(ws.path), m.generation)
    except WorkspaceError as e:
        st.session_state[LOAD_ERROR] = str(e)
        return None
    return Ctx(ws=ws, settings=m.settings, scores=scores, classes=list(m.settings.classes), generation=m.generation)


ENTRY_FLAG = "_cc_entrypoint_ran"
WANTED_PAGE = "_cc_wanted_page"


def ensure_entrypoint(page_file: str) -> None:
    """Send a page request that did not come through ``app.py`` (Streamlit's legacy ``pages/`` mode on the first
    request of a fresh server) through the entry point, which sets up the sidebar and navigation and then opens
    ``page_file`` (the calling page's ``__file__``)."""
    if not st.session_state.get(ENTRY_FLAG):
        st.session_state[WANTED_PAGE] = f"pages/{Path(page_file).name}"
        st.switch_page("app.py")


def require_ctx() -> Ctx:
    """The open workspace; otherwise an empty state pointing at the Home page, and stop the page."""
    ctx = load_ctx()
    if ctx is None:
        p = current_workspace_path()
        if p:
            st.warning(md(st.session_state.get(LOAD_ERROR) or f"{p} is not a scanned workspace."),
                       icon=":material/error:")
        st.info("No workspace is open. Go to **Home** to open a workspace, scan a dataset, or build the offline "
                "demo in one click.", icon=":material/folder_open:")
        st.page_link("pages/home.py", label="Go to Home", icon=":material/home:")
        st.stop()
    if store_problem(ctx) is not None:
        st.error(md(f"The review database cannot be used: {store_problem(ctx)}"), icon=":material/error:")
        st.stop()
    return ctx


def store_problem(ctx: Ctx) -> str | None:
    """Why the workspace's review database cannot be used right now (removed or replaced while open, not a
    database, unreadable), or None."""
    try:
        ctx.store().version()
    except ReviewStoreError as e:
        return str(e)
    return None


# --- style ------------------------------------------------------------------------------------------------------
def inject_css() -> None:
    css = (ASSETS / "style.css").read_text(encoding="utf-8")
    st.html(f"<style>{css}</style>")


def open_page(page_file: str, title: str, subtitle: str, icon: str = "") -> Ctx:
    """The start of every workspace page: through the entry point (:func:`ensure_entrypoint`, ``page_file`` the
    page's ``__file__``), the open workspace (else an empty state and stop, :func:`require_ctx`) and the header."""
    ensure_entrypoint(page_file)
    ctx = require_ctx()
    page_header(title, subtitle, icon)
    return ctx


def page_header(title: str, subtitle: str, icon: str = "") -> None:
    st.markdown(f"## {icon} {title}".strip())
    st.caption(subtitle)


# --- review actions ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What an action did: ``kind`` "ok" | "info" | "error" | "conflict", one sentence, the sample to focus, and
    for a conflict the refused items and who changed what."""

    kind: str
    text: str
    focus: str | None = None
    conflicts: list[ReviewConflict] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    action: str = ""
    label: str | None = None


def tab_history() -> review.TabHistory:
    """This browser tab's own actions (one Streamlit session = one tab)."""
    if "_cc_tab_history" not in st.session_state:
        st.session_state["_cc_tab_history"] = review.TabHistory()
    return st.session_state["_cc_tab_history"]


def _bump() -> None:
    st.session_state["_gen"] = st.session_state.get("_gen", 0) + 1


def write_items(ctx: Ctx, items: list[dict[str, Any]], seen: Mapping[str, int] | None = None,
                grid: str = "") -> Outcome:
    """Record ``items`` as one group (durable before this returns) and push it on this tab's undo stack.

    ``seen``: per sample, the newest event id the view showed (compare-and-set). A newer event written by this
    tab itself is no conflict (the write is retried against it); one written by anybody else is returned as
    ``kind="conflict"`` with who changed what, and nothing is written."""
    if not items:
        return Outcome("info", "Nothing to do.")
    store, who, tab = ctx.store(), reviewer(), tab_history()
    check = dict(seen) if seen else None
    sids = [str(it["sample_id"]) for it in items]
    names = [review.file_name(p) for p in ctx.scores["path"].to_numpy()[ctx.rows_of(sids)]]
    first = items[0]
    try:
        for _ in range(5):
            try:
                gid = store.record_many(items, reviewer=who, seen=check)
                break
            except ReviewConflictError as e:
                if not tab.owns(e.conflicts):
                    return Outcome("conflict", review.conflict_sentence(e.conflicts[0], names[0]), focus=sids[0],
                                   conflicts=e.conflicts, items=items, action=first["action"],
                                   label=first.get("label"))
                check = {**(check or {}), **{c.sample_id: c.event_id for c in e.conflicts}}
        else:
            return Outcome("error", f"{names[0]} kept changing while it was being saved; nothing was written.")
    except ReviewStoreError as e:  # removed / replaced / locked / read-only database: never a confirmation
        return Outcome("error", f"Not saved: {e}")
    except ValueError as e:  # e.g. a relabel to a label that is not a class of this workspace
        return Outcome("error", f"Not saved: {e}")
    tab.push(review.UndoEntry(group_id=gid, action=first["action"], label=first.get("label"), sample_ids=sids,
                              names=names, grid=grid))
    _bump()
    label = first.get("label") if len({it.get("label") for it in items}) == 1 else None
    return Outcome("ok", review.describe(first["action"], label, names, first.get("note")) + ". Undo: Z", focus=sids[0],
                   action=first["action"], label=label)


def act(ctx: Ctx, rows: list[int] | np.ndarray, action: str, label: str | None = None,
        to_suggestion: bool = False, *, seen: Mapping[str, int] | None = None, grid: str = "") -> Outcome:
    """Record ``action`` for the samples at ``rows`` (one transaction, one undo group of this tab).
    ``to_suggestion``: relabel each to its own suggested label. Never raises for a store that cannot be written
    or a label that is not a class: the outcome says so (``kind="error"``, one line to show with ``st.error``)."""
    rows = [int(r) for r in rows]
    if not rows:
        return Outcome("info", "Nothing to do.")
    items = review.decision_items(ctx.scores, rows, action, label, to_suggestion)
    return write_items(ctx, items, seen=seen, grid=grid)


def undo(ctx: Ctx) -> Outcome:
    """Undo this tab's last action (exactly its review-store group), and say what was undone."""
    tab = tab_history()
    entry = tab.pop()
    if entry is None:
        return Outcome("info", "Nothing to undo in this tab (undo covers the actions made in this tab).")
    try:
        sids = ctx.store().undo(reviewer=reviewer(), group_id=entry.group_id)
    except ReviewStoreError as e:
        tab.entries.append(entry)  # not undone: it stays undoable
        return Outcome("error", f"Not undone: {e}")
    _bump()
    if sids is None:
        return Outcome("info", review.undo_sentence(entry).replace("Undid", "Already undone", 1),
                       focus=entry.sample_ids[0])
    return Outcome("ok", review.undo_sentence(entry), focus=entry.sample_ids[0], action=entry.action)


# --- images -----------------------------------------------------------------------------------------------------
def thumbs(ctx: Ctx, rows: np.ndarray, size: int = thumbnails.DEFAULT_SIZE) -> list[str]:
    sub = ctx.scores.iloc[np.asarray(rows, dtype=np.int64)]
    paths = thumbnails.ensure_thumbnails(ctx.ws, list(sub["sample_id"]), list(sub["abs_path"]), size)
    return [str(p) for p in paths]


# --- the review grid ---------------------------------------------------------------------------------------------
def sample_grid(ctx: Ctx, rows: np.ndarray, key: str, **options: Any) -> None:
    """The review grid of ``rows`` (ordered): see :func:`pages._grid.sample_grid` for the options."""
    from pages import _grid

    _grid.sample_grid(ctx, rows, key, **options)


def download_selection_csv(ctx: Ctx, rows: np.ndarray, name: str, key: str) -> None:
    """A download button for the selected samples (path, labels, scores, current decision)."""
    from clipcleaner_core.export import to_safe_csv

    sub = ctx.scores.iloc[np.asarray(rows, dtype=np.int64)]
    st_ = ctx.state().iloc[np.asarray(rows, dtype=np.int64)]
    df = pd.DataFrame({"path": sub["path"].to_numpy(), "label": sub["label"].to_numpy(),
                       "suggested_label": sub["suggested_label"].to_numpy(),
                       "noise_score": sub["noise_score"].round(6).to_numpy(), "flagged": sub["flagged"].to_numpy(),
                       "decision": st_["status"].to_numpy(), "new_label": st_["new_label"].to_numpy(),
                       "sample_id": sub["sample_id"].to_numpy()})
    st.download_button(f"Download selection ({len(df)} rows, CSV)", to_safe_csv(df), file_name=name,
                       mime="text/csv", key=key, icon=":material/download:", on_click="ignore")
