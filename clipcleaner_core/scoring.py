"""Scores stage: the CLIPCleaner selection (METHOD.md, all of it) and the probability sources it uses.

Shapes: ``N`` samples, ``K`` classes, ``D`` feature dims, ``M`` prompts. Labels ``y`` are ints in ``[0, K)``.
Probabilities are float64 arrays (N, K) with rows summing to 1. Every function is pure and deterministic for
a fixed ``seed``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import softmax

MIN_GMM_SAMPLES = 8  # a class with fewer loss scores than this keeps all of them (the GMM abstains)
EPS = 1e-12


# --------------------------------------------------------------------------------------- probabilities
def zero_shot_probs(image_features: np.ndarray, text_features: np.ndarray, text_class: np.ndarray,
                    n_classes: int, temperature: float = 0.07) -> np.ndarray:
    """Zero-shot p_zs (N, K): s_k(x) = sum_j exp(cos(f(x), t_kj) / T), p = s_k / sum_k' s_k' (METHOD.md step 3).

    ``image_features`` (N, D) and ``text_features`` (M, D) unit-norm; ``text_class`` (M,) the class of each
    prompt. Computed in log space (log-sum-exp) so T = 0.07 never overflows. A class with no prompt gets 0.
    """
    t = np.asarray(text_features, dtype=np.float64)
    owner = np.asarray(text_class, dtype=np.int64)
    member = np.zeros((len(t), n_classes))
    member[np.arange(len(t)), owner] = 1.0  # (M, K) prompt → class
    out = np.empty((len(image_features), n_classes))
    for s in range(0, len(out), 65536):  # row blocks: memory O(block · M)
        f = np.asarray(image_features[s:s + 65536], dtype=np.float64)
        logits = (f @ t.T) / temperature  # (b, M)
        # log-sum-exp per class with one shift per row: logits span at most 2/T, so exp(logit - row max)
        # >= exp(-2/T) (~4e-13 at T = 0.07) never underflows in float64 and the per-class sums stay exact
        shift = logits.max(axis=1, keepdims=True)
        with np.errstate(divide="ignore"):
            log_s = np.log(np.exp(logits - shift) @ member) + shift  # a class with no prompt: log 0 = -inf
        out[s:s + 65536] = softmax(log_s, axis=1)
    return out


def _balanced_sample_weights(y_idx: np.ndarray, n_present: int) -> np.ndarray:
    """sklearn's ``class_weight="balanced"``: w_c = n / (K_present · count_c), per sample (N,) float64."""
    counts = np.bincount(y_idx, minlength=n_present).astype(np.float64)
    return (len(y_idx) / (n_present * counts))[y_idx]


