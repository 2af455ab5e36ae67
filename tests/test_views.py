"""Core computations behind the app: review state, filters, confusion, hard/easy flips, small-loss, layouts,
thumbnails. Synthetic inputs (fast, exact expectations) plus a tiny hand-made workspace."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipcleaner_core import baselines, evaluate, layout, thumbnails, views
from clipcleaner_core.workspace import DataSource, DetectionInfo, Settings, Workspace


def _scores(n: int = 8) -> pd.DataFrame:
    classes = np.array(["cat", "dog", "fox"])
    y = np.arange(n) % 3
    return pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(n)], "path": [f"img/{i}.png" for i in range(n)],
        "abs_path": [f"/x/img/{i}.png" for i in range(n)], "label_idx": y, "label": classes[y],
        "suggested_label": classes[(y + (np.arange(n) % 2)) % 3], "noise_score": np.linspace(0.1, 0.9, n),
        "flagged": np.arange(n) % 2 == 1, "ens_flag": np.arange(n) % 2 == 1, "cc_flag": np.arange(n) % 4 == 1,
        "lr_loss_kept": pd.array([i % 3 != 1 for i in range(n)], dtype="boolean"),
        "zs_loss_kept": pd.array([pd.NA] * n, dtype="boolean"),
    })


def test_review_state_maps_decisions_and_defaults_to_undecided():
    s = _scores(5)
    dec = pd.DataFrame({"sample_id": ["s1", "s3", "zzz"], "action": ["relabel", "exclude", "accept"],
                        "label": ["fox", None, None], "reviewer": ["ann", "bob", "ann"], "updated_at": ["t"] * 3})
    st = views.review_state(s["sample_id"], dec)
    assert list(st["status"]) == ["undecided", "relabel", "undecided", "exclude", "undecided"]
    assert st["new_label"][1] == "fox" and pd.isna(st["new_label"][3])
    assert st["reviewer"][3] == "bob"
    empty = views.review_state(s["sample_id"], dec.iloc[:0])
    assert (empty["status"] == "undecided").all()
    assert views.decision_counts(st) == {"undecided": 3, "accept": 0, "relabel": 1, "exclude": 1, "unsure": 0}
    assert views.decision_counts(st, s["flagged"].to_numpy())["undecided"] == 0  # s1, s3 flagged and decided


def test_filter_rows_filters_and_sorts_by_noise_score():
    s = _scores(8)
    st = views.review_state(s["sample_id"], pd.DataFrame({"sample_id": ["s7"], "action": ["accept"], "label": [None],
                                                          "reviewer": ["a"], "updated_at": ["t"]}))
    allf = views.filter_rows(s, st)
    assert list(allf) == [7, 5, 3, 1]  # flagged only, most suspicious first
    assert list(views.filter_rows(s, st, status=["undecided"])) == [5, 3, 1]
    assert list(views.filter_rows(s, st, given=["dog"])) == [7, 1]
    assert list(views.filter_rows(s, st, flagged_only=False, suggested=["cat"])) == [6, 5, 0]
    assert list(views.filter_rows(s, st, criterion="cc_flag")) == [5, 1]
    assert list(views.filter_rows(s, st, flagged_only=False, criterion="lr_loss_kept")) == [7, 4, 1]
    assert list(views.filter_rows(s, st, rows=np.array([1, 2, 3]))) == [3, 1]
    opts = views.criterion_options(s, Settings(classes=("a",), detection=DetectionInfo(criteria_used=("lr_loss",))))
    assert "lr_loss_kept" in opts and "zs_loss_kept" not in opts and "ens_flag" in opts


def test_page_slice_clamps():
    assert views.page_slice(25, 1, 12) == (0, 12, 3)
    assert views.page_slice(25, 3, 12) == (24, 25, 3)
    assert views.page_slice(25, 9, 12) == (24, 25, 3)
    assert views.page_slice(0, 1, 12) == (0, 0, 1)


def test_confusion_counts_and_pairs():
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 0, 2]]
    c = views.confusion_counts(y, probs, 3)
    assert c.tolist() == [[1, 2, 0], [1, 1, 0], [0, 0, 1]]
    rn = views.row_normalise(c)
    assert np.allclose(rn.sum(axis=1), 1) and rn[0, 1] == pytest.approx(2 / 3)
    sim = np.array([[1, .8, .1], [.8, 1, .3], [.1, .3, 1]])
    pairs = views.confused_pairs(c, sim, ["a", "b", "c"])
    assert list(pairs[["given", "suggested", "samples"]].itertuples(index=False, name=None)) == [("a", "b", 2),
                                                                                                ("b", "a", 1)]
    assert pairs["similarity"].tolist() == [0.8, 0.8]
    sp = views.similar_pairs(sim, ["a", "b", "c"], top=2)
    assert list(zip(sp["a"], sp["b"])) == [("a", "b"), ("b", "c")]


def test_flip_kinds_and_catch_table():
    sim = np.array([[1, .9, .1], [.9, 1, .2], [.1, .2, 1]])  # most similar: 0->1, 1->0, 2->1
    truth = np.array([0, 0, 1, 2, 2, 0, -1])
    given = np.array([0, 1, 0, 1, 0, 2, 1])
    k = views.flip_kinds(given, truth, sim)
    assert list(k) == ["clean", "hard", "hard", "hard", "easy", "easy", "unknown"]
    t = views.catch_table(k, {"all": np.ones(7, bool), "first3": np.array([1, 1, 1, 0, 0, 0, 1], bool)})
    row = t.set_index("detector").loc["first3"]
    assert (row["hard_caught"], row["hard_total"], row["easy_caught"], row["easy_total"]) == (2, 3, 0, 2)
    assert row["flagged"] == 3 and row["precision"] == pytest.approx(2 / 3)
    assert t.set_index("detector").loc["all", "recall"] == 1.0


def test_small_loss_flags_the_flipped_samples():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 3
    y_true = np.repeat(np.arange(3), 60)
    x = centers[y_true] + rng.normal(size=(180, 16))
    y = y_true.copy()
    flip = rng.choice(180, 18, replace=False)
    y[flip] = (y[flip] + 1) % 3
    loss = baselines.small_loss(x, y, 3, C=0.05)
    top = baselines.small_loss_flags(loss, 0.1)
    assert top.sum() == 18
    assert (top & np.isin(np.arange(180), flip)).sum() >= 14
    gmm = baselines.small_loss_flags(loss, None)
    assert gmm[flip].mean() > 0.7 and gmm.sum() < 60
    assert not baselines.small_loss_flags(np.zeros(5), None).any()


def _publish(ws: Workspace, scores: pd.DataFrame, emb: Path, key: str, source: str) -> None:
    samples = scores[["sample_id", "path", "abs_path", "label", "label_idx"]].assign(status="ok", reason="")
    ws.publish(Settings(classes=("b", "a"), embedding_key=key, data=DataSource(source=source)),
               tables={"dataset": samples, "scores": scores}, embeddings=emb)


def _tiny_workspace(tmp_path, n=40, d=8) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    emb = ws.embedding_cache("k1") / "embeddings.npy"
    emb.parent.mkdir(parents=True)
    np.save(emb, x.astype(np.float16))
    imgs = tmp_path / "img"
    imgs.mkdir()
    rows = []
    for i in range(n):
        p = imgs / f"{i}.png"
        Image.fromarray((rng.random((12, 20, 3)) * 255).astype(np.uint8)).save(p)
        rows.append({"sample_id": f"id{i:03d}", "path": f"img/{i}.png", "abs_path": str(p), "label": "a" if i % 2
                     else "b", "label_idx": i % 2, "suggested_label": "a", "suggested_prob": 0.5,
                     "noise_score": float(i) / n, "flagged": i % 5 == 0, "reasons": ""})
    _publish(ws, pd.DataFrame(rows), emb, "k1", str(tmp_path / "x.csv"))
    return ws


def test_layout_pca_cached_and_invalidated(tmp_path):
    ws = _tiny_workspace(tmp_path)
    assert layout.cached_layout(ws, "pca") is None
    xy = layout.layout(ws, "pca")
    assert xy.shape == (40, 2) and xy.dtype == np.float32 and abs(float(xy.std()) - 1) < 1e-3
    assert np.array_equal(layout.cached_layout(ws, "pca"), xy)
    emb2 = ws.embedding_cache("k2") / "embeddings.npy"  # a re-scan with other embeddings invalidates the cache
    emb2.parent.mkdir(parents=True)
    shutil.copy(ws.artifact_path("embeddings"), emb2)
    _publish(ws, ws.scores(), emb2, "k2", ws.settings().data.source)
    assert layout.cached_layout(ws, "pca") is None


def test_plot_sample_keeps_all_flagged():
    flag = np.zeros(1000, bool)
    flag[::7] = True
    idx = layout.plot_sample(flag, max_points=300, seed=0)
    assert len(idx) == 300 and set(np.flatnonzero(flag)) <= set(idx) and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, layout.plot_sample(flag, max_points=300, seed=0))  # deterministic
    assert len(layout.plot_sample(flag, max_points=5000)) == 1000


@pytest.mark.slow  # numba JIT of umap-learn: ~40 s in a fresh process
def test_umap_background_job_caches_layout(tmp_path):
    ws = _tiny_workspace(tmp_path, n=30)
    job = layout.start_umap(ws)
    job.thread.join(timeout=240)
    assert job.state == "done", job.error
    xy = layout.cached_layout(ws, "umap")
    assert xy is not None and xy.shape == (30, 2) and np.isfinite(xy).all()
    meta = json.loads((ws.cache_dir / "layout_umap.json").read_text())
    assert meta["params"]["random_state"] == 42
    assert layout.start_umap(ws) is job  # finished and cached: not recomputed


def test_thumbnails_created_once_and_placeholder_for_broken(tmp_path):
    ws = _tiny_workspace(tmp_path, n=3)
    s = ws.scores()
    paths = thumbnails.ensure_thumbnails(ws, list(s["sample_id"]), list(s["abs_path"]), size=64)
    assert all(p.is_file() for p in paths)
    with Image.open(paths[0]) as im:
        assert im.format == "JPEG" and max(im.size) == 64  # 20x12 source upscaled (nearest) to 64 wide
    m0 = paths[0].stat().st_mtime_ns
    assert thumbnails.ensure_thumbnail(ws, s["sample_id"][0], s["abs_path"][0], 64).stat().st_mtime_ns == m0
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    p = thumbnails.ensure_thumbnail(ws, "broken", str(bad), 64)
    with Image.open(p) as im:
        assert im.size == (64, 64)
    # EXIF orientation is honoured (load_image): a 30x10 image tagged "rotate 90" becomes 10x30
    ex = tmp_path / "rot.jpg"
    img = Image.new("RGB", (30, 10), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(ex, exif=exif)
    with Image.open(thumbnails.ensure_thumbnail(ws, "rot", str(ex), 60)) as im:
        assert im.size[1] > im.size[0]


def test_truth_path_roundtrip(tmp_path):
    ws = _tiny_workspace(tmp_path, n=4)
    assert evaluate.truth_path(ws) is None
    t = tmp_path / "truth.csv"
    t.write_text("path,label\nimg/0.png,b\n")
    evaluate.set_truth_path(ws, t)
    assert evaluate.truth_path(ws) == t.absolute()
    evaluate.set_truth_path(ws, None)
    assert evaluate.truth_path(ws) is None
    from clipcleaner_core.evaluate import TruthFileError

    with pytest.raises(TruthFileError, match="no such truth file"):
        evaluate.set_truth_path(ws, tmp_path / "nope.csv")


def test_encoder_description_only_says_clip_for_clip():
    def desc(kind: str, enc: dict) -> str:
        return views.encoder_description(Settings(classes=("a",), encoder_kind=kind, encoder=enc))

    assert "not CLIP" in desc("pixels", {"size": 16})
    other = desc("bench-synthetic", {"note": "synthetic"})
    assert "CLIP" not in other and "bench-synthetic" in other
    clip = desc("clip", {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})
    assert clip == "CLIP ViT-B-32 pretrained=laion2b_s34b_b79k"
