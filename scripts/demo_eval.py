"""Measure every detector on the digits demo (pixels encoder) at several noise settings; prints a Markdown table.

Usage: .venv/bin/python scripts/demo_eval.py [--seeds 0 1 2] [--json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from clipcleaner_core.config import EncoderConfig
from clipcleaner_core.demo import write_demo
from clipcleaner_core.evaluate import evaluate_workspace
from clipcleaner_core.pipeline import scan

SETTINGS = [("sym", 0.2), ("sym", 0.4), ("hard", 0.2), ("hard", 0.3), ("asym", 0.3), ("mix", 0.3)]
KEYS = ["ensemble", "clipcleaner", "cleanlab", "knn"]  # registry detector keys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data, ws = Path(tmp) / "data", Path(tmp) / "ws"
        for noise, rate in SETTINGS:
            per = {k: {"f1": [], "auroc": []} for k in KEYS}
            for seed in a.seeds:
                write_demo(data, noise=noise, rate=rate, seed=seed)
                scan(data / "labels.csv", ws, classes_file=data / "classes.txt",
                     encoder=EncoderConfig(encoder="pixels"))
                det = evaluate_workspace(ws, data / "truth.csv")["detectors"]
                for k in KEYS:
                    per[k]["f1"].append(det[k]["f1"])
                    per[k]["auroc"].append(det[k]["auroc"])
            rows.append({"noise": noise, "rate": rate,
                         **{k: {m: float(np.mean(v)) for m, v in per[k].items()} for k in KEYS}})
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"seeds: {a.seeds}; F1 of the flags / AUROC of the score")
    print("| noise | ensemble (default) | clipcleaner (METHOD.md) | cleanlab | k-NN |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k]['f1']:.3f} / {r[k]['auroc']:.3f}" for k in KEYS]
        print(f"| {r['noise']} {int(r['rate'] * 100)}% | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
