"""Orchestration: Dataset → Embeddings → Scores, written into a workspace. The CLI and the app call these.

``scan`` is resumable and idempotent: embeddings are cached by (dataset content, encoder identity), so running it
again with new thresholds or a new method only recomputes the scores; an interrupted embedding resumes from the
chunks already on disk. ``rescore`` recomputes the scores from the workspace alone (no images, no model).
"""
from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, issues, quality, registry
from .config import EncoderConfig, ScoreConfig
from .dataset import STATUS_UNREADABLE, load_dataset
from .detectors import Detection, detect, explain
from .embeddings import embed_samples, embedding_key
from .encoders import Encoder, make_encoder
from .noise import centroid_similarity
from .prompts import DEFAULT_TEMPLATES, build_prompts, load_descriptions
from .workspace import REQUIRED_SCORE_COLUMNS, DataSource, DetectionInfo, Settings, Workspace, WorkspaceError, ZeroShot

__all__ = ["EncoderConfig", "ScoreConfig", "ScanResult", "scan", "rescore", "score_embeddings", "build_encoder"]

Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]
ORPHAN_COLUMNS = ["sample_id", "action", "label", "reviewer", "updated_at", "reason"]
DEFAULT_PRETRAINED = "openai"
"""open_clip tag used when the clip encoder is given neither ``--pretrained`` nor ``--checkpoint`` (the paper's
reference model is OpenAI's ViT-B/32)."""


@dataclass
class ScanResult:
    workspace: Workspace
    settings: Settings
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


def build_encoder(cfg: EncoderConfig) -> Encoder:
    """The encoder ``cfg`` names (the clip encoder defaults to :data:`DEFAULT_PRETRAINED` weights)."""
    cfg.validate()
    pretrained = cfg.pretrained or (None if cfg.checkpoint or cfg.encoder != "clip" else DEFAULT_PRETRAINED)
    return make_encoder(cfg.encoder, model=cfg.model, pretrained=pretrained, checkpoint=cfg.checkpoint,
                        device=cfg.device, precision=cfg.precision, pixel_size=cfg.pixel_size,
                        model_config=cfg.model_config)


@dataclass
class _TextSide:
    """Prompt features of a CLIP encoder (None without a text tower) and how they were made."""

    features: np.ndarray | None
    class_index: np.ndarray | None
    prompts: dict | None
    info: ZeroShot


def _text_side(enc: Encoder, classes: list[str], descriptions: str | dict | None,
               templates: list[str] | None) -> _TextSide:
    if not enc.has_text:
        return _TextSide(None, None, None, ZeroShot(
            available=False, reason=f"the {enc.kind} encoder has no text tower: zero-shot criteria need CLIP weights "
                                    f"(--encoder clip --pretrained TAG or --checkpoint FILE)"))
    desc = load_descriptions(descriptions) if isinstance(descriptions, (str, Path)) else (descriptions or None)
    texts, owner = build_prompts(classes, desc, tuple(templates or DEFAULT_TEMPLATES))
    tf = enc.encode_text(texts).astype(np.float32)
    return _TextSide(tf, np.asarray(owner, dtype=np.int64), {"texts": texts, "class_index": list(owner)},
                     ZeroShot(available=True, prompts=len(texts),
                              descriptions=str(descriptions) if isinstance(descriptions, (str, Path))
                              else bool(descriptions)))


