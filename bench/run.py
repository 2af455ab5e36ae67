"""clipcleaner benchmark: ``python -m bench [--quick] [--json [FILE]] [--sections embed,score,layout,app,keys,memory]``.

Sections (docs/PERFORMANCE.md has the numbers and what they mean):

- ``embed``: our full scan path (``embed_samples``: decode, preprocess, batch, forward, write chunks, assemble)
  vs a bare loop of ``model.encode_image`` over already-preprocessed tensors, same random-weight open_clip
  model (ViT-B-32; ``--quick``: a tiny config), same JPEGs; fp32 and bf16 on the CPU. Ratio target ≥ 0.90.
- ``score``: ``detectors.detect`` (zero-shot with synthetic text features, 5-fold probe, k-NN, CLIPCleaner,
  cleanlab, ensemble) on synthetic clustered embeddings, D = 512: time per N and per K, peak RSS, and the
  reference implementation (scikit-learn probe, exact k-NN) at the smallest N as an in-run baseline.
- ``layout``: first view (PCA) and UMAP of N points through ``clipcleaner_core.layout``, JIT apart, and the
  reload from the workspace cache in a fresh process.
- ``app``: a generated N-sample workspace; AppTest time per page (warm) and per review action.
- ``keys``: the review grid's key latency in headless Chromium (key press → settled page) on the demo and on a
  generated N-sample workspace, at 12 and 48 cards per page, as a ratio to a trivial Streamlit app's button
  rerun measured in the same run (``bench/keys.py``; target ≤ 3×).
- ``memory``: peak RSS of a scan of a few thousand images vs a few hundred (nothing holds all images).

Every measurement runs in a fresh subprocess (``bench/workers.py``) so peak RSS and first-call costs are
its own. The machine is shared and noisy: each section reports a ratio against a baseline measured in the
same run where the target is relative, and a GEMM calibration (GFLOP/s, load average) is printed first so
absolute times can be read against the machine's speed at that moment.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALL_SECTIONS = ("embed", "score", "layout", "app", "keys", "memory")


def run_worker(name: str, args: dict, timeout: float = 3600, env: dict | None = None) -> dict:
    """Run ``bench.workers`` ``name`` in a fresh interpreter; returns its JSON result (raises on failure)."""
    fd, path = tempfile.mkstemp(prefix="cc-bench-args-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(args, f)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    try:
        p = subprocess.run([sys.executable, "-m", "bench.workers", name, "@" + path], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=timeout)
    finally:
        os.unlink(path)
    if p.returncode != 0:
        raise RuntimeError(f"bench worker {name} failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


class Report:
    """Rows of (section, metric, value, unit, target, verdict, note); printed as a table or JSON."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.raw: dict = {}

    def add(self, section: str, metric: str, value: float | str | None, unit: str = "", target: str = "",
            ok: bool | None = None, note: str = "") -> None:
        self.rows.append({"section": section, "metric": metric, "value": value, "unit": unit, "target": target,
                          "ok": ok, "note": note})
        print(self._fmt(self.rows[-1]), flush=True)

    @staticmethod
    def _fmt(r: dict) -> str:
        v = r["value"]
        vs = f"{v:,.3g}" if isinstance(v, float) and abs(v) < 100 else (f"{v:,.0f}" if isinstance(v, float)
                                                                         else str(v))
        verdict = {True: "ok", False: "MISS", None: ""}[r["ok"]]
        return (f"{r['section']:<7} {r['metric']:<46} {vs:>10} {r['unit']:<8} {r['target']:<14} {verdict:<5} "
                f"{r['note']}")

    def table(self) -> str:
        head = f"{'section':<7} {'metric':<46} {'value':>10} {'unit':<8} {'target':<14} {'':<5} note"
        return "\n".join([head, "-" * len(head)] + [self._fmt(r) for r in self.rows])


