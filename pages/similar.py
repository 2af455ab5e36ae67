"""More like this: from one sample (typically a confirmed error) to the images like it with the same given label,
as a review grid with a bulk "apply the same decision"; and, with a CLIP encoder, text search."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from clipcleaner_core import review, similar
from clipcleaner_core.decisions import ReviewStoreError
from pages import _ui
from pages._safe import md

ctx = _ui.open_page(__file__, "More like this",
                    "Errors come in clusters: from one sample, review its nearest neighbours (same "
                    "given label) and apply the same decision to all of them at once — one undo step. With a CLIP "
                    "encoder you can also search the images by a text description.", ":material/join_inner:")

MODES = {"similar": "Similar images", "text": "Text search"}
mode = st.segmented_control("Find", list(MODES), format_func=MODES.get, default="similar", key="mlt_mode",
                            required=True, bind="query-params")
names = ctx.scores["path"].map(review.file_name).to_numpy(dtype=object)
labels = ctx.scores["label"].astype(str).to_numpy(dtype=object)


def _recent_samples() -> list[str]:
    """Decided samples, most recent first: this tab's own last decisions, then everybody's (at most 50)."""
    mine = [sid for e in reversed(_ui.tab_history().entries) for sid in e.sample_ids[:1]]
    dec = ctx.decisions()
    theirs = list(dec.sort_values("updated_at", ascending=False)["sample_id"].astype(str)) if len(dec) else []
    out = list(dict.fromkeys(s for s in mine + theirs if ctx.rows_of([s])[0] >= 0))
    return out[:50]


def _current(sid: str) -> tuple[str | None, str | None, str | None]:
    """(action, label, note) of the sample's current decision; (None, None, None) when undecided."""
    dec = ctx.decisions()
    hit = dec[dec["sample_id"].astype(str) == sid]
    if not len(hit):
        return None, None, None
    action, label = str(hit["action"].iloc[-1]), hit["label"].iloc[-1]
    label = None if label is None or pd.isna(label) else str(label)
    note = None
    if action == "exclude":
        h = ctx.store().history(sid, limit=1)
        note = None if not len(h) or pd.isna(h["note"].iloc[0]) else str(h["note"].iloc[0])
    return action, label, note


def _decision_words(action: str | None, label: str | None, note: str | None) -> str:
    if action is None:
        return "not reviewed"
    if action == "relabel":
        return f"relabel → {label}"
    return f"{review.ACTION_WORDS.get(action, action)}" + (f" ({note})" if note else "")


def _apply_same(sid: str, shown: list[str]) -> None:
    """The sample's decision for every sample ``shown``: one transaction, one undo group of this tab."""
    action, label, note = _current(sid)
    if action is None:
        st.session_state["mlt_outcome"] = _ui.Outcome("info", "That sample is not decided yet: decide it first.")
        return
    rows = ctx.rows_of(shown)
    items = [{"sample_id": s, "action": "accept" if action == "relabel" and label == labels[r] else action,
              "label": label if action == "relabel" and label != labels[r] else None,
              "given_label": str(labels[r]), "note": note} for s, r in zip(shown, rows) if r >= 0]
    st.session_state["mlt_outcome"] = _ui.write_items(ctx, items, grid="mlt")


def _undo() -> None:
    st.session_state["mlt_outcome"] = _ui.undo(ctx)


def _outcome() -> None:
    done = st.session_state.pop("mlt_outcome", None)
    if done is not None:
        {"ok": st.success, "info": st.info}.get(done.kind, st.error)(md(done.text))  # file names are data


def _resolve(text: str) -> int | None:
    try:
        return similar._resolve_row(ctx.scores, text.strip())
    except ValueError:
        return None


