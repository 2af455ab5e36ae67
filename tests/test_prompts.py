"""Prompt construction (METHOD.md step 2) and description files."""
from __future__ import annotations

import json

from clipcleaner_core.prompts import DEFAULT_TEMPLATES, build_prompts, load_descriptions


def test_descriptions_give_one_prompt_per_clause(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("cat:\n  - which has pointed ears\n  - with whiskers.\ngolden_retriever: a large dog\n")
    desc = load_descriptions(p)
    assert desc == {"cat": ["which has pointed ears", "with whiskers."], "golden_retriever": ["a large dog"]}
    texts, owner = build_prompts(["cat", "golden_retriever", "wolf"], desc)
    assert texts[:3] == ["a photo of a cat which has pointed ears.", "a photo of a cat with whiskers.",
                         "a photo of a golden retriever a large dog."]
    assert owner[:3] == [0, 0, 1]
    # a class without descriptions falls back to the generic templates
    assert texts[3:] == [t.format("wolf") for t in DEFAULT_TEMPLATES]
    assert owner[3:] == [2] * len(DEFAULT_TEMPLATES)


def test_json_descriptions_and_suffix(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"lynx": ["with tufted ears"]}))
    texts, owner = build_prompts(["lynx"], load_descriptions(p), suffix=", a type of animal.")
    assert texts == ["a photo of a lynx with tufted ears, a type of animal."] and owner == [0]
