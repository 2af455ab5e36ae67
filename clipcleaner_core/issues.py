"""Issue types beyond wrong labels, computed after the label detectors on the same scan: out-of-distribution
(:mod:`ood`), duplicates (:mod:`duplicates`), unusable images (:mod:`quality`) and data-health warnings
(:mod:`health`). Each issue type is an entry of :data:`registry.ISSUES`; its columns join ``scores.parquet``:

====================  ==========================================================================================
``ood_score``         combined modified z-score (higher = less like any class); ``ood_flag`` above 3.5
``dup_group``         duplicate group id (−1: none); ``dup_kind`` exact / near; ``dup_score`` highest similarity to
                      another member; ``dup_flag`` in a group; ``dup_conflict`` the group's labels disagree;
                      ``dup_leak`` the group spans several values of the table's ``split`` column
``quality_issues``    unusable-image kinds (dark, light, blurry, low_information, odd_size, odd_aspect),
                      ``;``-separated; ``quality_flag`` any; ``quality_score`` how far past a threshold
``split``             the table's split column, when it has one
====================  ==========================================================================================

A sample flagged as "none of the classes" joins the default review queue (``flagged``).
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import duplicates, health, ood, quality, registry
from .probs import Probs

SPLIT_NAMES = ("split", "subset", "partition", "fold")
"""Column names (case-insensitive) read as the split of a table dataset (train / val / test …)."""


@dataclass
class IssueResult:
    """Columns aligned with the scores rows, facts for ``Settings.detection.extra["issues"]`` and warnings."""

    columns: pd.DataFrame
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def detect_issues(table: pd.DataFrame, features: np.ndarray, probs: Mapping[str, np.ndarray | Probs],
                  neighbors: np.ndarray, neighbor_sims: np.ndarray, classes: Sequence[str], label_flag: np.ndarray, *,
                  text_features: np.ndarray | None = None, image_stats: pd.DataFrame | None = None,
                  descriptors: np.ndarray | None = None, splits: Sequence | None = None,
                  probe_out_of_fold: bool = True, seed: int = 0) -> IssueResult:
    """All issue types for the N scored rows of ``table`` (needs ``label_idx``, ``label``).

    ``features`` (N, D) unit-norm embeddings; ``probs``: the detectors' sources (``probe`` out-of-fold; (N, K)
    arrays or :class:`probs.Probs`); the
    embeddings' k-NN (``neighbors`` / ``neighbor_sims``, (N, k)); ``label_flag`` (N,): the default detector's
    flags; ``text_features`` (M, D) CLIP prompts or None; ``image_stats`` (:func:`quality.stats_table`, rows
    aligned) and ``descriptors`` (N, DESC_DIM) from the decode, or None (a workspace scanned before they existed);
    ``splits`` (N,) or None.
    """
    n = len(table)
    y = table["label_idx"].to_numpy(dtype=np.int64)
    cols: dict[str, object] = {}
    info: dict = {}
    text_sim = ood.max_text_similarity(features, text_features) if text_features is not None else None
    o = ood.ood_scores(probs["probe"], probs["knn"], text_sim)
    cols["ood_score"] = o["score"]
    cols["ood_flag"] = o["flag"]
    info["ood"] = {"flagged": int(o["flag"].sum()), "z": ood.OOD_Z,
                   "signals": ["flat probe"] + (["text similarity"] if text_sim is not None else [])}

    have_stats = image_stats is not None and len(image_stats) == n
    spaces = {}
    if descriptors is not None and len(descriptors) == n:
        spaces["pixels thumbnail"] = np.asarray(descriptors, dtype=np.float32)
    d = duplicates.find_duplicates(table["label"].to_numpy(dtype=object),
                                   hashes=image_stats["content_hash"].to_numpy() if have_stats else None,
                                   spaces=spaces, neighbors={"embedding": (neighbors, neighbor_sims)},
                                   splits=splits, seed=seed)
    cols.update(dup_group=d.group, dup_kind=d.kind, dup_score=d.score, dup_flag=d.group >= 0,
                dup_conflict=d.conflict, dup_leak=d.leak)
    info["duplicates"] = {**d.info, "content_hash": have_stats, "split_column": splits is not None}

    if have_stats:
        q_issues, q_flag, q_score = quality.quality_issues(image_stats)
        kinds = pd.Series([k for s in q_issues for k in s.split(";") if k]).value_counts()
        info["quality"] = {"flagged": int(q_flag.sum()), "kinds": {k: int(kinds.get(k, 0))
                                                                    for k in quality.QUALITY_KINDS}}
    else:
        q_issues, q_flag, q_score = [""] * n, np.zeros(n, dtype=bool), np.zeros(n)
        info["quality"] = {"flagged": 0, "unavailable": "no image statistics in this scan (re-scan to compute them)"}
    cols.update(quality_issues=q_issues, quality_flag=q_flag, quality_score=q_score)
    if splits is not None:
        cols["split"] = pd.Series(np.asarray(splits, dtype=object)).fillna("").astype(str).to_numpy()

    warnings, facts = health.check(y, probs.get("probe"), label_flag, list(classes), probe_out_of_fold)
    info["health"] = {**facts, "warnings": len(warnings)}
    info["counts"] = {e.key: int(np.asarray(cols[e.flag_column], dtype=bool).sum()) for e in registry.ISSUES}
    return IssueResult(columns=pd.DataFrame(cols, index=table.index), info=info, warnings=warnings)


def issue_codes(scores: pd.DataFrame, method: str) -> list[str]:
    """The export's ``issues`` cell per row: ``label`` when the default detector (``method``) flags the label,
    then the key of each issue type of :data:`registry.ISSUES` that flags the row, ``;``-separated."""
    n = len(scores)
    parts = []
    lab = registry.detector(method).flag_column
    if lab in scores:
        parts.append(np.where(scores[lab].fillna(False).to_numpy(dtype=bool), "label", ""))
    for e in registry.ISSUES:
        if e.flag_column in scores:
            parts.append(np.where(scores[e.flag_column].fillna(False).to_numpy(dtype=bool), e.key, ""))
    if not parts:
        return [""] * n
    m = np.stack(parts, axis=1)
    return [registry.join_reasons([c for c in r if c]) for r in m]


def counts(scores: pd.DataFrame) -> dict[str, int]:
    """Samples flagged by each issue type (registry key → count), 0 for a type the table does not have; also
    ``dup_groups``, the number of duplicate groups."""
    out = {e.key: int(scores[e.flag_column].fillna(False).astype(bool).sum()) if e.flag_column in scores else 0
           for e in registry.ISSUES}
    out["dup_groups"] = int(scores["dup_group"].max() + 1) if "dup_group" in scores and len(scores) and \
        (scores["dup_group"] >= 0).any() else 0
    return out


def summary_lines(scores: pd.DataFrame) -> list[str]:
    """Short lines for the CLI (one per issue type with hits)."""
    c = counts(scores)
    lines = []
    if c["ood"]:
        lines.append(f"{c['ood']} sample(s) look like none of the classes (ood_flag); they are in the review queue")
    if c["duplicate"]:
        extra = [f"{c['dup_conflict']} with conflicting labels" if c["dup_conflict"] else "",
                 f"{c['leakage']} across splits (leakage)" if c["leakage"] else ""]
        tail = ", ".join(e for e in extra if e)
        lines.append(f"{c['duplicate']} sample(s) in {c['dup_groups']} duplicate group(s)" + (f": {tail}" if tail
                                                                                              else ""))
    if c["quality"]:
        kinds = scores.loc[scores["quality_flag"].astype(bool), "quality_issues"].str.split(";").explode()
        vc = kinds[kinds != ""].value_counts()
        lines.append(f"{c['quality']} unusable-looking image(s): " + ", ".join(f"{v} {k}" for k, v in vc.items()))
    return lines


# --- optional columns of a table (split, truth issue marks) ---------------------------------------------------------
def read_columns(table_path: str | os.PathLike, wanted: Mapping[str, Sequence[str]],
                 base: str | os.PathLike | None = None) -> pd.DataFrame:
    """Optional columns of a ``path,…`` table (CSV/TSV/Parquet, the dialects :func:`dataset.read_table` reads):
    ``wanted`` maps an output name to accepted header names (case-insensitive). Returns ``abs_path`` (the path
    column resolved against ``base``, default the table's folder, normalised like the dataset loader) plus each
    output name found (str cells); an empty frame when the table has none of them or cannot be read."""
    from .dataset import _find_columns, _pick_delimiter, _unescape_formula, read_table_text

    p = Path(table_path)
    base_lex = os.path.normpath(os.path.abspath(base if base is not None else p.parent))
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
            header = [str(c) for c in df.columns]
            rows = df.astype(object).where(df.notna(), "").astype(str).to_numpy().tolist()
        else:
            text = read_table_text(p)
            reader = csv.reader(io.StringIO(text, newline=""), delimiter=_pick_delimiter(text),
                                skipinitialspace=True, strict=False)
            recs = [r for r in reader if r and any(c.strip() for c in r)]
            header, rows = (recs[0], recs[1:]) if recs else ([], [])
    except Exception:  # noqa: BLE001 - the optional columns are optional: an unreadable table has none
        return pd.DataFrame(columns=["abs_path"])
    pcol, _ = _find_columns(header)
    lower = {str(h).strip().lower(): i for i, h in enumerate(header)}
    found = {name: lower[a] for name, aliases in wanted.items() for a in aliases if a in lower}
    if pcol is None or not found:
        return pd.DataFrame(columns=["abs_path"])
    pi = header.index(pcol)

    def cell(r: list, i: int) -> str:
        return _unescape_formula(str(r[i]).strip()) if i < len(r) else ""

    paths = [cell(r, pi) for r in rows]
    out = pd.DataFrame({"abs_path": [os.path.normpath(q if os.path.isabs(q) else os.path.join(base_lex, q))
                                     for q in paths]})
    for name, i in found.items():
        out[name] = [cell(r, i) for r in rows]
    return out.drop_duplicates("abs_path", keep="first").reset_index(drop=True)


def table_splits(source: str | os.PathLike, samples: pd.DataFrame, root: str | os.PathLike | None = None
                 ) -> pd.Series | None:
    """The ``split`` of each row of ``samples`` (aligned, "" where unknown) from a table dataset's split column
    (:data:`SPLIT_NAMES`), or None when the source is not a table or has no such column."""
    p = Path(source)
    if not p.is_file():
        return None
    t = read_columns(p, {"split": SPLIT_NAMES}, base=root)
    if "split" not in t:
        return None
    lookup = dict(zip(t["abs_path"], t["split"]))
    return samples["abs_path"].map(lambda a: lookup.get(os.path.normpath(str(a)), "")).fillna("").astype(str)