if mode == "similar":
    recent = _recent_samples()
    wanted = st.query_params.get("mlt_sample")
    options = list(dict.fromkeys(([wanted] if wanted and ctx.rows_of([wanted])[0] >= 0 else []) + recent))
    with st.container(border=True, key="mlt_controls"):
        c1, c2, c3, c4, c5 = st.columns([3, 2.2, 1.1, 2, 2.1], vertical_alignment="bottom")

        def _fmt(s: str) -> str:
            r = int(ctx.rows_of([s])[0])
            return f"{names[r]} · {labels[r]} · {_decision_words(*_current(s))}"

        pick = c1.selectbox("Sample (recent decisions first)", options, format_func=_fmt, key="mlt_pick",
                            index=0 if options else None, placeholder="no decision yet")
        typed = c2.text_input("…or a sample id or path", key="mlt_any", placeholder="sample_id or data path")
        k = int(c3.number_input("How many", min_value=4, max_value=500, value=24, step=4, key="mlt_k"))
        same = c4.toggle("Same given label", value=True, key="mlt_same")
        hide = c5.toggle("Hide decided", value=True, key="mlt_hide",
                         help="Leave out samples that already have a decision")
    row = _resolve(typed) if typed.strip() else (int(ctx.rows_of([pick])[0]) if pick else None)
    if typed.strip() and row is None:
        st.error(md(f"{typed.strip()}: not a scored sample of this workspace (neither a sample id nor a path)."),
                 icon=":material/error:")
        st.stop()
    if row is None:
        st.info("Decide a sample on the Suspects page (or give a sample id or path above): its look-alikes show here.",
                icon=":material/join_inner:")
        st.stop()
    sid = str(ctx.scores["sample_id"].iloc[row])
    st.query_params["mlt_sample"] = sid
    decided = np.flatnonzero(ctx.state()["status"].to_numpy() != "undecided") if hide else None
    res = similar.more_like_this(ctx.ws, row, k, same_label=same, exclude_rows=decided, scores=ctx.scores)
    rows = res["row"].to_numpy(dtype=np.int64)
    action, label, note = _current(sid)
    with st.container(border=True, key="mlt_source"):
        i1, i2 = st.columns([1, 5], vertical_alignment="center")
        i1.image(_ui.thumbs(ctx, np.array([row]))[0], width=96)
        i2.markdown(f"**{md(names[row])}** · given label **{md(labels[row])}** · "
                    f"{md(_decision_words(action, label, note))}")
        i2.caption(f"{len(rows):,} nearest neighbours" + (" with the same given label" if same else "")
                   + (", undecided only" if hide else "") + (f"; cosine similarity {res['similarity'].max():.3f} to "
                                                             f"{res['similarity'].min():.3f}" if len(res) else ""))
        b1, b2 = i2.columns([5, 1], vertical_alignment="bottom")
        word = _decision_words(action, label, note)
        b1.button(f"Apply “{md(word)}” to all {len(rows):,} shown", key="mlt_apply", type="primary",
                  icon=":material/done_all:", on_click=_apply_same, args=(sid, [str(s) for s in res["sample_id"]]),
                  disabled=action is None or not len(rows),
                  help="The same decision as this sample for every image in the grid below: one undo step (Z)")
        b2.button("", key="mlt_undo", on_click=_undo, icon=":material/undo:", help="Undo this tab's last action")
        _outcome()
    _ui.sample_grid(ctx, rows, "mlt", empty="No other sample qualifies (try switching off “Same given label” or "
                    "“Hide decided”).")
else:
    @st.cache_resource(max_entries=2, show_spinner="Loading the scan's CLIP text tower…")
    def _text_encoder(path: str, generation: str):
        return similar.text_encoder(_ui._workspace(path))

    enc = _text_encoder(ctx.path, ctx.generation)
    if isinstance(enc, str):
        st.info(md(enc[0].upper() + enc[1:] + "."), icon=":material/block:")
        st.stop()
    with st.container(border=True, key="txt_controls"):
        t1, t2, t3 = st.columns([5, 2.5, 1.3], vertical_alignment="bottom")
        query = t1.text_input("Describe the images", key="txt_q", placeholder="a photo of a wolf",
                              bind="query-params")
        given = t2.selectbox("Given label", [None, *ctx.classes], key="txt_label",
                             format_func=lambda c: "any" if c is None else c)
        k = int(t3.number_input("How many", min_value=4, max_value=1000, value=48, step=4, key="txt_k"))
    st.caption("Ranked by cosine similarity between the query's CLIP text features and the image embeddings: how "
               "well this matches the meaning depends on the CLIP weights.")

    @st.cache_data(max_entries=32, show_spinner="Searching…")
    def _search(path: str, generation: str, query: str, label: str | None, k: int) -> tuple[bool, str, np.ndarray]:
        r = similar.text_search(_ui._workspace(path), query, k, label=label, encoder=enc,
                                scores=_ui._scores(path, generation))
        return r.available, r.reason, r.table["row"].to_numpy(dtype=np.int64)

    if not query.strip():
        st.info("Type a description to rank the images by it.", icon=":material/search:")
        st.stop()
    try:
        ok, reason, rows = _search(ctx.path, ctx.generation, query.strip(), given, k)
    except (ReviewStoreError, OSError, RuntimeError) as e:
        st.error(md(f"Text search failed: {e}"), icon=":material/error:")
        st.stop()
    if not ok:
        st.info(md(reason[0].upper() + reason[1:] + "."), icon=":material/block:")
        st.stop()
    _ui.sample_grid(ctx, rows, "txt", empty="No image with this given label.")
