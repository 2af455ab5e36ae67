"""Dataset stage: find the images and their given labels, and report every sample that cannot be used.

Inputs are an ImageFolder tree (one sub-folder per class) or a table (CSV / TSV / Parquet) with a path column
and a label column. Nothing here raises on a bad *sample*: each sample gets a ``status`` ("ok" or the kind of
problem) and a human ``reason`` naming the file, and the scan goes on with the rest. Only an unusable *source*
(no such folder, a table without a path or label column) raises :class:`DatasetError`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
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


class DatasetError(ValueError):
    """The data source itself cannot be used (not a single sample): wrong path, unusable table."""


@dataclass
class Dataset:
    """A labelled image collection.

    ``samples`` has one row per sample found, usable or not, with columns
    ``sample_id`` (str, stable across scans), ``path`` (str, relative to ``root`` when inside it, POSIX),
    ``abs_path`` (str), ``label`` (str, the given label), ``label_idx`` (int, index into ``classes``; -1 if
    unknown), ``status`` (str, "ok" or a problem kind) and ``reason`` (str, empty when ok).
    """

    samples: pd.DataFrame
    classes: list[str]
    root: Path
    source: str
    kind: str  # "imagefolder" | "table"
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
        """Hash of the usable images' identity (relative path, size, mtime): changes when any image changes."""
        h = hashlib.sha256()
        for p in self.ok["abs_path"]:
            try:
                st = os.stat(p)
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
            except OSError:
                h.update(f"{p}\0missing\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:16]


def make_sample_id(rel_path: str) -> str:
    """Stable id of a sample: 16 hex chars of SHA-1 of its POSIX path relative to the dataset root."""
    return hashlib.sha1(rel_path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def display_path(path: str) -> str:
    """A path made safe to print (undecodable bytes shown as escapes)."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(path, str) else str(path)


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Decode an image as upright 8-bit RGB.

    EXIF orientation is applied; CMYK, 16-bit, palette, grayscale and LA/RGBA images are converted (transparent
    areas composited on white). Raises ``OSError``/``ValueError`` (with a message) when it cannot be decoded,
    including Pillow's decompression-bomb guard (``max_pixels`` overrides ``Image.MAX_IMAGE_PIXELS``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        old = Image.MAX_IMAGE_PIXELS
        if max_pixels is not None:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im) or im
                return to_rgb(im)
        except Image.DecompressionBombWarning as e:  # treated as an error: never decode giant images
            raise ValueError(f"image too large (decompression-bomb guard): {e}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        scale = 255.0 / (65535.0 if hi > 255 else max(hi, 1.0) if hi > 0 else 1.0)
        im = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


# ----------------------------------------------------------------------------------------------- loaders
def load_dataset(
    source: str | os.PathLike,
    root: str | os.PathLike | None = None,
    classes_file: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
) -> Dataset:
    """Load an ImageFolder tree or a ``path,label`` table (CSV/TSV/TXT/Parquet).

    ``root``: folder table paths are relative to (default: the table's folder). ``classes_file``: a text file
    with one class per line (or a JSON list) that fixes class order and may include classes with no samples;
    labels not in it are reported as ``unknown_label``. Paths that resolve outside ``root`` are reported as
    ``outside_root`` unless ``allow_outside_root``.
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise DatasetError(f"{display_path(str(src))}: no such file or folder")
    fixed_classes = read_classes_file(classes_file) if classes_file else None
    if src.is_dir():
        ds = _load_imagefolder(src, fixed_classes)
    else:
        base = Path(root).expanduser() if root else src.parent
        table = read_table(src)
        ds = _from_table(table, base, str(src), fixed_classes, allow_outside_root)
    if len(ds.ok) == 0:
        ds.notes.append(f"{display_path(ds.source)}: no usable image found")
    return ds


def read_classes_file(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line, blank lines and '#' comments ignored) or a JSON list."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DatasetError(f"{display_path(str(p))}: cannot read classes file ({e.strerror or e})") from None
    if p.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise DatasetError(f"{p}: a JSON classes file must hold a list of class names")
        names = [str(x).strip() for x in data]
    else:
        names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    seen: list[str] = []
    for n in names:
        if n and n not in seen:
            seen.append(n)
    if not seen:
        raise DatasetError(f"{p}: the classes file lists no class")
    return seen


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table of samples and return a DataFrame with exactly the columns ``path`` and ``label`` (str).

    CSV dialect (comma, semicolon, tab, pipe), a UTF-8 BOM, quoted fields, surrounding blanks and empty rows
    are handled. Column names are matched case-insensitively against common spellings (path/filepath/file/
    image…, label/class/target…). Raises :class:`DatasetError` naming the file when a column is missing.
    """
    p = Path(path)
    name = display_path(str(p))
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            raw = p.read_bytes()
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            if not text.strip():
                raise DatasetError(f"{name}: the table is empty")
            sample = "\n".join(text.splitlines()[:50])
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
                sep = dialect.delimiter
            except csv.Error:
                sep = ","
            df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                             skip_blank_lines=True, skipinitialspace=True, quotechar='"')
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - any parser failure becomes a clear message about this file
        raise DatasetError(f"{name}: cannot read the table ({type(e).__name__}: {e})") from None
    cols = {str(c).strip().lstrip("\ufeff").lower(): c for c in df.columns}
    pcol = next((cols[c] for c in PATH_COLUMNS if c in cols), None)
    lcol = next((cols[c] for c in LABEL_COLUMNS if c in cols), None)
    missing = [n for n, c in (("path", pcol), ("label", lcol)) if c is None]
    if missing:
        raise DatasetError(
            f"{name}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns)) or 'none'}. "
            f"Expected a header like 'path,label'."
        )
    out = pd.DataFrame({"path": df[pcol].astype(str).str.strip(), "label": df[lcol].astype(str).str.strip()})
    out = out[~((out["path"] == "") & (out["label"] == ""))]  # empty rows
    out = out[~out["path"].str.lower().isin(["nan", "none"]) | (out["label"] != "")]
    return out.reset_index(drop=True)


def _status_of_file(abs_path: Path) -> tuple[str, str]:
    disp = display_path(str(abs_path))
    try:
        st = abs_path.stat()
    except FileNotFoundError:
        return STATUS_MISSING, f"{disp}: file not found"
    except OSError as e:
        return STATUS_UNREADABLE, f"{disp}: cannot access ({e.strerror or e})"
    if not abs_path.is_file():
        return STATUS_UNREADABLE, f"{disp}: not a regular file"
    if st.st_size == 0:
        return STATUS_UNREADABLE, f"{disp}: empty file (0 bytes)"
    if not os.access(abs_path, os.R_OK):
        return STATUS_UNREADABLE, f"{disp}: permission denied"
    if abs_path.suffix.lower() not in IMAGE_EXTENSIONS:
        return STATUS_UNSUPPORTED, f"{disp}: unsupported file type '{abs_path.suffix or '(none)'}'"
    return STATUS_OK, ""


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _rows_to_dataset(rows: list[dict], classes: list[str], root: Path, source: str, kind: str,
                     notes: list[str]) -> Dataset:
    df = pd.DataFrame(rows, columns=["sample_id", "path", "abs_path", "label", "status", "reason"])
    index = {c: i for i, c in enumerate(classes)}
    df["label_idx"] = df["label"].map(index).fillna(-1).astype(np.int64)
    df = df[["sample_id", "path", "abs_path", "label", "label_idx", "status", "reason"]]
    return Dataset(samples=df.reset_index(drop=True), classes=classes, root=root, source=source, kind=kind,
                   notes=notes)


def _walk_files(top: Path, notes: list[str]) -> list[Path]:
    """All files under ``top`` (hidden entries skipped), following directory symlinks once (loops reported)."""
    found: list[Path] = []
    seen_dirs: set[str] = set()

    def visit(d: Path) -> None:
        try:
            real = os.path.realpath(d)
        except OSError:
            return
        if real in seen_dirs:
            notes.append(f"{display_path(str(d))}: symlink loop or repeated folder, skipped")
            return
        seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            notes.append(f"{display_path(str(d))}: cannot list folder ({e.strerror or e})")
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                if e.is_dir(follow_symlinks=True):
                    visit(p)
                    continue
            except OSError:
                pass
            found.append(p)

    visit(top)
    return found


def _load_imagefolder(top: Path, fixed_classes: list[str] | None) -> Dataset:
    notes: list[str] = []
    root = top.resolve()
    class_dirs = []
    for e in sorted(os.scandir(top), key=lambda e: e.name):
        if e.name.startswith("."):
            continue
        try:
            if e.is_dir(follow_symlinks=True):
                class_dirs.append(e)
        except OSError:
            continue
    if not class_dirs:
        raise DatasetError(f"{display_path(str(top))}: an ImageFolder needs one sub-folder per class; none found")
    classes = list(fixed_classes) if fixed_classes else [e.name for e in class_dirs]
    rows: list[dict] = []
    for e in class_dirs:
        label = e.name
        for f in _walk_files(Path(e.path), notes):
            rel = f.relative_to(top).as_posix()
            status, reason = _status_of_file(f)
            if status == STATUS_OK and fixed_classes and label not in classes:
                status, reason = STATUS_UNKNOWN_LABEL, f"{display_path(rel)}: label '{label}' is not in the classes file"
            rows.append(dict(sample_id=make_sample_id(rel), path=rel, abs_path=str(f.absolute()), label=label,
                             status=status, reason=reason))
    for name in sorted(os.listdir(top)):
        if not name.startswith(".") and (top / name).is_file():
            notes.append(f"{display_path(str(top / name))}: file at the top level of an ImageFolder ignored "
                         f"(images must sit in one sub-folder per class)")
    return _rows_to_dataset(rows, classes, root, str(top), "imagefolder", notes)


def _from_table(table: pd.DataFrame, base: Path, source: str, fixed_classes: list[str] | None,
                allow_outside_root: bool) -> Dataset:
    notes: list[str] = []
    root = base.resolve()
    rows: list[dict] = []
    seen: dict[str, int] = {}
    for i, (p, label) in enumerate(zip(table["path"], table["label"]), start=2):
        raw = Path(p)
        abs_p = raw if raw.is_absolute() else base / raw
        norm = Path(os.path.normpath(abs_p.absolute()))
        inside = _is_within(norm, root) or _is_within(Path(os.path.realpath(norm)), root)
        rel = norm.relative_to(root).as_posix() if _is_within(norm, root) else norm.as_posix()
        sid = make_sample_id(rel)
        status, reason = STATUS_OK, ""
        where = f"{display_path(source)} line {i}"
        if not p:
            status, reason = STATUS_MISSING, f"{where}: empty path"
        elif rel in seen:
            status, reason = STATUS_DUPLICATE, f"{where}: duplicate of line {seen[rel]} ({display_path(p)})"
            sid = make_sample_id(f"{rel}#dup{i}")
        elif not inside and not allow_outside_root:
            status, reason = (STATUS_OUTSIDE_ROOT, f"{where}: {display_path(p)} is outside the dataset root "
                              f"{display_path(str(root))} (pass --allow-outside-root to allow it)")
        elif not label:
            status, reason = STATUS_EMPTY_LABEL, f"{where}: {display_path(p)} has an empty label"
        else:
            status, reason = _status_of_file(norm)
        if fixed_classes is not None and status == STATUS_OK and label not in fixed_classes:
            status, reason = STATUS_UNKNOWN_LABEL, f"{where}: label '{label}' of {display_path(p)} is not in the classes file"
        seen.setdefault(rel, i)
        rows.append(dict(sample_id=sid, path=rel, abs_path=str(norm), label=label, status=status, reason=reason))
    if fixed_classes is not None:
        classes = list(fixed_classes)
    else:
        labels = {r["label"] for r in rows if r["label"] and r["status"] not in (STATUS_DUPLICATE, STATUS_EMPTY_LABEL)}
        classes = sorted(labels, key=_natural_key)
    return _rows_to_dataset(rows, classes, root, source, "table", notes)


def _natural_key(s: str) -> tuple:
    import re

    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s))


def samples_summary(ds: Dataset) -> dict:
    """Counts by status and per class (usable samples only)."""
    return {
        "samples": int(len(ds.samples)),
        "usable": int((ds.samples["status"] == STATUS_OK).sum()),
        "by_status": ds.samples["status"].value_counts().to_dict(),
        "classes": len(ds.classes),
        "per_class": ds.ok["label"].value_counts().reindex(ds.classes, fill_value=0).to_dict(),
    }


def class_names_from(values: Sequence[str]) -> list[str]:
    """Sorted (natural order) unique class names from a sequence of labels."""
    return sorted({str(v) for v in values}, key=_natural_key)
