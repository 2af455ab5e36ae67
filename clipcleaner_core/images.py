"""Images: where a sample's bytes live (the *image locator*) and how they become an upright 8-bit RGB image.

Every reader of images goes through here: the dataset stage (which file types count as images, the shard
indexes), both embedding engines (:func:`decode_for_embedding`, the one decode path, and :func:`decode_failure`,
the one way a decode error becomes the reported reason), the thumbnails of the app and the exports.

**Image locator.** Each sample is one string, its ``abs_path`` in ``dataset.parquet`` / ``scores.parquet``:

- an ordinary image file: its absolute path (``/data/train/cat/001.jpg``);
- a member of a WebDataset tar shard: ``tar://<absolute shard path>#<member name>``
  (``tar:///data/shards/shard-00003.tar#000123.jpg``);
- a row of a Parquet shard whose image is an embedded bytes column (Hugging Face ``datasets``
  ``image: {bytes, path}``, or a plain binary column): ``parquet://<absolute shard path>#row=<row number>``.

Shard path and member are percent-encoded where needed (``%``, ``#``, bytes that are not UTF-8), so any name
round-trips. :func:`load_image`, :func:`read_bytes`, :func:`open_sample` and :func:`decode_for_embedding` take a
locator (or a plain path); :func:`source_file` is the file on disk that holds the sample (its mtime and size
say when it changed), :func:`export_name` the file name an export writes its bytes under. Tar members are
read with one ``pread`` from a cached index of the shard (:func:`tar_index`); Parquet rows are streamed batch by
batch from a cached reader, so reading a shard in order reads it once, holding about one row group of its image
column at most.

- :func:`load_image` — decode with EXIF orientation, any Pillow mode converted to RGB (:func:`to_rgb`), and a
  decompression-bomb guard that refuses an image from its header alone.
- :func:`limit_aspect` — bound extreme aspect ratios before a CLIP transform scales them up.
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

import numpy as np
from PIL import Image, ImageOps

_BASE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
#: read when the installed Pillow can open them (AVIF: Pillow >= 11.3 built with libavif; HEIC: a plugin)
_OPTIONAL_EXTENSIONS = (".avif", ".avifs", ".jfif", ".jpe", ".apng", ".heic", ".heif")


def _openable(ext: str) -> bool:
    fmt = Image.registered_extensions().get(ext)
    return fmt is not None and fmt in Image.OPEN


IMAGE_EXTENSIONS = frozenset(_BASE_EXTENSIONS | {e for e in _OPTIONAL_EXTENSIONS if _openable(e)})
"""File extensions (lower case, with the dot) that are read as images."""
MAX_ASPECT = 16.0
"""Images more elongated than this are centre-cropped to it before encoding (see :func:`limit_aspect`)."""

_PIXEL_LIMIT_LOCK = threading.Lock()



def load_image(path: str | os.PathLike | bytes, max_pixels: int | None = None) -> Image.Image:
    """Decode an image (a file path, an image locator or the encoded bytes) as upright 8-bit RGB.

    EXIF orientation is applied; CMYK, 16-bit, palette, grayscale and LA/RGBA images are converted (transparent
    areas composited on white). Raises ``OSError`` or ``ValueError`` with a message when it cannot be decoded
    (any other decoder exception is re-raised as ``ValueError`` naming its type). Images with more pixels than
    ``max_pixels`` (default ``PIL.Image.MAX_IMAGE_PIXELS``) are refused from their header alone, before any
    pixel is decoded (decompression-bomb guard).
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    in_memory = isinstance(path, (bytes, bytearray, memoryview)) or is_locator(path)
    if in_memory:  # an image inside a shard (or given as bytes)
        path = io.BytesIO(path if isinstance(path, (bytes, bytearray, memoryview)) else read_bytes(path))
    try:
        # (between 1x and 2x Pillow's limit, Image.open only warns: the size check below refuses those too)
        if limit and Image.MAX_IMAGE_PIXELS and limit > Image.MAX_IMAGE_PIXELS:
            with _PIXEL_LIMIT_LOCK:  # a caller raising the limit: Pillow's own check must not refuse first
                old = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = limit
                try:
                    im = Image.open(path)
                finally:
                    Image.MAX_IMAGE_PIXELS = old
        else:
            im = Image.open(path)
        with im:
            w, h = im.size
            if limit and w * h > limit:
                raise ValueError(f"image too large: {w}x{h} = {w * h:,} pixels is over the limit of {limit:,} "
                                 f"(decompression-bomb guard); not decoded")
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return to_rgb(im)
    except Image.DecompressionBombError as e:
        raise ValueError(f"image too large (decompression-bomb guard, not decoded): {e}") from None
    except Image.UnidentifiedImageError:
        if not in_memory:
            raise
        # (Pillow would name the in-memory buffer object; the caller names the sample)
        raise Image.UnidentifiedImageError("cannot identify the image format") from None
    except (OSError, ValueError):
        raise
    except Exception as e:  # noqa: BLE001 - SyntaxError, struct.error, EOFError ... from broken files
        raise ValueError(f"{type(e).__name__}: {e}") from None


