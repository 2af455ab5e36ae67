"""Dataset readers for the formats large datasets come in: WebDataset tar shards and Parquet shards with
embedded images (the Hugging Face ``datasets`` layout).

- **WebDataset** (``*.tar``, uncompressed): members grouped by key (``000123.jpg`` + ``000123.cls``); the image is
  the member with an image extension (``.jpg``, ``.png``, ``.webp`` …), the label comes from ``KEY.cls`` (an
  integer class number, or a class name), else ``KEY.json`` (a number or a name, or an object with a ``label`` /
  ``class`` / … field), else ``KEY.txt`` (a class name).
- **Parquet** (``*.parquet``): an image column that holds the encoded bytes (a ``{bytes, path}`` struct as written
  by ``datasets``, or a binary column) and a label column: integers, named by the ``ClassLabel`` names stored in the
  file's ``huggingface`` schema metadata or by ``--classes`` (line *i* is class *i*), or strings.

A source is one shard file, a folder of shards (searched recursively; workspaces and exports inside it are left
out) or a glob (``data/train-*.parquet``, ``shards/shard-{0000..0099}.tar``). Each sample's ``path`` is its shard
relative to the dataset root plus its key (``shard-00003.tar/000123``) or row (``train-00001.parquet#row=41``), its
``sample_id`` the hash of that ``path``, its ``abs_path`` an image locator (:mod:`clipcleaner_core.images`).
Only labels and the shard indexes are read here; image bytes are read when they are embedded, so nothing here
holds a shard's images in memory. A damaged member or label is reported on its sample and a damaged shard on a
row of its own; neither stops the scan.
"""
from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import images
from .dataset import (
    LABEL_COLUMNS,
    STATUS_EMPTY_LABEL,
    STATUS_INVALID_LABEL,
    STATUS_MISSING,
    STATUS_OK,
    STATUS_UNKNOWN_LABEL,
    STATUS_UNREADABLE,
    Dataset,
    DatasetError,
    _label_notes,
    _natural_key,
    _rows_to_dataset,
    _Walk,
    class_names_from,
    display_path,
    label_status,
    make_sample_id,
    normalize_label,
)

SHARD_KINDS = {".tar": "webdataset", ".parquet": "parquet", ".pq": "parquet"}
"""Shard file extensions and the format each one is read as."""
LABEL_EXTENSIONS = ("cls", "json", "txt")
"""WebDataset members a label is read from, in order of preference."""
#: image members preferred when a key has several (then any other extension Pillow reads, alphabetically)
_IMAGE_PREFERENCE = ("jpg", "jpeg", "png", "webp")
#: a label member larger than this is not a label
MAX_LABEL_BYTES = 1 << 16
_GLOB_CHARS = re.compile(r"[*?\[]|\{[^{}]*(?:,|\.\.)[^{}]*\}")
_BRACE = re.compile(r"\{([^{}]*)\}")


def is_shard(path: str | os.PathLike) -> bool:
    """True when ``path`` has a shard extension (``.tar``, ``.parquet``)."""
    return os.path.splitext(os.fspath(path))[1].lower() in SHARD_KINDS


