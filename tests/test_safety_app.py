"""The app side of issue 9 (AppTest, demo workspace, pixels encoder — not CLIP): the Export page's "Output folder"
never replaces a folder clipcleaner did not create, a bad truth file is refused with one line (Hard noise, Home)
and a truth file that went bad later is an error line, not a crash (Hard noise, Evaluation), and the Home page
does not create a workspace in a folder of other files without confirmation."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from _app_helpers import demo_workspace_copy, grid, grid_ids, shown  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402
from test_app import app  # noqa: E402 - the same AppTest driver as the other page tests

from clipcleaner_core import guards  # noqa: E402

SECRET = "root:$6$Sup3rS3cretHash$abcdefghijklmnop:19000:0:99999:7:::"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path]:
    return demo_workspace_copy(tmp_path_factory.mktemp("safetyws"))


def page_text(at: AppTest) -> str:
    parts = [str(e.value) for e in at.error] + [str(m.value) for m in at.markdown] + [str(c.value) for c in at.caption]
    return shown("\n".join(parts))


def test_export_page_never_replaces_a_folder_it_did_not_create(demo, tmp_path):
    ws, data = demo
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("four years")
    for target in (precious, ws, data, data / "images"):
        before = sorted(p.name for p in Path(target).iterdir())
        at = app(ws, "pages/export.py")
        at.text_input(key="ex_if_dir").set_value(str(target)).run()
        at.button(key="ex_if_go").click().run()
        assert not at.exception, [e.value for e in at.exception]
        errs = [shown(e.value) for e in at.error]
        assert errs and str(target) in errs[0] and "Could not write the ImageFolder" in errs[0]
        assert sorted(p.name for p in Path(target).iterdir()) == before
    assert (precious / "thesis.txt").read_text() == "four years"
    # the default folder (inside the workspace's exports/) works, and again over its own previous export
    for _ in range(2):
        at = app(ws, "pages/export.py")
        at.button(key="ex_if_go").click().run()
        assert not at.error and any("Wrote" in s.value for s in at.success)
    assert (ws / "exports" / "imagefolder" / guards.IMAGEFOLDER_MARKER).is_file()


def test_bad_truth_file_is_refused_on_hard_noise_and_never_echoed(demo, tmp_path):
    ws, _ = demo
    stored = json.loads((ws / "truth.json").read_text())
    shadow = tmp_path / "shadow"
    shadow.write_text(SECRET + "\n")
    for bad in (shadow, tmp_path, tmp_path / "missing.csv"):
        at = app(ws, "pages/hard_noise.py")
        at.text_input(key="hn_truth").set_value(str(bad)).run()
        at.button(key="hn_truth_set").click().run()
        assert not at.exception, [e.value for e in at.exception]
        errs = [shown(e.value) for e in at.error]
        assert errs and str(bad) in errs[0], errs
        assert "Sup3r" not in page_text(at)
        assert json.loads((ws / "truth.json").read_text()) == stored  # not stored


def test_truth_file_that_went_bad_shows_one_line(demo, tmp_path):
    ws, data = demo
    good = tmp_path / "truth.csv"
    good.write_text((data / "truth.csv").read_text())
    old = (ws / "truth.json").read_text()
    (ws / "truth.json").write_text(json.dumps({"path": str(good)}))
    try:
        good.write_text(SECRET + "\n")  # changed after it was set
        os.utime(good, (1, 1))
        for page in ("pages/evaluation.py", "pages/hard_noise.py"):
            at = app(ws, page)
            errs = [shown(e.value) for e in at.error]
            assert errs and str(good) in errs[0] and "no path and label columns" in errs[0], errs
            assert "Sup3r" not in page_text(at)
    finally:
        (ws / "truth.json").write_text(old)


def test_home_scan_refuses_a_folder_of_other_files_and_a_bad_truth_file(demo, tmp_path):
    ws, data = demo
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_text("PRIVATE")
    shadow = tmp_path / "shadow"
    shadow.write_text(SECRET + "\n")
    at = app(None)
    at.text_input(key="scan_data").set_value(str(data / "labels.csv"))
    at.text_input(key="scan_ws").set_value(str(ssh))
    at.selectbox(key="scan_encoder").set_value("pixels")
    at.button(key="scan_go").click().run()
    assert not at.exception
    errs = [shown(e.value) for e in at.error]
    assert errs and str(ssh) in errs[0] and "anyway" in errs[0], errs
    assert sorted(p.name for p in ssh.iterdir()) == ["id_ed25519"]  # nothing written
    at.text_input(key="scan_ws").set_value(str(tmp_path / "new_ws"))
    at.text_input(key="scan_truth").set_value(str(shadow))
    at.button(key="scan_go").click().run()
    errs = [shown(e.value) for e in at.error]
    assert errs and str(shadow) in errs[0] and "Sup3r" not in page_text(at)
    assert not (tmp_path / "new_ws").exists()  # refused before the scan started
    # the demo button does not write into a folder of other files either
    at.text_input(key="demo_dir").set_value(str(ssh)).run()
    (ssh / "workspace").mkdir()
    (ssh / "workspace" / "notes.txt").write_text("mine")
    at.button(key="demo_go").click().run()
    assert [e.value for e in at.error] and not (ssh / "data").exists()


def test_export_with_a_relabel_to_a_non_class_is_one_error_line(demo):
    """A decision store edited elsewhere (no class check) holds a relabel to a label that is not a class: the
    Export page's save and download say so in one line instead of raising, and write nothing."""
    ws, _ = demo
    from clipcleaner_core.decisions import ReviewStore

    sid = str(__import__("clipcleaner_core.workspace", fromlist=["Workspace"]).Workspace(ws).scores()["sample_id"][0])
    exports = ws / "exports" / "cleaned.csv"
    before = exports.read_bytes() if exports.exists() else None
    with ReviewStore.for_workspace(ws, reviewer="cli") as store:  # no classes= : nothing stops the label
        store.record(sid, "relabel", "not-a-class")
    try:
        at = app(ws, "pages/export.py")
        at.button(key="ex_save").click().run()
        assert not at.exception, [e.value for e in at.exception]
        errs = [shown(e.value) for e in at.error]
        assert len(errs) == 1 and "Nothing was written" in errs[0] and "not a class" in errs[0], errs
        assert not at.success
        assert (exports.read_bytes() if exports.exists() else None) == before
    finally:
        with ReviewStore.for_workspace(ws) as store:
            store.record(sid, "clear")