def limit_aspect(im: Image.Image, max_ratio: float = MAX_ASPECT) -> Image.Image:
    """Centre-crop an image whose long side is more than ``max_ratio`` times its short side to that ratio.

    A 20000×1 strip would otherwise become a multi-gigabyte image when a CLIP transform scales its short side
    up to 224 before centre-cropping a square; cropping the centre first gives the same square (the crop keeps
    the centre) at a bounded size. Images within the ratio are returned unchanged.
    """
    w, h = im.size
    if w == 0 or h == 0:
        return im
    if w > max_ratio * h:
        nw = max(1, int(round(max_ratio * h)))
        left = (w - nw) // 2
        return im.crop((left, 0, left + nw, h))
    if h > max_ratio * w:
        nh = max(1, int(round(max_ratio * w)))
        top = (h - nh) // 2
        return im.crop((0, top, w, top + nh))
    return im


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


# ------------------------------------------------------------------------------------- the embedding path
def decode_failure(e: BaseException) -> str:
    """The reason reported for a sample whose image could not be decoded or preprocessed (one line)."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"cannot decode image ({type(e).__name__}: {msg})"


@dataclass
class Decoded:
    """One sample through the embedding path: ``x`` the encoder input (None when not ok), ``image`` the decoded
    upright RGB image before the aspect bound (None when not ok), ``ok``, and ``reason`` ("" when ok)."""

    x: Any
    image: Image.Image | None
    ok: bool
    reason: str


def decode_for_embedding(src: str | os.PathLike | bytes, preprocess: Callable[[Image.Image], Any]) -> Decoded:
    """Decode ``src`` (path, locator or bytes) and apply the encoder's ``preprocess`` (after :func:`limit_aspect`);
    never raises for a bad image: any failure comes back as ``ok=False`` with :func:`decode_failure`'s reason. The
    one decode path of the local and the Ray engine; per-image work on the decoded image belongs here or on
    ``Decoded.image``."""
    try:
        im = load_image(src)
        return Decoded(preprocess(limit_aspect(im)), im, True, "")
    except Exception as e:  # noqa: BLE001 - any decode failure is reported, not fatal
        return Decoded(None, None, False, decode_failure(e))


def stand_in(preprocess: Callable[[Image.Image], Any]) -> Any:
    """The encoder input that takes the place of an image that failed to decode (a white 32×32 image,
    preprocessed), so that a batch keeps its shape; its features are discarded."""
    return preprocess(Image.new("RGB", (32, 32), (255, 255, 255)))


# ------------------------------------------------------------------------------------------ image locators
TAR_SCHEME = "tar://"
PARQUET_SCHEME = "parquet://"
#: kept as they are in a locator; '%', '#', control characters and bytes that are not UTF-8 are escaped
_SAFE = "/:@+,=~!$&'()*; "


@dataclass(frozen=True)
class Locator:
    """A parsed image locator: ``kind`` "file" | "tar" | "parquet", ``file`` the file on disk that holds the
    sample, ``member`` the tar member name ("" otherwise), ``row`` the Parquet row (-1 otherwise)."""

    kind: str
    file: str
    member: str = ""
    row: int = -1


def _q(s: str) -> str:
    return quote(s, safe=_SAFE, errors="surrogateescape")


def _uq(s: str) -> str:
    return unquote(s, errors="surrogateescape")


def tar_locator(shard: str | os.PathLike, member: str) -> str:
    """Locator of tar member ``member`` of the shard at ``shard`` (made absolute)."""
    return f"{TAR_SCHEME}{_q(os.path.abspath(os.fspath(shard)))}#{_q(member)}"


def parquet_locator(shard: str | os.PathLike, row: int) -> str:
    """Locator of row ``row`` (0-based) of the Parquet shard at ``shard`` (made absolute)."""
    return f"{PARQUET_SCHEME}{_q(os.path.abspath(os.fspath(shard)))}#row={int(row)}"


def is_locator(s: object) -> bool:
    """True for a ``tar://`` or ``parquet://`` locator (False for a plain path)."""
    return isinstance(s, str) and (s.startswith(TAR_SCHEME) or s.startswith(PARQUET_SCHEME))


