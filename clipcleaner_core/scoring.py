"""Scores stage: the CLIPCleaner selection (METHOD.md, all of it) and the probability sources it uses.

Shapes: ``N`` samples, ``K`` classes, ``D`` feature dims, ``M`` prompts. Labels ``y`` are ints in ``[0, K)``.
The probability sources (:class:`ZeroShot`, :class:`FittedProbe`) give float32 row blocks (b, K) computed with
torch on a device (CPU, or CUDA when present: :func:`resolve_device`), so no (N, K) matrix need ever exist; the
dense helpers (``zero_shot_probs``, ``probe_probs``) return float64 (N, K) for tests and small data. The
selection takes either dense (N, K) probabilities or the pair (p(given label) (N,), max_k p (N,)) — all it uses.
Every function is deterministic for a fixed ``seed``.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

MIN_GMM_SAMPLES = 8  # a class with fewer loss scores than this keeps all of them (the GMM abstains)
EPS = 1e-12


# ---------------------------------------------------------------------------------------------- device
def resolve_device(device: str | None = "auto") -> torch.device:
    """The torch device the probability sources run on: ``"auto"`` (CUDA when torch sees a GPU, else the CPU),
    ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Asking for CUDA on a machine without it is an error (ValueError)."""
    import torch

    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here (torch {torch.__version__} sees no GPU); "
                         "use --device auto or cpu")
    return dev


def block_rows(n_cols: int, device: torch.device | str = "cpu") -> int:
    """Rows per block so that a (rows, n_cols) float32 block is ~64 MB on the CPU (~1 GB on CUDA)."""
    budget = (1 << 28) if str(device).startswith("cuda") else (1 << 24)  # float32 elements
    return int(max(256, min(1 << 20, budget // max(int(n_cols), 1))))


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run the block with ``n`` torch CPU threads (None: unchanged). Small problems run faster on one thread:
    torch's thread start-up and spin-waits cost more than they save (digits demo: 4 CPU-s instead of 10)."""
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _tensor(a: np.ndarray, device) -> torch.Tensor:
    import torch

    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32)).to(device)


# --------------------------------------------------------------------------------------- probabilities
class ZeroShot:
    """Zero-shot p_zs (METHOD.md step 3) for any row block: s_k(x) = Σ_j exp(cos(f(x), t_kj) / T),
    p = s_k / Σ_k' s_k'.

    ``text_features`` (M, D) unit-norm, ``text_class`` (M,) the class of each prompt. :meth:`block` takes image
    features (b, D) and returns (b, K) float64 probabilities; a class with no prompt gets 0. The cosines are one
    float32 matrix product on ``device`` (the embeddings are stored in float16); the rest is float64: one shift
    per row (logits span at most 2/T, so exp(logit − row max) ≥ exp(−2/T) never underflows), the per-class sums
    as a scatter-add over the prompts (O(b · M), not a (M, K) product), log and softmax.
    """

    def __init__(self, text_features: np.ndarray, text_class: np.ndarray, n_classes: int,
                 temperature: float = 0.07, device: str | torch.device = "cpu"):
        import torch

        self.device = resolve_device(device) if isinstance(device, str) else device
        self.n_classes, self.temperature = int(n_classes), float(temperature)
        self.text = _tensor(text_features, self.device)  # (M, D)
        self.owner = torch.as_tensor(np.asarray(text_class, dtype=np.int64)).to(self.device)  # (M,) prompt → class

    def block(self, features: np.ndarray) -> np.ndarray:
        import torch

        logits = (_tensor(features, self.device) @ self.text.T).double() / self.temperature  # (b, M)
        logits -= logits.max(dim=1, keepdim=True).values
        s = torch.zeros((len(logits), self.n_classes), dtype=torch.float64, device=self.device)
        s.index_add_(1, self.owner, torch.exp(logits))
        return torch.softmax(torch.log(s), dim=1).cpu().numpy()  # a class with no prompt: log 0 = -inf → p = 0


def zero_shot_probs(image_features: np.ndarray, text_features: np.ndarray, text_class: np.ndarray,
                    n_classes: int, temperature: float = 0.07, device: str = "cpu") -> np.ndarray:
    """Dense zero-shot p_zs (N, K) float64 (see :class:`ZeroShot`; computed in row blocks)."""
    zs = ZeroShot(text_features, text_class, n_classes, temperature, device)
    out = np.empty((len(image_features), n_classes))
    step = block_rows(max(len(text_class), n_classes), zs.device)
    for s in range(0, len(out), step):
        out[s:s + step] = zs.block(image_features[s:s + step])
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


