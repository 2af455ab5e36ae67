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


def bench_encoder(model: str, precision: str, device: str = "cpu"):
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
            net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None, device=device)
            self.device, self.precision = device, precision
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
    device = args.get("device", "cpu")
    enc = bench_encoder(model, args["precision"], device)
    paths = args["paths"]
    bs = int(args["batch_size"])
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    # bare loop: tensors preprocessed beforehand (not timed)
    from PIL import Image

    tensors = [enc.preprocess(Image.open(p).convert("RGB")) for p in paths]
    batches = [torch.stack(tensors[i:i + bs]) for i in range(0, len(tensors), bs)]
    net = enc.model

    def bare() -> float:  # the same host → device copy per batch as the scan path
        sync()
        t = time.perf_counter()
        with torch.inference_mode(), autocast_context(device, args["precision"]):
            for b in batches:
                net.encode_image(b.to(device, non_blocking=True))
        sync()
        return time.perf_counter() - t

    def pipeline(workers: int) -> float:
        d = Path(tempfile.mkdtemp(prefix="cc-bench-emb-"))
        ids = [f"s{i}" for i in range(len(paths))]
        t = time.perf_counter()
        r = embed_samples(paths, ids, enc, d / "cache", d / "emb.npy", batch_size=bs, num_workers=workers)
        el = time.perf_counter() - t
        assert r.features.shape[0] == len(paths) and not r.failed
        return el

    with torch.inference_mode(), autocast_context(device, args["precision"]):
        net.encode_image(batches[0].to(device))  # warm-up (allocator, oneDNN primitives / cuDNN autotune)
    # rounds of (bare, pipeline per worker count), interleaved; the best (min) time of each is reported:
    # on a shared machine contention only ever adds time, so the minimum is the least noisy estimate
    rounds = int(args.get("rounds", 3))
    out: dict = {"n": len(paths), "threads": torch.get_num_threads(), "rounds": rounds, "device": device,
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
def _f1(flag: np.ndarray, noisy: np.ndarray) -> float:
    tp = float((flag & noisy).sum())
    return 2 * tp / max(float(flag.sum() + noisy.sum()), 1.0)


DETECTOR_KEYS = ("ens", "cc", "cleanlab", "knn")


def w_score(args: dict) -> dict:
    """detect() on synthetic embeddings, with the time of every stage (functions wrapped in place). ``flags``: a
    path where the four detectors' flags are saved (.npz) for agreement checks between runs."""
    from bench.synth import make_embeddings
    from clipcleaner_core import detectors
    from clipcleaner_core.detectors import ScoreConfig

    s = make_embeddings(int(args["n"]), d=int(args.get("d", 512)), k=int(args["k"]), seed=int(args.get("seed", 0)))
    stages: dict[str, float] = {}
    iters: list[int] = []
    for name in ("fit_probe", "nearest_neighbors", "collect", "clipcleaner_select", "cleanlab_flags", "knn_flags",
                 "explain"):
        fn = getattr(detectors, name)

        def wrapped(*a, __fn=fn, __name=name, **kw):
            t = time.perf_counter()
            try:
                r = __fn(*a, **kw)
                if __name == "fit_probe":
                    iters.extend(r.n_iter)
                return r
            finally:
                stages[__name] = stages.get(__name, 0.0) + time.perf_counter() - t

        setattr(detectors, name, wrapped)
    if args.get("solver"):  # e.g. "sklearn": the implementation the scores stage used before (reference)
        timed_probe = detectors.fit_probe
        detectors.fit_probe = lambda *a, **kw: timed_probe(*a, solver=args["solver"], **kw)
    if args.get("probe_max_iter"):  # a capped probe: times everything else at sizes where the full fit is hours
        capped_probe = detectors.fit_probe
        detectors.fit_probe = lambda *a, **kw: capped_probe(*a, max_iter=int(args["probe_max_iter"]), **kw)
    if args.get("knn_method"):
        timed_nn = detectors.nearest_neighbors
        detectors.nearest_neighbors = lambda *a, **kw: timed_nn(*a, method=args["knn_method"], **kw)
    cfg = ScoreConfig(**args.get("config", {}))
    import clipcleaner_core.scoring as sc

    evals: list[float] = []  # seconds per loss-and-gradient evaluation of the probe (extrapolates capped runs)
    objective = sc._softmax_objective

    def timed_objective(*a, **kw):
        fun = objective(*a, **kw)

        def f(theta):
            t0 = time.perf_counter()
            r = fun(theta)
            evals.append(time.perf_counter() - t0)
            return r
        return f

    sc._softmax_objective = timed_objective
    base_rss = peak_rss_mb()
    t = _timer()
    t_start = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:  # to stderr: $CC_BENCH_LOG follows long runs
        print(f"[score N={len(s.y)} K={len(s.classes)}] step {done}/{total} at {time.perf_counter() - t_start:.0f}s, "
              f"peak RSS {peak_rss_mb():.0f} MiB", file=sys.stderr, flush=True)

    det = detectors.detect(s.features, s.y, s.classes, cfg, s.text_features, s.text_class, progress=progress)
    wall, cpu = t()
    noisy = s.y != s.y_true
    flag = det.table["flagged"].to_numpy()
    flags = {key: det.table[f"{key}_flag"].to_numpy() for key in DETECTOR_KEYS}
    if args.get("flags"):
        np.savez(args["flags"], **flags)
    out = {"n": len(s.y), "k": len(s.classes), "seconds": wall, "cpu_seconds": cpu, "stages": stages,
           "lbfgs_iterations_per_fold": iters, "device": str(detectors.resolve_device(cfg.device)),
           "probe_evaluations": len(evals), "probe_eval_s_median": float(np.median(evals)) if evals else None,
           "probe_max_iter": args.get("probe_max_iter"),
           "probs_form": {src: ("dense" if p.is_dense else f"top-{p.top}") for src, p in det.probs.items()},
           "peak_rss_mb": peak_rss_mb(), "rss_after_data_mb": base_rss,
           "precision": float((flag & noisy).sum() / max(flag.sum(), 1)),
           "recall": float((flag & noisy).sum() / max(noisy.sum(), 1)),
           "f1": {key: _f1(f, noisy) for key, f in flags.items()}}
    if args.get("knn_recall"):  # share of the exact 10 nearest neighbours found, on 1000 random rows
        import torch

        q = np.random.default_rng(1).choice(len(s.y), size=min(1000, len(s.y)), replace=False)
        x = torch.from_numpy(s.features)
        b = x[q] @ x.T
        b[np.arange(len(q)), q] = -np.inf
        ti = torch.topk(b, det.neighbors.shape[1], dim=1).indices.numpy()
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


def w_recipe(args: dict) -> dict:
    """The standard cleanlab recipe a user would write on the same embeddings: scikit-learn
    ``LogisticRegression`` (default settings, max_iter 1000) ``cross_val_predict`` 5-fold for out-of-fold
    probabilities, then ``cleanlab.filter.find_label_issues``. Time, peak RSS and F1 of its flags."""
    import warnings

    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from bench.synth import make_embeddings

    s = make_embeddings(int(args["n"]), d=int(args.get("d", 512)), k=int(args["k"]), seed=int(args.get("seed", 0)))
    t = _timer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = cross_val_predict(LogisticRegression(max_iter=1000), s.features, s.y, cv=5, method="predict_proba")
        flag = find_label_issues(s.y, p)
    wall, cpu = t()
    return {"n": len(s.y), "k": len(s.classes), "seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb(),
            "f1": _f1(np.asarray(flag, bool), s.y != s.y_true)}


def w_agreement(args: dict) -> dict:
    """Share of samples on which two saved flag sets (``a``, ``b``: .npz of w_score) agree, per detector."""
    a, b = np.load(args["a"]), np.load(args["b"])
    return {key: float((a[key] == b[key]).mean()) for key in DETECTOR_KEYS}


def w_gemm(args: dict) -> dict:
    """Machine calibration: GEMM GFLOP/s (best of 5) of numpy/OpenBLAS float32 and of torch float32 (the kernel
    the scores stage spends on) and torch bfloat16 (is reduced precision worth it on this CPU?)."""
    import torch

    a = np.random.default_rng(0).standard_normal((8192, 512), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((512, 2048), dtype=np.float32)

    def rate(fn, rows: int = 8192) -> float:
        fn()
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return 2 * rows * 512 * 2048 / best / 1e9

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    a16, b16 = ta[:512].bfloat16(), tb.bfloat16()  # 512 rows: emulated bf16 is ~20x slower on CPUs without it
    return {"gflops": rate(lambda: a @ b), "torch_fp32_gflops": rate(lambda: ta @ tb),
            "torch_bf16_gflops": rate(lambda: a16 @ b16, 512),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0]}


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


# ------------------------------------------------------------------------------------------- k-NN libs
def w_knn_data(args: dict) -> dict:
    """Synthetic N × 512 embeddings (100 classes) saved as .npy, plus the exact 10 nearest neighbours of 1,000
    random rows (the ground truth the k-NN libraries are compared against)."""
    from bench.synth import make_embeddings
    from clipcleaner_core.baselines import _topk_rows

    n, k = int(args["n"]), int(args.get("k", 10))
    s = make_embeddings(n, k=int(args.get("classes", 100)), seed=0)
    d = Path(args["dir"])
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "x.npy", s.features)
    np.save(d / "y.npy", s.y)
    q = np.sort(np.random.default_rng(1).choice(n, size=min(1000, n), replace=False))
    b = s.features[q] @ s.features.T
    b[np.arange(len(q)), q] = -np.inf
    truth, _ = _topk_rows(b, k)
    np.save(d / "q.npy", q)
    np.save(d / "truth.npy", truth)
    return {"n": n, "dir": str(d)}


