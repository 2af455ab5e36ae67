"""Real-browser test of the Duplicates page: Chromium (Debian package, through Playwright) reviews a duplicate group
(keep one, exclude the copies) on a scanned duplicate set and the decisions land in the review database.

Needs /usr/bin/chromium; never runs `playwright install`. Skipped only when chromium is missing and CI is not set.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench.browser import CHROMIUM, chromium, streamlit_server, wait_idle

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ROOT = Path(__file__).resolve().parent.parent

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium); required in CI",
                allow_module_level=True)


@pytest.mark.slow
def test_review_a_duplicate_group_in_a_browser(tmp_path):
    from clipcleaner_core.config import EncoderConfig
    from clipcleaner_core.decisions import ReviewStore
    from clipcleaner_core.duplicates import group_table
    from clipcleaner_core.pipeline import scan
    from clipcleaner_core.synthetic import write_duplicate_set

    info = write_duplicate_set(tmp_path / "data", n_exact=6, n_near=4, n_shifted=0, limit=300, seed=0)
    ws = tmp_path / "ws"
    r = scan(info["labels"], ws, classes_file=info["classes_file"], encoder=EncoderConfig(encoder="pixels"))
    first = group_table(r.scores).iloc[0]  # the page opens on this group (conflicts first)
    members = r.scores.iloc[first["rows"]]
    with streamlit_server(ROOT / "app.py", tmp_path / "server.log", env={"CLIPCLEANER_WORKSPACE": str(ws)}) as url, \
            chromium({"width": 1400, "height": 2400}) as bctx:
        page = bctx.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        wait_idle(page)
        page.get_by_test_id("stSidebarNav").get_by_text("Duplicates", exact=True).click()
        page.locator("h2", has_text="Duplicates").first.wait_for()
        wait_idle(page)
        page.locator(f".ccg-card[data-sid='{members['sample_id'].iloc[0]}']").first.wait_for()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "09_duplicates.png"))
        page.locator(".st-key-dup_keep_go button").first.click()
        wait_idle(page)
        deadline = time.time() + 30
        while time.time() < deadline:
            with ReviewStore.for_workspace(ws, read_only=True) as st:
                cur = st.current().set_index("sample_id")
            if len(cur) >= len(members):
                break
            time.sleep(0.5)
        page.get_by_text("Kept ", exact=False).first.wait_for()  # the outcome is said
        # the card's "None" button: none of the classes (an exclude with that reason), in the same grid
        last = str(members["sample_id"].iloc[-1])
        page.locator(f".ccg-card[data-sid='{last}'] [data-act='none']").first.click()
        deadline = time.time() + 30
        while time.time() < deadline:
            with ReviewStore.for_workspace(ws, read_only=True) as st:
                hist = st.history()
            if (hist["note"].astype(str) == "none of the classes").any():
                break
            time.sleep(0.5)
    acts = cur.reindex(members["sample_id"])["action"]
    assert acts.iloc[0] == "accept" and (acts.iloc[1:] == "exclude").all(), acts
    none = hist[hist["note"].astype(str) == "none of the classes"]
    assert list(none["sample_id"]) == [last] and list(none["action"]) == ["exclude"]
    assert "Traceback" not in (tmp_path / "server.log").read_text()
