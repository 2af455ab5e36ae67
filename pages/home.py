"""Home: open a workspace, scan a dataset, or build the offline demo; then the scan summary."""
from __future__ import annotations

import os
import traceback
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from clipcleaner_core import evaluate, health, issues, registry, views
from clipcleaner_core.pipeline import DEFAULT_PRETRAINED
from clipcleaner_core.workspace import Workspace
from pages import _learn, _ui
from pages._safe import html, md, plot, plot_all

_ui.ensure_entrypoint(__file__)

ctx = _ui.load_ctx()

st.html("<div class='cc-hero'><h1>Find and fix mislabelled images</h1><p>clipcleaner embeds your images, "
        "scores every label with CLIP-based detectors (CLIPCleaner, ACM MM 2024) and baselines, and lets you "
        "review the suspects and export a cleaned CSV.</p></div>")


def _progress_cb(bar, status):
    names = {"embed": "Embedding images", "assemble": "Assembling embeddings", "score": "Scoring labels"}

    def cb(stage: str, done: int, total: int) -> None:
        frac = min(max(done / total, 0.0), 1.0) if total else 0.0
        bar.progress(frac, text=f"{names.get(stage, stage)}: {done:,} / {total:,}")
        status.update(label=f"{names.get(stage, stage)}…")
    return cb


def _run_scan(data: str, ws_dir: str, classes_file: str | None, enc, truth: str | None = None) -> bool:
    from clipcleaner_core.dataset import DatasetError
    from clipcleaner_core.encoders import WeightsUnavailable
    from clipcleaner_core.pipeline import scan

    failure: tuple[str, str, str | None] | None = None  # (message, icon, traceback): drawn below the status box
    with st.status("Scanning…", expanded=True) as status:
        bar = st.progress(0.0, text="Loading the dataset")
        try:
            res = scan(data, ws_dir, classes_file=classes_file or None, encoder=enc,
                       progress=_progress_cb(bar, status), log=lambda m: st.text(str(m)))
        except WeightsUnavailable as e:
            status.update(label="CLIP weights are not available offline", state="error", expanded=False)
            failure = (f"**CLIP weights are not available on this machine.** {md(e)}  \nTip: the *pixels* encoder "
                       "needs no weights (but it is not CLIP and has no zero-shot scores).",
                       ":material/cloud_off:", None)
        except (DatasetError, FileNotFoundError, ValueError) as e:
            status.update(label="The dataset could not be read", state="error", expanded=False)
            failure = (f"{type(e).__name__}: {md(e)}", ":material/error:", None)
        except Exception as e:  # noqa: BLE001 - show the error in the app instead of a stack trace page
            status.update(label="The scan failed", state="error", expanded=False)
            failure = (f"{type(e).__name__}: {md(e)}", ":material/error:", traceback.format_exc())
        else:
            status.update(label=f"Scanned {res.settings.counts['scored']:,} samples: "
                                f"{res.settings.counts['flagged']:,} flagged", state="complete", expanded=False)
    if failure is not None:  # outside the (collapsed) status box: visible without a click
        st.error(failure[0], icon=failure[1])
        if failure[2]:
            with st.expander("Traceback"):
                st.code(failure[2], language=None)
        return False
    if truth:
        from clipcleaner_core.evaluate import TruthFileError

        try:
            evaluate.set_truth_path(Workspace(ws_dir), truth)
        except TruthFileError as e:  # one line naming the file and the problem, never its content
            st.error(f"The scan is done, but the truth file was not kept: {md(e)}", icon=":material/error:")
            return False
    _ui.open_workspace(ws_dir)
    return True


def _refuse_folders(ws_dir: str, truth: str | None, allow_nonempty: bool) -> str | None:
    """Why the scan must not start (one line), before anything is written: a workspace folder that holds other
    files (unless confirmed), or a truth file that is not a path,label table."""
    from clipcleaner_core.evaluate import TruthFileError, read_truth
    from clipcleaner_core.guards import workspace_folder_problem

    problem = None if allow_nonempty else workspace_folder_problem(ws_dir)
    if problem:
        return problem + " — or tick “Use this folder anyway”."
    if truth:
        try:
            read_truth(truth)
        except TruthFileError as e:
            return str(e)
    return None


