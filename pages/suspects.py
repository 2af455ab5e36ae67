"""Suspects: paged grid of flagged samples, most suspicious first by the current ranking (the newest refit from
the decisions, else the scan's), with filters, review actions, the errors-left estimate and the spot check."""
from __future__ import annotations

import numpy as np
import streamlit as st

from clipcleaner_core import estimate, views
from pages import _learn, _ui

ctx = _ui.open_page(__file__, "Suspects",
                    "Flagged samples, most suspicious first (the current ranking: refitted from your "
                    "decisions as you go). Decide per card, per page, or with the keyboard (press ? for the keys); "
                    "every decision is saved at once.", ":material/grid_view:")
rank = _learn.ranking(ctx)

opts = views.criterion_options(ctx.scores, ctx.settings)
with st.container(border=True, key="sus_filters"):
    f1, f2, f3, f4, f5, f6 = st.columns([2.2, 2.2, 2.6, 1.7, 2.1, 1.8], vertical_alignment="bottom")
    given = f1.multiselect("Given class", ctx.classes, key="sus_given", placeholder="any", bind="query-params")
    suggested = f2.multiselect("Suggested class", ctx.classes, key="sus_sugg", placeholder="any",
                               bind="query-params")
    crit = f3.selectbox("Flagged by", [None, *opts], key="sus_crit", bind="query-params",
                        format_func=lambda k: "the default method" if k is None else opts.get(k, k),
                        help="A criterion, detector or issue type lists every sample *it* flags, whether or not "
                             "the default method flags it too; \"the default method\" lists what the scan's "
                             "method flags.")
    status = f4.selectbox("Review status", list(_ui.STATUS_FILTERS), key="sus_status", bind="query-params")
    show_all = f5.toggle("Unflagged too", key="sus_all", bind="query-params",
                         help="Include samples that are not flagged (by the default method, or by the criterion "
                              "chosen in “Flagged by”)")
    spot = f6.toggle("Spot check", key="sus_spot", bind="query-params",
                     help="A fixed random sample of the unflagged images: reviewing it measures what the flags "
                          "miss, so the errors-left estimate can cover the whole dataset")

if spot:  # the stored random sample, in its drawn order (any prefix of it is itself a random sample)
    sc = estimate.spot_check(ctx.ws, ctx.scores)
    cand = ctx.rows_of(sc.sample_ids)
    rows = views.filter_rows(ctx.scores, ctx.state(), flagged_only=False, given=given, suggested=suggested,
                             status=_ui.STATUS_FILTERS[status], rows=cand[cand >= 0])
    keep = np.zeros(len(ctx.scores), dtype=bool)
    keep[rows] = True
    rows = cand[(cand >= 0) & keep[np.maximum(cand, 0)]]
else:
    rows = views.filter_rows(ctx.scores, ctx.state(), flagged_only=False, given=given, suggested=suggested,
                             criterion=None if show_all else crit, status=_ui.STATUS_FILTERS[status])
    if not show_all and crit is None:  # flagged by the scan or by the current refit
        flagged_now = ctx.scores["flagged"].to_numpy(dtype=bool) | rank["flagged"].to_numpy(dtype=bool)
        rows = rows[flagged_now[rows]]
    score = rank["rank_score"].to_numpy(dtype=np.float64)
    rows = rows[np.lexsort((rows, -ctx.scores["noise_score"].to_numpy(dtype=np.float64)[rows],
                            -np.nan_to_num(score[rows], nan=-np.inf)))]
n_flagged = int(ctx.scores["flagged"].sum())
if n_flagged:
    dc = views.decision_counts(ctx.state(), ctx.scores["flagged"].to_numpy(dtype=bool))
    done = n_flagged - dc["undecided"]
    st.progress(done / n_flagged, text=f"Reviewed {done:,} of {n_flagged:,} flagged samples "
                f"({dc['accept']:,} kept · {dc['relabel']:,} relabelled · {dc['exclude']:,} excluded · "
                f"{dc['unsure']:,} unsure)")
if n_flagged == 0 and not show_all and crit is None:
    st.success("No sample is flagged by the default method. Choose a criterion in **Flagged by**, or switch on "
               "**Unflagged too** to browse everything.", icon=":material/verified:")
empty = ("Nothing left to review with these filters — well done. Try **Review status: all**, or go to "
         "**Export** for the cleaned CSV." if _ui.STATUS_FILTERS[status] == ["undecided"] else
         "No sample matches these filters. Clear a filter to see more.")
_learn.show_errors_left(ctx, key="sus_estimate")
if spot:
    st.caption(f"Spot check: {sc.size:,} images drawn at random from the {sc.population:,} unflagged ones "
               f"(seed {sc.seed}), in their drawn order. Decide each one: a kept label counts as correct, a relabel "
               "or an exclusion as an error the flags missed.")
_learn.refit_panel(ctx, rank["fit_id"].iloc[0] if len(rank) else None)
_ui.sample_grid(ctx, rows, "spot" if spot else "sus", empty=empty)