def _grid_script() -> None:
    """A page holding only the review grid over the first 24 flagged samples (AppTest.from_function)."""
    import numpy as np

    from pages import _ui

    ctx = _ui.load_ctx()
    _ui.sample_grid(ctx, np.flatnonzero(ctx.scores["flagged"].to_numpy())[:24], "t")


def test_review_database_removed_while_the_app_runs_is_not_confirmed(demo):
    """Runs last in this module: the app's cached store for this workspace stays failed afterwards."""
    ws, _ = demo
    at = AppTest.from_function(_grid_script, default_timeout=120)
    at.session_state["ws_path"] = str(ws)
    at.run()
    ids = grid_ids(at, "t")
    assert ids and not at.exception
    db = ws / "review.sqlite"
    assert db.exists()
    db.unlink()
    for event in ({"type": "decide", "sid": ids[0], "action": "exclude", "label": None, "seen": 0},
                  {"type": "bulk", "action": "accept", "seen": {i: 0 for i in ids}}, {"type": "undo"}):
        at.session_state["t_grid"] = {"ui": {"outbox": [dict(event, seq=grid(at, "t")["acked"] + 1)]}}
        at.run()
        assert not at.exception, [e.value for e in at.exception]  # no exception box
        errors = [shown(e.value) for e in at.error]
        assert len(errors) == 1, errors  # one line
        assert "was removed" in errors[0] and ("NOT saved" in errors[0] or "cannot be read" in errors[0]), errors
        message = grid(at, "t")["message"]
        assert message is None or message["kind"] != "ok"  # never a confirmation
    assert all(c["status"] == "undecided" for c in grid(at, "t")["cards"])
    # a page that reads the decisions says so in one line too, instead of an exception box
    page = app(ws, "pages/suspects.py")
    assert not page.exception and len(page.error) == 1 and "was removed" in shown(page.error[0].value)
    assert not db.exists()  # nothing was written anywhere else either
