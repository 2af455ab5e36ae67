"""AppTest (streamlit.testing) of every page on a scanned demo workspace (pixels encoder — not CLIP).

Actions change the stored decisions, undo reverts them, filters filter, and the export matches the decisions.
UMAP is never computed here (the map uses the PCA layout).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from _app_helpers import (  # noqa: E402
    demo_workspace_copy,
    grid,
    grid_bulk,
    grid_decide,
    grid_ids,
    grid_send,
    open_app,
    shown,
)
from streamlit.testing.v1 import AppTest  # noqa: E402

from clipcleaner_core import active  # noqa: E402
from clipcleaner_core.decisions import ReviewStore  # noqa: E402
from clipcleaner_core.workspace import Workspace  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture(autouse=True)
def _no_automatic_refit(monkeypatch):
    """The background refit would re-rank the queue under these tests (tests/test_app_learn.py covers it)."""
    monkeypatch.setenv("CLIPCLEANER_REFIT_EVERY", "0")


@pytest.fixture(scope="module")
def ws_path(tmp_path_factory) -> Path:
    ws, _ = demo_workspace_copy(tmp_path_factory.mktemp("appws"))
    return ws


@pytest.fixture()
def fresh_ws(ws_path):
    """The module's workspace with every review decision removed (so each test starts undecided)."""
    with ReviewStore.for_workspace(ws_path) as store:
        cur = store.current()
        if len(cur):
            store.record_many(list(cur["sample_id"]), "clear")
    return ws_path


def app(ws: Path | None, page: str | None = None, reviewer: str = "tester") -> AppTest:
    return open_app(ws, page, reviewer)


def decisions(ws: Path) -> pd.DataFrame:
    with ReviewStore.for_workspace(ws) as store:
        return store.current().set_index("sample_id")


def scores(ws: Path) -> pd.DataFrame:
    return Workspace(ws).scores()


def card_ids(at: AppTest, prefix: str = "sus") -> list[str]:
    """sample ids of the cards on the current page, in display order."""
    return grid_ids(at, prefix)


def test_home_summary_is_honest(ws_path):
    at = app(ws_path)
    labels = {m.label: m.value for m in at.metric}
    s = scores(ws_path)
    assert labels["Samples"] == f"{len(s):,}" and labels["Classes"] == "10"
    assert labels["Flagged"] == f"{int(s['flagged'].sum()):,}"
    assert labels["Unusable files"] == "0"
    warn = " ".join(w.value for w in at.warning)
    assert "Zero-shot criteria unavailable" in warn and "no text tower" in warn
    page_text = " ".join(str(h.value) for h in at.html) + " ".join(str(c.value) for c in at.caption)
    assert "not CLIP" in page_text  # the pixels encoder is never called CLIP
    assert any("probe loss" in m.value for m in at.markdown)


def test_home_without_workspace_offers_demo_scan_and_open(ws_path):
    at = app(None)
    assert [t.label for t in at.tabs][:3] and "demo" in at.tabs[0].label.lower()
    assert at.button(key="demo_go") is not None
    at.text_input(key="open_path").set_value(str(ws_path / "nope")).run()
    at.button(key="open_go").click().run()
    assert any("not a scanned workspace" in e.value for e in at.error)
    at.text_input(key="open_path").set_value(str(ws_path)).run()
    at.button(key="open_go").click().run()
    assert not at.exception
    assert at.session_state["ws_path"] == str(ws_path)
    assert any(m.label == "Flagged" for m in at.metric)


def test_every_page_renders(ws_path):
    for page in ["pages/suspects.py", "pages/embedding_map.py", "pages/confusion.py",
                 "pages/hard_noise.py", "pages/export.py", "pages/evaluation.py"]:
        at = app(ws_path, page)
        assert not at.error, (page, [e.value for e in at.error])


def test_pages_without_workspace_show_empty_state():
    at = app(None, "pages/suspects.py")
    assert any("No workspace is open" in i.value for i in at.info)