def parse_locator(s: str | os.PathLike) -> Locator:
    """Split a locator (or a plain path, kind "file"); raises ``ValueError`` for a malformed one."""
    s = os.fspath(s)
    if not is_locator(s):
        return Locator("file", s)
    kind = "tar" if s.startswith(TAR_SCHEME) else "parquet"
    body = s[len(TAR_SCHEME if kind == "tar" else PARQUET_SCHEME):]
    file, sep, frag = body.partition("#")
    if not sep or not file:
        raise ValueError(f"malformed image locator {s!r}")
    if kind == "tar":
        return Locator("tar", _uq(file), member=_uq(frag))
    if not frag.startswith("row=") or not frag[4:].isdigit():
        raise ValueError(f"malformed image locator {s!r} (expected #row=N)")
    return Locator("parquet", _uq(file), row=int(frag[4:]))


def source_file(s: str | os.PathLike) -> str:
    """The file on disk that holds the sample ``s`` (the image file itself, or its shard)."""
    return parse_locator(s).file


def read_bytes(s: str | os.PathLike) -> bytes:
    """The encoded image bytes of sample ``s`` (a path or a locator). Raises ``OSError`` / ``ValueError`` with a
    message naming what is wrong (a missing file, a member cut off by a truncated tar, a row without bytes)."""
    loc = parse_locator(s)
    if loc.kind == "file":
        with open(loc.file, "rb") as f:
            return f.read()
    if loc.kind == "tar":
        return tar_index(loc.file).read(loc.member)
    return _parquet_reader(loc.file).get(loc.row)


def open_sample(s: str | os.PathLike) -> BinaryIO:
    """A binary file object with the encoded image of sample ``s`` (a path or a locator); close it after use."""
    loc = parse_locator(s)
    if loc.kind == "file":
        return open(loc.file, "rb")
    return io.BytesIO(read_bytes(s))


_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif",
               "PPM": ".ppm", "AVIF": ".avif", "MPO": ".jpg"}


def export_name(s: str | os.PathLike, data: bytes | None = None) -> str:
    """The file name an export gives sample ``s``: the file's own name; a tar member's name (its key and
    extension); for a Parquet row, ``<shard name>-row<N>`` with the extension of the image format found in
    ``data`` (its bytes, read when not given)."""
    loc = parse_locator(s)
    if loc.kind != "parquet":
        return os.path.basename(loc.member if loc.kind == "tar" else loc.file) or "image"
    stem = os.path.basename(loc.file).split(".", 1)[0] or "row"
    try:
        with Image.open(io.BytesIO(read_bytes(s) if data is None else data)) as im:
            ext = _FORMAT_EXT.get(im.format or "", f".{(im.format or 'img').lower()}")
    except Exception:  # noqa: BLE001 - not an image Pillow knows: keep the bytes under a neutral extension
        ext = ".img"
    return f"{stem}-row{loc.row}{ext}"


# ------------------------------------------------------------------------------------------------- tar shards
#: WebDataset's rule (as in ``webdataset`` and ``ray.data.read_webdataset``): the key is the member path up to the
#: first dot of its last component, the rest is the extension (``a/000123.seg.png`` → ``a/000123``, ``seg.png``)
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def key_and_ext(member: str) -> tuple[str | None, str | None]:
    """(key, extension) of a WebDataset member name; (None, None) when it has none (skipped by WebDataset)."""
    m = _KEY_EXT.match(member)
    return (m.group(1), m.group(2)) if m else (None, None)


