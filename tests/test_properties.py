"""Property-based tests (hypothesis) for the table loader and the scoring invariants (issue 4).

Derandomized and small so the suite stays deterministic and fast. Numbers inside an example (features,
probabilities) come from a seeded NumPy generator that hypothesis picks the seed of, so they are continuous
(no accidental ties) unless a test asks for ties on purpose.
"""
from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipcleaner_core.dataset import (
    STATUS_DUPLICATE,
    STATUS_EMPTY_LABEL,
    STATUS_INVALID_NAME,
    STATUS_INVALID_ROW,
    STATUS_MISSING,
    STATUS_OK,
    STATUS_OUTSIDE_ROOT,
    STATUS_UNREADABLE,
    DatasetError,
    load_dataset,
    read_table,
)
from clipcleaner_core.detectors import ScoreConfig, detect
from clipcleaner_core.scoring import clipcleaner_select, consistency_scores, loss_scores

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STATUSES = {STATUS_OK, STATUS_MISSING, STATUS_UNREADABLE, STATUS_OUTSIDE_ROOT, STATUS_DUPLICATE,
            STATUS_EMPTY_LABEL, STATUS_INVALID_NAME, STATUS_INVALID_ROW, "unsupported", "unknown_label"}

# ------------------------------------------------------------------------------------------ table loader
_cell_chars = st.sampled_from(list("abcxyzABC019_-. /éüß猫犬,;|\"'()[]{}#&%$!?*~") + ["\u00a0", "\u2603"])
_cells = st.text(_cell_chars, min_size=1, max_size=12).map(str.strip).filter(
    lambda s: s != "" and not (s[0] == "'" and len(s) > 1 and s[1] in "=+-@"))
_labels = st.one_of(_cells, st.just(""), st.sampled_from(["nan", "None", "NULL", "0", "-1", "cat"]))
_headers = st.sampled_from([("path", "label"), ("filepath", "class"), ("Image", "Target"), ("FILE", "y"),
                            (" path ", " label "), ("image_path", "category")])


@st.composite
def csv_tables(draw):
    rows = draw(st.lists(st.tuples(_cells, _labels), min_size=0, max_size=12))
    header = draw(_headers)
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    bom = draw(st.booleans())
    extra = draw(st.sampled_from(["none", "before", "after"]))
    swap = draw(st.booleans())
    blank_after = draw(st.lists(st.booleans(), min_size=len(rows) + 1, max_size=len(rows) + 1))
    cols = [header[1], header[0]] if swap else list(header)
    if extra == "before":
        cols = ["id"] + cols
    elif extra == "after":
        cols = cols + ["notes, etc"]
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator=newline)
    w.writerow(cols)
    line, lines = 1, []
    if blank_after[0]:
        buf.write(newline)
        line += 1
    for k, (path, label) in enumerate(rows):
        vals = {header[0]: path, header[1]: label, "id": str(k), "notes, etc": f"n{k};x"}
        w.writerow([vals[c] for c in cols])
        line += 1
        lines.append(line)
        if blank_after[k + 1]:
            buf.write(newline)
            line += 1
    text = buf.getvalue()
    return ("\ufeff" if bom else "") + text, rows, lines


@SETTINGS
@given(csv_tables())
def test_table_loader_reads_back_what_was_written(table):
    text, rows, lines = table
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "labels.csv"
        p.write_bytes(text.encode("utf-8"))
        got = read_table(p)
        assert list(got.columns) == ["path", "label"]
        assert list(zip(got["path"], got["label"])) == [(a, b) for a, b in rows]
        assert list(got.index) == lines  # each row knows its line in the file
        ds = load_dataset(p)  # no such images: every row is reported, none raises
        assert len(ds.samples) == len(rows) and ds.samples["sample_id"].is_unique
        assert set(ds.samples["status"]) <= STATUSES - {STATUS_OK}
        assert all(r.startswith(f"{p} line ") for r in ds.samples["reason"])


_junk = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.tuples(st.sampled_from(["path,label\n", "path;label\r\n", "label\tpath\n", "x\n", ""]),
              st.text(max_size=150)).map(lambda t: (t[0] + t[1]).encode("utf-8", "surrogatepass")),
)


