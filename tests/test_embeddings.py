"""Embedding cache: keyed by content + encoder, resumable after an interruption, float16 memmap output."""
from __future__ import annotations

import numpy as np
import pytest

from clipcleaner_core import embeddings
from clipcleaner_core.dataset import load_dataset
from clipcleaner_core.encoders import PixelEncoder


class _InterruptingEncoder(PixelEncoder):
    """Pixel encoder that raises KeyboardInterrupt on the n-th batch (simulates Ctrl-C mid-scan)."""

    def __init__(self, fail_at: int):
        super().__init__(size=8)
        self.calls = 0
        self.fail_at = fail_at

    def encode_images(self, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return super().encode_images(batch)


def test_interrupted_embedding_resumes_and_matches(demo_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "CHUNK", 64)
    ds = load_dataset(demo_dir / "labels.csv")
    ok = ds.ok.iloc[:300]
    paths, ids = list(ok["abs_path"]), list(ok["sample_id"])

    ref = embeddings.embed_samples(paths, ids, PixelEncoder(size=8), tmp_path / "ref", tmp_path / "ref.npy",
                                   batch_size=32, num_workers=0)
    enc = _InterruptingEncoder(fail_at=5)  # 4 batches of 32 = 2 full chunks of 64 written, then Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        embeddings.embed_samples(paths, ids, enc, tmp_path / "c", tmp_path / "e.npy", batch_size=32, num_workers=0)
    written = sorted(p.name for p in (tmp_path / "c").glob("chunk-*.npz"))
    assert written == ["chunk-000000.npz", "chunk-000001.npz"]
    assert not (tmp_path / "e.npy").exists()

    seen = []
    res = embeddings.embed_samples(paths, ids, PixelEncoder(size=8), tmp_path / "c", tmp_path / "e.npy",
                                   batch_size=32, num_workers=0, progress=lambda s, d, t: seen.append((s, d, t)))
    assert seen[0] == ("embed", 128, 300)  # resumed after the two chunks already on disk
    assert res.features.dtype == np.float16 and res.features.shape == (300, 192)
    assert isinstance(res.features, np.memmap)
    np.testing.assert_array_equal(np.asarray(res.features), np.asarray(ref.features))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(res.features, dtype=np.float32), axis=1), 1.0, atol=2e-3)

    again = embeddings.embed_samples(paths, ids, PixelEncoder(size=8), tmp_path / "c", tmp_path / "e.npy")
    assert again.reused


def test_cache_key_changes_with_encoder_and_content(demo_dir, tmp_path):
    ds = load_dataset(demo_dir / "labels.csv")
    k1 = embeddings.embedding_key(ds.content_key(), PixelEncoder(8))
    assert k1 == embeddings.embedding_key(ds.content_key(), PixelEncoder(8))
    assert k1 != embeddings.embedding_key(ds.content_key(), PixelEncoder(16))
    ds2 = load_dataset(demo_dir / "labels.csv")
    ds2.samples = ds2.samples.iloc[:-1]
    assert ds2.content_key() != ds.content_key()


def test_corrupt_image_is_reported_not_fatal(demo_dir, tmp_path):
    import shutil

    good = sorted((demo_dir / "images").glob("*.png"))[:5]
    paths = []
    for p in good:
        shutil.copy(p, tmp_path / p.name)
        paths.append(str(tmp_path / p.name))
    bad = tmp_path / "broken.png"
    bad.write_bytes(good[0].read_bytes()[:40])  # truncated PNG
    paths.insert(2, str(bad))
    ids = [f"id{i}" for i in range(len(paths))]
    res = embeddings.embed_samples(paths, ids, PixelEncoder(8), tmp_path / "c", tmp_path / "e.npy", num_workers=0)
    assert list(res.failed) == ["id2"] and "cannot decode" in res.failed["id2"]
    assert res.features.shape[0] == 5 and res.sample_ids == ["id0", "id1", "id3", "id4", "id5"]
