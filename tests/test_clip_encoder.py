"""The real open_clip loading code, driven by a tiny random-weight config (this is not CLIP)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipcleaner_core import encoders
from clipcleaner_core.encoders import WeightsUnavailable, make_encoder
from clipcleaner_core.workspace import Workspace


def _subset(demo_dir: Path, out: Path, n: int = 60) -> Path:
    df = pd.read_csv(demo_dir / "labels.csv").iloc[:n]  # paths stay relative: scanned with --root demo_dir
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "subset.csv", index=False)
    return out / "subset.csv"


def test_checkpoint_state_dict_roundtrip(tiny_clip):
    import open_clip
    import torch

    enc = make_encoder("clip", model=tiny_clip["model"], checkpoint=tiny_clip["checkpoint"], device="cpu")
    assert enc.has_text and enc.identity["checkpoint"].endswith("tiny_random.pt")
    torch.manual_seed(0)  # the same seed as the saved weights
    ref, _, pre = open_clip.create_model_and_transforms(tiny_clip["model"], pretrained=None)
    ref.load_state_dict(torch.load(tiny_clip["checkpoint"], weights_only=True))
    ref.eval()
    img = Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8))
    x = enc.preprocess(img)[None]
    with torch.no_grad():
        want = ref.encode_image(pre(img)[None]).numpy()
    got = enc.encode_images(x)
    np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)
    # a freshly initialised model differs: the checkpoint really was loaded
    torch.manual_seed(123)
    other, _, _ = open_clip.create_model_and_transforms(tiny_clip["model"], pretrained=None)
    with torch.no_grad():
        o = other.eval().encode_image(x).numpy()
    assert not np.allclose(o / np.linalg.norm(o), got, atol=1e-3)


def test_prompts_tokenise_offline(tiny_clip):
    enc = make_encoder("clip", model=tiny_clip["model"], checkpoint=tiny_clip["checkpoint"])
    t = enc.encode_text(["a photo of a cat.", "a photo of a dog which has floppy ears."])
    assert t.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-5)


def test_pretrained_tag_from_local_hf_cache(tiny_clip, tmp_path, monkeypatch):
    """A pretrained tag whose weights sit in the Hugging Face cache loads offline, without hub access."""
    import shutil

    import open_clip.pretrained as ocp

    repo = "local-test/cc-tiny"
    snap = tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    shutil.copy(tiny_clip["checkpoint"], snap / "open_clip_pytorch_model.bin")
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setitem(ocp._PRETRAINED, tiny_clip["model"], {"tinytag": ocp._pcfg(hf_hub=f"{repo}/")})
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert encoders.cached_pretrained_file(tiny_clip["model"], "tinytag", cache_dir=str(tmp_path / "hub"))
    enc = encoders.ClipEncoder(model=tiny_clip["model"], pretrained="tinytag", cache_dir=str(tmp_path / "hub"),
                               probe=lambda: pytest.fail("must not probe the network when weights are cached"))
    assert enc.identity["pretrained"] == "tinytag"


def test_missing_pretrained_weights_fail_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as e:
        make_encoder("clip", model="ViT-B-32", pretrained="openai")
    assert time.perf_counter() - t < 5
    msg = str(e.value)
    assert "ViT-B-32/openai" in msg and "--checkpoint" in msg and "--encoder pixels" in msg


def test_missing_weights_fail_fast_without_offline_flag_when_hub_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t = time.perf_counter()
    with pytest.raises(WeightsUnavailable):
        encoders.check_pretrained_available("ViT-B-32", "openai", probe=lambda: False)
    assert time.perf_counter() - t < 5


def test_bad_weight_arguments(tiny_clip, tmp_path):
    with pytest.raises(ValueError, match="known tags"):
        make_encoder("clip", model="ViT-B-32", pretrained="no-such-tag")
    with pytest.raises(ValueError, match="needs weights"):
        make_encoder("clip", model="ViT-B-32")
    with pytest.raises(WeightsUnavailable, match="not found"):
        make_encoder("clip", model=tiny_clip["model"], checkpoint=str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load"):
        make_encoder("clip", model=tiny_clip["model"], checkpoint=str(bad))


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipcleaner_core.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=300)


def test_cli_scan_with_clip_checkpoint_end_to_end(tiny_clip, demo_dir, tmp_path):
    table = _subset(demo_dir, tmp_path / "data")
    ws = tmp_path / "ws"
    r = _cli("scan", str(table), "--root", str(demo_dir), "--classes", str(demo_dir / "classes.txt"), "-w", str(ws),
             "--encoder", "clip",
             "--model", tiny_clip["model"], "--model-config", tiny_clip["config"], "--checkpoint",
             tiny_clip["checkpoint"], "--workers", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    settings = json.loads((ws / "workspace.json").read_text())["settings"]
    assert settings["encoder"]["encoder"] == "clip" and settings["zero_shot"]["available"]
    assert settings["detection"]["criteria_used"] == ["zs_loss", "zs_cons", "lr_loss", "lr_cons"]
    assert settings["zero_shot"]["prompts"] == 10 * 8
    scores = Workspace(ws).scores()
    assert len(scores) == 60 and scores["zs_loss_score"].notna().all()
    assert scores["suggested_source"].iloc[0] == "zero-shot CLIP"
    emb = Workspace(ws).embeddings()
    assert emb.dtype == np.float16 and emb.shape == (60, 32)
    # second scan reuses the cached embeddings
    r2 = _cli("scan", str(table), "--root", str(demo_dir), "--classes", str(demo_dir / "classes.txt"), "-w", str(ws),
              "--encoder", "clip",
              "--model", tiny_clip["model"], "--model-config", tiny_clip["config"], "--checkpoint",
              tiny_clip["checkpoint"], "--workers", "0", "--method", "clipcleaner")
    assert r2.returncode == 0, r2.stderr
    assert "reused from cache" in r2.stderr
    np.testing.assert_array_equal(np.asarray(Workspace(ws).embeddings()), emb)


def test_cli_reports_missing_weights_clearly(demo_dir, tmp_path):
    t = time.perf_counter()
    r = _cli("scan", str(demo_dir / "labels.csv"), "-w", str(tmp_path / "ws"), "--encoder", "clip",
             "--pretrained", "openai")
    assert time.perf_counter() - t < 60
    assert r.returncode == 2
    assert "not in the local cache" in r.stderr and "Traceback" not in r.stderr
