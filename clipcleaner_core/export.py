"""Export stage: the cleaned label table (CSV), a JSON report and optionally an ImageFolder of the cleaned set.

Export columns: ``path, label, original_label, suggested_label, flagged, noise_score, decision, reviewer,
sample_id``. ``label`` is the final label after review: the relabel target, else the given label (or, with
``undecided="suggested"``, the suggestion for flagged samples nobody reviewed). Files are written atomically
(temp file + rename), so a failed export leaves the previous one intact. Source images are never modified.
Text cells that a spreadsheet would run as a formula (starting with ``= + - @``, tab or CR, and not a plain
number) are prefixed with ``'``.
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .workspace import Workspace, atomic_write_text

EXPORT_COLUMNS = ["path", "label", "original_label", "suggested_label", "flagged", "noise_score", "decision",
                  "reviewer", "sample_id"]
EXCLUDED_CHOICES = ("drop", "keep")
UNDECIDED_CHOICES = ("keep", "suggested", "drop", "drop-flagged")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_formula(value: object) -> object:
    """Neutralise spreadsheet formula injection in one cell (numbers and safe text pass unchanged)."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def decisions_frame(workspace: Workspace, db_url: str | None = None) -> pd.DataFrame:
    """Current review decisions of a workspace (columns sample_id, action, label, reviewer, updated_at)."""
    from .decisions import ReviewStore

    if db_url is None and not workspace.review_db.exists():
        return pd.DataFrame(columns=["sample_id", "action", "label", "reviewer", "updated_at"])
    store = ReviewStore.for_workspace(workspace.path, url=db_url)
    try:
        return store.current()
    finally:
        store.close()


def cleaned_table(scores: pd.DataFrame, decisions: pd.DataFrame, excluded: str = "drop",
                  undecided: str = "keep") -> pd.DataFrame:
    """Apply review ``decisions`` to ``scores``; returns the export table (see module doc), one row per sample.

    ``excluded``: ``drop`` rows marked exclude, or ``keep`` them (decision column says exclude).
    ``undecided``: for samples without a decision, ``keep`` the given label, use the ``suggested`` label for
    flagged ones, ``drop`` all undecided, or ``drop-flagged`` (drop only flagged undecided samples).
    """
    if excluded not in EXCLUDED_CHOICES:
        raise ValueError(f"excluded must be one of {EXCLUDED_CHOICES}")
    if undecided not in UNDECIDED_CHOICES:
        raise ValueError(f"undecided must be one of {UNDECIDED_CHOICES}")
    d = decisions.set_index("sample_id") if len(decisions) else pd.DataFrame(columns=["action", "label", "reviewer"])
    action = scores["sample_id"].map(d["action"]) if len(d) else pd.Series([None] * len(scores), index=scores.index)
    action = action.where(action.notna() & (action != "clear"), "")
    relabel_to = scores["sample_id"].map(d["label"]) if len(d) else pd.Series([None] * len(scores), index=scores.index)
    reviewer = scores["sample_id"].map(d["reviewer"]) if len(d) else pd.Series([""] * len(scores), index=scores.index)
    out = pd.DataFrame({
        "path": scores["path"].astype(str),
        "original_label": scores["label"].astype(str),
        "suggested_label": scores["suggested_label"].astype(str),
        "flagged": scores["flagged"].astype(bool),
        "noise_score": scores["noise_score"].astype(float).round(6),
        "decision": action.fillna("").astype(str),
        "reviewer": reviewer.fillna("").astype(str),
        "sample_id": scores["sample_id"].astype(str),
    })
    label = out["original_label"].copy()
    is_relabel = out["decision"] == "relabel"
    label[is_relabel] = relabel_to[is_relabel].astype(str)
    undecided_mask = out["decision"] == ""
    if undecided == "suggested":
        take = undecided_mask & out["flagged"]
        label[take] = out.loc[take, "suggested_label"]
    out.insert(1, "label", label)
    keep = np.ones(len(out), dtype=bool)
    if excluded == "drop":
        keep &= (out["decision"] != "exclude").to_numpy()
    if undecided == "drop":
        keep &= ~undecided_mask.to_numpy()
    elif undecided == "drop-flagged":
        keep &= ~(undecided_mask & out["flagged"]).to_numpy()
    return out[keep][EXPORT_COLUMNS].reset_index(drop=True)