def test_card_actions_store_decisions_and_undo(fresh_ws):
    ws = fresh_ws
    at = app(ws, "pages/suspects.py")
    s = scores(ws).set_index("sample_id")
    ids = card_ids(at)
    assert len(ids) == 12
    rank = active.current_ranking(Workspace(ws)).set_index("sample_id")
    assert np.all(np.diff(rank.loc[ids, "rank_score"].to_numpy()) <= 1e-12)  # current ranking, most suspicious first
    assert s.loc[ids, "flagged"].all()

    a, b, c, d = ids[:4]
    target = next(cl for cl in Workspace(ws).classes() if cl not in (s.loc[c, "label"], s.loc[c, "suggested_label"]))
    grid_decide(at, "sus", a, "relabel", s.loc[a, "suggested_label"])  # S: take the suggestion
    assert grid(at)["message"]["text"].startswith("Relabelled ")
    grid_decide(at, "sus", b, "exclude")  # X
    grid_decide(at, "sus", c, "relabel", target)  # a digit key / the type-ahead picker
    grid_decide(at, "sus", d, "unsure")  # U
    assert not at.exception
    dec = decisions(ws)
    assert dec.loc[a, "action"] == "relabel" and dec.loc[a, "label"] == s.loc[a, "suggested_label"]
    assert dec.loc[b, "action"] == "exclude"
    assert dec.loc[c, "action"] == "relabel" and dec.loc[c, "label"] == target
    assert dec.loc[d, "action"] == "unsure"
    assert set(dec["reviewer"]) == {"tester"}
    # the decided card stays where it was, showing its decision, until the page's rows are recomputed (a filter,
    # a reload): deciding never reshuffles the pages under the keys
    assert next(c_ for c_ in grid(at)["cards"] if c_["sid"] == d)["status"] == "unsure"
    at.run()
    assert not {a, b, c, d} & set(card_ids(at))  # the default filter ("to review") hides decided samples

    grid_send(at, "sus", {"type": "undo"})  # Z: says what it undid, focus back on that sample
    data = grid(at)
    assert data["message"]["text"] == f"Undid: unsure of {Path(s.loc[d, 'path']).name}"
    dec = decisions(ws)
    assert d not in dec.index and dec.loc[c, "label"] == target
    assert data["cmd"]["focus"] == d and d in grid_ids(at)
    grid_send(at, "sus", {"type": "undo"})
    assert c not in decisions(ws).index
    assert grid(at)["message"]["text"] == f"Undid: relabel → {target} of {Path(s.loc[c, 'path']).name}"
    # reload (a new session) shows the same state
    at2 = app(ws, "pages/suspects.py")
    at2.selectbox(key="sus_status").set_value("decided").run()
    assert set(card_ids(at2)) == {a, b}
    # a relabel to a label that is not a class is one error line, never a confirmation
    grid_decide(at2, "sus", a, "relabel", "not a class")
    assert any("not a class of this workspace" in shown(e.value) for e in at2.error) and not at2.exception
    assert decisions(ws).loc[a, "label"] == s.loc[a, "suggested_label"]


def test_keyboard_events_bulk_page_and_undo(fresh_ws):
    ws = fresh_ws
    at = app(ws, "pages/suspects.py")
    ids = card_ids(at)
    data = grid(at)
    assert data["hotkeys"] and data["classes"] == Workspace(ws).classes() and data["total"] >= 12
    grid_decide(at, "sus", ids[0], "accept")  # A on the focused (first) card
    assert decisions(ws).loc[ids[0], "action"] == "accept"
    grid_decide(at, "sus", ids[2], "exclude")
    assert decisions(ws).loc[ids[2], "action"] == "exclude"

    page = card_ids(at)
    grid_bulk(at, "sus", "suggest")  # whole page: take all suggestions, one group
    dec = decisions(ws)
    s = scores(ws).set_index("sample_id")
    assert all(dec.loc[i, "action"] == "relabel" and dec.loc[i, "label"] == s.loc[i, "suggested_label"] for i in page)
    assert grid(at)["message"]["text"] == f"Relabelled {len(page)} samples. Undo: Z"
    grid_send(at, "sus", {"type": "undo"})
    dec = decisions(ws)
    assert set(dec.index) == {ids[0], ids[2]}  # the page's group undone; ids[2] was excluded before it
    assert dec.loc[ids[2], "action"] == "exclude"
    assert grid(at)["message"]["text"] == f"Undid: relabel of {len(page)} samples"


