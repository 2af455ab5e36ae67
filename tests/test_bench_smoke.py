"""The benchmark (``python -m bench``) runs end to end in its tiny ``--quick`` mode and reports sane numbers.

Correctness only — no timing assertions (targets are judged by the full benchmark's in-run ratios, see
docs/PERFORMANCE.md). Every section except the app's runs here; the app section is covered by
``test_bench_app_quick`` below.
"""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path: Path, sections: str) -> dict:
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "-m", "bench", "--quick", "--sections", sections, "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800)  # a busy shared machine
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "section" in p.stdout and "total" in p.stdout  # the table was printed
    return json.loads(out.read_text(encoding="utf-8"))


def _rows(doc: dict, section: str) -> dict[str, dict]:
    return {r["metric"]: r for r in doc["rows"] if r["section"] == section}


@pytest.mark.slow
def test_bench_quick_core_sections(tmp_path):
    doc = _run(tmp_path, "score,embed,memory,layout")
    assert _rows(doc, "machine")["float32 GEMM (numpy/OpenBLAS)"]["value"] > 0

    score = _rows(doc, "score")
    main = next(r for m, r in score.items() if m.startswith("detect N=1,000 K=5"))
    assert 0 < main["value"] < 600
    assert score["k-NN recall@10 vs exact, N=1,000"]["value"] == 1.0  # exact below the approx threshold
    raw = doc["raw"]["score"][0]
    assert raw["recall"] > 0.5 and raw["precision"] > 0.5  # the synthetic noise is found
    assert {"fit_probe", "nearest_neighbors", "clipcleaner_select", "cleanlab_flags"} <= set(raw["stages"])
    assert raw["lbfgs_iterations_per_fold"] and len(raw["lbfgs_iterations_per_fold"]) == 5
    assert any(m.startswith("reference detect") for m in score)
    agree = next(r for m, r in score.items() if m.startswith("flags agree with the reference"))
    assert 0.9 <= agree["value"] <= 1.0  # the same objective, solved by scikit-learn
    recipe = next(r for m, r in score.items() if m.startswith("cleanlab recipe N=1,000"))
    assert recipe["value"] > 0 and 0 < doc["raw"]["recipe"][0]["f1"] <= 1

    embed = _rows(doc, "embed")
    ratio = next(r for m, r in embed.items() if m.startswith("scan/bare ratio"))
    assert ratio["value"] > 0 and math.isfinite(ratio["value"])
    assert all(r["value"] > 0 for r in embed.values())

    mem = _rows(doc, "memory")
    growth = next(r for m, r in mem.items() if m.startswith("RSS growth"))
    assert growth["ok"], growth  # a scan does not keep decoded images around

    lay = _rows(doc, "layout")
    assert lay["restart: layouts from the workspace cache"]["ok"]
    assert next(r for m, r in lay.items() if m.startswith("first view"))["value"] > 0


@pytest.mark.slow
def test_bench_quick_knn_and_recipe(tmp_path):
    """The k-NN library comparison and the opt-in cleanlab-recipe section, tiny sizes."""
    doc = _run(tmp_path, "knn,recipe")
    assert any(m.startswith("cleanlab recipe") for m in _rows(doc, "recipe"))
    knn = doc["raw"]["knn"]
    want = {"cellprobe", "faiss_ivf"} if importlib.util.find_spec("faiss") else {"cellprobe"}
    assert {r["method"] for r in knn} >= want
    assert all(0.5 < r["recall"] <= 1.0 and r["seconds"] > 0 for r in knn)


@pytest.mark.slow
def test_bench_app_quick(tmp_path):
    doc = _run(tmp_path, "app")
    app = _rows(doc, "app")
    assert not [m for m in app if m.startswith("exception")], app
    renders = [r for m, r in app.items() if m.startswith("render ")]
    assert len(renders) >= 5 and all(r["value"] > 0 for r in renders)
    assert app["ReviewStore.record (per decision)"]["value"] > 0
