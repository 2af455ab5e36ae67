"""Evaluation against known clean labels: precision / recall / F1 of each detector's flags, AUROC of its score.

A sample is truly mislabelled when its given label differs from the truth file's label. Only scored samples
that appear in the truth file count.

A truth file may also mark the issue types beyond wrong labels, in optional columns:

- ``ood`` (``1`` / ``true`` / ``yes``): the image shows none of the classes. Then ``ood_flag`` / ``ood_score`` are
  evaluated against it, and the label-error metrics count only the other samples (a foreign image has no right
  label to find);
- ``duplicate_of``: the path of the image this one copies (relative to the truth file's folder, like ``path``),
  with an optional ``dup_kind`` (e.g. exact / near) to report each kind apart. A pair is found when both are in
  the same ``dup_group``; a false group member is a grouped sample with no marked pair inside its group.

A truth file is checked when it is given (:func:`read_truth`,
:func:`validate_truth_file`): a bad one is refused with one line that names the file and the problem and never
quotes its content (it may be any file a person typed, e.g. ``/etc/shadow``).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd

from . import registry
from .dataset import BAD_ROW, DatasetError, display_path, read_table
from .workspace import Workspace, WorkspaceError, atomic_write_text

#: a truth file larger than this is refused before it is read
MAX_TRUTH_BYTES = 1 << 30


class TruthFileError(ValueError):
    """The ground-truth file cannot be used; one line naming the file and the problem, never its content."""


_TRUTH_PROBLEMS = {  # DatasetError.kind of read_table -> what to say (without quoting the file)
    "binary": "is not a text table (binary content)",
    "empty": "is empty",
    "columns": "has no path and label columns (expected a header like 'path,label')",
}


def read_truth(truth_file: str | os.PathLike) -> pd.DataFrame:
    """The rows of a ground-truth ``path,label`` table (CSV/TSV/Parquet, see :func:`dataset.read_table`) that have
    a path and a label; raises :class:`TruthFileError` for anything that is not such a table."""
    p = Path(truth_file).expanduser()
    name = display_path(str(p))
    try:
        st = p.stat()
    except FileNotFoundError:
        raise TruthFileError(f"{name}: no such truth file") from None
    except OSError as e:
        raise TruthFileError(f"{name}: cannot access the truth file ({e.strerror or type(e).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise TruthFileError(f"{name}: is a folder, not a path,label table")
    if not stat.S_ISREG(st.st_mode):
        raise TruthFileError(f"{name}: is not a regular file")
    if st.st_size > MAX_TRUTH_BYTES:
        raise TruthFileError(f"{name}: is too large for a truth file ({st.st_size:,} bytes)")
    try:
        with open(p, "rb"):
            pass
    except OSError as e:
        raise TruthFileError(f"{name}: cannot read the truth file ({e.strerror or type(e).__name__})") from None
    try:
        t = read_table(p)
    except DatasetError as e:
        what = _TRUTH_PROBLEMS.get(e.kind, "cannot be read as a path,label table")
        raise TruthFileError(f"{name}: {what}") from None
    except OSError as e:
        raise TruthFileError(f"{name}: cannot read the truth file ({e.strerror or type(e).__name__})") from None
    t = t[(t["path"] != "") & (t["label"] != "") & (t["label"] != BAD_ROW)]
    if not len(t):
        raise TruthFileError(f"{name}: holds no row with both a path and a label")
    return t


def validate_truth_file(truth_file: str | os.PathLike, scores: pd.DataFrame | None = None) -> Path:
    """Check a truth file when a person gives it; returns its absolute path. With ``scores`` (a workspace's scored
    samples) it must also name at least one of them. Raises :class:`TruthFileError`."""
    p = Path(truth_file).expanduser().absolute()
    t = read_truth(p)
    if scores is not None and len(scores):
        if int(_match_truth(scores, t, p).notna().sum()) == 0:
            raise TruthFileError(f"{display_path(str(p))}: none of its {len(t):,} paths is a scored sample of this "
                                 f"workspace (paths are absolute, relative to the truth file's folder, or the "
                                 f"dataset's own sample paths)")
    return p


def _match_truth(scores: pd.DataFrame, t: pd.DataFrame, truth_file: Path) -> pd.Series:
    """Truth label per row of ``scores`` (NaN where none): a truth ``path`` matches a sample when it names the same
    file (absolute, or relative to the truth file's folder) or equals the sample's dataset path (``path`` column:
    relative to the dataset root, or ``shard.tar/key`` / ``shard.parquet#row=N`` for shard samples)."""
    base = Path(truth_file).absolute().parent
    by_file = dict(zip((os.path.normpath(q if os.path.isabs(q) else base / q) for q in t["path"]), t["label"]))
    by_path = dict(zip(t["path"], t["label"]))
    out = scores["abs_path"].map(lambda p: by_file.get(os.path.normpath(p)))
    if "path" not in scores:
        return out
    return out.where(out.notna(), scores["path"].map(by_path))


def truth_labels(scores: pd.DataFrame, truth_file: str | Path) -> pd.Series:
    """Truth label per row of ``scores`` (NaN where the truth file has no entry), see :func:`_match_truth`.
    Raises :class:`TruthFileError` when the file is not a usable truth table (it may have changed since it was
    set)."""
    return _match_truth(scores, read_truth(truth_file), Path(truth_file))


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


TRUE_WORDS = {"1", "true", "yes", "y", "ood"}


def truth_issue_marks(scores: pd.DataFrame, truth_file: str | Path) -> pd.DataFrame:
    """The truth file's issue columns aligned with ``scores`` rows: ``ood`` (bool, NaN where the file does not say),
    ``duplicate_of`` (row position of the original in ``scores``, −1 none), ``dup_kind`` (str)."""
    from .issues import read_columns

    t = read_columns(truth_file, {"ood": ("ood", "out_of_distribution"), "duplicate_of": ("duplicate_of",),
                                  "dup_kind": ("dup_kind",)})
    out = pd.DataFrame(index=scores.index)
    key = scores["abs_path"].map(lambda q: os.path.normpath(str(q)))
    if "ood" in t:
        known = dict(zip(t["abs_path"], t["ood"].str.strip().str.lower().isin(TRUE_WORDS)))
        out["ood"] = key.map(known)
    if "duplicate_of" in t:
        base = Path(truth_file).absolute().parent
        row_of = {p: i for i, p in enumerate(key)}
        orig = {a: os.path.normpath(d if os.path.isabs(d) else base / d)
                for a, d in zip(t["abs_path"], t["duplicate_of"]) if d}
        out["duplicate_of"] = key.map(lambda a: row_of.get(orig.get(a, ""), -1)).astype(np.int64)
        kinds = dict(zip(t["abs_path"], t["dup_kind"])) if "dup_kind" in t else {}
        out["dup_kind"] = key.map(lambda a: kinds.get(a, "") or "copy").where(out["duplicate_of"] >= 0, "")
    return out


def duplicate_metrics(group: np.ndarray, duplicate_of: np.ndarray, kind: np.ndarray) -> dict:
    """Found pairs per kind and false group members (see the module doc); arrays aligned with the scores."""
    g = np.asarray(group, dtype=np.int64)
    dup = np.asarray(duplicate_of, dtype=np.int64)
    rows = np.flatnonzero(dup >= 0)
    found = (g[rows] >= 0) & (g[rows] == g[dup[rows]])
    per_kind = {}
    for k in sorted(set(np.asarray(kind, dtype=object)[rows])):
        m = np.asarray(kind, dtype=object)[rows] == k
        per_kind[str(k)] = {"pairs": int(m.sum()), "grouped": int(found[m].sum()),
                            "recall": float(found[m].mean()) if m.any() else float("nan")}
    real = np.zeros(len(g), dtype=bool)
    real[rows[found]] = True
    real[dup[rows[found]]] = True
    false = (g >= 0) & ~real
    return {"pairs": int(len(rows)), "grouped": int(found.sum()),
            "recall": float(found.mean()) if len(rows) else float("nan"), "by_kind": per_kind,
            "samples_in_groups": int((g >= 0).sum()), "false_members": int(false.sum()),
            "false_share": float(false.mean()) if len(g) else 0.0}


def evaluate_workspace(workspace: str | Path | Workspace, truth_file: str | Path) -> dict:
    """Load a scanned workspace and evaluate every detector against ``truth_file`` (``path,label``, and the
    issue columns of the module doc when it has them)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    scores = ws.scores()
    if not len(scores):
        raise ValueError(f"{ws.path}: no sample was scored in this workspace (every file was unusable); "
                         f"nothing to evaluate")
    truth_file = validate_truth_file(truth_file, scores)
    truth = truth_labels(scores, truth_file)
    marks = truth_issue_marks(scores, truth_file)
    is_ood = marks["ood"] if "ood" in marks else None
    if is_ood is not None and "ood_flag" in scores:
        known = is_ood.notna().to_numpy()
        y = is_ood[known].astype(bool).to_numpy()
        ood_res = {"samples": int(known.sum()), "ood": int(y.sum()),
                   **detector_metrics(y, scores["ood_flag"].to_numpy(dtype=bool)[known],
                                      scores["ood_score"].to_numpy(dtype=np.float64)[known])}
        truth = truth.where(~is_ood.fillna(False).astype(bool))  # labels: the in-distribution samples only
    result = evaluate_scores(scores, truth, ws.settings().method)
    if is_ood is not None and "ood_flag" in scores:
        result["ood"] = ood_res
    if "duplicate_of" in marks and "dup_group" in scores:
        result["duplicates"] = duplicate_metrics(scores["dup_group"].to_numpy(), marks["duplicate_of"].to_numpy(),
                                                 marks["dup_kind"].to_numpy(dtype=object))
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
    for m in result["detectors"].values():
        lines.append(f"{m['detector']:<38}{m['flagged']:>8}{m['precision']:>10.3f}{m['recall']:>8.3f}"
                     f"{m['f1']:>7.3f}{m['auroc']:>8.3f}")
    o = result.get("ood")
    if o:
        lines += ["", f"none of the classes (ood_flag): {o['ood']} of {o['samples']} marked in the truth file "
                      "(label metrics above exclude them)",
                  f"{'ood_flag':<38}{o['flagged']:>8}{o['precision']:>10.3f}{o['recall']:>8.3f}{o['f1']:>7.3f}"
                  f"{o['auroc']:>8.3f}"]
    d = result.get("duplicates")
    if d:
        lines += ["", f"duplicates: {d['grouped']} of {d['pairs']} marked pairs in one group "
                      f"({d['recall']:.1%}); false group members {d['false_members']} ({d['false_share']:.2%} of "
                      f"the samples)"]
        lines += [f"  {k:<12}{v['grouped']:>5} of {v['pairs']:<5} {v['recall']:.1%}" for k, v in d["by_kind"].items()]
    return "\n".join(lines)


# --- the workspace's truth file -------------------------------------------------------------------------------
TRUTH_FILE = "truth.json"


def truth_path(ws: Workspace) -> Path | None:
    """The ground-truth labels file of the workspace (``WS/truth.json``), or the demo's ``truth.csv`` when the
    workspace was scanned from an unmodified ``clipcleaner demo`` folder; None when unknown or missing."""
    p = ws.path / TRUTH_FILE
    if p.is_file():
        try:
            t = Path(json.loads(p.read_text(encoding="utf-8"))["path"])
            return t if t.is_file() else None
        except (ValueError, KeyError, OSError):
            return None
    try:
        src = Path(ws.settings().data.source)
    except WorkspaceError:  # not scanned / damaged settings: no truth
        return None
    demo = src.parent / "demo.json"
    truth = src.parent / "truth.csv"
    return truth if demo.is_file() and truth.is_file() else None


def set_truth_path(ws: Workspace, path: str | Path | None) -> None:
    """Record (or with None forget) the ground-truth labels file (``path,label`` CSV/Parquet) of ``ws``; a file that
    is not such a table, or names none of the scored samples, is refused (:class:`evaluate.TruthFileError`)."""
    p = ws.path / TRUTH_FILE
    if path is None:
        p.unlink(missing_ok=True)
        return
    path = validate_truth_file(path, ws.scores())  # TruthFileError (one line, no content) for a bad file
    atomic_write_text(p, json.dumps({"path": str(path)}, indent=1))