def test_paging_and_page_size_events(fresh_ws):
    at = app(fresh_ws, "pages/suspects.py")
    first = card_ids(at)
    grid_send(at, "sus", {"type": "page", "page": 2, "then": "first"})
    data = grid(at)
    assert data["page"] == 2 and not set(first) & set(grid_ids(at))
    assert data["cmd"]["focus"] == grid_ids(at)[0]
    grid_send(at, "sus", {"type": "page", "page": 1, "then": "last"})
    assert grid(at)["cmd"]["focus"] == first[-1]
    grid_send(at, "sus", {"type": "size", "size": 48}, focus=first[-1])
    data = grid(at)
    assert data["size"] == 48 and len(data["cards"]) == min(48, data["total"]) and data["cmd"]["focus"] == first[-1]
    assert at.query_params["sus_size"] == "48"


def test_per_tab_undo_leaves_the_other_tabs_decision(fresh_ws):
    """Two tabs of the same reviewer: Z in tab 1 undoes tab 1's action only."""
    ws = fresh_ws
    tab1, tab2 = app(ws, "pages/suspects.py"), app(ws, "pages/suspects.py")
    ids = card_ids(tab1)
    grid_decide(tab1, "sus", ids[0], "exclude")
    grid_decide(tab2, "sus", ids[1], "accept")  # tab 2 acts last
    grid_send(tab1, "sus", {"type": "undo"})
    dec = decisions(ws)
    assert ids[0] not in dec.index and dec.loc[ids[1], "action"] == "accept"
    grid_send(tab1, "sus", {"type": "undo"})
    assert grid(tab1)["message"]["text"].startswith("Nothing to undo in this tab")
    assert decisions(ws).loc[ids[1], "action"] == "accept"


def test_stale_view_shows_who_changed_it_and_lets_the_user_choose(fresh_ws):
    ws = fresh_ws
    at = app(ws, "pages/suspects.py", reviewer="ann")
    sid = card_ids(at)[0]
    seen = next(c["seen"] for c in grid(at)["cards"] if c["sid"] == sid)
    with ReviewStore.for_workspace(ws, reviewer="bob") as store:
        store.record(sid, "exclude")  # bob, in another tab or with the CLI, after ann's page was drawn
    grid_decide(at, "sus", sid, "accept", seen=seen)
    data = grid(at)
    assert data["conflict"] and "bob" in data["conflict"]["theirs"] and data["conflict"]["yours"] == "keep"
    assert data["message"]["kind"] == "conflict"
    assert decisions(ws).loc[sid, "reviewer"] == "bob"  # not overwritten silently
    grid_send(at, "sus", {"type": "resolve", "choice": "theirs"})
    assert grid(at)["conflict"] is None and decisions(ws).loc[sid, "action"] == "exclude"
    # the same again, and this time ann applies hers
    with ReviewStore.for_workspace(ws, reviewer="bob") as store:
        store.record(sid, "unsure")
    grid_decide(at, "sus", sid, "accept", seen=seen)
    assert "bob" in grid(at)["conflict"]["theirs"]
    grid_send(at, "sus", {"type": "resolve", "choice": "mine"})
    dec = decisions(ws)
    assert grid(at)["conflict"] is None and (dec.loc[sid, "action"], dec.loc[sid, "reviewer"]) == ("accept", "ann")


def test_quick_successive_keys_on_one_card_are_not_a_conflict(fresh_ws):
    """A then X on the same card before the page came back: both carry the same view; the second is this tab's
    own change, not somebody else's."""
    ws = fresh_ws
    at = app(ws, "pages/suspects.py")
    card = grid(at)["cards"][0]
    grid_send(at, "sus",
              {"type": "decide", "sid": card["sid"], "action": "accept", "label": None, "seen": card["seen"]},
              {"type": "decide", "sid": card["sid"], "action": "exclude", "label": None, "seen": card["seen"]})
    assert grid(at)["conflict"] is None
    assert decisions(ws).loc[card["sid"], "action"] == "exclude"
    # the same events again (a browser resending its outbox) are applied once only
    with ReviewStore.for_workspace(ws) as store:
        n = len(store.history(card["sid"]))
    at.run()
    with ReviewStore.for_workspace(ws) as store:
        assert len(store.history(card["sid"])) == n


