"""Test sets for the issue types beyond wrong labels, built from scikit-learn's digits like :mod:`demo`.

Each writer lays out ``DIR/images/*.png``, ``DIR/labels.csv`` (what a user would scan), ``DIR/truth.csv`` (the
clean labels plus the issue columns :mod:`evaluate` reads: ``ood`` = 1 for an image of none of the classes,
``duplicate_of`` = the path of the image a file copies) and ``DIR/classes.txt``. Everything is deterministic for
a seed.

- :func:`write_open_set`: the digits plus a share of foreign images (textures: noise, stripes, checkerboards,
  gradients, blobs, rings, plaids) given random digit labels;
- :func:`write_duplicate_set`: the digits plus exact copies and shifted / noised copies of some of them, most
  under another label, and a ``split`` column with some copies in another split than their original;
- :func:`write_noise_classes`: classes that are pure noise (nothing separates them), for the health warning.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .csvio import write_safe_csv
from .demo import DIGIT_NAMES, digits_arrays, inject_noise, pixel_features

SIZE = 32
TEXTURES = ("noise", "stripes", "checker", "gradient", "blobs", "rings", "plaid", "speckle")


def texture(kind: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One foreign image (size, size) uint8 of the texture family ``kind`` (see :data:`TEXTURES`)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    if kind == "noise":
        a = rng.normal(0.5, rng.uniform(0.1, 0.3), (size, size))
    elif kind == "stripes":
        th, f = rng.uniform(0, np.pi), rng.uniform(2, 8)
        a = 0.5 + 0.5 * np.sin(2 * np.pi * f * (np.cos(th) * xx + np.sin(th) * yy) + rng.uniform(0, 6.3))
    elif kind == "checker":
        n = int(rng.integers(2, 9))
        a = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float64)
    elif kind == "gradient":
        th = rng.uniform(0, 2 * np.pi)
        a = np.cos(th) * xx + np.sin(th) * yy
        a = (a - a.min()) / max(np.ptp(a), 1e-9)
    elif kind == "blobs":
        a = np.zeros((size, size))
        for _ in range(int(rng.integers(3, 9))):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
            a += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        a = a / max(a.max(), 1e-9)
    elif kind == "rings":
        cx, cy, f = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(3, 10)
        a = 0.5 + 0.5 * np.cos(2 * np.pi * f * np.hypot(xx - cx, yy - cy))
    elif kind == "plaid":
        f1, f2 = rng.uniform(2, 6), rng.uniform(2, 6)
        a = 0.5 + 0.25 * (np.sin(2 * np.pi * f1 * xx) + np.sin(2 * np.pi * f2 * yy))
    elif kind == "speckle":
        a = (rng.uniform(0, 1, (size, size)) < rng.uniform(0.05, 0.5)).astype(np.float64)
    else:
        raise ValueError(f"unknown texture {kind!r}; one of {', '.join(TEXTURES)}")
    lo, hi = sorted(rng.uniform(0, 1, 2))
    lo, hi = lo * 0.5, 0.5 + hi * 0.5
    return np.clip((lo + (hi - lo) * np.clip(a, 0, 1)) * 255, 0, 255).astype(np.uint8)


def _digit_images(scale: int = 4) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The digits upscaled to 32×32 (nearest, as the demo), their labels and their pixel features."""
    images, y = digits_arrays()
    big = [np.asarray(Image.fromarray(im, mode="L").resize((8 * scale, 8 * scale), Image.NEAREST)) for im in images]
    return big, y, pixel_features(images)