def start_panel() -> None:
    tab_demo, tab_scan, tab_open = st.tabs([":material/rocket_launch: Try the offline demo",
                                            ":material/document_scanner: Scan a dataset",
                                            ":material/folder_open: Open a workspace"])
    with tab_demo:
        st.markdown("The demo needs no internet and no model weights: scikit-learn's 1,797 handwritten digits "
                    "(32×32 PNG) with **30 % injected label noise** (half *hard* flips to the most similar digit, "
                    "half random), scanned with the **pixels** encoder — a raw-pixel baseline, *not CLIP*, so "
                    "zero-shot criteria are off. Ground truth is kept, so the Evaluation and Hard-noise pages can "
                    "score every detector. Takes ~20 s.")
        default_dir = str(Path(os.environ.get("CLIPCLEANER_DEMO_DIR", Path.home() / "clipcleaner-demo")))
        d = st.text_input("Demo folder", value=default_dir, key="demo_dir",
                          help="Images go to FOLDER/data, the workspace to FOLDER/workspace.")
        if st.button("Build and scan the demo", type="primary", icon=":material/rocket_launch:", key="demo_go"):
            from clipcleaner_core.demo import write_demo
            from clipcleaner_core.guards import workspace_folder_problem
            from clipcleaner_core.pipeline import EncoderConfig

            base = Path(d).expanduser().absolute()
            problem = workspace_folder_problem(base / "workspace") or (
                None if (base / "data" / "demo.json").is_file() else workspace_folder_problem(base / "data"))
            if problem:  # never write the demo into a folder of somebody's files
                st.error(md(problem), icon=":material/block:")
            else:
                with st.spinner("Writing the demo images…"):
                    info = write_demo(base / "data")
                if _run_scan(info["labels"], str(base / "workspace"), info["classes_file"],
                             EncoderConfig(encoder="pixels"), truth=info["truth"]):
                    st.rerun()
    with tab_scan:
        with st.form("scan_form", border=False):
            c1, c2 = st.columns(2)
            data = c1.text_input("Dataset", key="scan_data",
                                 placeholder="/data/pets  (ImageFolder)  or  /data/labels.csv",
                                 help="An ImageFolder (one sub-folder per class) or a CSV/TSV/Parquet table with a "
                                      "path column and a label column (paths relative to the table's folder).")
            ws_dir = c2.text_input("Workspace folder", key="scan_ws", placeholder="/data/pets-workspace",
                                   help="Where embeddings, scores and review decisions are stored.")
            classes_file = c1.text_input("Classes file (optional)", key="scan_classes",
                                         help="One class name per line; fixes order.")
            truth = c2.text_input("Ground-truth labels (optional)", key="scan_truth",
                                  help="path,label table of the clean labels; "
                                  "enables the Evaluation page.")
            e1, e2, e3, e4 = st.columns(4)
            encoder = e1.selectbox("Encoder", ["clip", "pixels"], index=0, key="scan_encoder",
                                   help="clip: open_clip model (needs weights); pixels: raw pixels, no weights, "
                                        "not CLIP (no zero-shot)")
            model = e2.text_input("Model", value="ViT-B-32", key="scan_model")
            pretrained = e3.text_input("Pretrained tag", value=DEFAULT_PRETRAINED, key="scan_pretrained",
                                       help="An open_clip tag whose weights are cached locally")
            checkpoint = e4.text_input("…or checkpoint file", key="scan_checkpoint",
                                       help="A local open_clip state_dict (overrides the tag)")
            model_config = st.text_input("Model config JSON (optional)", key="scan_model_config",
                                         help="Registers a custom open_clip architecture (file name = model name)")
            allow_nonempty = st.checkbox("Use this folder anyway", key="scan_ws_force", help="Create the "
                                         "workspace even though the folder already holds files that are not a "
                                         "clipcleaner workspace (clipcleaner adds its own files beside them).")
            go_scan = st.form_submit_button("Scan", type="primary", icon=":material/play_arrow:", key="scan_go")
        if go_scan:
            from clipcleaner_core.pipeline import EncoderConfig

            refused = _refuse_folders(ws_dir, truth or None, allow_nonempty) if data and ws_dir else None
            if not data or not ws_dir:
                st.warning("Give both a dataset and a workspace folder.")
            elif refused:
                st.error(md(refused), icon=":material/block:")
            else:
                enc = EncoderConfig(encoder=encoder, model=model, pretrained=(pretrained or None) if not checkpoint
                                    else None, checkpoint=checkpoint or None, model_config=model_config or None)
                if _run_scan(data, ws_dir, classes_file or None, enc, truth=truth or None):
                    st.rerun()
    with tab_open:
        p = st.text_input("Workspace folder", value=_ui.current_workspace_path() or "", key="open_path",
                          placeholder="/data/pets-workspace")
        if st.button("Open", key="open_go", icon=":material/folder_open:"):
            if Workspace(p).exists():
                _ui.open_workspace(p)
                st.rerun()
            else:
                st.error(f"{md(p)} is not a scanned workspace (no workspace.json / scores.parquet). "
                         "Scan a dataset into it first.")


