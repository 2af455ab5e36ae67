"""Suspects: paged grid of flagged samples, most suspicious first, with filters and review actions."""
from __future__ import annotations

import streamlit as st

from clipcleaner_core import views
from pages import _ui

_ui.ensure_entrypoint(__file__)

ctx = _ui.require_ctx()
_ui.page_header("Suspects", "Flagged samples, most suspicious first (noise score). Decide per card, per page, or "
                "with the keyboard (press ? for the keys); every decision is saved at once.", ":material/grid_view:")

opts = views.criterion_options(ctx.scores, ctx.settings)
with st.container(border=True, key="sus_filters"):
    f1, f2, f3, f4, f5 = st.columns([2.6, 2.6, 3, 2, 2.4], vertical_alignment="bottom")
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

rows = views.filter_rows(ctx.scores, ctx.state(), flagged_only=not show_all and crit is None, given=given,
                         suggested=suggested, criterion=None if show_all else crit,
                         status=_ui.STATUS_FILTERS[status])
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
_ui.sample_grid(ctx, rows, "sus", empty=empty)
