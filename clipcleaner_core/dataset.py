"""Dataset stage: find the images and their given labels, and report every sample that cannot be used.

Inputs are an ImageFolder tree (one sub-folder per class), a table (CSV / TSV / Parquet) with a path column
and a label column, or WebDataset / Parquet shards with the images inside (:mod:`clipcleaner_core.shards`).
Nothing here raises on a bad *sample*: each sample gets a ``status`` ("ok" or the kind of problem) and a human
``reason`` naming the file, and the scan goes on with the rest. Only an unusable *source*
(no such folder, a table without a path or label column) raises :class:`DatasetError`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
import sys
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .images import IMAGE_EXTENSIONS

PATH_COLUMNS = ("path", "filepath", "file_path", "file", "filename", "image", "image_path", "img")
LABEL_COLUMNS = ("label", "class", "class_name", "target", "category", "y")

#: status values a sample can have; only "ok" samples are embedded and scored
STATUS_OK = "ok"
STATUS_MISSING = "missing"
STATUS_UNREADABLE = "unreadable"
STATUS_UNSUPPORTED = "unsupported"
STATUS_UNKNOWN_LABEL = "unknown_label"
STATUS_OUTSIDE_ROOT = "outside_root"
STATUS_DUPLICATE = "duplicate"
STATUS_EMPTY_LABEL = "empty_label"
STATUS_INVALID_NAME = "invalid_name"
STATUS_INVALID_ROW = "invalid_row"
STATUS_INVALID_LABEL = "invalid_label"
STATUS_CONFLICT = "conflicting_label"

#: labels that are how a spreadsheet, pandas or Python write a *missing* value; not classes unless --classes says so
MISSING_LABELS = frozenset({"nan", "none", "null", "na", "n/a", "<na>", "nat"})
#: longest path or label cell a table may hold (PATH_MAX); a longer one is reported with its line
MAX_FIELD_CHARS = 4096


class DatasetError(ValueError):
    """The data source itself cannot be used (not a single sample): wrong path, unusable table.

    ``kind`` names the problem for callers that must not repeat the message's details (e.g. a truth file):
    "binary", "empty", "columns", "unreadable" or "" (other)."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(message)
        self.kind = kind