def test_url_restores_filters_page_and_focus(fresh_ws):
    ws = fresh_ws
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["ws_path"] = str(ws)
    at.run()
    at.switch_page("pages/suspects.py").run()
    s = scores(ws)
    at.multiselect(key="sus_given").set_value(["three", "eight"]).run()
    grid_send(at, "sus", {"type": "page", "page": 2, "then": "first"})
    focus = grid_ids(at)[3]
    grid_send(at, "sus", focus=focus)
    q = dict(at.query_params)  # the grid's own parameters (bound filters are written by the browser)
    assert q["sus_page"] == "2" and q["sus_focus"] == focus
    q["sus_given"] = ["three", "eight"]
    # a new session opened with that URL (reload, shared link)
    at2 = AppTest.from_file(APP, default_timeout=120)
    at2.session_state["ws_path"] = str(ws)
    at2.run()
    at2.switch_page("pages/suspects.py")
    for k, v in q.items():
        at2.query_params[k] = v
    at2.run()
    assert set(at2.multiselect(key="sus_given").value) == {"three", "eight"}
    data = grid(at2)
    assert data["page"] == 2 and data["cmd"]["focus"] == focus and focus in grid_ids(at2)
    assert set(s.set_index("sample_id").loc[grid_ids(at2), "label"]) <= {"three", "eight"}


def test_detail_view_shows_neighbours_and_acts_on_its_sample(fresh_ws):
    at = app(fresh_ws, "pages/suspects.py")
    at.selectbox(key="sus_status").set_value("all").run()
    sid = card_ids(at)[1]
    grid_send(at, "sus", focus=sid, detail=sid)
    assert not at.exception
    d = grid(at)["detail"]
    assert d["sid"] == sid and d["img"] and len(d["neighbours"]) == 8 and all(n["img"] for n in d["neighbours"])
    assert {src["source"] for src in d["sources"]} >= {"linear probe", "ensemble"}
    assert at.query_params["sus_detail"] == sid and at.query_params["sus_focus"] == sid
    grid_decide(at, "sus", sid, "accept")  # A in the detail view: the sample it shows
    assert decisions(fresh_ws).loc[sid, "action"] == "accept"
    h = grid(at)["detail"]["history"]
    assert (h[0]["action"], h[0]["reviewer"], h[0]["kind"]) == ("accept", "tester", "action")
    grid_send(at, "sus", detail=None)
    assert grid(at)["detail"] is None and "sus_detail" not in at.query_params


def test_embedding_map_selection_grid_and_actions(fresh_ws):
    ws = fresh_ws
    at = app(ws, "pages/embedding_map.py")
    assert not (Path(ws) / "cache" / "layout_umap.npy").exists()  # PCA only, no UMAP in tests
    assert (Path(ws) / "cache" / "layout_pca.npy").exists()
    assert any("Draw a lasso" in i.value for i in at.info)
    s = scores(ws)
    rows = [int(i) for i in np.flatnonzero(s["label"].to_numpy() == "one")[:5]]
    at.session_state["map_sel"] = rows  # what a lasso selection stores
    at.run()
    ids = card_ids(at, "map")
    assert set(ids) == set(s["sample_id"].iloc[rows])
    grid_decide(at, "map", ids[0], "exclude")
    assert decisions(ws).loc[ids[0], "action"] == "exclude"
    assert at.download_button(key="map_dl") is not None
    at.selectbox(key="map_color").set_value("review status").run()
    assert not at.exception


