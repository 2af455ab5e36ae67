"""Where clipcleaner may write: the checks that keep it from deleting, replacing or filling folders it did not create.

- :func:`check_export_folder` / :func:`replaceable_export` — an ImageFolder export goes into a new or empty folder,
  or replaces a previous clipcleaner ImageFolder export (recognised by its marker file :data:`IMAGEFOLDER_MARKER`,
  which lists every entry the export created); never into the dataset, the workspace, a folder that contains
  either, or a folder holding anything else.
- :func:`workspace_folder_problem` — a workspace is created in a new or empty folder or one that already is a
  clipcleaner workspace, not in a folder of other files (unless the person confirms).
- :func:`holds_clipcleaner_folder` — the markers the dataset walker uses to skip workspaces and exports that sit
  inside a dataset root.

Every refusal is a :class:`UnsafeTargetError` with one line that names the folder and the reason.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

IMAGEFOLDER_MARKER = ".clipcleaner-imagefolder.json"
"""File written into every ImageFolder export: ``{"format": ..., "entries": [relative paths it created]}``."""
IMAGEFOLDER_FORMAT = "clipcleaner-imagefolder"
WORKSPACE_MARKER = "workspace.json"
"""A folder holding this file is a clipcleaner workspace."""
#: entries a clipcleaner workspace may hold before its first complete scan (a killed first scan, the review DB)
WORKSPACE_ENTRIES = frozenset({
    "workspace.json", "dataset.parquet", "scores.parquet", "embeddings.npy", "review.sqlite", "review.sqlite-wal",
    "review.sqlite-shm", "review.sqlite-journal", "cache", "exports", "prompts.json", "truth.json", "review.json",
    "current", "refits",
})
_WORKSPACE_PREFIXES = ("probs_", "neighbors", "neighbor_sims", "class_similarity", "text_features", "gen-", ".")
#: top-level keys of which a clipcleaner ``workspace.json`` holds at least one (other tools use that name too)
_WORKSPACE_KEYS = frozenset({"clipcleaner_version", "classes", "encoder", "review_db", "settings", "artifacts",
                             "generation", "embedding_key", "format"})


class UnsafeTargetError(ValueError):
    """clipcleaner refuses to write into (or replace) this folder; the message says why, in one line."""


def _real(p: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(p))))


def is_within(child: str, parent: str) -> bool:
    """True when path string ``child`` is ``parent`` or inside it (both absolute and normalised; no disk access)."""
    if child == parent:
        return True
    prefix = parent if parent.endswith(os.sep) else parent + os.sep
    return child.startswith(prefix)


def check_export_folder(out: str | os.PathLike, protected: dict[str, str | os.PathLike | None],
                        allowed_under: str | os.PathLike | None = None,
                        sources: Iterable[str] = ()) -> Path:
    """Refuse an export target that is, contains or is inside a ``protected`` folder; returns ``out`` absolute.

    ``protected`` maps a description ("the dataset root", "the workspace") to a folder (None entries ignored).
    A target strictly below ``allowed_under`` (the workspace's ``exports/`` folder) may be inside a protected
    folder, but still not contain one. ``sources``: absolute paths of the source images; a target that contains
    any of them is refused too (a table may list images outside its root). A symbolic link as the target is
    refused (replacing it would move the link, not the folder it points to).
    """
    target = Path(os.path.abspath(os.path.expanduser(os.fspath(out))))
    shown = str(target)
    if target.is_symlink():
        raise UnsafeTargetError(f"{shown}: is a symbolic link; give the real folder")
    real = _real(target)
    lexical = os.path.normpath(str(target))
    allowed = _real(allowed_under) if allowed_under is not None else None
    for what, folder in protected.items():
        if folder is None or str(folder) == "":
            continue
        f = _real(folder)
        if is_within(f, real):
            raise UnsafeTargetError(f"{shown}: contains {what} ({f}); an export may not replace it — choose a "
                                    f"new or empty folder outside it")
        if is_within(real, f) and not (allowed is not None and real != allowed and is_within(real, allowed)):
            raise UnsafeTargetError(f"{shown}: is inside {what} ({f}); choose a new or empty folder outside it")
    for s in sources:
        s = str(s)
        if s and (is_within(s, lexical) or is_within(s, real)):
            raise UnsafeTargetError(f"{shown}: contains source images of this dataset (e.g. {s}); choose a new "
                                    f"or empty folder elsewhere")
    return target


def read_export_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of a clipcleaner ImageFolder export in ``folder``, or None when there is no valid one."""
    p = Path(folder) / IMAGEFOLDER_MARKER
    try:
        if p.is_symlink() or not p.is_file():
            return None
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != IMAGEFOLDER_FORMAT or not isinstance(doc.get("entries"), list):
        return None
    return doc


def _entries(folder: Path) -> list[str]:
    """Relative POSIX paths of everything under ``folder`` (links not followed), the marker left out."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        rel_dir = os.path.relpath(dirpath, folder)
        for name in dirnames + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel != IMAGEFOLDER_MARKER:
                out.append(rel.replace(os.sep, "/"))
    return out


def replaceable_export(out: Path) -> dict | None:
    """Whether ``out`` may receive a new ImageFolder export.

    Returns None when ``out`` does not exist or is an empty folder, the marker dict when it is a previous
    clipcleaner export holding nothing but what that export created; otherwise raises
    :class:`UnsafeTargetError` (a file, a folder of other files, an export a person added files to).
    """
    shown = str(out)
    if not os.path.lexists(out):
        return None
    if out.is_symlink() or not out.is_dir():
        raise UnsafeTargetError(f"{shown}: exists and is not a folder; choose a new or empty folder")
    try:
        found = _entries(out)
    except OSError as e:
        raise UnsafeTargetError(f"{shown}: cannot list the folder ({e.strerror or e})") from None
    marker = read_export_marker(out)
    if marker is None:
        if not found and not (out / IMAGEFOLDER_MARKER).exists():
            return None
        raise UnsafeTargetError(f"{shown}: the folder is not empty and is not an ImageFolder export made by "
                                f"clipcleaner; nothing was written — choose a new or empty folder")
    extra = sorted(set(found) - {str(e) for e in marker["entries"]})
    if extra:
        raise UnsafeTargetError(f"{shown}: holds {len(extra)} file(s) that clipcleaner's export did not create "
                                f"(e.g. {extra[0]!r}); move them out or choose another folder")
    return marker


def remove_export(folder: Path, marker: dict) -> list[str]:
    """Delete exactly the entries a previous export listed in its marker (files and links first, then its folders),
    then the marker and ``folder`` if empty. Returns the relative paths that were left (anything not listed)."""
    entries = [str(e) for e in marker.get("entries", [])]
    for rel in entries:
        p = folder / rel
        if p.is_symlink() or p.is_file():
            try:
                p.unlink()
            except OSError:
                pass
    for rel in sorted(entries, key=lambda r: r.count("/"), reverse=True):
        p = folder / rel
        if p.is_dir() and not p.is_symlink():
            try:
                p.rmdir()
            except OSError:
                pass
    left = _entries(folder)
    if not left:
        (folder / IMAGEFOLDER_MARKER).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass
    return left


def is_workspace(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a clipcleaner ``workspace.json`` (a JSON object with clipcleaner's keys; an
    Nx monorepo's ``workspace.json`` is not one)."""
    p = Path(folder) / WORKSPACE_MARKER
    try:
        if not p.is_file() or p.stat().st_size > 64 * 2**20:
            return False
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and bool(_WORKSPACE_KEYS & set(doc))


def _is_workspace_entry(name: str) -> bool:
    return name in WORKSPACE_ENTRIES or name.startswith(_WORKSPACE_PREFIXES)


def workspace_folder_problem(path: str | os.PathLike) -> str | None:
    """Why a workspace should not be created in ``path`` (one line), or None when it may.

    Fine: a folder that does not exist yet, an empty one, an existing clipcleaner workspace (it holds
    ``workspace.json``), or one holding only entries a workspace writes (a first scan that was interrupted).
    Not fine: a file, or a folder that holds other files (``~/.ssh``, a dataset, a home folder).
    """
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if not p.exists():
        return None
    if not p.is_dir():
        return f"{p}: exists and is not a folder"
    if is_workspace(p):
        return None
    try:
        names = [e.name for e in os.scandir(p)]
    except OSError as e:
        return f"{p}: cannot list the folder ({e.strerror or e})"
    other = sorted(n for n in names if not _is_workspace_entry(n))
    if not other:
        return None
    return (f"{p}: the folder already holds {len(other)} file(s) or folder(s) that are not a clipcleaner "
            f"workspace (e.g. {other[0]!r}); choose a new or empty folder")


def holds_clipcleaner_folder(folder: str | os.PathLike) -> str | None:
    """What clipcleaner folder ``folder`` is ("a clipcleaner workspace", "a clipcleaner ImageFolder export"), or
    None. The dataset walker skips such folders inside a dataset root."""
    f = Path(folder)
    if is_workspace(f):
        return "a clipcleaner workspace"
    if read_export_marker(f) is not None:
        return "a clipcleaner ImageFolder export"
    return None
