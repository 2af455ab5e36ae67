"""Export stage: the cleaned label table (CSV), a JSON report and optionally an ImageFolder of the cleaned set.

Export columns: ``path, label, original_label, suggested_label, flagged, noise_score, decision, reviewer,
sample_id, issues`` (``issues``: what flags the sample, ``;``-separated: ``label`` for the default detector, then
the issue types of :data:`registry.ISSUES` — ``ood``, ``duplicate``, ``dup_conflict``, ``leakage``, ``quality``).
``label`` is the final label after review: the relabel target, else the given label (or, with
``undecided="suggested"``, the suggestion for flagged samples nobody reviewed). Files are written atomically
(temp file + rename), so a failed export leaves the previous one intact. Source images are never modified.
Text cells that a spreadsheet would run as a formula (starting with ``= + - @``, tab or CR, and not a plain
number) are prefixed with ``'`` (:mod:`clipcleaner_core.csvio`, the one CSV writer). An ImageFolder export never
deletes what clipcleaner did not create (:mod:`clipcleaner_core.guards`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import unicodedata
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from . import guards, images
from .csvio import escape_formula, to_safe_csv  # noqa: F401 - part of this module's API (the app imports them here)
from .workspace import Workspace, atomic_write_text, current_umask

EXPORT_COLUMNS = ["path", "label", "original_label", "suggested_label", "flagged", "noise_score", "decision",
                  "reviewer", "sample_id", "issues"]
EXCLUDED_CHOICES = ("drop", "keep")
UNDECIDED_CHOICES = ("keep", "suggested", "drop", "drop-flagged")
#: longest file or folder name (in UTF-8 bytes) the ImageFolder export writes; longer ones are shortened + hashed
MAX_NAME_BYTES = 200


def decisions_frame(workspace: Workspace, db_url: str | None = None) -> pd.DataFrame:
    """Current review decisions of a workspace (columns sample_id, action, label, reviewer, updated_at)."""
    from .decisions import ReviewStore

    if db_url is None and not workspace.review_db.exists():
        return pd.DataFrame(columns=["sample_id", "action", "label", "reviewer", "updated_at"])
    store = ReviewStore.for_workspace(workspace.path, url=db_url, read_only=True)
    try:
        return store.current()
    finally:
        store.close()


def invalid_relabels(decisions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The relabel decisions whose new label is not one of ``classes`` (or not a single line of text)."""
    from .decisions import label_problem

    if not len(decisions):
        return decisions
    rel = decisions[decisions["action"] == "relabel"]
    known = set(classes)
    bad = [label_problem(lab, known) is not None for lab in rel["label"]]
    return rel[np.asarray(bad, dtype=bool)] if len(rel) else rel


def cleaned_table(scores: pd.DataFrame, decisions: pd.DataFrame, excluded: str = "drop",
                  undecided: str = "keep", classes: list[str] | None = None, method: str = "ensemble") -> pd.DataFrame:
    """Apply review ``decisions`` to ``scores``; returns the export table (see module doc), one row per sample.

    ``excluded``: ``drop`` rows marked exclude, or ``keep`` them (decision column says exclude).
    ``undecided``: for samples without a decision, ``keep`` the given label, use the ``suggested`` label for
    flagged ones, ``drop`` all undecided, or ``drop-flagged`` (drop only flagged undecided samples).
    ``classes``: when given, a relabel to a label that is not one of them (or that spans several lines) is
    refused with a ``ValueError`` naming the sample, instead of being exported. ``method``: the default detector,
    whose flag is ``label`` in the ``issues`` column. A sample flagged as "none of the classes" (``ood_flag``)
    never takes the suggested label (no class fits it): it keeps its given label unless a reviewer decides.
    """
    if excluded not in EXCLUDED_CHOICES:
        raise ValueError(f"excluded must be one of {EXCLUDED_CHOICES}")
    if undecided not in UNDECIDED_CHOICES:
        raise ValueError(f"undecided must be one of {UNDECIDED_CHOICES}")
    if classes is not None:
        bad = invalid_relabels(decisions, classes)
        bad = bad[bad["sample_id"].isin(set(scores["sample_id"]))] if len(bad) else bad
        if len(bad):
            sid, lab = bad["sample_id"].iloc[0], str(bad["label"].iloc[0])
            shown = lab if len(lab) <= 60 else lab[:57] + "..."
            raise ValueError(f"{len(bad)} relabel decision(s) name a label that is not a class of this workspace "
                             f"(e.g. sample {sid} -> {shown!r}); relabel them to a class or clear them "
                             f"(clipcleaner db decide WS clear SAMPLE) and export again")
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
    from .issues import issue_codes

    out["issues"] = issue_codes(scores, method)
    if undecided == "suggested":
        take = undecided_mask & out["flagged"]
        if "ood_flag" in scores:
            take &= ~scores["ood_flag"].fillna(False).astype(bool).to_numpy()
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