@dataclass
class TarIndex:
    """Where each regular member of an uncompressed tar shard lies: ``members`` name → (data offset, size), in
    archive order. ``problem`` says why reading stopped early ("" when the whole archive was read),
    ``duplicates`` lists names stored twice (the last copy is read), ``size``/``mtime_ns`` identify the file."""

    path: str
    size: int
    mtime_ns: int
    members: dict[str, tuple[int, int]] = field(default_factory=dict)
    problem: str = ""
    duplicates: list[str] = field(default_factory=list)

    def truncated(self, name: str) -> bool:
        """True when the shard ends inside member ``name``'s data."""
        off, size = self.members[name]
        return off + size > self.size

    def read(self, name: str, limit: int | None = None) -> bytes:
        """The bytes of member ``name`` (at most ``limit``); raises ``OSError`` when it is missing or cut off."""
        shown = os.path.basename(self.path)
        if name not in self.members:
            raise FileNotFoundError(f"{shown} has no member {name!r}" + (f" ({self.problem})" if self.problem else ""))
        off, size = self.members[name]
        if self.truncated(name):
            raise OSError(f"{shown}: member {name} is cut off (the shard ends at byte {self.size:,}, the member "
                          f"needs {off + size:,}); the tar is truncated")
        n = size if limit is None else min(size, limit)
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
                raise OSError(f"{shown}: the shard changed since it was scanned; scan again")
            data = os.pread(f.fileno(), n, off)
        if len(data) != n:
            raise OSError(f"{shown}: member {name} could not be read whole ({len(data)} of {n} bytes)")
        return data


def _build_tar_index(path: str) -> TarIndex:
    st = os.stat(path)
    idx = TarIndex(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)
    last = ""
    with open(path, "rb") as f:
        try:
            tf = tarfile.open(fileobj=f, mode="r:")
        except tarfile.ReadError as e:
            raise ValueError(f"not a readable tar archive ({e})") from None
        try:
            while True:
                try:
                    ti = tf.next()
                except (tarfile.TarError, EOFError, OSError) as e:
                    idx.problem = _tar_damage(last, tf.offset, f"{type(e).__name__}: {e}")
                    break
                if ti is None:
                    break
                if not ti.isreg():
                    continue
                if ti.name in idx.members:
                    idx.duplicates.append(ti.name)
                idx.members[ti.name] = (ti.offset_data, ti.size)
                last = ti.name
            if not idx.problem:
                end = max(tf.offset, 0)
                f.seek(end)
                rest = f.read(1 << 20)
                if rest.strip(b"\0"):  # tarfile stops silently at a damaged header: anything but padding after it
                    idx.problem = _tar_damage(last, end, "unreadable tar header")
        finally:
            tf.close()
    return idx


def _tar_damage(last: str, offset: int, why: str) -> str:
    after = f"after member {last}" if last else "at its start"
    return f"damaged or truncated tar {after} (byte {offset:,}: {why}); the rest of the shard is not read"


class _LRU:
    """A small thread-safe cache of per-file readers, keyed by (path, size, mtime_ns): a changed file is re-read."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: str, build: Callable[[str], Any]) -> Any:
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = build(path)
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


_TAR_INDEXES = _LRU(32)


def tar_index(path: str | os.PathLike) -> TarIndex:
    """The (cached) :class:`TarIndex` of the tar shard at ``path``; raises ``OSError`` when it cannot be opened and
    ``ValueError`` when it is not a tar archive at all."""
    return _TAR_INDEXES.get(os.path.abspath(os.fspath(path)), _build_tar_index)


# --------------------------------------------------------------------------------------------- Parquet shards
IMAGE_COLUMN_NAMES = ("image", "img", "image_bytes", "jpg", "png", "webp", "bytes")
"""Names of a plain binary image column, in order of preference (a ``{bytes, path}`` struct needs no name)."""


def hf_features(schema: Any) -> dict:
    """The Hugging Face ``datasets`` features stored in a Parquet schema's metadata (``{}`` when there are none)."""
    meta = schema.metadata or {}
    raw = meta.get(b"huggingface")
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    feats = (doc.get("info") or {}).get("features") if isinstance(doc, dict) else None
    return feats if isinstance(feats, dict) else {}


def _is_bytes_struct(t: Any) -> bool:
    import pyarrow as pa

    if not pa.types.is_struct(t):
        return False
    i = t.get_field_index("bytes")
    return i >= 0 and (pa.types.is_binary(t.field(i).type) or pa.types.is_large_binary(t.field(i).type))


