"""What cleaning bought: the linear probe trained on the noisy labels vs on the cleaned labels.

Both probes are the scan's (:func:`clipcleaner_core.active.fit_probe`: class-balanced multinomial logistic
regression on the image embeddings). The cleaned labels are the export's (:func:`clipcleaner_core.export.cleaned_table`:
current decisions, excluded samples dropped, undecided samples by the chosen policy).

- **Against the reviewers** (always): a seeded ``test_share`` of the trusted samples (accepted or relabelled to a
  known class) is held out of both training sets; accuracy on them, against the reviewers' labels, with Wilson 95%
  intervals and a paired bootstrap interval of the difference. The reviewed samples are the ones reviewers chose
  (mostly flagged), not a random sample, so this accuracy is on them, not on the whole dataset (said in ``notes``).
- **Against the truth** (when a truth file is given, e.g. the demo's): a seeded ``truth_share`` of the samples
  with a known truth is held out; accuracy against the truth.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .active import _decisions_and_version, _single_thread_if_small, fit_probe, scan_settings, trust_from_decisions
from .workspace import Workspace

MIN_TEST = 20
BOOTSTRAP = 2000


def wilson(correct: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion (scipy's ``binomtest``); (nan, nan) for n = 0."""
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass
class Comparison:
    """Accuracy of the two probes on one held-out set (``n_test`` samples)."""

    n_test: int
    n_train_noisy: int
    n_train_cleaned: int
    noisy_accuracy: float
    noisy_low: float
    noisy_high: float
    cleaned_accuracy: float
    cleaned_low: float
    cleaned_high: float
    difference: float
    difference_low: float
    difference_high: float


@dataclass
class DownstreamResult:
    """``trusted``: the comparison on held-out reviewed samples (None with ``status`` "insufficient");
    ``truth``: against the truth file (None without one)."""

    status: str
    reason: str
    undecided: str
    trusted: Comparison | None
    truth: Comparison | None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _compare(x: np.ndarray, n_classes: int, C: float, train_noisy: np.ndarray, y_noisy: np.ndarray,
             train_clean: np.ndarray, y_clean: np.ndarray, test: np.ndarray, y_test: np.ndarray,
             seed: int) -> Comparison:
    """Fit both probes (rows ``train_*`` with labels ``y_*``), score them on rows ``test`` against ``y_test``."""
    hits = []
    with _single_thread_if_small(float(len(x)) * x.shape[1] * n_classes):
        for rows, labels in ((train_noisy, y_noisy), (train_clean, y_clean)):
            predict, _ = fit_probe(x[rows], labels, n_classes, C=C)
            hits.append(predict(x[test]).argmax(axis=1) == y_test)
    a, b = hits
    boot = np.random.default_rng(seed).integers(0, len(test), size=(BOOTSTRAP, len(test)))
    diff = b[boot].mean(axis=1) - a[boot].mean(axis=1)
    (nl, nh), (cl, ch) = wilson(int(a.sum()), len(a)), wilson(int(b.sum()), len(b))
    dl, dh = np.percentile(diff, [2.5, 97.5])
    return Comparison(n_test=int(len(test)), n_train_noisy=int(len(train_noisy)), n_train_cleaned=int(len(train_clean)),
                      noisy_accuracy=float(a.mean()), noisy_low=nl, noisy_high=nh, cleaned_accuracy=float(b.mean()),
                      cleaned_low=cl, cleaned_high=ch, difference=float(b.mean() - a.mean()),
                      difference_low=float(dl), difference_high=float(dh))


