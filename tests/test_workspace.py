"""The workspace is one consistent, atomically published set (issues 9.3 and 13.1).

- A scan or rescore publishes its whole set at once; a crash before the publish (kill -9 while scoring) leaves
  the previous set readable and unchanged.
- Readers refuse a set that does not match its manifest (a file replaced, truncated, of another shape, a table
  missing a column, a damaged manifest, a 0.1 workspace) with one clear line, and the CLI exits 2 with it.
- A re-scan removes what the new set does not contain: the regression of a CLIP scan followed by a pixels
  re-scan with one image removed (stale ``probs_zs`` beside fewer scores crashed Class confusion).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipcleaner_core import cli
from clipcleaner_core.config import EncoderConfig, ScoreConfig
from clipcleaner_core.pipeline import rescore, scan
from clipcleaner_core.workspace import Workspace, WorkspaceError

ROOT = Path(__file__).resolve().parent.parent
PIXELS = EncoderConfig(encoder="pixels")  # no weights needed (not CLIP)


@pytest.fixture()
def small(tmp_path, demo_dir) -> tuple[Path, Path]:
    """A 120-image subset of the demo and a workspace scanned from it with the pixels encoder."""
    t = pd.read_csv(demo_dir / "labels.csv").groupby("label").head(12)
    table = tmp_path / "subset.csv"
    t.to_csv(table, index=False)
    ws = tmp_path / "ws"
    scan(table, ws, root=str(demo_dir), classes_file=str(demo_dir / "classes.txt"), encoder=PIXELS)
    return table, ws


def _published(ws: Path) -> dict:
    return json.loads((ws / "workspace.json").read_text())


def test_manifest_lists_the_whole_set_and_readers_check_it(small):
    _, ws = small
    m = _published(ws)
    assert m["format"] == "clipcleaner-workspace" and m["version"] == 2
    arts = m["artifacts"]
    assert {"dataset", "scores", "embeddings", "probs_probe", "probs_knn", "probs_ens", "neighbors"} <= set(arts)
    assert "probs_zs" not in arts and "text_features" not in arts  # the pixels encoder has no text tower
    w = Workspace(ws)
    n = len(w.scores())
    assert arts["scores"]["rows"] == n == w.embeddings().shape[0] == w.probs("ens").n
    assert w.sources() == ["probe", "knn", "ens"]
    # every file of the set lives in the published generation (embeddings in the content-keyed cache)
    gen = ws / f"gen-{m['generation']}"
    assert all((ws / a["file"]).is_file() for a in arts.values())
    assert all(a["file"].startswith(gen.name) for k, a in arts.items() if k != "embeddings")
    assert (ws / "current").resolve() == gen.resolve()
    assert pd.read_parquet(ws / "current" / "scores.parquet").equals(w.scores())  # notebooks: WS/current/…


def test_rescore_publishes_a_new_set_and_keeps_one_previous(small):
    _, ws = small
    g0 = Workspace(ws).generation
    r1 = rescore(ws, ScoreConfig(method="knn"))
    g1 = Workspace(ws).generation
    r2 = rescore(ws, ScoreConfig(method="cleanlab"))
    g2 = Workspace(ws).generation
    assert len({g0, g1, g2}) == 3
    assert Workspace(ws).settings().method == "cleanlab" == r2.settings.method and r1.settings.method == "knn"
    gens = sorted(p.name for p in ws.glob("gen-*"))
    assert gens == sorted([f"gen-{g1}", f"gen-{g2}"])  # the oldest is gone, the previous one kept for readers


@pytest.mark.slow  # a CLIP scan, a pixels re-scan and every page through AppTest
def test_stale_sources_never_survive_a_rescan(tmp_path, demo_dir, tiny_clip):
    """Regression (issue 13): CLIP scan, then a pixels re-scan with one image removed."""
    t = pd.read_csv(demo_dir / "labels.csv").groupby("label").head(3)
    data = tmp_path / "data"
    for rel in t["path"]:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_dir / rel, data / rel)
    t.to_csv(data / "labels.csv", index=False)
    ws = tmp_path / "ws"
    clip = EncoderConfig(encoder="clip", model=tiny_clip["model"], model_config=tiny_clip["config"],
                         checkpoint=tiny_clip["checkpoint"], num_workers=0)
    scan(data / "labels.csv", ws, classes_file=str(demo_dir / "classes.txt"), encoder=clip)
    assert Workspace(ws).has("probs_zs") and Workspace(ws).has("text_features")
    (data / t["path"].iloc[0]).unlink()
    r = scan(data / "labels.csv", ws, classes_file=str(demo_dir / "classes.txt"), encoder=PIXELS)
    w = Workspace(ws)
    assert len(r.scores) == 29 and w.sources() == ["probe", "knn", "ens"]
    assert not w.has("probs_zs") and not w.has("text_features") and not w.has("prompts")
    assert not (w.artifact_path("scores").parent / "probs_zs.npy").exists()
    from streamlit.testing.v1 import AppTest

    for page in ["pages/home.py", "pages/suspects.py", "pages/embedding_map.py", "pages/confusion.py",
                 "pages/hard_noise.py", "pages/export.py"]:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.session_state["ws_path"] = str(ws)
        at.run()
        at.switch_page(page)
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])


@pytest.mark.parametrize("damage", ["truncated", "wrong_shape", "missing_file", "missing_column", "bad_json",
                                    "wrong_types", "legacy"])
def test_readers_refuse_an_inconsistent_set_in_one_line(small, damage, capsys):
    _, ws = small
    w = Workspace(ws)
    m = _published(ws)
    if damage == "truncated":
        p = w.artifact_path("probs_ens")
        p.write_bytes(p.read_bytes()[:-40])
        call, what = (lambda: Workspace(ws).probs("ens")), "truncated"
    elif damage == "wrong_shape":
        p = w.artifact_path("embeddings")
        np.save(p, np.zeros((3, 7), dtype=np.float16))
        call, what = (lambda: Workspace(ws).embeddings()), "re-scan"
    elif damage == "missing_file":
        w.artifact_path("scores").unlink()
        call, what = (lambda: Workspace(ws).scores()), "missing"
    elif damage == "missing_column":
        p = w.artifact_path("scores")
        df = pd.read_parquet(p).drop(columns=["noise_score"])
        df.to_parquet(p, index=False)
        m["artifacts"]["scores"]["bytes"] = p.stat().st_size  # consistent size, the column is still missing
        (ws / "workspace.json").write_text(json.dumps(m))
        call, what = (lambda: Workspace(ws).scores()), "noise_score"
    elif damage == "bad_json":
        (ws / "workspace.json").write_text("{ not json")
        call, what = (lambda: Workspace(ws).scores()), "manifest"
    elif damage == "wrong_types":
        m["settings"]["classes"] = "zero,one"
        (ws / "workspace.json").write_text(json.dumps(m))
        call, what = (lambda: Workspace(ws).settings()), "classes"
    else:  # a clipcleaner 0.1 workspace.json (flat files, no manifest)
        (ws / "workspace.json").write_text(json.dumps({"classes": ["a"], "embedding_key": "k", "state": "scored"}))
        call, what = (lambda: Workspace(ws).scores()), "0.1"
    with pytest.raises(WorkspaceError) as e:
        call()
    msg = str(e.value)
    assert what in msg and "\n" not in msg
    rc = cli.main(["export", str(ws), "--out", str(ws.parent / "out.csv")])
    err = capsys.readouterr().err
    if damage in ("truncated", "wrong_shape"):
        return  # export reads scores and decisions only: it is right not to fail on these
    assert rc == 2 and err.count("\n") == 1 and "error:" in err
    assert not (ws.parent / "out.csv").exists()


KILL_SCRIPT = """
import sys, time
from clipcleaner_core import pipeline, scoring
from clipcleaner_core.config import ScoreConfig
import clipcleaner_core.detectors as d
slow = d.fit_probe
def fit_probe(*a, **k):
    print("scoring", flush=True)
    time.sleep(60)
    return slow(*a, **k)
