"""Data-health warnings: when the scan's flags should not be trusted, and why.

- **features cannot separate the classes**: the out-of-fold probe's accuracy on the given labels is not clearly
  above the majority-class rate (by :data:`PROBE_MARGIN` or three standard errors, whichever is larger). Then every
  flag is close to a guess; the remedy is a stronger encoder (CLIP weights instead of ``pixels``, a larger CLIP
  model), or class names / descriptions that tell the classes apart.
- **a class swamped by flags**: more than half of a class's samples (at least :data:`MIN_CLASS` of them) are
  flagged — the class may hold mostly wrong labels, or its images differ from what its name says.
- **strong class imbalance**: the largest class holds at least :data:`IMBALANCE_RATIO` times the samples of the
  smallest non-empty one.

Each warning is one plain sentence (class names quoted as data, never markup); :func:`check` also returns the
numbers behind them for ``Settings.detection.extra``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .probs import Probs

PROBE_MARGIN = 0.05
MIN_CLASS = 10
SWAMPED_SHARE = 0.5
IMBALANCE_RATIO = 10.0
PREFIX = "data health: "


def check(y: np.ndarray, probe_probs: np.ndarray | Probs | None, label_flags: np.ndarray, classes: Sequence[str],
          probe_out_of_fold: bool = True) -> tuple[list[str], dict]:
    """(warnings, facts) for given labels ``y`` (N,), out-of-fold probe probabilities (N, K), the default
    detector's label flags (N,) and the class names. With an in-sample probe (``probe_out_of_fold=False``) the
    accuracy check is skipped (in-sample accuracy says nothing about separability)."""
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    warnings: list[str] = []
    facts: dict = {}
    if n == 0:
        return warnings, facts
    counts = np.bincount(y, minlength=len(classes))
    majority = float(counts.max() / n)
    facts["majority_rate"] = majority
    if probe_probs is not None and probe_out_of_fold and len(classes) >= 2:
        top = probe_probs.argmax() if isinstance(probe_probs, Probs) else np.asarray(probe_probs).argmax(axis=1)
        acc = float((top == y).mean())
        need = majority + max(PROBE_MARGIN, 3.0 * np.sqrt(majority * (1.0 - majority) / n))
        facts.update(probe_accuracy=acc, probe_accuracy_needed=float(need))
        if acc < need:
            warnings.append(
                f"{PREFIX}the out-of-fold linear probe predicts the given labels no better than always guessing the "
                f"largest class ({acc:.1%} vs {majority:.1%}): these features cannot tell the classes apart, so the "
                f"flags are not to be trusted. Use a stronger encoder (CLIP weights instead of the pixels encoder, "
                f"or a larger CLIP model), class descriptions that separate the classes, or check that the labels "
                f"mean what the class names say.")
    flags = np.asarray(label_flags, dtype=bool)
    flagged = np.bincount(y[flags], minlength=len(classes))
    swamped = [(classes[c], int(flagged[c]), int(counts[c])) for c in range(len(classes))
               if counts[c] >= MIN_CLASS and flagged[c] > SWAMPED_SHARE * counts[c]]
    facts["swamped_classes"] = [c for c, _, _ in swamped]
    for name, f, c in swamped:
        warnings.append(f"{PREFIX}{f} of the {c} samples labelled {name!r} ({f / c:.0%}) are flagged: this class may "
                        f"be swamped by wrong labels, or its images may not match its name; review a few of them "
                        f"before trusting the suggestions for it.")
    present = counts[counts > 0]
    if len(present) >= 2:
        ratio = float(present.max() / present.min())
        facts["imbalance_ratio"] = ratio
        if ratio >= IMBALANCE_RATIO:
            big, small = classes[int(np.argmax(counts))], classes[int(np.flatnonzero(counts == present.min())[0])]
            warnings.append(f"{PREFIX}strong class imbalance: {big!r} has {int(present.max())} samples, {small!r} only "
                            f"{int(present.min())} ({ratio:.0f}x); the rare classes give the probe few examples, so "
                            f"their flags and suggestions are less reliable.")
    return warnings, facts