def _softmax_objective(parts: list, labels: list, n_cls: int, C: float, rows_per_block: int
                       ) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """fun(θ) → (loss, gradient float64) of (1/n) Σ_i w_{y_i} · CE_i + ||W||² / (2 C n) (w: balanced class
    weights, which sum to n) at θ = (W (D, K) row-major, b (K,)), computed in float32 torch in row blocks on the
    device the tensors live on.

    ``parts``: (b_j, D) float32 tensors (centred features; several contiguous slices, never copied), ``labels``:
    matching int64 tensors of class positions in [0, n_cls). Memory O(rows_per_block · K) besides the features.
    """
    import torch

    dev = parts[0].device
    d, k = int(parts[0].shape[1]), int(n_cls)
    counts = sum(torch.bincount(lab, minlength=k) for lab in labels).double()
    n = float(counts.sum())
    cw = n / (k * counts)  # (K,) balanced class weights
    sw_sum = float((cw * counts).sum())  # = n
    l2 = 1.0 / (C * sw_sum)
    cw32 = (cw / sw_sum).float()
    blocks = [(xp[s:s + rows_per_block], lab[s:s + rows_per_block])
              for xp, lab in zip(parts, labels) for s in range(0, len(xp), rows_per_block)]

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = torch.from_numpy(theta[:d * k].reshape(d, k)).to(dev, torch.float32)
        b = torch.from_numpy(theta[d * k:]).to(dev, torch.float32)
        gw = torch.zeros((d, k), dtype=torch.float32, device=dev)
        gb = torch.zeros(k, dtype=torch.float64, device=dev)
        loss = torch.zeros((), dtype=torch.float64, device=dev)
        for xb, yb in blocks:
            z = torch.addmm(b, xb, w)  # (rows, K)
            z -= z.max(dim=1, keepdim=True).values
            zy = z.gather(1, yb[:, None])[:, 0]
            z.exp_()
            se = z.sum(dim=1, keepdim=True)
            wy = cw32[yb]
            loss += torch.dot((torch.log(se[:, 0]) - zy).double(), wy.double())
            z /= se  # probabilities
            z.scatter_add_(1, yb[:, None], torch.full((len(yb), 1), -1.0, dtype=z.dtype, device=dev))
            z *= wy[:, None]  # (P - Y) · w_i / sum(w)
            gw.addmm_(xb.T, z)
            gb += z.sum(dim=0, dtype=torch.float64)
        tw = theta[:d * k]
        g = np.concatenate([gw.double().cpu().numpy().ravel() + l2 * tw, gb.cpu().numpy()])
        return float(loss) + 0.5 * l2 * float(np.dot(tw, tw)), g

    return fun