if ctx is None:
    p = _ui.current_workspace_path()
    if p:
        st.warning(f"{md(p)} is not a scanned workspace yet.")
    start_panel()
    st.stop()

# --- summary -------------------------------------------------------------------------------------------------------
problem = _ui.store_problem(ctx)
if problem is not None:
    st.error(md(f"The review database cannot be used: {problem}"), icon=":material/error:")
    start_panel()
    st.stop()
S = ctx.settings
summ = views.scan_summary(S, ctx.scores, ctx.dataset())
state = ctx.state()
flag = ctx.scores["flagged"].to_numpy(dtype=bool)
dec = views.decision_counts(state, flag)
reviewed = summ["flagged"] - dec["undecided"]

head_l, head_r = st.columns([5, 1], vertical_alignment="center")
head_l.markdown(f"### Workspace {md(ctx.ws.path.name)}")
head_l.caption(f"{md(ctx.ws.path)} · scanned {md(S.scanned_at or '?')} · data {md(S.data.source or '?')}")
if head_r.button("Close workspace", icon=":material/logout:", key="close_ws"):
    _ui.close_workspace()
    st.rerun()

m = st.columns(5)
counts = views.headline_counts(ctx.scores, ctx.dataset())  # the same numbers as the sidebar
m[0].metric("Samples", f"{counts['samples']:,}", help=f"Rows found in the dataset, readable or not; "
            f"{counts['scored']:,} scored")
m[1].metric("Classes", summ["classes"])
m[2].metric("Flagged", f"{summ['flagged']:,}", f"{summ['flagged_share']:.1%} of scored", delta_color="off",
            delta_arrow="off",
            help=f"By the default method '{summ['method']}'")
m[3].metric("Reviewed", f"{reviewed:,}", f"of {summ['flagged']:,} flagged", delta_color="off", delta_arrow="off")
m[4].metric("Unusable files", f"{len(summ['problems']):,}", help="Missing / unreadable / unknown label; not scored")
_learn.show_errors_left(ctx, key="home_estimate")

# issue types beyond wrong labels (registry.ISSUES) and the data-health warnings of the scan
issue_counts = issues.counts(ctx.scores)
st.markdown("#### Other issues")
for col, e in zip(st.columns(len(registry.ISSUES)), registry.ISSUES):
    col.metric(e.short.capitalize(), f"{issue_counts[e.key]:,}", help=e.description)
health_notes = [n for n in S.notes if n.startswith(health.PREFIX)]
if health_notes:
    with st.container(border=True, key="home_health"):
        st.markdown(":material/health_and_safety: **Data health** — read this before trusting the flags")
        for n in health_notes:
            st.text(n[len(health.PREFIX):])  # plain text: the warnings quote class names

