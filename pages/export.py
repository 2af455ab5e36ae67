"""Export: the cleaned CSV (core export format), a JSON report and optionally an ImageFolder of the cleaned set."""
from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from clipcleaner_core import export, views
from clipcleaner_core.decisions import ReviewStoreError
from pages import _learn, _ui
from pages._safe import md

ctx = _ui.open_page(__file__, "Export",
                    "Apply your decisions and download the cleaned label table. Source images are never "
                    "modified; files are also written into the workspace's `exports/` folder.", ":material/download:")

state = ctx.state()
flag = ctx.scores["flagged"].to_numpy(dtype=bool)
allc = views.decision_counts(state)
flc = views.decision_counts(state, flag)
m = st.columns(5)
m[0].metric("Kept", f"{allc['accept']:,}")
m[1].metric("Relabelled", f"{allc['relabel']:,}")
m[2].metric("Excluded", f"{allc['exclude']:,}")
m[3].metric("Unsure", f"{allc['unsure']:,}")
m[4].metric("Flagged, not reviewed", f"{flc['undecided']:,}", f"of {int(flag.sum()):,} flagged", delta_color="off",
            delta_arrow="off")

EXCL = {"drop": "drop them", "keep": "keep them (decision column says exclude)"}
UND = {"keep": "keep the given label", "suggested": "flagged ones: take the suggestion",
       "drop": "drop every undecided sample", "drop-flagged": "drop only flagged undecided samples"}
c1, c2 = st.columns(2)
excluded = c1.radio("Excluded samples", list(EXCL), format_func=EXCL.get, key="ex_excluded")
undecided = c2.radio("Undecided samples (incl. 'unsure')", list(UND), format_func=UND.get, key="ex_undecided",
                     help="'unsure' counts as a decision in the decision column but keeps the given label.")


@st.cache_data(max_entries=16, show_spinner=False)
def _table(path: str, generation: str, dec_stamp: tuple, excluded: str, undecided: str):
    t = export.cleaned_table(ctx.scores, ctx.decisions(), excluded=excluded, undecided=undecided,
                             method=ctx.settings.method)
    return t, export.to_safe_csv(t)


table, csv_text = _table(ctx.path, ctx.generation, ctx.decisions_stamp(), excluded, undecided)
changed = int((table["label"] != table["original_label"]).sum())
st.markdown(f"The cleaned table has **{len(table):,}** rows ({len(ctx.scores) - len(table):,} dropped), "
            f"**{changed:,}** with a new label.")


def write_files() -> None:
    """Write the cleaned CSV and the report into the workspace; one error line instead of a traceback when the
    decisions cannot be applied (a relabel to a label that is not a class) or the review database is unusable."""
    st.session_state.pop("ex_error", None)
    try:
        path, t = export.export_csv(ctx.ws, excluded=excluded, undecided=undecided)
        rp, _ = export.export_report(ctx.ws, t, extra={"export_choices": {"excluded": excluded,
                                                                           "undecided": undecided}})
    except (ValueError, ReviewStoreError, OSError) as e:
        st.session_state["ex_written"] = []
        st.session_state["ex_error"] = f"Nothing was written: {e}"
        return
    st.session_state["ex_written"] = [str(path), str(rp)]


b1, b2, b3 = st.columns([2, 2, 3])
b1.download_button("Download cleaned CSV", csv_text, file_name=f"{ctx.ws.path.name}-cleaned.csv", mime="text/csv",
                   key="ex_dl_csv", type="primary", icon=":material/download:", on_click=write_files,
                   width="stretch")
b2.button("Save into the workspace", key="ex_save", on_click=write_files, icon=":material/save:", width="stretch",
          help="Writes exports/cleaned.csv and exports/report.json in the workspace")
rep_path = ctx.ws.exports_dir / "report.json"
if st.session_state.get("ex_error"):
    st.error(md(st.session_state["ex_error"]), icon=":material/error:")
elif st.session_state.get("ex_written"):
    st.success("Saved " + " and ".join(md(p) for p in st.session_state["ex_written"]), icon=":material/save:")
if rep_path.is_file():
    b3.download_button("Download last report (JSON)", rep_path.read_bytes(), file_name="report.json",
                       mime="application/json", key="ex_dl_rep", icon=":material/description:", on_click="ignore")

tab_prev, tab_rel, tab_rep = st.tabs(["Preview", "Label changes", "Report"])
with tab_prev:
    st.dataframe(table.head(500), hide_index=True, width="stretch", height=320)
    st.caption(f"First {min(500, len(table)):,} of {len(table):,} rows. Columns: {', '.join(export.EXPORT_COLUMNS)}.")
with tab_rel:
    ch = table[table["label"] != table["original_label"]]
    if len(ch):
        pairs = ch.groupby(["original_label", "label"]).size().rename("samples").reset_index() \
            .sort_values("samples", ascending=False)
        st.dataframe(pairs, hide_index=True, width="stretch")
    else:
        st.caption("No label changes yet: relabel samples on the Suspects page, or choose 'take the suggestion' "
                   "for undecided flagged samples.")
with tab_rep:
    if rep_path.is_file():
        st.json(json.loads(rep_path.read_text(encoding="utf-8")), expanded=1)
    else:
        st.caption("No report yet: download the CSV or save into the workspace.")

_learn.show_errors_left(ctx, key="ex_estimate")
_learn.downstream_panel(ctx, undecided)

st.markdown("#### ImageFolder of the cleaned set (optional)")
st.caption("`OUT/<label>/<image>` for every row of the cleaned table — symbolic links (fast, no extra space) or "
           "copies. Built in a temporary folder and moved into place. The folder must be new, empty or an earlier "
           "ImageFolder export of clipcleaner: nothing else is ever replaced.")
i1, i2, i3 = st.columns([4, 2, 2], vertical_alignment="bottom")
out_dir = i1.text_input("Output folder", value=str(ctx.ws.exports_dir / "imagefolder"), key="ex_if_dir")
mode = i2.segmented_control("Mode", ["link", "copy"], default="link", key="ex_if_mode", required=True)
if i3.button("Build ImageFolder", key="ex_if_go", icon=":material/create_new_folder:", width="stretch"):
    try:
        with st.spinner("Writing the ImageFolder…"):
            info = export.export_imagefolder(ctx.ws, table, Path(out_dir).expanduser(), mode=mode)
        st.success(f"Wrote {info['images']:,} images in {info['classes']} class folders ({info['mode']}) to "
                   f"{md(info['path'])}")
    except (OSError, ValueError) as e:  # ValueError: guards.UnsafeTargetError, a folder it must not replace
        st.error(f"Could not write the ImageFolder: {md(e)}", icon=":material/block:")
