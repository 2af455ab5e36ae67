"""Benchmark workers: each runs in a fresh process (``python -m bench.workers NAME JSON``) so its peak RSS and
its first-call costs (imports, numba JIT) are its own. The last line on stdout is a JSON object of results.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY_MODEL = "cc-bench-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timer():
    t0, c0 = time.perf_counter(), time.process_time()
    return lambda: (time.perf_counter() - t0, time.process_time() - c0)


# ----------------------------------------------------------------------------------------------- encoders
def register_tiny() -> str:
    import open_clip

    d = Path(tempfile.mkdtemp(prefix="cc-bench-cfg-"))
    p = d / f"{TINY_MODEL}.json"
    p.write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    open_clip.add_model_config(p)
    return TINY_MODEL


def bench_encoder(model: str, precision: str):
    """A random-weight open_clip model behind :class:`ClipEncoder`'s own preprocess / encode_images code.

    Benchmark only (speed does not depend on the weights). It is not CLIP, is never offered by
    ``make_encoder`` or the CLI, and says so in its identity and kind.
    """
    import logging

    import open_clip
    import torch

    from clipcleaner_core.encoders import ClipEncoder, Encoder

    class RandomWeightsBenchEncoder(ClipEncoder):
        def __init__(self) -> None:  # deliberately skips ClipEncoder's weight checks: random weights
            logging.getLogger().setLevel(logging.ERROR)
            torch.manual_seed(0)
            net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None, device="cpu")
            self.device, self.precision = "cpu", precision
            self.model, self.model_name, self.transform = net.eval(), model, preprocess
            self.tokenizer, self._torch, self.weights_label = None, torch, "random (benchmark only)"
            Encoder.__init__(self, kind="bench-random", has_text=False,
                             identity={"encoder": "bench-random-weights", "model": model, "precision": precision})

    return RandomWeightsBenchEncoder()


# ------------------------------------------------------------------------------------------------- embed
def w_embed(args: dict) -> dict:
    """Full scan path (embed_samples: decode, preprocess, batch, forward, chunks, assemble) vs bare forward."""
    import torch

    from clipcleaner_core.embeddings import embed_samples
    from clipcleaner_core.encoders import autocast_context

    torch.set_num_threads(int(args.get("threads") or torch.get_num_threads()))
    model = register_tiny() if args["model"] == "tiny" else args["model"]
    enc = bench_encoder(model, args["precision"])
    paths = args["paths"]
    bs = int(args["batch_size"])
    # bare loop: tensors preprocessed beforehand (not timed)
    from PIL import Image

    tensors = [enc.preprocess(Image.open(p).convert("RGB")) for p in paths]
    batches = [torch.stack(tensors[i:i + bs]) for i in range(0, len(tensors), bs)]
    net = enc.model

    def bare() -> float:
        t = time.perf_counter()
        with torch.inference_mode(), autocast_context("cpu", args["precision"]):
            for b in batches:
                net.encode_image(b)
        return time.perf_counter() - t

    def pipeline(workers: int) -> float:
        d = Path(tempfile.mkdtemp(prefix="cc-bench-emb-"))
        ids = [f"s{i}" for i in range(len(paths))]
        t = time.perf_counter()
        r = embed_samples(paths, ids, enc, d / "cache", d / "emb.npy", batch_size=bs, num_workers=workers)
        el = time.perf_counter() - t
        assert r.features.shape[0] == len(paths) and not r.failed
        return el

    with torch.inference_mode(), autocast_context("cpu", args["precision"]):
        net.encode_image(batches[0])  # warm-up (allocator, oneDNN primitives)
    # rounds of (bare, pipeline per worker count), interleaved; the best (min) time of each is reported:
    # on a shared machine contention only ever adds time, so the minimum is the least noisy estimate
    rounds = int(args.get("rounds", 3))
    out: dict = {"n": len(paths), "threads": torch.get_num_threads(), "rounds": rounds,
                 "bare_seconds": [], "pipeline_seconds": {str(w): [] for w in args["workers"]}}
    for _ in range(rounds):
        out["bare_seconds"].append(bare())
        for w in args["workers"]:
            out["pipeline_seconds"][str(w)].append(pipeline(w))
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def w_scan_memory(args: dict) -> dict:
    """Peak RSS of embed_samples over ``paths`` (tiny random-weight model; images of the given size)."""
    from clipcleaner_core.embeddings import embed_samples

    register_tiny()
    enc = bench_encoder(TINY_MODEL, "fp32")
    base = peak_rss_mb()
    d = Path(tempfile.mkdtemp(prefix="cc-bench-mem-"))
    paths = args["paths"]
    t = _timer()
    embed_samples(paths, [f"s{i}" for i in range(len(paths))], enc, d / "cache", d / "emb.npy",
                  batch_size=64, num_workers=int(args.get("workers", 1)))
    wall, _ = t()
    # children (DataLoader workers) are reported separately by RUSAGE_CHILDREN
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"n": len(paths), "rss_before_mb": base, "peak_rss_mb": peak_rss_mb(), "worker_peak_rss_mb": child,
            "seconds": wall}


# ------------------------------------------------------------------------------------------------- score
def w_score(args: dict) -> dict:
    """detect() on synthetic embeddings, with the time of every stage (functions wrapped in place)."""
    from bench.synth import make_embeddings
    from clipcleaner_core import detectors
    from clipcleaner_core.detectors import ScoreConfig

    s = make_embeddings(int(args["n"]), d=int(args.get("d", 512)), k=int(args["k"]), seed=int(args.get("seed", 0)))
    stages: dict[str, float] = {}
    for name in ("zero_shot_probs", "probe_probs", "nearest_neighbors", "knn_probs", "clipcleaner_select",
                 "cleanlab_flags", "knn_flags", "explain"):
        fn = getattr(detectors, name)

        def wrapped(*a, __fn=fn, __name=name, **kw):
            t = time.perf_counter()
            try:
                return __fn(*a, **kw)
            finally:
                stages[__name] = stages.get(__name, 0.0) + time.perf_counter() - t

        setattr(detectors, name, wrapped)
    if args.get("solver"):  # e.g. "sklearn": the implementation the scores stage used before (reference)
        timed_probe = detectors.probe_probs
        detectors.probe_probs = lambda *a, **kw: timed_probe(*a, solver=args["solver"], **kw)
    if args.get("knn_method"):
        timed_nn = detectors.nearest_neighbors
        detectors.nearest_neighbors = lambda *a, **kw: timed_nn(*a, method=args["knn_method"], **kw)
    import clipcleaner_core.scoring as sc

    iters: list[int] = []
    fit = sc.MultinomialLR.fit

    def counted_fit(self, *a, **kw):
        r = fit(self, *a, **kw)
        iters.append(self.n_iter_)
        return r

    sc.MultinomialLR.fit = counted_fit
    base_rss = peak_rss_mb()
    t = _timer()
    det = detectors.detect(s.features, s.y, s.classes, ScoreConfig(), s.text_features, s.text_class)
    wall, cpu = t()
    noisy = s.y != s.y_true
    flag = det.table["flagged"].to_numpy()
    out = {"n": len(s.y), "k": len(s.classes), "seconds": wall, "cpu_seconds": cpu, "stages": stages,
           "lbfgs_iterations_per_fold": iters,
           "peak_rss_mb": peak_rss_mb(), "rss_after_data_mb": base_rss,
           "precision": float((flag & noisy).sum() / max(flag.sum(), 1)),
           "recall": float((flag & noisy).sum() / max(noisy.sum(), 1))}
    if args.get("knn_recall"):  # share of the exact 10 nearest neighbours found, on 1000 random rows
        from clipcleaner_core.baselines import _topk_rows

        q = np.random.default_rng(1).choice(len(s.y), size=min(1000, len(s.y)), replace=False)
        x = s.features
        b = x[q] @ x.T
        b[np.arange(len(q)), q] = -np.inf
        ti, _ = _topk_rows(b, det.neighbors.shape[1])
        out["knn_recall"] = float(np.mean([len(set(a) & set(c)) / len(c) for a, c in zip(det.neighbors[q], ti)]))

        def votes_flag(nb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # as baselines.knn_flags, for rows q
            v = np.zeros((len(q), len(s.classes)))
            np.add.at(v, (np.repeat(np.arange(len(q)), nb.shape[1]), s.y[nb].ravel()), 1.0)
            own = v[np.arange(len(q)), s.y[q]]
            return v.max(axis=1) > own, own / nb.shape[1]

        fa, aa = votes_flag(det.neighbors[q])
        fe, ae = votes_flag(ti)
        out["knn_flag_agreement"] = float((fa == fe).mean())
        out["knn_agreement_mae"] = float(np.abs(aa - ae).mean())
    return out


def w_gemm(args: dict) -> dict:
    """Machine calibration: float32 GEMM GFLOP/s (numpy/OpenBLAS, the kernel the scores stage spends on)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8192, 512), dtype=np.float32)
    b = rng.standard_normal((512, 2048), dtype=np.float32)
    a @ b
    t = time.perf_counter()
    reps = 5
    for _ in range(reps):
        a @ b
    el = (time.perf_counter() - t) / reps
    return {"gflops": 2 * 8192 * 512 * 2048 / el / 1e9, "load_avg_1m": os.getloadavg()[0]}


