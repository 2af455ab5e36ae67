"""How many label errors are left: a stratified estimate with a 95% interval, and what the next reviews should fix.

Evidence (what a review says about a sample's given label): ``accept`` → correct, ``relabel`` to another label or
``exclude`` → error (an excluded sample's label was not right for it either), ``relabel`` to the same label →
correct; ``unsure`` and undecided samples are unknown and still count as "left".

Two strata, fixed by the scan's flags:

- **Unflagged** samples are measured by the **spot check**: a seeded uniform random sample of them
  (:func:`draw_spot_check`, stored per scan; the app offers it for review). Only spot-check decisions are
  evidence here (any route counts). Its rate θ has the Jeffreys posterior Beta(e + ½, n − e + ½); the errors left
  are a *difference estimate* — the errors among the stratum's non-spot-check samples, Binomial(m, θ), minus the
  errors reviewers already found among them (clipped to [0, undecided]) — which stays unbiased however the other
  reviews were chosen (queue, refit, "more like this"), plus Binomial(undecided spot-check samples, θ).
- **Flagged** samples are measured by their own reviews, "precision by score band": the reviewed flagged samples
  sorted by the *current* ranking score (the refit's after a refit) are cut into up to :data:`FLAGGED_BANDS` bands of
  at least :data:`MIN_BAND_EVIDENCE` reviews (cut without looking at the outcomes), each band's rate Beta(e + ½,
  n − e + ½) applying to the undecided flagged samples scoring within it (band edges midway between bands). The
  queue reviews the top of a band first, so the rate of a partly reviewed band leans high. Undecided flagged samples
  scoring *below every reviewed flagged sample* have no evidence: their rate is assumed to fall from the lowest
  band's (at its score) to the spot check's (at the lowest of theirs) along x^a — x their position in between,
  one exponent a per draw, log-uniform in [1/:data:`SHAPE_RANGE`, :data:`SHAPE_RANGE`] (from "stays at the band's
  rate" to "drops at once"): only the two ends and monotonicity are assumed, so the interval stays wide until the
  reviewers go further down the queue (said in ``notes``).

Everything is combined by simulation: :data:`DRAWS` seeded draws of every rate and count, summed; the estimate is
the mean, the 95% interval the 2.5 and 97.5 percentiles. "Reviewing the next N suspects should fix ≈ M" sums the
rates of the next N queue samples' strata in the same draws (a stratum's rate is its average, so when the next N are
unflagged samples at the top of the unflagged stratum, M understates them; ``notes`` says so).

Validated by simulated reviews of the digits demo (6 noise settings x 3 seeds; static, random and active review
of 25–100 % of the error count; ``scripts/active_eval.py``, ``docs/ACTIVE.md``): the true number left was inside
the interval in 330 of 337 reviews (98 %).

``status`` is ``"insufficient"`` (with a plain ``reason``) until at least ``min_spot`` spot-check samples and
``min_flagged`` flagged samples are reviewed (each only when that stratum still has undecided samples).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .active import RefitInputs, current_ranking, label_flagged, queue_order, refits_dir, scan_settings
from .workspace import Workspace, atomic_write_text

SPOT_CHECK_FILE = "spotcheck.json"
MIN_SPOT = 20
MIN_FLAGGED = 20
MIN_BAND_EVIDENCE = 10  # reviews per flagged score band
FLAGGED_BANDS = 10  # at most this many bands of reviewed flagged samples
UNMEASURED_BINS = 20
SHAPE_RANGE = 50.0  # unmeasured flagged samples: x**a with a log-uniform in [1/SHAPE_RANGE, SHAPE_RANGE]
DRAWS = 20_000
SPOT_PRIOR = 1.0
"""Prior of the spot check's error rate: uniform, Beta(e + 1, n - e + 1). The spot check usually finds few or no
errors, where the Jeffreys interval (prior 1/2) is known to be too narrow (Brown, Cai & DasGupta 2001): with 0 of 63
it ends at 3.9% although a 4% rate gives 0 of 63 one time in 15 (seen on the demo). The uniform prior's 5.6%
covers it."""
SPOT_SEED_OFFSET = 7919  # the spot check's seed is the scan's seed + this (a draw of its own)


# ----------------------------------------------------------------------------------------------- spot check
def spot_check_size(n_unflagged: int) -> int:
    """Default spot-check size: 5 % of the unflagged samples, at least 30 and at most 200 (all when fewer)."""
    return int(min(n_unflagged, max(30, min(200, round(0.05 * n_unflagged)))))


def draw_spot_check(sample_ids: np.ndarray, flagged: np.ndarray, seed: int, size: int | None = None) -> list[str]:
    """A uniform random sample (without replacement) of the unflagged samples' ids, deterministic for ``seed``.

    Drawn from the ids sorted, so the draw does not depend on row order; returned in the drawn order (review in
    that order: any prefix is itself a uniform random sample).
    """
    ids = np.asarray(sample_ids, dtype=object)[~np.asarray(flagged, dtype=bool)]
    pool = np.sort(ids.astype(str))
    n = spot_check_size(len(pool)) if size is None else int(min(size, len(pool)))
    rng = np.random.default_rng(seed)
    return [str(s) for s in pool[rng.choice(len(pool), size=n, replace=False)]] if n else []


@dataclass
class SpotCheck:
    """The stored spot check of one scan: ``sample_ids`` in review order, how it was drawn."""

    scan_id: str
    seed: int
    size: int
    population: int
    sample_ids: list[str]


def spot_check(ws: Workspace, scores: pd.DataFrame | None = None) -> SpotCheck:
    """The workspace's spot check for its current scan: read from ``WS/refits/<scan id>/spotcheck.json``, drawn
    and stored on first use (atomic write; the same draw every time for a scan)."""
    st = scan_settings(ws)
    path = refits_dir(ws, st.scan_id) / SPOT_CHECK_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("scan_id") == st.scan_id:
            return SpotCheck(**doc)
    except (OSError, ValueError, TypeError):
        pass
    scores = ws.scores() if scores is None else scores
    flagged = label_flagged(scores, st.method)
    seed = st.seed + SPOT_SEED_OFFSET
    ids = draw_spot_check(scores["sample_id"].to_numpy(dtype=object), flagged, seed)
    sc = SpotCheck(scan_id=st.scan_id, seed=seed, size=len(ids), population=int((~flagged).sum()), sample_ids=ids)
    atomic_write_text(path, json.dumps(asdict(sc), indent=1))
    return sc


# ------------------------------------------------------------------------------------------------- outcomes
def outcomes_from_decisions(sample_ids: np.ndarray, given_labels: np.ndarray, decisions: pd.DataFrame) -> np.ndarray:
    """Per sample (N,) int8: 1 the given label was wrong (relabel to another label, exclude), 0 it was right
    (accept, relabel to the same label), -1 unknown (undecided, unsure)."""
    out = np.full(len(sample_ids), -1, dtype=np.int8)
    if len(decisions) == 0:
        return out
    d = decisions.drop_duplicates("sample_id", keep="last").set_index("sample_id")
    ids = pd.Series(np.asarray(sample_ids, dtype=object))
    action = ids.map(d["action"]).to_numpy(dtype=object)
    new = ids.map(d["label"]).to_numpy(dtype=object)
    given = np.asarray(given_labels).astype(str)
    out[action == "accept"] = 0
    out[action == "exclude"] = 1
    rel = action == "relabel"
    same = rel & (new.astype(str) == given)
    out[rel & ~same] = 1
    out[same] = 0
    return out


# ------------------------------------------------------------------------------------------------- estimate
@dataclass
class Estimate:
    """Errors left in the dataset (undecided + unsure samples) with a 95% interval; see the module doc.

    ``errors_left`` / ``low`` / ``high`` are None when ``status == "insufficient"``. ``next_n`` suspects of the
    current queue should fix ≈ ``next_fix`` (``next_fix_low``–``next_fix_high``). ``flagged_left`` /
    ``unflagged_left``: the estimate split by stratum. ``bands``: one row per stratum (region, score_low,
    score_high, samples, undecided, evidence, errors, rate).
    """

    status: str
    reason: str
    errors_left: float | None
    low: float | None
    high: float | None
    next_n: int
    next_fix: float | None
    next_fix_low: float | None
    next_fix_high: float | None
    samples: int
    undecided: int
    reviewed: int
    errors_found: int
    spot_check_size: int
    spot_check_reviewed: int
    flagged_reviewed: int
    flagged_left: float | None = None
    unflagged_left: float | None = None
    bands: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    method: str = ("stratified: flagged samples in score bands of their reviews, unflagged samples by the random "
                   "spot check (difference estimate); Jeffreys Beta posteriors, binomial counts, combined by "
                   "simulation; 95% = 2.5-97.5 percentiles (clipcleaner_core/estimate.py)")

    def summary(self) -> str:
        """One line for the app and the CLI."""
        if self.status != "ok":
            return f"errors left: not estimated yet — {self.reason}"
        s = (f"≈ {self.errors_left:,.0f} errors left (95%: {self.low:,.0f}–{self.high:,.0f})")
        if self.next_n and self.next_fix is not None:
            s += f"; reviewing the next {self.next_n:,} suspects should fix ≈ {self.next_fix:,.0f}"
        return s


def _beta_draws(rng: np.random.Generator, errors: int, n: int, draws: int, prior: float = 0.5) -> np.ndarray:
    """Posterior Beta(e + prior, n - e + prior) of an error rate, ``draws`` samples: Jeffreys (prior 1/2) by
    default, the uniform prior (1) where errors are rare (see :data:`SPOT_PRIOR`)."""
    return rng.beta(errors + prior, n - errors + prior, size=draws)


def _unmeasured(rng: np.random.Generator, draws: int, score: np.ndarray, members: np.ndarray, top: float,
                theta_floor: np.ndarray, theta_top: np.ndarray, group: np.ndarray, rates: list, left_draws: list,
                bands: list) -> None:
    """Strata for flagged samples scoring below every reviewed flagged sample (appended to the lists in place).

    Their rate falls from the lowest reviewed band's (``theta_top``, at score ``top``) to the spot check's
    (``theta_floor``, at the lowest of their scores) along x^a, x in [0, 1] their position in that score range and
    one exponent a per draw, log-uniform in [1/SHAPE_RANGE, SHAPE_RANGE] (from flat to a sudden drop: the shape is
    unknown, only the ends and monotonicity are assumed). Positions are grouped into :data:`UNMEASURED_BINS` bins
    of equal width.
    """
    s = score[members]
    bottom = float(s.min())
    x = (s - bottom) / (top - bottom) if top > bottom else np.ones(len(s))
    b = np.minimum((x * UNMEASURED_BINS).astype(np.int64), UNMEASURED_BINS - 1)
    a = np.exp(rng.uniform(-np.log(SHAPE_RANGE), np.log(SHAPE_RANGE), size=draws))
    span = np.clip(theta_top - theta_floor, 0.0, None)
    for k in np.unique(b):
        rows = members[b == k]
        xk = float(x[b == k].mean())
        theta = theta_floor + span * xk ** a
        group[rows] = len(rates)
        rates.append(theta)
        left_draws.append(rng.binomial(len(rows), theta))
        bands.append({"region": "flagged, below every reviewed one", "score_low": float(score[rows].min()),
                      "score_high": float(score[rows].max()), "samples": int(len(rows)), "undecided": int(len(rows)),
                      "evidence": 0, "errors": 0, "rate": float(theta.mean())})


def estimate_errors_left(flagged: np.ndarray, rank_score: np.ndarray, outcome: np.ndarray, spot: np.ndarray,
                         queue: np.ndarray | None = None, next_n: int = 200, *, min_spot: int = MIN_SPOT,
                         min_flagged: int = MIN_FLAGGED, draws: int = DRAWS, seed: int = 0) -> Estimate:
    """The estimate from arrays, all (N,): the scan's ``flagged``, the current ``rank_score``, ``outcome``
    (:func:`outcomes_from_decisions`), ``spot`` (bool, in the spot check); ``queue``: rows in review order (for
    "the next N"; default: undecided by ``rank_score``). Deterministic for ``seed``. See the module doc.
    """
    flagged = np.asarray(flagged, dtype=bool)
    score = np.asarray(rank_score, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.int8)
    spot = np.asarray(spot, dtype=bool)
    n = len(flagged)
    left = outcome < 0
    if queue is None:
        queue = queue_order(score, left)
    nxt = np.asarray(queue, dtype=np.int64)[:max(int(next_n), 0)]
    spot_ev = spot & ~left
    base = dict(next_n=int(len(nxt)), samples=n, undecided=int(left.sum()), reviewed=int((~left).sum()),
                errors_found=int((outcome == 1).sum()), spot_check_size=int(spot.sum()),
                spot_check_reviewed=int(spot_ev.sum()), flagged_reviewed=int((flagged & ~left).sum()))
    missing = []
    if left[~flagged].any() and base["spot_check_reviewed"] < min(min_spot, int(spot.sum())):
        missing.append(f"review at least {min(min_spot, int(spot.sum()))} of the {int(spot.sum())} spot-check "
                       f"samples ({base['spot_check_reviewed']} done) to measure what the flags miss")
    if left[~flagged].any() and not spot.any():
        missing.append("there is no spot check to measure the unflagged samples with")
    if left[flagged].any() and base["flagged_reviewed"] < min_flagged:
        missing.append(f"review at least {min_flagged} flagged samples ({base['flagged_reviewed']} done)")
    if missing:
        return Estimate(status="insufficient", reason="; ".join(missing) + ".", errors_left=None, low=None,
                        high=None, next_fix=None, next_fix_low=None, next_fix_high=None, **base)

    rng = np.random.default_rng(seed)
    group = np.full(n, -1, dtype=np.int64)  # stratum of every sample (for "the next N")
    rates: list[np.ndarray] = []  # (draws,) error rate of each stratum
    left_draws: list[np.ndarray] = []  # (draws,) errors left in each stratum
    bands: list[dict] = []

    # unflagged: one stratum measured by the spot check (a difference estimator: unbiased whatever else was reviewed)
    unf = np.flatnonzero(~flagged)
    top_unflagged = np.zeros(draws)
    if len(unf):
        ev = unf[spot_ev[unf]]
        e = int((outcome[ev] == 1).sum())
        theta = _beta_draws(rng, e, len(ev), draws, prior=SPOT_PRIOR)
        other = unf[~spot[unf]]
        found = int((outcome[other] == 1).sum())
        other_left = int(left[other].sum())
        spot_left = int(left[unf].sum()) - other_left
        cnt = np.clip(rng.binomial(len(other), theta) - found, 0, other_left)
        if spot_left:
            cnt = cnt + rng.binomial(spot_left, theta)
        group[unf] = len(rates)
        rates.append(theta)
        left_draws.append(cnt)
        bands.append({"region": "unflagged", "score_low": float(score[unf].min()),
                      "score_high": float(score[unf].max()),
                      "samples": int(len(unf)), "undecided": int(left[unf].sum()), "evidence": int(len(ev)),
                      "errors": e, "rate": float(theta.mean())})
        top_unflagged = theta

    # flagged: bands of the reviewed flagged samples by score; below all of them: unmeasured
    fl = np.flatnonzero(flagged)
    notes: list[str] = []
    ev = fl[~left[fl]]
    if len(ev):
        ev = ev[np.lexsort((ev, -score[ev]))]  # highest score first
        size = max(MIN_BAND_EVIDENCE, int(np.ceil(len(ev) / FLAGGED_BANDS)))
        fb = np.array_split(ev, max(1, len(ev) // size))
        cuts = np.array([(score[fb[i][-1]] + score[fb[i + 1][0]]) / 2 for i in range(len(fb) - 1)])
        und = fl[left[fl]]
        where = np.searchsorted(-cuts, -score[und], side="left") if len(cuts) else np.zeros(len(und), np.int64)
        lowest = score[fb[-1][-1]]
        below = score[und] < lowest
        for i, b in enumerate(fb):
            e = int((outcome[b] == 1).sum())
            theta = _beta_draws(rng, e, len(b), draws)
            members = und[(where == i) & ~below]
            group[members] = len(rates)
            rates.append(theta)
            left_draws.append(rng.binomial(len(members), theta))
            hi = float(max(score[b].max(), score[members].max() if len(members) else -np.inf)) if i == 0 \
                else float(cuts[i - 1])
            lo = float(lowest) if i == len(fb) - 1 else float(cuts[i])
            bands.append({"region": "flagged", "score_low": lo, "score_high": hi, "samples": int(len(b) + len(members)),
                          "undecided": int(len(members)), "evidence": int(len(b)), "errors": e,
                          "rate": float(theta.mean())})
        if below.any():
            members = und[below]
            _unmeasured(rng, draws, score, members, float(lowest), top_unflagged, rates[-1], group, rates,
                        left_draws, bands)
            notes.append(f"{len(members):,} flagged samples score below every reviewed flagged sample: their error "
                         f"rate is assumed to fall from the lowest reviewed band's to the spot check's along a "
                         f"curve of unknown shape; reviewing further down the queue narrows the interval")
    total = np.sum(left_draws, axis=0) if left_draws else np.zeros(draws)
    flagged_total = np.sum([d for d, b in zip(left_draws, bands) if b["region"] != "unflagged"], axis=0) \
        if any(b["region"] != "unflagged" for b in bands) else np.zeros(draws)
    if len(nxt) and (~flagged[nxt]).mean() >= 0.5:
        notes.append(f"most of the next {len(nxt):,} suspects are unflagged: what they should fix uses the spot "
                     f"check's average rate and likely understates the top of the queue")
    fix = np.zeros(draws)
    counts = np.bincount(group[nxt][group[nxt] >= 0], minlength=len(rates)) if len(nxt) else []
    for g, m in enumerate(counts):
        if m:
            fix = fix + rng.binomial(int(m), rates[g])
    lo_t, hi_t = np.percentile(total, [2.5, 97.5])
    lo_f, hi_f = np.percentile(fix, [2.5, 97.5])
    return Estimate(status="ok", reason="", errors_left=float(total.mean()), low=float(lo_t), high=float(hi_t),
                    next_fix=float(fix.mean()), next_fix_low=float(lo_f), next_fix_high=float(hi_f),
                    flagged_left=float(np.mean(flagged_total)),
                    unflagged_left=float(total.mean() - np.mean(flagged_total)),
                    bands=bands, notes=notes, **base)


def estimate_from_inputs(inp: RefitInputs, decisions: pd.DataFrame, spot_ids: list[str], rank_score: np.ndarray,
                         next_n: int = 200, seed: int = 0) -> Estimate:
    """:func:`estimate_errors_left` for a scan's arrays and a decisions frame (the simulation calls this)."""
    classes = np.asarray(inp.settings.classes, dtype=object)
    outcome = outcomes_from_decisions(inp.sample_ids, classes[inp.y], decisions)
    spot = pd.Series(inp.sample_ids).isin(set(spot_ids)).to_numpy()
    queue = queue_order(rank_score, outcome < 0, tiebreak=inp.scan_noise_score)
    return estimate_errors_left(inp.scan_flagged, rank_score, outcome, spot, queue, next_n, seed=seed)