def _split(rows: np.ndarray, sample_ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A seeded ``share`` of ``rows`` (drawn from the rows ordered by sample_id: independent of row order)."""
    rows = rows[np.argsort(sample_ids[rows].astype(str), kind="stable")]
    take = int(round(share * len(rows)))
    return np.sort(np.random.default_rng(seed).permutation(rows)[:take])


def downstream_check(ws: Workspace | str | Path, *, db_url: str | None = None, decisions: pd.DataFrame | None = None,
                     truth_file: str | Path | None = None, undecided: str = "keep", test_share: float = 0.5,
                     truth_share: float = 0.2, seed: int = 0, min_test: int = MIN_TEST) -> DownstreamResult:
    """Train the probe on noisy and on cleaned labels and compare them (module doc). Four probe fits: ~2 s on the
    demo, ~4 x the scan's per-fold probe time at scale."""
    from .export import cleaned_table

    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    ws.require()
    if not 0 < test_share < 1 or not 0 < truth_share < 1:
        raise ValueError("test_share and truth_share must be between 0 and 1")
    st = scan_settings(ws)
    scores = ws.scores()
    if decisions is None:
        decisions, _ = _decisions_and_version(ws, db_url)
    k = len(st.classes)
    lookup = {c: i for i, c in enumerate(st.classes)}
    ids = scores["sample_id"].astype(str).to_numpy(dtype=object)
    y = scores["label_idx"].to_numpy(dtype=np.int64)
    x = np.asarray(ws.embeddings(), dtype=np.float32)
    trust = trust_from_decisions(ids, y, st.classes, decisions)
    table = cleaned_table(scores, decisions, excluded="drop", undecided=undecided)
    clean_label = pd.Series(table["label"].map(lookup).to_numpy(), index=table["sample_id"].to_numpy())
    clean_y = pd.Series(ids).map(clean_label).to_numpy(dtype=np.float64)  # NaN: dropped or an unknown label
    in_clean = ~np.isnan(clean_y)
    clean_y = np.where(in_clean, clean_y, -1).astype(np.int64)
    notes = [f"undecided samples: {undecided} (export policy); excluded samples dropped"]
    if trust.unknown_relabels:
        notes.append(f"{trust.unknown_relabels} relabel(s) to a name outside the classes are left out")

    def compare(test: np.ndarray, y_test: np.ndarray) -> Comparison:
        held = np.zeros(len(y), dtype=bool)
        held[test] = True
        noisy_rows = np.flatnonzero(~held)
        clean_rows = np.flatnonzero(~held & in_clean)
        return _compare(x, k, st.C, noisy_rows, y[noisy_rows], clean_rows, clean_y[clean_rows], test, y_test, seed)

    trusted_rows = np.flatnonzero(trust.label >= 0)
    test = _split(trusted_rows, ids, test_share, seed)
    status, reason, trusted = "ok", "", None
    if len(test) < min_test:
        status = "insufficient"
        need = int(np.ceil(min_test / test_share))
        reason = (f"{len(trusted_rows)} reviewed sample(s) with a trusted label; the check holds out "
                  f"{100 * test_share:.0f}% of them and needs at least {min_test} held out: review at least {need}")
    else:
        trusted = compare(test, trust.label[test])
        notes.append("the held-out reviewed samples are the ones reviewers chose (mostly flagged), not a random "
                     "sample: the accuracy is on them, not on the whole dataset")
    truth = None
    if truth_file is not None:
        from .evaluate import truth_labels

        t = truth_labels(scores, truth_file).map(lookup)
        known = np.flatnonzero(t.notna().to_numpy())
        if len(known) == 0:
            raise ValueError(f"{truth_file}: no scanned sample is in this truth file (matched by path)")
        tt = _split(known, ids, truth_share, seed + 1)
        truth = compare(tt, t.to_numpy()[tt].astype(np.int64))
    return DownstreamResult(status=status, reason=reason, undecided=undecided, trusted=trusted, truth=truth,
                            notes=notes)


def format_downstream(r: DownstreamResult) -> str:
    """Plain-text table of a :class:`DownstreamResult` (the CLI's output)."""
    lines = []

    def block(title: str, c: Comparison) -> None:
        lines.append(f"{title} ({c.n_test} held-out samples; trained on {c.n_train_noisy} noisy / "
                     f"{c.n_train_cleaned} cleaned labels)")
        lines.append(f"  noisy labels    {100 * c.noisy_accuracy:6.1f}%  (95%: {100 * c.noisy_low:.1f}–"
                     f"{100 * c.noisy_high:.1f})")
        lines.append(f"  cleaned labels  {100 * c.cleaned_accuracy:6.1f}%  (95%: {100 * c.cleaned_low:.1f}–"
                     f"{100 * c.cleaned_high:.1f})")
        lines.append(f"  difference      {100 * c.difference:+6.1f} points (95%: {100 * c.difference_low:+.1f} to "
                     f"{100 * c.difference_high:+.1f})")

    if r.trusted is not None:
        block("accuracy on held-out reviewed samples (reviewers' labels)", r.trusted)
    else:
        lines.append(f"against the reviewers: not enough reviewed yet — {r.reason}")
    if r.truth is not None:
        block("accuracy against the truth file", r.truth)
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)
