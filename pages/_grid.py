"""The review grid: one reusable component for every page that reviews samples (Suspects, Class confusion, Hard
noise, the Embedding-map selection, and the pages built on them).

``sample_grid(ctx, rows, key, ...)`` draws ``rows`` (ordered) as pages of review cards plus a detail view. The cards
are a browser component (``assets/review_grid.js``, Streamlit components v2, no build step) inside an
``st.fragment``: the keys, the focus and the scrolling are handled in the browser at once, and each decision is
sent to Python, which commits it to the review store (one transaction, durable before the grid shows it as saved)
and reruns only this fragment. Why a component: with native widgets a key re-ran the page in 1.2–4 s, 14× a
trivial rerun at 48 cards even inside a fragment (docs/PERFORMANCE.md, "Review keys").

State: page, page size, focused card and open detail view live in the URL (``<key>_page``, ``<key>_size``,
``<key>_focus``, ``<key>_detail``); filters are the pages' own widgets bound to the URL. The rows a grid shows stay
as they were when the page (filters) last ran, so deciding a card never reshuffles the pages; the decided card
shows its new state. The Python side of an event is :func:`_handle` (tests inject events through the component's
state, exactly as the browser sends them).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from clipcleaner_core import review, thumbnails, views
from clipcleaner_core.decisions import ReviewStoreError
from pages import _ui
from pages._safe import md

PAGE_SIZES = (8, 12, 24, 48)
ACTIONS = ("accept", "relabel", "exclude", "unsure", "clear", "none")  # none: none of the classes
GRID = st.components.v2.component(
    "clipcleaner_review_grid", html="", css=(_ui.ASSETS / "review_grid.css").read_text(encoding="utf-8"),
    js=(_ui.ASSETS / "review_grid.js").read_text(encoding="utf-8"), isolate_styles=False)


def _noop() -> None:
    """The component's state ("ui") is read by the fragment itself, before it draws."""


@dataclass
class _Grid:
    """Python-side state of one grid in this session."""

    page: int = 1
    size: int = 12
    sig: str | None = None
    acked: int = 0
    cmd: dict = field(default_factory=lambda: {"n": 0})
    message: dict | None = None
    conflict: dict | None = None
    error: str | None = None
    url_focus: str | None = None
    url_detail: str | None = None
    focus: str | None = None
    """The focused card as this side last knew it (the browser's, or the one a command moved it to)."""
    detail: str | None = None
    ui_seen: tuple = (None, None)
    """(focus, detail) the browser last reported: a change means the user moved."""
    want_focus: str | None = None
    """A sample to focus once the rows are recomputed (an undone sample the current rows no longer hold)."""
    rerun: bool = False

    def command(self, **what: Any) -> None:
        """Tell the browser to move the focus / open or close the detail view (applied once)."""
        self.cmd = {"n": self.cmd["n"] + 1, **what}

    def hold(self, out: _ui.Outcome, yours: str) -> None:
        """Report ``out``; a conflict is kept to ask the user: apply theirs or mine (``yours`` names mine)."""
        if out.kind == "conflict":
            self.conflict = {"items": out.items, "seen": {c.sample_id: c.event_id for c in out.conflicts},
                             "theirs": out.text, "yours": yours}
        self.say(out)

    def say(self, out: _ui.Outcome) -> None:
        if out.kind == "error":
            self.error = out.text
            return
        self.error = None
        n = (self.message or {}).get("n", 0) + 1
        self.message = {"n": n, "kind": out.kind, "text": out.text}


def _int(v: object, default: int) -> int:
    try:
        return int(str(v))
    except (TypeError, ValueError):
        return default


def _grid_state(key: str, default_size: int) -> _Grid:
    k = f"_ccg_{key}"
    if k not in st.session_state:
        q = st.query_params
        size = _int(q.get(f"{key}_size"), default_size)
        st.session_state[k] = _Grid(page=max(1, _int(q.get(f"{key}_page"), 1)),
                                    size=size if size in PAGE_SIZES else default_size,
                                    url_focus=q.get(f"{key}_focus") or None, url_detail=q.get(f"{key}_detail") or None)
    return st.session_state[k]


def _component_state(key: str) -> dict:
    """The browser's state of the grid: {"outbox": [...], "focus": sid, "detail": sid | None, "advance": bool}."""
    raw = st.session_state.get(f"{key}_grid")
    try:
        ui = dict(raw).get("ui") if raw is not None else None
    except (TypeError, ValueError):
        ui = None
    return dict(ui) if isinstance(ui, Mapping) else {}