def image_column(schema: Any) -> str | None:
    """The column of a Parquet ``schema`` (``pyarrow.Schema``) that holds embedded images, or None: a column the
    Hugging Face features call an ``Image``, else the first ``{bytes, path}`` struct column, else a binary column
    named like an image (:data:`IMAGE_COLUMN_NAMES`)."""
    import pyarrow as pa

    feats = hf_features(schema)
    for name, f in feats.items():
        if isinstance(f, dict) and f.get("_type") == "Image" and name in schema.names:
            t = schema.field(name).type
            if _is_bytes_struct(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
                return name
    for fld in schema:
        if _is_bytes_struct(fld.type):
            return fld.name
    lower = {n.lower(): n for n in schema.names}
    for want in IMAGE_COLUMN_NAMES:
        n = lower.get(want)
        if n is not None and (pa.types.is_binary(schema.field(n).type) or
                              pa.types.is_large_binary(schema.field(n).type)):
            return n
    return None


def image_cells(column: Any) -> tuple[list, list]:
    """(bytes or None, original path or "") per row of an image column (a ``{bytes, path}`` struct or binary)."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_struct(column.type):
        data = column.field("bytes").to_pylist()
        has_path = column.type.get_field_index("path") >= 0
        paths = column.field("path").to_pylist() if has_path else [None] * len(data)
        valid = column.is_valid().to_pylist()
        data = [d if v else None for d, v in zip(data, valid)]
        return data, [p or "" for p in paths]
    return column.to_pylist(), [""] * len(column)


def embedded_bytes(data: bytes | None, orig_path: str = "") -> bytes:
    """``data``, the bytes of one cell of an image column; a missing or empty image raises ``ValueError`` (the same
    message for every reader of Parquet rows, local or Ray). ``orig_path``: the struct's ``path`` field."""
    if data is None:
        hint = f" (image.path = {orig_path!r}: the image is not embedded)" if orig_path else ""
        raise ValueError(f"no image bytes in this row{hint}")
    if not data:
        raise ValueError("the image is empty (0 bytes)")
    return bytes(data)


_PARQUET_BATCH = 64


class _ParquetRows:
    """Reads the image column of one Parquet shard row by row, streaming: one batch of ``_PARQUET_BATCH`` rows is
    held at a time, and asking for rows in increasing order reads each page once (a row behind the current
    position restarts the stream at its row group)."""

    def __init__(self, path: str):
        import pyarrow.parquet as pq

        self.path = path
        self.pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
        self.column = image_column(self.pf.schema_arrow)
        md = self.pf.metadata
        self.starts = [0]
        for g in range(md.num_row_groups):
            self.starts.append(self.starts[-1] + md.row_group(g).num_rows)
        self.lock = threading.Lock()
        self._it = None
        self._group = -1
        self._batch_start = 0
        self._batch: tuple[list, list] = ([], [])

    def get(self, row: int) -> bytes:
        shown = os.path.basename(self.path)
        if self.column is None:
            raise ValueError(f"{shown} has no embedded image column")
        if not 0 <= row < self.starts[-1]:
            raise ValueError(f"{shown} has no row {row} ({self.starts[-1]:,} rows)")
        with self.lock:
            data, orig = self._row(row)
        return embedded_bytes(data, orig)

    def _row(self, row: int) -> tuple[bytes | None, str]:
        import bisect

        g = bisect.bisect_right(self.starts, row) - 1
        in_batch = self._batch_start <= row < self._batch_start + len(self._batch[0])
        if not (g == self._group and in_batch):
            if g != self._group or row < self._batch_start:
                self._it = self.pf.iter_batches(batch_size=_PARQUET_BATCH, row_groups=[g], columns=[self.column],
                                                use_threads=False)
                self._group, self._batch_start, self._batch = g, self.starts[g], ([], [])
            while not self._batch_start <= row < self._batch_start + len(self._batch[0]):
                self._batch_start += len(self._batch[0])
                self._batch = image_cells(next(self._it).column(0))
        i = row - self._batch_start
        return self._batch[0][i], self._batch[1][i]


_PARQUET_READERS = _LRU(8)


def _parquet_reader(path: str) -> _ParquetRows:
    return _PARQUET_READERS.get(os.path.abspath(path), _ParquetRows)
