"""Re-scanning a workspace keeps review decisions attached to their sample_ids (issue 4).

A new encoder, new thresholds / method, files added and files removed: every decision stays in the store,
decisions of samples that are still there apply to them (same sample_id, export uses them), and decisions of
samples that disappeared or became unusable are reported (``ScanResult.orphans``, ``ReviewStore.orphans``, the
CLI) — never dropped; they attach again when the file comes back.
"""
from __future__ import annotations

import shutil

import _corpus
import pandas as pd

from clipcleaner_core import cli, pipeline
from clipcleaner_core.config import EncoderConfig
from clipcleaner_core.decisions import ReviewStore
from clipcleaner_core.detectors import ScoreConfig
from clipcleaner_core.export import export_csv

PIXELS = EncoderConfig(encoder="pixels")  # no weights needed (not CLIP)


def _decide(ws, scores: pd.DataFrame) -> dict[str, tuple[str, str | None]]:
    """Record one decision of each kind on known paths; returns path -> (action, label)."""
    plan = {
        "cat/cat_000.png": ("relabel", "dog"),
        "cat/cat_001.png": ("exclude", None),
        "dog/dog_000.png": ("accept", None),
        "bird/bird_000.png": ("unsure", None),
        "bird/bird_001.png": ("relabel", "cat"),  # this file will be removed
        "dog/dog_001.png": ("exclude", None),  # this file will become unreadable
    }
    by_path = scores.set_index("path")
    with ReviewStore.for_workspace(ws, reviewer="ann") as store:
        for path, (action, label) in plan.items():
            store.record(by_path.loc[path, "sample_id"], action, label, given_label=by_path.loc[path, "label"])
    return plan


def test_rescan_keeps_decisions_and_reports_orphans(tmp_path, capsys):
    root = tmp_path / "data"
    for label in _corpus.CLASSES:
        _corpus.write_good_images(root / label, label, 10)
    ws = tmp_path / "ws"
    r1 = pipeline.scan(root, ws, encoder=pipeline.EncoderConfig(encoder="pixels", pixel_size=16))
    assert len(r1.orphans) == 0 and list(r1.orphans.columns) == pipeline.ORPHAN_COLUMNS
    plan = _decide(ws, r1.scores)
    ids1 = r1.scores.set_index("path")["sample_id"]
    with ReviewStore.for_workspace(ws) as store:
        before = store.current().sort_values("sample_id").reset_index(drop=True)
        n_events = len(store.history())
    assert len(before) == len(plan)

    # change everything a re-scan can change: encoder, thresholds and method, files added / removed / broken
    removed = root / "bird" / "bird_001.png"
    parked = tmp_path / "parked.png"
    shutil.move(removed, parked)
    (root / "dog" / "dog_001.png").write_bytes(b"no longer an image")
    added = _corpus.write_good_images(root / "cat", "cat", 3, start=100)
    logs: list[str] = []
    r2 = pipeline.scan(root, ws, encoder=pipeline.EncoderConfig(encoder="pixels", pixel_size=8),
                       scoring=ScoreConfig(method="clipcleaner", theta_cons=0.5, theta_gmm=0.3), log=logs.append)
    assert r2.settings.encoder["size"] == 8 and r2.settings.scoring.method == "clipcleaner"
    assert len(r2.scores) == 30 - 2 + 3

    # sample ids of the files still there did not change
    ids2 = r2.scores.set_index("path")["sample_id"]
    common = ids1.index.intersection(ids2.index)
    assert len(common) == 28 and (ids1[common] == ids2[common]).all()
    assert {p.relative_to(root).as_posix() for p in added} <= set(ids2.index)

    # the store is untouched: same current state, no event added or removed
    with ReviewStore.for_workspace(ws) as store:
        after = store.current().sort_values("sample_id").reset_index(drop=True)
        assert len(store.history()) == n_events
        orph_store = store.orphans(r2.scores["sample_id"])
    pd.testing.assert_frame_equal(before, after)

    # the two decisions whose sample is gone / unusable are reported, with why
    gone, broken = ids1["bird/bird_001.png"], ids1["dog/dog_001.png"]
    assert sorted(r2.orphans["sample_id"]) == sorted([gone, broken]) == sorted(orph_store["sample_id"])
    why = r2.orphans.set_index("sample_id")["reason"]
    assert why[gone] == "sample is no longer in the dataset"
    assert "unusable" in why[broken] and "dog_001.png" in why[broken]
    assert r2.orphans.set_index("sample_id").loc[gone, "action"] == "relabel"
    assert any("2 decision(s)" in m for m in logs)

    # the export applies the surviving decisions by sample_id
    _, table = export_csv(ws)
    t = table.set_index("path")
    assert t.loc["cat/cat_000.png", "label"] == "dog" and t.loc["cat/cat_000.png", "decision"] == "relabel"
    assert "cat/cat_001.png" not in t.index  # excluded
    assert t.loc["dog/dog_000.png", "decision"] == "accept"
    assert "bird/bird_001.png" not in t.index and "dog/dog_001.png" not in t.index

    # rescore (new method, no re-embedding) reports the same orphans
    r3 = pipeline.rescore(ws, ScoreConfig(method="knn"))
    assert sorted(r3.orphans["sample_id"]) == sorted(r2.orphans["sample_id"])

    # the CLI says so after a scan
    assert cli.main(["scan", "--encoder", "pixels", str(root), "-w", str(ws), "-q"]) == 0
    out = capsys.readouterr().out
    assert "2 review decision(s) belong to samples not scored in this scan; they are kept" in out
    assert gone in out and broken in out

    # the file comes back: its decision attaches again and applies in the export
    shutil.move(parked, removed)
    _corpus.good_image("dog", 1).save(root / "dog" / "dog_001.png")
    r4 = pipeline.scan(root, ws, encoder=PIXELS)
    assert len(r4.orphans) == 0
    _, table = export_csv(ws)
    t = table.set_index("path")
    assert t.loc["bird/bird_001.png", "label"] == "cat" and "dog/dog_001.png" not in t.index
    with ReviewStore.for_workspace(ws) as store:
        pd.testing.assert_frame_equal(before, store.current().sort_values("sample_id").reset_index(drop=True))


def test_table_rescan_with_moved_root_keeps_ids(tmp_path):
    """Sample ids hash the path relative to the dataset root: moving the whole dataset keeps the decisions."""
    src = tmp_path / "a"
    for label in ("cat", "dog"):
        _corpus.write_good_images(src / "img", label, 6)
    rows = [f"img/{p.name},{p.name.split('_')[0]}" for p in sorted((src / "img").glob("*.png"))]
    (src / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    ws = tmp_path / "ws"
    r1 = pipeline.scan(src / "labels.csv", ws, encoder=PIXELS)
    sid = r1.scores.set_index("path").loc["img/cat_000.png", "sample_id"]
    with ReviewStore.for_workspace(ws) as store:
        store.record(sid, "relabel", "dog")
    dst = tmp_path / "moved"
    shutil.move(src, dst)
    r2 = pipeline.scan(dst / "labels.csv", ws, encoder=PIXELS)
    assert len(r2.orphans) == 0
    assert r2.scores.set_index("path").loc["img/cat_000.png", "sample_id"] == sid
    assert export_csv(ws)[1].set_index("path").loc["img/cat_000.png", "label"] == "dog"
