"""Evaluation against known clean labels: precision / recall / F1 of each detector's flags, AUROC of its score.

A sample is truly mislabelled when its given label differs from the truth file's label. Only scored samples
that appear in the truth file count.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import registry
from .dataset import read_table
from .workspace import Workspace


def truth_labels(scores: pd.DataFrame, truth_file: str | Path) -> pd.Series:
    """Truth label per row of ``scores`` (NaN where the truth file has no entry), matched by absolute path."""
    t = read_table(truth_file)
    base = Path(truth_file).absolute().parent
    keys = [os.path.normpath(p if os.path.isabs(p) else base / p) for p in t["path"]]
    lookup = dict(zip(keys, t["label"]))
    return scores["abs_path"].map(lambda p: lookup.get(os.path.normpath(p)))


def detector_metrics(is_noisy: np.ndarray, flag: np.ndarray, score: np.ndarray) -> dict:
    """Precision, recall, F1 of ``flag`` and AUROC / average precision of ``score`` against ``is_noisy``."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

    is_noisy = np.asarray(is_noisy, dtype=bool)
    flag = np.asarray(flag, dtype=bool)
    p, r, f, _ = precision_recall_fscore_support(is_noisy, flag, average="binary", zero_division=0)
    both = 0 < is_noisy.sum() < len(is_noisy)
    return {
        "precision": float(p), "recall": float(r), "f1": float(f),
        "auroc": float(roc_auc_score(is_noisy, score)) if both else float("nan"),
        "avg_precision": float(average_precision_score(is_noisy, score)) if both else float("nan"),
        "flagged": int(flag.sum()),
    }


def evaluate_scores(scores: pd.DataFrame, truth: pd.Series, default_method: str | None = None) -> dict:
    """Metrics per detector; ``truth`` aligned with ``scores`` rows (NaN rows ignored)."""
    known = truth.notna().to_numpy()
    s = scores[known]
    noisy = (s["label"].astype(str).to_numpy() != truth[known].astype(str).to_numpy())
    rows = {}
    for d in registry.DETECTORS:
        if d.flag_column in s:
            title = d.title + (" (default)" if d.key == default_method else "")
            rows[d.key] = {"detector": title, **detector_metrics(noisy, s[d.flag_column], s[d.score_column])}
    return {"samples": int(known.sum()), "mislabelled": int(noisy.sum()),
            "noise_rate": float(noisy.mean()) if len(noisy) else 0.0,
            "unmatched": int((~known).sum()), "default_method": default_method, "detectors": rows}


def evaluate_workspace(workspace: str | Path | Workspace, truth_file: str | Path) -> dict:
    """Load a scanned workspace and evaluate every detector against ``truth_file`` (``path,label``)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    scores = ws.scores()
    result = evaluate_scores(scores, truth_labels(scores, truth_file), ws.settings().method)
    result["truth_file"] = str(truth_file)
    return result


def pr_curve(is_noisy: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Precision–recall curve (columns precision, recall, threshold) of a score."""
    from sklearn.metrics import precision_recall_curve

    p, r, t = precision_recall_curve(np.asarray(is_noisy, dtype=bool), np.asarray(score))
    return pd.DataFrame({"precision": p[:-1], "recall": r[:-1], "threshold": t})


def format_table(result: dict) -> str:
    """The metrics as a fixed-width text table."""
    lines = [f"{result['samples']} samples with known truth, {result['mislabelled']} mislabelled "
             f"({100 * result['noise_rate']:.1f}%)",
             f"{'detector':<38}{'flagged':>8}{'precision':>10}{'recall':>8}{'F1':>7}{'AUROC':>8}"]
    for key, m in result["detectors"].items():
        lines.append(f"{m['detector']:<38}{m['flagged']:>8}{m['precision']:>10.3f}{m['recall']:>8.3f}"
                     f"{m['f1']:>7.3f}{m['auroc']:>8.3f}")
    return "\n".join(lines)
