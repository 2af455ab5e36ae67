"""Learn from the reviewer: refit the probe and the ensemble on trusted labels and re-rank the review queue.

Reviewed samples become *trusted*: ``accept`` trusts the given label, ``relabel`` the new label (a relabel to a
name that is not one of the workspace's classes cannot be trained on and is left out), ``exclude`` removes the
sample from the training set; ``unsure`` and undecided samples keep their given (possibly wrong) label. A refit
then

1. fits the linear probe out-of-fold (the scan's fold count, folds stratified on the given labels and fixed per
   scan) on the training labels, each trusted sample counted ``trusted_weight`` times (integer weights by row
   repetition, so the solver is exactly :class:`clipcleaner_core.scoring.MultinomialLR`; repetitions of a row
   stay in its fold, so no sample's own label reaches its own score);
2. recomputes the neighbour votes (:func:`clipcleaner_core.baselines.knn_probs`) on the scan's stored
   neighbours with the training labels;
3. averages the available sources (zero-shot, which does not depend on labels, is reused from the scan) into
   p_ens, flags with the ensemble rule (best other class beats the given label by more than the scan's margin)
   and ranks by :func:`ranking_score`.

The scan's scores are never touched: each refit is stored under ``WS/refits/<scan id>/`` (atomic writes) with a
record of the fit (time, trusted samples, decisions version); :func:`current_ranking` overlays the newest refit of
the current scan on the scan's scores. Everything here is plain computation over arrays and frames (no
Streamlit): the app runs :func:`refit_workspace` in a background thread with ``should_stop`` and ``progress``.

Ranking rule. The queue is ordered by the ensemble margin, ``max_{k != given} p_ens(k) - p_ens(given)`` (in
[-1, 1]; > ``margin`` exactly when the ensemble flags the sample), not by ``noise_score = 1 - p_ens(given)``: on
the digits demo (6 noise settings x 3 seeds) it found at least as many errors in the first n_errors in 16 of 18
and had the higher average precision in 14 (every hard, asymmetric and mixed setting, by up to 0.15; on 4
symmetric ones it is lower by at most 0.003) — ``docs/ACTIVE.md``, ``scripts/active_eval.py``. A scan scored
with another ``--method`` keeps that method's ``noise_score`` order until the first refit, which always ranks by
the refit ensemble.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from . import registry
from .workspace import Workspace, atomic_write_bytes, atomic_write_text

REFITS_DIR = "refits"
DEFAULT_TRUSTED_WEIGHT = 2  # demo: 1, 2 and 5 find the same errors; a 2k synthetic: 5 ranks worse (docs/ACTIVE.md)
DEFAULT_REFIT_EVERY = 25
KEEP_FITS = 5  # refit tables kept on disk per scan (their records are all kept in fits.json)
Progress = Callable[[str, int, int], None]


class RefitCancelled(RuntimeError):
    """``should_stop()`` returned True between two steps of a refit; nothing was written."""


# ------------------------------------------------------------------------------------------- scan settings
@dataclass(frozen=True)
class ScanSettings:
    """What this feature reads from the workspace settings (the one place that reads them)."""

    scan_id: str
    classes: list[str]
    method: str
    margin: float
    C: float
    folds: int
    seed: int
    encoder: dict
    encoder_kind: str
    text_reason: str | None


def scan_settings(ws: Workspace) -> ScanSettings:
    """The scan identity and the settings a refit, the estimate and text search need (typed ``ws.settings()``)."""
    s = ws.settings()
    sc = s.scoring
    return ScanSettings(scan_id=scan_id(ws), classes=list(s.classes), method=sc.method, margin=float(sc.margin),
                        C=float(sc.C), folds=int(sc.folds or s.detection.probe_folds or 5), seed=int(sc.seed),
                        encoder=dict(s.encoder), encoder_kind=s.encoder_kind,
                        text_reason=None if s.zero_shot.available else (s.zero_shot.reason or "no text tower"))


def scan_id(ws: Workspace) -> str:
    """Identity of the published scan that refits refine: the workspace's generation (a rescan or rescore
    publishes a new one, so refits of an earlier set are never applied to it)."""
    return ws.generation


def refits_dir(ws: Workspace, sid: str) -> Path:
    """``WS/refits/<scan id>/``: everything this feature stores for one scan."""
    return ws.path / REFITS_DIR / sid


def _probs(ws: Workspace, src: str) -> np.ndarray | None:
    """The scan's (N, K) probabilities of one source as float64, or None. Stored dense up to
    ``probs.DENSE_MAX_CLASSES`` classes; above, zero-shot is recomputed from the stored prompt features (a refit
    needs every class's probability)."""
    p = ws.probs(src)
    if p is None:
        return None
    if p.is_dense:
        return np.asarray(p.dense_view(), dtype=np.float64)
    tf, prompts = ws.array("text_features"), ws.json_artifact("prompts")
    if src != "zs" or tf is None or prompts is None:
        return None
    from .scoring import zero_shot_probs

    return zero_shot_probs(np.asarray(ws.embeddings(), dtype=np.float32), np.asarray(tf),
                           np.asarray(prompts["class_index"]), len(ws.classes()), ws.settings().scoring.temperature)


# ------------------------------------------------------------------------------------------------ ranking
def ranking_score(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed margin (N,): the best other class's probability minus the given label's, in [-1, 1].

    ``p`` (N, K) probabilities, ``y`` (N,) given label indices. Positive when another class beats the given
    label (the ensemble flags a sample when this exceeds its margin); negative values order the samples whose
    label leads by how narrowly it leads.
    """
    p = np.asarray(p, dtype=np.float64)
    rows = np.arange(len(p))
    y = np.asarray(y, dtype=np.int64)
    given = p[rows, y]
    if p.shape[1] < 2:
        return -given
    other = p.copy()
    other[rows, y] = -np.inf
    return other.max(axis=1) - given


def _table_ranking_score(scores: pd.DataFrame) -> np.ndarray:
    """:func:`ranking_score` of the scan's ensemble from the float64 top-3 columns of ``scores`` (no arrays)."""
    given = scores["p_given_ens"].to_numpy(dtype=np.float64)
    top1 = scores["ens_top1_prob"].to_numpy(dtype=np.float64)
    top2 = scores["ens_top2_prob"].to_numpy(dtype=np.float64) if "ens_top2_prob" in scores else np.zeros(len(scores))
    first_is_given = scores["ens_top1_label"].astype(str).to_numpy() == scores["label"].astype(str).to_numpy()
    return np.where(first_is_given, top2, top1) - given


def label_flagged(scores: pd.DataFrame, method: str) -> np.ndarray:
    """(N,) bool: the scan's *label-error* flags, those of its default detector ``method`` (``flagged`` also holds
    the "none of the classes" samples, an issue of their own that the errors-left estimate does not count)."""
    col = registry.detector(method).flag_column
    return scores[col if col in scores else "flagged"].to_numpy(dtype=bool)


def scan_ranking_score(scores: pd.DataFrame, method: str) -> np.ndarray:
    """The queue order before any refit (N,), higher = review first: the ensemble margin for the ensemble
    method, the method's own ``noise_score`` otherwise."""
    if method == "ensemble" and "p_given_ens" in scores and "ens_top1_prob" in scores:
        return _table_ranking_score(scores)
    return scores["noise_score"].to_numpy(dtype=np.float64)


def queue_order(rank_score: np.ndarray, undecided: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Rows (positions) of the undecided samples, most suspicious first (ties: ``tiebreak`` desc, then row)."""
    rows = np.flatnonzero(np.asarray(undecided, dtype=bool))
    keys = [rows, -np.asarray(rank_score, dtype=np.float64)[rows]]
    if tiebreak is not None:
        keys.insert(1, -np.asarray(tiebreak, dtype=np.float64)[rows])
    return rows[np.lexsort(keys)]


# ------------------------------------------------------------------------------------------- trusted labels
@dataclass
class Trust:
    """Per sample (N,): ``label`` the trusted class index (-1: not trusted), ``excluded`` (leaves the training
    set), ``decided`` (accept / relabel / exclude; ``unsure`` is not a decision here). ``unknown_relabels``: relabels
    to a name outside the classes (not trusted, counted)."""

    label: np.ndarray
    excluded: np.ndarray
    decided: np.ndarray
    unknown_relabels: int = 0

    @property
    def n_trusted(self) -> int:
        return int((self.label >= 0).sum())


def trust_from_decisions(sample_ids: pd.Series | np.ndarray, y: np.ndarray, classes: list[str],
                         decisions: pd.DataFrame) -> Trust:
    """Trusted labels from ``decisions`` (:meth:`ReviewStore.current` columns), aligned with ``sample_ids``."""
    ids = pd.Series(np.asarray(sample_ids, dtype=object))
    n = len(ids)
    label = np.full(n, -1, dtype=np.int64)
    excluded = np.zeros(n, dtype=bool)
    decided = np.zeros(n, dtype=bool)
    if len(decisions) == 0:
        return Trust(label, excluded, decided)
    d = decisions.drop_duplicates("sample_id", keep="last").set_index("sample_id")
    action = ids.map(d["action"]).to_numpy(dtype=object)
    new = ids.map(d["label"]).to_numpy(dtype=object)
    lookup = {c: i for i, c in enumerate(classes)}
    accept = action == "accept"
    label[accept] = np.asarray(y, dtype=np.int64)[accept]
    relabel = action == "relabel"
    new_idx = np.array([lookup.get(str(v), -1) if r else -1 for v, r in zip(new, relabel)], dtype=np.int64)
    label[relabel] = new_idx[relabel]
    excluded[action == "exclude"] = True
    decided[accept | relabel | excluded] = True
    return Trust(label, excluded, decided, unknown_relabels=int((relabel & (new_idx < 0)).sum()))


# ------------------------------------------------------------------------------------------- the refit
@dataclass
class RefitInputs:
    """Arrays of one scan a refit needs, rows aligned with the scan's scores (N samples, K classes, D dims)."""

    settings: ScanSettings
    sample_ids: np.ndarray  # (N,) object
    y: np.ndarray  # (N,) given label indices
    features: np.ndarray  # (N, D) float32 unit-norm
    neighbors: np.ndarray  # (N, k) int64
    p_zs: np.ndarray | None  # (N, K) or None without a text tower
    scan_rank_score: np.ndarray  # (N,) queue order before any refit
    scan_noise_score: np.ndarray  # (N,)
    scan_flagged: np.ndarray  # (N,) bool


def load_inputs(ws: Workspace, scores: pd.DataFrame | None = None) -> RefitInputs:
    """Read what a refit needs from ``ws`` (about 0.5 s and 250 MB at 100k x 512: cache it in the app)."""
    st = scan_settings(ws)
    scores = ws.scores() if scores is None else scores
    feats = np.asarray(ws.embeddings(), dtype=np.float32)
    nb = ws.array("neighbors")
    if len(feats) != len(scores) or nb is None or len(nb) != len(scores):
        from .workspace import WorkspaceError

        raise WorkspaceError(f"{ws.path}: embeddings / neighbours do not match the scores; re-scan the workspace")
    return RefitInputs(settings=st, sample_ids=scores["sample_id"].astype(str).to_numpy(dtype=object),
                       y=scores["label_idx"].to_numpy(dtype=np.int64), features=feats,
                       neighbors=np.asarray(nb, dtype=np.int64), p_zs=_probs(ws, "zs"),
                       scan_rank_score=scan_ranking_score(scores, st.method),
                       scan_noise_score=scores["noise_score"].to_numpy(dtype=np.float64),
                       scan_flagged=label_flagged(scores, st.method))


def fold_split(y: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """Test rows of each fold: stratified on the given labels when every class allows it (as the scan's probe)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    y = np.asarray(y, dtype=np.int64)
    n_splits = int(min(n_folds, len(y)))
    if n_splits < 2:
        return [np.arange(len(y))]
    counts = np.bincount(y)
    if counts[counts > 0].min() >= n_splits:
        split = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    else:
        split = KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)))
    return [te for _, te in split]


def _single_thread_if_small(work: float):
    """BLAS limited to one thread for tiny matrices (thread start-up dominates them on a busy machine)."""
    from contextlib import nullcontext

    if work >= 2e7:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def fit_probe(x: np.ndarray, y: np.ndarray, n_classes: int, *, repeat: np.ndarray | None = None, C: float = 1.0,
              init: dict | None = None) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """Fit the scan's linear probe (:class:`MultinomialLR`, class-balanced, L2) on ``x`` (n, D), ``y`` (n,).

    ``repeat`` (n,) int >= 1: how many times each row counts (integer sample weights by repetition). ``init``: a
    state returned by an earlier call (warm start when the same classes are present). Returns
    (``predict(x) -> (m, n_classes)`` probabilities, state).
    """
    from .scoring import MultinomialLR

    y = np.asarray(y, dtype=np.int64)
    present = np.unique(y)
    if len(present) < 2:
        only = int(present[0]) if len(present) else 0

        def constant(xx: np.ndarray) -> np.ndarray:
            out = np.zeros((len(xx), n_classes))
            out[:, only] = 1.0
            return out

        return constant, {}
    if repeat is not None and np.any(np.asarray(repeat) > 1):
        idx = np.repeat(np.arange(len(y)), np.asarray(repeat, dtype=np.int64))
        x, y = x[idx], y[idx]
    warm = None
    if init and np.array_equal(init.get("classes"), present):
        warm = (init["coef"], init["intercept"])
    clf = MultinomialLR(C=C).fit(x, y, init=warm)

    def predict(xx: np.ndarray) -> np.ndarray:
        out = np.zeros((len(xx), n_classes))
        out[:, clf.classes_] = clf.predict_proba(xx)
        return out

    return predict, {"classes": clf.classes_, "coef": clf.coef_, "intercept": clf.intercept_, "n_iter": clf.n_iter_}


@dataclass
class RefitResult:
    """Scores of one refit, rows aligned with the scan (N,) / (N, K); ``warm`` carries the fold solutions."""

    rank_score: np.ndarray
    flagged: np.ndarray
    p_probe: np.ndarray
    p_knn: np.ndarray
    p_ens: np.ndarray
    warm: list[dict]
    info: dict = field(default_factory=dict)


def refit_scores(inp: RefitInputs, trust: Trust, *, trusted_weight: int = DEFAULT_TRUSTED_WEIGHT,
                 warm: list[dict] | None = None, progress: Progress | None = None,
                 should_stop: Callable[[], bool] | None = None) -> RefitResult:
    """Refit the probe and the ensemble on the trusted labels (module doc); pure, deterministic.

    ``warm``: :attr:`RefitResult.warm` of an earlier refit of the same scan; without it each fold starts from the
    previous fold's solution (as the scan's probe). The objective is strictly convex: a warm start reaches the same
    optimum (to the solver's tolerance), only faster. Raises :class:`RefitCancelled` when ``should_stop()`` turns
    true between folds.
    """
    from .baselines import knn_probs

    if trusted_weight < 1:
        raise ValueError("trusted_weight must be >= 1")
    t0 = time.perf_counter()
    st = inp.settings
    k = len(st.classes)
    y_train = np.where(trust.label >= 0, trust.label, inp.y)
    use = ~trust.excluded
    repeat = np.where(trust.label >= 0, int(trusted_weight), 1)
    folds = fold_split(inp.y, st.folds, st.seed)
    total = len(folds) + 1
    p_probe = np.zeros((len(inp.y), k))
    new_warm: list[dict] = []
    iters = []
    n, d = inp.features.shape
    with _single_thread_if_small(float(n) * d * k):
        for f, te in enumerate(folds):
            if should_stop is not None and should_stop():
                raise RefitCancelled("refit stopped")
            tr_mask = use.copy()
            tr_mask[te] = False
            tr = np.flatnonzero(tr_mask)
            init = warm[f] if warm is not None and f < len(warm) and warm[f] else (new_warm[-1] if new_warm else None)
            predict, state = fit_probe(inp.features[tr], y_train[tr], k, repeat=repeat[tr], C=st.C, init=init)
            p_probe[te] = predict(inp.features[te])
            new_warm.append(state)
            iters.append(int(state.get("n_iter", 0)))
            if progress:
                progress("refit", f + 1, total)
    p_knn = knn_probs(inp.neighbors, y_train, k)
    sources = [p for p in (inp.p_zs, p_probe, p_knn) if p is not None]
    p_ens = np.mean(sources, axis=0)
    rank = ranking_score(p_ens, inp.y)
    if progress:
        progress("refit", total, total)
    return RefitResult(rank_score=rank, flagged=rank > st.margin, p_probe=p_probe, p_knn=p_knn, p_ens=p_ens,
                       warm=new_warm, info={"seconds": time.perf_counter() - t0, "lbfgs_iterations": iters,
                                            "folds": len(folds), "warm_start": warm is not None})


# ------------------------------------------------------------------------------------------ workspace I/O
@dataclass
class RefitRecord:
    """Which fit produced a ranking: stored in ``WS/refits/<scan id>/current.json`` and ``fits.json``."""

    fit_id: str
    scan_id: str
    created_at: str
    seconds: float
    n_trusted: int
    n_accept: int
    n_relabel: int
    n_excluded: int
    unknown_relabels: int
    decisions_version: list[int]
    trusted_weight: int
    flagged: int
    table: str
    warm: str
    ranking: str = "ensemble margin (refit: probe + neighbour votes on trusted labels)"


def _decisions_and_version(ws: Workspace, db_url: str | None) -> tuple[pd.DataFrame, list[int]]:
    """Current decisions and the store's version stamp (read in one open of the workspace's review store)."""
    from .decisions import CURRENT_COLUMNS, open_store, resolve_store_url

    url, _ = resolve_store_url(ws.path, db_url)
    if url is None and not ws.review_db.exists():
        return pd.DataFrame(columns=CURRENT_COLUMNS), [0, 0]
    with open_store(ws.path, url=url) as store:
        return store.current(), list(store.version())


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_warm(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            n = int(z["n_folds"])
            return [{"classes": z[f"classes_{f}"], "coef": z[f"coef_{f}"], "intercept": z[f"intercept_{f}"]}
                    if f"coef_{f}" in z else {} for f in range(n)]
    except (OSError, ValueError, KeyError):
        return None  # a damaged warm start only costs time


def refit_workspace(ws: Workspace | str | Path, *, db_url: str | None = None, decisions: pd.DataFrame | None = None,
                    decisions_version: list[int] | None = None, inputs: RefitInputs | None = None,
                    trusted_weight: int = DEFAULT_TRUSTED_WEIGHT, progress: Progress | None = None,
                    should_stop: Callable[[], bool] | None = None) -> RefitRecord:
    """Refit from the workspace's current decisions and store the result as the current ranking.

    ``decisions`` / ``decisions_version``: pass them when already read (else the review store is opened);
    ``inputs``: :func:`load_inputs` cached by the caller. Writes ``fit-<id>.parquet`` (rank_score, flagged,
    suggested label and probability, p_given per source), the fold solutions (next refit's warm start), then
    ``current.json`` last (atomic), so a reader sees the old or the new fit, never half of one. The demo: ~1–3 s;
    100k x 512, K = 100: see docs/PERFORMANCE.md (bench section ``refit``).
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    ws.require()
    inp = inputs if inputs is not None else load_inputs(ws)
    if decisions is None:
        decisions, decisions_version = _decisions_and_version(ws, db_url)
    trust = trust_from_decisions(inp.sample_ids, inp.y, inp.settings.classes, decisions)
    folder = refits_dir(ws, inp.settings.scan_id)
    prev = latest_refit(ws, inp.settings.scan_id)
    warm = _load_warm(folder / prev.warm) if prev is not None else None
    res = refit_scores(inp, trust, trusted_weight=trusted_weight, warm=warm, progress=progress,
                       should_stop=should_stop)
    if should_stop is not None and should_stop():
        raise RefitCancelled("refit stopped")
    now = datetime.now(UTC)
    fit_id = now.strftime("%Y%m%dT%H%M%S%f") + "-" + uuid.uuid4().hex[:6]
    names = np.asarray(inp.settings.classes, dtype=object)
    sug = res.p_ens.argmax(axis=1)
    rows = np.arange(len(inp.y))
    table = pd.DataFrame({
        "sample_id": inp.sample_ids, "rank_score": res.rank_score, "flagged": res.flagged,
        "suggested_label": names[sug] if len(sug) else np.array([], dtype=object),
        "suggested_prob": res.p_ens[rows, sug], "p_given_probe": res.p_probe[rows, inp.y],
        "p_given_knn": res.p_knn[rows, inp.y], "p_given_ens": res.p_ens[rows, inp.y],
    })
    import io

    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    atomic_write_bytes(folder / f"fit-{fit_id}.parquet", buf.getvalue())
    warm_arrays: dict[str, np.ndarray] = {"n_folds": np.asarray(len(res.warm))}
    for f, w in enumerate(res.warm):
        if w:
            warm_arrays.update({f"classes_{f}": w["classes"], f"coef_{f}": w["coef"], f"intercept_{f}": w["intercept"]})
    _save_npz(folder / f"fit-{fit_id}-warm.npz", **warm_arrays)
    action = _actions(decisions, inp.sample_ids)
    rec = RefitRecord(
        fit_id=fit_id, scan_id=inp.settings.scan_id, created_at=now.isoformat(timespec="seconds"),
        seconds=round(float(res.info["seconds"]), 3), n_trusted=trust.n_trusted,
        n_accept=int((action == "accept").sum()), n_relabel=int((action == "relabel").sum()),
        n_excluded=int(trust.excluded.sum()), unknown_relabels=trust.unknown_relabels,
        decisions_version=[int(v) for v in (decisions_version or [0, 0])], trusted_weight=int(trusted_weight),
        flagged=int(res.flagged.sum()), table=f"fit-{fit_id}.parquet", warm=f"fit-{fit_id}-warm.npz")
    history = _fit_history(folder) + [asdict(rec)]
    atomic_write_text(folder / "fits.json", json.dumps(history, indent=1))
    atomic_write_text(folder / "current.json", json.dumps(asdict(rec), indent=1))
    _prune(folder, keep={r["table"] for r in history[-KEEP_FITS:]} | {r["warm"] for r in history[-KEEP_FITS:]})
    return rec


def _actions(decisions: pd.DataFrame, sample_ids: np.ndarray) -> np.ndarray:
    """Current action per sample ("" when undecided), aligned with ``sample_ids``."""
    if len(decisions) == 0:
        return np.full(len(sample_ids), "", dtype=object)
    d = decisions.drop_duplicates("sample_id", keep="last").set_index("sample_id")["action"]
    return pd.Series(sample_ids, dtype=object).map(d).fillna("").to_numpy(dtype=object)


def _fit_history(folder: Path) -> list[dict]:
    try:
        doc = json.loads((folder / "fits.json").read_text(encoding="utf-8"))
        return doc if isinstance(doc, list) else []
    except (OSError, ValueError):
        return []


def _prune(folder: Path, keep: set[str]) -> None:
    """Delete this feature's own older fit files (``fit-*``) beyond the newest :data:`KEEP_FITS`."""
    for p in folder.glob("fit-*"):
        if p.name not in keep and not p.name.startswith("."):
            try:
                p.unlink()
            except OSError:
                pass


def latest_refit(ws: Workspace, sid: str | None = None) -> RefitRecord | None:
    """The record of the fit behind the current ranking of the workspace's current scan, or None (no refit)."""
    sid = sid or scan_settings(ws).scan_id
    p = refits_dir(ws, sid) / "current.json"
    try:
        rec = RefitRecord(**json.loads(p.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return rec if rec.scan_id == sid and (p.parent / rec.table).is_file() else None


def refit_history(ws: Workspace) -> list[dict]:
    """Records of every refit of the current scan, oldest first (``fits.json``)."""
    return _fit_history(refits_dir(ws, scan_settings(ws).scan_id))


def decisions_since_refit(ws: Workspace, decisions_version: tuple[int, int] | list[int],
                          record: RefitRecord | None = None) -> int:
    """Review events written since the current ranking's fit (all of them when there is no refit): the app's
    "refit after every N decisions" compares this with N. ``decisions_version`` is ``ReviewStore.version()``."""
    rec = record if record is not None else latest_refit(ws)
    done = int(decisions_version[1])
    return done - (int(rec.decisions_version[1]) if rec is not None else 0)


def current_ranking(ws: Workspace | str | Path, scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ranking the app and the export use: the scan's scores with the newest refit of this scan laid over.

    Rows aligned with ``scores`` (read from the workspace when not given). Columns: ``sample_id``,
    ``scan_rank_score``, ``scan_flagged``, ``rank_score`` / ``flagged`` / ``suggested_label`` /
    ``suggested_prob`` (the refit's where there is one, else the scan's), ``source`` ("scan" or "refit") and
    ``fit_id`` (None without a refit). Sort by ``rank_score`` descending for the queue (:func:`queue_order`).
    Reads one small parquet file: ~0.1 s at 100k.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    st = scan_settings(ws)
    scores = ws.scores() if scores is None else scores
    scan_rank = scan_ranking_score(scores, st.method)
    out = pd.DataFrame({"sample_id": scores["sample_id"].astype(str).to_numpy(dtype=object),
                        "scan_rank_score": scan_rank, "scan_flagged": label_flagged(scores, st.method),
                        "rank_score": scan_rank, "flagged": scores["flagged"].to_numpy(dtype=bool),
                        "suggested_label": scores["suggested_label"].astype(str).to_numpy(dtype=object),
                        "suggested_prob": scores["suggested_prob"].to_numpy(dtype=np.float64),
                        "source": "scan", "fit_id": None})
    rec = latest_refit(ws, st.scan_id)
    if rec is None:
        return out
    try:
        fit = pd.read_parquet(refits_dir(ws, st.scan_id) / rec.table)
    except (OSError, ValueError):
        return out
    if len(fit) != len(out) or not np.array_equal(fit["sample_id"].to_numpy(dtype=object), out["sample_id"].to_numpy()):
        return out  # not this scan's rows (never expected: the folder is keyed by the scan)
    for c in ("rank_score", "flagged", "suggested_label", "suggested_prob"):
        out[c] = fit[c].to_numpy()
    out["source"] = "refit"
    out["fit_id"] = rec.fit_id
    return out