# ---------------------------------------------------------------------------------------------- sections
def section_machine(rep: Report) -> None:
    r = run_worker("gemm", {})
    rep.raw["machine"] = {**r, "cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()}
    rep.add("machine", "float32 GEMM (numpy/OpenBLAS)", r["gflops"], "GFLOP/s", "", None,
            f"{os.cpu_count()} cores, load avg {r['load_avg_1m']:.1f} at start")


def section_embed(rep: Report, quick: bool, n_images: int) -> None:
    from bench.synth import write_images

    d = Path(tempfile.mkdtemp(prefix="cc-bench-img-"))
    n = 32 if quick else n_images
    paths, _ = write_images(d, n, size=64 if quick else 224)
    model = "tiny" if quick else "ViT-B-32"
    import torch

    workers = [0, 1] if quick else sorted({0, 1, min(2, max(0, (os.cpu_count() or 1)))})
    precisions = ["fp32"] if quick else ["fp32", "bf16"]
    rep.raw["embed"] = []
    for prec in precisions:
        r = run_worker("embed", {"model": model, "precision": prec, "paths": paths, "batch_size": 32,
                                 "workers": workers, "rounds": 1 if quick else 3})
        rep.raw["embed"].append({"precision": prec, **r})
        bare_ips = r["n"] / min(r["bare_seconds"])
        rep.add("embed", f"bare encode_image, {model} {prec}", bare_ips, "img/s", "", None,
                f"best of {r['rounds']} rounds, {r['threads']} torch threads")
        best = None
        for w, secs in r["pipeline_seconds"].items():
            ips = r["n"] / min(secs)
            ratio = ips / bare_ips
            best = max(best or 0.0, ratio)
            rep.add("embed", f"scan path, {model} {prec}, workers={w}", ips, "img/s", "", None,
                    f"{ratio:.2f}x bare")
        rep.add("embed", f"scan/bare ratio, {model} {prec} (best workers)", best, "x", "" if quick else ">= 0.90",
                None if quick else bool(best is not None and best >= 0.90),
                f"{n} JPEGs {64 if quick else 224}px, batch 32" + (" (tiny model: decode-bound, no target)"
                                                                   if quick else ""))
    del torch


def section_score(rep: Report, quick: bool, sizes: list[int], ks: list[int], ref_n: int | None = None) -> None:
    rep.raw["score"] = []
    ref_n = ref_n or min(sizes)
    for n in sizes:
        r = run_worker("score", {"n": n, "k": 100 if not quick else 5, "d": 512 if not quick else 64,
                                 "knn_recall": True})
        rep.raw["score"].append(r)
        st = r["stages"]
        top = sorted(st.items(), key=lambda kv: -kv[1])[:4]
        target = "<= 30 s" if n == 100_000 else ""
        rep.add("score", f"detect N={n:,} K={r['k']} D={512 if not quick else 64}", r["seconds"], "s", target,
                (r["seconds"] <= 30) if n == 100_000 else None,
                "; ".join(f"{k} {v:.1f}s" for k, v in top) + f"; cpu {r['cpu_seconds']:.0f}s; L-BFGS iters/fold "
                + ",".join(str(i) for i in r.get("lbfgs_iterations_per_fold", [])))
        rep.add("score", f"peak RSS N={n:,}", r["peak_rss_mb"], "MiB", "<= 3072" if n == 100_000 else "",
                (r["peak_rss_mb"] <= 3072) if n == 100_000 else None,
                f"data alone {r['rss_after_data_mb']:.0f} MiB; flags P={r['precision']:.2f} R={r['recall']:.2f}")
        if "knn_recall" in r:
            rep.add("score", f"k-NN recall@10 vs exact, N={n:,}", r["knn_recall"], "", "", None,
                    ("exact" if r["knn_recall"] == 1.0 else "cell-probe index (approx)")
                    + f"; k-NN flag same as exact {100 * r['knn_flag_agreement']:.2f} %, "
                    f"|Δ agreement| {r['knn_agreement_mae']:.3f} (1000 rows)")
    # reference: the implementation before this work (scikit-learn probe, exact k-NN) at the smallest N
    ref = run_worker("score", {"n": ref_n, "k": 100 if not quick else 5, "d": 512 if not quick else 64,
                               "solver": "sklearn", "knn_method": "exact"})
    rep.raw["score_reference"] = ref
    new = next((r for r in rep.raw["score"] if r["n"] == ref_n), None)
    rep.add("score", f"reference detect N={ref_n:,} (sklearn probe, exact k-NN)", ref["seconds"], "s", "", None,
            (f"probe {ref['stages'].get('probe_probs', 0):.1f}s vs fast {new['stages'].get('probe_probs', 0):.1f}s;"
             f" speed-up {ref['seconds'] / new['seconds']:.2f}x") if new else
            f"probe {ref['stages'].get('probe_probs', 0):.1f}s")
    # growth with K at fixed N
    rep.raw["score_k"] = []
    n_k = 1000 if quick else 20_000
    for k in ks:
        r = run_worker("score", {"n": n_k, "k": k, "d": 512 if not quick else 64})
        rep.raw["score_k"].append(r)
        it = sum(r.get("lbfgs_iterations_per_fold", [])) or 1
        rep.add("score", f"detect N={n_k:,} K={k}", r["seconds"], "s", "", None,
                f"probe {r['stages'].get('probe_probs', 0):.1f}s ({it} L-BFGS iters, "
                f"{1000 * r['stages'].get('probe_probs', 0) / it:.0f} ms/iter), select "
                f"{r['stages'].get('clipcleaner_select', 0):.1f}s, cleanlab {r['stages'].get('cleanlab_flags', 0):.1f}s")


def section_layout(rep: Report, quick: bool, n: int) -> None:
    n = 3000 if quick else n
    r = run_worker("layout", {"n": n, "umap": not quick})  # --quick: PCA + cache only (UMAP's JIT alone is ~40 s)
    rep.raw["layout"] = r
    rep.add("layout", f"first view: PCA of N={n:,}", r["pca_s"], "s", "<= 5 s", r["pca_s"] <= 5,
            f"import {r['import_s']:.1f}s; cached {r['pca_cached_s']:.3f}s")
    if "umap_fit_s" in r:
        rep.add("layout", "UMAP numba JIT (600-point warm-up)", r["umap_jit_s"], "s", "", None,
                f"import umap {r['umap_import_s']:.1f}s")
        rep.add("layout", f"UMAP fit N={n:,} (after JIT)", r["umap_fit_s"], "s", "", None,
                "n_jobs=1, deterministic")
    if not quick:  # does numba's on-disk cache take the JIT out of a restarted process? (two fresh processes)
        cache = tempfile.mkdtemp(prefix="cc-bench-numba-")
        j1 = run_worker("layout", {"n": 2000, "umap": True}, env={"NUMBA_CACHE_DIR": cache})
        j2 = run_worker("layout", {"n": 2000, "umap": True}, env={"NUMBA_CACHE_DIR": cache})
        rep.raw["layout_numba_cache"] = [j1, j2]
        rep.add("layout", "UMAP JIT, 2nd process with NUMBA_CACHE_DIR", j2["umap_jit_s"], "s", "", None,
                f"1st process {j1['umap_jit_s']:.1f}s (cold cache)")
    rl = run_worker("layout_reload", {"ws": r["ws"]})
    rep.raw["layout_reload"] = rl
    ok = bool(rl["pca_hit"] and (rl["umap_hit"] or "umap_fit_s" not in r) and rl["reload_s"] < 1.0)
    rep.add("layout", "restart: layouts from the workspace cache", rl["reload_s"], "s", "~0 s", ok,
            "fresh process; " + ("PCA + UMAP" if "umap_fit_s" in r else "PCA"))


def section_memory(rep: Report, quick: bool) -> None:
    from bench.synth import write_images

    small, big = (32, 192) if quick else (300, 3000)
    d = Path(tempfile.mkdtemp(prefix="cc-bench-memimg-"))
    paths, _ = write_images(d, big, size=224)
    rs = run_worker("scan_memory", {"paths": paths[:small]})
    rb = run_worker("scan_memory", {"paths": paths})
    rep.raw["memory"] = {"small": rs, "big": rb}
    growth = rb["peak_rss_mb"] - rs["peak_rss_mb"]
    decoded_mb = (big - small) * 224 * 224 * 3 / 2**20
    rep.add("memory", f"scan peak RSS, {small} images", rs["peak_rss_mb"], "MiB", "", None,
            f"worker peak {rs['worker_peak_rss_mb']:.0f} MiB")
    rep.add("memory", f"scan peak RSS, {big} images", rb["peak_rss_mb"], "MiB", "", None,
            f"worker peak {rb['worker_peak_rss_mb']:.0f} MiB")
    # allocator noise is a few MiB; holding the images would grow RSS by the decoded size
    rep.add("memory", f"RSS growth for {big - small} more images", growth, "MiB", "<< decoded",
            growth < max(0.1 * decoded_mb, 16.0), f"holding them decoded would take {decoded_mb:.0f} MiB")


def section_app(rep: Report, quick: bool, n: int) -> None:
    b = run_worker("app_build", {"n": 2000 if quick else n, "quick": quick})
    r = run_worker("app", {"n": 2000 if quick else n, "quick": quick, "ws": b["workspace"]})
    rep.raw["app"] = {**r, **b}
    rep.add("app", f"generate workspace N={r['n']:,} (rescore, not the app)", b["build_workspace_s"], "s", "", None,
            f"peak RSS {b['build_peak_rss_mb']:.0f} MiB")
    rep.add("app", f"first load of a session (home), N={r['n']:,}", r["first_load_s"], "s", "", None,
            "reads the workspace into the server's caches")
    for page, secs in r["pages"].items():
        rep.add("app", f"render {page.split('/')[-1]} (warm), N={r['n']:,}", secs, "s", "<= 1 s", secs <= 1.0,
                f"first render {r['pages_cold'].get(page, float('nan')):.2f}s")
    for page, errs in r.get("errors", {}).items():
        rep.add("app", f"exception on {page}", "; ".join(errs)[:120], "", "none", False)
    for action, secs in r["actions"].items():
        rep.add("app", f"{action}", secs, "s", "<= 0.2 s", secs <= 0.2)
    rep.add("app", "AppTest process peak RSS", r["peak_rss_mb"], "MiB", "<= 3072", r["peak_rss_mb"] <= 3072,
            "the server's memory (AppTest runs the script in-process)")


def section_keys(rep: Report, quick: bool, n: int, rounds: int | None = None) -> None:
    sizes = [12] if quick else [12, 48]
    rounds = rounds or (2 if quick else 10)
    demo = run_worker("keys_demo", {})["workspace"]
    big_n = 2000 if quick else n
    big = run_worker("app_build", {"n": big_n, "quick": quick})["workspace"]
    rep.raw["keys"] = {}
    for label, ws in (("demo", demo), (f"N={big_n:,}", big)):
        r = run_worker("keys", {"ws": ws, "sizes": sizes, "rounds": rounds})
        rep.raw["keys"][label] = r
        for size, s in r["sizes"].items():
            rep.add("keys", f"trivial button rerun (baseline), {label} {size} cards", s["baseline_ms"], "ms", "", None,
                    f"median of {rounds}, interleaved with the keys")
            for key, ms in s["keys_ms"].items():
                ratio = s["ratios"][key]
                rep.add("keys", f"{label}, {size} cards: {key.upper()} → settled", ms, "ms", "<= 3x baseline",
                        None if quick else bool(ratio <= 3.0), f"{ratio:.2f}x baseline")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (correctness smoke run, ~30 s)")
    ap.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                    help="also write the results as JSON to FILE (or stdout with no FILE)")
    ap.add_argument("--sections", default=",".join(ALL_SECTIONS), help=f"comma list of {', '.join(ALL_SECTIONS)}")
    ap.add_argument("--sizes", default="10000,100000", help="scoring sizes N (comma list; 1000000 if you have time)")
    ap.add_argument("--reference-n", type=int, default=None,
                    help="N of the in-run reference (scikit-learn probe, exact k-NN); default: the smallest size")
    ap.add_argument("--ks", default="10,100,300", help="class counts K for the scoring growth-with-K rows")
    ap.add_argument("--embed-images", type=int, default=96, help="JPEGs for the embedding section")
    ap.add_argument("--layout-n", type=int, default=100_000)
    ap.add_argument("--app-n", type=int, default=100_000)
    ap.add_argument("--keys-rounds", type=int, default=None, help="rounds per key in the keys section (10)")
    a = ap.parse_args(argv)
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in ALL_SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {ALL_SECTIONS}")
    sizes = [1000] if a.quick else [int(s) for s in a.sizes.split(",")]
    ks = [10] if a.quick else [int(s) for s in a.ks.split(",") if s.strip()]
    rep = Report()
    t0 = time.perf_counter()
    head = f"{'section':<7} {'metric':<46} {'value':>10} {'unit':<8} {'target':<14} {'':<5} note"
    print(head + "\n" + "-" * len(head), flush=True)
    section_machine(rep)
    for s in sections:
        if s == "embed":
            section_embed(rep, a.quick, a.embed_images)
        elif s == "score":
            section_score(rep, a.quick, sizes, ks, a.reference_n)
        elif s == "layout":
            section_layout(rep, a.quick, a.layout_n)
        elif s == "memory":
            section_memory(rep, a.quick)
        elif s == "app":
            section_app(rep, a.quick, a.app_n)
        elif s == "keys":
            section_keys(rep, a.quick, a.app_n, a.keys_rounds)
    rep.raw["total_seconds"] = time.perf_counter() - t0
    print(f"\ntotal {rep.raw['total_seconds']:.0f} s; command: python -m bench {' '.join(argv or sys.argv[1:])}")
    if a.json:
        doc = json.dumps({"rows": rep.rows, "raw": rep.raw, "argv": argv or sys.argv[1:]}, indent=1, default=float)
        if a.json == "-":
            print(doc)
        else:
            Path(a.json).write_text(doc, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
