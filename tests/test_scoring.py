"""Hand-computed tiny cases for the CLIPCleaner method (METHOD.md) and its guards."""
from __future__ import annotations

import math

import numpy as np
import pytest

from clipcleaner_core import scoring
from clipcleaner_core.baselines import knn_flags, knn_probs, nearest_neighbors
from clipcleaner_core.noise import hard_noise, most_similar_class, pairwise_noise, symmetric_noise


def test_zero_shot_sum_of_exponentials_by_hand():
    f = np.array([[1.0, 0.0]])
    t = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # class 0: two prompts, class 1: one
    owner = np.array([0, 0, 1])
    T = 0.07
    s0 = math.exp(1.0 / T) + math.exp(0.0 / T)
    s1 = math.exp(0.6 / T)
    p = scoring.zero_shot_probs(f, t, owner, 2, T)
    assert p.shape == (1, 2)
    # float32 cosines and sums (the embeddings are stored in float16): relative error ~1e-6
    assert p[0, 0] == pytest.approx(s0 / (s0 + s1), rel=1e-6)
    assert p[0, 1] == pytest.approx(s1 / (s0 + s1), rel=1e-5)
    # prompts are summed, not averaged: a second identical prompt for class 1 doubles s1
    p2 = scoring.zero_shot_probs(f, np.vstack([t, t[2:]]), np.array([0, 0, 1, 1]), 2, T)
    assert p2[0, 1] == pytest.approx(2 * s1 / (s0 + 2 * s1), rel=1e-5)


def test_zero_shot_is_stable_and_handles_class_without_prompts():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 4))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    t = rng.normal(size=(4, 4))
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    p = scoring.zero_shot_probs(f, t, np.array([0, 0, 2, 2]), 3, temperature=0.001)  # huge logits
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert (p[:, 1] == 0).all()


def test_loss_scores_minmax_per_class_by_hand():
    p = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    y = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(scoring.loss_scores(p, y), [0.0, 1.0, 1.0, 0.0])


def test_loss_scores_constant_and_single_sample_class_are_one():
    p = np.array([[0.5, 0.5], [0.5, 0.5], [0.1, 0.9]])
    y = np.array([0, 0, 1])
    np.testing.assert_allclose(scoring.loss_scores(p, y), [1.0, 1.0, 1.0])


def test_consistency_scores_by_hand():
    p = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    y = np.array([1, 1, 0, 0])
    np.testing.assert_allclose(scoring.consistency_scores(p, y), [1.0, 0.1 / 0.9, 0.25, 0.3 / 0.7])
    assert scoring.consistency_scores(p, np.array([0, 0, 1, 1]))[1:].tolist() == [1.0, 1.0, 1.0]


def test_gmm_per_class_keeps_high_mode_and_guards():
    rng = np.random.default_rng(1)
    high = 0.9 + 0.02 * rng.standard_normal(12)
    low = 0.1 + 0.02 * rng.standard_normal(6)
    tiny = np.array([0.0, 1.0, 0.5])  # class with 3 samples < MIN_GMM_SAMPLES: abstain
    const = np.full(10, 0.4)  # constant scores: abstain
    s = np.concatenate([high, low, tiny, const])
    y = np.array([0] * 18 + [1] * 3 + [2] * 10)
    post = scoring.gmm_clean_posterior(s, y, seed=0)
    assert (post[:12] > 0.99).all() and (post[12:18] < 0.01).all()
    assert (post[18:] == 1.0).all()


def test_gmm_is_grouped_by_class_not_global():
    # class 1's scores are all lower than class 0's, but within class 1 the high mode is still kept
    c0 = np.r_[np.full(10, 0.95), np.full(5, 0.9)]
    c1 = np.r_[np.full(10, 0.4), np.full(5, 0.05)]
    post = scoring.gmm_clean_posterior(np.r_[c0, c1], np.array([0] * 15 + [1] * 15), seed=0)
    assert (post[15:25] > 0.99).all() and (post[25:] < 0.01).all()


