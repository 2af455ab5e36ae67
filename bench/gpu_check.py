"""One unattended GPU check for the day a GPU machine is lent: ``bash bench/gpu_check.sh [OUT.json]``.

Measures, writing every number to one JSON file (rewritten after each step, so a timeout keeps what was done):

- embedding throughput on CUDA: the full scan path (``embed_samples``: decode, preprocess, batch, fp16
  autocast forward, chunk writes) vs a bare ``encode_image`` loop over pre-made tensors, with a **random-weight
  ViT-B-32** (no CLIP weights exist on that machine either; speed does not depend on the weights);
- scoring (``detectors.detect``, all criteria + baselines, probe / zero-shot / k-NN in torch on the GPU) on
  synthetic embeddings at 100k × 512, K = 100 and 1M × 512, K = 1000: time per stage and peak RSS.

On a machine without CUDA it says so, skips the GPU parts and runs the scoring on the CPU at the sizes given
(``--sizes 2000 --ks 10``: a dry run of the script itself).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from bench.run import run_worker


def _machine() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version()}
    if info["cuda"]:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    cuda_version=torch.version.cuda)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--sizes", default="100000,1000000", help="scoring sizes N (comma list)")
    ap.add_argument("--ks", default="100,1000", help="class count K for each size (comma list, same length)")
    ap.add_argument("--embed-images", type=int, default=2048, help="JPEGs (224 px) for the embedding check")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting new steps after this many seconds")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict = {"command": "bash bench/gpu_check.sh", "argv": argv, "machine": _machine(), "notes": [],
                 "embed": None, "score": [], "skipped": []}
    cuda = doc["machine"]["cuda"]

    def say(msg: str) -> None:
        print(msg, flush=True)
        doc["notes"].append(msg)

    def save() -> None:
        doc["elapsed_s"] = time.perf_counter() - t0
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=float), encoding="utf-8")
        os.replace(tmp, out)

    def left() -> float:
        return a.budget_s - (time.perf_counter() - t0)

    say("embedding model: open_clip ViT-B-32 with RANDOM weights (no CLIP weights on this machine; throughput does "
        "not depend on the weights). Scoring data: synthetic CLIP-like embeddings (bench/synth.py), not CLIP output.")
    if not cuda:
        say("no CUDA device: the GPU parts (embedding on CUDA, scoring on CUDA) are SKIPPED; scoring runs on the CPU "
            "at the sizes given (a dry run of this script).")
    save()
    # 1. embedding: fp16 autocast scan path vs bare loop (GPU only)
    if cuda:
        from bench.synth import write_images

        d = Path(tempfile.mkdtemp(prefix="cc-gpu-img-"))
        paths, _ = write_images(d, a.embed_images, size=224)
        try:
            r = run_worker("embed", {"model": "ViT-B-32", "precision": "fp16", "device": "cuda", "paths": paths,
                                     "batch_size": 256, "workers": [min(8, max(1, (os.cpu_count() or 2) - 2))],
                                     "rounds": 3}, timeout=max(30.0, min(180.0, left())))
            bare = r["n"] / min(r["bare_seconds"])
            w, secs = next(iter(r["pipeline_seconds"].items()))
            scan = r["n"] / min(secs)
            doc["embed"] = {**r, "bare_img_per_s": bare, "scan_img_per_s": scan, "scan_over_bare": scan / bare,
                            "workers": int(w)}
            say(f"embed fp16 on CUDA: bare {bare:.0f} img/s, scan path {scan:.0f} img/s ({scan / bare:.2f}x), "
                f"{w} decode workers, {r['n']} JPEGs, best of 3")
        except Exception as e:  # noqa: BLE001 - record and go on to the scoring
            doc["embed"] = {"error": str(e)[-2000:]}
            say(f"embed check failed: {str(e).splitlines()[0]}")
    else:
        doc["skipped"].append("embed (needs CUDA)")
    save()
    # 2. scoring at each size on the default device (CUDA when present)
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    ks = [int(s) for s in a.ks.split(",") if s.strip()]
    for n, k in zip(sizes, ks):
        if left() < 20:
            doc["skipped"].append(f"score N={n} K={k} (time budget spent)")
            say(f"score N={n:,} K={k}: skipped, time budget spent")
            continue
        try:
            r = run_worker("score", {"n": n, "k": k, "d": 512, "config": {"device": "auto"}}, timeout=max(20.0, left()))
            doc["score"].append(r)
            say(f"score N={n:,} K={k} on {r['device']}: {r['seconds']:.1f}s (cpu {r['cpu_seconds']:.0f}s), stages "
                + ", ".join(f"{s} {v:.1f}s" for s, v in sorted(r["stages"].items(), key=lambda kv: -kv[1]))
                + f"; peak RSS {r['peak_rss_mb']:.0f} MiB")
        except Exception as e:  # noqa: BLE001
            doc["score"].append({"n": n, "k": k, "error": str(e)[-2000:]})
            say(f"score N={n:,} K={k}: failed or timed out: {str(e).splitlines()[0]}")
        save()
    save()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