def is_pattern(source: str) -> bool:
    """True when ``source`` is a glob or a WebDataset brace range rather than a path."""
    return bool(_GLOB_CHARS.search(source))


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{a,b}`` lists and ``{0000..0099}`` numeric ranges (zero padding kept), as WebDataset URLs do."""
    m = _BRACE.search(pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") else 0
        parts = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        parts = body.split(",")
    return [x for part in parts for x in expand_braces(pattern[:m.start()] + part + pattern[m.end():])]


def _pattern_root(pattern: str) -> Path:
    """The deepest folder of ``pattern`` before its first wildcard."""
    head = _GLOB_CHARS.split(pattern, 1)[0]
    d = head if head.endswith(os.sep) else os.path.dirname(head)
    return Path(d or ".").expanduser().absolute()


def find_shards(source: str, walk_root: Path | None = None, allow_outside_root: bool = False,
                skip_dirs: Sequence[str | os.PathLike] = ()) -> tuple[Path, list[Path], list[str]]:
    """(dataset root, shard files in name order, notes) for a shard file, a folder of shards or a pattern.

    A pattern matching nothing raises :class:`DatasetError`; a folder without shards gives an empty list."""
    notes: list[str] = []
    if walk_root is not None:
        walk_root = walk_root.expanduser().absolute()
        walk = _Walk(walk_root.resolve(), allow_outside_root, skip_dirs)
        files = [p for p, _inside in walk.files(walk_root) if is_shard(p)]
        return walk_root, sorted(files, key=lambda p: _natural_key(p.relative_to(walk_root).as_posix())), \
            walk.notes
    if is_pattern(source):
        found = sorted({Path(f).absolute() for pat in expand_braces(os.path.expanduser(source))
                        for f in glob.glob(pat, recursive=True) if os.path.isfile(f)},
                       key=lambda p: _natural_key(str(p)))
        files = [p for p in found if is_shard(p)]
        if len(found) > len(files):
            notes.append(f"{display_path(source)}: {len(found) - len(files)} matching file(s) that are not .tar or "
                         f".parquet shards left out")
        if not files:
            raise DatasetError(f"{display_path(source)}: no .tar or .parquet shard matches this pattern")
        return _pattern_root(source), files, notes
    p = Path(source).expanduser().absolute()
    return p.parent, [p], notes


def parquet_has_images(path: str | os.PathLike) -> bool:
    """True when the Parquet file at ``path`` holds embedded images (see :func:`images.image_column`); False for a
    ``path,label`` table or a file that cannot be read as Parquet (the table reader then says why)."""
    import pyarrow.parquet as pq

    try:
        return images.image_column(pq.read_schema(path)) is not None
    except Exception:  # noqa: BLE001 - not Parquet / damaged: read_table reports it on the table path
        return False


def load_shards(files: Sequence[Path], root: Path, source: str, fixed_classes: list[str] | None,
                notes: Sequence[str] = ()) -> Dataset:
    """Read the samples of tar / Parquet shards ``files`` (see the module doc) into a :class:`Dataset`."""
    if not files:
        raise DatasetError(f"{display_path(source)}: no .tar or .parquet shard found")
    root = root.absolute()
    rows: list[dict] = []
    class_names: list[str] | None = None
    notes = list(notes)
    kinds = set()
    for f in files:
        rel = _rel(f, root)
        kind = SHARD_KINDS[f.suffix.lower()]
        kinds.add(kind)
        try:
            if kind == "webdataset":
                shard_rows, shard_notes = _tar_rows(f, rel, fixed_classes)
                names = None
            else:
                shard_rows, shard_notes, names = _parquet_rows(f, rel, fixed_classes)
        except (OSError, ValueError) as e:
            if len(files) == 1 and Path(source).expanduser().absolute() == f.absolute():
                raise DatasetError(f"{display_path(source)}: {_why(e)}") from None  # the one file given
            rows.append(_shard_problem(rel, _why(e)))
            continue
        if names is not None:
            if class_names is None:
                class_names = names
            elif names != class_names:
                notes.append(f"{rel}: its class names differ from those of the first shard; labels are read with "
                             f"its own names")
        rows += shard_rows
        notes += shard_notes
    if fixed_classes is not None:
        classes = list(fixed_classes)
    elif class_names is not None:
        classes = list(class_names)
    else:
        classes = class_names_from(r["label"] for r in rows if r["status"] == STATUS_OK)
    notes += _label_notes(source, classes, {})
    kind = kinds.pop() if len(kinds) == 1 else "shards"
    return _rows_to_dataset(rows, classes, root, source, kind, notes)


def _rel(f: Path, root: Path) -> str:
    try:
        return display_path(f.relative_to(root).as_posix())
    except ValueError:
        return display_path(f.as_posix())


def _why(e: BaseException) -> str:
    return f"{e.strerror or e}" if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__


def _shard_problem(rel: str, why: str) -> dict:
    return dict(sample_id=make_sample_id(f"{rel}#shard"), path=rel, abs_path="", label="", status=STATUS_UNREADABLE,
                reason=f"{rel}: cannot read this shard ({why}); its samples are left out")


def _row(path: str, locator: str, label: str, status: str, why: str) -> dict:
    return dict(sample_id=make_sample_id(path), path=path, abs_path=locator, label=label, status=status,
                reason=f"{path}: {why}" if why else "")


# ------------------------------------------------------------------------------------------------- labels
def resolve_label(value: Any, names: Sequence[str] | None, fixed: Sequence[str] | None) -> tuple[str, str, str]:
    """(label, status, why) of a raw label value: an integer is a class number (named by ``names`` when given),
    a string a class name; ``fixed`` (the --classes list) must then contain it. ``why`` follows the sample path."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is None or (isinstance(value, float) and value != value):
        return "", STATUS_EMPTY_LABEL, "has no label"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return "", STATUS_INVALID_LABEL, f"has a label that is not a class number or name ({type(value).__name__})"
    if isinstance(value, int):
        if value < 0:
            return "", STATUS_EMPTY_LABEL, f"has the label {value} (no label)"
        if names is not None:
            if value >= len(names):
                return (str(value), STATUS_UNKNOWN_LABEL, f"has the class number {value}, but there are only "
                        f"{len(names)} class names (0-{len(names) - 1})")
            label = names[value]
        else:
            label = str(value)
    else:
        label = normalize_label(value)
        status, why = label_status(label, fixed)
        if status != STATUS_OK:
            return label, status, why
    if fixed is not None and label not in fixed:
        return label, STATUS_UNKNOWN_LABEL, f"label '{label}' is not in the classes file"
    return label, STATUS_OK, ""


