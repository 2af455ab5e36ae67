"""Agreement tests for the faster implementations in the scores stage (docs/PERFORMANCE.md).

- :class:`MultinomialLR` (float32 L-BFGS, centred features, warm starts) vs scikit-learn's
  ``LogisticRegression(class_weight="balanced")``: same objective, so the same probabilities up to the solver
  tolerance;
- ``nearest_neighbors``: blocked top-k exact vs a naive full sort; NN-descent recall vs exact.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from clipcleaner_core.baselines import nearest_neighbors
from clipcleaner_core.scoring import MultinomialLR, probe_probs


def _clustered(n: int, d: int, k: int, seed: int = 0, noise: float = 0.15, sep: float = 0.5):
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(d)
    centres = rng.standard_normal((k, d))
    w = rng.uniform(0.4, 1.6, size=k)
    y_true = rng.choice(k, size=n, p=w / w.sum())
    x = common / np.linalg.norm(common) + sep * centres[y_true] / np.sqrt(d) * 3 \
        + rng.standard_normal((n, d)) * 1.2 / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = y_true.copy()
    flip = rng.random(n) < noise
    y[flip] = (y[flip] + rng.integers(1, k, size=flip.sum())) % k
    return x.astype(np.float32), y.astype(np.int64)


def _sklearn_lr(x, y, C=1.0, tol=1e-4):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=C, class_weight="balanced", max_iter=5000, tol=tol).fit(x, y)


@pytest.mark.parametrize("C", [1.0, 0.1])
def test_multinomial_lr_matches_sklearn(C):
    x, y = _clustered(1500, 24, 6, seed=1)
    xt, _ = _clustered(400, 24, 6, seed=2)
    ref = _sklearn_lr(x, y, C=C, tol=1e-8)  # near-exact optimum
    fast = MultinomialLR(C=C).fit(x, y)
    assert list(fast.classes_) == list(ref.classes_)
    p_ref, p_fast = ref.predict_proba(xt), fast.predict_proba(xt)
    assert np.abs(p_fast - p_ref).max() < 0.02
    assert (p_fast.argmax(1) == p_ref.argmax(1)).mean() >= 0.99
    # scikit-learn at its default tolerance (what the scores used before) is no closer to the optimum than we are
    sk = _sklearn_lr(x, y, C=C)
    err_sk = np.abs(sk.predict_proba(xt) - p_ref)
    assert np.abs(p_fast - p_ref).mean() <= 1.5 * err_sk.mean() + 1e-4
    assert np.abs(p_fast - p_ref).max() <= 1.5 * err_sk.max() + 1e-3
    # tighter tolerance converges to the same optimum
    tight = MultinomialLR(C=C, tol=1e-6).fit(x, y)
    assert np.abs(tight.predict_proba(xt) - p_ref).max() < 2e-3


def test_multinomial_lr_is_class_weight_balanced():
    """A 10:1 imbalance: the class weights are sklearn's "balanced" ones (same probabilities)."""
    x, y = _clustered(1100, 16, 3, seed=3, noise=0.0, sep=0.2)
    y = np.where(np.arange(len(y)) < 100, 2, y % 2)  # class 2 rare
    fast = MultinomialLR(tol=1e-6).fit(x, y)
    ref = _sklearn_lr(x, y, tol=1e-8)
    assert np.abs(fast.predict_proba(x) - ref.predict_proba(x)).max() < 5e-3


def test_multinomial_lr_absent_labels_and_warm_start():
    x, y = _clustered(900, 16, 5, seed=4)
    y = np.where(y == 3, 4, y)  # label 3 absent
    cold = MultinomialLR(tol=1e-6).fit(x, y)
    assert list(cold.classes_) == [0, 1, 2, 4]
    warm = MultinomialLR(tol=1e-6).fit(x, y, init=(cold.coef_ * 0.5, cold.intercept_))
    assert np.abs(warm.predict_proba(x) - cold.predict_proba(x)).max() < 5e-3
    assert np.allclose(cold.predict_proba(x).sum(1), 1.0, atol=1e-5)


def test_probe_cv_fast_matches_sklearn_out_of_fold():
    x, y = _clustered(1200, 24, 8, seed=5)
    p_fast = probe_probs(x, y, 9, mode="cv", solver="fast")  # class 8 never occurs → column of zeros
    p_sk = probe_probs(x, y, 9, mode="cv", solver="sklearn")
    assert p_fast.shape == (1200, 9) and np.all(p_fast[:, 8] == 0)
    assert np.abs(p_fast - p_sk).max() < 0.02
    assert (p_fast.argmax(1) == p_sk.argmax(1)).mean() >= 0.99
    # warm starts between folds do not change the out-of-fold result beyond the solver tolerance
    p_cold = probe_probs(x, y, 9, mode="cv", solver="fast", warm_start=False)
    assert np.abs(p_fast - p_cold).max() < 0.01
    # deterministic
    assert np.array_equal(p_fast, probe_probs(x, y, 9, mode="cv", solver="fast"))


