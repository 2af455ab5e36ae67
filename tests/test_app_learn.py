"""AppTest of learning from the reviewer (issue 11) on a scanned demo workspace (pixels encoder — not CLIP):
the queue by the current ranking and the background refit, the errors-left estimate and the spot check, more like
this with its bulk decision, text search (its plumbing, with the tiny random-weight CLIP), the downstream panel and
the simulation curves. Each test gets its own copy of the workspace (refits and decisions never leak between them)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from _app_helpers import demo_workspace_copy, grid, grid_decide, grid_ids, open_app, shown  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from clipcleaner_core import active, downstream, estimate, evaluate, similar, simulate  # noqa: E402
from clipcleaner_core.decisions import ReviewStore  # noqa: E402
from clipcleaner_core.workspace import Workspace  # noqa: E402


@pytest.fixture()
def ws(tmp_path) -> Path:
    out, _ = demo_workspace_copy(tmp_path)
    return out


def app(ws: Path, page: str | None = None) -> AppTest:
    return open_app(ws, page)


def truth(ws: Path) -> pd.Series:
    w = Workspace(ws)
    return evaluate.truth_labels(w.scores(), evaluate.truth_path(w))


def oracle(ws: Path, rows: np.ndarray | list[int], reviewer: str = "oracle") -> None:
    """Decide ``rows`` as the truth file says (keep a right label, relabel a wrong one), one group."""
    s = Workspace(ws).scores()
    t = truth(ws)
    items = [{"sample_id": str(s["sample_id"].iloc[r]), "given_label": str(s["label"].iloc[r]),
              "action": "accept" if t.iloc[r] == s["label"].iloc[r] else "relabel",
              "label": None if t.iloc[r] == s["label"].iloc[r] else str(t.iloc[r])} for r in rows]
    with ReviewStore.for_workspace(ws) as store:
        store.record_many(items, reviewer=reviewer)


def queue(ws: Path) -> np.ndarray:
    """The suspects queue as the page orders it: flagged (scan or refit) and undecided, by the current ranking."""
    w = Workspace(ws)
    s, rank = w.scores(), active.current_ranking(w)
    with ReviewStore.for_workspace(ws) as store:
        decided = set(store.current()["sample_id"])
    und = ~s["sample_id"].isin(decided).to_numpy() & (s["flagged"].to_numpy() | rank["flagged"].to_numpy())
    return active.queue_order(rank["rank_score"].to_numpy(), und, tiebreak=s["noise_score"].to_numpy())


def captions(at: AppTest) -> str:
    return " ".join(shown(c.value) for c in at.caption)


def infos(at: AppTest) -> str:
    return " ".join(shown(i.value) for i in at.info)


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    """The dataframe drawn with ``column``."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def wait_for_fit(ws: Path, other_than: str | None = None, timeout: float = 120.0) -> active.RefitRecord:
    """The background refit writes current.json last: wait for a fit other than ``other_than``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rec = active.latest_refit(Workspace(ws))
        if rec is not None and rec.fit_id != other_than:
            return rec
        time.sleep(0.2)
    raise AssertionError("no refit was written")


def test_queue_follows_the_current_ranking_and_refits_in_the_background(ws, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_REFIT_EVERY", "25")
    at = app(ws, "pages/suspects.py")
    assert grid_ids(at) == [str(Workspace(ws).scores()["sample_id"].iloc[r]) for r in queue(ws)[:12]]
    assert "Ranking from the scan" in captions(at) and "automatic refit every 25 decisions" in captions(at)
    oracle(ws, queue(ws)[:24])  # 24 events: not yet
    at.run()
    assert active.latest_refit(Workspace(ws)) is None and "24 review event(s) since" in captions(at)
    oracle(ws, queue(ws)[:1])  # the 25th: the next run starts the refit in the background
    at.run()
    rec = wait_for_fit(ws)
    assert rec.n_trusted == 25 and rec.decisions_version[1] == 25
    at.run()  # the page's rows now come from the refit
    assert not at.exception and "Ranking from the refit of" in captions(at)
    assert "0 review event(s) since" in captions(at)
    rank = active.current_ranking(Workspace(ws))
    assert (rank["source"] == "refit").all()
    assert grid_ids(at) == [str(rank["sample_id"].iloc[r]) for r in queue(ws)[:12]]
    # "Refit now": another fit, whatever the count
    grid_decide(at, "sus", grid_ids(at)[0], "exclude")
    at.button(key="learn_refit_now").click().run()
    rec2 = wait_for_fit(ws, other_than=rec.fit_id)
    assert rec2.decisions_version[1] == 26 and rec2.n_excluded == 1
    at.run()
    assert "0 review event(s) since" in captions(at)


def test_automatic_refit_can_be_switched_off(ws, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_REFIT_EVERY", "0")
    at = app(ws, "pages/suspects.py")
    assert "automatic refit off" in captions(at)
    oracle(ws, queue(ws)[:40])
    at.run()
    time.sleep(0.5)
    assert active.latest_refit(Workspace(ws)) is None and "40 review event(s) since" in captions(at)
    at.button(key="learn_refit_now").click().run()
    assert wait_for_fit(ws).n_trusted == 40


def test_errors_left_on_home_and_suspects(ws):
    at = app(ws)
    assert "Errors left: not estimated yet" in infos(at) and "spot-check samples" in infos(at)
    w = Workspace(ws)
    sc = estimate.spot_check(w)
    oracle(ws, w.scores().reset_index().set_index("sample_id").loc[sc.sample_ids[:25], "index"].to_numpy())
    oracle(ws, queue(ws)[:60])
    est = estimate.estimate_workspace(w)
    assert est.status == "ok"
    for page in (None, "pages/suspects.py"):
        at = app(ws, page)
        assert est.summary() in infos(at), infos(at)
        assert "errors left (95%:" in infos(at) and "reviewing the next 200 suspects should fix" in infos(at)
        assert f"spot check 25 of {sc.size} reviewed" in captions(at)


def test_spot_check_view_reviews_the_stored_random_sample(ws):
    at = app(ws, "pages/suspects.py")
    at.toggle(key="sus_spot").set_value(True).run()
    sc = estimate.spot_check(Workspace(ws))
    ids = grid_ids(at, "spot")
    assert ids == sc.sample_ids[:12]
    s = Workspace(ws).scores()
    label_flagged = pd.Series(active.label_flagged(s, Workspace(ws).settings().method), index=s["sample_id"])
    assert not label_flagged.loc[ids].any()  # drawn from the samples without a label-error flag
    grid_decide(at, "spot", ids[0], "accept")
    at.run()
    assert f"spot check 1 of {sc.size} reviewed" in captions(at)
    assert grid_ids(at, "spot") == sc.sample_ids[1:13]  # "to review": the decided one leaves, the order stays


def test_more_like_this_bulk_same_decision_is_one_undo_step(ws):
    at = app(ws, "pages/suspects.py")
    w = Workspace(ws)
    s = w.scores().set_index("sample_id")
    first = grid_ids(at)[0]
    target = next(c for c in w.classes() if c != s.loc[first, "label"])
    grid_decide(at, "sus", first, "relabel", target)
    at.switch_page("pages/similar.py")
    at.run()
    assert not at.exception
    assert at.selectbox(key="mlt_pick").value == first  # this tab's most recent decision
    with ReviewStore.for_workspace(ws) as store:
        decided = store.current()["sample_id"]
    decided_rows = np.flatnonzero(s.index.isin(set(decided)))
    expect = similar.more_like_this(w, first, 24, exclude_rows=decided_rows)
    assert (expect["label"] == s.loc[first, "label"]).all()
    assert grid_ids(at, "mlt") == list(expect["sample_id"][:12]) and grid(at, "mlt")["total"] == 24
    at.button(key="mlt_apply").click().run()
    assert not at.exception
    with ReviewStore.for_workspace(ws) as store:
        cur = store.current().set_index("sample_id")
    shown_ids = list(expect["sample_id"])
    assert (cur.loc[shown_ids, "action"] == "relabel").all() and (cur.loc[shown_ids, "label"] == target).all()
    assert any("Relabelled 24 samples" in shown(x.value) for x in at.success)
    assert grid(at, "mlt")["total"] == 24 and not set(grid_ids(at, "mlt")) & set(shown_ids)  # the next 24
    at.button(key="mlt_undo").click().run()  # one step undoes all 24
    with ReviewStore.for_workspace(ws) as store:
        cur = store.current().set_index("sample_id")
    assert not set(shown_ids) & set(cur.index) and cur.loc[first, "label"] == target
    assert any("Undid: relabel of 24 samples" in shown(x.value) for x in at.success)


def test_more_like_this_by_typed_path_and_bad_input(ws):
    at = app(ws, "pages/similar.py")
    assert "Decide a sample on the Suspects page" in infos(at)
    s = Workspace(ws).scores()
    at.text_input(key="mlt_any").set_value(str(s["path"].iloc[5])).run()
    assert grid_ids(at, "mlt") == list(similar.more_like_this(Workspace(ws), 5, 24)["sample_id"][:12])
    assert at.button(key="mlt_apply").disabled  # the sample itself is not decided
    at.text_input(key="mlt_any").set_value("no/such/*file*.png").run()
    assert any("no/such/*file*.png: not a scored sample" in shown(e.value) for e in at.error) and not at.exception


def test_text_search_hidden_without_a_text_tower(ws):
    at = app(ws, "pages/similar.py")
    at.segmented_control(key="mlt_mode").set_value("text").run()
    assert "no text tower" in infos(at) and not at.get("text_input") or all(
        t.key != "txt_q" for t in at.text_input)


def test_text_search_plumbing_with_tiny_random_clip(tiny_clip, demo_dir, tmp_path):
    """The tiny random-weight CLIP checks the plumbing only (query → text tower → cosine → grid), never meaning."""
    from clipcleaner_core.pipeline import EncoderConfig, scan

    rows = pd.read_csv(demo_dir / "labels.csv").iloc[:120]
    rows.to_csv(tmp_path / "subset.csv", index=False)
    wsp = tmp_path / "ws"
    scan(tmp_path / "subset.csv", wsp, root=str(demo_dir), classes_file=str(demo_dir / "classes.txt"),
         encoder=EncoderConfig(encoder="clip", model=tiny_clip["model"], model_config=tiny_clip["config"],
                               checkpoint=tiny_clip["checkpoint"], device="cpu", num_workers=0))
    at = app(wsp, "pages/similar.py")
    at.segmented_control(key="mlt_mode").set_value("text").run()
    at.text_input(key="txt_q").set_value("a photo of a six").run()
    assert not at.exception
    r = similar.text_search(Workspace(wsp), "a photo of a six", 48)
    assert grid_ids(at, "txt") == list(r.table["sample_id"][:12]) and grid(at, "txt")["total"] == 48
    label = str(Workspace(wsp).scores()["label"].iloc[0])
    at.selectbox(key="txt_label").set_value(label).run()
    f = similar.text_search(Workspace(wsp), "a photo of a six", 48, label=label)
    assert grid_ids(at, "txt") == list(f.table["sample_id"][:12]) and (f.table["label"] == label).all()


def test_downstream_panel_on_export(ws):
    at = app(ws, "pages/export.py")
    at.button(key="ex_ds_go").click().run()
    assert not at.exception and "not enough reviewed yet" in infos(at)
    oracle(ws, queue(ws)[:80])
    at.run()
    at.button(key="ex_ds_go").click().run()
    table = table_with(at, "held out")
    w = Workspace(ws)
    r = downstream.downstream_check(w, truth_file=evaluate.truth_path(w), undecided="keep")
    assert list(table["held out"]) == ["reviewed samples (reviewers' labels)", "truth file"]
    assert list(table["samples"]) == [r.trusted.n_test, r.truth.n_test]
    assert table["cleaned labels"].iloc[1].startswith(f"{100 * r.truth.cleaned_accuracy:.1f} % (95%: ")
    oracle(ws, queue(ws)[:1])
    at.run()
    assert "run it again to update" in captions(at)


def test_evaluation_simulation_curves(ws):
    at = app(ws, "pages/evaluation.py")
    at.number_input(key="ev_sim_budget").set_value(60).run()
    at.multiselect(key="ev_sim_strats").set_value(["static", "random"]).run()
    assert not at.get("plotly_chart") or len(at.get("plotly_chart")) == 1  # the PR curves only, until it runs
    at.button(key="ev_sim_go").click().run()
    assert not at.exception
    table = table_with(at, "errors found").set_index("order")
    w = Workspace(ws)
    for strat in ("static", "random"):
        r = simulate.simulate(w, evaluate.truth_path(w), 60, strat)
        assert table.loc[strat, "errors found"] == r.errors_found and table.loc[strat, "reviewed"] == 60
    assert table.loc["static", "errors found"] > table.loc["random", "errors found"]
    assert len(at.get("plotly_chart")) == 2