def _follow_rows(g: _Grid, rows: np.ndarray, sids: np.ndarray) -> None:
    """A new row list (a filter changed): back to page 1, focus on the first card. The first list a session
    sees comes from the URL: its page, or the page holding the focused sample from the URL."""
    sig = review.rows_signature(rows)
    if g.sig == sig:
        return
    first = g.sig is None
    g.sig = sig
    if first and g.url_focus:
        hit = np.flatnonzero(sids == g.url_focus)
        if len(hit):
            g.page = review.page_of(int(hit[0]), g.size)
        g.command(focus=g.url_focus, detail=g.url_detail if g.url_detail == g.url_focus else None)
        return
    if g.want_focus is not None:
        want, g.want_focus = g.want_focus, None
        hit = np.flatnonzero(sids == want)
        if len(hit):
            g.page = review.page_of(int(hit[0]), g.size)
            g.command(focus=want, detail=want if g.detail else None)
            return
    if not first:
        g.page = 1
        g.command(focus=None, detail=None)


def _page_range(n: int, g: _Grid) -> tuple[int, int]:
    """(start, stop) of the grid's page, its page number clamped into range."""
    start, stop, pages = views.page_slice(n, g.page, g.size)
    g.page = min(max(g.page, 1), pages)
    return start, stop


def _handle(ctx: _ui.Ctx, sids: np.ndarray, g: _Grid, ev: Mapping[str, Any], key: str) -> None:
    """Apply one event from the browser: a decision, undo, a page or page-size change, a conflict choice."""
    kind = ev.get("type")
    if kind == "decide":
        action, sid = str(ev.get("action")), str(ev.get("sid"))
        row = int(ctx.rows_of([sid])[0])
        if action not in ACTIONS or row < 0:
            return
        label = ev.get("label") if action == "relabel" else None
        out = _ui.act(ctx, [row], action, None if label is None else str(label),
                      seen={sid: _int(ev.get("seen"), 0)}, grid=key)
        g.hold(out, review.ACTION_WORDS.get(out.action, out.action) + (f" → {out.label}" if out.label else ""))
    elif kind == "bulk" and str(ev.get("action")) in (*ACTIONS, "suggest"):
        action = str(ev.get("action"))
        seen = ev.get("seen") if isinstance(ev.get("seen"), Mapping) else {}
        page = [str(x) for x in seen]  # the cards the browser showed, whatever the rows are by now
        rows_ = ctx.rows_of(page)
        page = [p for p, r in zip(page, rows_) if r >= 0]
        out = _ui.act(ctx, rows_[rows_ >= 0], "relabel" if action == "suggest" else action,
                      to_suggestion=action == "suggest", seen={s: _int(seen.get(s), 0) for s in page}, grid=key)
        g.hold(out, f"{review.ACTION_WORDS.get(out.action, out.action)} for the whole page")
    elif kind == "resolve" and g.conflict is not None:
        c, g.conflict = g.conflict, None
        if ev.get("choice") == "mine":
            g.hold(_ui.write_items(ctx, c["items"], seen=c["seen"], grid=key), c["yours"])  # may ask again
        else:
            g.say(_ui.Outcome("info", "Kept the other decision; yours was not applied."))
    elif kind == "undo":
        out = _ui.undo(ctx)
        g.say(out)
        hit = np.flatnonzero(sids == out.focus) if out.focus else []
        if len(hit):  # back to the undone sample, on its page
            g.page = review.page_of(int(hit[0]), g.size)
            g.command(focus=out.focus, detail=out.focus if g.detail else None)
        elif out.focus and out.kind == "ok":  # these rows no longer hold it (filtered out): recompute them
            g.want_focus, g.rerun = out.focus, True
    elif kind == "page":
        g.page = _int(ev.get("page"), g.page)
        start, stop = _page_range(len(sids), g)
        page = sids[start:stop]
        if len(page):
            target = str(page[-1] if ev.get("then") == "last" else page[0])
            g.command(focus=target, detail=target if g.detail else None)
    elif kind == "size" and _int(ev.get("size"), 0) in PAGE_SIZES:
        focus = g.focus
        g.size = _int(ev.get("size"), g.size)
        hit = np.flatnonzero(sids == focus) if focus else []
        g.page = review.page_of(int(hit[0]), g.size) if len(hit) else 1
        g.command(focus=focus if len(hit) else None)


def _media_urls(paths: list[str], coord: str) -> list[str]:
    """URLs of image files served by Streamlit's media file manager (the same store ``st.image`` uses)."""
    from streamlit import runtime

    mgr = runtime.get_instance().media_file_mgr
    return [mgr.add(str(p), "image/jpeg", f"{coord}.{i}") for i, p in enumerate(paths)]