def _knn_library(method: str, x: np.ndarray, k: int, params: dict) -> np.ndarray:
    """All-rows k-NN (N, k) indices, self excluded, with one of the compared libraries."""
    n = len(x)
    if method == "cellprobe":  # the hand-written IVF index in clipcleaner_core.baselines
        from clipcleaner_core.baselines import _approx_neighbors

        return _approx_neighbors(x, k, seed=0)[0]
    if method.startswith("faiss"):
        import faiss

        faiss.omp_set_num_threads(int(params.get("threads", os.cpu_count() or 1)))
        d = x.shape[1]
        if method == "faiss_ivf":
            nlist = int(params.get("nlist_factor", 4) * np.sqrt(n))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            index.train(x[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))])
            index.add(x)
            index.nprobe = int(params.get("nprobe", 16))
        elif method == "faiss_hnsw":
            index = faiss.IndexHNSWFlat(d, int(params.get("M", 32)), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(params.get("efConstruction", 40))
            index.add(x)
            index.hnsw.efSearch = int(params.get("efSearch", 64))
        else:
            raise ValueError(method)
        _, idx = index.search(x, k + 1)
    elif method == "pynndescent":
        from pynndescent import NNDescent

        idx = NNDescent(x, metric="dot", n_neighbors=k + 1, random_state=0, n_jobs=1,
                        low_memory=True).neighbor_graph[0]
    else:
        raise ValueError(f"unknown k-NN library {method!r}")
    idx = np.asarray(idx, dtype=np.int64)
    last = np.argsort(idx == np.arange(n)[:, None], axis=1, kind="stable")  # self (if found) moves to the end
    return np.take_along_axis(idx, last, axis=1)[:, :k]


def w_knn_lib(args: dict) -> dict:
    """One k-NN library on the saved data: all-rows k-NN time, peak RSS over the data's, recall@k vs exact on
    the saved 1,000 rows and the k-NN flag agreement with exact there."""
    d = Path(args["dir"])
    x = np.load(d / "x.npy")
    y = np.load(d / "y.npy")
    q, truth = np.load(d / "q.npy"), np.load(d / "truth.npy")
    k = truth.shape[1]
    base = peak_rss_mb()
    warm_s = 0.0
    if args["method"] == "pynndescent":  # numba JIT apart from the run: a tiny index compiles everything
        t = time.perf_counter()
        _knn_library("pynndescent", x[:2000].copy(), k, {})
        warm_s = time.perf_counter() - t
    t = _timer()
    idx = _knn_library(args["method"], x, k, args.get("params", {}))
    wall, cpu = t()
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(idx[q], truth)]))

    def flag(nb: np.ndarray) -> np.ndarray:
        votes = np.zeros((len(q), int(y.max()) + 1))
        np.add.at(votes, (np.repeat(np.arange(len(q)), nb.shape[1]), y[nb].ravel()), 1.0)
        return votes.max(axis=1) > votes[np.arange(len(q)), y[q]]

    return {"method": args["method"], "params": args.get("params", {}), "n": len(x), "seconds": wall,
            "cpu_seconds": cpu, "jit_or_warmup_s": warm_s, "recall": recall,
            "flag_agreement": float((flag(idx[q]) == flag(truth)).mean()),
            "peak_rss_mb": peak_rss_mb(), "data_rss_mb": base, "extra_rss_mb": peak_rss_mb() - base}


