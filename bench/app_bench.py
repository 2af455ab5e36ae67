"""App at scale: a generated N-sample workspace, AppTest time per page (warm) and per review action.

The workspace is built through the core: synthetic embeddings (bench/synth.py) → the dataset table +
embeddings → ``pipeline.score_embeddings`` (the real scores stage, published like a scan) → thumbnails exist
lazily as the app asks for them. Images are hard links to 64 small JPEGs (N distinct paths, cheap to make).
"""
from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGES = ["pages/home.py", "pages/suspects.py", "pages/embedding_map.py", "pages/confusion.py",
         "pages/hard_noise.py", "pages/export.py"]


def build_workspace(n: int, folder: Path, k: int = 100, seed: int = 0) -> Path:
    """Write a scanned-looking workspace of ``n`` samples under ``folder``; returns its path."""
    import pandas as pd

    from bench.synth import make_embeddings, write_images
    from clipcleaner_core.dataset import make_sample_id
    from clipcleaner_core.pipeline import score_embeddings
    from clipcleaner_core.workspace import DataSource, Settings, Workspace

    data = folder / "data"
    base, _ = write_images(data / "_base", 64, size=96, seed=seed)
    s = make_embeddings(n, k=k, seed=seed)
    rel = [f"{s.classes[s.y[i]]}/img_{i:07d}.jpg" for i in range(n)]
    for c in s.classes:
        (data / c).mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(rel):
        os.link(base[i % len(base)], data / r)
    ws = Workspace(folder / "ws")
    samples = pd.DataFrame({
        "sample_id": [make_sample_id(r) for r in rel], "path": rel, "abs_path": [str(data / r) for r in rel],
        "label": [s.classes[v] for v in s.y], "label_idx": s.y.astype(np.int64), "status": "ok", "reason": "",
    })
    key = f"bench-{n}-{seed}"
    emb = ws.embedding_cache(key) / "embeddings.npy"
    emb.parent.mkdir(parents=True, exist_ok=True)
    np.save(emb, s.features.astype(np.float16))
    settings = Settings(
        classes=tuple(s.classes), data=DataSource(source=str(data), root=str(data), kind="imagefolder"),
        encoder={"encoder": "bench-synthetic", "note": "synthetic embeddings, not CLIP"},
        encoder_kind="bench-synthetic", embedding_key=key, clipcleaner_version="bench",
        counts={"samples": n, "unusable": 0})
    score_embeddings(ws, settings, samples, emb, text_features=s.text_features, text_class=s.text_class,
                     prompts=[f"a photo of a {c}." for c in np.asarray(s.classes)[s.text_class]])
    return ws.path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(n: int, quick: bool = False) -> dict:
    """Generate the workspace (its own process in the benchmark, so its RSS is not the app's)."""
    folder = Path(tempfile.mkdtemp(prefix="cc-bench-app-"))
    t = time.perf_counter()
    ws = build_workspace(n, folder, k=10 if quick else 100)
    return {"workspace": str(ws), "build_workspace_s": time.perf_counter() - t, "build_peak_rss_mb": _peak_rss_mb()}


def run(n: int, quick: bool = False, ws: str | None = None) -> dict:
    """Time every page of the app on workspace ``ws`` (built first when None) twice — first = cold, second =
    warm — and the review actions."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from streamlit.testing.v1 import AppTest

    from clipcleaner_core.decisions import ReviewStore
    from clipcleaner_core.workspace import Workspace

    build_s = None
    if ws is None:
        b = build(n, quick)
        ws, build_s = b["workspace"], b["build_workspace_s"]

    def session():
        at = AppTest.from_file(APP, default_timeout=600)
        at.session_state["ws_path"] = str(ws)
        at.session_state["reviewer"] = "bench"
        at.run()
        return at

    pages: dict[str, float] = {}
    cold: dict[str, float] = {}
    errors: dict[str, list] = {}
    t = time.perf_counter()
    at = session()  # a new browser session: the app loads the workspace (scores, arrays) into its caches
    first_load = time.perf_counter() - t
    for page in PAGES:
        if not Path(ROOT / page).is_file():
            continue
        t = time.perf_counter()
        at.switch_page(page).run()
        cold[page] = time.perf_counter() - t
        t = time.perf_counter()
        at.run()  # warm: same page again (caches filled, like the next interaction)
        pages[page] = time.perf_counter() - t
        if at.exception:
            errors[page] = [str(e.value)[:300] for e in at.exception]
    actions: dict[str, float] = {}
    # core review action: one decision written to the workspace's store (what every card button does)
    scores = Workspace(ws).scores()[["sample_id", "flagged"]]
    ids = scores.loc[scores["flagged"], "sample_id"].tolist()[:60]
    with ReviewStore.for_workspace(ws) as store:
        t = time.perf_counter()
        for sid in ids[:50]:
            store.record(sid, "exclude", reviewer="bench")
        actions["ReviewStore.record (per decision)"] = (time.perf_counter() - t) / max(1, len(ids[:50]))
        t = time.perf_counter()
        store.current()
        actions["ReviewStore.current (all decisions)"] = time.perf_counter() - t
    # the same action through the app: click "exclude" on the first card of the suspects grid and rerun
    at.switch_page("pages/suspects.py").run()
    keys = [b.key for b in at.button if b.key and b.key.startswith("sus_c_") and b.key.endswith("_x")]
    if keys:
        t = time.perf_counter()
        at.button(key=keys[0]).click().run()
        actions["app: exclude click + rerun (suspects)"] = time.perf_counter() - t
    return {"n": n, "build_workspace_s": build_s, "first_load_s": first_load, "pages": pages, "pages_cold": cold,
            "actions": actions,
            "errors": errors, "peak_rss_mb": _peak_rss_mb(), "workspace": str(ws)}