d.fit_probe = fit_probe
pipeline.rescore(sys.argv[1], ScoreConfig(method="knn"))
"""


def test_kill_9_while_rescoring_leaves_the_previous_set(small):
    _, ws = small
    before = _published(ws)
    scores_before = Workspace(ws).scores()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(ws)], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "scoring"  # it is inside the scores stage now
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert _published(ws) == before
    pd.testing.assert_frame_equal(Workspace(ws).scores(), scores_before)
    assert cli.main(["export", str(ws), "--out", str(ws.parent / "after-kill.csv")]) == 0


def test_a_failed_publish_leaves_nothing_behind(small, monkeypatch):
    _, ws = small
    before = _published(ws)
    gens = sorted(ws.glob("gen-*"))
    import clipcleaner_core.workspace as W

    real = W._write_synced
    calls = {"n": 0}

    def failing(path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(W, "_write_synced", failing)
    with pytest.raises(WorkspaceError, match="No space left on device.*previous results are intact"):
        rescore(ws, ScoreConfig(method="knn"))
    assert _published(ws) == before and sorted(ws.glob("gen-*")) == gens


def test_a_legacy_workspace_is_rescanned_in_place(small, tmp_path):
    """A 0.1 workspace (flat result files + review_db in workspace.json) re-scanned: its flat result files go,
    the review-database setting moves to review.json, its review.sqlite stays."""
    table, ws = small
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("scores.parquet", "embeddings.npy", "probs_ens.npy", "neighbors.npy"):
        (legacy / name).write_bytes(b"0.1 result file")
    (legacy / "review.sqlite").write_bytes(b"")
    (legacy / "workspace.json").write_text(json.dumps({"classes": ["zero"], "embedding_key": "x",
                                                        "review_db": "team.sqlite"}))
    with pytest.raises(WorkspaceError, match="clipcleaner 0.1"):
        Workspace(legacy).scores()
    demo_dir = Path(Workspace(ws).settings().data.root)
    scan(table, legacy, root=str(demo_dir), classes_file=str(demo_dir / "classes.txt"), encoder=PIXELS)
    assert not (legacy / "scores.parquet").exists() and not (legacy / "probs_ens.npy").exists()
    assert (legacy / "review.sqlite").exists()
    assert json.loads((legacy / "review.json").read_text()) == {"review_db": "team.sqlite"}
    assert len(Workspace(legacy).scores()) == len(Workspace(ws).scores())


def test_settings_are_typed(small):
    _, ws = small
    s = Workspace(ws).settings()
    assert s.zero_shot.available is False and "no text tower" in s.zero_shot.reason
    assert s.scoring.method == "ensemble" and s.detection.criteria_used == ("lr_loss", "lr_cons")
    assert s.classes[0] == "zero" and s.encoder_kind == "pixels" and s.counts["scored"] == len(Workspace(ws).scores())
