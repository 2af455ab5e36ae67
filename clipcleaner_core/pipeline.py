"""Orchestration: Dataset → Embeddings → Scores, written into a workspace. The CLI and the app call these.

``scan`` is resumable and idempotent: embeddings are cached by (dataset content, encoder identity), so running it
again with new thresholds or a new method only recomputes the scores; an interrupted embedding resumes from the
chunks already on disk. ``rescore`` recomputes the scores from the workspace alone (no images, no model).
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import __version__
from .dataset import STATUS_UNREADABLE, load_dataset
from .detectors import SOURCE_TITLES, Detection, ScoreConfig, detect
from .embeddings import embed_samples, embedding_key
from .encoders import Encoder, make_encoder
from .noise import centroid_similarity
from .probs import array_names
from .prompts import DEFAULT_TEMPLATES, build_prompts, load_descriptions
from .workspace import Workspace

Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]
ORPHAN_COLUMNS = ["sample_id", "action", "label", "reviewer", "updated_at", "reason"]


@dataclass
class EncoderConfig:
    """Which encoder to use (CLI flags of the same names)."""

    encoder: str = "pixels"
    model: str = "ViT-B-32"
    pretrained: str | None = None
    checkpoint: str | None = None
    model_config: str | None = None
    device: str = "auto"
    precision: str = "auto"
    pixel_size: int = 16
    batch_size: int = 64
    num_workers: int | None = None
    engine: str = "local"  # "local" (this process) | "ray" (Ray Data, see ray_engine.py)
    ray_address: str | None = None  # Ray cluster address (None: $RAY_ADDRESS or a local Ray)


@dataclass
class ScanResult:
    workspace: Workspace
    settings: dict
    scores: pd.DataFrame
    problems: pd.DataFrame
    timings: dict = field(default_factory=dict)
    #: review decisions whose sample is not scored in this scan (file removed, renamed or now unusable): kept in
    #: the store, reported here; columns of ``ReviewStore.current()`` plus ``reason``
    orphans: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ORPHAN_COLUMNS))


def _versions() -> dict:
    import importlib.metadata as md

    out = {"clipcleaner": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scikit-learn", "cleanlab", "torch", "open-clip-torch", "pandas"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def scan(data: str | Path, workspace: str | Path | Workspace, *, root: str | None = None,
         classes_file: str | None = None, allow_outside_root: bool = False,
         encoder: EncoderConfig | Encoder | None = None, scoring: ScoreConfig | None = None,
         descriptions: str | dict | None = None, templates: list[str] | None = None,
         progress: Progress | None = None, log: Log | None = None) -> ScanResult:
    """Scan a dataset into ``workspace``: load, embed (cached), score; returns the scores and the problems.

    Bad samples never stop the scan: they are reported in ``result.problems`` (and ``dataset.parquet``) with
    a reason naming the file, and left out of scoring.
    """
    log = log or (lambda msg: None)
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    ws.path.mkdir(parents=True, exist_ok=True)
    scoring = (scoring or ScoreConfig()).validate()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    ds = load_dataset(data, root=root, classes_file=classes_file, allow_outside_root=allow_outside_root)
    timings["dataset_s"] = time.perf_counter() - t0
    n_bad = int((ds.samples["status"] != "ok").sum())
    log(f"dataset: {len(ds.samples)} samples, {len(ds.classes)} classes, {n_bad} unusable")

    enc_cfg = encoder if isinstance(encoder, EncoderConfig) else EncoderConfig()
    t0 = time.perf_counter()
    enc = encoder if isinstance(encoder, Encoder) else make_encoder(
        enc_cfg.encoder, model=enc_cfg.model, pretrained=enc_cfg.pretrained, checkpoint=enc_cfg.checkpoint,
        device=enc_cfg.device, precision=enc_cfg.precision, pixel_size=enc_cfg.pixel_size,
        model_config=enc_cfg.model_config)
    timings["model_load_s"] = time.perf_counter() - t0
    ok = ds.ok
    key = embedding_key(ds.content_key(), enc)
    t0 = time.perf_counter()
    if enc_cfg.engine == "ray" and not isinstance(encoder, Encoder):
        from .ray_engine import embed_samples_ray, encoder_spec

        spec = encoder_spec(enc, kind=enc_cfg.encoder, model=enc_cfg.model, pretrained=enc_cfg.pretrained,
                            checkpoint=enc_cfg.checkpoint, model_config=enc_cfg.model_config,
                            device=enc_cfg.device, pixel_size=enc_cfg.pixel_size)
        emb = embed_samples_ray(list(ok["abs_path"]), list(ok["sample_id"]), enc, spec, ws.cache_dir / f"emb-{key}",
                                ws.embeddings_path, address=enc_cfg.ray_address, batch_size=enc_cfg.batch_size,
                                progress=progress)
    elif enc_cfg.engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {enc_cfg.engine!r}; choose local or ray")
    else:
        emb = embed_samples(list(ok["abs_path"]), list(ok["sample_id"]), enc, ws.cache_dir / f"emb-{key}",
                            ws.embeddings_path, batch_size=enc_cfg.batch_size, num_workers=enc_cfg.num_workers,
                            progress=progress)
    timings["embed_s"] = time.perf_counter() - t0
    log(f"embeddings: {emb.features.shape[0]} x {emb.features.shape[1]} "
        f"({'reused from cache' if emb.reused else 'computed'}), {len(emb.failed)} failed to decode")
    if emb.failed:
        ds.mark(emb.failed.keys(), STATUS_UNREADABLE,
                {s: f"{p}: {r}" for s, p, r in zip(ok["sample_id"], ok["path"], ok["sample_id"].map(emb.failed))
                 if s in emb.failed})
    ws.write_table("dataset.parquet", ds.samples)

    # prompts / text features (CLIP only)
    text_info: dict = {"available": enc.has_text}
    if enc.has_text:
        desc = load_descriptions(descriptions) if isinstance(descriptions, (str, Path)) else (descriptions or None)
        texts, owner = build_prompts(ds.classes, desc, tuple(templates or DEFAULT_TEMPLATES))
        tf = enc.encode_text(texts)
        ws.write_array("text_features", tf.astype(np.float32))
        (ws.path / "prompts.json").write_text(json.dumps({"texts": texts, "class_index": owner}, indent=1),
                                             encoding="utf-8")
        text_info.update(prompts=len(texts), descriptions=str(descriptions) if isinstance(descriptions, (str, Path))
                         else bool(descriptions))
    else:
        for stale in ("text_features.npy", "prompts.json"):
            (ws.path / stale).unlink(missing_ok=True)
        text_info["reason"] = (f"the {enc.kind} encoder has no text tower: zero-shot criteria need CLIP weights "
                               f"(--encoder clip --pretrained TAG or --checkpoint FILE)")

    settings = {
        "clipcleaner_version": __version__,
        "scanned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {"source": str(Path(str(data)).absolute()), "root": str(ds.root), "kind": ds.kind,
                 "classes_file": classes_file, "allow_outside_root": allow_outside_root},
        "classes": ds.classes,
        "encoder": enc.identity,
        "encoder_kind": enc.kind,
        "embedding_key": key,
        "embedding_engine": enc_cfg.engine if not isinstance(encoder, Encoder) else "local",
        "zero_shot": text_info,
        "counts": {"samples": int(len(ds.samples)), "unusable": int((ds.samples["status"] != "ok").sum())},
        "notes": ds.notes,
        "versions": _versions(),
    }
    try:  # settings a person made for this workspace (the shared review database) survive a re-scan
        old = json.loads(ws.settings_path.read_text(encoding="utf-8"))
        settings.update({k: old[k] for k in ("review_db",) if isinstance(old, dict) and k in old})
    except (OSError, ValueError):
        pass
    ws.write_settings({**settings, "scoring": asdict(scoring), "state": "embedded"})
    result = rescore(ws, scoring, base_settings=settings, progress=progress, log=log)
    result.timings.update(timings)
    s = result.settings
    s["timings"] = {**timings, **s.get("timings", {})}
    ws.write_settings(s)
    return result


def rescore(workspace: str | Path | Workspace, scoring: ScoreConfig | None = None, *,
            base_settings: dict | None = None, progress: Progress | None = None,
            log: Log | None = None) -> ScanResult:
    """Recompute all scores from the workspace's embeddings (and text features) with ``scoring`` settings."""
    log = log or (lambda msg: None)
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    settings = dict(base_settings or json.loads(ws.settings_path.read_text(encoding="utf-8")))
    scoring = (scoring or ScoreConfig(**settings.get("scoring", {}))).validate()
    classes: list[str] = settings["classes"]
    samples = ws.dataset()
    ok = samples[samples["status"] == "ok"].reset_index(drop=True)
    feats = np.asarray(ws.embeddings(), dtype=np.float32)
    if len(ok) != len(feats):
        raise RuntimeError(f"{ws.path}: embeddings ({len(feats)}) and usable samples ({len(ok)}) disagree; re-scan")
    tf = ws.array("text_features")
    owner = None
    if tf is not None:
        owner = np.asarray(json.loads((ws.path / "prompts.json").read_text(encoding="utf-8"))["class_index"])
    if progress:
        progress("score", 0, 1)
    t0 = time.perf_counter()
    y = ok["label_idx"].to_numpy(dtype=np.int64)
    if len(ok) == 0:
        det = None
        table = pd.DataFrame(columns=["sample_id", "path", "label", "suggested_label", "noise_score", "flagged"])
        info: dict = {"criteria_used": [], "zero_shot": tf is not None}
    else:
        det = detect(feats, y, classes, scoring, tf, owner, progress=progress)
        table = pd.concat([ok[["sample_id", "path", "abs_path"]], det.table], axis=1)
        info = det.info
    elapsed = time.perf_counter() - t0
    if progress and det is None:
        progress("score", 1, 1)
    ws.write_table("scores.parquet", table)
    if det is not None:
        _write_probs(ws, det)
        ws.write_array("neighbors", det.neighbors.astype(np.int32))
        ws.write_array("neighbor_sims", det.neighbor_sims.astype(np.float16))
        ws.write_array("class_similarity", class_similarity(feats, y, len(classes), tf, owner))
    settings.update({
        "scoring": asdict(scoring),
        "detection": info,
        "class_similarity_source": "CLIP text prototypes" if tf is not None else "image-feature class centroids",
        "counts": {**settings.get("counts", {}), "scored": int(len(table)),
                   "flagged": int(table["flagged"].sum()) if len(table) else 0},
        "state": "scored",
        "timings": {**settings.get("timings", {}), "score_s": elapsed},
    })
    ws.write_settings(settings)
    log(f"scores: {settings['counts']['flagged']} of {len(table)} flagged by '{scoring.method}' "
        f"(criteria: {', '.join(info.get('criteria_used', [])) or 'none'})")
    problems = samples[samples["status"] != "ok"].reset_index(drop=True)
    orphans = orphan_decisions(ws, samples, table["sample_id"], log=log)
    if len(orphans):
        log(f"review: {len(orphans)} decision(s) belong to samples not scored in this scan; they are kept")
    return ScanResult(workspace=ws, settings=settings, scores=table, problems=problems,
                      timings={"score_s": elapsed}, orphans=orphans)


