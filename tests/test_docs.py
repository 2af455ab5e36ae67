"""docs/ARCHITECTURE.md stays true: every function, class or module it names exists in the code.

The document names code as `module.name` or `module.Class.method` in backticks (module relative to
``clipcleaner_core``); this test imports each and resolves the attribute chain. App names (``_ui.act``) are not
imported here (the pages need a running Streamlit).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"
NAME = re.compile(r"`([a-z_][a-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?:\(\))?`")
FILE_SUFFIXES = {"py", "json", "parquet", "npy", "npz", "sqlite", "csv", "md", "js", "css", "toml", "txt"}
FILE = re.compile(r"`((?:clipcleaner_core|pages|bench|tests|scripts|docs)/[\w./-]+|app\.py)`")


def _modules() -> set[str]:
    return {p.stem for p in (ROOT / "clipcleaner_core").glob("*.py")}


def test_every_name_in_architecture_md_exists():
    text = DOC.read_text(encoding="utf-8")
    names = sorted(set(NAME.findall(text)))
    assert len(names) >= 30, "the architecture document should name the main functions of each stage"
    mods = _modules()
    missing = []
    for name in names:
        parts = name.split(".")
        if len(parts) == 2 and parts[1] in FILE_SUFFIXES:
            continue  # a file name (`issues.py`, `workspace.json`), not a code reference
        if parts[0] in mods:
            modname, attrs = f"clipcleaner_core.{parts[0]}", parts[1:]
        elif parts[0] == "clipcleaner_core" and len(parts) > 1 and parts[1] in mods:
            modname, attrs = f"clipcleaner_core.{parts[1]}", parts[2:]
        else:
            continue  # not a code reference (a file name like workspace.json)
        obj = importlib.import_module(modname)
        for a in attrs:
            if not hasattr(obj, a):
                missing.append(name)
                break
            obj = getattr(obj, a)
    assert not missing, f"docs/ARCHITECTURE.md names code that does not exist: {missing}"


def test_every_file_in_architecture_md_exists():
    text = DOC.read_text(encoding="utf-8")
    files = sorted(set(FILE.findall(text)))
    assert files
    assert not [f for f in files if not (ROOT / f).exists()], "files named in docs/ARCHITECTURE.md are missing"


def test_every_core_module_is_described():
    text = DOC.read_text(encoding="utf-8")
    undocumented = [m for m in sorted(_modules()) if m != "__init__" and f"`{m}.py`" not in text]
    assert not undocumented, f"core modules missing from docs/ARCHITECTURE.md: {undocumented}"
