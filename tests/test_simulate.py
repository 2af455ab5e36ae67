"""Issue 11's done-when on the digits demo (pixels encoder, seed 0): a simulated oracle review at a budget equal to
the number of true errors. Deterministic; the numbers are the README's table ("Learning from the reviewer")."""
from __future__ import annotations

import pytest

from clipcleaner_core.active import load_inputs
from clipcleaner_core.demo import write_demo
from clipcleaner_core.pipeline import EncoderConfig, scan
from clipcleaner_core.simulate import simulate
from clipcleaner_core.workspace import Workspace


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["hard", "mix"])
def test_active_beats_static_beats_random(noise, tmp_path):
    data = tmp_path / "demo"
    write_demo(data, noise=noise, rate=0.3, seed=0)
    ws = Workspace(tmp_path / "ws")
    scan(data / "labels.csv", ws, classes_file=data / "classes.txt", encoder=EncoderConfig(encoder="pixels"))
    inp = load_inputs(ws)
    budget = round(0.3 * 1797)
    runs = {s: simulate(ws, data / "truth.csv", budget, s, inputs=inp) for s in ("active", "static", "random")}
    for r in runs.values():
        assert r.errors_total == budget and r.reviewed == budget and r.estimate_status == "ok"
        assert r.estimate_low <= r.estimate_left <= r.estimate_high
        assert r.curve[-1]["reviewed"] == budget and r.curve[-1]["errors_found"] == r.errors_found
    active, static, random = runs["active"], runs["static"], runs["random"]
    assert active.refits >= budget // 25 - 1 and static.refits == random.refits == 0
    assert active.errors_found >= static.errors_found
    assert static.errors_found >= 3 * random.errors_found
    assert active.errors_found >= 3 * random.errors_found
    # the errors-left interval holds the true number left, whichever way the samples were reviewed
    for name, r in runs.items():
        assert r.inside_interval, (name, r.estimate_low, r.true_left, r.estimate_high)
