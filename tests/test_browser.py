"""Real-browser test: `streamlit run app.py` on a free localhost port, driven by Chromium (Debian package) through
Playwright. Builds and scans the offline demo from the Home page, relabels one suspect, excludes another, downloads
the cleaned CSV and checks those two rows, and saves a screenshot of every page into tests/artifacts/.

Needs /usr/bin/chromium (`apt-get install chromium`); never runs `playwright install`. Skipped only when chromium is
missing and the CI environment variable is not set.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # long: run by CI and `pytest`, skipped by `pytest -m "not slow"`

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium); required in CI",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(tmp: Path, env_extra: dict[str, str]):
    """``streamlit run app.py`` on a free localhost port with ``env_extra`` set; yields its URL once healthy and
    stops the server afterwards. Its log is ``tmp/server.log``."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "CLIPCLEANER_WORKSPACE"}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **env_extra)
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited: {(tmp / 'server.log').read_text()}")
        else:
            raise RuntimeError("streamlit did not become healthy in 90 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    with serve_app(tmp, {"CLIPCLEANER_DEMO_DIR": str(tmp / "demo")}) as url:
        yield {"url": url, "tmp": tmp, "log": tmp / "server.log"}


def _idle(page, timeout: float = 120.0, settle: float = 1.0) -> None:
    """Wait until the app has finished running its script (no running-status widget for ``settle`` seconds)."""
    page.wait_for_selector("[data-testid='stAppViewContainer']", timeout=timeout * 1000)
    deadline = time.time() + timeout
    quiet_since = None
    while time.time() < deadline:
        running = page.locator("[data-testid='stStatusWidget']").count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since >= settle:
            return
        time.sleep(0.2)
    raise TimeoutError("the app kept running")


_T0 = time.time()


def _shot(page, name: str) -> None:
    print(f"[{time.time() - _T0:6.1f} s] screenshot {name}", file=sys.stderr)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    time.sleep(0.8)  # let plotly finish drawing
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _goto(page, url: str, label: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(label, exact=True).click()
    page.locator("h2", has_text=label).first.wait_for()  # the new page's own title, not the old page
    _idle(page)


def test_demo_review_and_export_in_a_browser(server):
    from playwright.sync_api import sync_playwright

    from clipcleaner_core import views
    from clipcleaner_core.workspace import Workspace

    url = server["url"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
            page = ctx.new_page()
            page.set_default_timeout(60_000)
            # 0. the first request of a fresh server is a deep link: it still goes through app.py's navigation
            page.goto(url.rstrip("/") + "/suspects")
            page.get_by_text("No workspace is open").first.wait_for()  # the Suspects page's empty state
            page.get_by_test_id("stSidebarNav").get_by_text("Export", exact=True).wait_for()
            _idle(page)
            assert page.url.rstrip("/").endswith("/suspects")
            page.goto(url)
            _idle(page)
            # 1. Home: build and scan the offline demo in one click
            page.get_by_role("button", name="Build and scan the demo").click()
            page.get_by_test_id("stMetric").filter(has_text="Unusable files").wait_for(timeout=180_000)
            _idle(page)
            _shot(page, "01_home")
            ws = Workspace(server["tmp"] / "demo" / "workspace")
            assert ws.exists()
            s = ws.scores()
            none = pd.DataFrame(columns=["sample_id", "action", "label", "reviewer", "updated_at"])
            order = views.filter_rows(s, views.review_state(s["sample_id"], none))  # the grid's order
            first, second, third = s.iloc[order[0]], s.iloc[order[1]], s.iloc[order[2]]

            # 2. Suspects: take the suggestion for the top suspect, exclude the second
            _goto(page, url, "Suspects")
            page.locator(f".st-key-sus-card-{first['sample_id']}").first.wait_for()
            _shot(page, "02_suspects")
            page.locator(f".st-key-sus_c_{first['sample_id']}_s button").first.click()
            page.locator(f".st-key-sus-card-{first['sample_id']}").wait_for(state="detached")
            _idle(page)
            page.locator(f".st-key-sus_c_{second['sample_id']}_x button").first.click()
            page.locator(f".st-key-sus-card-{second['sample_id']}").wait_for(state="detached")
            _idle(page)
            page.locator(f".st-key-sus_c_{third['sample_id']}_d button").first.click()
            page.get_by_text("Nearest neighbours", exact=False).first.wait_for()
            _idle(page)
            _shot(page, "03_suspect_detail")
            # keyboard shortcut: the detail view focused the third suspect; "U" marks it unsure
            page.keyboard.press("u")
            page.locator(f".st-key-sus-card-{third['sample_id']}").wait_for(state="detached")
            _idle(page)

            # 3. the other pages
            for label, name in (("Embedding map", "04_embedding_map"), ("Class confusion", "05_confusion"),
                                ("Hard noise", "06_hard_noise"), ("Evaluation", "08_evaluation")):
                _goto(page, url, label)
                page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
                _idle(page)
                if label == "Class confusion":  # clicking a heatmap cell opens its samples for review
                    xb = page.locator(".js-plotly-plot .xtick text", has_text="eight").first.bounding_box()
                    yb = page.locator(".js-plotly-plot .ytick text", has_text="one").first.bounding_box()
                    x, y = xb["x"] + xb["width"] / 2, yb["y"] + yb["height"] / 2
                    page.mouse.move(x, y)
                    page.mouse.click(x, y)
                    page.locator("[class*='st-key-conf-card-']").first.wait_for()
                    _idle(page)
                    assert page.get_by_text("Given one, predicted eight", exact=False).count() >= 1
                _shot(page, name)

            # 4. Export: download the cleaned CSV and check the two decisions
            _goto(page, url, "Export")
            _shot(page, "07_export")
            with page.expect_download() as dl:
                page.get_by_role("button", name="Download cleaned CSV").click()
            path = server["tmp"] / "cleaned.csv"
            dl.value.save_as(path)
            out = pd.read_csv(path, keep_default_na=False).set_index("sample_id")
            assert out.loc[first["sample_id"], "label"] == first["suggested_label"]
            assert out.loc[first["sample_id"], "decision"] == "relabel"
            assert out.loc[first["sample_id"], "original_label"] == first["label"]
            assert second["sample_id"] not in out.index  # excluded rows are dropped by default
            assert out.loc[third["sample_id"], "decision"] == "unsure"
            assert out.loc[third["sample_id"], "label"] == third["label"]
            assert len(out) == len(s) - 1
            _idle(page)
            assert (ws.exports_dir / "cleaned.csv").is_file()  # also written into the workspace
        finally:
            browser.close()
    assert "Traceback" not in server["log"].read_text()
