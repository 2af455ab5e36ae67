"""Class prompts for zero-shot scoring: generic templates or per-class descriptions (METHOD.md step 2)."""
from __future__ import annotations

import json
from pathlib import Path

#: generic templates used when no per-class descriptions are given
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a good photo of a {}.",
    "a low resolution photo of a {}.",
    "a cropped photo of a {}.",
    "a drawing of a {}.",
)


def load_descriptions(path: str | Path) -> dict[str, list[str]]:
    """Read ``class -> list of clauses`` from a YAML or JSON file (a single string is one clause)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{p}: descriptions must map class name -> list of clauses")
    out: dict[str, list[str]] = {}
    for k, v in data.items():
        clauses = [v] if isinstance(v, str) else list(v or [])
        out[str(k)] = [str(c).strip() for c in clauses if str(c).strip()]
    return out


def build_prompts(classes: list[str], descriptions: dict[str, list[str]] | None = None,
                  templates: tuple[str, ...] | list[str] = DEFAULT_TEMPLATES, suffix: str = ".",
                  ) -> tuple[list[str], list[int]]:
    """Prompt texts and the class index of each, shape (M,) both.

    A class with descriptions gets ``a photo of a {class} {clause}{suffix}`` per clause (METHOD.md); a class
    without gets one prompt per generic template. Underscores in class names are read as spaces.
    """
    texts: list[str] = []
    owner: list[int] = []
    for k, name in enumerate(classes):
        nice = name.replace("_", " ")
        clauses = (descriptions or {}).get(name) or []
        if clauses:
            for c in clauses:
                c = c.rstrip(" .")
                texts.append(f"a photo of a {nice} {c}{suffix}")
                owner.append(k)
        else:
            for t in templates:
                texts.append(t.format(nice))
                owner.append(k)
    return texts, owner