# ------------------------------------------------------------------------------------------------ layout
def _bench_workspace(n: int, d: int = 512, seed: int = 0):
    import pandas as pd

    from bench.synth import make_embeddings
    from clipcleaner_core.workspace import Settings, Workspace

    ws = Workspace(Path(tempfile.mkdtemp(prefix="cc-bench-layout-")))
    s = make_embeddings(n, d=d, seed=seed)
    key = f"bench-{n}-{seed}"
    emb = ws.embedding_cache(key) / "embeddings.npy"
    emb.parent.mkdir(parents=True, exist_ok=True)
    np.save(emb, s.features.astype(np.float16))
    # the layout bench needs embeddings only: publish them with an unscored table (no detector ran)
    ids = [f"{i:016x}" for i in range(n)]
    labels = np.asarray(s.classes, dtype=object)[s.y]
    samples = pd.DataFrame({"sample_id": ids, "path": ids, "abs_path": ids, "label": labels,
                            "label_idx": s.y.astype(np.int64), "status": "ok", "reason": ""})
    scores = samples[["sample_id", "path", "abs_path", "label", "label_idx"]].assign(
        suggested_label=labels, suggested_prob=np.nan, noise_score=np.nan, flagged=False, reasons="")
    ws.publish(Settings(classes=tuple(s.classes), embedding_key=key, encoder_kind="bench-synthetic"),
               tables={"dataset": samples, "scores": scores}, embeddings=emb)
    return ws


