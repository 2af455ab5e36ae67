"""The code stays lint-clean: ``ruff check .`` with the project's configuration (pyproject.toml: pyflakes,
pycodestyle, isort, bugbear, pyupgrade; 120 columns). Part of the suite so that CI runs it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    pytest.importorskip("ruff")
    p = subprocess.run([sys.executable, "-m", "ruff", "check", ".", "--output-format", "concise", "--no-cache"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
