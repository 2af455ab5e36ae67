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
from streamlit.testing.v1 import AppTest  # noqa: E402

from clipcleaner_core.decisions import ReviewStore  # noqa: E402
from clipcleaner_core.workspace import Workspace  # noqa: E402

from _app_helpers import demo_workspace_copy  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "app.py")


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
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["ws_path"] = str(ws) if ws else ""
    at.session_state["reviewer"] = reviewer
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def decisions(ws: Path) -> pd.DataFrame:
    with ReviewStore.for_workspace(ws) as store:
        return store.current().set_index("sample_id")


def scores(ws: Path) -> pd.DataFrame:
    return Workspace(ws).scores()


def card_ids(at: AppTest, prefix: str = "sus") -> list[str]:
    """sample ids of the cards on the current page, in display order."""
    return [b.key[len(prefix) + 3:-2] for b in at.button if b.key and b.key.startswith(f"{prefix}_c_")
            and b.key.endswith("_a")]


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
    ns = s.loc[ids, "noise_score"].to_numpy()
    assert np.all(np.diff(ns) <= 1e-12) and s.loc[ids, "flagged"].all()  # flagged, most suspicious first

    a, b, c, d = ids[:4]
    at.button(key=f"sus_c_{a}_s").click().run()  # take the suggestion
    at.button(key=f"sus_c_{b}_x").click().run()  # exclude
    target = next(cl for cl in Workspace(ws).classes() if cl not in (s.loc[c, "label"], s.loc[c, "suggested_label"]))
    at.selectbox(key=f"sus_c_{c}_r").set_value(target).run()  # relabel to any class
    at.button(key=f"sus_c_{d}_u").click().run()  # unsure
    assert not at.exception
    dec = decisions(ws)
    assert dec.loc[a, "action"] == "relabel" and dec.loc[a, "label"] == s.loc[a, "suggested_label"]
    assert dec.loc[b, "action"] == "exclude"
    assert dec.loc[c, "action"] == "relabel" and dec.loc[c, "label"] == target
    assert dec.loc[d, "action"] == "unsure"
    assert set(dec["reviewer"]) == {"tester"}
    # the default filter ("to review") hides decided samples
    assert not {a, b, c, d} & set(card_ids(at))

    at.button(key="sus_undo").click().run()
    dec = decisions(ws)
    assert d not in dec.index and dec.loc[c, "label"] == target
    at.button(key="sus_undo").click().run()
    assert c not in decisions(ws).index
    # reload (a new session) shows the same state
    at2 = app(ws, "pages/suspects.py")
    at2.selectbox(key="sus_status").set_value("decided").run()
    assert set(card_ids(at2)) == {a, b}


def test_keyboard_focus_actions_and_bulk_page_undo(fresh_ws):
    ws = fresh_ws
    at = app(ws, "pages/suspects.py")
    ids = card_ids(at)
    assert at.button(key="sus_fa").proto.shortcut.lower() == "a"
    at.button(key="sus_fa").click().run()  # keep the focused (first) card
    assert decisions(ws).loc[ids[0], "action"] == "accept"
    assert at.session_state["sus_focus"] == ids[1]
    at.button(key="sus_next").click().run()
    assert at.session_state["sus_focus"] == ids[2]
    at.button(key="sus_fx").click().run()
    assert decisions(ws).loc[ids[2], "action"] == "exclude"

    page = card_ids(at)
    at.button(key="sus_bs").click().run()  # take all suggestions of the visible page: one undo group
    dec = decisions(ws)
    s = scores(ws).set_index("sample_id")
    assert all(dec.loc[i, "action"] == "relabel" and dec.loc[i, "label"] == s.loc[i, "suggested_label"] for i in page)
    at.button(key="sus_undo").click().run()
    dec = decisions(ws)
    assert not set(page) & set(dec.index)
    assert set(dec.index) == {ids[0], ids[2]}


def test_filters_filter(fresh_ws):
    ws = fresh_ws
    s = scores(ws)
    at = app(ws, "pages/suspects.py")
    at.multiselect(key="sus_given").set_value(["three"]).run()
    ids = card_ids(at)
    sidx = s.set_index("sample_id")
    assert ids and (sidx.loc[ids, "label"] == "three").all()
    n_three = int(((s["label"] == "three") & s["flagged"]).sum())
    assert any(f"**{n_three:,}** samples" in m.value for m in at.markdown)
    at.multiselect(key="sus_sugg").set_value(["five"]).run()
    ids = card_ids(at)
    assert ids and (sidx.loc[ids, "suggested_label"] == "five").all()
    at.multiselect(key="sus_given").set_value([]).run()
    at.multiselect(key="sus_sugg").set_value([]).run()
    at.selectbox(key="sus_crit").set_value("knn_flag").run()
    ids = card_ids(at)
    assert ids and sidx.loc[ids, "knn_flag"].all()
    at.selectbox(key="sus_crit").set_value(None).run()
    at.toggle(key="sus_all").set_value(True).run()
    n_all = len(s)
    assert any(f"**{n_all:,}** samples" in m.value for m in at.markdown)


def test_detail_view_shows_neighbours(fresh_ws):
    at = app(fresh_ws, "pages/suspects.py")
    sid = card_ids(at)[0]
    n_img = len(at.image)
    at.button(key=f"sus_c_{sid}_d").click().run()
    assert not at.exception
    assert len(at.image) == n_img + 1 + 8  # large image + 8 neighbours
    assert any("Nearest neighbours" in m.value for m in at.markdown)
    at.button(key="sus_close").click().run()
    assert len(at.image) == n_img


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
    at.button(key=f"map_c_{ids[0]}_x").click().run()
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
    assert any("Wrote 1,797 images" in m.value for m in at.success)
    assert len(list((tmp_path / "clean").rglob("*.png"))) == 1797


def test_evaluation_metrics(fresh_ws):
    at = app(fresh_ws, "pages/evaluation.py")
    tab = at.dataframe[0].value
    assert {"ensemble vote (default)", "cleanlab (confident learning)", "neighbours disagree (k-NN)"} <= set(tab["detector"])
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
    msg = " ".join(e.value for e in at.error)
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
    assert any("zero-shot loss" in m.value and "rejects" in m.value for m in at.markdown)
    pills = " ".join(str(h.value) for h in at.html)
    assert "CLIP " + tiny_clip["model"] in pills and "suggestions from: zero-shot CLIP" in pills
    at = app(ws, "pages/confusion.py")
    assert at.segmented_control(key="conf_src").options[0] == "zero-shot CLIP"
    assert any("CLIP text prototypes" in m.value for m in [*at.markdown, *at.caption])
    at = app(ws, "pages/suspects.py")
    at.toggle(key="sus_all").set_value(True).run()
    assert any("top-3 (zero-shot CLIP)" in c.value for c in at.caption)
    sid = card_ids(at)[0]
    at.button(key=f"sus_c_{sid}_d").click().run()
    assert not at.exception
    wide = next(d.value for d in at.dataframe if "top-1" in d.value.columns)
    assert "zero-shot CLIP" in list(wide.index)
