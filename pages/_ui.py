"""Shared drawing helpers of the Streamlit app: workspace context, cached loaders, review actions, sample grid.

No math here: computations live in ``clipcleaner_core`` (views, layout, thumbnails, export, evaluate).
Caching: big read-only objects (scores table, arrays) use ``st.cache_resource`` keyed on the workspace path and
the files' mtimes (no copy per rerun); the review state is keyed on the review database's file stamps plus a
per-session generation counter bumped by every action, so a click never recomputes scores, layouts or thumbnails.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from clipcleaner_core import thumbnails, views
from clipcleaner_core.decisions import ReviewStore, open_store, resolve_store_url
from clipcleaner_core import registry
from clipcleaner_core.workspace import Settings, Workspace, WorkspaceError

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


def reviewer() -> str:
    name = str(st.session_state.get("reviewer") or "").strip()
    return name or "local"


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
            st.warning(st.session_state.get(LOAD_ERROR) or f"{p} is not a scanned workspace.",
                       icon=":material/error:")
        st.info("No workspace is open. Go to **Home** to open a workspace, scan a dataset, or build the offline "
                "demo in one click.", icon=":material/folder_open:")
        st.page_link("pages/home.py", label="Go to Home", icon=":material/home:")
        st.stop()
    return ctx


# --- style ------------------------------------------------------------------------------------------------------
def inject_css() -> None:
    css = (ASSETS / "style.css").read_text(encoding="utf-8")
    st.html(f"<style>{css}</style>")


def page_header(title: str, subtitle: str, icon: str = "") -> None:
    st.markdown(f"## {icon} {title}".strip())
    st.caption(subtitle)


# --- review actions ---------------------------------------------------------------------------------------------
def _bump(msg: str) -> None:
    st.session_state["_gen"] = st.session_state.get("_gen", 0) + 1
    st.session_state["_toast"] = msg


def act(ctx: Ctx, rows: list[int] | np.ndarray, action: str, label: str | None = None,
        to_suggestion: bool = False) -> None:
    """Record ``action`` for the samples at ``rows`` (one transaction, one undo group). ``to_suggestion``:
    relabel each to its own suggested label. ``action="none"``: the image shows none of the classes (recorded as
    an exclude with that note, :func:`ood.none_of_the_classes_items`)."""
    rows = [int(r) for r in rows]
    if not rows:
        return
    sub = ctx.scores.iloc[rows]
    store = ctx.store()
    who = reviewer()
    if to_suggestion:
        items = [{"sample_id": s, "action": "relabel", "label": sug, "given_label": g}
                 for s, sug, g in zip(sub["sample_id"], sub["suggested_label"], sub["label"])]
    elif action == "none":
        from clipcleaner_core.ood import none_of_the_classes_items

        items = none_of_the_classes_items(list(sub["sample_id"]), list(sub["label"]))
    else:
        items = [{"sample_id": s, "action": action, "label": label if action == "relabel" else None,
                  "given_label": g} for s, g in zip(sub["sample_id"], sub["label"])]
    if len(items) == 1:
        it = items[0]
        store.record(it["sample_id"], it["action"], it["label"], given_label=it["given_label"],
                     note=it.get("note"), reviewer=who)
    else:
        store.record_many(items, reviewer=who)
    what = {"accept": "kept the given label of", "exclude": "excluded", "unsure": "marked unsure",
            "relabel": "relabelled", "clear": "cleared the decision of",
            "none": "marked as none of the classes:"}[action if action == "none" else items[0]["action"]]
    target = f" → {items[0]['label']}" if len(items) == 1 and items[0]["action"] == "relabel" else ""
    name = Path(str(sub["path"].iloc[0])).name if len(items) == 1 else f"{len(items)} samples"
    _bump(f"{what.capitalize()} {name}{target}. Undo: Z")


def undo(ctx: Ctx) -> None:
    sids = ctx.store().undo(reviewer=reviewer())
    _bump(f"Undid the last action ({len(sids)} sample{'s' if len(sids) != 1 else ''})." if sids
          else "Nothing to undo.")


def show_toast() -> None:
    msg = st.session_state.pop("_toast", None)
    if msg:
        st.toast(msg, icon=":material/task_alt:")


# --- images -----------------------------------------------------------------------------------------------------
def thumbs(ctx: Ctx, rows: np.ndarray, size: int = thumbnails.DEFAULT_SIZE) -> list[str]:
    sub = ctx.scores.iloc[np.asarray(rows, dtype=np.int64)]
    paths = thumbnails.ensure_thumbnails(ctx.ws, list(sub["sample_id"]), list(sub["abs_path"]), size)
    return [str(p) for p in paths]


def _safe_key(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", s)


# --- the sample grid ---------------------------------------------------------------------------------------------
def sample_grid(ctx: Ctx, rows: np.ndarray, key: str, *, shortcuts: bool = True, columns: int = 4,
                empty: str = "Nothing matches these filters.", default_page_size: int = 12) -> None:
    """Paged grid of review cards for ``rows`` (ordered), with per-card, focused-card (keyboard) and page actions."""
    rows = np.asarray(rows, dtype=np.int64)
    state = ctx.state()
    show_toast()
    n = len(rows)
    if n == 0:
        st.info(empty, icon=":material/filter_alt_off:")
        _undo_only(ctx, key)
        return
    size_key, page_key, focus_key = f"{key}_size", f"{key}_page", f"{key}_focus"
    page_size = int(st.session_state.get(size_key, default_page_size))
    _, _, pages = views.page_slice(n, 1, page_size)
    if st.session_state.get(page_key, 1) > pages:
        st.session_state[page_key] = pages
    top = st.container(horizontal=True, vertical_alignment="center", key=f"{key}_toolbar")
    with top:
        st.markdown(f"**{n:,}** sample{'s' if n != 1 else ''}")
        page = st.pagination(pages, key=page_key, max_visible_pages=7) if pages > 1 else 1
        st.space("stretch")
        st.selectbox("Per page", [8, 12, 24, 48], index=[8, 12, 24, 48].index(page_size) if page_size in
                     (8, 12, 24, 48) else 1, key=size_key, width=140, label_visibility="collapsed",
                     format_func=lambda v: f"{v} per page")
    start, stop, pages = views.page_slice(n, page, page_size)
    page_rows = rows[start:stop]
    sids = ctx.scores["sample_id"].to_numpy()[page_rows]
    focus = st.session_state.get(focus_key)
    fi = int(np.flatnonzero(sids == focus)[0]) if focus in set(sids) else 0
    focused_row = int(page_rows[fi])
    st.session_state[focus_key] = sids[fi]

    def after_focus_action() -> None:  # move focus to the next card (the one after the acted-on card)
        nxt = sids[fi + 1] if fi + 1 < len(sids) else None
        st.session_state[focus_key] = nxt

    def do(action: str, label: str | None = None, to_sugg: bool = False, r: int | None = None,
           advance: bool = False) -> None:
        act(ctx, [focused_row if r is None else r], action, label, to_sugg)
        if advance:
            after_focus_action()

    def move(delta: int) -> None:
        j = fi + delta
        if 0 <= j < len(sids):
            st.session_state[focus_key] = sids[j]
        elif j >= len(sids) and page < pages:
            st.session_state[page_key] = page + 1
            st.session_state[focus_key] = None
        elif j < 0 and page > 1:
            st.session_state[page_key] = page - 1
            st.session_state[focus_key] = None

    frow = ctx.scores.iloc[focused_row]
    bar = st.container(horizontal=True, vertical_alignment="center", key=f"{key}_actions", gap="small")
    with bar:
        st.caption(f"Focused: **{Path(str(frow['path'])).name}**")
        sc = shortcuts
        st.button("Prev", key=f"{key}_prev", on_click=move, args=(-1,), icon=":material/arrow_back:",
                  shortcut="K" if sc else None, help="Focus the previous card")
        st.button("Next", key=f"{key}_next", on_click=move, args=(1,), icon=":material/arrow_forward:",
                  shortcut="J" if sc else None, help="Focus the next card")
        st.button("Keep given", key=f"{key}_fa", on_click=do, args=("accept",), kwargs={"advance": True},
                  icon=":material/check:", shortcut="A" if sc else None, help="Accept the given label")
        st.button("Take suggestion", key=f"{key}_fs", on_click=do, args=("relabel",),
                  kwargs={"to_sugg": True, "advance": True}, icon=":material/auto_fix_high:",
                  shortcut="S" if sc else None, disabled=frow["suggested_label"] == frow["label"],
                  help=f"Relabel to the suggestion ({frow['suggested_label']})")
        st.button("Exclude", key=f"{key}_fx", on_click=do, args=("exclude",), kwargs={"advance": True},
                  icon=":material/block:", shortcut="X" if sc else None, help="Exclude from the cleaned set")
        st.button("Unsure", key=f"{key}_fu", on_click=do, args=("unsure",), kwargs={"advance": True},
                  icon=":material/help:", shortcut="U" if sc else None, help="Mark unsure (decide later)")
        st.button("None of the classes", key=f"{key}_fn", on_click=do, args=("none",), kwargs={"advance": True},
                  icon=":material/hide_image:", shortcut="N" if sc else None,
                  help="The image shows none of the classes: excluded, with that reason")
        st.button("Undo", key=f"{key}_undo", on_click=undo, args=(ctx,), icon=":material/undo:",
                  shortcut="Z" if sc else None, help="Undo your last action (also bulk actions)")
        with st.popover(f"Whole page ({len(page_rows)})", icon=":material/select_all:"):
            st.caption("Apply to every card on this page (one undo step).")
            pr = list(page_rows)
            st.button("Keep all given labels", key=f"{key}_ba", on_click=act, args=(ctx, pr, "accept"),
                      icon=":material/done_all:", width="stretch")
            st.button("Take all suggestions", key=f"{key}_bs", on_click=act, args=(ctx, pr, "relabel"),
                      kwargs={"to_suggestion": True}, icon=":material/auto_fix_high:", width="stretch")
            st.button("Exclude all", key=f"{key}_bx", on_click=act, args=(ctx, pr, "exclude"),
                      icon=":material/block:", width="stretch")
            st.button("Mark all unsure", key=f"{key}_bu", on_click=act, args=(ctx, pr, "unsure"),
                      icon=":material/help:", width="stretch")
            st.button("Clear decisions", key=f"{key}_bc", on_click=act, args=(ctx, pr, "clear"),
                      icon=":material/restart_alt:", width="stretch")
    if shortcuts:
        st.caption("Keys: **J/K** next/previous card · **A** keep · **S** take suggestion · **X** exclude · "
                   "**U** unsure · **Z** undo. They act on the focused (highlighted) card.")

    detail_sid = st.session_state.get(f"{key}_detail")
    if detail_sid is not None:
        hit = np.flatnonzero(ctx.scores["sample_id"].to_numpy() == detail_sid)
        if len(hit):
            detail_panel(ctx, int(hit[0]), key)

    images = thumbs(ctx, page_rows)
    st.html(f"<style>.st-key-{_safe_key(key)}-card-{_safe_key(str(sids[fi]))} "
            "{outline: 3px solid var(--cc-accent); outline-offset: 2px;}</style>")
    classes = ctx.classes
    sub = ctx.scores.iloc[page_rows]
    stat = state.iloc[page_rows]
    for r0 in range(0, len(page_rows), columns):
        cols = st.columns(columns, gap="small")
        for j in range(r0, min(r0 + columns, len(page_rows))):
            with cols[j - r0]:
                _card(ctx, key, int(page_rows[j]), sub.iloc[j], stat.iloc[j], images[j], classes)


def _undo_only(ctx: Ctx, key: str) -> None:
    st.button("Undo last action", key=f"{key}_undo0", on_click=undo, args=(ctx,), icon=":material/undo:",
              shortcut="Z")


def _card(ctx: Ctx, key: str, row: int, r: pd.Series, s: pd.Series, image: str, classes: list[str]) -> None:
    sid = str(r["sample_id"])
    ck = f"{key}_c_{_safe_key(sid)}"  # widget keys; the card container itself is f"{key}-card-{sid}"
    with st.container(border=True, key=f"{key}-card-{_safe_key(sid)}"):
        st.image(image, width="stretch")
        name = Path(str(r["path"])).name
        status = str(s["status"])
        badge = STATUS_BADGE.get(status, status)
        if status == "relabel":
            badge = f":violet-badge[:material/edit: → {s['new_label']}]"
        st.markdown(f"`{name}` {badge}")
        st.markdown(f"given **{r['label']}** → **{r['suggested_label']}** "
                    f"<span class='cc-prob'>{float(r['suggested_prob']):.0%}</span>", unsafe_allow_html=True)
        src = "zs" if pd.notna(r.get("zs_top1_label", np.nan)) else "ens"
        top = " · ".join(f"{r[f'{src}_top{j}_label']} {float(r[f'{src}_top{j}_prob']):.0%}" for j in (1, 2, 3)
                         if f"{src}_top{j}_label" in r and pd.notna(r[f"{src}_top{j}_label"]))
        st.caption(f"top-3 ({registry.source(src).title}): {top}  \nnoise score **{float(r['noise_score']):.2f}**")
        st.markdown(reason_badges(r["reasons"]))
        c1, c2 = st.columns(2, gap="xxsmall")
        c1.button("Keep", key=f"{ck}_a", on_click=act, args=(ctx, [row], "accept"), icon=":material/check:",
                  width="stretch", help=f"Keep the given label ({r['label']})",
                  type="primary" if status == "accept" else "secondary")
        c2.button(f"{r['suggested_label']}", key=f"{ck}_s", on_click=act, args=(ctx, [row], "relabel"),
                  kwargs={"to_suggestion": True}, icon=":material/auto_fix_high:", width="stretch",
                  help=f"Take the suggestion: relabel to {r['suggested_label']}",
                  disabled=r["suggested_label"] == r["label"],
                  type="primary" if status == "relabel" and s["new_label"] == r["suggested_label"] else "secondary")
        c3, c4 = st.columns(2, gap="xxsmall")
        c3.button("Exclude", key=f"{ck}_x", on_click=act, args=(ctx, [row], "exclude"), icon=":material/block:",
                  width="stretch", type="primary" if status == "exclude" else "secondary")
        c4.button("Unsure", key=f"{ck}_u", on_click=act, args=(ctx, [row], "unsure"), icon=":material/help:",
                  width="stretch", type="primary" if status == "unsure" else "secondary")
        c5, c6 = st.columns([3, 1], gap="xxsmall", vertical_alignment="center")
        c5.selectbox("Relabel to", classes, index=None, key=f"{ck}_r", placeholder="Relabel to…",
                     label_visibility="collapsed", on_change=_relabel_cb, args=(ctx, row, f"{ck}_r"))
        c6.button("", key=f"{ck}_d", icon=":material/zoom_in:", on_click=_open_detail, args=(key, sid),
                  help="Details: large image, top-k of every source, nearest neighbours", width="stretch")


def reason_badges(reasons: object) -> str:
    """The ``reasons`` codes as small badges (registry short titles), or a note when nothing flags the sample."""
    parts = registry.reason_titles(reasons, short=True)
    if not parts:
        return ":gray[not flagged by any detector]"
    return " ".join(f":orange-badge[{p}]" for p in parts)


def _relabel_cb(ctx: Ctx, row: int, wkey: str) -> None:
    val = st.session_state.get(wkey)
    if val:
        act(ctx, [row], "relabel", label=str(val))
    st.session_state[wkey] = None


def _open_detail(key: str, sid: str) -> None:
    st.session_state[f"{key}_detail"] = sid
    st.session_state[f"{key}_focus"] = sid  # the toolbar (and its keys) now act on this sample


def _close_detail(key: str) -> None:
    st.session_state[f"{key}_detail"] = None


def detail_panel(ctx: Ctx, row: int, key: str) -> None:
    """Large image, top-k from each source, nearest neighbours with their labels, and the sample's history."""
    r = ctx.scores.iloc[row]
    s = ctx.state().iloc[row]
    with st.container(border=True, key=f"{key}_detailbox"):
        h1, h2 = st.columns([6, 1], vertical_alignment="center")
        h1.markdown(f"#### :material/zoom_in: `{r['path']}`")
        h2.button("Close", key=f"{key}_close", on_click=_close_detail, args=(key,), icon=":material/close:",
                  width="stretch")
        st.caption("The toolbar above (and its keys A / S / X / U) acts on this sample.")
        left, right = st.columns([2, 3])
        with left:
            st.image(thumbs(ctx, np.array([row]), thumbnails.LARGE_SIZE)[0], width=360)
            st.markdown(f"given **{r['label']}** · suggested **{r['suggested_label']}** "
                        f"({float(r['suggested_prob']):.0%}, {r['suggested_source']}) · "
                        f"{STATUS_BADGE.get(str(s['status']), '')}")
            st.caption(f"noise score {float(r['noise_score']):.3f} · k-NN agreement "
                       f"{float(r['knn_agreement']):.0%} · flagged by: {registry.describe_reasons(r['reasons']) or 'none'}")
        with right:
            tk = views.topk_table(r)
            if len(tk):
                wide = tk.assign(cell=tk["label"] + " " + (tk["probability"] * 100).round(0).astype(int).astype(str)
                                 + "%").pivot(index="source", columns="rank", values="cell")
                wide.columns = [f"top-{c}" for c in wide.columns]
                st.markdown("**Top classes per source**")
                st.dataframe(wide, width="stretch")
            hist = ctx.store().history(str(r["sample_id"]), limit=5)
            if len(hist):
                st.markdown("**History**")
                st.dataframe(hist[["created_at", "reviewer", "kind", "action", "label", "undone"]],
                             hide_index=True, width="stretch")
        nb = views.neighbours(row, ctx.array("neighbors"), ctx.array("neighbor_sims"), ctx.scores, k=8)
        if len(nb):
            st.markdown("**Nearest neighbours** (cosine similarity of the embeddings) and their given labels")
            imgs = thumbs(ctx, nb["row"].to_numpy())
            cols = st.columns(len(nb))
            for c, (_, n), im in zip(cols, nb.iterrows(), imgs):
                c.image(im, width="stretch")
                same = "✓" if n["label"] == r["label"] else ("★" if n["label"] == r["suggested_label"] else "")
                c.caption(f"**{n['label']}** {same}  \nsim {float(n['similarity']):.2f}")
            st.caption("✓ same given label as this sample · ★ carries the suggested label")


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
