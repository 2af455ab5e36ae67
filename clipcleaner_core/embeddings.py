"""Embedding stage: decode, preprocess, batch and encode the usable samples, cached and resumable.

Features are written per chunk of ``CHUNK`` samples into ``WS/cache/emb-<key>/`` where ``key`` hashes the dataset
content (paths, sizes, mtimes) and the encoder identity. A second scan with the same key reuses them; an
interrupted scan resumes from the chunks already written. The final matrix is written to ``WS/embeddings.npy``:
float16, shape (N_scored, D), unit L2 norm rows, memory-mappable (``numpy.load(..., mmap_mode="r")``), rows
aligned with ``scores.parquet``. Images that fail to decode are reported (path + reason) and left out.

A cached chunk that cannot be read back (truncated by a crash or a full disk, or written for other samples) is
discarded and recomputed, with a note (:func:`chunks_to_compute`). Files are written with plain writes, never
through a memory map, so a full disk is an ``OSError`` naming the folder (not a SIGBUS), and no temp file is left.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import quality
from .encoders import Encoder
from .images import decode_for_embedding, stand_in

CHUNK = 1024
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class EmbeddingResult:
    """``features``: (N_ok, D) float16 memmap over ``path``; ``sample_ids`` of its rows; ``failed``: id → reason;
    ``image_stats``: :func:`quality.stats_table` of the same rows; ``descriptors``: (N_ok, quality.DESC_DIM)
    float16 thumbnails (:func:`quality.descriptor`)."""

    features: np.ndarray
    sample_ids: list[str]
    failed: dict[str, str]
    path: Path
    cache_dir: Path
    reused: bool
    notes: list[str] = field(default_factory=list)  # e.g. cache chunks that were discarded and recomputed
    image_stats: object | None = None  # pandas DataFrame (quality.stats_table)
    descriptors: np.ndarray | None = None


class _ImageSet:
    """Map-style dataset for torch's DataLoader: index → (tensor, index, ok, reason, image statistics). Never raises
    on bad images: a sample that fails to decode gets the encoder's stand-in input (:func:`images.stand_in`),
    ok=False and :func:`quality.no_stats`."""

    def __init__(self, paths: Sequence[str], preprocess: Callable):
        self.paths = list(paths)
        self.preprocess = preprocess
        self._stand_in = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        d = decode_for_embedding(self.paths[i], self.preprocess)
        if d.ok:
            return d.x, i, True, "", quality.image_stats(d.image)
        if self._stand_in is None:
            self._stand_in = stand_in(self.preprocess)
        return self._stand_in, i, False, d.reason, quality.no_stats()


def embedding_key(content_key: str, encoder: Encoder) -> str:
    """Cache key of an embedding run: hash of (dataset content key, encoder identity, version of the per-image
    statistics the chunks carry)."""
    return hashlib.sha256(f"{content_key}\0{encoder.description}\0stats{quality.STATS_VERSION}".encode()
                          ).hexdigest()[:16]


def _chunk_path(d: Path, c: int) -> Path:
    return d / f"chunk-{c:06d}.npz"


def _disk_error(e: OSError, folder: Path) -> OSError:
    """``e`` with the folder it happened in as its file name (a full disk names where to free space)."""
    if e.filename is None:
        e.filename = str(folder)
    return e


def _write_atomic_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _disk_error(e, path.parent) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _chunk_problem(cache_dir: Path, c: int, expect_ids: Sequence[str]) -> str | None:
    """Why cached chunk ``c`` cannot be used (one phrase), or None when it reads back whole for ``expect_ids``."""
    try:
        z = _load_chunk(cache_dir, c)
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, OSError ... of a truncated file
        return f"cannot be read ({type(e).__name__})"
    if not {"feats", "ok", "reason", "ids", "stats", "hashes", "desc"} <= set(z):
        return "misses arrays (written by an older clipcleaner)"
    n = len(expect_ids)
    f = z["feats"]
    if (f.ndim != 2 or f.shape[0] != n or len(z["ok"]) != n or len(z["reason"]) != n
            or z["stats"].shape != (n, len(quality.STAT_FIELDS)) or z["desc"].shape != (n, quality.DESC_DIM)):
        return "has the wrong shape"
    if [str(s) for s in z["ids"]] != list(expect_ids):
        return "belongs to other samples"
    return None


def chunks_to_compute(cache_dir: Path, sample_ids: Sequence[str]) -> tuple[list[int], list[str]]:
    """The chunk numbers to (re)compute for ``sample_ids`` (N,): the missing ones and those whose cached file is
    unusable, which are deleted. Returns (todo, notes); each note names a discarded file and why."""
    n = len(sample_ids)
    todo, notes = [], []
    for c in range((n + CHUNK - 1) // CHUNK):
        p = _chunk_path(cache_dir, c)
        if not p.exists():
            todo.append(c)
            continue
        why = _chunk_problem(cache_dir, c, sample_ids[c * CHUNK:(c + 1) * CHUNK])
        if why is not None:
            p.unlink(missing_ok=True)
            notes.append(f"{p}: cached embedding chunk {why}; discarded and recomputed")
            todo.append(c)
    return todo, notes


class ChunkWriter:
    """Collects per-sample results arriving in any order and writes each chunk file as soon as it is complete.

    ``todo``: the chunk numbers to produce for ``n`` samples; ``add(g, feat, ok, reason)`` takes the result of
    global sample index ``g`` (and its :func:`quality.image_stats`). Used by the local engine and the Ray engine,
    so both write identical caches.
    """

    def __init__(self, cache_dir: Path, sample_ids: Sequence[str], todo: Sequence[int]):
        self.cache_dir, self.sample_ids, self.n = cache_dir, sample_ids, len(sample_ids)
        self.pending = {c: min(self.n, (c + 1) * CHUNK) - c * CHUNK for c in todo}
        self.feats: dict[int, np.ndarray] = {}
        self.ok: dict[int, bool] = {}
        self.reason: dict[int, str] = {}
        self.stats: dict[int, tuple] = {}

    def add(self, g: int, feat: np.ndarray, ok: bool, reason: str, stats: dict) -> None:
        self.feats[g], self.ok[g], self.reason[g] = feat, bool(ok), str(reason)
        self.stats[g] = quality.pack(stats)
        c = g // CHUNK
        self.pending[c] -= 1
        if self.pending[c] == 0:
            rng = range(c * CHUNK, min(self.n, (c + 1) * CHUNK))
            st = [self.stats.pop(i) for i in rng]
            _write_atomic_npz(
                _chunk_path(self.cache_dir, c),
                feats=np.stack([self.feats.pop(i) for i in rng]).astype(np.float16),
                ok=np.array([self.ok.pop(i) for i in rng]),
                reason=np.array([self.reason.pop(i) for i in rng], dtype=str),
                ids=np.array([self.sample_ids[i] for i in rng], dtype=str),
                stats=np.stack([s[0] for s in st]), hashes=np.array([s[1] for s in st], dtype=str),
                desc=np.stack([s[2] for s in st]).astype(np.float16),
            )

    def incomplete(self) -> list[int]:
        """Chunk numbers that did not receive all their samples."""
        return [c for c, left in self.pending.items() if left != 0]


def default_workers() -> int:
    """DataLoader workers for decoding: one per spare core, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@dataclass
