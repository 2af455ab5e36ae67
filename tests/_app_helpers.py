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
    from clipcleaner_core.evaluate import set_truth_path
    from clipcleaner_core.pipeline import EncoderConfig, scan

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


# --- the review grid (pages/_grid.py) in AppTest: read what it draws, send what the browser would send ----------
def grid(at, key: str = "sus") -> dict:
    """The data the review grid ``key`` was drawn with (cards, page, acked, message, conflict, detail, ...)."""
    import json

    for el in at.get("bidi_component"):
        if el.proto.id.endswith(f"{key}_grid") or f"-{key}_grid" in el.proto.id:
            return json.loads(el.proto.json)
    raise AssertionError(f"no review grid {key!r} on this page")


def grid_ids(at, key: str = "sus") -> list[str]:
    """Sample ids of the cards on the grid's current page, in display order."""
    return [c["sid"] for c in grid(at, key)["cards"]]


_KEEP = "keep"


def grid_send(at, key: str, *events: dict, focus: str | None = None, detail: str | None = _KEEP):
    """Send ``events`` as the browser component does (its "ui" state: outbox with sequence numbers > acked, the
    focused card and the open detail view — kept as they were unless given), rerun and return ``at``."""
    data = grid(at, key)
    prev = {}
    try:
        prev = dict(dict(at.session_state[f"{key}_grid"]).get("ui") or {})
    except (KeyError, TypeError, ValueError):
        pass
    seq = int(data["acked"])
    outbox = [dict(e, seq=seq + i + 1) for i, e in enumerate(events)]
    at.session_state[f"{key}_grid"] = {"ui": {"outbox": outbox, "focus": focus or prev.get("focus"),
                                              "detail": prev.get("detail") if detail == _KEEP else detail,
                                              "advance": True}}
    return at.run()


def grid_decide(at, key: str, sid: str, action: str, label: str | None = None, seen: int | None = None):
    """A decision on the card ``sid`` as a key or a card button sends it (with the event id the card showed)."""
    if seen is None:
        seen = next(c for c in grid(at, key)["cards"] if c["sid"] == sid)["seen"]
    return grid_send(at, key, {"type": "decide", "sid": sid, "action": action, "label": label, "seen": seen})


def grid_bulk(at, key: str, action: str):
    """The "Whole page" menu: ``action`` for every card shown (the browser sends the cards it showed)."""
    seen = {c["sid"]: c["seen"] for c in grid(at, key)["cards"]}
    return grid_send(at, key, {"type": "bulk", "action": action, "seen": seen})


def shown(markdown: object) -> str:
    """The text a reader sees for app Markdown whose data was escaped (pages/_safe.md): escapes and word joiners
    removed, so a test can look for a path or a label in an error line."""
    import re

    return re.sub(r"\\(.)", r"\1", str(markdown)).replace("\u2060", "")


APP = str(Path(__file__).resolve().parent.parent / "app.py")


def open_app(ws: Path | None, page: str | None = None, reviewer: str = "tester"):
    """An AppTest of the app with workspace ``ws`` open (None: none) as ``reviewer``, switched to ``page``; it
    fails on an exception."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["ws_path"] = str(ws) if ws else ""
    at.session_state["reviewer"] = reviewer
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
