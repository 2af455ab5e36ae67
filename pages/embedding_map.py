"""Embedding map: 2-D layout (PCA at once, UMAP cached, computed in the background) with lasso/box selection."""
from __future__ import annotations

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
import streamlit as st

from clipcleaner_core import layout, views
from pages import _ui
from pages._safe import md, plot

ctx = _ui.open_page(__file__, "Embedding map",
                    "Each dot is an image, placed by the similarity of its embedding. Mislabelled "
                    "images often sit inside another class's cluster. Draw a lasso or box to review a region.",
                    ":material/scatter_plot:")

N = len(ctx.scores)
if N == 0:
    st.info("This workspace has no scored samples. Scan a dataset on **Home**.")
    st.stop()


@st.cache_resource(max_entries=8, show_spinner="Computing the PCA layout…")
def _pca(path: str, generation: str) -> np.ndarray:
    return layout.layout(ctx.ws, "pca")


@st.cache_resource(max_entries=8, show_spinner=False)
def _umap(path: str, generation: str, meta_stamp: int) -> np.ndarray | None:
    return layout.cached_layout(ctx.ws, "umap")


umap_xy = _umap(ctx.path, ctx.generation, _ui._mtime(ctx.ws.cache_dir / "layout_umap.json"))
job = layout.job_status(ctx.ws)

c1, c2, c3, c4 = st.columns([2, 2, 2, 3], vertical_alignment="bottom")
kinds = ["UMAP", "PCA"] if umap_xy is not None else ["PCA"]
if st.session_state.pop("map_umap_ready", False) and umap_xy is not None:
    st.session_state["map_kind"] = "UMAP"
kind = c1.segmented_control("Layout", kinds, default=kinds[0], key="map_kind", required=True)
color_by = c2.selectbox("Colour by", ["given label", "suggested label", "flag", "review status"], key="map_color",
                        bind="query-params")
only_flagged = c3.toggle("Flagged only", key="map_flagged", help="Draw only the flagged samples",
                         bind="query-params")
with c4:
    if umap_xy is None:
        running = job is not None and job.state == "running"
        if st.button("Compute UMAP (background)", key="map_umap", icon=":material/hub:", disabled=running,
                     help="UMAP (umap-learn, cosine, random_state 42) is cached in the workspace; the first run "
                          "in a process also compiles numba code (~40 s). PCA is shown meanwhile."):
            layout.start_umap(ctx.ws)
            st.rerun()


@st.fragment(run_every=1.5)
def umap_progress() -> None:
    j = layout.job_status(ctx.ws)
    if j is None:
        return
    if j.state == "running":
        st.progress(j.fraction, text=j.message)
    elif j.state == "failed":
        st.error(j.message)
    elif j.state == "done":
        st.session_state["map_umap_ready"] = True  # switch the layout control to UMAP on the next run
        st.rerun(scope="app")


if umap_xy is None and job is not None and job.state in ("running", "failed"):
    umap_progress()
elif umap_xy is None:
    st.caption("Showing PCA (instant). UMAP usually separates classes much better — compute it once, it is cached.")

xy = umap_xy if kind == "UMAP" and umap_xy is not None else _pca(ctx.path, ctx.generation)
scores = ctx.scores
state = ctx.state()
flag = scores["flagged"].to_numpy(dtype=bool)
show = layout.plot_sample(flag, layout.MAX_POINTS)
if only_flagged:
    show = show[flag[show]]
if len(show) < N and not only_flagged:
    st.caption(f"{N:,} samples: drawing {len(show):,} — every flagged sample plus a fixed-seed random sample of the "
               f"rest (cap {layout.MAX_POINTS:,} points keeps the browser fast).")

if color_by == "given label":
    cat = scores["label"].to_numpy(dtype=object)
    order = ctx.classes
elif color_by == "suggested label":
    cat = scores["suggested_label"].to_numpy(dtype=object)
    order = ctx.classes
elif color_by == "flag":
    cat = np.where(flag, "flagged", "not flagged").astype(object)
    order = ["not flagged", "flagged"]