def _label_value(ext: str, raw: bytes) -> tuple[Any, str]:
    """(value, problem) of a WebDataset label member's bytes (``cls``, ``json`` or ``txt``)."""
    try:
        text = raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return None, f"its .{ext} label is not UTF-8 text"
    if ext == "json":
        try:
            doc = json.loads(text)
        except ValueError as e:
            return None, f"its .json label is not valid JSON ({e.msg})"
        if isinstance(doc, dict):
            low = {str(k).lower(): k for k in doc}
            key = next((low[c] for c in LABEL_COLUMNS if c in low), None)
            if key is None:
                return None, f"its .json has no label field ({', '.join(LABEL_COLUMNS)})"
            doc = doc[key]
        return doc, ""
    if ext == "cls" and re.fullmatch(r"[+-]?\d+", text):
        return int(text), ""
    return text, ""


# ---------------------------------------------------------------------------------------------- WebDataset
def _image_ext(exts: Sequence[str]) -> str | None:
    ok = [e for e in exts if f".{e.lower()}" in images.IMAGE_EXTENSIONS]
    if not ok:
        return None
    pref = {e: i for i, e in enumerate(_IMAGE_PREFERENCE)}
    return min(ok, key=lambda e: (pref.get(e.lower(), len(pref)), e))


def tar_groups(idx: images.TarIndex) -> tuple[dict[str, dict[str, str]], list[str]]:
    """The samples of a tar shard: key → {extension: member name} in archive order, and the keys whose members
    are not stored together (WebDataset requires them to be; they are still read as one sample here)."""
    groups: dict[str, dict[str, str]] = {}
    split = []
    last = None
    for name in idx.members:
        key, ext = images.key_and_ext(name)
        if key is None:
            continue
        if key != last and key in groups:
            split.append(key)
        groups.setdefault(key, {})[ext] = name
        last = key
    return groups, split


def readable_by_ray(path: str | os.PathLike) -> bool:
    """True when ``ray.data.read_webdataset`` reads the tar shard at ``path`` as :func:`load_dataset` does: the
    whole archive readable, no name stored twice, each key's members together and at most one image per key (it
    fails the job, or drops samples, otherwise; the Ray engine reads such a shard member by member instead)."""
    try:
        idx = images.tar_index(path)
    except (OSError, ValueError):
        return False
    if idx.problem or idx.duplicates:
        return False
    groups, split = tar_groups(idx)
    return not split and all(sum(f".{e.lower()}" in images.IMAGE_EXTENSIONS for e in m) <= 1 for m in groups.values())