@dataclass
class Dataset:
    """A labelled image collection.

    ``samples`` has one row per sample found, usable or not, with columns
    ``sample_id`` (str, stable across scans), ``path`` (str, relative to ``root`` when inside it, POSIX),
    ``abs_path`` (str: the file, or the image locator of a sample inside a shard, see
    :mod:`clipcleaner_core.images`), ``label`` (str, the given label), ``label_idx`` (int, index into ``classes``; -1 if
    unknown), ``status`` (str, "ok" or a problem kind) and ``reason`` (str, empty when ok).
    """

    samples: pd.DataFrame
    classes: list[str]
    root: Path
    source: str
    kind: str  # "imagefolder" | "table" | "webdataset" | "parquet" | "shards" (both kinds of shard)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> pd.DataFrame:
        """The usable samples, in order."""
        return self.samples[self.samples["status"] == STATUS_OK].reset_index(drop=True)

    @property
    def problems(self) -> pd.DataFrame:
        """The samples that cannot be used, with their reason."""
        return self.samples[self.samples["status"] != STATUS_OK].reset_index(drop=True)

    def mark(self, sample_ids: Iterable[str], status: str, reasons: dict[str, str]) -> None:
        """Mark samples (e.g. that failed to decode during embedding) as unusable, with a reason each."""
        ids = set(sample_ids)
        if not ids:
            return
        m = self.samples["sample_id"].isin(ids)
        self.samples.loc[m, "status"] = status
        self.samples.loc[m, "reason"] = self.samples.loc[m, "sample_id"].map(reasons).fillna(status)

    def content_key(self) -> str:
        """Hash of the usable images' identity (path or image locator, and the size and mtime of the file holding
        it: the image, or its shard): changes when any image or shard changes."""
        from .images import source_file

        h = hashlib.sha256()
        stats: dict[str, str] = {}
        for p in self.ok["abs_path"]:
            f = source_file(p)
            if f not in stats:
                try:
                    st = os.stat(f)
                    stats[f] = f"{st.st_size}\0{st.st_mtime_ns}"
                except OSError:
                    stats[f] = "missing"
            h.update(f"{p}\0{stats[f]}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:16]


def make_sample_id(rel_path: str) -> str:
    """Stable id of a sample: 16 hex chars of SHA-1 of its POSIX path relative to the dataset root."""
    return hashlib.sha1(rel_path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def display_path(path: str) -> str:
    """A path made safe to print and to store (undecodable bytes shown as ``\\xNN`` escapes)."""
    if isinstance(path, bytes):
        return path.decode("utf-8", "backslashreplace")
    if not isinstance(path, str):
        return str(path)
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:  # lone surrogates: bytes of a non-UTF-8 file name (surrogateescape)
        try:
            return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return path.encode("utf-8", "backslashreplace").decode("utf-8")


def is_valid_name(path: str) -> bool:
    """False when ``path`` holds bytes that are not UTF-8 (a non-UTF-8 file name read from disk)."""
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ----------------------------------------------------------------------------------------------- loaders
def load_dataset(
    source: str | os.PathLike,
    root: str | os.PathLike | None = None,
    classes_file: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
    skip_dirs: Sequence[str | os.PathLike] = (),
) -> Dataset:
    """Load an ImageFolder tree, a ``path,label`` table (CSV/TSV/TXT/Parquet), or WebDataset ``.tar`` / Parquet
    shards with embedded images (a shard, a folder of shards or a glob; :mod:`clipcleaner_core.shards`).

    ``root``: folder table paths are relative to (default: the table's folder). ``classes_file``: a text file
    with one class per line (or a JSON list) that fixes class order and may include classes with no samples;
    labels not in it are reported as ``unknown_label``. Paths that resolve outside ``root`` (table paths,
    ImageFolder symlinks) are reported as ``outside_root`` unless ``allow_outside_root``. ``skip_dirs``: folders
    an ImageFolder walk leaves out (the workspace being written); folders holding a clipcleaner workspace or
    ImageFolder export are always left out, with a note. Labels are Unicode-normalised (NFC).
    """
    from . import shards

    src = Path(source).expanduser()
    if not src.exists() and not shards.is_pattern(os.fspath(source)):
        raise DatasetError(f"{display_path(str(src))}: no such file or folder")
    fixed_classes = read_classes_file(classes_file) if classes_file else None
    if not src.exists():
        base, files, notes = shards.find_shards(os.fspath(source))
        ds = shards.load_shards(files, Path(root).expanduser() if root else base, str(source), fixed_classes, notes)
    elif src.is_dir():
        ds = _load_folder(src, root, fixed_classes, allow_outside_root, skip_dirs)
    elif shards.is_shard(src) and (src.suffix.lower() == ".tar" or shards.parquet_has_images(src)):
        base, files, notes = shards.find_shards(str(src))
        ds = shards.load_shards(files, Path(root).expanduser() if root else base, str(src), fixed_classes, notes)
    else:
        base = Path(root).expanduser() if root else src.parent
        table = read_table(src)
        ds = _from_table(table, base, str(src), fixed_classes, allow_outside_root)
    if len(ds.ok) == 0:
        ds.notes.append(f"{display_path(ds.source)}: no usable image found")
    return ds


def _load_folder(src: Path, root: str | os.PathLike | None, fixed_classes: list[str] | None,
                 allow_outside_root: bool, skip_dirs: Sequence[str | os.PathLike]) -> Dataset:
    """An ImageFolder tree, or a folder of WebDataset / Parquet shards (see :mod:`clipcleaner_core.shards`): shards
    at its top level, or shards below it and no ImageFolder image."""
    from . import shards

    def from_shards() -> Dataset | None:
        base, files, notes = shards.find_shards(str(src), src, allow_outside_root, (*skip_dirs,))
        if not files:
            return None
        return shards.load_shards(files, Path(root).expanduser() if root else base, str(src), fixed_classes, notes)

    try:
        top_shards = any(shards.is_shard(e.name) and not e.name.startswith(".") and e.is_file()
                         for e in os.scandir(src))
    except OSError:
        top_shards = False
    if top_shards:
        return from_shards()
    try:
        return _load_imagefolder(src, fixed_classes, allow_outside_root, skip_dirs)
    except DatasetError as e:
        if e.kind not in ("noimages", "nofolders"):
            raise
        ds = from_shards()
        if ds is None:
            raise
        return ds


def read_classes_file(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line, blank lines and '#' comments ignored) or a JSON list."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DatasetError(f"{display_path(str(p))}: cannot read classes file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{display_path(str(p))}: the classes file is not UTF-8 text ({e.reason} at byte "
                           f"{e.start})") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DatasetError(f"{display_path(str(p))}: not valid JSON ({e})") from None
        if not isinstance(data, list):
            raise DatasetError(f"{p}: a JSON classes file must hold a list of class names")
        names = [normalize_label(str(x)) for x in data]
    else:
        names = [normalize_label(ln) for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    seen: list[str] = []
    for n in names:
        if n and n not in seen:
            seen.append(n)
    if not seen:
        raise DatasetError(f"{p}: the classes file lists no class")
    return seen


DELIMITERS = (",", ";", "\t", "|")


def _find_columns(columns: Sequence[object]) -> tuple[object | None, object | None]:
    cols: dict[str, object] = {}
    for c in columns:
        cols.setdefault(str(c).strip().lstrip("\ufeff").strip().lower(), c)
    pcol = next((cols[c] for c in PATH_COLUMNS if c in cols), None)
    lcol = next((cols[c] for c in LABEL_COLUMNS if c in cols), None)
    return pcol, lcol


def _pick_delimiter(text: str) -> str:
    """The delimiter that splits the header into a path and a label column; else csv.Sniffer's guess; else ','."""
    header = text.lstrip("\r\n").split("\n", 1)[0]
    for d in DELIMITERS:
        try:
            cols = next(csv.reader([header], delimiter=d, skipinitialspace=True))
        except (csv.Error, StopIteration):
            continue
        if len(cols) >= 2 and all(c is not None for c in _find_columns(cols)):
            return d
    try:
        return csv.Sniffer().sniff("\n".join(text.splitlines()[:50]), delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        return ","


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table of samples: a DataFrame with exactly the columns ``path`` and ``label`` (str, stripped).

    Its index is the row's line number in the file (1 = the header; the row number for Parquet) so that
    messages can point at the line. CSV dialect (comma, semicolon, tab, pipe: the one that splits the header
    into a path and a label column), a UTF-8 BOM, CRLF, quoted fields (with delimiters or newlines inside),
    surrounding blanks and empty rows are handled; a file that is not UTF-8 is read as Latin-1. Column names
    are matched case-insensitively against common spellings (path/filepath/file/image…, label/class/target…).
    A cell that :func:`clipcleaner_core.export.escape_formula` protected (``'=…``, ``'+…``, ``'-…``, ``'@…``) is
    read back without the quote, so a cleaned CSV exported by clipcleaner loads as it was. A row with more fields
    than the header (an unquoted delimiter in a path) is kept with the ``label`` set to
    :data:`BAD_ROW` and the raw fields in ``path``, so that it is reported, not silently misread.
    Raises :class:`DatasetError` naming the file when it cannot be read or a column is missing.
    """
    p = Path(path)
    name = display_path(str(p))
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
            pcol, lcol = _find_columns(df.columns)
            _require_columns(name, df.columns, pcol, lcol)
            out = pd.DataFrame({"path": df[pcol].map(_cell), "label": df[lcol].map(_cell)})
            out.index = pd.RangeIndex(1, len(out) + 1)
        else:
            text = read_table_text(p)
            if "\0" in text:
                raise DatasetError(f"{name}: this is not a text table (it contains NUL bytes)", "binary")
            if not text.strip():
                raise DatasetError(f"{name}: the table is empty", "empty")
            out = _parse_csv(text, name)
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - any parser failure becomes a clear message about this file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DatasetError(f"{name}: cannot read the table ({type(e).__name__}: {msg})", "unreadable") from None
    keep = ~((out["path"] == "") & (out["label"] == ""))  # empty rows
    return out[keep]


#: ``label`` given by :func:`read_table` to a row it could not split into the header's columns
BAD_ROW = "\0bad-row"


def _cell(v: object) -> str:
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return ""  # a null in any (nullable Int64 / string / boolean ...) column is an empty cell
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))  # an integer label column with gaps is read by Parquet/pandas as float
    if isinstance(v, bytes):
        return display_path(v)
    return str(v).strip()


def _require_columns(name: str, columns: Sequence[object], pcol: object, lcol: object) -> None:
    missing = [n for n, c in (("path", pcol), ("label", lcol)) if c is None]
    if missing:
        found = ", ".join(display_path(str(c)) for c in columns) or "none"
        raise DatasetError(f"{name}: missing column(s) {', '.join(missing)}; found {found}. "
                           f"Expected a header like 'path,label'.", "columns")


def _unescape_formula(cell: str) -> str:
    """Undo the spreadsheet formula escaping of our own exports (``'=x`` → ``=x``), so a cleaned CSV loads back."""
    return cell[1:] if len(cell) > 1 and cell[0] == "'" and cell[1] in "=+-@\t\r" else cell


_CSV_LIMIT_LOCK = threading.Lock()


def _parse_csv(text: str, name: str) -> pd.DataFrame:
    """Rows of a CSV text (see :func:`read_table`). csv's 128 KiB field limit is lifted while parsing, so one
    huge cell is reported on its own line (:func:`_from_table`) instead of rejecting the whole table."""
    with _CSV_LIMIT_LOCK:
        old = csv.field_size_limit()
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        try:
            return _parse_csv_rows(text, name)
        finally:
            csv.field_size_limit(old)


def _parse_csv_rows(text: str, name: str) -> pd.DataFrame:
    delim = _pick_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, skipinitialspace=True, strict=False)
    header: list[str] | None = None
    paths: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    prev_end = 0
    for rec in reader:
        start, prev_end = prev_end + 1, reader.line_num
        if header is None:
            if not rec or all(not c.strip() for c in rec):
                continue  # blank lines before the header
            header = rec
            pcol, lcol = _find_columns(header)
            _require_columns(name, header, pcol, lcol)
            pi, li = header.index(pcol), header.index(lcol)
            continue
        if not rec or all(not c.strip() for c in rec):
            continue
        extra = rec[len(header):]
        if any(c.strip() for c in extra):
            paths.append(delim.join(rec))
            labels.append(BAD_ROW)
        else:
            paths.append(_unescape_formula(rec[pi].strip()) if pi < len(rec) else "")
            labels.append(_unescape_formula(rec[li].strip()) if li < len(rec) else "")
        lines.append(start)
    if header is None:
        raise DatasetError(f"{name}: the table is empty", "empty")
    return pd.DataFrame({"path": paths, "label": labels}, index=pd.Index(lines, dtype=np.int64),
                        dtype=object)


def _status_of_file(abs_path: str | os.PathLike) -> tuple[str, str]:
    path = os.fspath(abs_path)
    disp = display_path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return STATUS_MISSING, f"{disp}: file not found"
    except OSError as e:
        return STATUS_UNREADABLE, f"{disp}: cannot access ({e.strerror or e})"
    except ValueError as e:  # e.g. an embedded NUL character
        return STATUS_INVALID_NAME, f"{disp}: invalid path ({e})"
    if not stat.S_ISREG(st.st_mode):
        return STATUS_UNREADABLE, f"{disp}: not a regular file"
    if st.st_size == 0:
        return STATUS_UNREADABLE, f"{disp}: empty file (0 bytes)"
    if not os.access(path, os.R_OK):
        return STATUS_UNREADABLE, f"{disp}: permission denied"
    ext = os.path.splitext(path)[1]
    if ext.lower() not in IMAGE_EXTENSIONS:
        return STATUS_UNSUPPORTED, f"{disp}: unsupported file type '{ext or '(none)'}'"
    return STATUS_OK, ""


def _under(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` (both absolute, normalised strings) with '/' separators, or None when it is
    not under ``root`` (a plain string test: no filesystem access)."""
    if path == root:
        return "."
    prefix = root if root.endswith(os.sep) else root + os.sep
    if path.startswith(prefix):
        rel = path[len(prefix):]
        return rel.replace(os.sep, "/") if os.sep != "/" else rel
    return None


def _rows_to_dataset(rows: list[dict], classes: list[str], root: Path, source: str, kind: str,
                     notes: list[str]) -> Dataset:
    df = pd.DataFrame(rows, columns=["sample_id", "path", "abs_path", "label", "status", "reason"])
    index = {c: i for i, c in enumerate(classes)}
    df["label_idx"] = df["label"].map(index).fillna(-1).astype(np.int64)
    df = df[["sample_id", "path", "abs_path", "label", "label_idx", "status", "reason"]]
    return Dataset(samples=df.reset_index(drop=True), classes=classes, root=root, source=source, kind=kind,
                   notes=notes)


class _Walk:
    """State of one ImageFolder walk: notes, folders already walked, counts of what was left out."""

    def __init__(self, root: Path, allow_outside_root: bool, skip_dirs: Sequence[str | os.PathLike]):
        self.root = str(root)
        self.allow_outside_root = allow_outside_root
        self.skip = {os.path.realpath(os.fspath(d)) for d in skip_dirs}
        self.notes: list[str] = []
        self.seen_dirs: set[str] = {self.root}
        self.hidden = 0

    def inside(self, real: str) -> bool:
        return _under(real, self.root) is not None

    def tool_folder(self, d: str, real: str) -> bool:
        """True (with a note) when ``d`` is the workspace being written or holds a clipcleaner workspace / export."""
        from .guards import holds_clipcleaner_folder

        what = "the workspace of this scan" if real in self.skip else holds_clipcleaner_folder(d)
        if what:
            self.notes.append(f"{display_path(d)}: {what} inside the dataset folder, skipped (its files are not "
                              f"samples)")
        return bool(what)

    def hidden_entry(self, name: str) -> bool:
        from .guards import IMAGEFOLDER_MARKER

        if not name.startswith("."):
            return False
        if name != IMAGEFOLDER_MARKER:
            self.hidden += 1
        return True

    def files(self, top: Path) -> list[tuple[Path, bool]]:
        """(file, inside the root) for every file under ``top``, in name order; see :func:`_load_imagefolder`."""
        found: list[tuple[Path, bool]] = []

        def visit(d: Path, real: str, first: bool) -> None:
            if not first:
                if real in self.seen_dirs:
                    self.notes.append(f"{display_path(str(d))}: symlink loop or folder already scanned "
                                      f"(points to {display_path(real)}), skipped")
                    return
                self.seen_dirs.add(real)
                if self.tool_folder(str(d), real):
                    return
            if not self.inside(real) and not self.allow_outside_root:
                self.notes.append(f"{display_path(str(d))}: symlink to {display_path(real)} outside the dataset root "
                                  f"{display_path(self.root)}, not followed (pass --allow-outside-root to allow it)")
                return
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as e:
                self.notes.append(f"{display_path(str(d))}: cannot list folder ({e.strerror or e}); its images are "
                                  f"skipped")
                return
            for e in entries:
                if self.hidden_entry(e.name):
                    continue
                p = Path(e.path)
                try:
                    if e.is_dir(follow_symlinks=True):
                        visit(p, os.path.realpath(p), False)
                        continue
                except OSError:
                    pass  # e.g. a symlink loop on a file name: reported as unreadable by _status_of_file
                inside = self.inside(real)
                if e.is_symlink():
                    try:
                        inside = self.inside(os.path.realpath(p))
                    except (OSError, ValueError):
                        pass
                found.append((p, inside))

        visit(top, os.path.realpath(top), True)
        return found


def _load_imagefolder(top: Path, fixed_classes: list[str] | None, allow_outside_root: bool = False,
                      skip_dirs: Sequence[str | os.PathLike] = ()) -> Dataset:
    """One class per sub-folder of ``top``; every file below it is a sample (see :func:`load_dataset`).

    Hidden entries (names starting with '.') are skipped and counted in a note. Folder symlinks are followed once
    (a loop or a second way into a folder is reported); files and folders that lead outside the dataset root are
    reported (``outside_root``, or a note for a folder) unless ``allow_outside_root``. Folders holding a
    clipcleaner workspace or export, and ``skip_dirs``, are left out with a note. A tree without a single file
    with an image extension is refused (:class:`DatasetError`) rather than listing every file of, say, ``/etc``.
    """
    root = top.resolve()
    walk = _Walk(root, allow_outside_root, skip_dirs)
    notes = walk.notes
    class_dirs = []
    try:
        top_entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as e:
        raise DatasetError(f"{display_path(str(top))}: cannot list folder ({e.strerror or e})") from None
    top_files: list[str] = []
    for e in top_entries:
        if walk.hidden_entry(e.name):
            continue
        try:
            if e.is_dir(follow_symlinks=True):
                if not walk.tool_folder(e.path, os.path.realpath(e.path)):
                    class_dirs.append(e)
            elif e.is_file(follow_symlinks=True):
                top_files.append(e.path)
        except OSError as err:
            notes.append(f"{display_path(e.path)}: cannot access ({err.strerror or err}), skipped")
    if len(top_files) <= 5:
        notes += [f"{display_path(f)}: file at the top level of an ImageFolder ignored (images must sit in one "
                  f"sub-folder per class)" for f in top_files]
    else:
        notes.append(f"{display_path(str(top))}: {len(top_files)} files at the top level ignored (images must sit "
                     f"in one sub-folder per class), e.g. {display_path(os.path.basename(top_files[0]))}")
    if not class_dirs:
        raise DatasetError(f"{display_path(str(top))}: an ImageFolder needs one sub-folder per class; none found",
                           "nofolders")
    walk.seen_dirs |= {os.path.realpath(e.path) for e in class_dirs}
    found_classes, renamed = [], {}
    for e in class_dirs:
        label = normalize_label(display_path(e.name))
        if label != display_path(e.name):
            renamed.setdefault(label, e.name)
        found_classes.append(label)
    rows: list[dict] = []
    n_images = 0
    for e, label in zip(class_dirs, found_classes):
        bad_label = label_status(label, None)[0] == STATUS_INVALID_LABEL
        for f, inside in walk.files(Path(e.path)):
            rel = f.relative_to(top).as_posix()
            n_images += os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS
            if not is_valid_name(rel):
                shown = display_path(rel)
                rows.append(dict(sample_id=make_sample_id(rel), path=shown, abs_path=display_path(str(f.absolute())),
                                 label=label, status=STATUS_INVALID_NAME,
                                 reason=f"{shown}: file name is not valid UTF-8; rename the file to use it"))
                continue
            if not inside and not allow_outside_root:
                status, reason = (STATUS_OUTSIDE_ROOT, f"{rel}: links to {display_path(os.path.realpath(f))}, outside "
                                  f"the dataset root {display_path(str(root))} (pass --allow-outside-root to allow it)")
            elif bad_label:
                status, reason = STATUS_INVALID_LABEL, f"{rel}: the class folder name is not a single line of text"
            else:
                status, reason = _status_of_file(f)
            if status == STATUS_OK and fixed_classes and label not in fixed_classes:
                status, reason = (STATUS_UNKNOWN_LABEL,
                                  f"{display_path(rel)}: label '{label}' is not in the classes file")
            rows.append(dict(sample_id=make_sample_id(rel), path=rel, abs_path=str(f.absolute()), label=label,
                             status=status, reason=reason))
    if n_images == 0:
        n_files = len(rows)
        raise DatasetError(f"{display_path(str(top))}: no image file in its {len(class_dirs)} sub-folder(s) "
                           f"({n_files:,} other file(s)); this is not an image dataset", "noimages")
    if walk.hidden:
        notes.append(f"{display_path(str(top))}: {walk.hidden} hidden file(s) or folder(s) (names starting with "
                     f"'.') skipped")
    classes = list(dict.fromkeys(c for c in found_classes if label_status(c, None)[0] != STATUS_INVALID_LABEL))
    if fixed_classes:
        classes = list(fixed_classes)
    notes += _label_notes(str(top), classes, {k: v for k, v in renamed.items() if k in classes})
    return _rows_to_dataset(rows, classes, root, str(top), "imagefolder", notes)


def normalize_label(label: str) -> str:
    """A label as clipcleaner stores it: Unicode NFC (so 'café' typed two ways is one class), surrounding blanks
    removed."""
    return unicodedata.normalize("NFC", label).strip()


def label_status(label: str, fixed_classes: Sequence[str] | None) -> tuple[str, str]:
    """(status, reason) of a table label on its own: ok, empty, a missing-value marker ('nan', 'None', 'NA' ...,
    unless ``fixed_classes`` lists it) or not one line of text; the reason is the part after the file name."""
    if not label:
        return STATUS_EMPTY_LABEL, "has an empty label"
    if any(unicodedata.category(ch) == "Cc" for ch in label):
        return STATUS_INVALID_LABEL, "has a label that is not a single line of text (line break or control character)"
    if label.lower() in MISSING_LABELS and not (fixed_classes and label in fixed_classes):
        return (STATUS_EMPTY_LABEL, f"has the label {label!r}, which is how a missing value is written, not a class "
                                    f"(list it in --classes if it is a real class)")
    return STATUS_OK, ""


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _label_notes(source: str, labels: Sequence[str], renamed: dict[str, str]) -> list[str]:
    """Notes on labels that look alike: several spellings of one number ('0', '00', '0.0') and labels that were
    written in a non-NFC Unicode form (``renamed``: stored label -> one raw spelling)."""
    notes = []
    by_value: dict[float, list[str]] = {}
    for lab in class_names_from(labels):
        if _NUMBER.fullmatch(lab):
            by_value.setdefault(float(lab), []).append(lab)
    for same in by_value.values():
        if len(same) > 1:
            notes.append(f"{display_path(source)}: labels {', '.join(repr(x) for x in same)} are one number written "
                         f"{len(same)} ways; they are kept as {len(same)} separate classes (write each class one way, "
                         f"or pass --classes)")
    if renamed:
        ex = next(iter(renamed))
        notes.append(f"{display_path(source)}: {len(renamed)} label(s) were written in a decomposed Unicode form and "
                     f"were normalised (NFC) so that they match the same label written the usual way "
                     f"(e.g. {ex!r})")
    return notes


def _from_table(table: pd.DataFrame, base: Path, source: str, fixed_classes: list[str] | None,
                allow_outside_root: bool) -> Dataset:
    notes: list[str] = []
    root = base.resolve()
    root_s = str(root)
    base_lex = os.path.normpath(os.path.abspath(base))
    rows: list[dict] = []
    seen: dict[str, int] = {}  # rel -> line of its first row
    first_row: dict[str, int] = {}  # rel -> index into rows
    dup_labels: dict[str, dict[str, list[int]]] = {}  # rel -> label -> lines of the repeated rows
    renamed: dict[str, str] = {}
    unit = "row" if Path(source).suffix.lower() in (".parquet", ".pq") else "line"
    for i, p, raw_label in zip(table.index, table["path"], table["label"]):
        where = f"{display_path(source)} {unit} {i}"
        if raw_label == BAD_ROW:
            rel = f"#{unit}{i}"
            rows.append(dict(sample_id=make_sample_id(f"{rel}#invalid"), path=_short(p, 300), abs_path="", label="",
                             status=STATUS_INVALID_ROW,
                             reason=f"{where}: more fields than the header has columns ({_short(p)!r}); "
                                    f"quote a path that contains the delimiter"))
            continue
        long_cell = next(((what, len(v)) for what, v in (("path", p), ("label", raw_label))
                          if len(v) > MAX_FIELD_CHARS), None)
        if long_cell is not None:
            rows.append(dict(sample_id=make_sample_id(f"#{unit}{i}#invalid"), path=_short(p, 300), abs_path="",
                             label="", status=STATUS_INVALID_ROW,
                             reason=f"{where}: the {long_cell[0]} cell is {long_cell[1]:,} characters long (at most "
                                    f"{MAX_FIELD_CHARS:,}); row left out"))
            continue
        label = normalize_label(raw_label)
        if label != raw_label.strip():
            renamed.setdefault(label, raw_label)
        if "\0" in p or not p:
            rows.append(dict(sample_id=make_sample_id(f"#{unit}{i}#invalid"), path=p.replace("\0", "\\0"),
                             abs_path="", label=label, status=STATUS_INVALID_NAME if p else STATUS_MISSING,
                             reason=f"{where}: " + ("the path contains a NUL character" if p else "empty path")))
            continue
        norm = os.path.normpath(p if os.path.isabs(p) else os.path.join(base_lex, p))
        if "\\" in p and os.sep == "/" and not os.path.lexists(norm):  # a table written on Windows
            alt = p.replace("\\", "/")
            norm = os.path.normpath(alt if os.path.isabs(alt) else os.path.join(base_lex, alt))
        rel = _under(norm, base_lex)  # lexically under the root as given (which may be a symlink)
        inside = rel is not None
        if rel is None:
            try:
                inside = _under(os.path.realpath(norm), root_s) is not None
            except (OSError, ValueError):
                inside = False
            rel = _under(norm, root_s) or norm.replace(os.sep, "/")
        sid = make_sample_id(rel)
        lstatus, lwhy = label_status(label, fixed_classes)
        if rel in seen:
            status, reason = STATUS_DUPLICATE, f"{where}: {display_path(p)} is a duplicate of {unit} {seen[rel]}"
            sid = make_sample_id(f"{rel}#dup{i}")
            first = rows[first_row[rel]]["label"]
            if label != first and lstatus == STATUS_OK:
                reason += f" with another label ({label!r} here, {first!r} there); both rows are left out"
                dup_labels.setdefault(rel, {}).setdefault(label, []).append(int(i))
        elif not inside and not allow_outside_root:
            status, reason = (STATUS_OUTSIDE_ROOT, f"{where}: {display_path(p)} is outside the dataset root "
                              f"{display_path(str(root))} (pass --allow-outside-root to allow it)")
        elif lstatus != STATUS_OK:
            status, reason = lstatus, f"{where}: {display_path(p)} {lwhy}"
        else:
            status, reason = _status_of_file(norm)
            if reason:
                reason = f"{where}: {reason}"
        if fixed_classes is not None and status == STATUS_OK and label not in fixed_classes:
            status, reason = (STATUS_UNKNOWN_LABEL,
                              f"{where}: label '{label}' of {display_path(p)} is not in the classes file")
        if rel not in seen:
            seen[rel] = i
            first_row[rel] = len(rows)
        rows.append(dict(sample_id=sid, path=rel, abs_path=str(norm), label=label, status=status, reason=reason))
    for rel, others in dup_labels.items():  # the same file given two labels: which one is right is unknown
        r = rows[first_row[rel]]
        if r["status"] in (STATUS_OK, STATUS_UNKNOWN_LABEL):
            lines = ", ".join(str(n) for ls in others.values() for n in ls)
            shown = ", ".join(repr(x) for x in others)
            r["status"] = STATUS_CONFLICT
            r["reason"] = (f"{display_path(source)} {unit} {seen[rel]}: {display_path(rel)} is listed again on "
                           f"{unit} {lines} with another label ({r['label']!r} here, {shown} there); left out — "
                           f"keep one row per file")
    if fixed_classes is not None:
        classes = list(fixed_classes)
    else:
        labels = {r["label"] for r in rows if r["label"] and r["status"] not in
                  (STATUS_DUPLICATE, STATUS_EMPTY_LABEL, STATUS_INVALID_ROW, STATUS_INVALID_NAME,
                   STATUS_INVALID_LABEL)}
        classes = class_names_from(labels)
    notes += _label_notes(source, classes, {k: v for k, v in renamed.items() if k in classes})
    return _rows_to_dataset(rows, classes, root, source, "table", notes)


def _natural_key(s: str) -> tuple:
    """Sort key: case-insensitive, runs of ASCII digits compared as numbers ('img2' < 'img10'). Other digit
    characters ('²', '١') sort as text, so no label can break the sort."""
    parts = re.split(r"([0-9]+)", s)
    return tuple(int(t) if k % 2 else t.casefold() for k, t in enumerate(parts)), s  # s: a total, stable order


def read_table_text(path: Path) -> str:
    """The text of a CSV/TSV table: UTF-8 (a BOM dropped), else Latin-1 (any byte string decodes)."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def class_names_from(values: Sequence[str]) -> list[str]:
    """Sorted (natural order) unique class names from a sequence of labels: the one class order of every
    dataset kind (folders, tables, shards)."""
    return sorted({str(v) for v in values}, key=_natural_key)
