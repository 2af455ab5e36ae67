"""Evaluation (shown when a ground-truth file is known): precision / recall / F1 / AUROC per detector, PR curves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from clipcleaner_core import active, evaluate, registry, simulate
from pages import _ui
from pages._safe import md

ctx = _ui.open_page(__file__, "Evaluation",
                    "How well each detector finds the truly mislabelled samples, measured against the "
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

# --- simulated review (issue 11): an oracle follows the queue; how fast does each order find the errors? -----------
st.markdown("#### Simulated review: errors found vs samples reviewed")
st.caption("An oracle reviewer (its decisions are the truth file's labels) reviews the queue in three orders: "
           "**active** refits from the decisions every 25 reviews (as the app does), **static** keeps the scan's "
           "ranking, **random** is the baseline. Nothing is written: the review database and the refits are not "
           "touched. Takes seconds (active: ~20 s for the demo at a budget of its error count).")
s1, s2, s3 = st.columns([2, 4, 2], vertical_alignment="bottom")
budget = int(s1.number_input("Budget (samples reviewed)", min_value=10, max_value=len(ctx.scores), step=25,
                             value=int(min(max(res["mislabelled"], 10), len(ctx.scores))), key="ev_sim_budget"))
strategies = s2.multiselect("Orders", list(simulate.STRATEGIES), default=list(simulate.STRATEGIES), key="ev_sim_strats")


@st.cache_resource(show_spinner=False)
def _sim_results() -> dict:
    """Simulation results of this server, keyed on workspace, generation, truth file (and its mtime), budget and
    order: a result is computed once."""
    return {}


@st.cache_resource(max_entries=2, show_spinner=False)
def _sim_inputs(path: str, generation: str):
    return active.load_inputs(_ui._workspace(path), _ui._scores(path, generation))


def _sim_key(strategy: str) -> tuple:
    return ctx.path, ctx.generation, str(tp), _ui._mtime(tp), budget, strategy


cache = _sim_results()
if s3.button("Run the simulation", key="ev_sim_go", icon=":material/play_arrow:", width="stretch"):
    todo = [s for s in strategies if _sim_key(s) not in cache]
    bar = st.progress(0.0, text="Simulating…")
    try:
        for i, strat in enumerate(todo):
            def _tick(stage: str, done: int, total: int, i: int = i, strat: str = strat) -> None:
                frac = (i + (done / total if total else 1.0)) / len(todo)
                bar.progress(min(frac, 1.0), text=f"Simulating the {strat} order: {done:,} / {total:,} reviewed")

            cache[_sim_key(strat)] = simulate.simulate(ctx.ws, tp, budget, strat,
                                                       inputs=_sim_inputs(ctx.path, ctx.generation), progress=_tick)
    except (evaluate.TruthFileError, ValueError) as e:
        st.error(md(f"The simulation could not run: {e}"), icon=":material/error:")
    bar.empty()
done = {s: cache[_sim_key(s)] for s in strategies if _sim_key(s) in cache}
if done:
    colours = {"active": "#4f46e5", "static": "#0ea5e9", "random": "#94a3b8"}
    sim = go.Figure()
    for strat, r in done.items():
        cv = pd.DataFrame(r.curve)
        sim.add_trace(go.Scatter(x=cv["reviewed"], y=cv["errors_found"], mode="lines+markers", name=strat,
                                 line=dict(color=colours.get(strat)), marker=dict(size=4),
                                 hovertemplate="%{x} reviewed: %{y} errors found<extra>" + strat + "</extra>"))
    total = next(iter(done.values())).errors_total
    sim.add_trace(go.Scatter(x=[0, min(budget, total), budget], y=[0, min(budget, total), min(budget, total)],
                             mode="lines", name="every review an error", line=dict(color="#cbd5e1", dash="dot")))
    sim.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="samples reviewed",
                      yaxis_title="label errors found", legend=dict(orientation="h", y=1.1))
    st.plotly_chart(sim, width="stretch", config={"displaylogo": False}, key="ev_sim_chart")
    st.dataframe(pd.DataFrame([{
        "order": s, "reviewed": r.reviewed, "errors found": r.errors_found, "errors in the dataset": r.errors_total,
        "refits": r.refits, "true left": r.true_left,
        "estimated left (95%)": (f"{r.estimate_left:,.0f} ({r.estimate_low:,.0f}–{r.estimate_high:,.0f})"
                                 if r.estimate_status == "ok" else f"not estimated: {r.estimate_reason}"),
        "inside": r.inside_interval, "seconds": r.seconds} for s, r in done.items()]),
        hide_index=True, width="stretch", key="ev_sim_table")
    st.caption("The spot check (a random sample of the unflagged images) is reviewed apart and enters only the "
               "estimate of the errors left; 'true left' excludes the errors it found.")