def _detail(ctx: _ui.Ctx, sid: str, key: str) -> dict | None:
    row = int(ctx.rows_of([sid])[0])
    if row < 0:
        return None
    d = review.detail_record(ctx.scores, row, ctx.array("neighbors"), ctx.array("neighbor_sims"),
                             ctx.store().history(sid, limit=8))
    d["img"] = _media_urls(_ui.thumbs(ctx, np.array([row]), thumbnails.LARGE_SIZE), f"ccg.{key}.large")[0]
    if d["neighbours"]:
        urls = _media_urls(_ui.thumbs(ctx, np.array([n["row"] for n in d["neighbours"]])), f"ccg.{key}.nb")
        for n, u in zip(d["neighbours"], urls):
            n["img"] = u
    return d


def _sync_url(key: str, g: _Grid, focus: str | None, detail: str | None) -> None:
    want = {f"{key}_page": str(g.page) if g.page > 1 else None, f"{key}_size": str(g.size),
            f"{key}_focus": focus, f"{key}_detail": detail}
    q = st.query_params
    for k, v in want.items():
        if v is None and k in q:
            del q[k]
        elif v is not None and q.get(k) != v:
            q[k] = v


@st.fragment
def _grid_fragment(ctx: _ui.Ctx, rows: np.ndarray, key: str, opts: dict) -> None:
    g = _grid_state(key, opts["default_page_size"])
    comp = _component_state(key)
    sids = ctx.scores["sample_id"].to_numpy(dtype=object)[rows].astype(str) if len(rows) else np.array([], str)
    n_cmd = g.cmd["n"]
    reported = (comp.get("focus"), comp.get("detail"))
    if reported != g.ui_seen:  # the user moved the focus / opened or closed the detail view
        g.ui_seen, (g.focus, g.detail) = reported, reported
    _follow_rows(g, rows, sids)
    outbox = [e for e in comp.get("outbox") or [] if isinstance(e, Mapping)]
    for ev in sorted(outbox, key=lambda e: _int(e.get("seq"), 0)):
        seq = _int(ev.get("seq"), 0)
        if seq > g.acked:
            g.acked = seq  # exactly once, even if the run is interrupted after this event
            _handle(ctx, sids, g, ev, key)
    if g.rerun:
        g.rerun = False
        st.rerun(scope="app")
    start, stop = _page_range(len(sids), g)
    page_sids, page_rows = sids[start:stop], rows[start:stop]
    try:
        snap = ctx.store().snapshot(list(page_sids)) if len(page_sids) else {}
    except ReviewStoreError as e:
        snap, g.error = {}, g.error or f"The review database cannot be read: {e}"
    cards = review.card_records(ctx.scores, page_rows, snap)
    for c, url in zip(cards, _media_urls(_ui.thumbs(ctx, page_rows), f"ccg.{key}.card")):
        c["img"] = url
    if g.cmd["n"] != n_cmd:  # this run moved the focus / detail view (undo, paging, the URL)
        g.focus = g.cmd.get("focus", g.focus)
        g.detail = g.cmd.get("detail", g.detail)
    on_page = set(page_sids)
    focus = g.focus if g.focus in on_page else (str(page_sids[0]) if len(page_sids) else None)
    detail = _detail(ctx, g.detail, key) if g.detail in on_page else None
    if g.error:
        st.error(md(g.error), icon=":material/error:")
    n = len(sids)
    if n == 0:
        st.info(opts["empty"], icon=":material/filter_alt_off:")
    GRID(key=f"{key}_grid", data={
        "cards": cards, "classes": [str(c) for c in ctx.classes], "total": n, "page": g.page,
        "pages": views.page_slice(n, 1, g.size)[2], "size": g.size, "columns": opts["columns"],
        "hotkeys": opts["shortcuts"], "acked": g.acked, "cmd": g.cmd, "message": g.message, "detail": detail,
        "conflict": {"theirs": g.conflict["theirs"], "yours": g.conflict["yours"]} if g.conflict else None,
        "advance": comp.get("advance", opts["advance"]),
    }, on_ui_change=_noop)
    _sync_url(key, g, focus, detail["sid"] if detail else None)


def sample_grid(ctx: _ui.Ctx, rows: np.ndarray, key: str, *, shortcuts: bool = True, columns: int = 4,
                empty: str = "Nothing matches these filters.", default_page_size: int = 12,
                advance: bool = True) -> None:
    """Paged review cards for ``rows`` (ordered; positions in ``ctx.scores``), with the detail view, the keys
    (``shortcuts``; press ? in the app for the list) and page-wide actions. ``key`` names the grid (widget keys
    and URL parameters); ``advance``: move the focus to the next card after a decision (the user can switch it).
    ``empty`` is shown when ``rows`` is empty: Markdown written by the page (escape data in it with
    :func:`pages._safe.md`)."""
    size = default_page_size if default_page_size in PAGE_SIZES else 12
    _grid_fragment(ctx, np.asarray(rows, dtype=np.int64), key,
                   {"shortcuts": bool(shortcuts), "columns": int(columns), "empty": empty,
                    "default_page_size": size, "advance": bool(advance)})
