"""Key latency of the review grid, in a real browser: key press → settled page, against a trivial Streamlit app's
button rerun measured in the same run (issue 10: target ≤ 3×, at 12 and 48 cards per page, on the demo and on a
100k-sample workspace).

Both apps run as real servers (``streamlit run``) and are driven by the same headless Chromium. Each round presses
the trivial app's button key once, then, on clipcleaner's Suspects page, J (next card), K (previous), A (keep:
a decision committed to the review store), Z (undo it), 3 (relabel to the third class) and Z again. Settle time
per press: from the ``keydown`` event to the first ``script_finished`` after it plus the last DOM change
(``bench/browser.py``). Medians over the rounds; ratio = median of a key / median of the baseline.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.browser import chromium, press_and_settle, streamlit_server, wait_idle

ROOT = Path(__file__).resolve().parent.parent
TRIVIAL_APP = '''import streamlit as st

if st.button("Go", shortcut="A"):
    st.session_state["n"] = st.session_state.get("n", 0) + 1
st.write(f"pressed {st.session_state.get('n', 0)} times")
'''
SEQUENCE = ("j", "k", "a", "z", "3", "z")


def _ms(r: dict | None) -> float:
    if r is None:
        raise RuntimeError("no rerun finished within the timeout after a key press")
    return float(r["settle_ms"])


def run(ws: str, sizes: list[int], rounds: int) -> dict:
    """Medians (ms) of the baseline and of every key of :data:`SEQUENCE` per page size, and their ratios."""
    tmp = Path(tempfile.mkdtemp(prefix="cc-bench-keys-"))
    (tmp / "trivial_app.py").write_text(TRIVIAL_APP, encoding="utf-8")
    out: dict = {"workspace": ws, "rounds": rounds, "sizes": {}}
    with streamlit_server(tmp / "trivial_app.py", tmp / "trivial.log") as turl, \
            streamlit_server(ROOT / "app.py", tmp / "app.log", env={"CLIPCLEANER_WORKSPACE": ws}) as aurl, \
            chromium(settle=True) as ctx:
        tp = ctx.new_page()
        tp.set_default_timeout(120_000)
        tp.goto(turl)
        tp.get_by_role("button", name="Go").wait_for()
        wait_idle(tp)
        base_all: list[float] = []
        for size in sizes:
            ap = ctx.new_page()
            ap.set_default_timeout(300_000)
            ap.goto(f"{aurl}/suspects?sus_size={size}")
            ap.wait_for_function(f"document.querySelectorAll('.ccg-card').length === {size}", timeout=300_000)
            wait_idle(ap, settle=2.0)
            for key in SEQUENCE:  # warm-up: first thumbnails, first store write, JIT of the page's code paths
                press_and_settle(ap, key, 300_000)
            times: dict[str, list[float]] = {k: [] for k in dict.fromkeys(SEQUENCE)}
            base: list[float] = []
            for _ in range(rounds):
                tp.bring_to_front()
                base.append(_ms(press_and_settle(tp, "a")))
                ap.bring_to_front()
                for key in SEQUENCE:
                    times[key].append(_ms(press_and_settle(ap, key, 300_000)))
                    time.sleep(0.05)
            ap.close()
            base_all += base
            b = statistics.median(base)
            keys = {k: statistics.median(v) for k, v in times.items()}
            out["sizes"][str(size)] = {"baseline_ms": b, "keys_ms": keys,
                                       "ratios": {k: v / b for k, v in keys.items()},
                                       "max_ratio": max(v / b for v in keys.values()), "raw": times,
                                       "baseline_raw": base}
        out["baseline_ms"] = statistics.median(base_all)
    return out


def demo_workspace() -> str:
    """Build and scan the offline demo (pixels encoder) into a temp folder; returns the workspace path."""
    from clipcleaner_core.config import EncoderConfig
    from clipcleaner_core.demo import write_demo
    from clipcleaner_core.pipeline import scan

    root = Path(tempfile.mkdtemp(prefix="cc-bench-demo-"))
    info = write_demo(root / "data", noise="mix", seed=0)
    scan(info["labels"], root / "workspace", classes_file=info["classes_file"],
         encoder=EncoderConfig(encoder="pixels"))
    return str(root / "workspace")