def _tar_rows(f: Path, rel: str, fixed: list[str] | None) -> tuple[list[dict], list[str]]:
    idx = images.tar_index(f)
    groups, split = tar_groups(idx)
    notes = []
    if split:
        notes.append(f"{rel}: the members of {len(split)} key(s) are not stored together (e.g. {split[0]}); "
                     f"they are read as one sample each")
    if idx.duplicates:
        notes.append(f"{rel}: {len(idx.duplicates)} member name(s) stored twice (e.g. {idx.duplicates[0]}); the "
                     f"last copy is used")
    rows = []
    for key, members in groups.items():
        path = display_path(f"{rel}/{key}")  # (a name that is not UTF-8 shows escaped; its locator keeps the bytes)
        ext = _image_ext(list(members))
        if ext is None:
            found = ", ".join(f".{e}" for e in members)
            rows.append(_row(path, "", "", STATUS_MISSING, f"no image member for this key (found {found})"))
            continue
        member = members[ext]
        loc = images.tar_locator(f, member)
        if idx.truncated(member):
            rows.append(_row(path, loc, "", STATUS_UNREADABLE, f"{member} is cut off: the tar is truncated"))
            continue
        if idx.members[member][1] == 0:
            rows.append(_row(path, loc, "", STATUS_UNREADABLE, f"{member} is empty (0 bytes)"))
            continue
        lext = next((e for e in LABEL_EXTENSIONS if e in members), None)
        if lext is None:
            rows.append(_row(path, loc, "", STATUS_EMPTY_LABEL, "has no label member (.cls, .json or .txt)"))
            continue
        lname = members[lext]
        if idx.members[lname][1] > MAX_LABEL_BYTES:
            rows.append(_row(path, loc, "", STATUS_INVALID_LABEL, f"{lname} is too large to be a label"))
            continue
        try:
            value, problem = _label_value(lext, idx.read(lname))
        except OSError as e:
            value, problem = None, f"its label cannot be read ({_why(e)})"
        if problem:
            rows.append(_row(path, loc, "", STATUS_INVALID_LABEL, problem))
            continue
        label, status, why = resolve_label(value, fixed, fixed)
        rows.append(_row(path, loc, label, status, why))
    if idx.problem:
        rows.append(dict(sample_id=make_sample_id(f"{rel}#damaged"), path=rel, abs_path="", label="",
                         status=STATUS_UNREADABLE, reason=f"{rel}: {idx.problem}"))
    return rows, notes


# ------------------------------------------------------------------------------------------------- Parquet
def _label_column(schema: Any, feats: dict, image_col: str) -> str | None:
    low = {n.lower(): n for n in schema.names if n != image_col}
    named = next((low[c] for c in LABEL_COLUMNS if c in low), None)
    if named is not None:
        return named
    return next((n for n, f in feats.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"
                 and n in schema.names), None)


def parquet_columns(schema: Any) -> tuple[str | None, str | None, list[str] | None]:
    """(image column, label column, class names from the ``ClassLabel`` feature or None) of a Parquet schema."""
    img = images.image_column(schema)
    feats = images.hf_features(schema)
    lab = _label_column(schema, feats, img) if img else None
    names = None
    f = feats.get(lab) if lab else None
    if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list):
        names = [normalize_label(str(x)) for x in f["names"]]
    return img, lab, names


def _parquet_rows(f: Path, rel: str, fixed: list[str] | None) -> tuple[list[dict], list[str], list[str] | None]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except Exception as e:  # noqa: BLE001 - ArrowInvalid (not Parquet, damaged footer) and friends
        raise ValueError(f"not a readable Parquet file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None
    img, lab, names = parquet_columns(pf.schema_arrow)
    if img is None:
        raise ValueError("no embedded image column (an image {bytes, path} struct or a binary image column)")
    if lab is None:
        raise ValueError(f"no label column ({', '.join(LABEL_COLUMNS)} or a ClassLabel feature)")
    try:
        values = pf.read(columns=[lab]).column(0).to_pylist()
    except Exception as e:  # noqa: BLE001 - a damaged column chunk
        raise ValueError(f"its label column cannot be read ({type(e).__name__})") from None
    index_names = names if names is not None else fixed
    rows = []
    for i, v in enumerate(values):
        path = f"{rel}#row={i}"
        if isinstance(v, bytes):
            v = display_path(v)
        label, status, why = resolve_label(v, index_names, fixed)
        rows.append(_row(path, images.parquet_locator(f, i), label, status, why))
    return rows, [], names