class EmbeddingPlan:
    """What an embedding run has to do (the prologue both engines share): ``todo`` chunk numbers to compute,
    ``order`` (the global sample indices in those chunks, in order), ``done`` samples already cached."""

    n: int
    n_chunks: int
    todo: list[int]
    order: np.ndarray
    done: int
    notes: list[str]

    @property
    def reused(self) -> bool:
        return not self.todo


def plan_embedding(cache_dir: Path, sample_ids: Sequence[str], progress: Progress | None = None) -> EmbeddingPlan:
    """Prologue of an embedding run over ``sample_ids`` (N,): create ``cache_dir``, find the chunks to (re)compute
    (:func:`chunks_to_compute`), and report the starting progress ("embed", done, N)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    n = len(sample_ids)
    todo, notes = chunks_to_compute(cache_dir, sample_ids)
    done = n - sum(min(CHUNK, n - c * CHUNK) for c in todo)
    order = (np.concatenate([np.arange(c * CHUNK, min(n, (c + 1) * CHUNK)) for c in todo]) if todo
             else np.zeros(0, dtype=np.int64))
    if progress:
        progress("embed", min(done, n), n)
    return EmbeddingPlan(n=n, n_chunks=(n + CHUNK - 1) // CHUNK, todo=todo, order=order, done=done, notes=notes)


def embed_samples(abs_paths: Sequence[str], sample_ids: Sequence[str], encoder: Encoder, cache_dir: Path,
                  out_path: Path, batch_size: int = 64, num_workers: int | None = None,
                  progress: Progress | None = None) -> EmbeddingResult:
    """Encode images ``abs_paths`` (N,) with ``encoder``; see the module doc for caching and output.

    Resumable: chunks already in ``cache_dir`` are not recomputed. ``progress(stage, done, total)`` is called
    after every batch (stage "embed") and during assembly (stage "assemble").
    """
    import torch
    from torch.utils.data import DataLoader

    plan = plan_embedding(cache_dir, sample_ids, progress)
    if num_workers is None:
        num_workers = 0 if encoder.kind == "pixels" else default_workers()
    if plan.todo:
        order, n, done = plan.order, plan.n, plan.done
        ds = _ImageSet([abs_paths[i] for i in order], encoder.preprocess)
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=torch.cuda.is_available(), persistent_workers=False,
                            prefetch_factor=4 if num_workers > 0 else None)
        writer = ChunkWriter(cache_dir, sample_ids, plan.todo)
        for x, idx, ok, reason, stats in loader:
            feats = encoder.encode_images(x)
            for j, local in enumerate(idx.tolist()):
                writer.add(int(order[local]), feats[j], bool(ok[j]), reason[j], quality.row(stats, j))
            done += len(idx)
            if progress:
                progress("embed", min(done, n), n)
    return assemble(cache_dir, plan.n_chunks, sample_ids, encoder, out_path, plan.reused, progress, plan.notes)


def _load_chunk(cache_dir: Path, c: int) -> dict:
    with np.load(_chunk_path(cache_dir, c)) as z:
        return {k: z[k] for k in z.files}


def assemble(cache_dir: Path, n_chunks: int, sample_ids: Sequence[str], encoder: Encoder, out_path: Path,
             reused: bool = False, progress: Progress | None = None,
             notes: Sequence[str] = ()) -> EmbeddingResult:
    """Join the chunks into ``out_path`` (float16, unit-norm rows, only images that decoded); ``notes`` are
    passed on in the result."""
    failed: dict[str, str] = {}
    keep_ids: list[str] = []
    img_stats, hashes, descs = [], [], []
    dim = 0
    for c in range(n_chunks):
        z = _load_chunk(cache_dir, c)
        ids = [str(s) for s in z["ids"]]
        expect = list(sample_ids[c * CHUNK:(c + 1) * CHUNK])
        if ids != expect:  # stale cache (should not happen: the key covers the content)
            raise RuntimeError(f"{cache_dir}: cached chunk {c} does not match the dataset; delete the folder")
        for s, ok, r in zip(ids, z["ok"], z["reason"]):
            if ok:
                keep_ids.append(s)
            else:
                failed[s] = str(r)
        img_stats.append(z["stats"][z["ok"]])
        hashes += [str(h) for h in z["hashes"][z["ok"]]]
        descs.append(z["desc"][z["ok"]])
        dim = z["feats"].shape[1]

    def valid_chunks():
        for c in range(n_chunks):
            z = _load_chunk(cache_dir, c)
            yield z["feats"][z["ok"]].astype(np.float32)

    stats = encoder.fit_stats(valid_chunks)
    _write_npy(out_path, (len(keep_ids), dim), (encoder.finalize(stats, f) for f in valid_chunks()),
               lambda c: progress("assemble", c, n_chunks) if progress else None)
    (cache_dir / "done.json").write_text(json.dumps({"encoder": encoder.identity, "n": len(sample_ids),
                                                     "failed": len(failed)}), encoding="utf-8")
    feats = np.load(out_path, mmap_mode="r")
    table = quality.stats_table(np.concatenate(img_stats) if img_stats else np.zeros((0, len(quality.STAT_FIELDS))),
                                hashes, keep_ids)
    desc = np.concatenate(descs).astype(np.float16) if descs else np.zeros((0, quality.DESC_DIM), np.float16)
    return EmbeddingResult(features=feats, sample_ids=keep_ids, failed=failed, path=out_path,
                           cache_dir=cache_dir, reused=reused, notes=list(notes), image_stats=table,
                           descriptors=desc)


def _write_npy(out_path: Path, shape: tuple[int, int], blocks, on_block=None) -> None:
    """Write a float16 ``.npy`` of ``shape`` from row ``blocks`` through a temp file + rename, with plain writes.

    Free space is checked first; a full disk is an ``OSError`` (ENOSPC) naming the folder, and the temp file is
    removed on any failure. (Writing through ``open_memmap`` turns a full disk into SIGBUS.)"""
    folder = out_path.parent
    need = int(np.prod(shape)) * 2 + 4096
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < need:
        raise OSError(errno.ENOSPC, f"No space left on device: {need:,} bytes needed for {out_path.name}, "
                                    f"{free:,} free", str(folder))
    tmp = out_path.with_name(out_path.name + ".tmp.npy")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
              "shape": tuple(int(x) for x in shape)}
    rows = 0
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for k, block in enumerate(blocks):
                block = np.ascontiguousarray(block, dtype=np.float16)
                if len(block):
                    f.write(block.tobytes())
                    rows += len(block)
                if on_block:
                    on_block(k + 1)
            f.flush()
            os.fsync(f.fileno())
        if rows != shape[0]:
            raise RuntimeError(f"{out_path}: wrote {rows} rows, expected {shape[0]}")
        os.replace(tmp, out_path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _disk_error(e, folder) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
