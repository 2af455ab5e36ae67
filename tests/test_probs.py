"""Compact class-probability storage (clipcleaner_core/probs.py): both forms answer the same questions the same
way, round-trip through a workspace, and the app and the export give the same results whichever is stored."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from clipcleaner_core import probs as P
from clipcleaner_core.workspace import Settings, Workspace


def _random_probs(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 3
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p, rng.integers(0, k, size=n)


def test_dense_and_topk_forms_answer_alike():
    p, y = _random_probs(500, 40)
    p[0, :] = 1.0 / 40  # a row of exact ties: the lower class index ranks first in both forms
    p[1, [7, 3]] = 0.3  # two equal top classes
    dense = P.from_dense(p, y)  # K = 40 ≤ 128: dense
    top = P.from_dense(p, y, dense=False, top=5)
    assert dense.is_dense and not top.is_dense and top.top == 5 and dense.top == 40
    np.testing.assert_array_equal(dense.argmax(), top.argmax())
    assert dense.argmax()[0] == 0 and top.argmax()[1] == 3
    np.testing.assert_array_equal(dense.argmax(), np.argmax(p.astype(np.float16), axis=1))
    for t in (1, 3, 5):
        di, dp = dense.topk(t)
        ti, tp = top.topk(t)
        np.testing.assert_array_equal(di, ti)
        np.testing.assert_array_equal(dp, tp)
    np.testing.assert_array_equal(dense.given(y), top.given(y))  # the given label is always stored
    np.testing.assert_array_equal(dense.confusion(y), top.confusion(y))
    # another class's probability is known in the top-t form only when it is among the top t
    other = (y + 1) % 40
    g = top.given(other)
    in_top = (top.idx[:, :5] == other[:, None]).any(1)
    np.testing.assert_array_equal(g[in_top], dense.given(other)[in_top])
    assert np.isnan(g[~in_top]).all() and (~in_top).any()
    with pytest.raises(ValueError, match="top 5"):
        top.topk(6)
    with pytest.raises(ValueError, match="no dense matrix"):
        top.dense_view()
    assert dense.dense_view().dtype == np.float16


def test_form_follows_the_number_of_classes():
    p, y = _random_probs(50, P.DENSE_MAX_CLASSES)
    assert P.from_dense(p, y).is_dense
    p, y = _random_probs(50, P.DENSE_MAX_CLASSES + 1)
    c = P.from_dense(p, y)
    assert not c.is_dense and c.idx.shape == (50, P.TOP + 1) and c.idx.dtype == np.int16 and c.p.dtype == np.float16
    np.testing.assert_array_equal(c.idx[:, -1], y)  # the given label is the last column
    assert P.from_dense(p, y, dense_max_classes=1000).is_dense


@pytest.mark.parametrize("dense", [True, False])
def test_workspace_round_trip(tmp_path, dense):
    p, y = _random_probs(300, 20, seed=3)
    pr = P.from_dense(p, y, dense=dense)
    ws = Workspace(tmp_path / "ws")
    emb = ws.embedding_cache("k") / "embeddings.npy"
    emb.parent.mkdir(parents=True)
    np.save(emb, np.eye(300, 8, dtype=np.float16))
    ids = [f"s{i}" for i in range(300)]
    samples = pd.DataFrame({"sample_id": ids, "path": ids, "abs_path": ids, "label": [f"c{v}" for v in y],
                            "label_idx": y, "status": "ok", "reason": ""})
    scores = samples.drop(columns=["status", "reason"]).assign(suggested_label="c0", suggested_prob=0.5,
                                                              noise_score=0.0, flagged=False, reasons="")
    ws.publish(Settings(classes=tuple(f"c{i}" for i in range(20))), tables={"dataset": samples, "scores": scores},
               arrays=pr.arrays("probe"), embeddings=emb)
    back = P.load_probs(ws, "probe")
    assert back is not None and back.is_dense == dense and back.n == 300 and back.n_classes == 20
    np.testing.assert_array_equal(back.argmax(), pr.argmax())
    np.testing.assert_array_equal(back.topk(3)[0], pr.topk(3)[0])
    np.testing.assert_array_equal(back.given(y), pr.given(y))
    assert P.load_probs(ws, "zs") is None


def test_builder_keeps_exact_values_beside_the_rounded_store():
    p, y = _random_probs(1000, 300, seed=5)
    built, kept = P.collect(y, 300, {"a": lambda s, e: p[s:e]}, ensemble=("a",), keep="a", rows=128)
    b = built["a"]
    np.testing.assert_allclose(b.given, p[np.arange(1000), y])
    np.testing.assert_allclose(b.max, p.max(1))
    np.testing.assert_allclose(b.top_p[:, 0], p.max(1))
    np.testing.assert_allclose(kept, p.astype(np.float32))
    np.testing.assert_allclose(built["ens"].given, b.given)  # the mean of one source is itself
    assert not b.build().is_dense  # 300 classes: top-t


def _two_forms(tmp_path, monkeypatch):
    """The scanned demo workspace twice: probabilities stored dense (K = 10) and forced to the top-t form."""
    from _app_helpers import demo_workspace_copy

    from clipcleaner_core.pipeline import rescore

    dense_ws, _ = demo_workspace_copy(tmp_path / "dense")
    compact_ws = tmp_path / "compact" / "ws"
    shutil.copytree(dense_ws, compact_ws)
    monkeypatch.setattr(P, "DENSE_MAX_CLASSES", 0)
    rescore(compact_ws)
    monkeypatch.undo()
    return dense_ws, compact_ws


@pytest.mark.slow
def test_app_and_export_same_with_compact_storage(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from clipcleaner_core.export import export_csv
    from clipcleaner_core.pipeline import _prob_arrays  # noqa: F401 - the one writer of these names

    dense_ws, compact_ws = _two_forms(tmp_path, monkeypatch)
    assert Workspace(compact_ws).has("probs_ens_topk_idx") and not Workspace(compact_ws).has("probs_ens")
    assert Workspace(dense_ws).has("probs_ens")
    a, b = Workspace(dense_ws).scores(), Workspace(compact_ws).scores()
    pd.testing.assert_frame_equal(a.drop(columns=["abs_path"]), b.drop(columns=["abs_path"]))
    for src in ("probe", "knn", "ens"):
        da, cb = P.load_probs(Workspace(dense_ws), src), P.load_probs(Workspace(compact_ws), src)
        assert da.is_dense and not cb.is_dense
        np.testing.assert_array_equal(da.argmax(), cb.argmax())
        np.testing.assert_array_equal(da.given(a["label_idx"]), cb.given(a["label_idx"]))

    app_py = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "app.py")

    def page(ws, path, cell=None):
        at = AppTest.from_file(app_py, default_timeout=120)
        at.session_state["ws_path"] = str(ws)
        at.session_state["reviewer"] = "tester"
        at.run()
        at.switch_page(path)
        if cell is not None:
            at.session_state["conf_cell"] = cell
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    classes = Workspace(dense_ws).classes()
    cell = (classes.index("one"), classes.index("eight"))
    for src in ("probe", "ens", "knn"):
        out = []
        for ws in (dense_ws, compact_ws):
            at = page(ws, "pages/confusion.py", cell)
            at.segmented_control(key="conf_src").set_value(src).run()
            out.append(([m.value for m in at.markdown if "samples" in m.value],
                        [d.value.reset_index(drop=True) for d in at.dataframe]))
        assert out[0][0] == out[1][0] and out[0][0]
        for x, y in zip(out[0][1], out[1][1]):
            pd.testing.assert_frame_equal(x, y)
    hn = [[d.value.reset_index(drop=True) for d in page(ws, "pages/hard_noise.py").dataframe]
          for ws in (dense_ws, compact_ws)]
    pairs = [next(t for t in h if "a→b suggested" in t.columns) for h in hn]
    pd.testing.assert_frame_equal(pairs[0], pairs[1])
    ea = export_csv(dense_ws, tmp_path / "a.csv")[1]
    eb = export_csv(compact_ws, tmp_path / "b.csv")[1]
    pd.testing.assert_frame_equal(ea, eb)
