"""clipcleaner review app: `streamlit run app.py` (or `clipcleaner app [WORKSPACE]`), served on 127.0.0.1.

Entry point: page config, sidebar (workspace, reviewer) and navigation (``st.navigation``). The pages live in
``app_pages/`` — deliberately not ``pages/``: Streamlit runs a ``pages/`` folder in its legacy multipage mode when the
first request of a fresh server is a page URL, which would skip this entry point. Pages draw; the core
(``clipcleaner_core``) computes. The workspace to open comes from the Home page, else the last one
opened on this server, else the ``CLIPCLEANER_WORKSPACE`` environment variable (set by ``clipcleaner app WS``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from clipcleaner_core import views  # noqa: E402
from app_pages import _ui  # noqa: E402

st.set_page_config(page_title="clipcleaner — label review", page_icon=str(HERE / "assets" / "icon.svg"),
                   layout="wide", initial_sidebar_state="expanded")
_ui.inject_css()
st.logo(str(HERE / "assets" / "logo.svg"), size="large", icon_image=str(HERE / "assets" / "icon.svg"))

ctx = _ui.load_ctx()
with st.sidebar:
    if ctx is not None:
        s = ctx.settings
        st.markdown(f"**Workspace** `{ctx.ws.path.name}`")
        st.caption(f"{len(ctx.scores):,} samples · {len(ctx.classes)} classes · "
                   f"{int(ctx.scores['flagged'].sum()):,} flagged  \n{views.encoder_description(s)}")
    else:
        st.caption("No workspace open yet.")
    if "reviewer" not in st.session_state:
        st.session_state["reviewer"] = _ui._server_memory().get("reviewer", "local")
    st.text_input("Reviewer name", key="reviewer", help="Stored with every decision (audit trail, undo).",
                  on_change=lambda: _ui._server_memory().__setitem__("reviewer", st.session_state["reviewer"]))

pages = {
    "": [st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Review": [
        st.Page("app_pages/suspects.py", title="Suspects", icon=":material/grid_view:"),
        st.Page("app_pages/embedding_map.py", title="Embedding map", icon=":material/scatter_plot:"),
        st.Page("app_pages/confusion.py", title="Class confusion", icon=":material/grid_on:"),
        st.Page("app_pages/hard_noise.py", title="Hard noise", icon=":material/compare:"),
    ],
    "Finish": [st.Page("app_pages/export.py", title="Export", icon=":material/download:")],
}
if ctx is not None and views.truth_path(ctx.ws) is not None:
    pages["Finish"].append(st.Page("app_pages/evaluation.py", title="Evaluation", icon=":material/analytics:"))

st.navigation(pages, position="sidebar", expanded=True).run()