def _softmax_rows_(z: np.ndarray) -> np.ndarray:
    """In-place row softmax of ``z`` (N, K) float32; returns z."""
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class MultinomialLR:
    """Multinomial logistic regression, ``class_weight="balanced"``, L2 on the coefficients (not the intercept).

    The same objective as scikit-learn's ``LogisticRegression(C, class_weight="balanced")`` with the lbfgs
    solver for three or more classes — (1/n) Σ_i w_{y_i} · CE_i + ||W||² / (2 C n), w the balanced class
    weights (they sum to n) — minimised with the same optimiser (scipy L-BFGS-B, ``gtol`` = ``tol`` = 1e-4 as
    scikit-learn's default), but: the loss and gradient are computed in float32 with BLAS matmuls
    (scikit-learn works in float64 and re-casts float32 features on every evaluation); the features are
    centred first, an exact reparametrisation with an unpenalised intercept that conditions the problem
    better; and ``init=(coef, intercept)`` warm-starts it. The objective is strictly convex, so the optimum
    does not depend on the start; a warm start only shortens the path. Measured: 1.5–6× faster than
    scikit-learn on the benchmark, and at least as close to the exact optimum as scikit-learn at its default
    tolerance (``tests/test_fast_paths.py``).

    ``fit(x (N, D), y (N,) labels)``; ``predict_proba(x) -> (N, n_classes_present)`` over ``classes_``;
    ``coef_`` (K, D) float32, ``intercept_`` (K,), ``n_iter_``.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4):
        self.C, self.max_iter, self.tol = float(C), int(max_iter), float(tol)

    def fit(self, x: np.ndarray, y: np.ndarray, init: tuple[np.ndarray, np.ndarray] | None = None
            ) -> "MultinomialLR":
        from scipy.optimize import minimize

        x = np.asarray(x, dtype=np.float32)
        # Centre the features: with an unpenalised intercept this is an exact reparametrisation of the same
        # problem (W unchanged, b' = b + mean·W) and it conditions L-BFGS better (CLIP features share a mean).
        mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        x = x - mean
        self.classes_, yi = np.unique(np.asarray(y), return_inverse=True)
        n, d = x.shape
        k = len(self.classes_)
        sw = _balanced_sample_weights(yi, k)
        sw_sum = float(sw.sum())
        l2 = 1.0 / (self.C * sw_sum)
        g_scale = (sw / sw_sum).astype(np.float32)[:, None]  # (N, 1)
        rows = np.arange(n)

        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = theta[:d * k].reshape(d, k).astype(np.float32)
            b = theta[d * k:].astype(np.float32)
            z = x @ w
            z += b
            zmax = z.max(axis=1, keepdims=True)
            z -= zmax
            zy = z[rows, yi].astype(np.float64)
            np.exp(z, out=z)
            se = z.sum(axis=1, keepdims=True)
            lse = np.log(se[:, 0].astype(np.float64))
            loss = float(np.dot(sw, lse - zy)) / sw_sum + 0.5 * l2 * float(np.dot(theta[:d * k], theta[:d * k]))
            z /= se  # probabilities
            z[rows, yi] -= 1.0
            z *= g_scale  # (P - Y) · w_i / sum(w)
            gw = (x.T @ z).astype(np.float64)
            gw += l2 * theta[:d * k].reshape(d, k)
            gb = z.sum(axis=0, dtype=np.float64)
            return loss, np.concatenate([gw.ravel(), gb])

        theta0 = np.zeros(d * k + k)
        if init is not None:
            theta0[:d * k] = np.asarray(init[0], dtype=np.float64).T.ravel()  # coef_ (K, D) → W (D, K)
            theta0[d * k:] = np.asarray(init[1], dtype=np.float64) + np.asarray(init[0], np.float64) @ mean
        res = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter, "maxls": 50, "gtol": self.tol,
                                "ftol": 64 * np.finfo(float).eps})
        self.n_iter_ = int(res.nit)
        self.coef_ = res.x[:d * k].reshape(d, k).T.astype(np.float32)  # (K, D) like scikit-learn
        self.intercept_ = (res.x[d * k:] - self.coef_.astype(np.float64) @ mean).astype(np.float32)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float32) @ self.coef_.T
        z += self.intercept_
        return _softmax_rows_(z).astype(np.float64)


def _fit_predict_lr(x_fit, y_fit, x_pred, n_classes, C, max_iter, seed, solver="auto", warm=None):
    """Fit on (x_fit, y_fit), return probabilities (len(x_pred), n_classes). ``warm``: a dict carrying the last
    fast fit's (classes, coef, intercept) between calls (folds), updated in place."""
    present = np.unique(y_fit)
    out = np.zeros((len(x_pred), n_classes))
    if len(present) == 1:
        out[:, present[0]] = 1.0
        return out
    if solver == "auto":
        solver = "fast" if len(present) >= 3 else "sklearn"
    if solver == "fast":
        init = None
        if warm is not None and warm.get("classes") is not None and np.array_equal(warm["classes"], present):
            init = (warm["coef"], warm["intercept"])
        clf = MultinomialLR(C=C, max_iter=max_iter).fit(x_fit, y_fit, init=init)
        if warm is not None:
            warm.update(classes=clf.classes_, coef=clf.coef_, intercept=clf.intercept_)
    elif solver == "sklearn":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; results are still the best fit found
            clf.fit(x_fit, y_fit)
    else:
        raise ValueError(f"unknown probe solver {solver!r}; use auto, fast or sklearn")
    out[:, clf.classes_] = clf.predict_proba(x_pred)
    return out


