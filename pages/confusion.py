"""Class confusion: given label x the model's top class, the most confused pairs, and the samples behind a cell."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from clipcleaner_core import registry, views
from pages import _ui
from pages._safe import md, plot_all

ctx = _ui.open_page(__file__, "Class confusion",
                    "Rows: the given label. Columns: the class a model predicts. Off-diagonal cells "
                    "are disagreements; click a cell (or a row of the table) to review those samples.",
                    ":material/grid_on:")

K = len(ctx.classes)
sources = ctx.sources()
if not sources or len(ctx.scores) == 0:
    st.info("No class probabilities in this workspace. Re-scan the dataset on **Home**.")
    st.stop()
if "zs" not in sources:
    st.caption(":material/info: Zero-shot is not available for this encoder (no text tower): the switch offers the "
               "linear probe, the ensemble and the neighbours.")

c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
src = c1.segmented_control("Predicted by", sources, default=sources[0], key="conf_src", required=True,
                           format_func=lambda s: md(registry.source(s).title), bind="query-params")
norm = c2.toggle("Row-normalised (share of the given class)", key="conf_norm", value=False, bind="query-params")
if "conf_cell" not in st.session_state:  # a shared link / reload opens the same cell
    cell_q = str(st.query_params.get("conf_cell", "")).split(",")
    if len(cell_q) == 2 and all(p.isdigit() and int(p) < K for p in cell_q):
        st.session_state["conf_cell"] = (int(cell_q[0]), int(cell_q[1]))


@st.cache_resource(max_entries=16, show_spinner=False)
def _pred(path: str, name: str, generation: str) -> tuple[np.ndarray, np.ndarray]:
    """(the source's top class per sample (N,), given × top-class counts (K, K))."""
    p = ctx.probs(name)
    return p.argmax(), p.confusion(ctx.scores["label_idx"].to_numpy())


pred, counts = _pred(ctx.path, src, ctx.generation)
z = views.row_normalise(counts) if norm else counts.astype(float)
# colour scale on the off-diagonal only, so disagreements are visible next to the big diagonal
off = z * (1 - np.eye(K))
zmax = float(off.max()) if off.max() > 0 else 1.0
text = np.char.mod("%.0f%%", z * 100) if norm else counts.astype(str)
names = np.asarray(plot_all(ctx.classes), dtype=object)  # class names are text, never Plotly markup
fig = go.Figure(go.Heatmap(z=np.minimum(z, zmax * 1.0001), x=names, y=names, text=text, xgap=1, ygap=1,
                           texttemplate="%{text}" if K <= 30 else None, colorscale="Purples", zmin=0, zmax=zmax,
                           hoverinfo="skip",
                           colorbar=dict(title="share" if norm else "samples")))
gi, si = np.meshgrid(np.arange(K), np.arange(K), indexing="ij")
fig.add_trace(go.Scatter(x=names[si.ravel()], y=names[gi.ravel()],
                         mode="markers", marker=dict(size=max(6, min(36, 600 // max(K, 1))),
                                                     color="rgba(0,0,0,0)"),
                         selected=dict(marker=dict(color="rgba(0,0,0,0)")),
                         unselected=dict(marker=dict(color="rgba(0,0,0,0)", opacity=1)),
                         customdata=np.stack([gi.ravel(), si.ravel()], axis=1), text=text.ravel(), showlegend=False,
                         hovertemplate="given %{y} → predicted %{x}: %{text}<br>click to review<extra></extra>"))
side = min(140 + 38 * K, 900)
fig.update_layout(height=side, width=side + 260, margin=dict(l=10, r=10, t=10, b=10), plot_bgcolor="#ffffff",
                  xaxis=dict(title=f"predicted ({registry.source(src).title})", side="bottom", showgrid=False,
                             tickmode="array", tickvals=list(names), ticktext=list(names),  # every class, none skipped
                             zeroline=False, constrain="domain", ticks="", automargin=True),
                  yaxis=dict(title="given label", autorange="reversed", scaleanchor="x", scaleratio=1,
                             tickmode="array", tickvals=list(names), ticktext=list(names),
                             showgrid=False, zeroline=False, constrain="domain", ticks="", automargin=True),
                  clickmode="event+select")
prev = st.session_state.get("conf_cell")
if prev is not None and max(prev) < K:  # outline the cell whose samples are open below
    fig.add_shape(type="rect", x0=prev[1] - 0.5, x1=prev[1] + 0.5, y0=prev[0] - 0.5, y1=prev[0] + 0.5,
                  line=dict(color="#f59e0b", width=3), xref="x", yref="y")
st.caption("Diagonal cells are clipped to the largest off-diagonal value so the colour shows the confusions.")
ev = st.plotly_chart(fig, key="conf_heat", on_select="rerun", selection_mode=("points",), width="content",
                     config={"displaylogo": False})
try:
    pts = list(ev.selection.get("points", [])) if ev is not None else []
except AttributeError:
    pts = []
clicked = None
for p in pts:
    cd = p.get("customdata")
    if isinstance(cd, dict):  # plotly events may serialise an array point as {"0": g, "1": s}
        cd = [cd[k] for k in sorted(cd, key=lambda k: int(k))]
    if cd is not None and len(cd) == 2:
        clicked = (int(cd[0]), int(cd[1]))


def _pick_cell(source: str, cell: tuple | None) -> None:
    """Open ``cell`` when this source (heatmap click / table row) changed since the last run."""
    last_key = f"conf_last_{source}"
    if cell is not None and cell != st.session_state.get(last_key):
        st.session_state[last_key] = cell
        if cell != st.session_state.get("conf_cell"):
            st.session_state["conf_cell"] = cell
            st.query_params["conf_cell"] = f"{cell[0]},{cell[1]}"
            st.rerun()  # redraw with the chosen cell outlined
    elif cell is None:
        st.session_state[last_key] = None


_pick_cell("heat", clicked)

sim = ctx.array("class_similarity")
sim_src = ctx.settings.class_similarity_source or "class prototypes"
st.markdown("#### Most confused class pairs — hard-noise candidates")
st.caption(f"Similarity: cosine between **{md(sim_src)}**. Pairs that are both confused and similar are where "
           "hard label noise hides. Select a row to review its samples.")
pairs = views.confused_pairs(counts, sim, ctx.classes, top=15)
if len(pairs) == 0:
    st.success("No disagreement at all between the given labels and this source.")
else:
    show = pairs[["given", "suggested", "samples", "share_of_given", "similarity"]].rename(
        columns={"suggested": "predicted", "share_of_given": "share of given class"})
    tev = st.dataframe(show, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                       key="conf_table", column_config={
                           "share of given class": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                                                   max_value=1),
                           "similarity": st.column_config.NumberColumn(format="%.3f")})
    try:
        sel_rows = tev.selection.rows
    except AttributeError:
        sel_rows = []
    r = pairs.iloc[sel_rows[0]] if sel_rows else None
    _pick_cell("table", (int(r["given_idx"]), int(r["suggested_idx"])) if r is not None else None)

st.markdown("#### Samples of a cell")
cell = st.session_state.get("conf_cell")
a, b, _ = st.columns([2, 2, 3], vertical_alignment="bottom")
g_sel = a.selectbox("Given", ctx.classes, index=cell[0] if cell else None, key=f"conf_g_{cell}",
                    placeholder="choose a class")
p_sel = b.selectbox("Predicted", ctx.classes, index=cell[1] if cell else None, key=f"conf_p_{cell}",
                    placeholder="choose a class")
if g_sel is None or p_sel is None:
    st.info("Click a cell of the heatmap, select a row of the table, or choose a given and a predicted class.",
            icon=":material/touch_app:")
    st.stop()
gi_, pi_ = ctx.classes.index(g_sel), ctx.classes.index(p_sel)
if (gi_, pi_) != cell:
    st.session_state["conf_cell"] = (gi_, pi_)
    st.query_params["conf_cell"] = f"{gi_},{pi_}"
    st.rerun()
cand = np.flatnonzero((ctx.scores["label_idx"].to_numpy() == gi_) & (pred == pi_))
rows = views.filter_rows(ctx.scores, ctx.state(), flagged_only=False, rows=cand)
st.markdown(f"Given **{md(g_sel)}**, predicted **{md(p_sel)}** by {registry.source(src).title}: **{len(rows):,}** "
            f"samples, {int(ctx.scores['flagged'].to_numpy()[rows].sum()):,} flagged.")
_ui.sample_grid(ctx, rows, "conf", empty="No sample in this cell.")
