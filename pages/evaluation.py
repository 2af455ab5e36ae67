"""Evaluation (shown when a ground-truth file is known): precision / recall / F1 / AUROC per detector, PR curves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from clipcleaner_core import evaluate, registry
from pages import _ui
from pages._safe import md

_ui.ensure_entrypoint(__file__)

ctx = _ui.require_ctx()
_ui.page_header("Evaluation", "How well each detector finds the truly mislabelled samples, measured against the "
                "ground-truth labels file.", ":material/analytics:")
tp = evaluate.truth_path(ctx.ws)
if tp is None:
    st.info("No ground-truth file is known for this workspace. Set one on the **Hard noise** page.")
    st.stop()
st.caption(f"Truth: {md(tp)}")


@st.cache_resource(max_entries=4, show_spinner=False)
def _truth(path: str, generation: str, tpath: str, tstamp: int) -> pd.Series:
    return evaluate.truth_labels(ctx.scores, tpath)


try:
    truth = _truth(ctx.path, ctx.generation, str(tp), _ui._mtime(tp))
except evaluate.TruthFileError as e:  # one line naming the file and the problem, never its content
    st.error(f"{md(e)}. Set another truth file on the **Hard noise** page.", icon=":material/error:")
    st.stop()
method = ctx.settings.method
res = evaluate.evaluate_scores(ctx.scores, truth, method)
if res["samples"] == 0:
    st.warning("No scored sample appears in the truth file (paths are matched as absolute paths).")
    st.stop()
m = st.columns(4)
m[0].metric("Samples with truth", f"{res['samples']:,}")
m[1].metric("Mislabelled", f"{res['mislabelled']:,}", f"{res['noise_rate']:.1%}", delta_color="off", delta_arrow="off")
m[2].metric("Not in truth file", f"{res['unmatched']:,}")
m[3].metric("Default method", md(method))

rows = pd.DataFrame([{"key": k, **v} for k, v in res["detectors"].items()])
st.dataframe(rows[["detector", "flagged", "precision", "recall", "f1", "auroc", "avg_precision"]], hide_index=True,
             width="stretch", column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                             ("precision", "recall", "f1", "auroc", "avg_precision")})
st.caption("Precision / recall / F1 of each detector's flags; AUROC and average precision of its continuous score.")

known = truth.notna().to_numpy()
noisy = ctx.scores["label"].astype(str).to_numpy()[known] != truth[known].astype(str).to_numpy()
fig = go.Figure()
for det in registry.DETECTORS:
    key, title = det.key, res["detectors"].get(det.key, {}).get("detector", det.title)
    if det.score_column not in ctx.scores or key not in res["detectors"]:
        continue
    pr = evaluate.pr_curve(noisy, ctx.scores[det.score_column].to_numpy()[known])
    if len(pr) > 4000:  # thin the curve for the browser; the metrics above use every point
        pr = pr.iloc[np.linspace(0, len(pr) - 1, 4000).astype(int)]
    fig.add_trace(go.Scatter(x=pr["recall"], y=pr["precision"], mode="lines", name=title,
                             line=dict(color=det.colour, width=2.5 if key == method else 1.8),
                             hovertemplate="recall %{x:.2f}, precision %{y:.2f}<extra>" + title + "</extra>"))
    d = res["detectors"][key]
    fig.add_trace(go.Scatter(x=[d["recall"]], y=[d["precision"]], mode="markers", showlegend=False,
                             marker=dict(color=det.colour, size=10, symbol="diamond",
                                         line=dict(color="white", width=1)),
                             hovertemplate=f"{title} flags: recall %{{x:.2f}}, precision %{{y:.2f}}<extra></extra>"))
fig.add_hline(y=res["noise_rate"], line_dash="dot", line_color="#94a3b8",
              annotation_text=f"random ({res['noise_rate']:.0%})")
fig.update_layout(height=460, margin=dict(l=10, r=10, t=30, b=10), xaxis=dict(title="recall", range=[0, 1.01]),
                  yaxis=dict(title="precision", range=[0, 1.02]), legend=dict(orientation="h", y=1.08))
st.markdown("#### Precision–recall curves")
st.plotly_chart(fig, width="stretch", config={"displaylogo": False})
st.caption("Lines: each detector's score swept over all thresholds. Diamonds: the detector's own flag.")