def test_probe_two_classes_uses_sklearn_binomial():
    x, y = _clustered(400, 8, 2, seed=6)
    assert np.allclose(probe_probs(x, y, 2, mode="faithful"), probe_probs(x, y, 2, mode="faithful", solver="sklearn"))


# ------------------------------------------------------------------------------------------------ k-NN
def _naive_knn(x, k):
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def test_exact_knn_matches_naive_sort():
    x, _ = _clustered(700, 16, 5, seed=7)
    idx, sim = nearest_neighbors(x, 10, batch=128, method="exact")
    ref_idx, ref_sim = _naive_knn(x, 10)
    assert idx.shape == (700, 10) and idx.dtype == np.int64 and sim.dtype == np.float32
    assert np.allclose(sim, ref_sim, atol=1e-5)
    assert np.all(idx != np.arange(700)[:, None])
    assert np.all(np.diff(sim, axis=1) <= 1e-7)  # most similar first
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, ref_idx)])
    assert same > 0.999  # only exact ties may swap


def test_approx_knn_recall_and_shape():
    x, _ = _clustered(3000, 32, 10, seed=8)
    exact, esim = nearest_neighbors(x, 10, method="exact")
    approx, asim = nearest_neighbors(x, 10, method="approx")
    assert approx.shape == (3000, 10)
    assert np.all(approx != np.arange(3000)[:, None])
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact)])
    assert recall >= 0.95
    assert np.all(np.diff(asim, axis=1) <= 1e-6)
    # reported similarities are the exact cosines of the returned neighbours
    assert np.allclose(asim, np.einsum("nd,nkd->nk", x, x[approx]), atol=1e-5)


def test_knn_tiny_inputs():
    x, _ = _clustered(3, 4, 2, seed=9)
    for method in ("exact", "approx"):
        idx, sim = nearest_neighbors(x, 10, method=method)
        assert idx.shape == (3, 2)
        assert np.all(idx != np.arange(3)[:, None])
    idx, sim = nearest_neighbors(x[:1], 10)
    assert idx.shape == (1, 0)


@pytest.mark.parametrize("temperature", [0.07, 0.01, 1.0])
def test_zero_shot_vectorised_matches_per_class_logsumexp(temperature):
    from scipy.special import logsumexp, softmax

    from clipcleaner_core.scoring import zero_shot_probs

    rng = np.random.default_rng(11)
    f = rng.standard_normal((300, 16))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    t = rng.standard_normal((25, 16))
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    owner = rng.integers(0, 9, 25)
    owner[owner == 3] = 2  # class 3 has no prompt
    logits = f @ t.T / temperature
    log_s = np.full((300, 9), -np.inf)
    for k in range(9):
        if (owner == k).any():
            log_s[:, k] = logsumexp(logits[:, owner == k], axis=1)
    p = zero_shot_probs(f, t, owner, 9, temperature)
    ref = softmax(log_s, axis=1)
    assert np.abs(p - ref).max() < 1e-5  # float32 cosines and sums (the embeddings are stored in float16)
    assert np.all(p[:, 3] == 0)


def test_approx_knn_degenerate_duplicates_bounded():
    """All rows identical (a broken encoder, or one image copied): one huge cell, processed in bounded blocks."""
    x = np.tile(np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32), (2000, 1))
    x[:500, 1] = 1.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, sim = nearest_neighbors(x, 5, method="approx")
    assert idx.shape == (2000, 5)
    assert np.all(idx != np.arange(2000)[:, None])
    assert np.allclose(sim, 1.0, atol=1e-6)  # every row has exact duplicates


