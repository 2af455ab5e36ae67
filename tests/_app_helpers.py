"""Shared fixtures of the app tests: one scanned demo workspace per test process, copied per test module.

The demo (sklearn digits, mixed noise, seed 0) is scanned once with the pixels encoder (not CLIP) into a private
temp folder; :func:`demo_workspace_copy` gives each module its own copy of the workspace folder (the images are
shared, read-only), so review decisions made by one module never leak into another.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

_LOCK = threading.Lock()
_BASE: dict[str, Path] = {}


def _build_base() -> dict[str, Path]:
    from clipcleaner_core.demo import write_demo
    from clipcleaner_core.pipeline import EncoderConfig, scan
    from clipcleaner_core.views import set_truth_path

    with _LOCK:
        if not _BASE:
            root = Path(tempfile.mkdtemp(prefix="cc-app-tests-"))
            info = write_demo(root / "data", noise="mix", seed=0)
            ws = root / "workspace"
            scan(info["labels"], ws, classes_file=info["classes_file"], encoder=EncoderConfig(encoder="pixels"))
            set_truth_path(__import__("clipcleaner_core.workspace", fromlist=["Workspace"]).Workspace(ws),
                           info["truth"])
            _BASE.update(root=root, data=root / "data", workspace=ws)
    return _BASE


def demo_workspace_copy(dest: Path) -> tuple[Path, Path]:
    """Copy the shared scanned demo workspace to ``dest/ws``; returns (workspace path, demo data folder)."""
    base = _build_base()
    out = Path(dest) / "ws"
    shutil.copytree(base["workspace"], out, ignore=shutil.ignore_patterns("review.sqlite*", "thumbs", "layout_*"))
    return out, base["data"]
