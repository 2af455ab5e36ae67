"""Shared fixtures: a tiny random-weight open_clip config (never presented as CLIP), demo datasets."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# keep every test offline and quick to fail on hub access
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_MODEL = "cc-tiny-test"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> dict:
    """Register a tiny open_clip architecture and save random weights for it.

    Returns ``{"model": name, "config": path to the JSON, "checkpoint": path to a state_dict}``. The weights
    are random: this exercises the real loading code, it is not CLIP.
    """
    import open_clip
    import torch

    d = tmp_path_factory.mktemp("tiny_clip")
    cfg = d / f"{TINY_MODEL}.json"
    cfg.write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=None)
    ckpt = d / "tiny_random.pt"
    torch.save(model.state_dict(), ckpt)
    return {"model": TINY_MODEL, "config": str(cfg), "checkpoint": str(ckpt)}


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The digits demo (default mixed noise), written once per session."""
    from clipcleaner_core.demo import write_demo

    d = tmp_path_factory.mktemp("demo")
    write_demo(d, noise="mix", seed=0)
    return d