def _file_target(path: str | Path, what: str) -> Path:
    """``path`` as a file to write; a folder there is refused in one line (instead of a rename error)."""
    p = Path(path).expanduser()
    if p.is_dir():
        example = p / ("cleaned.csv" if what == "CSV" else "report.json")
        raise ValueError(f"{p}: is a folder; give a file name for the {what} (e.g. {example})")
    return p


def export_csv(workspace: str | Path | Workspace, out: str | Path | None = None, *, excluded: str = "drop",
               undecided: str = "keep", db_url: str | None = None) -> tuple[Path, pd.DataFrame]:
    """Write the cleaned CSV (default ``WS/exports/cleaned.csv``) atomically; returns (path, table)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    ws.require()
    path = _file_target(out, "CSV") if out else ws.exports_dir / "cleaned.csv"
    table = cleaned_table(ws.scores(), decisions_frame(ws, db_url), excluded=excluded, undecided=undecided,
                          classes=ws.classes(), method=ws.settings().method)
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
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "workspace": str(ws.path),
        "generation": ws.generation,
        "encoder": dict(settings.encoder), "scoring": asdict(settings.scoring),
        "criteria_used": list(settings.detection.criteria_used),
        "samples_scored": int(len(scores)), "flagged": int(scores["flagged"].sum()),
        "rows_exported": int(len(table)),
        "decisions": {str(k): int(v) for k, v in dec["action"].value_counts().items()} if len(dec) else {},
        "relabel_pairs": {f"{a} -> {b}": int(n) for (a, b), n in
                          relabels.groupby(["original_label", "label"]).size().items()},
        "unusable_samples": int(settings.counts.get("unusable", 0)),
        "issues": {k: int(v) for k, v in _issue_counts(scores).items()},
        "data_health": [n for n in settings.notes if n.startswith("data health: ")],
        **(extra or {}),
    }
    from .estimate import estimate_report, estimate_workspace

    report["errors_left"] = estimate_report(estimate_workspace(ws, decisions=dec, scores=scores))
    path = _file_target(out, "report") if out else ws.exports_dir / "report.json"
    atomic_write_text(path, json.dumps(report, indent=2))
    return path, report


def _issue_counts(scores: pd.DataFrame) -> dict[str, int]:
    from .issues import counts

    return counts(scores)


def _name_part(name: str, used: dict[str, str] | None = None, key: str = "") -> str:
    """A safe file/folder name for ``name``: no separators, no control characters, not '.'/'..', at most
    :data:`MAX_NAME_BYTES` UTF-8 bytes (a longer one is cut and given a hash suffix so names stay distinct).
    With ``used`` (name -> key it was given to), a name already taken by another key gets the hash suffix too."""
    safe = "".join("_" if unicodedata.category(ch) == "Cc" else ch for ch in name)
    safe = safe.replace("/", "_").replace("\\", "_").strip(".").strip() or "_"
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    raw = safe.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_NAME_BYTES:
        stem, ext = os.path.splitext(safe)
        ext = ext if len(ext.encode("utf-8", "surrogateescape")) <= 16 else ""
        room = MAX_NAME_BYTES - 12 - len(ext.encode("utf-8", "surrogateescape"))
        stem = stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
        safe = f"{stem}~{digest}{ext}"
    if used is not None:
        if used.get(safe, key) != key:
            safe = f"{safe[:MAX_NAME_BYTES - 12]}~{digest}"
        used[safe] = key
    return safe


def _protected_folders(ws: Workspace) -> dict[str, str | None]:
    """The folders an export must never replace: the workspace and the dataset it was scanned from."""
    data = ws.settings().data
    source = data.source
    return {"the workspace": str(ws.path), "the dataset root": data.root or None,
            "the dataset": source if source and os.path.isdir(source) else None}


def check_imagefolder_target(workspace: str | Path | Workspace, out_dir: str | Path,
                             sources=None) -> tuple[Path, dict | None]:
    """Whether an ImageFolder export may go to ``out_dir`` (see :func:`export_imagefolder`), checked before
    anything is written: returns (absolute target, marker of the previous export or None), or raises
    :class:`guards.UnsafeTargetError`. ``sources``: the source image paths (default: the workspace's)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if sources is None:
        sources = ws.scores()["abs_path"].to_numpy()
    sources = list(dict.fromkeys(images.source_file(s) for s in sources if s))  # a shard, not each of its images
    out = guards.check_export_folder(out_dir, _protected_folders(ws), allowed_under=ws.exports_dir, sources=sources)
    return out, guards.replaceable_export(out)


def export_imagefolder(workspace: str | Path | Workspace, table: pd.DataFrame, out_dir: str | Path,
                       mode: str = "link") -> dict:
    """Lay the cleaned set out as ``out_dir/<label>/<file>``: symlinks (``mode="link"``) or copies (``copy``).

    ``out_dir`` must be new, empty, or a previous ImageFolder export of clipcleaner (it carries the marker file
    :data:`guards.IMAGEFOLDER_MARKER` listing what it created, and nothing else was added); it may not be, hold or
    sit inside the dataset or the workspace (except below the workspace's ``exports/``). Anything else is refused
    with :class:`guards.UnsafeTargetError` before a file is written. The export is built in a temp folder beside
    ``out_dir`` and renamed into place; a previous export is then removed entry by entry from its marker. The
    source images are only read. An image inside a WebDataset / Parquet shard cannot be linked: its bytes are
    written as a file named by its key (``000123.jpg``; ``train-00001-row41.png`` for a Parquet row) in either
    mode. Long or clashing names are shortened / prefixed with the sample id. Returns counts.
    """
    if mode not in ("link", "copy"):
        raise ValueError("mode must be 'link' or 'copy'")
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    src = ws.scores().set_index("sample_id")["abs_path"]
    out, previous = check_imagefolder_target(ws, out_dir, src.to_numpy())
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{_name_part(out.name)[:80]}."
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".building", dir=out.parent))
    n = written = 0
    entries: list[str] = []
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        folders: dict[str, str] = {}
        for sid, label in zip(table["sample_id"], table["label"]):
            loc = str(src[sid])
            data = images.read_bytes(loc) if images.is_locator(loc) else None  # an image inside a shard
            name = images.export_name(loc, data)
            cls = _name_part(str(label), folders, str(label))
            d = tmp / cls
            if not d.is_dir():
                d.mkdir()
                entries.append(cls)
            dst = d / _name_part(name)
            if dst.exists() or dst.is_symlink():
                dst = d / _name_part(f"{sid}-{name}")
            if data is not None:  # nothing to link to: its bytes are written out under its key
                with open(dst, "xb") as f:
                    f.write(data)
                written += 1
            elif mode == "link":
                os.symlink(loc, dst)
            else:
                shutil.copy2(loc, dst)
            entries.append(f"{cls}/{dst.name}")
            n += 1
        marker = {"format": guards.IMAGEFOLDER_FORMAT, "version": 1, "workspace": str(ws.path), "mode": mode,
                  "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "entries": entries}
        (tmp / guards.IMAGEFOLDER_MARKER).write_text(json.dumps(marker), encoding="utf-8")
    except BaseException:  # a failed build leaves the previous export as it was and no half-built folder
        shutil.rmtree(tmp, ignore_errors=True)  # (made by mkdtemp above: only our own files are in it)
        raise
    left: list[str] = []
    if os.path.lexists(out):  # an empty folder or our previous export (checked above): swap, then remove it
        old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=out.parent))
        os.replace(out, old)  # (renaming onto the empty folder mkdtemp just made)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)  # put the previous export back
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if previous is not None:
            left = guards.remove_export(old, previous)
        else:
            try:
                old.rmdir()  # it was empty (should a file have appeared since, the folder is kept)
            except OSError:
                left = [str(old)]
    else:
        os.replace(tmp, out)
    info = {"images": n, "classes": int(table["label"].nunique()), "mode": mode, "path": str(out)}
    if written:
        info["written_from_shards"] = written
    if left:
        info["kept_previous"] = f"{len(left)} entries of the previous export could not be removed"
    return info
