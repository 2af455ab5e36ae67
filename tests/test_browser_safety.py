"""Data is text, never markup (issue 9 item 4), checked in Chromium on every page.

A workspace whose class labels, file names, data folder, truth file, reviewer name and error messages are hostile
HTML / Markdown / LaTeX / Streamlit directives (an iframe whose srcdoc script would retitle the page, an <img> that
would fetch another port, <meta refresh>, <base href>, <form>, <style>, **bold**, $x^2$, [link](...), :red[...])
is opened on every page, with the detail view, the class picker and an export error too. The test asserts that no
script ran (the title never becomes PWNED), that no request left for another host or port, that none of the markup
became an element (no iframe, meta, base, form, injected style, KaTeX, link, bold) and that the strings show
literally.
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from bench.browser import CHROMIUM, chromium, press_and_settle, streamlit_server, wait_idle

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium); required in CI",
                allow_module_level=True)

OTHER = "127.0.0.1:9"  # a port nothing listens on: any request to it is a leak
HOSTILE = [
    "<iframe srcdoc=\"<script>parent.document.title='PWNED'</script>\">",
    f"<img src=http://{OTHER}/x onerror=\"document.title='PWNED'\">",
    f"<meta http-equiv=\"refresh\" content=\"0;url=http://{OTHER}/\">",
    f"<base href=\"http://{OTHER}/\">",
    f"<form action=\"http://{OTHER}/\"><button>send</button></form>",
    "<style>body{display:none}</style>",
    "**bold**",
    "$x^2$",
    f"[link](http://{OTHER}/)",
    ":red[red] :material/home: <b>b</b> &amp;",
]
FILE = "<img src=x onerror=document.title='PWNED'> **b** $y$ [l](javascript:alert(1)) {i:05d}.png"
FOLDER = "<i>data</i> **f** $z$"
REVIEWER = "<img src=x onerror=document.title='PWNED'>**rev**"
PAGES = ["Home", "Suspects", "Embedding map", "Class confusion", "Hard noise", "Duplicates", "Export", "Evaluation"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The digits demo with hostile class names, file names and folder name, scanned (pixels encoder)."""
    from clipcleaner_core.config import EncoderConfig
    from clipcleaner_core.demo import DIGIT_NAMES, write_demo
    from clipcleaner_core.evaluate import set_truth_path
    from clipcleaner_core.pipeline import scan
    from clipcleaner_core.workspace import Workspace

    tmp = tmp_path_factory.mktemp("hostile")
    info = write_demo(tmp / "demo", noise="mix", seed=0)
    data = tmp / FOLDER
    (data / "images").mkdir(parents=True)
    names = dict(zip(DIGIT_NAMES, HOSTILE))
    for table in ("labels", "truth"):
        with open(tmp / "demo" / f"{table}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        out = []
        for i, r in enumerate(rows):
            new = f"images/{FILE.format(i=i)}"
            if table == "labels":
                shutil.copyfile(tmp / "demo" / r["path"], data / new)
            out.append({"path": new, "label": names[r["label"]]})
        with open(data / f"{table}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["path", "label"])
            w.writeheader()
            w.writerows(out)
    (data / "classes.txt").write_text("\n".join(HOSTILE) + "\n", encoding="utf-8")
    ws = tmp / "ws"
    scan(data / "labels.csv", ws, classes_file=data / "classes.txt", encoder=EncoderConfig(encoder="pixels"))
    assert Workspace(ws).classes() == HOSTILE
    set_truth_path(Workspace(ws), data / "truth.csv")
    assert info["samples"] == 1797
    return {"ws": ws, "data": data, "tmp": tmp}


CHECK_JS = """(other) => {
  const app = document.querySelector('[data-testid="stAppViewContainer"]') || document.body;
  const bad = [];
  const count = (sel) => app.querySelectorAll(sel).length;
  if (count('iframe[srcdoc]')) bad.push('iframe');
  if (document.querySelectorAll('body meta[http-equiv], base').length) bad.push('meta/base');
  if ([...app.querySelectorAll('form')].some((f) => (f.getAttribute('action') || '').includes(other))) bad.push('form');
  if ([...document.querySelectorAll('body style')].some((s) => s.textContent.includes('body{display:none}')))
    bad.push('style');
  if (count('.katex')) bad.push('katex');
  if ([...app.querySelectorAll('a[href]')].some((a) => a.href.includes(other) || a.href.startsWith('javascript')))
    bad.push('link');
  if ([...app.querySelectorAll('strong, b')].some((b) => ['bold', 'b', 'rev', 'f'].includes(b.textContent.trim())))
    bad.push('bold');
  if ([...app.querySelectorAll('img')].some((i) => (i.getAttribute('src') || '').includes(other) ||
                                              i.getAttribute('src') === 'x')) bad.push('img');
  if (getComputedStyle(document.body).display === 'none') bad.push('hidden body');
  return bad;
}"""


def _text(page) -> str:
    return page.evaluate("document.body.innerText + '\\n' + [...document.querySelectorAll('svg text')]"
                         ".map((t) => t.textContent).join('\\n')").replace("\u2060", "")


def test_every_page_shows_hostile_strings_as_text(hostile):
    from clipcleaner_core.workspace import Workspace

    ws = hostile["ws"]
    leaks: list[str] = []
    with streamlit_server(ROOT / "app.py", hostile["tmp"] / "server.log",
                          env={"CLIPCLEANER_WORKSPACE": str(ws)}) as url, \
            chromium(viewport={"width": 1600, "height": 2200}, settle=True) as ctx:
        origin = url.rstrip("/")
        ctx.on("request", lambda r: None if r.url.startswith((origin, "data:", "blob:", "ws://127.0.0.1"))
               or r.url.startswith(origin.replace("http", "ws")) else leaks.append(r.url))
        page = ctx.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        wait_idle(page)
        page.get_by_role("textbox", name="Reviewer name").fill(REVIEWER)
        page.get_by_role("textbox", name="Reviewer name").press("Enter")
        wait_idle(page)

        def check(where: str, must_show: list[str]) -> None:
            wait_idle(page, settle=1.0)
            assert page.title() != "PWNED", f"a script ran on {where}"
            assert page.url.startswith(origin), f"{where} navigated away: {page.url}"
            assert page.evaluate(CHECK_JS, OTHER) == [], f"markup became elements on {where}"
            text = _text(page)
            missing = [s for s in must_show if s not in text]
            assert not missing, f"{where} does not show these literally: {missing}"
            assert not leaks, f"requests left the page on {where}: {leaks}"

        for label in PAGES:
            page.get_by_test_id("stSidebarNav").get_by_text(label, exact=True).click()
            if label != "Home":
                page.locator("h2", has_text=label).first.wait_for()
            wait_idle(page)
            if label in ("Home", "Class confusion", "Embedding map"):
                page.locator(".js-plotly-plot").first.wait_for()
            shows = {"Home": HOSTILE + [FOLDER], "Suspects": HOSTILE[:4] + ["**b** $y$ [l](javascript:alert(1))"],
                     "Class confusion": HOSTILE, "Embedding map": HOSTILE, "Evaluation": [FOLDER]}.get(label, [])
            check(label, shows)
            if label == "Suspects":
                grid = page.locator(".ccg").first
                page.locator(".ccg .ccg-card").first.wait_for()
                press_and_settle(page, "a")  # a decision by the hostile reviewer
                page.wait_for_function("document.querySelector('.ccg').getAttribute('data-pending') === '0'")
                press_and_settle(page, "k")
                press_and_settle(page, "Enter")  # the detail view: its history names the reviewer
                page.get_by_text("Nearest neighbours", exact=False).first.wait_for()
                page.locator(".ccg-detail td", has_text="rev").first.wait_for()
                check("the detail view", [REVIEWER, HOSTILE[0]])
                press_and_settle(page, "Escape")
                press_and_settle(page, "r")  # the class picker lists the classes as text
                check("the class picker", HOSTILE)
                page.keyboard.press("Escape")
                page.keyboard.press("?")
                check("the help overlay", [])
                page.keyboard.press("Escape")
                assert grid.get_attribute("data-pending") == "0"
            if label == "Class confusion":  # a cell's samples in the grid, under a heading with two labels
                page.locator(".js-plotly-plot .xtick text").nth(1).wait_for()
                box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
                # an off-diagonal cell, clicked inside the matrix
                page.mouse.click(box["x"] + 0.35 * box["width"], box["y"] + 0.85 * box["height"])
                wait_idle(page)
                heads = [ln for ln in _text(page).splitlines() if ln.startswith("Given ")]
                pairs = [(g, p) for g in HOSTILE for p in HOSTILE if heads and heads[0].startswith(
                    f"Given {g}, predicted {p} by ")]
                assert len(pairs) == 1, heads  # both labels shown literally, nothing else in between
                check("a confusion cell", [f"Given {pairs[0][0]}, predicted {pairs[0][1]}"])
            if label == "Export":  # an error message that quotes a hostile path
                page.get_by_role("textbox", name="Output folder").fill(str(hostile["data"]))
                page.get_by_role("button", name="Build ImageFolder").click()
                page.get_by_text("Could not write the ImageFolder").wait_for()
                check("an export error", [str(hostile["data"])])
    # the hostile reviewer's decision is stored as given, the sources untouched
    from clipcleaner_core.decisions import ReviewStore

    with ReviewStore.for_workspace(ws) as store:
        assert REVIEWER in set(store.current()["reviewer"])
    assert len(list((hostile["data"] / "images").iterdir())) == 1797
    assert Workspace(ws).exists()
