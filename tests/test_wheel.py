"""`pip install .` gives a working `clipcleaner app` without a source checkout (issue 13.3).

Builds the wheel from a copy of the sources, installs it (no dependencies) into a fresh virtual environment
whose dependencies come from this test environment's site-packages through a ``.pth`` file, starts
`clipcleaner app` from a folder outside any checkout and loads the page in Chromium.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from bench.browser import CHROMIUM, CHROMIUM_ARGS, free_port, server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    skip = {".git", ".venv", "build", "dist", "tests", "bench", "docs", "scripts", ".ci", ".pytest_cache",
            ".hypothesis", "__pycache__", "screenshots"}
    shutil.copytree(ROOT, src, ignore=lambda d, names: [n for n in names if n in skip or n.endswith(".egg-info")])
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True)
    wheel = next((tmp / "dist").glob("clipcleaner-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "clipcleaner_app/app.py" in names and "clipcleaner_app/pages/suspects.py" in names
    assert "clipcleaner_app/assets/logo.svg" in names and "clipcleaner_app/.streamlit/config.toml" in names
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies (torch, streamlit, …) from this environment; its own clipcleaner is NOT visible (a path
    # added by a .pth file is no site dir: the editable install's finder there never runs)
    (Path(site) / "_clipcleaner_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True, text=True)
    return venv


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLIPCLEANER_WORKSPACE")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def test_wheel_installs_the_core_and_the_app_outside_the_checkout(installed, tmp_path):
    out = subprocess.run([str(installed / "bin" / "python"), "-c",
                          "import clipcleaner_core, clipcleaner_core.cli as c; print(clipcleaner_core.__file__); "
                          "print(c.app_script())"], cwd=tmp_path, env=_env(), check=True, capture_output=True,
                         text=True).stdout.split()
    assert all(str(installed) in p for p in out), out
    assert out[1].endswith("clipcleaner_app/app.py")


def test_installed_clipcleaner_app_serves_the_app(installed, tmp_path):
    if not CHROMIUM.exists() and not os.environ.get("CI"):
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium); required in CI")
    from playwright.sync_api import sync_playwright

    port = free_port()
    cmd = [str(installed / "bin" / "clipcleaner"), "app", "--headless", "--port", str(port)]
    with server(cmd, port, tmp_path / "server.log", tmp_path, _env(), timeout=90) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(url)
        page.get_by_text("Find and fix mislabelled images").wait_for(timeout=90_000)
        page.get_by_text("Build and scan the demo").wait_for(timeout=30_000)
        assert page.locator("[data-testid='stException']").count() == 0
        browser.close()
    assert "Traceback" not in (tmp_path / "server.log").read_text()
