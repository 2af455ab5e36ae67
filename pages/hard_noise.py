"""Hard noise: similar class pairs, their images side by side, and (with ground truth) which detector catches
hard flips (to the most similar class) versus easy ones — including a small-loss baseline."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from clipcleaner_core import baselines, evaluate, registry, views
from clipcleaner_core.evaluate import TruthFileError, truth_labels
from pages import _ui
from pages._safe import md, plot_all

SMALL_LOSS_AUTO = 20_000
"""Above this many samples the small-loss baseline (a logistic regression fit) is trained only on request."""

ctx = _ui.open_page(__file__, "Hard noise",
                    "Label noise is *hard* when an image is given the label of a class that looks alike: "
                    "classifiers trained on the noisy labels learn to agree with it. These pairs need the closest "
                    "look.",
                    ":material/compare:")

sim = ctx.array("class_similarity")
sim_src = ctx.settings.class_similarity_source or "class prototypes"
if sim is None or len(ctx.scores) == 0:
    st.info("This workspace has no class-similarity matrix. Re-scan the dataset on **Home**.")
    st.stop()

# --- ground truth: which detector catches hard flips? -----------------------------------------------------------
st.markdown("#### Which detector catches hard flips?")
tp = evaluate.truth_path(ctx.ws)
with st.expander("Ground-truth labels file" + (f": {md(tp)}" if tp else " (none set)"), expanded=tp is None,
                 icon=":material/fact_check:"):
    st.caption("A `path,label` CSV/Parquet of the *clean* labels (the demo writes `truth.csv`). Stored in the "
               "workspace as `truth.json`; it also turns on the **Evaluation** page.")
    new = st.text_input("Truth file", value=str(tp or ""), key="hn_truth")
    t1, t2 = st.columns(2)
    if t1.button("Use this truth file", key="hn_truth_set", icon=":material/check:"):
        try:
            evaluate.set_truth_path(ctx.ws, new)
            st.rerun()
        except TruthFileError as e:  # one line naming the file and the problem, never its content
            st.error(md(e), icon=":material/error:")
    if tp and t2.button("Forget it", key="hn_truth_clear", icon=":material/close:"):
        evaluate.set_truth_path(ctx.ws, None)
        st.rerun()


@st.cache_resource(max_entries=4, show_spinner="Training the small-loss baseline (in-sample logistic regression)…")
def _small_loss(path: str, generation: str) -> np.ndarray:
    return baselines.cached_small_loss(ctx.ws)


@st.cache_resource(max_entries=4, show_spinner=False)
def _truth(path: str, generation: str, tpath: str, tstamp: int) -> pd.Series:
    return truth_labels(ctx.scores, tpath)


def truth_section(tp) -> None:
    try:
        truth = _truth(ctx.path, ctx.generation, str(tp), _ui._mtime(tp))
    except TruthFileError as e:  # the file changed since it was set: say so, the rest of the page still works
        st.error(f"{md(e)}. Set another truth file above, or forget it.", icon=":material/error:")
        return
    tidx = views.truth_indices(ctx.scores, truth, ctx.classes)
    kinds = views.flip_kinds(ctx.scores["label_idx"].to_numpy(), tidx, sim)
    loss = None
    if len(ctx.scores) > SMALL_LOSS_AUTO and not baselines.small_loss_is_cached(ctx.ws):
        if st.button(f"Train the small-loss baseline ({len(ctx.scores):,} samples, roughly "
                     f"{max(1, round(len(ctx.scores) / 70_000))} min once, then cached)", key="hn_sl_btn",
                     icon=":material/model_training:"):
            loss = _small_loss(ctx.path, ctx.generation)
        else:
            st.caption(f"Above {SMALL_LOSS_AUTO:,} samples the small-loss baseline is trained only on request; the "
                       "detectors below need no training.")
    else:
        loss = _small_loss(ctx.path, ctx.generation)
    flag_default = ctx.scores["flagged"].to_numpy(dtype=bool)
    share = float(flag_default.mean())
    method = ctx.settings.method
    flags = {f"default ({method})": flag_default}
    for d in registry.DETECTORS:
        if d.flag_column in ctx.scores and d.key != method:
            flags[d.short] = ctx.scores[d.flag_column].to_numpy(dtype=bool)
    if loss is not None:
        flags[f"small-loss, top {share:.0%}"] = baselines.small_loss_flags(loss, share)
        flags["small-loss, GMM split"] = baselines.small_loss_flags(loss, None)
    tab = views.catch_table(kinds, flags)
    n_hard, n_easy = int((kinds == "hard").sum()), int((kinds == "easy").sum())
    st.markdown(f"Truth known for {int((kinds != 'unknown').sum()):,} samples: **{n_hard:,} hard flips** (given the "
                f"most similar class of the true class, by {md(sim_src)}) and **{n_easy:,} easy flips** (any other "
                "class).")
    fig = go.Figure([
        go.Bar(name="hard flips caught", x=plot_all(tab["detector"]), y=tab["hard_recall"], marker_color="#4f46e5",
               text=[f"{c}/{t}" for c, t in zip(tab["hard_caught"], tab["hard_total"])], textposition="outside"),
        go.Bar(name="easy flips caught", x=plot_all(tab["detector"]), y=tab["easy_recall"], marker_color="#a5b4fc",
               text=[f"{c}/{t}" for c, t in zip(tab["easy_caught"], tab["easy_total"])], textposition="outside"),
    ])
    fig.update_layout(barmode="group", height=380, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(
        title="share caught (recall)", tickformat=".0%", range=[0, 1.12]), legend=dict(orientation="h", y=1.12))
    st.plotly_chart(fig, width="stretch", config={"displayModeBar": False})
    st.dataframe(tab, hide_index=True, width="stretch", column_config={
        "precision": st.column_config.NumberColumn(format="%.3f"),
        "hard_recall": st.column_config.NumberColumn("hard recall", format="%.3f"),
        "easy_recall": st.column_config.NumberColumn("easy recall", format="%.3f"),
        "recall": st.column_config.NumberColumn(format="%.3f")})
    st.caption("Small-loss baseline: a logistic regression trained in-sample on the *noisy* labels of the same "
               "embeddings; the samples with the largest cross-entropy are flagged — the same share the default "
               f"method flags ({share:.1%}, a like-for-like budget), or those a 2-component GMM on the loss puts in "
               "the high-loss mode. A classifier fitted to the noisy labels tends to fit hard flips too; compare the "
               "hard-recall column at the same budget.")


if tp is None:
    st.info("Ground truth is unknown for this dataset, so caught/missed flips cannot be counted. Set a truth file "
            "above (the offline demo has one).", icon=":material/help:")
else:
    truth_section(tp)

st.divider()
st.markdown("#### Most similar class pairs")
st.caption(f"Cosine similarity between **{md(sim_src)}**"
           + (" (the pixels encoder is not CLIP: these are raw-pixel centroids)." if ctx.settings.encoder_kind
              == "pixels" else "."))
pairs = views.similar_pairs(sim, ctx.classes, top=10)
K = len(ctx.classes)
p_ens = ctx.probs("ens")
counts = p_ens.confusion(ctx.scores["label_idx"].to_numpy()) if p_ens is not None else np.zeros((K, K), dtype=int)
pairs["a→b suggested"] = counts[pairs["a_idx"], pairs["b_idx"]]
pairs["b→a suggested"] = counts[pairs["b_idx"], pairs["a_idx"]]
tsel = st.dataframe(pairs[["a", "b", "similarity", "a→b suggested", "b→a suggested"]], hide_index=True,
                    width="stretch", on_select="rerun", selection_mode="single-row", key="hn_pairs",
                    column_config={"similarity": st.column_config.ProgressColumn(format="%.3f", min_value=float(
                        min(0.0, pairs["similarity"].min())), max_value=1.0),
                        "a→b suggested": st.column_config.NumberColumn(help="samples given a, suggested b"),
                        "b→a suggested": st.column_config.NumberColumn(help="samples given b, suggested a")})
try:
    chosen = list(tsel.selection.rows)
except AttributeError:
    chosen = []
if chosen:  # the chosen pair goes into the URL (reload, shared link)
    pick = int(chosen[0])
    st.query_params["hn_pair"] = str(pick)
else:
    q = str(st.query_params.get("hn_pair", "0"))
    pick = int(q) if q.isdigit() and int(q) < len(pairs) else 0
pr = pairs.iloc[pick] if len(pairs) else None

if pr is not None:
    a, b = str(pr["a"]), str(pr["b"])
    st.markdown(f"#### {md(a)} vs {md(b)} — side by side")
    st.caption("Top: typical images of each class (lowest noise score). Bottom: images *given* one class but "
               "*suggested* the other — review them in the grid below.")
    la, lb = st.columns(2, gap="large")
    for col, cname in ((la, a), (lb, b)):
        with col:
            st.markdown(f"**typical {md(cname)}**")
            ex = views.class_examples(ctx.scores, cname, n=6, by="confident")
            if len(ex):
                cs = st.columns(6)
                for c, im in zip(cs, _ui.thumbs(ctx, ex)):
                    c.image(im, width="stretch")
    cross = np.flatnonzero(((ctx.scores["label"] == a) & (ctx.scores["suggested_label"] == b)
                            | (ctx.scores["label"] == b) & (ctx.scores["suggested_label"] == a)).to_numpy())
    rows = views.filter_rows(ctx.scores, ctx.state(), flagged_only=False, rows=cross)
    st.markdown(f"**Given {md(a)} but suggested {md(b)}, or the reverse: {len(rows):,} samples**")
    _ui.sample_grid(ctx, rows, "hn", default_page_size=8,
                    empty=f"No sample is suggested to switch between {md(a)} and {md(b)}.")

