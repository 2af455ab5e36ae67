"""Validate the review loop on the digits demo (pixels encoder): the queue order and the errors-left interval.

For every noise setting and seed: scan the demo, then (1) errors among the first n_errors of the queue ordered by
the scan's ``noise_score`` vs by the ensemble margin (the queue's rule), with the average precision of each; (2)
oracle simulations (``clipcleaner_core.simulate``) — static and random reviews of 25 / 50 / 100 % of the error
count with spot-check draws 0, 1, 2, active reviews of 50 / 100 % with spot-check draw 0 — and whether the true
number of errors left lies in the reported 95 % interval. Prints Markdown tables (docs/ACTIVE.md).

Usage: .venv/bin/python scripts/active_eval.py [--seeds 0 1 2] [--json FILE]   (about an hour on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from clipcleaner_core.active import load_inputs, queue_order, ranking_score
from clipcleaner_core.demo import write_demo
from clipcleaner_core.evaluate import truth_labels
from clipcleaner_core.pipeline import scan
from clipcleaner_core.simulate import simulate
from clipcleaner_core.views import truth_indices
from clipcleaner_core.workspace import Workspace

SETTINGS = [("sym", 0.2), ("sym", 0.4), ("hard", 0.2), ("hard", 0.3), ("asym", 0.3), ("mix", 0.3)]
PLAN = [("static", (0.25, 0.5, 1.0), (0, 1, 2)), ("random", (0.25, 0.5, 1.0), (0, 1, 2)),
        ("active", (0.5, 1.0), (0,))]


def main() -> None:
    from sklearn.metrics import average_precision_score

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", help="also write every run to this JSON file")
    a = ap.parse_args()
    order_rows, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data, ws = Path(tmp) / "data", Workspace(Path(tmp) / "ws")
        for noise, rate in SETTINGS:
            for seed in a.seeds:
                write_demo(data, noise=noise, rate=rate, seed=seed)
                scan(data / "labels.csv", ws, classes_file=data / "classes.txt")
                inp = load_inputs(ws)
                scores = ws.scores()
                truth = truth_indices(scores, truth_labels(scores, data / "truth.csv"), inp.settings.classes)
                err = truth != inp.y
                n_err = int(err.sum())
                p = np.asarray(ws.array("probs_ens"), dtype=np.float64)
                row = {"noise": noise, "rate": rate, "seed": seed, "errors": n_err}
                for name, score in (("noise_score", inp.scan_noise_score), ("margin", ranking_score(p, inp.y))):
                    q = queue_order(score, np.ones(len(err), dtype=bool))
                    row[name] = {"found": int(err[q[:n_err]].sum()), "ap": float(average_precision_score(err, score))}
                order_rows.append(row)
                for strategy, fractions, spots in PLAN:
                    for f in fractions:
                        for sp in spots:
                            r = simulate(ws, data / "truth.csv", int(f * n_err), strategy, seed=sp, spot_seed=sp,
                                         inputs=inp)
                            d = {k: v for k, v in r.as_dict().items() if k != "curve"}
                            runs.append({**d, "noise": noise, "rate": rate, "seed": seed, "fraction": f,
                                         "spot_seed": sp})
                            print(json.dumps(runs[-1]), flush=True)
    print("\n| setting | seed | errors | found by noise_score (AP) | found by margin (AP) |\n|---|---|---|---|---|")
    for r in order_rows:
        print(f"| {r['noise']} {r['rate']:.0%} | {r['seed']} | {r['errors']} | {r['noise_score']['found']} "
              f"({r['noise_score']['ap']:.3f}) | {r['margin']['found']} ({r['margin']['ap']:.3f}) |")
    print("\n| strategy, budget | estimated | inside | true above | true below | median width |\n"
          "|---|---|---|---|---|---|")
    for strategy, fractions, _ in PLAN:
        for f in fractions:
            sel = [r for r in runs if r["strategy"] == strategy and r["fraction"] == f and r["estimate_status"] == "ok"]
            if not sel:
                continue
            above = sum(r["true_left"] > r["estimate_high"] for r in sel)
            below = sum(r["true_left"] < r["estimate_low"] for r in sel)
            width = float(np.median([r["estimate_high"] - r["estimate_low"] for r in sel]))
            print(f"| {strategy}, {f:.0%} | {len(sel)} | {len(sel) - above - below} | {above} | {below} "
                  f"| {width:.0f} |")
    ok = [r for r in runs if r["estimate_status"] == "ok"]
    inside = sum(bool(r["inside_interval"]) for r in ok)
    print(f"\n{inside} of {len(ok)} estimated reviews ({len(runs)} run) hold the true number left "
          f"({100 * inside / max(len(ok), 1):.1f} %)")
    if a.json:
        Path(a.json).write_text(json.dumps({"order": order_rows, "runs": runs}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
