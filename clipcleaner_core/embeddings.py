"""Embedding stage: decode, preprocess, batch and encode the usable samples, cached and resumable.

Features are written per chunk of ``CHUNK`` samples into ``WS/cache/emb-<key>/`` where ``key`` hashes the dataset
content (paths, sizes, mtimes) and the encoder identity. A second scan with the same key reuses them; an
interrupted scan resumes from the chunks already written. The final matrix is written to ``WS/embeddings.npy``:
float16, shape (N_scored, D), unit L2 norm rows, memory-mappable (``numpy.load(..., mmap_mode="r")``), rows
aligned with ``scores.parquet``. Images that fail to decode are reported (path + reason) and left out.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .dataset import limit_aspect, load_image
from .encoders import Encoder

CHUNK = 1024
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class EmbeddingResult:
    """``features``: (N_ok, D) float16 memmap over ``path``; ``sample_ids`` of its rows; ``failed``: id → reason."""

    features: np.ndarray
    sample_ids: list[str]
    failed: dict[str, str]
    path: Path
    cache_dir: Path
    reused: bool


class _ImageSet:
    """Map-style dataset for torch's DataLoader: index → (tensor, index, ok, reason). Never raises on bad images."""

    def __init__(self, paths: Sequence[str], preprocess: Callable, shape_hint: Callable[[], object]):
        self.paths = list(paths)
        self.preprocess = preprocess
        self._zero = None
        self.shape_hint = shape_hint

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.preprocess(limit_aspect(load_image(self.paths[i]))), i, True, ""
        except Exception as e:  # noqa: BLE001 - any decode failure is reported, not fatal
            if self._zero is None:
                self._zero = self.shape_hint()
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            return self._zero, i, False, f"cannot decode image ({type(e).__name__}: {msg})"


def embedding_key(content_key: str, encoder: Encoder) -> str:
    """Cache key of an embedding run: hash of (dataset content key, encoder identity)."""
    return hashlib.sha256(f"{content_key}\0{encoder.description}".encode()).hexdigest()[:16]


def _chunk_path(d: Path, c: int) -> Path:
    return d / f"chunk-{c:06d}.npz"


def _write_atomic_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


class ChunkWriter:
    """Collects per-sample results arriving in any order and writes each chunk file as soon as it is complete.

    ``todo``: the chunk numbers to produce for ``n`` samples; ``add(g, feat, ok, reason)`` takes the result of
    global sample index ``g``. Used by the local engine and the Ray engine, so both write identical caches.
    """

    def __init__(self, cache_dir: Path, sample_ids: Sequence[str], todo: Sequence[int]):
        self.cache_dir, self.sample_ids, self.n = cache_dir, sample_ids, len(sample_ids)
        self.pending = {c: min(self.n, (c + 1) * CHUNK) - c * CHUNK for c in todo}
        self.feats: dict[int, np.ndarray] = {}
        self.ok: dict[int, bool] = {}
        self.reason: dict[int, str] = {}

    def add(self, g: int, feat: np.ndarray, ok: bool, reason: str) -> None:
        self.feats[g], self.ok[g], self.reason[g] = feat, bool(ok), str(reason)
        c = g // CHUNK
        self.pending[c] -= 1
        if self.pending[c] == 0:
            rng = range(c * CHUNK, min(self.n, (c + 1) * CHUNK))
            _write_atomic_npz(
                _chunk_path(self.cache_dir, c),
                feats=np.stack([self.feats.pop(i) for i in rng]).astype(np.float16),
                ok=np.array([self.ok.pop(i) for i in rng]),
                reason=np.array([self.reason.pop(i) for i in rng], dtype=str),
                ids=np.array([self.sample_ids[i] for i in rng], dtype=str),
            )

    def incomplete(self) -> list[int]:
        """Chunk numbers that did not receive all their samples."""
        return [c for c, left in self.pending.items() if left != 0]


def default_workers() -> int:
    """DataLoader workers for decoding: one per spare core, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def embed_samples(abs_paths: Sequence[str], sample_ids: Sequence[str], encoder: Encoder, cache_dir: Path,
                  out_path: Path, batch_size: int = 64, num_workers: int | None = None,
                  progress: Progress | None = None) -> EmbeddingResult:
    """Encode images ``abs_paths`` (N,) with ``encoder``; see the module doc for caching and output.

    Resumable: chunks already in ``cache_dir`` are not recomputed. ``progress(stage, done, total)`` is called
    after every batch (stage "embed") and during assembly (stage "assemble").
    """
    import torch
    from torch.utils.data import DataLoader

    cache_dir.mkdir(parents=True, exist_ok=True)
    n = len(abs_paths)
    n_chunks = (n + CHUNK - 1) // CHUNK
    todo = [c for c in range(n_chunks) if not _chunk_path(cache_dir, c).exists()]
    reused = not todo
    if num_workers is None:
        num_workers = 0 if encoder.kind == "pixels" else default_workers()
    done = n - sum(min(CHUNK, n - c * CHUNK) for c in todo)
    if progress:
        progress("embed", min(done, n), n)
    if todo:
        order = np.concatenate([np.arange(c * CHUNK, min(n, (c + 1) * CHUNK)) for c in todo])
        sub_paths = [abs_paths[i] for i in order]

        def shape_hint():
            from PIL import Image

            return encoder.preprocess(Image.new("RGB", (32, 32), (255, 255, 255)))

        ds = _ImageSet(sub_paths, encoder.preprocess, shape_hint)
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=torch.cuda.is_available(), persistent_workers=False,
                            prefetch_factor=4 if num_workers > 0 else None)
        writer = ChunkWriter(cache_dir, sample_ids, todo)
        for x, idx, ok, reason in loader:
            feats = encoder.encode_images(x)
            for j, local in enumerate(idx.tolist()):
                writer.add(int(order[local]), feats[j], bool(ok[j]), reason[j])
            done += len(idx)
            if progress:
                progress("embed", min(done, n), n)
    return assemble(cache_dir, n_chunks, sample_ids, encoder, out_path, reused, progress)


def _load_chunk(cache_dir: Path, c: int) -> dict:
    with np.load(_chunk_path(cache_dir, c)) as z:
        return {k: z[k] for k in z.files}


def assemble(cache_dir: Path, n_chunks: int, sample_ids: Sequence[str], encoder: Encoder, out_path: Path,
             reused: bool = False, progress: Progress | None = None) -> EmbeddingResult:
    """Join the chunks into ``out_path`` (float16, unit-norm rows, only images that decoded)."""
    failed: dict[str, str] = {}
    keep_ids: list[str] = []
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
        dim = z["feats"].shape[1]

    def valid_chunks():
        for c in range(n_chunks):
            z = _load_chunk(cache_dir, c)
            yield z["feats"][z["ok"]].astype(np.float32)

    stats = encoder.fit_stats(valid_chunks)
    tmp = out_path.with_name(out_path.name + ".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(keep_ids), dim))
    pos = 0
    for c, f in enumerate(valid_chunks()):
        if len(f):
            out[pos:pos + len(f)] = encoder.finalize(stats, f).astype(np.float16)
            pos += len(f)
        if progress:
            progress("assemble", c + 1, n_chunks)
    out.flush()
    del out
    os.replace(tmp, out_path)
    (cache_dir / "done.json").write_text(json.dumps({"encoder": encoder.identity, "n": len(sample_ids),
                                                     "failed": len(failed)}), encoding="utf-8")
    feats = np.load(out_path, mmap_mode="r")
    return EmbeddingResult(features=feats, sample_ids=keep_ids, failed=failed, path=out_path,
                           cache_dir=cache_dir, reused=reused)