def _write_pngs(out: Path, images: list[np.ndarray]) -> list[str]:
    """Grayscale (H, W) uint8 images as ``out/images/00000.png`` …; returns their paths relative to ``out``."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        rel = f"images/{i:05d}.png"
        Image.fromarray(im, mode="L").save(out / rel)
        paths.append(rel)
    return paths


def _write(out: Path, images: list[np.ndarray], labels: list[str], truth: pd.DataFrame,
           extra: dict[str, list] | None = None) -> list[str]:
    paths = _write_pngs(out, images)
    write_safe_csv(out / "labels.csv", pd.DataFrame({"path": paths, "label": labels, **(extra or {})}))
    truth = truth.copy()
    truth.insert(0, "path", paths)
    write_safe_csv(out / "truth.csv", truth)
    (out / "classes.txt").write_text("\n".join(DIGIT_NAMES) + "\n", encoding="utf-8")
    return paths


def write_open_set(out_dir: str | Path, share: float = 0.1, noise: str = "sym", rate: float = 0.2,
                   seed: int = 0) -> dict:
    """Digits with label noise (``noise``, ``rate``) plus ``share`` × N foreign textures with random digit labels.

    Truth: the foreign images have ``ood`` = 1 and their (random) given label as label, so the label-error
    metrics count only the digits."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    digits, y, feats = _digit_images()
    k = len(DIGIT_NAMES)
    noisy = inject_noise(y, feats, k, noise, rate, seed)
    n_ood = int(round(share * len(y)))
    foreign = [texture(TEXTURES[i % len(TEXTURES)], rng) for i in range(n_ood)]
    f_labels = rng.integers(0, k, n_ood)
    order = rng.permutation(len(y) + n_ood)
    imgs = digits + foreign
    given = np.concatenate([noisy, f_labels])
    clean = np.concatenate([y, f_labels])
    is_ood = np.r_[np.zeros(len(y), dtype=int), np.ones(n_ood, dtype=int)]
    names = np.array(DIGIT_NAMES)
    truth = pd.DataFrame({"label": names[clean[order]], "ood": is_ood[order]})
    _write(out, [imgs[i] for i in order], list(names[given[order]]), truth)
    summary = {"samples": int(len(order)), "ood": n_ood, "flipped": int((noisy != y).sum()), "seed": seed,
               "labels": str(out / "labels.csv"), "truth": str(out / "truth.csv"),
               "classes_file": str(out / "classes.txt")}
    (out / "synthetic.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def perturb(im: np.ndarray, rng: np.random.Generator, max_shift: int = 2, noise: float = 8.0) -> np.ndarray:
    """A near copy: shifted by 1..``max_shift`` pixels (edge pixels repeated) plus Gaussian noise of ``noise``
    grey levels."""
    dx, dy = (int(rng.integers(1, max_shift + 1)) * int(rng.choice([-1, 1])) for _ in range(2))
    a = np.roll(np.asarray(im, dtype=np.float64), (dy, dx), axis=(0, 1))
    if dy > 0:
        a[:dy] = a[dy:dy + 1]
    else:
        a[dy:] = a[dy - 1:dy]
    if dx > 0:
        a[:, :dx] = a[:, dx:dx + 1]
    else:
        a[:, dx:] = a[:, dx - 1:dx]
    return np.clip(a + rng.normal(0, noise, a.shape), 0, 255).astype(np.uint8)


def recompress(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A near copy as re-saving makes one: contrast ×0.95–1.05, brightness ±5, Gaussian noise of 3 grey levels,
    then JPEG at quality 70–95."""
    import io

    a = np.asarray(im, dtype=np.float64) * rng.uniform(0.95, 1.05) + rng.uniform(-5, 5)
    a = np.clip(a + rng.normal(0, 3.0, a.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, mode="L").save(buf, "JPEG", quality=int(rng.integers(70, 96)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def write_duplicate_set(out_dir: str | Path, n_exact: int = 25, n_near: int = 25, n_shifted: int = 25,
                        wrong_label: float = 0.8, leak: float = 0.4, seed: int = 0, limit: int | None = None) -> dict:
    """The clean digits plus ``n_exact`` exact copies, ``n_near`` noised and re-encoded copies
    (:func:`recompress`) and ``n_shifted`` copies shifted by one pixel with noise (:func:`perturb`) of distinct
    originals; a ``wrong_label`` share of the copies carries another label. ``labels.csv`` has a ``split`` column
    (80 % train, 20 % test); a ``leak`` share of the copies is put in the other split than its original.
    ``limit``: use only the first ``limit`` digits (a smaller set for quick tests).

    Truth: ``duplicate_of`` = the original's path for each copy (empty elsewhere); ``dup_kind`` exact / near /
    shifted. (The 32×32 digits are 8×8 images upscaled: distinct digits are as close in pixels as a one-pixel
    shift makes a copy, so the shifted copies measure a limit rather than a target.)"""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    digits, y, _ = _digit_images()
    if limit is not None:
        digits, y = digits[:limit], y[:limit]
    n = len(y)
    split = np.where(rng.uniform(0, 1, n) < 0.8, "train", "test").astype(object)
    src = rng.choice(n, size=n_exact + n_near + n_shifted, replace=False)
    imgs, labels, clean, splits = list(digits), list(y), list(y), list(split)
    dup_of: list[str] = [""] * n
    kind: list[str] = [""] * n
    for j, s in enumerate(src):
        kind_j = "exact" if j < n_exact else "near" if j < n_exact + n_near else "shifted"
        imgs.append(digits[s].copy() if kind_j == "exact" else recompress(digits[s], rng) if kind_j == "near"
                    else perturb(digits[s], rng, max_shift=1, noise=3.0))
        lab = int(y[s])
        if rng.uniform() < wrong_label:
            lab = int((lab + rng.integers(1, 10)) % 10)
        labels.append(lab)
        clean.append(int(y[s]))
        other = "test" if split[s] == "train" else "train"
        splits.append(other if rng.uniform() < leak else split[s])
        dup_of.append(f"images/{s:05d}.png")
        kind.append(kind_j)
    names = np.array(DIGIT_NAMES)
    truth = pd.DataFrame({"label": names[np.asarray(clean)], "duplicate_of": dup_of, "dup_kind": kind})
    _write(out, imgs, list(names[np.asarray(labels)]), truth, {"split": splits})
    summary = {"samples": len(imgs), "exact": n_exact, "near": n_near, "shifted": n_shifted, "seed": seed,
               "labels": str(out / "labels.csv"), "truth": str(out / "truth.csv"),
               "classes_file": str(out / "classes.txt")}
    (out / "synthetic.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def write_noise_classes(out_dir: str | Path, n: int = 600, classes: int = 3, seed: int = 0) -> dict:
    """``n`` noise textures in ``classes`` classes that nothing tells apart (labels drawn at random)."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    imgs = [texture(TEXTURES[int(rng.integers(len(TEXTURES)))], rng) for _ in range(n)]
    lab = rng.integers(0, classes, n)
    names = [f"class{c}" for c in range(classes)]
    paths = _write_pngs(out, imgs)
    write_safe_csv(out / "labels.csv", pd.DataFrame({"path": paths, "label": np.array(names)[lab]}))
    (out / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return {"samples": n, "labels": str(out / "labels.csv"), "classes_file": str(out / "classes.txt")}
