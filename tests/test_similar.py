"""More like this, bulk decisions and text search (similar.py). The CLIP here is a tiny random-weight model: these
tests check the plumbing (encode the query with the workspace's own text tower, rank by cosine, filter), never that
the ranking means anything."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from clipcleaner_core.decisions import ReviewStore
from clipcleaner_core.pipeline import EncoderConfig, scan
from clipcleaner_core.similar import apply_same_decision, more_like_this, text_encoder, text_search
from clipcleaner_core.workspace import Workspace


@pytest.fixture(scope="module")
def pixel_ws(demo_dir, tmp_path_factory) -> Workspace:
    ws = tmp_path_factory.mktemp("similar") / "ws"
    scan(demo_dir / "labels.csv", ws, classes_file=demo_dir / "classes.txt", encoder=EncoderConfig(encoder="pixels"))
    return Workspace(ws)


def _clip_scan(demo_dir, tmp_path, tiny_clip, checkpoint: str) -> Workspace:
    rows = pd.read_csv(demo_dir / "labels.csv").iloc[:120]
    rows.to_csv(tmp_path / "subset.csv", index=False)
    ws = tmp_path / "ws"
    scan(tmp_path / "subset.csv", ws, root=str(demo_dir), classes_file=str(demo_dir / "classes.txt"),
         encoder=EncoderConfig(encoder="clip", model=tiny_clip["model"], model_config=tiny_clip["config"],
                               checkpoint=checkpoint, device="cpu", num_workers=0))
    return Workspace(ws)


def _brute(emb: np.ndarray, q: np.ndarray, rows: np.ndarray, k: int) -> list[int]:
    sims = np.asarray(emb[rows], dtype=np.float32) @ np.asarray(q, dtype=np.float32)
    return [int(r) for r in rows[np.lexsort((rows, -sims))][:k]]


def test_more_like_this_same_label_exact(pixel_ws):
    s = pixel_ws.scores()
    emb = pixel_ws.embeddings()
    row = 5
    same = np.flatnonzero((s["label"] == s["label"].iloc[row]).to_numpy())
    same = same[same != row]
    got = more_like_this(pixel_ws, row, k=24)  # more than the 9 stored neighbours: exact search over the label
    assert list(got.columns) == ["row", "sample_id", "path", "abs_path", "label", "similarity"]
    assert got["row"].tolist() == _brute(emb, emb[row], same, 24)
    assert (got["label"] == s["label"].iloc[row]).all() and row not in got["row"].tolist()
    assert got["similarity"].is_monotonic_decreasing
    # by sample id or by path: the same sample
    assert more_like_this(pixel_ws, s["sample_id"].iloc[row], k=24)["row"].tolist() == got["row"].tolist()
    assert more_like_this(pixel_ws, s["path"].iloc[row], k=5)["row"].tolist() == got["row"].tolist()[:5]
    with pytest.raises(ValueError, match="not a scored sample"):
        more_like_this(pixel_ws, "no/such.png")


def test_more_like_this_uses_stored_neighbours_when_enough(pixel_ws):
    s = pixel_ws.scores()
    nb = np.asarray(pixel_ws.array("neighbors"))
    label = s["label"].to_numpy()
    row = next(r for r in range(len(s)) if (label[nb[r]] == label[r]).sum() >= 3)
    stored = [int(j) for j in nb[row] if label[j] == label[row]][:3]
    got = more_like_this(pixel_ws, row, k=3)
    assert got["row"].tolist() == stored
    np.testing.assert_allclose(got["similarity"], np.asarray(pixel_ws.array("neighbor_sims"))[row][
        [list(nb[row]).index(j) for j in stored]].astype(np.float64))
    # any label, and leaving some rows out
    anyl = more_like_this(pixel_ws, row, k=10, same_label=False, exclude_rows=[int(nb[row][0])])
    assert int(nb[row][0]) not in anyl["row"].tolist() and len(anyl) == 10


def test_apply_same_decision_is_one_undo_group(pixel_ws, tmp_path):
    s = pixel_ws.scores()
    ids = s["sample_id"].iloc[:7].tolist()
    with ReviewStore(tmp_path / "review.sqlite", reviewer="ana") as st:
        st.record(ids[0], "accept")
        group = apply_same_decision(st, ids[1:], "relabel", "six", given_labels=s["label"].iloc[1:7].tolist(),
                                    note="more like this")
        cur = st.current().set_index("sample_id")
        assert (cur.loc[ids[1:], "action"] == "relabel").all() and (cur.loc[ids[1:], "label"] == "six").all()
        h = st.history()
        assert set(h.loc[h["group_id"] == group, "sample_id"]) == set(ids[1:])
        assert sorted(st.undo()) == sorted(ids[1:])  # one undo reverts the whole bulk decision
        assert st.current()["sample_id"].tolist() == [ids[0]]
        with pytest.raises(ValueError, match="no samples"):
            apply_same_decision(st, [], "exclude")


def test_text_search_unavailable_without_a_text_tower(pixel_ws):
    r = text_search(pixel_ws, "a photo of a six")
    assert not r.available and "no text tower" in r.reason and "pixels" in r.reason and r.table.empty
    assert isinstance(text_encoder(pixel_ws), str)
    assert not text_search(pixel_ws, "  ").available


def test_text_search_ranks_by_the_workspaces_text_tower(demo_dir, tmp_path, tiny_clip):
    ws = _clip_scan(demo_dir, tmp_path, tiny_clip, tiny_clip["checkpoint"])
    enc = text_encoder(ws)
    assert not isinstance(enc, str), enc
    s = ws.scores()
    emb = ws.embeddings()
    r = text_search(ws, "a photo of a six", k=10, encoder=enc)
    assert r.available and r.reason == "" and len(r.table) == 10
    q = enc.encode_text(["a photo of a six"])[0]
    assert r.table["row"].tolist() == _brute(emb, q, np.arange(len(s)), 10)
    np.testing.assert_allclose(r.table["similarity"], np.asarray(emb[r.table["row"]], np.float32) @ q, atol=1e-5)
    label = s["label"].iloc[0]
    f = text_search(ws, "a photo of a six", k=500, label=label, encoder=enc)
    assert (f.table["label"] == label).all() and len(f.table) == int((s["label"] == label).sum())
    assert text_search(ws, "a photo of a six", k=3).table["row"].tolist() == r.table["row"].tolist()[:3]


def test_text_search_refuses_a_changed_checkpoint(demo_dir, tmp_path, tiny_clip):
    ck = tmp_path / "weights.pt"
    shutil.copy(tiny_clip["checkpoint"], ck)
    ws = _clip_scan(demo_dir, tmp_path, tiny_clip, str(ck))
    st = ck.stat()
    os.utime(ck, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = text_search(ws, "a photo of a six")
    assert not r.available and "changed since the scan" in r.reason
    ck.unlink()
    assert "missing" in text_search(ws, "a photo of a six").reason