def probe_probs(features: np.ndarray, y: np.ndarray, n_classes: int, mode: str = "cv", n_folds: int = 5,
                C: float = 1.0, max_iter: int = 1000, seed: int = 0, solver: str = "auto",
                warm_start: bool = True, on_fold: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Linear-probe p_lr (N, K): multinomial logistic regression, class_weight balanced (METHOD.md step 4).

    ``mode="faithful"``: fit and score the same samples (the reference). ``mode="cv"``: k-fold out-of-fold,
    stratified where every class allows it, so a sample's own noisy label does not vouch for it.

    ``solver``: ``"fast"`` (:class:`MultinomialLR`, float32 L-BFGS, the same objective as scikit-learn),
    ``"sklearn"`` (``LogisticRegression``, lbfgs) or ``"auto"`` (fast for ≥ 3 classes; scikit-learn for two,
    where it fits a binomial model). ``warm_start``: each fold starts from the previous fold's solution; the
    objective is strictly convex, so every fold still converges to its own optimum (to ``gtol`` 1e-4) and a
    test fold's labels reach its probabilities only through that tolerance (measured: ``tests/test_fast_paths.py``).
    ``on_fold(done, total)`` is called after each fit (progress).
    """
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if mode == "faithful":
        out = _fit_predict_lr(x, y, x, n_classes, C, max_iter, seed, solver)
        if on_fold:
            on_fold(1, 1)
        return out
    if mode != "cv":
        raise ValueError(f"unknown probe mode {mode!r}; use 'cv' or 'faithful'")
    from sklearn.model_selection import KFold, StratifiedKFold

    n_splits = int(min(n_folds, len(y)))
    if n_splits < 2:
        return _fit_predict_lr(x, y, x, n_classes, C, max_iter, seed, solver)
    counts = np.bincount(y, minlength=n_classes)
    if counts[counts > 0].min() >= n_splits:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        folds = splitter.split(x, y)
    else:
        folds = KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x)
    out = np.zeros((len(y), n_classes))
    warm: dict | None = {} if warm_start else None
    for i, (tr, te) in enumerate(folds):
        out[te] = _fit_predict_lr(x[tr], y[tr], x[te], n_classes, C, max_iter, seed, solver, warm)
        if on_fold:
            on_fold(i + 1, n_splits)
    return out


# ---------------------------------------------------------------------------------------------- scores
def given_prob(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p(y_i | x_i), shape (N,)."""
    return np.asarray(p)[np.arange(len(y)), np.asarray(y)]


def loss_scores(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Loss score (N,) in [0, 1]: log p(y_i|x_i), min-max normalised within each given-label class.

    A class whose scores are all equal (including a one-sample class) gets 1.0 for all its samples.
    """
    y = np.asarray(y)
    logp = np.log(np.clip(given_prob(p, y), EPS, 1.0))
    out = np.ones(len(y))
    for k in np.unique(y):
        m = y == k
        lo, hi = logp[m].min(), logp[m].max()
        if hi - lo > 1e-12:
            out[m] = (logp[m] - lo) / (hi - lo)
    return out


def consistency_scores(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Consistency score (N,) in (0, 1]: p(y_i|x_i) / max_k p(k|x_i); 1 when the given label is the argmax."""
    p = np.asarray(p, dtype=np.float64)
    return np.clip(given_prob(p, y) / np.maximum(p.max(axis=1), EPS), 0.0, 1.0)


def gmm_clean_posterior(scores: np.ndarray, y: np.ndarray, seed: int = 0,
                        min_samples: int = MIN_GMM_SAMPLES) -> np.ndarray:
    """Per given-label class, the posterior (N,) of the higher-mean component of a 2-component GMM on ``scores``.

    Guards: a class with fewer than ``min_samples`` samples, or (near-)constant scores, gets posterior 1.0
    (the criterion abstains rather than guessing).
    """
    from sklearn.mixture import GaussianMixture

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    post = np.ones(len(s))
    for k in np.unique(y):
        m = np.flatnonzero(y == k)
        v = s[m]
        if len(v) < min_samples or v.std() < 1e-6:
            continue
        gmm = GaussianMixture(n_components=2, max_iter=100, tol=1e-3, reg_covar=5e-4, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gmm.fit(np.sort(v)[:, None])  # sorted: the fit depends on the values only, not on the row order
        clean = int(np.argmax(gmm.means_.ravel()))
        post[m] = gmm.predict_proba(v[:, None])[:, clean]
    return post


def fallback_fill(clean: np.ndarray, y: np.ndarray, n_classes: int, rank_score: np.ndarray) -> np.ndarray:
    """Empty-class fallback (METHOD.md step 8): a class present in ``y`` with nothing kept gets
    n = max(smallest non-empty class count, floor(N / K²)) of its samples back, those with the *highest*
    ``rank_score`` (the reference keeps the lowest; we read that as a bug). Returns the (N,) bool mask of
    samples added back."""
    clean = np.asarray(clean, dtype=bool)
    y = np.asarray(y)
    counts = np.bincount(y[clean], minlength=n_classes)
    present = np.bincount(y, minlength=n_classes) > 0
    nonempty = counts[(counts > 0)]
    n_min = int(nonempty.min()) if len(nonempty) else 0
    n_back = max(n_min, len(y) // max(n_classes * n_classes, 1), 1)
    added = np.zeros(len(y), dtype=bool)
    for k in np.flatnonzero(present & (counts == 0)):
        m = np.flatnonzero(y == k)
        order = m[np.argsort(-np.asarray(rank_score)[m], kind="stable")]
        added[order[:n_back]] = True
    return added


@dataclass
class Selection:
    """Result of :func:`clipcleaner_select`; every array has shape (N,).

    ``scores[name]`` and ``kept[name]`` per criterion name in ``criteria`` (``zs_loss``, ``zs_cons``,
    ``lr_loss``, ``lr_cons``); ``posterior[name]`` for the loss criteria (GMM clean posterior).
    ``clean`` = AND of the kept masks plus ``fallback``; ``noise_score`` in [0, 1] ranks suspects (1 = most).
    """

    criteria: list[str]
    scores: dict[str, np.ndarray]
    kept: dict[str, np.ndarray]
    posterior: dict[str, np.ndarray]
    clean: np.ndarray
    fallback: np.ndarray
    noise_score: np.ndarray
    settings: dict = field(default_factory=dict)


def clipcleaner_select(y: np.ndarray, n_classes: int, p_lr: np.ndarray, p_zs: np.ndarray | None = None,
                       theta_gmm: float = 0.5, theta_cons: float = 0.8, seed: int = 0) -> Selection:
    """The CLIPCleaner clean-set selection (METHOD.md steps 5–8).

    For each available source (zero-shot ``p_zs`` when the encoder has a text tower, and the probe ``p_lr``):
    loss score → per-class GMM, kept when the clean posterior ≥ ``theta_gmm``; consistency score, kept when
    ≥ ``theta_cons``. Clean = AND of all kept sets, then the empty-class fallback (ranked by zero-shot loss
    score, or the probe's when zero-shot is unavailable).
    """
    y = np.asarray(y, dtype=np.int64)
    sources = ([("zs", p_zs)] if p_zs is not None else []) + [("lr", p_lr)]
    criteria, scores, kept, posterior = [], {}, {}, {}
    for name, p in sources:
        ls = loss_scores(p, y)
        post = gmm_clean_posterior(ls, y, seed=seed)
        cs = consistency_scores(p, y)
        scores[f"{name}_loss"], posterior[f"{name}_loss"] = ls, post
        kept[f"{name}_loss"] = post >= theta_gmm
        scores[f"{name}_cons"] = cs
        kept[f"{name}_cons"] = cs >= theta_cons
        criteria += [f"{name}_loss", f"{name}_cons"]
    clean = np.logical_and.reduce([kept[c] for c in criteria])
    fb = fallback_fill(clean, y, n_classes, scores[criteria[0]])
    clean = clean | fb
    # ranking: how far each criterion is from keeping the sample, averaged (GMM posterior / consistency)
    strength = [posterior[c] if c.endswith("_loss") else scores[c] for c in criteria]
    noise = 1.0 - np.mean(strength, axis=0)
    return Selection(criteria=criteria, scores=scores, kept=kept, posterior=posterior, clean=clean, fallback=fb,
                     noise_score=noise, settings={"theta_gmm": theta_gmm, "theta_cons": theta_cons, "seed": seed})


def top_k(p: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Indices (N, k) and probabilities (N, k) of the k most probable classes, most probable first."""
    p = np.asarray(p)
    k = min(k, p.shape[1])
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(p, idx, axis=1)
