"""Out-of-distribution ("none of these classes") scores and flags.

An image that belongs to none of the classes, given one of them anyway, looks different from a mislabelled image:
a mislabelled image sits among the images of its true class, so the classifiers are confident about *another*
class; a foreign image sits where the given labels are arbitrary, so the out-of-fold probe spreads its probability
over all classes, and a CLIP image is far from every class prompt. Signals, each a modified z-score relative to the
dataset itself (median and MAD, Iglewicz & Hoaglin, so a minority of foreign images does not move the reference):

- **flat probe** (always): normalised entropy H ∈ [0, 1] of the out-of-fold probe probabilities, as
  −log(1 − H) (a flat distribution is far out in this scale);
- **far from every class prompt** (CLIP with a text tower): −max cosine(image, any prompt).

``ood_score`` combines the available z-scores with Stouffer's rule (sum / √m); a sample is flagged when it is
above :data:`OOD_Z` (3.5, the usual cut-off for modified z-scores) and, in absolute terms, either the given labels
of its nearest neighbours are spread too (their normalised entropy ≥ :data:`MIN_NEIGHBOUR_SPREAD`: a mislabelled
or merely ambiguous image has neighbours that agree on a class, a foreign one has neighbours with arbitrary labels)
or the text signal alone is an outlier. Without that floor a clean, well separated dataset (tiny MAD) turns its
ambiguous images into "none of the classes" (measured: 98 of 1,847 clean digits; 7 with it).

Distance to the nearest neighbours is not used for the flag: foreign images that resemble each other (a folder of
screenshots, textures) are each other's
neighbours (measured AUROC 0.17–0.20 on the open-set digits test), and its heavy tail on clean data flags ~5 % of the
digits demo.

A reviewer's "none of the classes" decision is an ``exclude`` with the note :data:`NONE_OF_THE_CLASSES`
(:func:`none_of_the_classes_items`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .probs import Probs
from .quality import robust_z

OOD_Z = 3.5
MIN_NEIGHBOUR_SPREAD = 0.7
NONE_OF_THE_CLASSES = "none of the classes"
"""The note of an ``exclude`` decision that says the image shows none of the classes."""


def normalised_entropy(probs: np.ndarray | Probs) -> np.ndarray:
    """Entropy of each row of ``probs`` (N, K), or of a :class:`probs.Probs` source (see
    :meth:`probs.Probs.entropy`), divided by log K: 0 = one class, 1 = uniform. Zeros when K < 2."""
    if not isinstance(probs, Probs):
        p = np.asarray(probs)
        probs = Probs(p.shape[1] if p.ndim == 2 else 0, dense=p if p.ndim == 2 else np.zeros((len(p), 0)))
    k = probs.n_classes
    return probs.entropy() / np.log(k) if k >= 2 else np.zeros(probs.n)


def max_text_similarity(features: np.ndarray, text_features: np.ndarray, block: int = 8192) -> np.ndarray:
    """(N,) the largest cosine between each image (N, D unit-norm) and any prompt (M, D unit-norm)."""
    x = np.asarray(features, dtype=np.float32)
    t = np.asarray(text_features, dtype=np.float32).T
    return np.concatenate([(x[s:s + block] @ t).max(axis=1) for s in range(0, len(x), block)]) if len(x) else \
        np.zeros(0, dtype=np.float32)


def ood_scores(probe_probs: np.ndarray | Probs, knn_probs: np.ndarray | Probs, text_sim: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
    """OOD score and flag of each sample.

    ``probe_probs`` (N, K): out-of-fold probe probabilities; ``knn_probs`` (N, K): the neighbours' label
    distribution; ``text_sim`` (N,): :func:`max_text_similarity` when the encoder has a text tower. Returns
    ``score`` (N,) (combined modified z, higher = less like any class), ``flag`` (N,) bool (see the module doc),
    and the parts ``z_flat``, ``z_text`` (NaN without text),
    ``flatness`` (the probe's normalised entropy), ``neighbour_spread`` (the neighbours').
    """
    h = normalised_entropy(probe_probs)
    z_flat = robust_z(-np.log(np.clip(1.0 - h, 1e-6, 1.0)), constant="zero")
    parts = [z_flat]
    z_text = np.full(len(h), np.nan)
    if text_sim is not None and len(text_sim) == len(h):
        z_text = robust_z(-np.asarray(text_sim, dtype=np.float64), constant="zero")
        parts.append(z_text)
    score = np.sum(parts, axis=0) / np.sqrt(len(parts))
    spread = normalised_entropy(knn_probs)
    flag = (score > OOD_Z) & ((spread >= MIN_NEIGHBOUR_SPREAD) | (np.nan_to_num(z_text, nan=-np.inf) > OOD_Z))
    return {"score": score, "flag": flag, "z_flat": z_flat, "z_text": z_text, "flatness": h,
            "neighbour_spread": spread}


def none_of_the_classes_items(sample_ids: Sequence[str], given_labels: Sequence[str] | None = None) -> list[dict]:
    """Review items (for ``ReviewStore.record_many``) that record "none of the classes" for ``sample_ids``: an
    ``exclude`` with the note :data:`NONE_OF_THE_CLASSES`."""
    given = list(given_labels) if given_labels is not None else [None] * len(sample_ids)
    return [{"sample_id": s, "action": "exclude", "label": None, "given_label": g, "note": NONE_OF_THE_CLASSES}
            for s, g in zip(sample_ids, given)]