def to_safe_csv(df: pd.DataFrame) -> str:
    """CSV text of ``df`` with every text cell formula-escaped."""
    safe = df.copy()
    for c in safe.columns:
        if safe[c].dtype == object or pd.api.types.is_string_dtype(safe[c]):
            safe[c] = safe[c].map(escape_formula)
    return safe.to_csv(index=False, lineterminator="\n")


def export_csv(workspace: str | Path | Workspace, out: str | Path | None = None, *, excluded: str = "drop",
               undecided: str = "keep", db_url: str | None = None) -> tuple[Path, pd.DataFrame]:
    """Write the cleaned CSV (default ``WS/exports/cleaned.csv``) atomically; returns (path, table)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    ws.require()
    table = cleaned_table(ws.scores(), decisions_frame(ws, db_url), excluded=excluded, undecided=undecided)
    path = Path(out) if out else ws.exports_dir / "cleaned.csv"
    atomic_write_text(path, to_safe_csv(table))
    return path, table


def export_report(workspace: str | Path | Workspace, table: pd.DataFrame, out: str | Path | None = None,
                  db_url: str | None = None, extra: dict | None = None) -> tuple[Path, dict]:
    """Write a JSON report of the export (settings, counts per decision, relabel pairs); returns (path, report)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    settings = ws.settings()
    scores = ws.scores()
    dec = decisions_frame(ws, db_url)
    relabels = table[table["decision"] == "relabel"]
    report = {
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "workspace": str(ws.path),
        "encoder": settings.get("encoder"), "scoring": settings.get("scoring"),
        "criteria_used": settings.get("detection", {}).get("criteria_used"),
        "samples_scored": int(len(scores)), "flagged": int(scores["flagged"].sum()),
        "rows_exported": int(len(table)),
        "decisions": {str(k): int(v) for k, v in dec["action"].value_counts().items()} if len(dec) else {},
        "relabel_pairs": {f"{a} -> {b}": int(n) for (a, b), n in
                          relabels.groupby(["original_label", "label"]).size().items()},
        "unusable_samples": int(settings.get("counts", {}).get("unusable", 0)),
        **(extra or {}),
    }
    from .estimate import estimate_report, estimate_workspace

    report["errors_left"] = estimate_report(estimate_workspace(ws, decisions=dec, scores=scores))
    path = Path(out) if out else ws.exports_dir / "report.json"
    atomic_write_text(path, json.dumps(report, indent=2))
    return path, report


def export_imagefolder(workspace: str | Path | Workspace, table: pd.DataFrame, out_dir: str | Path,
                       mode: str = "link") -> dict:
    """Lay the cleaned set out as ``out_dir/<label>/<file>``: symlinks (``mode="link"``) or copies (``copy``).

    Built in a temp folder beside ``out_dir`` and renamed into place; the source images are only read.
    Returns counts. File-name clashes inside a class folder get the sample id prefixed.
    """
    if mode not in ("link", "copy"):
        raise ValueError("mode must be 'link' or 'copy'")
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    src = ws.scores().set_index("sample_id")["abs_path"]
    out = Path(out_dir).absolute()
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = 0
    try:
        for sid, label in zip(table["sample_id"], table["label"]):
            srcp = Path(src[sid])
            safe_label = str(label).replace("/", "_").replace("\\", "_").strip(".") or "_"
            d = tmp / safe_label
            d.mkdir(exist_ok=True)
            dst = d / srcp.name
            if dst.exists() or dst.is_symlink():
                dst = d / f"{sid}-{srcp.name}"
            if mode == "link":
                os.symlink(srcp, dst)
            else:
                shutil.copy2(srcp, dst)
            n += 1
    except BaseException:  # a failed build leaves the previous export as it was and no half-built folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)  # put the previous export back
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return {"images": n, "classes": int(table["label"].nunique()), "mode": mode, "path": str(out)}