def w_layout(args: dict) -> dict:
    """First view (PCA) and UMAP of N points via clipcleaner_core.layout, then reloads from the cache."""
    n = int(args["n"])
    ws = Path(args["ws"]) if args.get("ws") else None
    from clipcleaner_core.workspace import Workspace

    w = Workspace(ws) if ws else _bench_workspace(n)
    out: dict = {"n": n, "ws": str(w.path)}
    t = time.perf_counter()
    from clipcleaner_core import layout as L

    out["import_s"] = time.perf_counter() - t
    t = time.perf_counter()
    L.layout(w, "pca")
    out["pca_s"] = time.perf_counter() - t
    t = time.perf_counter()
    L.layout(w, "pca")
    out["pca_cached_s"] = time.perf_counter() - t
    if args.get("umap"):
        t = time.perf_counter()
        import umap  # noqa: F401 - import cost reported apart

        out["umap_import_s"] = time.perf_counter() - t
        # JIT: the same UMAP on a small sample compiles every numba function the full fit uses
        small = np.asarray(w.embeddings()[:min(n, 600)], dtype=np.float32)
        t = time.perf_counter()
        L.umap_2d(small)
        out["umap_jit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        L.layout(w, "umap")
        out["umap_fit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        L.layout(w, "umap")
        out["umap_cached_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def w_layout_reload(args: dict) -> dict:
    """A fresh process (a restarted app): time to get both layouts back from the workspace cache."""
    from clipcleaner_core import layout as L
    from clipcleaner_core.workspace import Workspace

    w = Workspace(args["ws"])
    t = time.perf_counter()
    hit_p = L.cached_layout(w, "pca")
    hit_u = L.cached_layout(w, "umap")
    return {"reload_s": time.perf_counter() - t, "pca_hit": hit_p is not None, "umap_hit": hit_u is not None}


def w_app(args: dict) -> dict:
    """bench/app_bench.py in its own process (its peak RSS is the app server's: AppTest runs in-process)."""
    from bench import app_bench

    return app_bench.run(int(args["n"]), quick=bool(args.get("quick")), ws=args.get("ws"))


def w_app_build(args: dict) -> dict:
    from bench import app_bench

    return app_bench.build(int(args["n"]), quick=bool(args.get("quick")))


def w_keys_demo(args: dict) -> dict:
    from bench import keys

    return {"workspace": keys.demo_workspace()}


def w_keys(args: dict) -> dict:
    """bench/keys.py: two Streamlit servers and a headless Chromium (the key-latency ratios)."""
    from bench import keys

    return keys.run(args["ws"], [int(s) for s in args["sizes"]], int(args["rounds"]))


WORKERS = {"app": w_app, "app_build": w_app_build, "embed": w_embed, "scan_memory": w_scan_memory, "score": w_score,
           "gemm": w_gemm, "layout": w_layout, "layout_reload": w_layout_reload, "keys": w_keys,
           "keys_demo": w_keys_demo}


def main() -> None:
    name, payload = sys.argv[1], sys.argv[2]  # payload: JSON, or @FILE holding JSON
    args = json.loads(Path(payload[1:]).read_text(encoding="utf-8") if payload.startswith("@") else payload)
    res = WORKERS[name](args)
    sys.stdout.write("\n" + json.dumps(res, default=float) + "\n")


if __name__ == "__main__":
    main()
