"""Per-image statistics taken from the decode the embedding stage already does, and the unusable-image issue type.

:func:`image_stats` is called once per image in the decode path of both engines (``embeddings._ImageSet`` and
``ray_engine._decode_batch``) on the decoded RGB image, before any resize or crop; its values travel through the
embedding chunk cache (:func:`pack`) and reach scoring as a table (:func:`stats_table`). Nothing here decodes a
file.

The statistics follow CleanVision's definitions where it has them (brightness percentiles of the luminance
``sqrt(0.241 R² + 0.691 G² + 0.068 B²)``, edge strength on a ≤ 64 px grayscale copy, histogram entropy, size and
aspect ratio); CleanVision itself is not used because it decodes the dataset again and its fixed thresholds flag
86 % of the digits demo as "low information" (see the README, "Issue types").

:func:`quality_issues` turns them into flags: **dark** (99th luminance percentile < 0.20), **light** (5th
percentile > 0.95), **blurry** and **low_information** (edge strength / entropy far below the dataset's own: a
modified z-score < −3.5 on a log scale and under half the dataset's median; or an entropy under 0.5 bit),
**odd_size** (modified z of log area beyond ±3.5 and at least 4× off the median), **odd_aspect** (short side /
long side < 0.35).
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

#: numeric statistics of one image, in this order in the cache (float32)
STAT_FIELDS: tuple[str, ...] = ("width", "height", "brightness", "bright_p05", "bright_p99", "contrast", "edges",
                                "entropy")
#: side of the grayscale thumbnail descriptor used for near-duplicates (DESC_SIDE² values per image)
DESC_SIDE = 16
DESC_DIM = DESC_SIDE * DESC_SIDE
#: version of what :func:`image_stats` computes; part of the embedding cache identity
STATS_VERSION = 2
BLUR_SIDE = 64  # CleanVision's MAX_RESOLUTION_FOR_BLURRY_DETECTION
STATS_SIDE = 256  # the statistics other than the hash are taken on a copy at most this long
QUALITY_KINDS: tuple[str, ...] = ("dark", "light", "blurry", "low_information", "odd_size", "odd_aspect")
DARK_P99 = 0.20
LIGHT_P05 = 0.95
ODD_ASPECT = 0.35
ROBUST_Z = 3.5
MIN_ENTROPY_BITS = 0.5


def image_stats(img: Image.Image) -> dict:
    """Statistics of one decoded image (any Pillow mode; converted to RGB / L here, never resized in place).

    Returns ``{field: float for STAT_FIELDS}`` (width/height in pixels; brightness, its 5th/99th percentiles and
    contrast (std) of the luminance in [0, 1]; ``edges``: std of the edge filter on a grayscale copy at most
    64 px wide (CleanVision's blurriness); ``entropy``: of the grayscale histogram, bits), ``"content_hash"``
    (16 hex chars of SHA-1 over the size and the RGB pixels: equal for identical pixels whatever the file format)
    and ``"descriptor"`` (float32 (DESC_DIM,): the 16×16 grayscale thumbnail, box-downsampled, blurred, centred,
    unit norm; zeros for a flat image). Everything but the hash is computed on a copy at most
    :data:`STATS_SIDE` px on its long side (box filter), so the cost does not grow with the image.
    """
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    w, h = rgb.size
    digest = hashlib.sha1(f"{w}x{h}:".encode())
    digest.update(rgb.tobytes())
    ratio = max(w, h) / STATS_SIDE
    small = rgb.resize((max(int(w // ratio), 1), max(int(h // ratio), 1)), Image.BOX) if ratio > 1 else rgb
    a = np.asarray(small, dtype=np.float32)
    lum = np.sqrt(0.241 * a[..., 0] ** 2 + 0.691 * a[..., 1] ** 2 + 0.068 * a[..., 2] ** 2).ravel() / 255.0
    hist = np.bincount(np.minimum((lum * 1023).astype(np.int64), 1023), minlength=1024).cumsum()
    p05, p99 = (np.searchsorted(hist, q * (len(lum) - 1)) / 1023.0 for q in (0.05, 0.99)) if len(lum) else (0, 0)
    gray = small.convert("L")
    r2 = max(gray.size) / BLUR_SIDE
    blur_src = gray.resize((max(int(gray.size[0] // r2), 1), max(int(gray.size[1] // r2), 1))) if r2 > 1 else gray
    edges = np.asarray(blur_src.filter(ImageFilter.FIND_EDGES), dtype=np.float32)
    return {"width": float(w), "height": float(h), "brightness": float(lum.mean()) if lum.size else 0.0,
            "bright_p05": float(p05), "bright_p99": float(p99), "contrast": float(lum.std()) if lum.size else 0.0,
            "edges": float(edges.std()) if edges.size else 0.0, "entropy": float(gray.entropy()),
            "content_hash": digest.hexdigest()[:16], "descriptor": descriptor(gray)}


def _blur_matrix(n: int, sigma: float = 1.0) -> np.ndarray:
    """(n, n) Gaussian blur along one axis with edge pixels repeated (scipy's ``mode="nearest"``)."""
    r = int(np.ceil(4 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    m = np.zeros((n, n))
    for i in range(n):
        for j, wgt in zip(range(i - r, i + r + 1), k):
            m[i, min(max(j, 0), n - 1)] += wgt
    return m


_BLUR = _blur_matrix(DESC_SIDE)


def descriptor(gray: Image.Image) -> np.ndarray:
    """(DESC_DIM,) float32: ``gray`` box-downsampled to 16×16, Gaussian-blurred (σ 1 px), mean removed, unit L2
    norm (all zeros when the thumbnail is flat). Cosine between two of them is a pixel-level similarity that
    ignores resolution, file format, brightness offsets and contrast."""
    g = np.asarray(gray.resize((DESC_SIDE, DESC_SIDE), Image.BOX), dtype=np.float64)
    g = (_BLUR @ g @ _BLUR.T).ravel()
    g -= g.mean()
    norm = np.linalg.norm(g)
    return (g / norm if norm > 1e-6 else np.zeros_like(g)).astype(np.float32)


def no_stats() -> dict:
    """The stand-in of :func:`image_stats` for an image that could not be decoded (NaN, empty hash, zeros)."""
    return {**{f: float("nan") for f in STAT_FIELDS}, "content_hash": "",
            "descriptor": np.zeros(DESC_DIM, dtype=np.float32)}


def pack(stats: Mapping) -> tuple[np.ndarray, str, np.ndarray]:
    """(numeric (len(STAT_FIELDS),) float32, content hash, descriptor (DESC_DIM,) float32) of one stats dict,
    as the embedding chunk cache stores them. Accepts a collated row (tensors / numpy scalars) too."""
    vals = np.array([float(stats[f]) for f in STAT_FIELDS], dtype=np.float32)
    desc = np.asarray(stats["descriptor"], dtype=np.float32).reshape(-1)
    return vals, str(stats["content_hash"]), desc


def row(columns: Mapping, j: int) -> dict:
    """Row ``j`` of a batch of stats dicts collated column-wise (torch's ``default_collate`` of the local engine,
    or the ``stat_*`` columns of a Ray batch, see :func:`batch_columns`)."""
    get = (lambda k: columns[k]) if "content_hash" in columns else (lambda k: columns[f"stat_{k}"])
    return {**{f: float(get(f)[j]) for f in STAT_FIELDS}, "content_hash": str(get("content_hash")[j]),
            "descriptor": np.asarray(get("descriptor")[j], dtype=np.float32)}


def batch_columns(rows: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """A list of stats dicts as numpy columns ``stat_<field>`` (for Ray Data batches)."""
    out = {f"stat_{f}": np.array([float(r[f]) for r in rows], dtype=np.float64) for f in STAT_FIELDS}
    out["stat_content_hash"] = np.array([str(r["content_hash"]) for r in rows], dtype=object)
    out["stat_descriptor"] = np.stack([np.asarray(r["descriptor"], dtype=np.float32) for r in rows]) if rows else \
        np.zeros((0, DESC_DIM), dtype=np.float32)
    return out


def stats_table(values: np.ndarray, hashes: Sequence[str], sample_ids: Sequence[str]) -> pd.DataFrame:
    """The published ``image_stats`` table: ``sample_id``, each of :data:`STAT_FIELDS`, ``content_hash``."""
    v = np.asarray(values, dtype=np.float32).reshape(len(sample_ids), len(STAT_FIELDS))
    t = pd.DataFrame(v, columns=list(STAT_FIELDS))
    t.insert(0, "sample_id", list(sample_ids))
    t["content_hash"] = [str(h) for h in hashes]
    return t


def robust_z(x: np.ndarray, constant: str = "outlier") -> np.ndarray:
    """Modified z-score (Iglewicz & Hoaglin): (x − median) / (1.4826 · MAD). When the MAD is 0 (most values equal,
    e.g. a dataset of one image size) a value equal to the median scores 0 and any other ±inf
    (``constant="outlier"``), or every value scores 0 (``constant="zero"``)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return np.zeros_like(x)
    med = np.median(x[ok])
    mad = 1.4826 * np.median(np.abs(x[ok] - med))
    if mad <= 1e-12:
        d = np.where(ok, x - med, 0.0)
        out = np.zeros_like(d)
        if constant == "outlier":
            far = np.abs(d) > 1e-9
            out[far] = np.copysign(np.inf, d[far])
        return out
    return np.where(ok, (x - med) / mad, 0.0)


def quality_issues(stats: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Unusable-image flags for the rows of ``stats`` (columns :data:`STAT_FIELDS`).

    Returns (``quality_issues`` per row: the kinds of :data:`QUALITY_KINDS` that apply, ``;``-separated, "" for
    none; ``flag`` (N,) bool; ``score`` (N,) float ≥ 0, higher = worse: the largest margin past a threshold, in
    robust-z units for the dataset-relative kinds and ×10 of the absolute ones)."""
    n = len(stats)
    if n == 0:
        return [], np.zeros(0, dtype=bool), np.zeros(0)
    w = stats["width"].to_numpy(dtype=np.float64)
    h = stats["height"].to_numpy(dtype=np.float64)
    p05 = stats["bright_p05"].to_numpy(dtype=np.float64)
    p99 = stats["bright_p99"].to_numpy(dtype=np.float64)
    ent = stats["entropy"].to_numpy(dtype=np.float64)
    edges = stats["edges"].to_numpy(dtype=np.float64)
    z_edges = robust_z(np.log1p(edges))
    z_ent = robust_z(np.log1p(ent))
    area = np.log(np.maximum(w * h, 1.0))
    z_area = robust_z(area)
    med_area = np.median(area[np.isfinite(area)]) if np.isfinite(area).any() else 0.0
    aspect = np.minimum(w, h) / np.maximum(np.maximum(w, h), 1.0)
    def below_half_median(v: np.ndarray) -> np.ndarray:  # > 0 when v is under half the dataset's median
        med = np.median(v[np.isfinite(v)]) if np.isfinite(v).any() else 0.0
        return (0.5 * med - v) / med * 10 if med > 0 else np.full(len(v), -1.0)

    margins = {
        "dark": (DARK_P99 - p99) * 10,
        "light": (p05 - LIGHT_P05) * 10,
        # relative kinds need both: an outlier for this dataset AND less than half its median
        "blurry": np.minimum(-z_edges - ROBUST_Z, below_half_median(edges)),
        "low_information": np.maximum(np.minimum(-z_ent - ROBUST_Z, below_half_median(ent)),
                                      (MIN_ENTROPY_BITS - ent) * 10),
        "odd_size": np.where(np.abs(area - med_area) > np.log(4.0), np.abs(z_area) - ROBUST_Z, -1.0),
        "odd_aspect": (ODD_ASPECT - aspect) * 10,
    }
    # a flat image has no edges because it has no content: call it low information, not blurry
    margins["blurry"] = np.where(margins["low_information"] > 0, -1.0, margins["blurry"])
    m = np.stack([np.clip(np.nan_to_num(margins[k], nan=-1.0), -1.0, 100.0) for k in QUALITY_KINDS], axis=1)
    hit = m > 0
    names = np.array(QUALITY_KINDS, dtype=object)
    issues = [";".join(names[r]) for r in hit]
    return issues, hit.any(axis=1), np.maximum(m.max(axis=1), 0.0)
