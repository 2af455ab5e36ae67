"""Learning from the reviewer in the app (issue 11; the logic is ``clipcleaner_core.active`` / ``estimate``).

- :func:`ranking`: the current ranking (the newest refit of this scan laid over the scan's scores), cached on the
  workspace, its generation and the fit id.
- The refit runs in a background thread per workspace (:class:`RefitJob`, process-wide): started by "Refit now"
  or automatically once :func:`refit_every` review events (25; `$CLIPCLEANER_REFIT_EVERY`, 0 = off) were written
  since the current fit.
  :func:`refit_panel` is a small ``st.fragment(run_every=...)`` that polls the job and the store's version (two
  cheap reads) and draws one status line; the review grid's own fragment never waits for a refit, and a new
  ranking reorders the queue only when the page reruns (a filter, "Re-rank the queue"), never under the keys.
- :func:`errors_left`: ``estimate.estimate_workspace`` cached on the generation, the decisions stamp and the fit.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from clipcleaner_core import active, downstream, estimate, evaluate
from clipcleaner_core.decisions import ReviewStoreError, resolve_store_url
from clipcleaner_core.workspace import Workspace, WorkspaceError
from pages import _ui
from pages._safe import md

REFIT_EVERY_ENV = "CLIPCLEANER_REFIT_EVERY"
"""Environment variable: refit automatically after this many review events (default 25; 0 switches it off)."""
POLL_SECONDS = 3.0
NEXT_N = 200


def refit_every() -> int:
    """Review events between automatic refits: ``$CLIPCLEANER_REFIT_EVERY`` (0 = only "Refit now"), default 25."""
    try:
        return max(0, int(os.environ.get(REFIT_EVERY_ENV, active.DEFAULT_REFIT_EVERY)))
    except ValueError:
        return active.DEFAULT_REFIT_EVERY


# --- the current ranking ----------------------------------------------------------------------------------------
def fit_id(ctx: _ui.Ctx) -> str | None:
    """Id of the fit behind the current ranking (None: the scan's ranking). Reads one small JSON file."""
    rec = active.latest_refit(ctx.ws)
    return rec.fit_id if rec is not None else None


@st.cache_resource(max_entries=8, show_spinner=False)
def _ranking(path: str, generation: str, fit: str | None) -> pd.DataFrame:
    return active.current_ranking(_ui._workspace(path), _ui._scores(path, generation))


def ranking(ctx: _ui.Ctx) -> pd.DataFrame:
    """``active.current_ranking`` rows aligned with ``ctx.scores`` (rank_score, flagged, source, fit_id …)."""
    return _ranking(ctx.path, ctx.generation, fit_id(ctx))


# --- errors left ------------------------------------------------------------------------------------------------
@st.cache_resource(max_entries=16, show_spinner=False)
def _estimate(path: str, generation: str, dec_stamp: tuple, fit: str | None, next_n: int) -> estimate.Estimate:
    return estimate.estimate_workspace(_ui._workspace(path), decisions=_ui._decisions(path, dec_stamp),
                                       scores=_ui._scores(path, generation), next_n=next_n)


def errors_left(ctx: _ui.Ctx, next_n: int = NEXT_N) -> estimate.Estimate:
    return _estimate(ctx.path, ctx.generation, ctx.decisions_stamp(), fit_id(ctx), int(next_n))


def show_errors_left(ctx: _ui.Ctx, *, key: str) -> None:
    """One line: "≈ 140 errors left (95%: 110–175); reviewing the next 200 suspects should fix ≈ 95", or why it
    cannot be estimated yet (with what to review)."""
    try:
        est = errors_left(ctx)
    except (WorkspaceError, ReviewStoreError, OSError) as e:
        st.warning(md(f"Errors left: cannot be estimated — {e}"), icon=":material/error:")
        return
    with st.container(key=key):
        if est.status == "ok":
            st.info(md(est.summary()), icon=":material/query_stats:")
        else:
            reason = est.reason.rstrip(". ")
            st.info(f"**Errors left: not estimated yet:** {md(reason[:1].upper() + reason[1:])}. Review the suspects "
                    "and the spot check (a random sample of the unflagged images: the “Spot check” switch on the "
                    "Suspects page).", icon=":material/query_stats:")
        parts = [f"{est.reviewed:,} reviewed", f"{est.errors_found:,} errors found",
                 f"spot check {est.spot_check_reviewed:,} of {est.spot_check_size:,} reviewed", *est.notes]
        st.caption(" · ".join(md(p) for p in parts))


# --- the background refit -----------------------------------------------------------------------------------------
@dataclass
class RefitJob:
    """The refit thread of one workspace (shared by every session of this server)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None
    done: int = 0
    total: int = 0
    error: str | None = None
    failed_version: int | None = None
    """Number of review events when the last refit failed: not retried automatically until it changes."""
    inputs: active.RefitInputs | None = None
    inputs_generation: str | None = None
    started: float = 0.0
    finished: float = 0.0

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        t = self.thread
        if t is not None:
            t.join(timeout)


@st.cache_resource(show_spinner=False)
def _jobs() -> dict[str, RefitJob]:
    return {}


def refit_job(path: str) -> RefitJob:
    jobs = _jobs()
    return jobs.setdefault(path, RefitJob())


def _run(job: RefitJob, path: str, generation: str, url: str | None, events: int) -> None:
    """The thread's body: never touches Streamlit; the outcome is left on ``job``."""
    ws = Workspace(path)

    def progress(stage: str, done: int, total: int) -> None:
        job.done, job.total = done, total

    def stale() -> bool:  # a re-scan published another set meanwhile: this fit would be of the old one
        try:
            return ws.manifest().generation != generation
        except WorkspaceError:
            return True

    try:
        if job.inputs is None or job.inputs_generation != generation:
            job.inputs, job.inputs_generation = None, None
            job.inputs, job.inputs_generation = active.load_inputs(ws), generation
        active.refit_workspace(ws, db_url=url, inputs=job.inputs, progress=progress, should_stop=stale)
        job.error, job.failed_version = None, None
    except active.RefitCancelled:
        job.error = "The refit stopped: the workspace was re-scanned meanwhile."
    except (WorkspaceError, ReviewStoreError, OSError, ValueError) as e:
        job.error, job.failed_version = f"The refit failed: {e}", events
    except Exception as e:  # noqa: BLE001 - a thread's error must reach the page as one line, not vanish
        job.error, job.failed_version = f"The refit failed: {type(e).__name__}: {e}", events
    finally:
        job.finished = time.time()


def start_refit(ctx: _ui.Ctx, events: int) -> bool:
    """Start a refit in the background unless one is running for this workspace; True when started."""
    job = refit_job(ctx.path)
    with job.lock:
        if job.running:
            return False
        job.done, job.total, job.error, job.started = 0, 0, None, time.time()
        url = resolve_store_url(ctx.path)[0]
        job.thread = threading.Thread(target=_run, args=(job, ctx.path, ctx.generation, url, events),
                                      name="clipcleaner-refit", daemon=True)
        job.thread.start()
    return True


def refit_status(ctx: _ui.Ctx, every: int) -> dict:
    """The current fit, the decisions since, and whether an automatic refit is due (starts it when it is)."""
    rec = active.latest_refit(ctx.ws)
    version = ctx.store().version()
    since = active.decisions_since_refit(ctx.ws, version, rec)
    job = refit_job(ctx.path)
    started = False
    if every > 0 and since >= every and not job.running and job.failed_version != version[1]:
        started = start_refit(ctx, version[1])
    return {"record": rec, "since": since, "job": job, "started": started, "every": every}


def ranking_sentence(rec: active.RefitRecord | None, since: int) -> str:
    """"ranking from refit 14:52:03 after 50 decisions" / "ranking from the scan", plus the decisions since."""
    if rec is None:
        return f"Ranking from the scan · {since:,} review event(s) since"
    when = rec.created_at.replace("T", " ")[:19]
    return (f"Ranking from the refit of {when} UTC after {rec.n_trusted:,} decisions ({rec.seconds:.1f} s) · "
            f"{since:,} review event(s) since")


def refit_panel(ctx: _ui.Ctx, shown_fit: str | None) -> None:
    """The refit status line with "Refit now"; ``shown_fit`` is the fit whose ranking the page's rows use."""
    _refit_fragment(ctx, shown_fit, refit_every())


@st.fragment(run_every=POLL_SECONDS)
def _refit_fragment(ctx: _ui.Ctx, shown_fit: str | None, every: int) -> None:
    try:
        s = refit_status(ctx, every)
    except (ReviewStoreError, WorkspaceError) as e:
        st.caption(md(f"Refit unavailable: {e}"))
        return
    rec, job = s["record"], s["job"]
    with st.container(key="learn_refit", horizontal=True, vertical_alignment="center"):
        text = ranking_sentence(rec, s["since"])
        text += f" · automatic refit every {every} decisions" if every > 0 else " · automatic refit off"
        st.caption(md(text))
        if job.running:
            frac = job.done / job.total if job.total else 0.0
            st.progress(min(frac, 1.0), text="Refitting in the background…", width=220)
        elif st.button("Refit now", key="learn_refit_now", icon=":material/model_training:",
                       help="Refit the probe and the ensemble on your decisions now and re-rank the queue"):
            start_refit(ctx, ctx.store().version()[1])
            st.rerun(scope="fragment")
        new = rec.fit_id if rec is not None else None
        if new != shown_fit and not job.running:
            if st.button("Re-rank the queue", key="learn_rerank", icon=":material/sort:", type="primary",
                         help="A newer ranking is ready: reorder the queue by it (page 1, the most suspicious "
                              "first)"):
                st.rerun(scope="app")
    if job.error:
        st.warning(md(job.error), icon=":material/error:")


# --- what cleaning bought (downstream check) ----------------------------------------------------------------------
def _pct(v: float, lo: float, hi: float) -> str:
    return f"{100 * v:.1f} % (95%: {100 * lo:.1f}–{100 * hi:.1f})"


def downstream_table(r: downstream.DownstreamResult) -> pd.DataFrame:
    """One row per held-out set: samples, accuracy of the probe on noisy and on cleaned labels, the difference."""
    recs = []
    for what, c in (("reviewed samples (reviewers' labels)", r.trusted), ("truth file", r.truth)):
        if c is None:
            continue
        recs.append({"held out": what, "samples": c.n_test, "trained on (noisy / cleaned)":
                     f"{c.n_train_noisy:,} / {c.n_train_cleaned:,}",
                     "noisy labels": _pct(c.noisy_accuracy, c.noisy_low, c.noisy_high),
                     "cleaned labels": _pct(c.cleaned_accuracy, c.cleaned_low, c.cleaned_high),
                     "difference": f"{100 * c.difference:+.1f} points (95%: {100 * c.difference_low:+.1f} to "
                                   f"{100 * c.difference_high:+.1f})"})
    return pd.DataFrame(recs)


def downstream_panel(ctx: _ui.Ctx, undecided: str) -> None:
    """A button that runs ``downstream.downstream_check`` with the export's policy for undecided samples, and its
    table (kept for this session; marked stale when the decisions or the policy change)."""
    from clipcleaner_core.evaluate import TruthFileError

    st.markdown("#### What cleaning bought")
    st.caption("Trains the linear probe on the noisy labels and on the cleaned labels (your decisions, excluded "
               "samples dropped, undecided ones as chosen above) and compares their accuracy on a held-out half of "
               "your reviewed samples — and on a held-out 20 % of the truth file when one is set. Four probe fits.")
    stamp = (ctx.generation, ctx.decisions_stamp()[:3], undecided)
    if st.button("Run the downstream check", key="ex_ds_go", icon=":material/science:"):
        tp = evaluate.truth_path(ctx.ws)
        try:
            with st.spinner("Training the probe on the noisy and on the cleaned labels…"):
                r = downstream.downstream_check(ctx.ws, decisions=ctx.decisions(), truth_file=tp, undecided=undecided)
            st.session_state["ex_ds"] = {"stamp": stamp, "result": r}
        except (TruthFileError, ValueError, ReviewStoreError, WorkspaceError, OSError) as e:
            st.session_state.pop("ex_ds", None)
            st.error(md(f"The downstream check could not run: {e}"), icon=":material/error:")
    done = st.session_state.get("ex_ds")
    if not done:
        return
    r: downstream.DownstreamResult = done["result"]
    if done["stamp"] != stamp:
        st.caption("Computed before your latest decisions or with another policy: run it again to update.")
    if r.trusted is None:
        st.info(md(f"Against the reviewers: not enough reviewed yet — {r.reason}."), icon=":material/info:")
    table = downstream_table(r)
    if len(table):
        st.dataframe(table, hide_index=True, width="stretch", key="ex_ds_table")
    for n in r.notes:
        st.caption(md(f"Note: {n}"))
