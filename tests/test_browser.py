"""Real-browser tests: `streamlit run app.py` on a free localhost port, driven by Chromium (Debian package) through
Playwright (bench/browser.py). The first test builds and scans the offline demo from the Home page, reviews with the
keyboard and the mouse, visits every page (screenshots into tests/artifacts/) and checks the cleaned CSV. The others
check the review loop of issue 10 at 1600×1000: the focus stays on screen, the detail view acts on the sample it
shows, digit keys relabel, undo is per tab, a reload restores filters, page and focus, and the cards fit at 1280×800.

Needs /usr/bin/chromium (`apt-get install chromium`); never runs `playwright install`. Skipped only when chromium is
missing and the CI environment variable is not set.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.browser import CHROMIUM, chromium, press_and_settle, streamlit_server, wait_idle
from clipcleaner_core.decisions import ReviewStore
from clipcleaner_core.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
VIEW = {"width": 1600, "height": 1000}

pytestmark = pytest.mark.slow
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium); required in CI",
                allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    env = {"CLIPCLEANER_DEMO_DIR": str(tmp / "demo"), "CLIPCLEANER_WORKSPACE": str(tmp / "demo" / "workspace")}
    with streamlit_server(ROOT / "app.py", tmp / "server.log", env=env) as url:
        yield {"url": url, "tmp": tmp, "log": tmp / "server.log", "ws": tmp / "demo" / "workspace"}
    assert "Traceback" not in (tmp / "server.log").read_text()


@pytest.fixture()
def ws(server) -> Path:
    """The server's demo workspace (scanned by the first test through the Home page, else copied from the shared
    scan), every decision cleared."""
    path = server["ws"]
    if not Workspace(path).exists():
        from _app_helpers import _build_base

        shutil.copytree(_build_base()["workspace"], path, ignore=shutil.ignore_patterns("review.sqlite*"))
    with ReviewStore.for_workspace(path) as store:
        cur = store.current()
        if len(cur):
            store.record_many(list(cur["sample_id"]), "clear")
    return path


_T0 = time.time()


def _shot(page, name: str) -> None:
    print(f"[{time.time() - _T0:6.1f} s] screenshot {name}", file=sys.stderr)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    time.sleep(0.8)  # let plotly finish drawing
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _goto(page, label: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(label, exact=True).click()
    page.locator("h2", has_text=label).first.wait_for()  # the new page's own title, not the old page
    wait_idle(page)


def _grid(page, key: str = "sus"):
    """The review grid of ``key`` once its cards are drawn."""
    page.locator(".ccg .ccg-card").first.wait_for(timeout=120_000)
    return page.locator(".ccg").first


def _saved(page) -> None:
    """Wait until every event the grid sent was acknowledged (committed) and the page is idle."""
    page.wait_for_function("document.querySelector('.ccg') && "
                           "document.querySelector('.ccg').getAttribute('data-pending') === '0'", timeout=120_000)
    wait_idle(page, settle=0.5)


def _decisions(ws: Path) -> pd.DataFrame:
    with ReviewStore.for_workspace(ws) as store:
        return store.current().set_index("sample_id")


def _suspects(ctx, url: str, query: str = ""):
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{url}/suspects{query}")
    _grid(page)
    wait_idle(page)
    return page


def _in_view(page, locator) -> bool:
    box = locator.bounding_box()
    vh = page.viewport_size["height"]
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= vh


def test_demo_review_and_export_in_a_browser(server):
    from clipcleaner_core import active, similar

    url = server["url"]
    with chromium(viewport={"width": 1400, "height": 2400}, settle=True) as ctx:
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        # 0. the first request of a fresh server is a deep link: it still goes through app.py's navigation
        page.goto(url.rstrip("/") + "/suspects")
        page.get_by_text("No workspace is open").first.wait_for()  # the Suspects page's empty state
        page.get_by_test_id("stSidebarNav").get_by_text("Export", exact=True).wait_for()
        wait_idle(page)
        assert page.url.rstrip("/").endswith("/suspects")
        page.goto(url)
        wait_idle(page)
        page.get_by_role("textbox", name="Reviewer name").fill("ann")
        page.get_by_role("textbox", name="Reviewer name").press("Enter")
        wait_idle(page)
        # 1. Home: build and scan the offline demo in one click
        page.get_by_role("button", name="Build and scan the demo").click()
        page.get_by_test_id("stMetric").filter(has_text="Unusable files").wait_for(timeout=240_000)
        wait_idle(page)
        # not blank after the demo build
        assert page.get_by_role("textbox", name="Reviewer name").input_value() == "ann"
        sidebar = page.get_by_test_id("stSidebar").inner_text()
        home = page.get_by_test_id("stMetric").filter(has_text="Samples").inner_text()
        assert "1,797 samples" in sidebar and "1,797" in home  # the same count in both places
        _shot(page, "01_home")
        ws = Workspace(server["ws"])
        s = ws.scores()
        rank = active.current_ranking(ws)  # the grid's order: the scan's ranking (no refit yet)
        order = active.queue_order(rank["rank_score"].to_numpy(), s["flagged"].to_numpy() | rank["flagged"].to_numpy(),
                                   tiebreak=s["noise_score"].to_numpy())
        first, second, third = s.iloc[order[0]], s.iloc[order[1]], s.iloc[order[2]]

        # 2. Suspects: take the suggestion for the top suspect (card button), exclude the second (key X)
        _goto(page, "Suspects")
        grid = _grid(page)
        _shot(page, "02_suspects")
        page.locator(f".ccg-card[data-sid='{first['sample_id']}'] [data-act='suggest']").click()
        _saved(page)
        assert grid.get_attribute("data-focus") == second["sample_id"]  # the card button advanced the focus
        press_and_settle(page, "x")
        _saved(page)
        page.locator(f".ccg-card[data-sid='{third['sample_id']}'] [data-act='detail']").click()
        page.get_by_text("Nearest neighbours", exact=False).first.wait_for()
        wait_idle(page)
        _shot(page, "03_suspect_detail")
        press_and_settle(page, "u")  # the detail view shows the third suspect; U marks it unsure
        _saved(page)
        press_and_settle(page, "Escape")

        # 2b. More like this: the tab's last decision (the third suspect, unsure) and its 24 nearest neighbours with
        # the same given label; one click gives them all the same decision, one undo takes it back
        _goto(page, "More like this")
        _grid(page)
        wait_idle(page)
        decided = s.index[s["sample_id"].isin([first["sample_id"], second["sample_id"], third["sample_id"]])]
        like = list(similar.more_like_this(ws, third["sample_id"], 24, exclude_rows=decided)["sample_id"])
        assert page.locator(".ccg-card").first.get_attribute("data-sid") == like[0]
        _shot(page, "11_more_like_this")
        page.get_by_role("button", name="Apply “unsure” to all 24 shown").click()
        page.get_by_text("Marked unsure 24 samples", exact=False).first.wait_for()
        wait_idle(page)
        dec = _decisions(server["ws"])
        assert (dec.loc[like, "action"] == "unsure").all() and len(dec) == 3 + 24
        page.locator(".st-key-mlt_undo button").first.click()
        page.get_by_text("unsure of 24 samples", exact=False).first.wait_for()  # "Undid: …"
        wait_idle(page)
        assert set(_decisions(server["ws"]).index) == {first["sample_id"], second["sample_id"], third["sample_id"]}

        # 3. the other pages
        for label, name in (("Embedding map", "04_embedding_map"), ("Class confusion", "05_confusion"),
                            ("Hard noise", "06_hard_noise"), ("Evaluation", "08_evaluation")):
            _goto(page, label)
            page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
            wait_idle(page)
            if label == "Class confusion":  # clicking a heatmap cell opens its samples for review
                xb = page.locator(".js-plotly-plot .xtick text", has_text="eight").first.bounding_box()
                yb = page.locator(".js-plotly-plot .ytick text", has_text="one").first.bounding_box()
                x, y = xb["x"] + xb["width"] / 2, yb["y"] + yb["height"] / 2
                page.mouse.move(x, y)
                page.mouse.click(x, y)
                _grid(page)
                wait_idle(page)
                assert page.get_by_text("Given one, predicted eight", exact=False).count() >= 1
                # the tick labels sit on the matrix: each under / beside its own column / row of cells
                plot = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
                assert plot["x"] - 2 <= xb["x"] + xb["width"] / 2 <= plot["x"] + plot["width"] + 2
                assert plot["y"] - 2 <= yb["y"] + yb["height"] / 2 <= plot["y"] + plot["height"] + 2
            _shot(page, name)

        # 4. Export: download the cleaned CSV and check the three decisions
        _goto(page, "Export")
        _shot(page, "07_export")
        with page.expect_download() as dl:
            page.get_by_role("button", name="Download cleaned CSV").click()
        path = server["tmp"] / "cleaned.csv"
        dl.value.save_as(path)
        out = pd.read_csv(path, keep_default_na=False).set_index("sample_id")
        assert out.loc[first["sample_id"], "label"] == first["suggested_label"]
        assert out.loc[first["sample_id"], "decision"] == "relabel"
        assert out.loc[first["sample_id"], "original_label"] == first["label"]
        assert out.loc[first["sample_id"], "reviewer"] == "ann"
        assert second["sample_id"] not in out.index  # excluded rows are dropped by default
        assert out.loc[third["sample_id"], "decision"] == "unsure"
        assert out.loc[third["sample_id"], "label"] == third["label"]
        assert len(out) == len(s) - 1
        wait_idle(page)
        assert (ws.exports_dir / "cleaned.csv").is_file()  # also written into the workspace


def test_focus_stays_on_screen_and_keys_decide_what_is_shown(server, ws):
    classes = Workspace(ws).classes()
    with chromium(viewport=VIEW, settle=True) as ctx:
        page = _suspects(ctx, server["url"])
        grid = _grid(page)
        # J ×8: the focused card scrolls into view each time
        for _ in range(8):
            press_and_settle(page, "j")
            assert _in_view(page, page.locator(".ccg-card.ccg-focus")), "the focused card left the screen"
        cards = page.locator(".ccg-card")
        focused = grid.get_attribute("data-focus")
        assert focused == cards.nth(8).get_attribute("data-sid")
        # 3: relabel the focused card to the third class; the focus moves on
        press_and_settle(page, "3")
        _saved(page)
        dec = _decisions(ws)
        assert (dec.loc[focused, "action"], dec.loc[focused, "label"]) == ("relabel", classes[2])
        assert grid.get_attribute("data-focus") == cards.nth(9).get_attribute("data-sid")
        assert _in_view(page, page.locator(".ccg-card.ccg-focus"))
        # the detail view is a focus mode: A decides the sample it shows, then it shows the next one
        press_and_settle(page, "Enter")
        page.get_by_text("Nearest neighbours", exact=False).first.wait_for()
        shown = grid.get_attribute("data-detail")
        assert shown == cards.nth(9).get_attribute("data-sid")
        assert page.locator(".ccg-detail .ccg-file").inner_text().endswith(Path(
            Workspace(ws).scores().set_index("sample_id").loc[shown, "path"]).name)
        press_and_settle(page, "a")
        _saved(page)
        assert _decisions(ws).loc[shown, "action"] == "accept"
        nxt = grid.get_attribute("data-detail")
        assert nxt != shown and nxt == cards.nth(10).get_attribute("data-sid")
        page.locator(".ccg-detail h4", has_text="Nearest neighbours").wait_for()
        # the type-ahead picker: R, type part of a class name, Enter
        press_and_settle(page, "r")
        page.locator(".ccg-pick-input").fill(classes[5][:3])
        page.locator(".ccg-pick-input").press("Enter")
        _saved(page)
        dec = _decisions(ws)
        assert (dec.loc[nxt, "action"], dec.loc[nxt, "label"]) == ("relabel", classes[5])
        # ? opens the help overlay listing the keys; Esc closes it
        page.keyboard.press("?")
        assert page.locator(".ccg-help").is_visible() and "relabel to class" in page.locator(".ccg-help").inner_text()
        page.keyboard.press("Escape")
        assert not page.locator(".ccg-help").is_visible()
        _shot(page, "09_keys_detail")


def test_undo_in_one_tab_leaves_the_other_tabs_decision(server, ws):
    with chromium(viewport=VIEW, settle=True) as ctx:
        tab1 = _suspects(ctx, server["url"])
        tab2 = _suspects(ctx, server["url"])
        a = _grid(tab1).get_attribute("data-focus")
        tab1.bring_to_front()
        press_and_settle(tab1, "x")  # tab 1 excludes its first card
        _saved(tab1)
        tab2.bring_to_front()
        press_and_settle(tab2, "j")
        b = _grid(tab2).get_attribute("data-focus")
        press_and_settle(tab2, "a")  # tab 2 (same reviewer) keeps another one, after tab 1
        _saved(tab2)
        tab1.bring_to_front()
        press_and_settle(tab1, "z")
        _saved(tab1)
        dec = _decisions(ws)
        assert a not in dec.index and dec.loc[b, "action"] == "accept"
        status = tab1.locator(".ccg-status").inner_text()
        assert status.startswith("Undid: exclude of ") and status.endswith(".png")
        assert _grid(tab1).get_attribute("data-focus") == a  # the focus is back on the undone sample
        press_and_settle(tab1, "z")
        _saved(tab1)
        assert "Nothing to undo in this tab" in tab1.locator(".ccg-status").inner_text()
        assert _decisions(ws).loc[b, "action"] == "accept"


def test_reload_restores_filters_page_and_focus(server, ws):
    with chromium(viewport=VIEW, settle=True) as ctx:
        page = _suspects(ctx, server["url"])
        page.get_by_test_id("stMultiSelect").first.click()  # "Given class"
        page.get_by_role("option", name="eight", exact=True).click()
        page.keyboard.press("Escape")
        wait_idle(page)
        page.wait_for_function("document.querySelector('.ccg-count').textContent.includes('page 1 of')")
        grid = _grid(page)
        page.locator(".ccg-count").click()  # out of the filter's text field: keys go to the grid again
        press_and_settle(page, "n")  # next page
        page.wait_for_function("document.querySelector('.ccg').getAttribute('data-page') === '2'")
        press_and_settle(page, "j")
        press_and_settle(page, "j")
        wait_idle(page)
        focus = grid.get_attribute("data-focus")
        assert "sus_given=eight" in page.url and "sus_page=2" in page.url and f"sus_focus={focus}" in page.url
        page.reload()
        grid = _grid(page)
        wait_idle(page)
        page.wait_for_function(f"document.querySelector('.ccg').getAttribute('data-focus') === '{focus}'")
        assert grid.get_attribute("data-page") == "2"
        assert "eight" in page.get_by_test_id("stMultiSelect").first.inner_text()
        assert page.locator(".ccg-card.ccg-focus").get_attribute("data-sid") == focus
        assert _in_view(page, page.locator(".ccg-card.ccg-focus"))


def test_cards_fit_at_1280x800(server, ws):
    with chromium(viewport={"width": 1280, "height": 800}, settle=True) as ctx:
        page = _suspects(ctx, server["url"])
        clipped = page.evaluate("""() => [...document.querySelectorAll('.ccg-card .ccg-btn')]
            .filter((b) => !b.querySelector('.ccg-ell') && b.scrollWidth > b.clientWidth + 1)
            .map((b) => b.textContent)""")
        assert clipped == [], f"card buttons cut off at 1280 px: {clipped}"
        _shot(page, "10_suspects_1280")