# ------------------------------------------------------------------------------------------------- refit
def w_refit(args: dict) -> dict:
    """Learning from the reviewer at N: the scan's 5-fold probe (baseline), a cold refit after ``reviewed``
    oracle decisions, a warm refit after 25 more, the errors-left estimate, and the refit table's write + read."""
    import pandas as pd

    from bench.synth import make_embeddings
    from clipcleaner_core import active as A
    from clipcleaner_core.baselines import knn_probs, nearest_neighbors
    from clipcleaner_core.estimate import draw_spot_check, estimate_errors_left, outcomes_from_decisions
    from clipcleaner_core.scoring import probe_probs, zero_shot_probs

    n, k, d = int(args["n"]), int(args["k"]), int(args["d"])
    s = make_embeddings(n, d=d, k=k, seed=0)
    nb, _ = nearest_neighbors(s.features, 10)
    p_zs = zero_shot_probs(s.features, s.text_features, s.text_class, k)
    probe_probs(s.features[:500], s.y[:500], k, max_iter=5)  # imports and first-call costs, not timed
    t = time.perf_counter()
    p_probe = probe_probs(s.features, s.y, k)
    probe_s = time.perf_counter() - t
    p_ens = (p_zs + p_probe + knn_probs(nb, s.y, k)) / 3
    rank = A.ranking_score(p_ens, s.y)
    st = A.ScanSettings(scan_id="bench", classes=s.classes, method="ensemble", margin=0.1, C=1.0, folds=5, seed=0,
                        encoder={}, encoder_kind="bench", text_reason=None)
    ids = np.array([f"s{i}" for i in range(n)], dtype=object)
    inp = A.RefitInputs(settings=st, sample_ids=ids, y=s.y, features=s.features, neighbors=nb, p_zs=p_zs,
                        scan_rank_score=rank, scan_noise_score=1 - p_ens[np.arange(n), s.y], scan_flagged=rank > 0.1)
    order = A.queue_order(rank, np.ones(n, dtype=bool))
    names = np.asarray(s.classes, dtype=object)

    def decisions(m: int) -> pd.DataFrame:
        r = order[:m]
        wrong = s.y[r] != s.y_true[r]
        return pd.DataFrame({"sample_id": ids[r], "action": np.where(wrong, "relabel", "accept"),
                             "label": np.where(wrong, names[s.y_true[r]], None), "reviewer": "oracle",
                             "updated_at": ""})

    m = int(args["reviewed"])
    t = time.perf_counter()
    cold = A.refit_scores(inp, A.trust_from_decisions(ids, s.y, s.classes, decisions(m)))
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    warm = A.refit_scores(inp, A.trust_from_decisions(ids, s.y, s.classes, decisions(m + 25)), warm=cold.warm)
    warm_s = time.perf_counter() - t
    noisy = s.y != s.y_true
    undecided = np.ones(n, dtype=bool)
    undecided[order[:m + 25]] = False
    from sklearn.metrics import average_precision_score

    before = average_precision_score(noisy[undecided], rank[undecided])  # how well each ranks what is left
    after = average_precision_score(noisy[undecided], warm.rank_score[undecided])
    dec = decisions(m + 25)
    spot = pd.Series(ids).isin(set(draw_spot_check(ids, inp.scan_flagged, 1))).to_numpy()
    dec_spot = pd.DataFrame({"sample_id": ids[spot], "action": np.where(noisy[spot], "relabel", "accept"),
                             "label": np.where(noisy[spot], names[s.y_true[spot]], None)})
    t = time.perf_counter()
    outcome = outcomes_from_decisions(ids, names[s.y], pd.concat([dec, dec_spot]))
    est = estimate_errors_left(inp.scan_flagged, warm.rank_score, outcome, spot, next_n=200)
    est_s = time.perf_counter() - t
    left = noisy & (outcome < 0)
    table = pd.DataFrame({"sample_id": ids, "rank_score": warm.rank_score, "flagged": warm.flagged})
    path = Path(tempfile.mkdtemp(prefix="cc-bench-refit-")) / "fit.parquet"
    t = time.perf_counter()
    table.to_parquet(path, index=False)
    pd.read_parquet(path)
    io_s = time.perf_counter() - t
    return {"n": n, "k": k, "d": d, "reviewed": m, "probe_s": probe_s, "cold_s": cold_s, "warm_s": warm_s,
            "cold_iters": cold.info["lbfgs_iterations"], "warm_iters": warm.info["lbfgs_iterations"],
            "estimate_s": est_s, "table_io_s": io_s, "ap_before": float(before), "ap_after": float(after),
            "true_left": int(left.sum()), "estimate": est.errors_left,
            "estimate_low": est.low, "estimate_high": est.high, "peak_rss_mb": peak_rss_mb()}


def w_keys_demo(args: dict) -> dict:
    from bench import keys

    return {"workspace": keys.demo_workspace()}


def w_keys(args: dict) -> dict:
    """bench/keys.py: two Streamlit servers and a headless Chromium (the key-latency ratios)."""
    from bench import keys

    return keys.run(args["ws"], [int(s) for s in args["sizes"]], int(args["rounds"]))


WORKERS = {"app": w_app, "app_build": w_app_build, "embed": w_embed, "scan_memory": w_scan_memory, "score": w_score,
           "gemm": w_gemm, "layout": w_layout, "layout_reload": w_layout_reload, "knn_data": w_knn_data,
           "knn_lib": w_knn_lib, "recipe": w_recipe, "agreement": w_agreement, "refit": w_refit, "keys": w_keys,
           "keys_demo": w_keys_demo}


def main() -> None:
    name, payload = sys.argv[1], sys.argv[2]  # payload: JSON, or @FILE holding JSON
    args = json.loads(Path(payload[1:]).read_text(encoding="utf-8") if payload.startswith("@") else payload)
    res = WORKERS[name](args)
    sys.stdout.write("\n" + json.dumps(res, default=float) + "\n")


if __name__ == "__main__":
    main()
