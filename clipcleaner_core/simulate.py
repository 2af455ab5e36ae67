"""Simulated review: an oracle reviewer (decisions = a truth file) follows the queue, refitting as the app would.

Nothing is written: decisions live in memory (the user's review database and the workspace's refits are never
touched). The oracle reviews ``budget`` samples of the queue:

- ``active``: the current ranking, refit (:func:`clipcleaner_core.active.refit_scores`) whenever ``refit_every``
  decisions were made since the last fit, as the app's automatic refit;
- ``static``: the scan's ranking, never refit;
- ``random``: a seeded random order (the baseline a ranking has to beat).

A sample whose given label differs from the truth is relabelled to the truth, the others are accepted; a sample
missing from the truth file is marked unsure. The spot check (:func:`clipcleaner_core.estimate.draw_spot_check`,
the same draw the app offers) is reviewed apart: its decisions enter the errors-left estimate, never the queue or
the refits, so the strategies are compared on the budget alone and the spot-check samples the queue did not reach
are reported as ``spot_check_reviewed`` (their errors as ``spot_check_errors``, not in ``errors_found``). After the
spot check and every ``refit_every`` queue reviews the estimate is compared with the true number left (``curve``).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .active import (
    DEFAULT_REFIT_EVERY,
    DEFAULT_TRUSTED_WEIGHT,
    RefitInputs,
    load_inputs,
    queue_order,
    refit_scores,
    trust_from_decisions,
)
from .estimate import SPOT_SEED_OFFSET, draw_spot_check, estimate_from_inputs
from .workspace import Workspace

STRATEGIES = ("active", "static", "random")


@dataclass
class SimulationResult:
    """Outcome of :func:`simulate`; ``curve`` rows: reviewed, errors_found, estimate_left, estimate_low,
    estimate_high, true_left (after the spot check and every ``refit_every`` queue reviews)."""

    strategy: str
    budget: int
    refit_every: int
    errors_total: int
    errors_found: int
    reviewed: int
    spot_check_reviewed: int
    spot_check_errors: int
    true_left: int
    estimate_left: float | None
    estimate_low: float | None
    estimate_high: float | None
    estimate_status: str
    estimate_reason: str
    inside_interval: bool | None
    refits: int
    seconds: float
    curve: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _truth_idx(ws: Workspace, inp: RefitInputs, truth_file: str | Path) -> np.ndarray:
    """Truth label index per scan row; -1 unknown (not in the file), -2 a label that is not one of the classes."""
    from .evaluate import truth_labels

    truth = truth_labels(ws.scores(), truth_file)
    lookup = {c: i for i, c in enumerate(inp.settings.classes)}
    return np.array([-1 if pd.isna(t) else lookup.get(str(t), -2) for t in truth], dtype=np.int64)


def simulate(ws: Workspace | str | Path, truth_file: str | Path, budget: int, strategy: str = "active", *,
             refit_every: int = DEFAULT_REFIT_EVERY, trusted_weight: int = DEFAULT_TRUSTED_WEIGHT, seed: int = 0,
             spot_check_size: int | None = None, spot_seed: int | None = None, inputs: RefitInputs | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> SimulationResult:
    """Run one simulated review of ``budget`` queue samples (module doc). Deterministic for ``seed`` (the random
    order) and ``spot_seed`` (default: the workspace's spot check, as :func:`clipcleaner_core.estimate.spot_check`)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if budget < 0 or refit_every < 1:
        raise ValueError("--budget must be >= 0 and --refit-every >= 1")
    t0 = time.perf_counter()
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    ws.require()
    inp = inputs if inputs is not None else load_inputs(ws)
    names = np.asarray(inp.settings.classes, dtype=object)
    truth = _truth_idx(ws, inp, truth_file)
    if (truth == -1).all():
        raise ValueError(f"{truth_file}: no scanned sample is in this truth file (matched by path)")
    n = len(inp.y)
    is_error = (truth != -1) & (truth != inp.y)
    oracle_action = np.where(truth == -1, "unsure", np.where(truth == inp.y, "accept", "relabel")).astype(object)
    oracle_label = np.where(oracle_action == "relabel", names[np.clip(truth, 0, None)], None).astype(object)
    oracle_label[truth == -2] = "(not a class)"
    reviewed_mask = np.zeros(n, dtype=bool)  # queue reviews: they drive the queue and the refits

    def decisions(rows: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"sample_id": inp.sample_ids[rows], "action": oracle_action[rows],
                             "label": oracle_label[rows], "reviewer": "oracle", "updated_at": ""})

    spot_ids = draw_spot_check(inp.sample_ids, inp.scan_flagged,
                               inp.settings.seed + SPOT_SEED_OFFSET if spot_seed is None else spot_seed,
                               spot_check_size)
    row_of = {s: i for i, s in enumerate(inp.sample_ids)}
    spot_mask = np.zeros(n, dtype=bool)
    spot_mask[[row_of[s] for s in spot_ids]] = True
    spot_errors = int(is_error[spot_mask & ~reviewed_mask].sum())

    rank = inp.scan_rank_score
    warm = None
    refits = 0
    since_fit = 0
    found = 0
    curve: list[dict] = []

    def estimate(next_n: int = 0):
        return estimate_from_inputs(inp, decisions(np.flatnonzero(reviewed_mask | spot_mask)), spot_ids, rank,
                                    next_n=next_n)

    def snapshot() -> None:
        est = estimate()
        known = reviewed_mask | spot_mask
        curve.append({"reviewed": int(reviewed_mask.sum()), "errors_found": found, "estimate_left": est.errors_left,
                      "estimate_low": est.low, "estimate_high": est.high,
                      "true_left": int((is_error & ~known).sum())})

    snapshot()
    queue = np.random.default_rng(seed).permutation(n) if strategy == "random" else \
        queue_order(rank, ~reviewed_mask, tiebreak=inp.scan_noise_score)
    pos = 0
    reviewed = 0
    while reviewed < budget:
        if strategy == "active" and since_fit >= refit_every:
            trust = trust_from_decisions(inp.sample_ids, inp.y, inp.settings.classes,
                                         decisions(np.flatnonzero(reviewed_mask)))
            res = refit_scores(inp, trust, trusted_weight=trusted_weight, warm=warm)
            warm, rank, since_fit, refits = res.warm, res.rank_score, 0, refits + 1
            queue = queue_order(rank, ~reviewed_mask, tiebreak=inp.scan_noise_score)
            pos = 0
        while pos < len(queue) and reviewed_mask[queue[pos]]:
            pos += 1
        if pos >= len(queue):
            break  # everything reviewed
        i = int(queue[pos])
        reviewed_mask[i] = True
        found += int(is_error[i])
        reviewed += 1
        since_fit += 1
        if reviewed % refit_every == 0 or reviewed == budget:
            if progress:
                progress("simulate", reviewed, budget)
            snapshot()
    if curve[-1]["reviewed"] != reviewed:
        snapshot()
    spot_errors = int(is_error[spot_mask & ~reviewed_mask].sum())
    final = estimate()
    true_left = int(is_error.sum()) - found - spot_errors
    inside = None if final.status != "ok" else bool(final.low <= true_left <= final.high)
    return SimulationResult(
        strategy=strategy, budget=int(budget), refit_every=int(refit_every), errors_total=int(is_error.sum()),
        errors_found=int(found), reviewed=int(reviewed), spot_check_reviewed=int((spot_mask & ~reviewed_mask).sum()),
        spot_check_errors=spot_errors, true_left=true_left, estimate_left=final.errors_left, estimate_low=final.low,
        estimate_high=final.high, estimate_status=final.status, estimate_reason=final.reason, inside_interval=inside,
        refits=refits, seconds=round(time.perf_counter() - t0, 2), curve=curve)
