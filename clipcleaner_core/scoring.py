"""Scores stage: the CLIPCleaner selection (METHOD.md, all of it) and the probability sources it uses.

Shapes: ``N`` samples, ``K`` classes, ``D`` feature dims, ``M`` prompts. Labels ``y`` are ints in ``[0, K)``.
Probabilities are float64 arrays (N, K) with rows summing to 1. Every function is pure and deterministic for
a fixed ``seed``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp, softmax

MIN_GMM_SAMPLES = 8  # a class with fewer loss scores than this keeps all of them (the GMM abstains)
EPS = 1e-12


# --------------------------------------------------------------------------------------- probabilities
def zero_shot_probs(image_features: np.ndarray, text_features: np.ndarray, text_class: np.ndarray,
                    n_classes: int, temperature: float = 0.07) -> np.ndarray:
    """Zero-shot p_zs (N, K): s_k(x) = sum_j exp(cos(f(x), t_kj) / T), p = s_k / sum_k' s_k' (METHOD.md step 3).

    ``image_features`` (N, D) and ``text_features`` (M, D) unit-norm; ``text_class`` (M,) the class of each
    prompt. Computed in log space (log-sum-exp) so T = 0.07 never overflows. A class with no prompt gets 0.
    """
    f = np.asarray(image_features, dtype=np.float64)
    t = np.asarray(text_features, dtype=np.float64)
    owner = np.asarray(text_class, dtype=np.int64)
    logits = (f @ t.T) / temperature  # (N, M)
    log_s = np.full((len(f), n_classes), -np.inf)
    for k in range(n_classes):
        m = owner == k
        if m.any():
            log_s[:, k] = logsumexp(logits[:, m], axis=1)
    return softmax(log_s, axis=1)


def _fit_predict_lr(x_fit, y_fit, x_pred, n_classes, C, max_iter, seed):
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y_fit)
    out = np.zeros((len(x_pred), n_classes))
    if len(present) == 1:
        out[:, present[0]] = 1.0
        return out
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; results are still the best fit found
        clf.fit(x_fit, y_fit)
    out[:, clf.classes_] = clf.predict_proba(x_pred)
    return out


def probe_probs(features: np.ndarray, y: np.ndarray, n_classes: int, mode: str = "cv", n_folds: int = 5,
                C: float = 1.0, max_iter: int = 1000, seed: int = 0) -> np.ndarray:
    """Linear-probe p_lr (N, K): multinomial logistic regression, class_weight balanced (METHOD.md step 4).

    ``mode="faithful"``: fit and score the same samples (the reference). ``mode="cv"``: k-fold out-of-fold,
    stratified where every class allows it, so a sample's own noisy label does not vouch for it.
    """
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if mode == "faithful":
        return _fit_predict_lr(x, y, x, n_classes, C, max_iter, seed)
    if mode != "cv":
        raise ValueError(f"unknown probe mode {mode!r}; use 'cv' or 'faithful'")
    from sklearn.model_selection import KFold, StratifiedKFold

    n_splits = int(min(n_folds, len(y)))
    if n_splits < 2:
        return _fit_predict_lr(x, y, x, n_classes, C, max_iter, seed)
    counts = np.bincount(y, minlength=n_classes)
    if counts[counts > 0].min() >= n_splits:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        folds = splitter.split(x, y)
    else:
        folds = KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x)
    out = np.zeros((len(y), n_classes))
    for tr, te in folds:
        out[te] = _fit_predict_lr(x[tr], y[tr], x[te], n_classes, C, max_iter, seed)
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
