"""Duplicates: review one duplicate group at once — keep one and exclude the copies, or give them all one label."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from clipcleaner_core import duplicates
from pages import _ui
from pages._safe import md

ctx = _ui.open_page(__file__, "Duplicates",
                    "Images with the same pixels (content hash) or closer than the dataset's calibrated "
                    "near-duplicate threshold. Review a group at once; each button is one undo step.",
                    ":material/content_copy:")

if "dup_group" not in ctx.scores:
    st.info("This workspace was scanned before duplicates were detected: scan it again to find them.",
            icon=":material/update:")
    st.stop()


@st.cache_data(max_entries=8, show_spinner=False)
def _groups(path: str, generation: str):
    return duplicates.group_table(ctx.scores)


groups = _groups(ctx.path, ctx.generation)
if not len(groups):
    st.success("No duplicates in this dataset.", icon=":material/verified:")
    st.stop()

f1, f2, f3 = st.columns([2, 2, 3], vertical_alignment="bottom")
only_conflict = f1.toggle("Conflicting labels only", key="dup_conflict_only")
only_leak = f2.toggle("Across splits only", key="dup_leak_only", disabled=not bool(groups["leak"].any()))
shown = groups[(groups["conflict"] | ~only_conflict) & (groups["leak"] | ~only_leak)].reset_index(drop=True)
f3.caption(f"{len(groups):,} groups · {int(groups['size'].sum()):,} images · {int(groups['conflict'].sum()):,} with "
           f"conflicting labels · {int(groups['leak'].sum()):,} across splits")
if not len(shown):
    st.info("No group matches these filters.", icon=":material/filter_alt_off:")
    st.stop()

with st.expander(f"All groups ({len(shown):,})", icon=":material/table_rows:"):
    st.dataframe(shown[["dup_group", "size", "kind", "conflict", "leak", "labels"]], hide_index=True, width="stretch")


def _group_name(i: int) -> str:
    g = shown.iloc[i]
    tags = [str(g["kind"])] + (["conflicting labels"] if g["conflict"] else []) + (["across splits"] if g["leak"]
                                                                                  else [])
    return f"group {int(g['dup_group'])} · {int(g['size'])} images · {', '.join(tags)}"


pick = st.selectbox("Group", range(len(shown)), format_func=_group_name, key="dup_pick")
rows = np.asarray(shown.iloc[int(pick)]["rows"], dtype=np.int64)
sub = ctx.scores.iloc[rows]
names = [Path(str(p)).name for p in sub["path"]]


def _record(items: list[dict], msg: str) -> None:
    """One transaction, one undo group of this tab; the outcome is shown under the buttons."""
    out = _ui.write_items(ctx, items, grid="dupgrid")
    st.session_state["dup_outcome"] = _ui.Outcome(out.kind, msg) if out.kind == "ok" else out


def _undo() -> None:
    st.session_state["dup_outcome"] = _ui.undo(ctx)


def keep_one(keep: int) -> None:
    sid = str(sub["sample_id"].iloc[keep])
    items = [{"sample_id": str(s), "action": "accept" if j == keep else "exclude", "given_label": str(g),
              "note": None if j == keep else f"duplicate of {sid}"}
             for j, (s, g) in enumerate(zip(sub["sample_id"], sub["label"]))]
    _record(items, f"Kept {names[keep]}, excluded {len(items) - 1} cop{'y' if len(items) == 2 else 'ies'}. Undo: Z")


def one_label(label: str) -> None:
    items = [{"sample_id": str(s), "action": "accept" if g == label else "relabel",
              "label": None if g == label else label, "given_label": str(g)}
             for s, g in zip(sub["sample_id"], sub["label"])]
    _record(items, f"Gave all {len(items)} images one label. Undo: Z")


with st.container(border=True, key="dup_group_actions"):
    a1, a2, a3, a4, a5 = st.columns([2.6, 2.8, 2.6, 2.4, 0.8], vertical_alignment="bottom")
    keep = a1.selectbox("Keep", range(len(rows)), format_func=lambda j: names[j], key="dup_keep",
                        help="The image to keep; the others are excluded as its duplicates")
    a2.button("Keep it, exclude the rest", key="dup_keep_go", on_click=keep_one, args=(int(keep),),
              icon=":material/filter_1:", type="primary")
    common = sub["label"].mode()
    default = ctx.classes.index(str(common.iloc[0])) if len(common) and str(common.iloc[0]) in ctx.classes else 0
    label = a3.selectbox("One label for all", ctx.classes, index=default, key="dup_label")
    a4.button("Give all this label", key="dup_label_go", on_click=one_label, args=(str(label),),
              icon=":material/label:")
    a5.button("", key="dup_undo", on_click=_undo, icon=":material/undo:", help="Undo this tab's last action")
    if "split" in sub:
        st.caption("Splits in this group:")
        st.text(", ".join(f"{n}: {s or '?'}" for n, s in zip(names, sub["split"])))

    done = st.session_state.pop("dup_outcome", None)
    if done is not None:
        {"ok": st.success, "info": st.info}.get(done.kind, st.error)(md(done.text))  # file names are data
_ui.sample_grid(ctx, rows, "dupgrid", shortcuts=False, columns=4, default_page_size=12)