def scan(data: str | Path, workspace: str | Path | Workspace, *, root: str | None = None,
         classes_file: str | None = None, allow_outside_root: bool = False,
         encoder: EncoderConfig | Encoder | None = None, scoring: ScoreConfig | None = None,
         descriptions: str | dict | None = None, templates: list[str] | None = None,
         progress: Progress | None = None, log: Log | None = None) -> ScanResult:
    """Scan a dataset into ``workspace``: load, embed (cached), score, publish; returns scores and problems.

    Bad samples never stop the scan: they are reported in ``result.problems`` (and ``dataset.parquet``) with
    a reason naming the file, and left out of scoring. Nothing is published until the whole set is written: an
    interrupted scan leaves the previous results as they were (and resumes its embedding from the cache).
    """
    log = log or (lambda msg: None)
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    scoring = (scoring or ScoreConfig()).validate()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    ds = load_dataset(data, root=root, classes_file=classes_file, allow_outside_root=allow_outside_root,
                      skip_dirs=(ws.path,))  # a workspace inside an ImageFolder is not a class
    timings["dataset_s"] = time.perf_counter() - t0
    if ds.kind == "table" and "split" not in ds.samples:  # train/val/test column: duplicates across it are leakage
        split = issues.table_splits(data, ds.samples, root)
        if split is not None:
            ds.samples["split"] = split
    n_bad = int((ds.samples["status"] != "ok").sum())
    log(f"dataset: {len(ds.samples)} samples, {len(ds.classes)} classes, {n_bad} unusable")

    enc_cfg = (encoder if isinstance(encoder, EncoderConfig) else EncoderConfig()).validate()
    t0 = time.perf_counter()
    enc = encoder if isinstance(encoder, Encoder) else build_encoder(enc_cfg)
    timings["model_load_s"] = time.perf_counter() - t0
    ok = ds.ok
    key = embedding_key(ds.content_key(), enc)
    cache = ws.embedding_cache(key)
    emb_path = cache / "embeddings.npy"
    t0 = time.perf_counter()
    engine = enc_cfg.engine if not isinstance(encoder, Encoder) else "local"
    if engine == "ray":
        from .ray_engine import embed_samples_ray, encoder_spec

        spec = encoder_spec(enc, kind=enc_cfg.encoder, model=enc_cfg.model, pretrained=enc_cfg.pretrained,
                            checkpoint=enc_cfg.checkpoint, model_config=enc_cfg.model_config,
                            device=enc_cfg.device, pixel_size=enc_cfg.pixel_size)
        emb = embed_samples_ray(list(ok["abs_path"]), list(ok["sample_id"]), enc, spec, cache, emb_path,
                                address=enc_cfg.ray_address, batch_size=enc_cfg.batch_size, progress=progress)
    else:
        emb = embed_samples(list(ok["abs_path"]), list(ok["sample_id"]), enc, cache, emb_path,
                            batch_size=enc_cfg.batch_size, num_workers=enc_cfg.num_workers, progress=progress)
    timings["embed_s"] = time.perf_counter() - t0
    for note in emb.notes:  # e.g. a damaged cache chunk that was discarded and recomputed
        ds.notes.append(note)
        log(note)
    log(f"embeddings: {emb.features.shape[0]} x {emb.features.shape[1]} "
        f"({'reused from cache' if emb.reused else 'computed'}), {len(emb.failed)} failed to decode")
    if emb.failed:
        ds.mark(emb.failed.keys(), STATUS_UNREADABLE,
                {s: f"{p}: {r}" for s, p, r in zip(ok["sample_id"], ok["path"], ok["sample_id"].map(emb.failed))
                 if s in emb.failed})

    text = _text_side(enc, ds.classes, descriptions, templates)
    base = Settings(
        classes=tuple(ds.classes),
        data=DataSource(source=str(Path(str(data)).absolute()), root=str(ds.root), kind=ds.kind,
                        classes_file=str(Path(classes_file).absolute()) if classes_file else None,
                        allow_outside_root=allow_outside_root),
        encoder=enc.identity, encoder_kind=enc.kind, embedding_key=key, embedding_engine=engine,
        zero_shot=text.info, scoring=scoring,
        counts={"samples": int(len(ds.samples)), "unusable": int((ds.samples["status"] != "ok").sum())},
        notes=tuple(ds.notes), versions=_versions(), clipcleaner_version=__version__,
        scanned_at=datetime.now(UTC).isoformat(timespec="seconds"), timings=timings)
    return _score_and_publish(ws, base, ds.samples, emb_path, text, scoring, progress, log,
                              _ImageFacts(emb.image_stats, emb.descriptors))


@dataclass
class _ImageFacts:
    """Per-image statistics (:func:`quality.stats_table`) and thumbnail descriptors from the embedding decode,
    rows aligned with the embeddings; None when unknown (embeddings computed elsewhere)."""

    stats: pd.DataFrame | None = None
    descriptors: np.ndarray | None = None

    @classmethod
    def published(cls, ws: Workspace) -> _ImageFacts:
        """What the published set of ``ws`` holds (its ``img_*`` / ``content_hash`` columns and descriptors)."""
        s = ws.scores()
        cols = [f"img_{f}" for f in quality.STAT_FIELDS]
        stats = None
        if all(c in s for c in cols) and "content_hash" in s:
            stats = quality.stats_table(s[cols].to_numpy(dtype=np.float32), s["content_hash"].astype(str),
                                        s["sample_id"])
        d = ws.array("descriptors")
        return cls(stats, None if d is None else np.asarray(d))