def _toy_sources():
    # 4 classes x 10 samples; craft each source to reject different samples
    n, k = 40, 4
    y = np.repeat(np.arange(k), 10)
    p_zs = np.full((n, k), 0.02)
    p_lr = np.full((n, k), 0.02)
    p_zs[np.arange(n), y] = 0.94
    p_lr[np.arange(n), y] = 0.94
    p_zs[3] = [0.05, 0.9, 0.03, 0.02]   # zero-shot disagrees with label 0 (loss + consistency)
    p_lr[14] = [0.02, 0.4, 0.55, 0.03]  # probe: consistency 0.4/0.55 < 0.8 but probability not tiny
    return y, p_zs / p_zs.sum(1, keepdims=True), p_lr / p_lr.sum(1, keepdims=True)


def test_selection_is_and_of_four_criteria():
    y, p_zs, p_lr = _toy_sources()
    sel = scoring.clipcleaner_select(y, 4, p_lr, p_zs, theta_gmm=0.5, theta_cons=0.8, seed=0)
    assert sel.criteria == ["zs_loss", "zs_cons", "lr_loss", "lr_cons"]
    expect = np.logical_and.reduce([sel.kept[c] for c in sel.criteria])
    np.testing.assert_array_equal(sel.clean & ~sel.fallback, expect)
    assert not sel.kept["zs_cons"][3] and not sel.kept["zs_loss"][3]
    assert not sel.kept["lr_cons"][14]
    assert set(np.flatnonzero(~sel.clean)) == {3, 14}
    assert sel.noise_score[3] > sel.noise_score[0] and sel.noise_score[14] > sel.noise_score[0]


def test_consistency_threshold_one_means_argmax():
    y, p_zs, p_lr = _toy_sources()
    p_lr[20] = [0.1, 0.1, 0.41, 0.39]  # label 2 still argmax, but with low margin
    sel = scoring.clipcleaner_select(y, 4, p_lr, p_zs, theta_cons=1.0)
    assert sel.kept["lr_cons"][20]
    p_lr[20] = [0.1, 0.1, 0.39, 0.41]
    sel = scoring.clipcleaner_select(y, 4, p_lr, p_zs, theta_cons=1.0)
    assert not sel.kept["lr_cons"][20]


def test_without_zero_shot_only_probe_criteria():
    y, _, p_lr = _toy_sources()
    sel = scoring.clipcleaner_select(y, 4, p_lr, None)
    assert sel.criteria == ["lr_loss", "lr_cons"]


def test_fallback_by_hand_keeps_best_not_worst():
    y = np.repeat([0, 1, 2], 4)
    clean = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    rank = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0.1, 0.9, 0.5, 0.7])
    added = scoring.fallback_fill(clean, y, 3, rank)
    # n = max(smallest non-empty class count 2, floor(12 / 3^2) = 1) = 2, best zero-shot loss scores: 9, 11
    assert np.flatnonzero(added).tolist() == [9, 11]


def test_fallback_uses_floor_n_over_k2_when_larger():
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    clean = np.r_[np.ones(1, bool), np.zeros(29, bool), np.zeros(30, bool)]
    rank = np.r_[np.zeros(30), np.linspace(0, 1, 30)]
    added = scoring.fallback_fill(clean, y, 2, rank)
    assert added.sum() == 60 // 4  # max(1, floor(60/4)=15)
    assert set(np.flatnonzero(added)) == set(range(45, 60))


def test_fallback_in_selection_when_a_class_is_rejected_entirely():
    y, p_zs, p_lr = _toy_sources()
    p_zs[30:40] = [0.9, 0.04, 0.03, 0.03]  # zero-shot thinks every sample of class 3 is class 0
    sel = scoring.clipcleaner_select(y, 4, p_lr, p_zs)
    assert sel.fallback[30:40].sum() >= 1
    assert sel.clean[30:40].any()


