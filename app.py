"""clipcleaner review app: `streamlit run app.py` (or `clipcleaner app [WORKSPACE]`), served on 127.0.0.1.

Entry point: page config, sidebar (workspace, reviewer) and navigation (``st.navigation``). The pages live in
``pages/``. Streamlit would run a ``pages/`` folder in its legacy multipage mode when the first request of a fresh
server is a page URL (skipping this entry point); every page therefore starts with ``_ui.ensure_entrypoint()``,
which sends such a request through this file first. Pages draw; the core
(``clipcleaner_core``) computes. The workspace to open comes from the Home page, else the last one
opened on this server, else the ``CLIPCLEANER_WORKSPACE`` environment variable (set by ``clipcleaner app WS``).

These files ship in the wheel as the package ``clipcleaner_app`` (see pyproject.toml); Streamlit puts this file's
folder first on ``sys.path``, so ``pages`` is found next to it, from a checkout or an installed wheel alike.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from clipcleaner_core import evaluate, views
from clipcleaner_core.decisions import ReviewStoreError
from pages import _ui
from pages._safe import md

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="clipcleaner — label review", page_icon=str(HERE / "assets" / "icon.svg"),
                   layout="wide", initial_sidebar_state="expanded")
_ui.inject_css()
st.logo(str(HERE / "assets" / "logo.svg"), size="large", icon_image=str(HERE / "assets" / "icon.svg"))

ctx = _ui.load_ctx()
with st.sidebar:
    if ctx is not None:
        s = ctx.settings
        c = views.headline_counts(ctx.scores, ctx.dataset())
        st.markdown(f"**Workspace** {md(ctx.ws.path.name)}")
        st.caption(f"{views.counts_line(c)} · {len(ctx.classes)} classes  \n{md(views.encoder_description(s))}")
        try:
            where = md(ctx.store().path or ctx.store().url)
        except ReviewStoreError:  # the page says why, in one line
            where = "(the review database cannot be opened)"
        st.caption(f"Decisions saved to {where}",
                   help="Set a shared PostgreSQL database with `clipcleaner db use WS URL` or $CLIPCLEANER_DB_URL.")
    else:
        st.caption("No workspace open yet.")
    # The name is kept in this session's own key and handed to the widget on every run: with st.navigation over a
    # pages/ folder, Streamlit 1.67 resets an entry-point widget's state to its default on the rerun after an edit
    # (the edit itself arrives: it is taken here, before the widget is drawn).
    _ui.remember_reviewer()
    st.session_state[_ui.REVIEWER] = _ui.reviewer_default()
    st.text_input("Reviewer name", key=_ui.REVIEWER, help="Stored with every decision (audit trail).")

nav_pages = {
    "": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Review": [
        st.Page("pages/suspects.py", title="Suspects", icon=":material/grid_view:"),
        st.Page("pages/embedding_map.py", title="Embedding map", icon=":material/scatter_plot:"),
        st.Page("pages/confusion.py", title="Class confusion", icon=":material/grid_on:"),
        st.Page("pages/hard_noise.py", title="Hard noise", icon=":material/compare:"),
        st.Page("pages/duplicates.py", title="Duplicates", icon=":material/content_copy:"),
        st.Page("pages/similar.py", title="More like this", icon=":material/join_inner:"),
    ],
    "Finish": [st.Page("pages/export.py", title="Export", icon=":material/download:")],
}
if ctx is not None and evaluate.truth_path(ctx.ws) is not None:
    nav_pages["Finish"].append(st.Page("pages/evaluation.py", title="Evaluation", icon=":material/analytics:"))

st.session_state[_ui.ENTRY_FLAG] = True
page = st.navigation(nav_pages, position="sidebar", expanded=True)
wanted = st.session_state.pop(_ui.WANTED_PAGE, None)
if wanted and any(p.url_path and wanted.endswith(f"{p.url_path}.py") for ps in nav_pages.values() for p in ps):
    st.switch_page(wanted)
page.run()