pills = [f"<span class='cc-pill'>encoder: {html(views.encoder_description(S))}</span>",
         f"<span class='cc-pill'>method: {html(summ['method'])}</span>",
         f"<span class='cc-pill'>suggestions from: {html(summ['suggestion_source'])}</span>"]
st.html("<div>" + "".join(pills) + "</div>")
if not summ["zero_shot"]:
    reason = (summ["zero_shot_reason"] or "The encoder has no text tower").rstrip(". ")
    st.warning(f"**Zero-shot criteria unavailable.** {md(reason[0].upper() + reason[1:])}. Only the linear-probe "
               "criteria, k-NN agreement and cleanlab are used.", icon=":material/info:")

left, right = st.columns([3, 2])
with left:
    st.markdown("#### Flags per detector")
    fc = summ["flag_counts"]
    names = {d.key: d.title for d in registry.DETECTORS}
    if fc:
        keys = list(fc)
        colors = [registry.detector(k).colour if k in names else "#a5b4fc" for k in keys]
        fig = go.Figure(go.Bar(x=[fc[k] for k in keys], y=[plot(names.get(k, k)) for k in keys], orientation="h",
                               marker_color=colors, text=[f"{fc[k]:,} ({fc[k] / max(summ['scored'], 1):.0%})"
                                                          for k in keys], textposition="auto"))
        fig.update_layout(height=230, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="samples flagged",
                          yaxis=dict(autorange="reversed"))
        st.plotly_chart(fig, width="stretch", config={"displayModeBar": False})
with right:
    st.markdown("#### CLIPCleaner criteria")
    for c in summ["criteria_used"]:
        st.markdown(f":material/check_circle: **{md(c)}** — rejects {summ['criterion_rejects'].get(c, 0):,} labels")
    for c in summ["criteria_unavailable"]:
        st.markdown(f":material/block: ~~{md(c)}~~ — not available (no text tower)")
    st.markdown("#### Your review")
    st.markdown(" · ".join(f"{_ui.STATUS_BADGE[k]} {dec[k]:,}" for k in ("undecided", "accept", "relabel", "exclude",
                                                                         "unsure")))

st.markdown("#### Flagged share per given class")
cc = pd.DataFrame({"class": ctx.scores["label"], "flagged": flag}).groupby("class", sort=False)["flagged"] \
    .agg(["sum", "count"]).reindex(ctx.classes).fillna(0)
fig = go.Figure([go.Bar(x=plot_all(cc.index), y=cc["count"] - cc["sum"], name="not flagged", marker_color="#c7d2fe"),
                 go.Bar(x=plot_all(cc.index), y=cc["sum"], name="flagged", marker_color="#ef4444")])
fig.update_layout(barmode="stack", height=280, margin=dict(l=10, r=10, t=30, b=10),
                  legend=dict(orientation="h", y=1.12, x=0), yaxis_title="samples")
st.plotly_chart(fig, width="stretch", config={"displayModeBar": False})

probs = summ["problems"]
with st.expander(f"Unusable files ({len(probs):,})", expanded=0 < len(probs) <= 20, icon=":material/broken_image:"):
    if len(probs):
        st.dataframe(probs, hide_index=True, width="stretch")
    else:
        st.caption("Every file was readable and had a known label.")

st.markdown("#### Next")
n1, n2, n3, n4 = st.columns(4)
n1.page_link("pages/suspects.py", label="Review the suspects", icon=":material/grid_view:")
n2.page_link("pages/duplicates.py", label="Review the duplicates", icon=":material/content_copy:")
n3.page_link("pages/embedding_map.py", label="Explore the embedding map", icon=":material/scatter_plot:")
n4.page_link("pages/export.py", label="Export the cleaned CSV", icon=":material/download:")

with st.expander("Open another workspace, scan a dataset or build the demo", icon=":material/swap_horiz:"):
    start_panel()
