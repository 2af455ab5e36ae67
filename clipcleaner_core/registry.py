"""One record per detector, criterion, probability source and issue type: the single place that names them.

The core (detectors, evaluation, export), the CLI and every page of the app read keys, score-table column names,
titles, colours and descriptions from here. Per-sample reasons are stored as codes (``scores.parquet`` column
``reasons``: the codes of every detector / criterion / issue that flags the sample, ``;``-separated, in registry
order) and rendered as words with :func:`reason_titles`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

REASON_SEP = ";"


@dataclass(frozen=True)
class Entry:
    """A detector / criterion / source / issue type.

    ``key``: stable code (stored in ``reasons``, ``workspace.json`` and the CLI); ``prefix``: column prefix in
    ``scores.parquet`` (``{prefix}_flag`` bool, ``{prefix}_score`` float, higher = more suspicious; criteria use
    ``{prefix}_kept`` / ``{prefix}_score``); ``title``: a full name; ``short``: a badge label; ``colour``: CSS colour
    used by every chart; ``description``: one sentence for tooltips and docs.
    """

    key: str
    kind: str  # "detector" | "criterion" | "source" | "issue"
    prefix: str
    title: str
    short: str
    colour: str
    description: str
    flag: str = ""
    """Name of the flag column when it is not ``{prefix}_flag`` (an issue type that shares another's score)."""

    @property
    def flag_column(self) -> str:
        return self.flag or f"{self.prefix}_flag"

    @property
    def score_column(self) -> str:
        return f"{self.prefix}_score"


DETECTORS: tuple[Entry, ...] = (
    Entry("ensemble", "detector", "ens", "ensemble vote", "ensemble", "#4f46e5",
          "Mean of the available probability sources; flagged when another class beats the given label by more "
          "than the margin."),
    Entry("clipcleaner", "detector", "cc", "CLIPCleaner selection (METHOD.md)", "CLIPCleaner", "#10b981",
          "The paper's selection: zero-shot and probe loss (per-class GMM) and consistency criteria, all four "
          "must keep the label."),
    Entry("cleanlab", "detector", "cleanlab", "cleanlab (confident learning)", "cleanlab", "#f59e0b",
          "cleanlab.filter.find_label_issues on out-of-fold probe probabilities."),
    Entry("knn", "detector", "knn", "neighbours disagree (k-NN)", "k-NN", "#ef4444",
          "The majority label of the nearest neighbours (cosine) is not the given label."),
)
CRITERIA: tuple[Entry, ...] = (
    Entry("zs_loss", "criterion", "zs_loss", "zero-shot loss (GMM)", "zero-shot loss", "#0ea5e9",
          "Zero-shot log-probability of the given label falls in the low-mean GMM component of its class."),
    Entry("zs_cons", "criterion", "zs_cons", "zero-shot consistency", "zero-shot cons.", "#38bdf8",
          "Zero-shot probability of the given label is below theta_cons times the top class's."),
    Entry("lr_loss", "criterion", "lr_loss", "probe loss (GMM)", "probe loss", "#8b5cf6",
          "Linear-probe log-probability of the given label falls in the low-mean GMM component of its class."),
    Entry("lr_cons", "criterion", "lr_cons", "probe consistency", "probe cons.", "#a78bfa",
          "Linear-probe probability of the given label is below theta_cons times the top class's."),
)
SOURCES: tuple[Entry, ...] = (
    Entry("zs", "source", "zs", "zero-shot CLIP", "zero-shot", "#0ea5e9",
          "CLIP image-text similarity over the class prompts (needs a text tower)."),
    Entry("probe", "source", "probe", "linear probe", "probe", "#8b5cf6",
          "Multinomial logistic regression on the embeddings (out-of-fold by default)."),
    Entry("knn", "source", "knn", "nearest neighbours", "k-NN", "#ef4444",
          "Label distribution of the nearest neighbours."),
    Entry("ens", "source", "ens", "ensemble", "ensemble", "#4f46e5", "Mean of the available sources."),
)
ISSUES: tuple[Entry, ...] = (
    Entry("ood", "issue", "ood", "none of the classes (out of distribution)", "none of the classes", "#0f766e",
          "The image fits none of the classes: the out-of-fold probe spreads its probability over all classes and, "
          "with CLIP, the image is far from every class prompt (modified z-score above 3.5)."),
    Entry("duplicate", "issue", "dup", "duplicate (exact or near)", "duplicate", "#db2777",
          "The same pixels as another image (content hash), or closer to it than the dataset's calibrated "
          "near-duplicate threshold."),
    Entry("dup_conflict", "issue", "dup", "duplicates with conflicting labels", "label conflict", "#be123c",
          "A duplicate group whose images carry different given labels.", flag="dup_conflict"),
    Entry("leakage", "issue", "dup", "duplicate across splits (leakage)", "split leakage", "#7c3aed",
          "A duplicate group that spans more than one value of the table's split column (train/val/test).",
          flag="dup_leak"),
    Entry("quality", "issue", "quality", "unusable image (dark, light, blurry, low information, odd size/aspect)",
          "image quality", "#64748b",
          "Very dark or bright, blurry or nearly empty compared with the rest of the dataset, or of an odd size or "
          "aspect ratio."),
)
"""Issue types beyond wrong labels (:mod:`clipcleaner_core.issues`). ``kind == "issue"``; several may share one
score column (``dup_score``) and name their own flag column."""


def issue(key: str) -> Entry:
    """The issue type ``key`` (one of :data:`ISSUES`)."""
    for e in ISSUES:
        if e.key == key:
            return e
    raise KeyError(f"unknown issue type {key!r}; known: {', '.join(e.key for e in ISSUES)}")


def _index(entries: Iterable[Entry]) -> dict[str, Entry]:
    return {e.key: e for e in entries}


_DETECTOR = _index(DETECTORS)
_CRITERION = _index(CRITERIA)
_SOURCE = _index(SOURCES)


def detector(key: str) -> Entry:
    """The detector ``key`` (one of :data:`config.METHODS`); KeyError names the known ones."""
    try:
        return _DETECTOR[key]
    except KeyError:
        raise KeyError(f"unknown detector {key!r}; known: {', '.join(_DETECTOR)}") from None


def criterion(key: str) -> Entry:
    return _CRITERION[key]


def source(key: str) -> Entry:
    return _SOURCE[key]


def reason_entries() -> tuple[Entry, ...]:
    """Everything that can appear in ``reasons``, in display order (criteria, detectors, issue types)."""
    return CRITERIA + DETECTORS + ISSUES


def entry(key: str) -> Entry | None:
    """The entry of a reason code (criterion, detector or issue type), or None for an unknown code."""
    for e in reason_entries():
        if e.key == key:
            return e
    return None


def join_reasons(codes: Sequence[str]) -> str:
    return REASON_SEP.join(codes)


def split_reasons(reasons: object) -> list[str]:
    """The codes of one ``reasons`` cell (empty for "", None or NaN)."""
    if not isinstance(reasons, str) or not reasons:
        return []
    return [c for c in reasons.split(REASON_SEP) if c]


def reason_titles(reasons: object, short: bool = False) -> list[str]:
    """The words for one ``reasons`` cell: each code's title (or short title); unknown codes as themselves."""
    out = []
    for code in split_reasons(reasons):
        e = entry(code)
        out.append(code if e is None else (e.short if short else e.title))
    return out


def describe_reasons(reasons: object) -> str:
    """One line of words for one ``reasons`` cell ("" when nothing flags the sample)."""
    return "; ".join(reason_titles(reasons))