def estimate_workspace(ws: Workspace | str | Path, *, db_url: str | None = None, decisions: pd.DataFrame | None = None,
                       scores: pd.DataFrame | None = None, next_n: int = 200) -> Estimate:
    """The estimate for a workspace: its scan's flags, the current ranking (refit overlay), its decisions and its
    spot check (drawn and stored on first use). ~0.3 s at 100k with ``scores`` given."""
    from .active import _decisions_and_version

    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    ws.require()
    scores = ws.scores() if scores is None else scores
    if decisions is None:
        decisions, _ = _decisions_and_version(ws, db_url)
    rank = current_ranking(ws, scores)
    sc = spot_check(ws, scores)
    ids = scores["sample_id"].astype(str).to_numpy(dtype=object)
    outcome = outcomes_from_decisions(ids, scores["label"].astype(str).to_numpy(), decisions)
    spot = pd.Series(ids).isin(set(sc.sample_ids)).to_numpy()
    score = rank["rank_score"].to_numpy(dtype=np.float64)
    queue = queue_order(score, outcome < 0, tiebreak=scores["noise_score"].to_numpy(dtype=np.float64))
    return estimate_errors_left(rank["scan_flagged"].to_numpy(dtype=bool), score, outcome, spot, queue, next_n)


def estimate_report(est: Estimate) -> dict:
    """The estimate as the JSON section of the export report (``errors_left``)."""
    d = asdict(est)
    d["summary"] = est.summary()
    return d