# ----------------------------------------------------------------------------------- torch path vs numpy
def test_torch_objective_matches_numpy_float64():
    """The probe's loss and gradient (float32 torch, row blocks) equal a float64 numpy evaluation of the same
    objective — class-balanced mean cross-entropy + ||W||² / (2 C n) — at a random point."""
    import torch
    from scipy.special import logsumexp

    from clipcleaner_core.scoring import _softmax_objective

    x, y = _clustered(700, 12, 5, seed=12)
    x = x - x.mean(0)
    k, d, C = 5, 12, 0.5
    rng = np.random.default_rng(0)
    theta = rng.normal(scale=0.5, size=d * k + k)
    fun = _softmax_objective([torch.from_numpy(x[:300]), torch.from_numpy(x[300:])],
                             [torch.as_tensor(y[:300]), torch.as_tensor(y[300:])], k, C, rows_per_block=64)
    loss, grad = fun(theta)
    w, b = theta[:d * k].reshape(d, k), theta[d * k:]
    xx = x.astype(np.float64)
    z = xx @ w + b
    counts = np.bincount(y, minlength=k)
    sw = (len(y) / (k * counts))[y]
    ce = logsumexp(z, axis=1) - z[np.arange(len(y)), y]
    l2 = 1.0 / (C * sw.sum())
    ref_loss = float(sw @ ce) / sw.sum() + 0.5 * l2 * float((w * w).sum())
    p = np.exp(z - logsumexp(z, axis=1, keepdims=True))
    p[np.arange(len(y)), y] -= 1.0
    g = p * (sw / sw.sum())[:, None]
    ref_grad = np.concatenate([(xx.T @ g + l2 * w).ravel(), g.sum(0)])
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)


def test_device_choice_and_config_validation():
    import torch

    from clipcleaner_core.detectors import ScoreConfig
    from clipcleaner_core.scoring import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            ScoreConfig(device="cuda").validate()
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        ScoreConfig(folds=1).validate()
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):  # cleanlab's cv probe uses them too
        ScoreConfig(folds=1, probe="faithful").validate()
    ScoreConfig(folds=2, probe="faithful").validate()


def test_detect_same_table_whichever_probability_form():
    """Compact (top-t) storage changes what is stored, never what is scored."""
    from clipcleaner_core.detectors import ScoreConfig, detect

    x, y = _clustered(600, 16, 6, seed=13)
    rng = np.random.default_rng(1)
    tf = rng.normal(size=(12, 16)).astype(np.float32)
    tf /= np.linalg.norm(tf, axis=1, keepdims=True)
    classes = [f"c{i}" for i in range(6)]
    a = detect(x, y, classes, ScoreConfig(), tf, np.repeat(np.arange(6), 2))
    b = detect(x, y, classes, ScoreConfig(), tf, np.repeat(np.arange(6), 2), dense_max_classes=0)
    assert all(p.is_dense for p in a.probs.values()) and not any(p.is_dense for p in b.probs.values())
    import pandas as pd

    pd.testing.assert_frame_equal(a.table, b.table)
    for src in a.probs:
        np.testing.assert_array_equal(a.probs[src].argmax(), b.probs[src].argmax())
        np.testing.assert_array_equal(a.probs[src].topk(3)[0], b.probs[src].topk(3)[0])


def test_entropy_of_the_top_t_form_tells_flat_from_peaked():
    """OOD reads the probe's flatness from compact probabilities: close to the dense entropy, never lower for a
    flat row (the unstored mass counts as spread evenly)."""
    from clipcleaner_core.ood import normalised_entropy
    from clipcleaner_core.probs import from_dense

    rng = np.random.default_rng(0)
    k = 300
    logits = rng.normal(size=(200, k)) * np.r_[np.full(100, 8.0), np.full(100, 0.2)][:, None]  # peaked, then flat
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = rng.integers(0, k, size=200)
    exact = normalised_entropy(p)
    top = from_dense(p, y, dense=False)
    assert not top.is_dense
    approx = normalised_entropy(top)
    assert np.all(approx[100:] > 0.95) and np.all(exact[100:] > 0.95)  # flat rows stay flat
    assert np.abs(approx - exact).max() < 0.05
    assert np.allclose(normalised_entropy(from_dense(p, y, dense=True)), exact, atol=2e-3)


def test_cleanlab_baseline_leaves_the_global_rng_alone():
    from clipcleaner_core.baselines import cleanlab_flags

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    p = rng.dirichlet(np.ones(3), size=90)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    f1, _ = cleanlab_flags(y, p, seed=5)
    assert np.array_equal(np.random.get_state()[1], before)  # the caller's RNG stream is untouched
    f2, _ = cleanlab_flags(y, p, seed=5)
    assert np.array_equal(f1, f2)


def test_one_default_reviewer_for_cli_api_and_app(monkeypatch):
    import argparse

    from clipcleaner_core import cli
    from clipcleaner_core.decisions import default_reviewer

    monkeypatch.setenv("CLIPCLEANER_REVIEWER", "ana")
    assert default_reviewer() == default_reviewer(login=True) == "ana"
    assert cli._cli_reviewer(argparse.Namespace(reviewer=None)) == "ana"
    assert cli._cli_reviewer(argparse.Namespace(reviewer="bo")) == "bo"
    monkeypatch.delenv("CLIPCLEANER_REVIEWER")
    assert default_reviewer() == "local" and default_reviewer(login=True)  # the login name, or "local"