def test_confusion_cell_opens_its_samples(fresh_ws):
    ws = fresh_ws
    at = app(ws, "pages/confusion.py")
    assert any("Click a cell" in i.value for i in at.info)
    classes = Workspace(ws).classes()
    g, p = classes.index("one"), classes.index("eight")
    at.session_state["conf_cell"] = (g, p)
    at.run()
    probs = np.asarray(Workspace(ws).array("probs_probe"))
    s = scores(ws)
    expect = set(s["sample_id"][(s["label_idx"].to_numpy() == g) & (probs.argmax(1) == p)])
    assert any(f"**{len(expect):,}** samples" in m.value for m in at.markdown)
    ids = card_ids(at, "conf")
    assert ids and set(ids) <= expect
    at.segmented_control(key="conf_src").set_value("ens").run()
    assert not at.exception
    at.toggle(key="conf_norm").set_value(True).run()
    assert not at.exception and len(at.dataframe) >= 1


def test_hard_noise_counts_caught_flips_with_small_loss_baseline(fresh_ws):
    at = app(fresh_ws, "pages/hard_noise.py")
    tables = [d.value for d in at.dataframe]
    catch = next(t for t in tables if "hard_caught" in t.columns)
    dets = list(catch["detector"])
    assert any(d.startswith("small-loss, top") for d in dets) and "small-loss, GMM split" in dets
    assert any(d.startswith("default") for d in dets)
    assert (catch["hard_total"] > 0).all() and (catch["easy_total"] > 0).all()
    assert (catch["hard_caught"] <= catch["hard_total"]).all()
    assert (Path(fresh_ws) / "cache" / "small_loss.npy").exists()
    pairs = next(t for t in tables if "similarity" in t.columns and "a" in t.columns)
    assert len(pairs) == 10 and pairs["similarity"].is_monotonic_decreasing


def test_export_matches_decisions(fresh_ws):
    ws = fresh_ws
    s = scores(ws)
    flagged = s[s["flagged"]].sort_values("noise_score", ascending=False)
    relabel_id, exclude_id = flagged["sample_id"].iloc[0], flagged["sample_id"].iloc[1]
    with ReviewStore.for_workspace(ws, reviewer="ann") as store:
        store.record(relabel_id, "relabel", "seven")
        store.record(exclude_id, "exclude")
    at = app(ws, "pages/export.py")
    labels = {m.label: m.value for m in at.metric}
    assert labels["Relabelled"] == "1" and labels["Excluded"] == "1"
    at.button(key="ex_save").click().run()
    assert not at.exception
    out = pd.read_csv(Path(ws) / "exports" / "cleaned.csv", keep_default_na=False).set_index("sample_id")
    assert len(out) == len(s) - 1 and exclude_id not in out.index
    assert out.loc[relabel_id, "label"] == "seven" and out.loc[relabel_id, "decision"] == "relabel"
    assert out.loc[relabel_id, "reviewer"] == "ann"
    assert (Path(ws) / "exports" / "report.json").is_file()
    # keep excluded rows, and take suggestions for undecided flagged samples
    at.radio(key="ex_excluded").set_value("keep").run()
    at.radio(key="ex_undecided").set_value("suggested").run()
    at.button(key="ex_save").click().run()
    out = pd.read_csv(Path(ws) / "exports" / "cleaned.csv", keep_default_na=False).set_index("sample_id")
    assert len(out) == len(s) and out.loc[exclude_id, "decision"] == "exclude"
    und = flagged["sample_id"].iloc[2]
    assert out.loc[und, "label"] == s.set_index("sample_id").loc[und, "suggested_label"]
    dl = at.download_button(key="ex_dl_csv")
    assert dl is not None


def test_export_imagefolder(fresh_ws, tmp_path):
    at = app(fresh_ws, "pages/export.py")
    at.text_input(key="ex_if_dir").set_value(str(tmp_path / "clean")).run()
    at.button(key="ex_if_go").click().run()
    assert any("Wrote 1,797 images" in shown(m.value) for m in at.success)
    assert len(list((tmp_path / "clean").rglob("*.png"))) == 1797


def test_evaluation_metrics(fresh_ws):
    at = app(fresh_ws, "pages/evaluation.py")
    tab = at.dataframe[0].value
    assert {"ensemble vote (default)", "cleanlab (confident learning)",
            "neighbours disagree (k-NN)"} <= set(tab["detector"])
    assert (tab["auroc"] > 0.5).all() and (tab["precision"] <= 1).all()
    labels = {m.label: m.value for m in at.metric}
    assert labels["Mislabelled"] == "539"