def _fit_softmax(parts: list, labels: list, n_cls: int, C: float, max_iter: int, tol: float,
                 theta0: np.ndarray | None, rows_per_block: int) -> tuple[np.ndarray, int]:
    """Minimise :func:`_softmax_objective` with scipy L-BFGS-B (``gtol`` = ``tol``, as scikit-learn's lbfgs).
    Returns (θ float64 (D·K + K,), iterations)."""
    from scipy.optimize import minimize

    d, k = int(parts[0].shape[1]), int(n_cls)
    fun = _softmax_objective(parts, labels, n_cls, C, rows_per_block)
    res = minimize(fun, np.zeros(d * k + k) if theta0 is None else theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    return res.x, int(res.nit)


class MultinomialLR:
    """Multinomial logistic regression, ``class_weight="balanced"``, L2 on the coefficients (not the intercept).

    The same objective as scikit-learn's ``LogisticRegression(C, class_weight="balanced")`` with the lbfgs
    solver for three or more classes — (1/n) Σ_i w_{y_i} · CE_i + ||W||² / (2 C n), w the balanced class
    weights (they sum to n) — minimised with the same optimiser (scipy L-BFGS-B, ``gtol`` = ``tol`` = 1e-4 as
    scikit-learn's default), but: the loss and gradient are float32 torch matrix products in row blocks on
    ``device`` (CPU or CUDA; scikit-learn works in float64 and re-casts float32 features on every evaluation);
    the features are centred first, an exact reparametrisation with an unpenalised intercept that conditions
    the problem better; and ``init=(coef, intercept)`` warm-starts it. The objective is strictly convex, so the
    optimum does not depend on the start; a warm start only shortens the path (``tests/test_fast_paths.py``).

    ``fit(x (N, D), y (N,) labels)``; ``predict_proba(x) -> (N, n_classes_present)`` over ``classes_``;
    ``coef_`` (K, D) float32, ``intercept_`` (K,), ``n_iter_``.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4, device: str = "cpu"):
        self.C, self.max_iter, self.tol, self.device = float(C), int(max_iter), float(tol), device

    def fit(self, x: np.ndarray, y: np.ndarray, init: tuple[np.ndarray, np.ndarray] | None = None
            ) -> MultinomialLR:
        import torch

        dev = resolve_device(self.device)
        x = np.asarray(x, dtype=np.float32)
        mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.classes_, yi = np.unique(np.asarray(y), return_inverse=True)
        theta0 = None if init is None else _theta_from(init[0], init[1], mean)
        theta, self.n_iter_ = _fit_softmax([_tensor(x - mean, dev)], [torch.as_tensor(yi).to(dev)],
                                           len(self.classes_), self.C, self.max_iter, self.tol, theta0,
                                           block_rows(len(self.classes_), dev))
        self.coef_, self.intercept_ = _coef_from(theta, x.shape[1], len(self.classes_), mean)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float32) @ self.coef_.T
        z += self.intercept_
        return _softmax_rows_(z).astype(np.float64)


def _theta_from(coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """θ in centred coordinates from (coef (K, D), intercept (K,)) in raw coordinates."""
    c = np.asarray(coef, dtype=np.float64)
    return np.concatenate([c.T.ravel(), np.asarray(intercept, dtype=np.float64) + c @ mean])


def _coef_from(theta: np.ndarray, d: int, k: int, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coef (K, D) float32, intercept (K,) float32) in raw coordinates from θ in centred coordinates."""
    coef = theta[:d * k].reshape(d, k).T.astype(np.float32)
    return coef, (theta[d * k:] - coef.astype(np.float64) @ mean).astype(np.float32)


@dataclass
class FittedProbe:
    """Linear probe model(s) from :func:`fit_probe`: model ``m`` maps features to logits over ``classes[m]``
    (``coef[m]`` (K_m, D), ``intercept[m]`` (K_m,), raw feature coordinates). ``model_of`` (N,) says which model
    scores each row (its out-of-fold model), or None when one model scores every row (``faithful``).
    :meth:`block` gives p_lr (b, K) float32 for rows ``start : start + b``; ``n_iter`` per fit (L-BFGS)."""

    n_classes: int
    coef: list[np.ndarray]
    intercept: list[np.ndarray]
    classes: list[np.ndarray]
    model_of: np.ndarray | None
    device: torch.device
    n_iter: list[int] = field(default_factory=list)

    def block(self, start: int, features: np.ndarray) -> np.ndarray:
        import torch

        f = _tensor(features, self.device)
        out = torch.zeros((len(f), self.n_classes), dtype=torch.float32, device=self.device)
        which = (np.zeros(len(f), dtype=np.int64) if self.model_of is None
                 else np.asarray(self.model_of[start:start + len(f)], dtype=np.int64))
        for m in np.unique(which):
            r = torch.as_tensor(np.flatnonzero(which == m)).to(self.device)
            w, b = _tensor(self.coef[m], self.device), _tensor(self.intercept[m], self.device)
            p = torch.softmax(torch.addmm(b, f[r], w.T), dim=1)
            cols = torch.as_tensor(self.classes[m]).to(self.device)
            out[r[:, None], cols[None, :]] = p
        return out.cpu().numpy()

    def dense(self, features: np.ndarray) -> np.ndarray:
        """p_lr (N, K) float64 of every row (tests, small data)."""
        out = np.empty((len(features), self.n_classes))
        step = block_rows(self.n_classes, self.device)
        for s in range(0, len(out), step):
            out[s:s + step] = self.block(s, features[s:s + step])
        return out


def _sklearn_fit(x: np.ndarray, y: np.ndarray, C: float, max_iter: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn ``LogisticRegression`` (lbfgs, balanced): (classes, coef (K, D), intercept (K,)) as softmax
    logits — a two-class (binomial) model becomes logits (0, w·x + b)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; results are still the best fit found
        clf.fit(x, y)
    coef, icpt = clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32)
    if len(clf.classes_) == 2:
        coef, icpt = np.vstack([np.zeros_like(coef), coef]), np.r_[np.float32(0), icpt]
    return clf.classes_, coef, icpt


def fold_splits(y: np.ndarray, n_classes: int, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The out-of-fold splits (train, test) of ``probe_probs(mode="cv")``: stratified k-fold (shuffled, ``seed``)
    where every present class has at least ``n_folds`` samples, plain shuffled k-fold otherwise; [] when there
    are fewer than two samples."""
    from sklearn.model_selection import KFold, StratifiedKFold

    y = np.asarray(y, dtype=np.int64)
    n_splits = int(min(n_folds, len(y)))
    if n_splits < 2:
        return []
    counts = np.bincount(y, minlength=n_classes)
    if counts[counts > 0].min() >= n_splits:
        return list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    return list(KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y))))


def fit_probe(features: np.ndarray, y: np.ndarray, n_classes: int, mode: str = "cv", n_folds: int = 5,
              C: float = 1.0, max_iter: int = 1000, seed: int = 0, solver: str = "auto", warm_start: bool = True,
              device: str = "cpu", tol: float = 1e-4,
              on_fold: Callable[[int, int], None] | None = None) -> FittedProbe:
    """Fit the linear probe (METHOD.md step 4): multinomial logistic regression, class_weight balanced.

    ``mode="faithful"``: one model fit on every sample, scoring the same samples (the reference). ``mode="cv"``:
    one model per fold of :func:`fold_splits`, each scoring the rows it was not fit on, so a sample's own noisy
    label does not vouch for it.

    ``solver``: ``"fast"`` (:func:`_fit_softmax`: float32 torch on ``device``, the objective of scikit-learn),
    ``"sklearn"`` (``LogisticRegression``, lbfgs) or ``"auto"`` (fast for ≥ 3 classes; scikit-learn for two,
    where it fits a binomial model). ``warm_start``: each fold starts from the previous fold's solution; the
    objective is strictly convex, so every fold still converges to its own optimum (to ``gtol`` = ``tol``) and a
    test fold's labels reach its probabilities only through that tolerance (``tests/test_fast_paths.py``).

    Memory: one centred float32 copy of the features, rows grouped by fold so that every fold's training set is
    two contiguous slices of it (no per-fold copy); the loss works in row blocks. ``on_fold(done, total)`` is
    called after each fit (progress).
    """
    import torch

    dev = resolve_device(device) if isinstance(device, str) else device
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    n, d = x.shape
    if mode not in ("cv", "faithful"):
        raise ValueError(f"unknown probe mode {mode!r}; use 'cv' or 'faithful'")
    if solver not in ("auto", "fast", "sklearn"):
        raise ValueError(f"unknown probe solver {solver!r}; use auto, fast or sklearn")
    splits = fold_splits(y, n_classes, n_folds, seed) if mode == "cv" else []
    tests = [te for _, te in splits] or [np.arange(n)]
    order = np.concatenate(tests)  # rows grouped by the model that scores them
    bounds = np.cumsum([0] + [len(t) for t in tests])
    model_of = None
    if splits:
        model_of = np.empty(n, dtype=np.int8 if len(splits) < 128 else np.int32)
        for m, te in enumerate(tests):
            model_of[te] = m
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)  # any shift is exact: the intercept is free
    needs_fast = solver != "sklearn"
    xs = ys = None
    if needs_fast:
        xs_np = np.empty((n, d), dtype=np.float32)
        step = block_rows(d)
        for s in range(0, n, step):
            np.subtract(x[order[s:s + step]], mean, out=xs_np[s:s + step])
        xs, ys = _tensor(xs_np, dev), torch.as_tensor(y[order]).to(dev)
        del xs_np
    coefs, icpts, classes, iters = [], [], [], []
    warm: tuple[np.ndarray, np.ndarray] | None = None
    rows = block_rows(n_classes, dev)
    small = dev.type == "cpu" and n * d * max(int(n_classes), 1) < (1 << 27)  # one thread is faster there
    with _torch_threads(1 if small else None):
        for m in range(len(tests)):
            a, b = int(bounds[m]), int(bounds[m + 1])
            train = (slice(0, n),) if not splits else (slice(0, a), slice(b, n))
            y_tr = np.concatenate([y[order[sl]] for sl in train])
            present = np.unique(y_tr)
            if len(present) == 1:
                cls, coef, icpt, it = present, np.zeros((1, d), np.float32), np.zeros(1, np.float32), 0
            elif solver == "sklearn" or (solver == "auto" and len(present) < 3):
                tr = np.concatenate([order[sl] for sl in train])
                (cls, coef, icpt), it = _sklearn_fit(x[tr], y[tr], C, max_iter, seed), 0
            else:
                pos = np.searchsorted(present, ys.cpu().numpy()) if len(present) < n_classes else None
                yp = ys if pos is None else torch.as_tensor(pos).to(dev)
                theta0 = None
                if warm_start and warm is not None and np.array_equal(warm[0], present):
                    theta0 = warm[1]
                theta, it = _fit_softmax([xs[sl] for sl in train if sl.stop > sl.start],
                                         [yp[sl] for sl in train if sl.stop > sl.start], len(present), C,
                                         max_iter, tol, theta0, rows)
                warm = (present, theta)
                coef, icpt = _coef_from(theta, d, len(present), mean)
                cls = present
            coefs.append(coef)
            icpts.append(icpt)
            classes.append(np.asarray(cls, dtype=np.int64))
            iters.append(it)
            if on_fold:
                on_fold(m + 1, len(tests))
    del xs, ys
    return FittedProbe(int(n_classes), coefs, icpts, classes, model_of, dev, iters)


def probe_probs(features: np.ndarray, y: np.ndarray, n_classes: int, mode: str = "cv", n_folds: int = 5,
                C: float = 1.0, max_iter: int = 1000, seed: int = 0, solver: str = "auto",
                warm_start: bool = True, on_fold: Callable[[int, int], None] | None = None,
                device: str = "cpu") -> np.ndarray:
    """Dense linear-probe p_lr (N, K) float64 of :func:`fit_probe` (tests, small data)."""
    fp = fit_probe(features, y, n_classes, mode, n_folds, C, max_iter, seed, solver, warm_start, device,
                   on_fold=on_fold)
    return fp.dense(np.asarray(features, dtype=np.float32))


# ---------------------------------------------------------------------------------------------- scores
def given_prob(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p(y_i | x_i), shape (N,)."""
    return np.asarray(p)[np.arange(len(y)), np.asarray(y)]


GivenMax = tuple  # (p(given label) (N,), max_k p(k) (N,)): what the selection needs of a source


def given_and_max(p: np.ndarray | GivenMax, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p(y_i|x_i) (N,), max_k p(k|x_i) (N,)) float64 of dense probabilities (N, K) or of a given/max pair."""
    if isinstance(p, tuple):
        return np.asarray(p[0], dtype=np.float64), np.asarray(p[1], dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return given_prob(p, y), p.max(axis=1)


def loss_scores(p: np.ndarray | GivenMax, y: np.ndarray) -> np.ndarray:
    """Loss score (N,) in [0, 1]: log p(y_i|x_i), min-max normalised within each given-label class.

    ``p``: dense (N, K) or a (given, max) pair. A class whose scores are all equal (including a one-sample
    class) gets 1.0 for all its samples.
    """
    y = np.asarray(y)
    logp = np.log(np.clip(given_and_max(p, y)[0], EPS, 1.0))
    out = np.ones(len(y))
    order = np.argsort(y, kind="stable")  # one pass over the classes (a per-class mask would be O(N · K))
    starts = np.flatnonzero(np.r_[True, np.diff(y[order]) != 0])
    for m in np.split(order, starts[1:]):
        lo, hi = logp[m].min(), logp[m].max()
        if hi - lo > 1e-12:
            out[m] = (logp[m] - lo) / (hi - lo)
    return out


def consistency_scores(p: np.ndarray | GivenMax, y: np.ndarray) -> np.ndarray:
    """Consistency score (N,) in (0, 1]: p(y_i|x_i) / max_k p(k|x_i); 1 when the given label is the argmax.
    ``p``: dense (N, K) or a (given, max) pair."""
    g, mx = given_and_max(p, y)
    return np.clip(g / np.maximum(mx, EPS), 0.0, 1.0)


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


def clipcleaner_select(y: np.ndarray, n_classes: int, p_lr: np.ndarray | GivenMax,
                       p_zs: np.ndarray | GivenMax | None = None, theta_gmm: float = 0.5, theta_cons: float = 0.8,
                       seed: int = 0) -> Selection:
    """The CLIPCleaner clean-set selection (METHOD.md steps 5–8).

    ``p_lr`` / ``p_zs``: dense (N, K) probabilities or (p(given) (N,), max_k p (N,)) pairs — the same result.
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
                     noise_score=noise)


def top_k(p: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Indices (N, k) and probabilities (N, k) of the k most probable classes, most probable first."""
    p = np.asarray(p)
    k = min(k, p.shape[1])
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(p, idx, axis=1)