def test_probe_cv_does_not_let_a_label_vouch_for_itself():
    rng = np.random.default_rng(0)
    centers = np.eye(3, 8) * 4
    x = np.concatenate([centers[c] + rng.normal(size=(20, 8)) for c in range(3)])
    y = np.repeat(np.arange(3), 20)
    y_noisy = y.copy()
    y_noisy[5] = 2
    faithful = scoring.probe_probs(x, y_noisy, 3, mode="faithful", seed=0)
    cv = scoring.probe_probs(x, y_noisy, 3, mode="cv", seed=0)
    assert cv[5, 2] < faithful[5, 2]
    assert cv[5].argmax() == 0
    np.testing.assert_allclose(cv.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(cv, scoring.probe_probs(x, y_noisy, 3, mode="cv", seed=0))  # deterministic


def test_probe_guards_absent_class_single_sample_class_and_k2():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(21, 5))
    y = np.r_[np.zeros(10, int), np.ones(10, int), [3]]  # class 2 absent, class 3 has one sample
    p = scoring.probe_probs(x, y, 4, mode="cv", seed=0)
    assert p.shape == (21, 4) and (p[:, 2] == 0).all()
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    sel = scoring.clipcleaner_select(y, 4, p, None)
    assert sel.clean.shape == (21,)
    p2 = scoring.probe_probs(x[:20], y[:20], 2, mode="faithful")
    assert p2.shape == (20, 2)


def test_single_class_is_degenerate_but_fine():
    x = np.random.default_rng(0).normal(size=(9, 3))
    y = np.zeros(9, int)
    p = scoring.probe_probs(x, y, 1)
    assert (p == 1).all()
    sel = scoring.clipcleaner_select(y, 1, p, None)
    assert sel.clean.all()


def test_noise_models():
    y = np.repeat(np.arange(5), 20)
    s = symmetric_noise(y, 5, 0.3, seed=1)
    assert (s != y).sum() == 30
    np.testing.assert_array_equal(s, symmetric_noise(y, 5, 0.3, seed=1))
    sim = np.eye(5) + np.diag(np.full(4, 0.5), 1) + np.diag(np.full(4, 0.4), -1)
    assert most_similar_class(sim).tolist() == [1, 2, 3, 4, 3]
    h = hard_noise(y, sim, 0.2, seed=0)
    flipped = np.flatnonzero(h != y)
    assert len(flipped) == 20
    assert all(h[i] == most_similar_class(sim)[y[i]] for i in flipped)
    a = pairwise_noise(y, {0: 1}, 0.5, seed=0)
    assert ((a != y) == ((y == 0) & (a == 1))).all() and (a != y).sum() == 10


def test_knn_baseline_by_hand():
    x = np.array([[1, 0], [0.99, 0.1], [0.98, -0.1], [0, 1], [0.1, 0.99], [-0.1, 0.98]], dtype=float)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.array([0, 0, 1, 1, 1, 1])  # sample 2 sits among class 0
    idx, sim = nearest_neighbors(x, 2)
    assert set(idx[2]) == {0, 1}
    flag, score = knn_flags(idx, y, 2)
    assert flag.tolist() == [False, False, True, False, False, False]
    assert score[2] == 1.0
    p = knn_probs(idx, y, 2)
    np.testing.assert_allclose(p.sum(1), 1.0)


def test_knn_uses_fewer_neighbours_than_a_typical_class():
    from clipcleaner_core.detectors import ScoreConfig, detect, effective_k

    assert effective_k(np.repeat(np.arange(3), 3), 10) == 2
    assert effective_k(np.repeat(np.arange(10), 180), 10) == 10
    rng = np.random.default_rng(0)
    centers = np.eye(3, 6) * 5
    x = np.concatenate([centers[c] + 0.3 * rng.normal(size=(3, 6)) for c in range(3)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    det = detect(x, np.repeat(np.arange(3), 3), ["a", "b", "c"], ScoreConfig(method="knn"))
    assert not det.table["knn_flag"].any()  # 9 clean samples in 3 tight classes: nothing to flag