def rescore(workspace: str | Path | Workspace, scoring: ScoreConfig | None = None, *,
            progress: Progress | None = None, log: Log | None = None) -> ScanResult:
    """Recompute all scores of a published workspace with ``scoring`` settings (no images, no model) and publish
    them as a new set (same dataset, embeddings and prompt features)."""
    log = log or (lambda msg: None)
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    m = ws.manifest()
    scoring = (scoring or m.settings.scoring).validate()
    tf = ws.array("text_features")
    prompts = ws.json_artifact("prompts")
    text = _TextSide(None if tf is None else np.asarray(tf, dtype=np.float32),
                     None if prompts is None else np.asarray(prompts["class_index"], dtype=np.int64),
                     prompts, m.settings.zero_shot)
    ws.embeddings()  # checks the published embeddings against the manifest before using them
    return _score_and_publish(ws, m.settings, ws.dataset(), ws.artifact_path("embeddings"), text, scoring,
                              progress, log, _ImageFacts.published(ws))


def score_embeddings(workspace: str | Path | Workspace, settings: Settings, samples: pd.DataFrame,
                     embeddings: Path, *, text_features: np.ndarray | None = None,
                     text_class: np.ndarray | None = None, prompts: list[str] | None = None,
                     scoring: ScoreConfig | None = None, progress: Progress | None = None,
                     log: Log | None = None, image_stats: pd.DataFrame | None = None,
                     descriptors: np.ndarray | None = None) -> ScanResult:
    """Score embeddings computed elsewhere and publish them as the workspace's set.

    ``samples``: the dataset table (columns of ``dataset.parquet``; rows with ``status == "ok"`` are scored, in
    order); ``embeddings``: an ``.npy`` (N_ok, D) float16 unit-norm matrix, best placed in
    ``ws.embedding_cache(settings.embedding_key)``; ``text_features`` (M, D) / ``text_class`` (M,) / ``prompts``
    (M,) enable zero-shot. ``settings`` describes where they came from (classes, encoder, …). ``image_stats``
    (:func:`quality.stats_table`) and ``descriptors`` (N_ok, quality.DESC_DIM), rows aligned with the embeddings,
    enable exact duplicates, pixel-level near duplicates and the image-quality flags.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if text_features is None:
        text = _TextSide(None, None, None, settings.zero_shot)
    else:
        owner = np.asarray(text_class, dtype=np.int64)
        text = _TextSide(np.asarray(text_features, dtype=np.float32), owner,
                         {"texts": list(prompts or [""] * len(owner)), "class_index": owner.tolist()},
                         replace(settings.zero_shot, available=True, prompts=len(owner)))
    return _score_and_publish(ws, settings, samples, Path(embeddings), text,
                              (scoring or settings.scoring).validate(), progress, log or (lambda m: None),
                              _ImageFacts(image_stats, descriptors))


def _score_and_publish(ws: Workspace, base: Settings, samples: pd.DataFrame, emb_path: Path, text: _TextSide,
                       scoring: ScoreConfig, progress: Progress | None, log: Log,
                       image: _ImageFacts | None = None) -> ScanResult:
    """Score the usable rows of ``samples`` on the embeddings at ``emb_path`` (label detectors, then the issue
    types of :mod:`issues`) and publish the whole set."""
    classes = list(base.classes)
    ok = samples[samples["status"] == "ok"].reset_index(drop=True)
    feats = np.asarray(np.load(emb_path, mmap_mode="r"), dtype=np.float32)
    if len(ok) != len(feats):
        raise WorkspaceError(f"{emb_path}: {len(feats)} embeddings for {len(ok)} usable samples; re-scan")
    if progress:
        progress("score", 0, 1)
    t0 = time.perf_counter()
    y = ok["label_idx"].to_numpy(dtype=np.int64)
    arrays: dict[str, np.ndarray] = {}
    warnings: list[str] = []
    if len(ok) == 0:
        table = pd.DataFrame({c: pd.Series(dtype=object) for c in REQUIRED_SCORE_COLUMNS})
        info = DetectionInfo()
        if progress:
            progress("score", 1, 1)
    else:
        det = detect(feats, y, classes, scoring, text.features, text.class_index, progress=progress)
        table = pd.concat([ok[["sample_id", "path", "abs_path"]], det.table], axis=1)
        table, found, warnings = _issues(table, feats, det, classes, scoring, text, ok, image or _ImageFacts())
        info = DetectionInfo.from_dict({**det.info, "extra": {"issues": found}})
        arrays = {**_prob_arrays(det), "neighbors": det.neighbors.astype(np.int32),
                  "neighbor_sims": det.neighbor_sims.astype(np.float16),
                  "class_similarity": class_similarity(feats, y, len(classes), text.features, text.class_index)}
    if text.features is not None:
        arrays["text_features"] = text.features
    if image is not None and image.descriptors is not None and len(image.descriptors) == len(table):
        arrays["descriptors"] = np.asarray(image.descriptors, dtype=np.float16)
    elapsed = time.perf_counter() - t0
    n_flag = int(table["flagged"].sum()) if len(table) else 0
    settings = replace(base, scoring=scoring, detection=info,
                       zero_shot=text.info,
                       class_similarity_source="CLIP text prototypes" if text.features is not None
                       else "image-feature class centroids",
                       counts={**base.counts, "scored": int(len(table)), "flagged": n_flag},
                       notes=tuple(n for n in base.notes if not n.startswith(issues.health.PREFIX)) + tuple(warnings),
                       timings={**base.timings, "score_s": elapsed})
    ws.publish(settings, tables={"dataset": samples, "scores": table}, arrays=arrays,
               jsons={"prompts": text.prompts} if text.prompts is not None else {}, embeddings=emb_path)
    log(f"scores: {n_flag} of {len(table)} flagged by '{scoring.method}' "
        f"(criteria: {', '.join(info.criteria_used) or 'none'})")
    problems = samples[samples["status"] != "ok"].reset_index(drop=True)
    orphans = orphan_decisions(ws, samples, table["sample_id"], log=log)
    if len(orphans):
        log(f"review: {len(orphans)} decision(s) belong to samples not scored in this scan; they are kept")
    return ScanResult(workspace=ws, settings=settings, scores=table, problems=problems,
                      timings={**base.timings, "score_s": elapsed}, orphans=orphans)


def _prob_arrays(det: Detection) -> dict[str, np.ndarray]:
    """Every probability array of a detection by workspace name: ``probs_<src>`` (N, K) float16 when stored dense,
    else ``probs_<src>_topk_idx`` / ``probs_<src>_topk_p`` (N, t + 1), column t the given label (``probs.py``)."""
    out: dict[str, np.ndarray] = {}
    for src, p in det.probs.items():
        out.update(p.arrays(src))
    return out


def _issues(table: pd.DataFrame, feats: np.ndarray, det: Detection, classes: list[str], scoring: ScoreConfig,
            text: _TextSide, ok: pd.DataFrame, image: _ImageFacts) -> tuple[pd.DataFrame, dict, list[str]]:
    """``table`` with the issue-type columns of :func:`issues.detect_issues` (and the image statistics as
    ``img_*`` / ``content_hash``), ``flagged`` widened to the "none of the classes" samples, and ``reasons``
    recomputed now that every flag column exists. Returns (table, facts, health warnings)."""
    stats = image.stats
    if stats is not None and (len(stats) != len(table) or list(stats["sample_id"]) != list(table["sample_id"])):
        stats = None  # not the rows scored here: better none than misaligned
    desc = image.descriptors if image.descriptors is not None and len(image.descriptors) == len(table) else None
    res = issues.detect_issues(table, feats, det.probs, det.neighbors, det.neighbor_sims, classes,
                               table[f"{registry.detector(scoring.method).prefix}_flag"].to_numpy(dtype=bool),
                               text_features=text.features, image_stats=stats, descriptors=desc,
                               splits=ok["split"].to_numpy(dtype=object) if "split" in ok else None,
                               probe_out_of_fold=scoring.probe == "cv", seed=scoring.seed)
    table = pd.concat([table, res.columns], axis=1)
    if stats is not None:
        for f in quality.STAT_FIELDS:
            table[f"img_{f}"] = stats[f].to_numpy(dtype=np.float32)
        table["content_hash"] = stats["content_hash"].to_numpy(dtype=object)
    table["flagged"] = table["flagged"].to_numpy(dtype=bool) | table["ood_flag"].to_numpy(dtype=bool)
    table["reasons"] = explain(table, det.criteria)
    return table, res.info, res.warnings


def orphan_decisions(ws: Workspace, samples: pd.DataFrame, scored_ids, db_url: str | None = None,
                     log: Log | None = None) -> pd.DataFrame:
    """Review decisions of ``ws`` whose sample_id is not among ``scored_ids`` (see ``ScanResult.orphans``).

    Read only: nothing is deleted (``ReviewStore.orphans``); a workspace without a review database has none.
    ``reason`` says whether the sample left the dataset or is in it but unusable (with the dataset's reason).
    """
    from .decisions import ReviewStore, resolve_store_url

    url, _ = resolve_store_url(ws.path, db_url)  # argument > $CLIPCLEANER_DB_URL > review.json > review.sqlite
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
