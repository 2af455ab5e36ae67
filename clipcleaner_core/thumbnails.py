"""Small cached thumbnails of the samples, so a review grid never sends full images to the browser.

Thumbnails are written once into ``WS/cache/thumbs/<size>/<id[:2]>/<sample_id>.jpg`` (JPEG, quality 85; images
are decoded with :func:`clipcleaner_core.images.load_image`, so EXIF rotation, CMYK, 16-bit and transparency are
handled exactly as in the embedding stage). A sample is given by its ``abs_path``: an image file or an image
locator of a sample inside a WebDataset / Parquet shard (:mod:`clipcleaner_core.images`). A thumbnail older than
the file holding its image (the image, or its shard) is regenerated. An image that
cannot be decoded gets a grey stand-in card (JPEG too) with the reason printed on it, so the grid still shows the card.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw

from .images import load_image, parse_locator, source_file
from .workspace import Workspace, atomic_write_bytes

DEFAULT_SIZE = 192
"""Longest side of a grid thumbnail, in pixels."""
LARGE_SIZE = 512
"""Longest side of the detail-view image, in pixels."""
_MAX_DECODE_PIXELS = 200_000_000


def thumbs_dir(ws: Workspace, size: int = DEFAULT_SIZE) -> Path:
    return ws.cache_dir / "thumbs" / str(int(size))


def thumbnail_path(ws: Workspace, sample_id: str, size: int = DEFAULT_SIZE) -> Path:
    """Where the thumbnail of ``sample_id`` lives (it may not exist yet)."""
    return thumbs_dir(ws, size) / sample_id[:2] / f"{sample_id}.jpg"


def _unreadable_card(size: int, text: str) -> bytes:
    import io

    im = Image.new("RGB", (size, size), (226, 229, 234))
    d = ImageDraw.Draw(im)
    words, lines, line = text.split(), [], ""
    for w in words:  # naive wrap at ~22 characters
        if len(line) + len(w) + 1 > 22:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    for i, ln in enumerate(lines[:8]):
        d.text((8, 8 + 14 * i), ln, fill=(90, 96, 110))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def make_thumbnail(src: str | os.PathLike, size: int = DEFAULT_SIZE) -> bytes:
    """JPEG bytes of ``src`` (a path or an image locator) scaled so its longest side is ``size`` (small images such
    as 32x32 digits are enlarged
    at most 8x with nearest-neighbour, so pixels stay crisp). Raises on undecodable images."""
    import io

    im = load_image(src, max_pixels=_MAX_DECODE_PIXELS)
    w, h = im.size
    scale = size / max(w, h, 1)
    if scale < 1:
        im.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    elif scale > 1:
        s = min(scale, 8.0)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85, optimize=True)
    return buf.getvalue()


def _fresh(out: Path, abs_path: str) -> bool:
    """True when the thumbnail ``out`` exists and is not older than its source image."""
    try:
        have = out.stat()
    except OSError:
        return False
    try:
        return have.st_mtime >= os.stat(source_file(abs_path)).st_mtime  # a shard sample: the shard's file
    except OSError:
        return True  # the source is gone: keep showing what we have


def ensure_thumbnail(ws: Workspace, sample_id: str, abs_path: str, size: int = DEFAULT_SIZE) -> Path:
    """Path of an up-to-date thumbnail of one sample, creating it (atomically) when missing or stale."""
    out = thumbnail_path(ws, sample_id, size)
    if _fresh(out, abs_path):
        return out
    try:
        data = make_thumbnail(abs_path, size)
    except Exception as e:  # noqa: BLE001 - any decode problem becomes a visible stand-in card
        data = _unreadable_card(size, f"cannot show image: {type(e).__name__}: {e}")
    atomic_write_bytes(out, data)
    return out


def ensure_thumbnails(ws: Workspace, sample_ids: Sequence[str], abs_paths: Sequence[str],
                      size: int = DEFAULT_SIZE, workers: int = 4) -> list[Path]:
    """Thumbnails of several samples (same order), the missing ones generated in a small thread pool (in the order
    of their locators, so that rows of one Parquet shard are read in one pass)."""
    outs = [thumbnail_path(ws, s, size) for s in sample_ids]
    missing = [i for i, (o, p) in enumerate(zip(outs, abs_paths)) if not _fresh(o, p)]
    if len(missing) <= 2:
        for i in missing:
            ensure_thumbnail(ws, sample_ids[i], abs_paths[i], size)
    else:
        missing.sort(key=lambda i: _read_order(abs_paths[i]))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            list(ex.map(lambda i: ensure_thumbnail(ws, sample_ids[i], abs_paths[i], size), missing))
    return outs


def _read_order(abs_path: str) -> tuple:
    try:
        loc = parse_locator(abs_path)
    except ValueError:
        return ("", "", -1)
    return loc.file, loc.member, loc.row