@SETTINGS
@given(_junk)
def test_table_loader_never_raises_anything_but_a_named_dataset_error(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "junk.csv"
        p.write_bytes(data)
        try:
            ds = load_dataset(p)
        except DatasetError as e:
            assert str(p) in str(e)
            return
        assert ds.samples["sample_id"].is_unique
        assert set(ds.samples["status"]) <= STATUSES


# ------------------------------------------------------------------------------------ scoring invariants
@st.composite
def labelled_probs(draw, ties: bool = False):
    """(y (N,), p_lr (N, K), p_zs (N, K) or None, rng) with K in 2..4 and some classes possibly empty."""
    k = draw(st.integers(2, 4))
    sizes = draw(st.lists(st.integers(0, 12), min_size=k, max_size=k).filter(lambda s: sum(s) >= 2))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(s, c, dtype=np.int64) for c, s in enumerate(sizes)])
    rng.shuffle(y)

    def probs():
        if ties:  # small integer weights: many exact ties between classes
            w = rng.integers(0, 4, size=(len(y), k)).astype(np.float64)
            w[w.sum(1) == 0, 0] = 1.0
            return w / w.sum(1, keepdims=True)
        logits = rng.normal(0, 2, size=(len(y), k))
        logits[np.arange(len(y)), y] += rng.normal(1.5, 1.0, size=len(y))  # mostly agree with the label
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p_lr = probs()
    p_zs = probs() if draw(st.booleans()) else None
    return y, p_lr, p_zs, rng


def _select(y, k, p_lr, p_zs):
    return clipcleaner_select(y, k, p_lr, p_zs, theta_gmm=0.5, theta_cons=0.8, seed=0)


@SETTINGS
@given(labelled_probs(), st.data())
def test_clipcleaner_select_is_permutation_equivariant(case, data):
    y, p_lr, p_zs, _ = case
    k = p_lr.shape[1]
    perm = np.array(data.draw(st.permutations(range(len(y)))))
    a = _select(y, k, p_lr, p_zs)
    b = _select(y[perm], k, p_lr[perm], None if p_zs is None else p_zs[perm])
    assert a.criteria == b.criteria
    for c in a.criteria:
        np.testing.assert_array_equal(b.scores[c], a.scores[c][perm])
        np.testing.assert_array_equal(b.kept[c], a.kept[c][perm])
    np.testing.assert_allclose(b.noise_score, a.noise_score[perm], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(b.clean, a.clean[perm])
    np.testing.assert_array_equal(b.fallback, a.fallback[perm])


@SETTINGS
@given(labelled_probs(), st.data())
def test_clipcleaner_select_ignores_class_numbering(case, data):
    y, p_lr, p_zs, _ = case
    k = p_lr.shape[1]
    pi = np.array(data.draw(st.permutations(range(k))))  # class c becomes class pi[c]
    inv = np.argsort(pi)
    a = _select(y, k, p_lr, p_zs)
    b = _select(pi[y], k, p_lr[:, inv], None if p_zs is None else p_zs[:, inv])
    np.testing.assert_array_equal(a.clean, b.clean)
    np.testing.assert_array_equal(a.fallback, b.fallback)
    for c in a.criteria:
        np.testing.assert_array_equal(a.kept[c], b.kept[c])
        np.testing.assert_allclose(a.scores[c], b.scores[c], rtol=0, atol=1e-12)


@SETTINGS
@given(st.one_of(labelled_probs(), labelled_probs(ties=True)))
def test_loss_and_consistency_scores_are_bounded_and_exact(case):
    y, p, _, _ = case
    ls, cs = loss_scores(p, y), consistency_scores(p, y)
    assert ls.shape == cs.shape == y.shape
    assert ((ls >= 0) & (ls <= 1)).all() and ((cs >= 0) & (cs <= 1)).all()
    given_is_max = p[np.arange(len(y)), y] == p.max(axis=1)
    np.testing.assert_array_equal(cs == 1.0, given_is_max)  # consistency is 1 exactly at the argmax
    for c in np.unique(y):  # loss scores span [0, 1] within a class unless they are all equal
        v = ls[y == c]
        assert v.max() == 1.0 and (v.min() == 0.0 or np.ptp(v) == 0)


@st.composite
def feature_sets(draw):
    k = draw(st.integers(2, 3))
    sizes = draw(st.lists(st.integers(1, 9), min_size=k, max_size=k))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(s, c, dtype=np.int64) for c, s in enumerate(sizes)])
    centers = rng.normal(size=(k, 8)) * 2.0
    x = centers[y] + rng.normal(size=(len(y), 8))
    flip = rng.random(len(y)) < 0.15
    y = np.where(flip, (y + 1) % k, y)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    zs = draw(st.booleans())
    tf = owner = None
    if zs:
        tf = centers.repeat(2, axis=0) + rng.normal(scale=0.3, size=(2 * k, 8))
        tf /= np.linalg.norm(tf, axis=1, keepdims=True)
        owner = np.repeat(np.arange(k), 2)
    return x, y, k, tf, owner


