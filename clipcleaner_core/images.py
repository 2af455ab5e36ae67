"""Image decoding: one place where a sample's bytes become an upright 8-bit RGB image.

Every reader of images goes through here: the dataset stage (which file types count as images), both embedding
engines (:func:`decode_for_embedding`, the one decode path, and :func:`decode_failure`, the one way a decode error
becomes the reported reason), the thumbnails of the app and the exports.

- :func:`load_image` — decode with EXIF orientation, any Pillow mode converted to RGB (:func:`to_rgb`), and a
  decompression-bomb guard that refuses an image from its header alone.
- :func:`limit_aspect` — bound extreme aspect ratios before a CLIP transform scales them up.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

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


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Decode an image as upright 8-bit RGB.

    EXIF orientation is applied; CMYK, 16-bit, palette, grayscale and LA/RGBA images are converted (transparent
    areas composited on white). Raises ``OSError`` or ``ValueError`` with a message when it cannot be decoded
    (any other decoder exception is re-raised as ``ValueError`` naming its type). Images with more pixels than
    ``max_pixels`` (default ``PIL.Image.MAX_IMAGE_PIXELS``) are refused from their header alone, before any
    pixel is decoded (decompression-bomb guard).
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
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


def decode_for_embedding(src: str | os.PathLike, preprocess: Callable[[Image.Image], Any]) -> Decoded:
    """Decode ``src`` and apply the encoder's ``preprocess`` (after :func:`limit_aspect`); never raises for a bad
    image: any failure comes back as ``ok=False`` with :func:`decode_failure`'s reason. Used by the local and the
    Ray engine alike."""
    try:
        im = load_image(src)
        return Decoded(preprocess(limit_aspect(im)), im, True, "")
    except Exception as e:  # noqa: BLE001 - any decode failure is reported, not fatal
        return Decoded(None, None, False, decode_failure(e))


def stand_in(preprocess: Callable[[Image.Image], Any]) -> Any:
    """The encoder input that takes the place of an image that failed to decode (a white 32×32 image,
    preprocessed), so that a batch keeps its shape; its features are discarded."""
    return preprocess(Image.new("RGB", (32, 32), (255, 255, 255)))

