"""A Streamlit server on a free localhost port and a headless Chromium (Debian's /usr/bin/chromium through
Playwright's Python package — never ``playwright install``), shared by the key-latency benchmark
(``bench/keys.py``) and the browser tests (``tests/test_browser*.py``).

Settle time. :data:`SETTLE_JS` is added to every page before the app loads. It records the arrival time of every
websocket frame from the server and reads enough of the protobuf (``ForwardMsg``) to see which frames are
``script_finished`` (a run or a fragment run ended). ``window.__ccSettle(t0)`` then resolves with the time from
``t0`` (a key's ``keydown`` timestamp) until the page has settled: the first ``script_finished`` after ``t0`` has
arrived and the DOM has not changed for :data:`QUIET_MS` (the time of the last change counts, not the quiet
wait). The same definition is applied to the trivial baseline app and to clipcleaner, in the same browser.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
QUIET_MS = 150
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(cmd: list[str], port: int, log_path: Path, cwd: Path | str, env: dict,
           timeout: float = 120.0) -> Iterator[str]:
    """Run ``cmd`` (a Streamlit server on 127.0.0.1:``port``) until its health check answers; yields its URL,
    stops it afterwards."""
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.3)
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {Path(log_path).read_text()[-3000:]}")
            if time.time() > deadline:
                raise RuntimeError(f"the server did not become healthy in {timeout:.0f} s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def streamlit_server(app: Path | str, log_path: Path, env: dict | None = None,
                     timeout: float = 120.0) -> Iterator[str]:
    """``streamlit run app`` on 127.0.0.1:<free port>; yields its URL, stops it afterwards."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k != "CLIPCLEANER_WORKSPACE"}
    full_env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port), "--server.address",
           "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with server(cmd, port, log_path, Path(app).resolve().parent, full_env, timeout) as url:
        yield url


def _script_finished_field() -> int:
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    return ForwardMsg.DESCRIPTOR.fields_by_name["script_finished"].number


SETTLE_JS = r"""
(() => {
  const FIELD = %(field)d, QUIET = %(quiet)d;
  const finished = [], sent = [], received = [];
  let lastMutation = 0;
  // top-level fields of one protobuf message: true when field FIELD is present
  const hasField = (buf) => {
    const b = new Uint8Array(buf); let i = 0;
    const varint = () => { let v = 0, s = 0, x; do { x = b[i++]; v += (x & 0x7f) * Math.pow(2, s); s += 7; }
                           while (x & 0x80 && i < b.length); return v; };
    while (i < b.length) {
      const key = varint(), field = Math.floor(key / 8), wire = key & 7;
      if (field === FIELD) return true;
      if (wire === 0) varint(); else if (wire === 1) i += 8; else if (wire === 5) i += 4;
      else if (wire === 2) { const n = varint(); i += n; } else return false;
    }
    return false;
  };
  const Native = window.WebSocket;
  function Wrapped(url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    const send = ws.send.bind(ws);
    ws.send = (d) => { sent.push(performance.now()); return send(d); };
    ws.addEventListener('message', (ev) => {
      const t = performance.now();
      received.push(t);
      const check = (buf) => { if (hasField(buf)) finished.push(t); };
      if (ev.data instanceof ArrayBuffer) check(ev.data);
      else if (ev.data instanceof Blob) ev.data.arrayBuffer().then(check);
    });
    return ws;
  }
  Wrapped.prototype = Native.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Wrapped[k] = Native[k];
  window.WebSocket = Wrapped;
  const watch = () => new MutationObserver(() => { lastMutation = performance.now(); })
    .observe(document.documentElement, {subtree: true, childList: true, attributes: true, characterData: true});
  if (document.documentElement) watch(); else document.addEventListener('DOMContentLoaded', watch);
  window.__ccKeyTimes = [];
  window.addEventListener('keydown', (e) => window.__ccKeyTimes.push(e.timeStamp), true);
  window.__ccSettle = (t0, timeoutMs) => new Promise((resolve) => {
    const poll = () => {
      const now = performance.now();
      const sf = finished.find((t) => t >= t0);
      if (sf !== undefined) {
        const end = Math.max(sf, lastMutation);
        if (now - end >= QUIET) {
          const first = (xs) => { const x = xs.find((t) => t >= t0); return x === undefined ? null : x - t0; };
          resolve({settle_ms: end - t0, finished_ms: sf - t0, sent_ms: first(sent), first_reply_ms: first(received),
                   messages: received.filter((t) => t >= t0 && t <= sf).length});
          return;
        }
      }
      if (now - t0 > timeoutMs) { resolve(null); return; }
      setTimeout(poll, 5);
    };
    poll();
  });
})();
"""


def settle_script() -> str:
    return SETTLE_JS % {"field": _script_finished_field(), "quiet": QUIET_MS}


@contextlib.contextmanager
def chromium(viewport: dict | None = None, settle: bool = False) -> Iterator[object]:
    """A Playwright browser context (headless Debian chromium); with ``settle`` every page gets :data:`SETTLE_JS`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(viewport=viewport or {"width": 1600, "height": 1000}, accept_downloads=True)
            if settle:
                ctx.add_init_script(settle_script())
            yield ctx
        finally:
            browser.close()


def wait_idle(page, timeout: float = 120.0, settle: float = 1.0) -> None:
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
        time.sleep(0.1)
    raise TimeoutError("the app kept running")


def press_and_settle(page, key: str, timeout_ms: float = 60_000) -> dict | None:
    """Press ``key`` and return ``{"settle_ms", "finished_ms"}`` measured from the keydown event (None: no rerun
    finished within ``timeout_ms``)."""
    n = page.evaluate("window.__ccKeyTimes.length")
    page.keyboard.press(key)
    t0 = page.evaluate(f"window.__ccKeyTimes[{n}]")
    return page.evaluate("([t0, tm]) => window.__ccSettle(t0, tm)", [t0, timeout_ms])
