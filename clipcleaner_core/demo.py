"""The offline demo dataset: scikit-learn's bundled handwritten digits with injected label noise.

Needs no download and no model weights. Writes ``DIR/images/*.png`` (32×32, the 8×8 digits upscaled),
``DIR/labels.csv`` (``path,label`` with noise), ``DIR/truth.csv`` (``path,label`` clean) and
``DIR/classes.txt``; ``DIR/demo.json`` records how the noise was made.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .csvio import write_safe_csv
from .noise import DIGITS_PAIRS, centroid_similarity, hard_noise, pairwise_noise, symmetric_noise

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NOISE_KINDS = ("sym", "asym", "hard", "mix")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 8, 8) with dark ink on white, labels int (N,)) from scikit-learn's digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = 255 - np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return img, d.target.astype(np.int64)


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Standardised raw pixels (N, H*W), the same features the ``pixels`` encoder computes."""
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    mu, sd = x.mean(0), x.std(0)
    return (x - mu) / np.where(sd > 1e-8, sd, 1.0)


def inject_noise(y: np.ndarray, features: np.ndarray, n_classes: int, noise: str, rate: float,
                 seed: int) -> np.ndarray:
    """Noisy copy of ``y`` under the named noise model (see :mod:`clipcleaner_core.noise`).

    ``mix`` = half the rate symmetric, half hard (flips to the most similar class), on disjoint samples.
    """
    if noise == "sym":
        return symmetric_noise(y, n_classes, rate, seed)
    if noise == "asym":
        return pairwise_noise(y, DIGITS_PAIRS, rate, seed)
    sim = centroid_similarity(features, y, n_classes)
    if noise == "hard":
        return hard_noise(y, sim, rate, seed)
    if noise == "mix":
        hard = hard_noise(y, sim, rate / 2, seed)
        untouched = hard == y
        sym = symmetric_noise(y, n_classes, rate / 2 * len(y) / max(untouched.sum(), 1), seed + 1)
        return np.where(untouched, sym, hard)
    raise ValueError(f"unknown noise kind {noise!r}; choose one of {', '.join(NOISE_KINDS)}")


def write_demo(out_dir: str | Path, noise: str = "mix", rate: float | None = None, seed: int = 0,
               scale: int = 4) -> dict:
    """Write the digits demo to ``out_dir``; returns a summary dict (paths, counts, noise settings).

    ``rate`` defaults to 0.3 for ``mix`` and 0.2 otherwise. Idempotent for the same arguments.
    """
    if noise not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {noise!r}; choose one of {', '.join(NOISE_KINDS)}")
    rate = (0.3 if noise == "mix" else 0.2) if rate is None else float(rate)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, y = digits_arrays()
    k = len(DIGIT_NAMES)
    noisy = inject_noise(y, pixel_features(images), k, noise, rate, seed)
    paths = []
    for i, im in enumerate(images):
        rel = f"images/{i:05d}.png"
        p = out / rel
        if not p.exists():
            Image.fromarray(im, mode="L").resize((8 * scale, 8 * scale), Image.NEAREST).save(p, optimize=True)
        paths.append(rel)
    names = np.array(DIGIT_NAMES)
    write_safe_csv(out / "labels.csv", pd.DataFrame({"path": paths, "label": names[noisy]}))
    write_safe_csv(out / "truth.csv", pd.DataFrame({"path": paths, "label": names[y]}))
    (out / "classes.txt").write_text("\n".join(DIGIT_NAMES) + "\n", encoding="utf-8")
    summary = {
        "dataset": "scikit-learn digits (8x8, upscaled to 32x32 PNG)",
        "samples": int(len(y)), "classes": k, "noise": noise, "rate": rate, "seed": seed,
        "flipped": int((noisy != y).sum()),
        "labels": str(out / "labels.csv"), "truth": str(out / "truth.csv"), "classes_file": str(out / "classes.txt"),
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