else:
    cat = state["status"].map(views.STATUS_TITLES).to_numpy(dtype=object)
    order = [views.STATUS_TITLES[s] for s in views.STATUSES]

PALETTE = (pc.qualitative.T10 if len(ctx.classes) <= 10 else pc.qualitative.Alphabet)
FIXED = {"flagged": "#ef4444", "not flagged": "#c7d2fe", "not reviewed": "#cbd5e1", "given label kept": "#10b981",
         "relabelled": "#8b5cf6", "excluded": "#ef4444", "unsure": "#f59e0b"}


@st.cache_resource(max_entries=8, show_spinner=False)
def _hover(path: str, generation: str) -> np.ndarray:
    """Hover text per sample; paths and labels escaped (Plotly reads HTML tags in its text)."""
    s = ctx.scores
    esc = np.vectorize(plot, otypes=[object])
    return (esc(s["path"].to_numpy(dtype=object)) + "<br>given: " + esc(s["label"].to_numpy(dtype=object))
            + "<br>suggested: " + esc(s["suggested_label"].to_numpy(dtype=object)) + "<br>score: "
            + s["noise_score"].round(2).astype(str).to_numpy(dtype=object))


hover = _hover(ctx.path, ctx.generation)
fig = go.Figure()
sub_cat = cat[show]
for i, c in enumerate(order):
    idx = show[sub_cat == c]
    if len(idx) == 0:
        continue
    fig.add_trace(go.Scattergl(
        x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=plot(c), customdata=idx,
        marker=dict(size=8 if len(show) < 5000 else (5 if len(show) < 20_000 else 3),
                    color=FIXED.get(c, PALETTE[i % len(PALETTE)]),
                    opacity=0.85, line=dict(width=0)),
        hovertext=hover[idx], hovertemplate="%{hovertext}<extra>%{fullData.name}</extra>"))
fig.update_layout(height=620, margin=dict(l=10, r=10, t=10, b=10), dragmode="lasso", legend=dict(
    title=color_by, itemsizing="constant", y=0.9, yanchor="top"),
    xaxis=dict(showticklabels=False, title=None, zeroline=False, showgrid=False),
    yaxis=dict(showticklabels=False, title=None, zeroline=False, showgrid=False), plot_bgcolor="#fbfbfe")
event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("lasso", "box", "points"),
                        width="stretch", config={"scrollZoom": True, "displaylogo": False})

sel_points = []
try:
    sel_points = list(event.selection.get("points", [])) if event is not None else []
except AttributeError:
    sel_points = []
if sel_points:
    picked = [int(p["customdata"]) if not isinstance(p.get("customdata"), list) else int(p["customdata"][0])
              for p in sel_points if p.get("customdata") is not None]
    st.session_state["map_sel"] = sorted(set(picked))

sel = np.asarray(st.session_state.get("map_sel") or [], dtype=np.int64)
sel = sel[(sel >= 0) & (sel < N)]
st.markdown("#### Selection")
if len(sel) == 0:
    st.info("Draw a lasso or a box on the map (toolbar, top right of the plot) to review the samples inside it.",
            icon=":material/gesture:")
else:
    s1, s2, s3 = st.columns([3, 2, 2], vertical_alignment="center")
    share = flag[sel].mean()
    s1.markdown(f"**{len(sel):,}** selected · {int(flag[sel].sum()):,} flagged ({share:.0%}) · given labels: "
                + ", ".join(f"{md(k)} {v}" for k, v in scores["label"].iloc[sel].value_counts().head(4).items()))
    with s2:
        _ui.download_selection_csv(ctx, sel, "selection.csv", "map_dl")
    s3.button("Clear selection", key="map_clear", icon=":material/deselect:",
              on_click=lambda: st.session_state.__setitem__("map_sel", []))
    sel_only_flagged = st.toggle("Only flagged in selection", key="map_sel_flagged", value=False)
    rows = views.filter_rows(scores, state, flagged_only=sel_only_flagged, rows=sel)
    _ui.sample_grid(ctx, rows, "map", empty="No flagged sample in the selection.")