def _tiny_imagefolder(root: Path, per_class: int = 12) -> Path:
    """3 classes of simple synthetic images (+ one corrupt file) as an ImageFolder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(["circle", "square", "stripe"]):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            a = np.full((24, 24), 255, np.uint8)
            if k == 0:
                yy, xx = np.mgrid[:24, :24]
                a[(yy - 12) ** 2 + (xx - 12) ** 2 < 40 + i] = 0
            elif k == 1:
                a[5:19, 5:19] = 0
            else:
                a[:, 8 + i % 4:14 + i % 4] = 0
            a = np.clip(a.astype(int) + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
            Image.fromarray(a, mode="L").save(d / f"{i:02d}.png")
    (root / "square" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_scan_form_pixels_lists_unreadable_files(tmp_path):
    data = _tiny_imagefolder(tmp_path / "shapes")
    at = app(None)
    at.text_input(key="scan_data").set_value(str(data))
    at.text_input(key="scan_ws").set_value(str(tmp_path / "ws"))
    at.selectbox(key="scan_encoder").set_value("pixels")
    at.button(key="scan_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert Workspace(tmp_path / "ws").exists()
    assert at.session_state["ws_path"] == str((tmp_path / "ws").absolute())
    labels = {m.label: m.value for m in at.metric}
    assert labels["Samples"] == "37" and labels["Unusable files"] == "1"
    probs = next(d.value for d in at.dataframe if "reason" in d.value.columns)
    assert list(probs["path"]) == ["square/broken.png"] and probs["reason"].iloc[0]


def test_scan_form_clip_without_weights_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = _tiny_imagefolder(tmp_path / "shapes", per_class=3)
    at = app(None)
    at.text_input(key="scan_data").set_value(str(data))
    at.text_input(key="scan_ws").set_value(str(tmp_path / "ws"))
    at.selectbox(key="scan_encoder").set_value("clip")
    at.text_input(key="scan_pretrained").set_value("laion2b_s34b_b79k")
    at.button(key="scan_go").click().run()
    assert not at.exception
    msg = shown(" ".join(e.value for e in at.error))
    assert "CLIP weights are not available" in msg and "--checkpoint" in msg
    assert not Workspace(tmp_path / "ws").exists()


def test_clip_workspace_shows_zero_shot_everywhere(tiny_clip, tmp_path):
    """A workspace scanned with a (tiny, random-weight — not real CLIP) open_clip model: the zero-shot source appears
    in the summary, the cards, the detail view and the confusion switch, and similarities are text prototypes."""
    from clipcleaner_core.pipeline import EncoderConfig, scan

    data = _tiny_imagefolder(tmp_path / "shapes", per_class=10)
    ws = tmp_path / "ws"
    scan(data, ws, encoder=EncoderConfig(encoder="clip", model=tiny_clip["model"], model_config=tiny_clip["config"],
                                         checkpoint=tiny_clip["checkpoint"], device="cpu", num_workers=0))
    at = app(ws)
    assert not any("Zero-shot criteria unavailable" in w.value for w in at.warning)
    assert any("zero-shot loss" in shown(m.value) and "rejects" in m.value for m in at.markdown)
    pills = " ".join(str(h.value) for h in at.html)
    assert "CLIP " + tiny_clip["model"] in pills and "suggestions from: zero-shot CLIP" in pills
    at = app(ws, "pages/confusion.py")
    assert shown(at.segmented_control(key="conf_src").options[0]) == "zero-shot CLIP"
    assert any("CLIP text prototypes" in shown(m.value) for m in [*at.markdown, *at.caption])
    at = app(ws, "pages/suspects.py")
    at.toggle(key="sus_all").set_value(True).run()
    assert grid(at)["cards"][0]["top_source"] == "zero-shot CLIP"
    sid = card_ids(at)[0]
    grid_send(at, "sus", focus=sid, detail=sid)
    assert not at.exception
    assert "zero-shot CLIP" in [src["source"] for src in grid(at)["detail"]["sources"]]