DETECT_CFG = ScoreConfig(method="clipcleaner", probe="faithful", knn_k=5)
TOL = 1e-4  # the probe is fit in float32 by L-BFGS: row order moves its output by ~1e-7, log-scores by ~1e-5


def _compare_tables(a, b, order):
    """Detector tables ``a`` (reference) and ``b`` (rows in ``order`` of a) must agree up to solver noise:
    scores to TOL, flags exactly except for a sample whose score lies within TOL of its threshold."""
    a = a.iloc[order].reset_index(drop=True)
    cols = ["ens_score", "cc_score", "knn_score", "lr_cons_score", "lr_loss_score", "lr_loss_posterior",
            "p_given_ens", "p_given_probe", "p_given_knn", "zs_cons_score", "zs_loss_score", "zs_loss_posterior"]
    for col in cols:
        np.testing.assert_allclose(b[col].to_numpy(float), a[col].to_numpy(float), rtol=0, atol=TOL, err_msg=col)
    np.testing.assert_array_equal(b["knn_flag"].to_numpy(), a["knn_flag"].to_numpy())
    gap = (a["ens_top1_prob"] - a["p_given_ens"]).to_numpy(float) - DETECT_CFG.margin
    near = np.abs(gap) < TOL
    np.testing.assert_array_equal(b["ens_flag"].to_numpy()[~near], a["ens_flag"].to_numpy()[~near])
    any_near = False
    for src in ("lr", "zs"):
        if a[f"{src}_cons_score"].isna().all():
            continue
        for col, score, thr in ((f"{src}_cons_kept", f"{src}_cons_score", DETECT_CFG.theta_cons),
                                (f"{src}_loss_kept", f"{src}_loss_posterior", DETECT_CFG.theta_gmm)):
            near = np.abs(a[score].to_numpy(float) - thr) < TOL
            any_near |= bool(near.any())
            np.testing.assert_array_equal(b[col].to_numpy(bool)[~near], a[col].to_numpy(bool)[~near], err_msg=col)
    if not any_near:  # the CLIPCleaner flag (AND of the criteria + fallback) then agrees everywhere
        np.testing.assert_array_equal(b["cc_flag"].to_numpy(), a["cc_flag"].to_numpy())


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(feature_sets(), st.data())
def test_detect_is_permutation_equivariant(fs, data):
    x, y, k, tf, owner = fs
    classes = [f"c{i}" for i in range(k)]
    perm = np.array(data.draw(st.permutations(range(len(y)))))
    a = detect(x, y, classes, DETECT_CFG, tf, owner).table
    b = detect(x[perm], y[perm], classes, DETECT_CFG, tf, owner).table
    _compare_tables(a, b, perm)
    np.testing.assert_array_equal(b["label"].to_numpy(), a["label"].to_numpy()[perm])


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(feature_sets(), st.data())
def test_detect_ignores_class_numbering(fs, data):
    x, y, k, tf, owner = fs
    pi = np.array(data.draw(st.permutations(range(k))))
    classes = [f"c{i}" for i in range(k)]
    renamed = [None] * k
    for c in range(k):
        renamed[pi[c]] = classes[c]  # the same class, under a new id: names follow the samples
    a = detect(x, y, classes, DETECT_CFG, tf, owner).table
    b = detect(x, pi[y], renamed, DETECT_CFG, tf, None if owner is None else pi[owner]).table
    _compare_tables(a, b, np.arange(len(y)))
    assert list(a["label"]) == list(b["label"]) and list(a["suggested_label"]) == list(b["suggested_label"])