def _prob_arrays(det: Detection) -> dict[str, np.ndarray]:
    """Every probability array of a detection by workspace name: ``probs_<src>`` (N, K) float16 when stored dense,
    else ``probs_<src>_topk_idx`` / ``probs_<src>_topk_p`` (N, t + 1), column t the given label (``probs.py``)."""
    out: dict[str, np.ndarray] = {}
    for src, p in det.probs.items():
        out.update(p.arrays(src))
    return out


def _write_probs(ws: Workspace, det: Detection) -> None:
    """Write :func:`_prob_arrays`; arrays a previous scan left (the other form, or a source this scan lacks) are
    removed, so that ``probs.load_probs`` never mixes two scans."""
    arrays = _prob_arrays(det)
    for src in SOURCE_TITLES:
        for name in array_names(src):
            if name not in arrays:
                ws.file(f"{name}.npy").unlink(missing_ok=True)
    for name, arr in arrays.items():
        ws.write_array(name, arr)


def orphan_decisions(ws: Workspace, samples: pd.DataFrame, scored_ids, db_url: str | None = None,
                     log: Log | None = None) -> pd.DataFrame:
    """Review decisions of ``ws`` whose sample_id is not among ``scored_ids`` (see ``ScanResult.orphans``).

    Read only: nothing is deleted (``ReviewStore.orphans``); a workspace without a review database has none.
    ``reason`` says whether the sample left the dataset or is in it but unusable (with the dataset's reason).
    """
    from .decisions import ReviewStore, resolve_store_url

    url, _ = resolve_store_url(ws.path, db_url)  # argument > $CLIPCLEANER_DB_URL > workspace.json > review.sqlite
    if url is None and not ws.review_db.exists():
        return pd.DataFrame(columns=ORPHAN_COLUMNS)
    try:
        with ReviewStore.for_workspace(ws.path, url=url) as store:
            orph = store.orphans(scored_ids)
    except Exception as e:  # noqa: BLE001 - an unreachable review database must not fail the scan
        if log:
            log(f"review: could not check decisions against this scan ({type(e).__name__}: {e})")
        return pd.DataFrame(columns=ORPHAN_COLUMNS)
    why = samples.set_index("sample_id")["reason"].to_dict() if len(samples) else {}
    orph["reason"] = [f"sample is unusable in this scan: {why[s]}" if s in why else
                      "sample is no longer in the dataset" for s in orph["sample_id"]]
    return orph[ORPHAN_COLUMNS].reset_index(drop=True)


def class_similarity(features: np.ndarray, y: np.ndarray, n_classes: int, text_features: np.ndarray | None,
                     text_class: np.ndarray | None) -> np.ndarray:
    """(K, K) cosine similarity between class prototypes: CLIP text prototypes (mean of a class's prompt
    features, re-normalised) when available, else image-feature centroids under the given labels."""
    if text_features is None:
        return centroid_similarity(features, y, n_classes).astype(np.float32)
    tf = np.asarray(text_features, dtype=np.float64)
    return centroid_similarity(tf, np.asarray(text_class), n_classes).astype(np.float32)
