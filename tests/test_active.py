"""Learning from the reviewer: refit / re-rank (active.py), errors left (estimate.py), downstream check, CLI."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipcleaner_core import active as A
from clipcleaner_core import estimate as E
from clipcleaner_core.cli import main as cli_main
from clipcleaner_core.decisions import ReviewStore
from clipcleaner_core.downstream import downstream_check, format_downstream
from clipcleaner_core.evaluate import truth_labels
from clipcleaner_core.export import export_csv, export_report
from clipcleaner_core.pipeline import EncoderConfig, scan
from clipcleaner_core.workspace import Workspace


@pytest.fixture(scope="module")
def scanned(demo_dir, tmp_path_factory) -> Path:
    """The digits demo (mix 30 %, seed 0) scanned with the pixels encoder; tests copy it before writing."""
    ws = tmp_path_factory.mktemp("active") / "ws"
    scan(demo_dir / "labels.csv", ws, classes_file=demo_dir / "classes.txt", encoder=EncoderConfig(encoder="pixels"))
    return ws


@pytest.fixture
def ws(scanned, tmp_path) -> Workspace:
    dst = tmp_path / "ws"
    shutil.copytree(scanned, dst)
    return Workspace(dst)


def _truth_idx(ws: Workspace, demo_dir: Path) -> np.ndarray:
    s = ws.scores()
    lookup = {c: i for i, c in enumerate(ws.classes())}
    return truth_labels(s, demo_dir / "truth.csv").map(lookup).to_numpy(dtype=np.int64)


def _oracle(ws: Workspace, demo_dir: Path, rows) -> list[dict]:
    """Oracle decisions (truth) for ``rows`` as record_many items."""
    s = ws.scores()
    t = _truth_idx(ws, demo_dir)
    names = ws.classes()
    items = []
    for r in rows:
        given = int(s["label_idx"].iloc[r])
        sid = str(s["sample_id"].iloc[r])
        if t[r] == given:
            items.append({"sample_id": sid, "action": "accept", "given_label": names[given]})
        else:
            items.append({"sample_id": sid, "action": "relabel", "label": names[t[r]], "given_label": names[given]})
    return items


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ ranking
def test_ranking_score_is_the_signed_ensemble_margin():
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    y = np.array([0, 0, 2])
    np.testing.assert_allclose(A.ranking_score(p, y), [0.3 - 0.6, 0.5 - 0.2, 0.1 - 0.8])
    # queue: undecided only, highest first, ties broken by the tiebreak then the row
    order = A.queue_order(np.array([0.1, 0.5, 0.5, 0.9]), np.array([True, True, True, False]),
                          tiebreak=np.array([0.0, 0.1, 0.2, 0.0]))
    assert order.tolist() == [2, 1, 0]


def test_scan_ranking_from_the_table_matches_the_probabilities(scanned):
    ws = Workspace(scanned)
    s = ws.scores()
    from_table = A.scan_ranking_score(s, "ensemble")
    p = np.asarray(ws.array("probs_ens"), dtype=np.float64)  # float16 on disk
    np.testing.assert_allclose(from_table, A.ranking_score(p, s["label_idx"].to_numpy()), atol=2e-3)
    # flagged by the ensemble rule  <=>  the margin exceeds the scan's margin
    assert ((from_table > 0.1) == s["flagged"].to_numpy()).mean() > 0.995
    np.testing.assert_array_equal(A.scan_ranking_score(s, "knn"), s["noise_score"].to_numpy())


def test_trust_from_decisions():
    ids = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)
    y = np.array([0, 1, 2, 0, 1, 2])
    dec = pd.DataFrame({"sample_id": ["a", "b", "c", "d", "e"],
                        "action": ["accept", "relabel", "exclude", "unsure", "relabel"],
                        "label": [None, "two", None, None, "nine"]})
    t = A.trust_from_decisions(ids, y, ["zero", "one", "two"], dec)
    assert t.label.tolist() == [0, 2, -1, -1, -1, -1]
    assert t.excluded.tolist() == [False, False, True, False, False, False]
    assert t.decided.tolist() == [True, True, True, False, True, False]
    assert t.unknown_relabels == 1 and t.n_trusted == 2


def test_fit_probe_repeat_is_a_sample_weight():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 6)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    p1, _ = A.fit_probe(x, y, 4)
    # repetition is scikit-learn's sample_weight: every row twice = the data term counted twice = C doubled
    p2, _ = A.fit_probe(x, y, 4, repeat=np.full(120, 2))
    p2c, _ = A.fit_probe(x, y, 4, C=2.0)
    np.testing.assert_allclose(p2(x), p2c(x), atol=2e-3)
    assert np.all(p1(x)[:, 3] == 0)  # an absent class gets probability 0
    rep = np.where(y == 1, 5, 1)  # up-weighting rows of one class changes the fit
    p3, state = A.fit_probe(x, y, 4, repeat=rep)
    assert not np.allclose(p1(x), p3(x), atol=1e-3)
    p4, _ = A.fit_probe(x, y, 4, repeat=rep, init=state)  # warm start: same optimum
    np.testing.assert_allclose(p3(x), p4(x), atol=2e-3)


# ------------------------------------------------------------------------------------------------- refit
def test_refit_without_decisions_reproduces_the_scan(scanned):
    ws = Workspace(scanned)
    inp = A.load_inputs(ws)
    res = A.refit_scores(inp, A.trust_from_decisions(inp.sample_ids, inp.y, inp.settings.classes, pd.DataFrame(
        columns=["sample_id", "action", "label"])))
    # the same folds, probe and neighbour votes as the scan: the same ranking up to solver tolerance
    assert np.corrcoef(res.rank_score, inp.scan_rank_score)[0, 1] > 0.999
    assert (res.flagged == inp.scan_flagged).mean() > 0.99


def test_refit_workspace_keeps_the_scan_and_overlays(ws, demo_dir):
    scores_before = ws.scores()
    def files() -> dict:
        return {p.name: _sha(p) for p in [*ws.path.glob("*.parquet"), *ws.path.glob("*.npy")]}

    sha = files()
    assert A.latest_refit(ws) is None
    base = A.current_ranking(ws)
    assert (base["source"] == "scan").all() and base["fit_id"].isna().all()
    order = A.queue_order(base["rank_score"].to_numpy(), np.ones(len(base), dtype=bool))
    items = _oracle(ws, demo_dir, order[:150]) + [{"sample_id": str(scores_before["sample_id"].iloc[order[150]]),
                                                    "action": "exclude"}]
    with ReviewStore.for_workspace(ws.path, reviewer="t") as st:
        st.record_many(items)
        version = st.version()
    assert A.decisions_since_refit(ws, version) == 151
    seen = []
    rec = A.refit_workspace(ws, progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert seen[-1] == ("refit", 6, 6)
    assert rec.n_trusted == 150 and rec.n_excluded == 1 and rec.decisions_version == list(version)
    assert rec.n_relabel == sum(i["action"] == "relabel" for i in items) and rec.n_accept + rec.n_relabel == 150
    assert A.decisions_since_refit(ws, version) == 0
    # the scan's files are untouched; the refit lives under WS/refits/<scan id>/
    assert sha == files()
    folder = ws.path / "refits" / A.scan_settings(ws).scan_id
    assert json.loads((folder / "current.json").read_text())["fit_id"] == rec.fit_id
    assert (folder / rec.table).is_file() and (folder / rec.warm).is_file()
    cur = A.current_ranking(ws)
    assert (cur["source"] == "refit").all() and (cur["fit_id"] == rec.fit_id).all()
    np.testing.assert_array_equal(cur["scan_rank_score"], base["rank_score"])  # before and after both there
    assert not np.allclose(cur["rank_score"], base["rank_score"])
    # what the reviewer taught moves the queue: among the undecided, the refit ranks the true errors higher
    t = _truth_idx(ws, demo_dir)
    undecided = np.ones(len(cur), dtype=bool)
    undecided[order[:151]] = False
    err = t != scores_before["label_idx"].to_numpy()
    nxt_scan = A.queue_order(base["rank_score"].to_numpy(), undecided)[:200]
    nxt_refit = A.queue_order(cur["rank_score"].to_numpy(), undecided)[:200]
    assert err[nxt_refit].sum() >= err[nxt_scan].sum()
    # a second refit warm-starts from the first and becomes current; both are in the history
    rec2 = A.refit_workspace(ws)
    assert A.latest_refit(ws).fit_id == rec2.fit_id != rec.fit_id
    assert [r["fit_id"] for r in A.refit_history(ws)] == [rec.fit_id, rec2.fit_id]
    np.testing.assert_allclose(A.current_ranking(ws)["rank_score"], cur["rank_score"], atol=5e-3)


def test_refit_can_be_stopped_and_writes_nothing(ws):
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(A.RefitCancelled):
        A.refit_workspace(ws, should_stop=stop)
    assert A.latest_refit(ws) is None
    assert not list((ws.path / "refits").glob("*/fit-*"))


def test_refit_of_a_rescanned_workspace_is_not_applied(ws):
    A.refit_workspace(ws)
    assert (A.current_ranking(ws)["source"] == "refit").all()
    from clipcleaner_core.pipeline import rescore

    rescore(ws)  # another published set: another identity
    assert A.latest_refit(ws) is None
    assert (A.current_ranking(ws)["source"] == "scan").all()


# ----------------------------------------------------------------------------------------------- estimate
def test_outcomes_from_decisions():
    dec = pd.DataFrame({"sample_id": ["a", "b", "c", "d", "e"],
                        "action": ["accept", "relabel", "relabel", "exclude", "unsure"],
                        "label": [None, "cat", "dog", None, None]})
    out = E.outcomes_from_decisions(np.array(["a", "b", "c", "d", "e", "f"], dtype=object),
                                    np.array(["dog"] * 6), dec)
    assert out.tolist() == [0, 1, 0, 1, -1, -1]


def test_spot_check_is_a_stored_deterministic_draw_of_unflagged(ws):
    sc = E.spot_check(ws)
    s = ws.scores()
    label_flag = A.label_flagged(s, A.scan_settings(ws).method)  # "none of the classes" is no label error
    unflagged = set(s.loc[~label_flag, "sample_id"])
    assert sc.size == E.spot_check_size(len(unflagged)) == len(sc.sample_ids) == len(set(sc.sample_ids))
    assert set(sc.sample_ids) <= unflagged
    path = ws.path / "refits" / A.scan_settings(ws).scan_id / "spotcheck.json"
    assert json.loads(path.read_text())["sample_ids"] == sc.sample_ids
    # the same draw from the pure function, whatever the row order
    perm = np.random.default_rng(1).permutation(len(s))
    again = E.draw_spot_check(s["sample_id"].to_numpy()[perm], label_flag[perm], sc.seed)
    assert again == sc.sample_ids
    assert E.spot_check_size(10) == 10 and E.spot_check_size(1000) == 50 and E.spot_check_size(10**6) == 200


def _population(n=4000, seed=0):
    """A synthetic scan, rows sorted by score: the top 20 % flagged; the chance of an error rises with the score
    (3 % far below the flags, ~50 % at the flag threshold, ~98 % at the top)."""
    rng = np.random.default_rng(seed)
    score = np.sort(rng.random(n))[::-1]
    flagged = np.arange(n) < n // 5
    p_err = 0.03 + 0.95 / (1 + np.exp(-(score - 0.8) * 25))
    return flagged, score, rng.random(n) < p_err


def test_estimate_says_plainly_when_too_few_are_reviewed():
    flagged, score, err = _population()
    outcome = np.full(len(score), -1, dtype=np.int8)
    spot = np.zeros(len(score), dtype=bool)
    spot[np.flatnonzero(~flagged)[:60]] = True
    est = E.estimate_errors_left(flagged, score, outcome, spot)
    assert est.status == "insufficient" and est.errors_left is None
    assert "spot-check" in est.reason and "flagged" in est.reason
    assert est.summary().startswith("errors left: not estimated yet")
    outcome[:50] = err[:50]  # 50 flagged reviewed, spot check still missing
    est = E.estimate_errors_left(flagged, score, outcome, spot)
    assert est.status == "insufficient" and "spot-check" in est.reason and "flagged samples" not in est.reason


def _review(seed: int, top: int):
    """A synthetic review: the top ``top`` of the queue and a 150-sample spot check of the unflagged, decided."""
    flagged, score, err = _population(seed=seed)
    spot = np.zeros(len(score), dtype=bool)
    spot[np.random.default_rng(100 + seed).choice(np.flatnonzero(~flagged), 150, replace=False)] = True
    outcome = np.full(len(score), -1, dtype=np.int8)
    outcome[:top] = err[:top]
    outcome[spot] = err[spot]
    return flagged, score, err, spot, outcome


def test_estimate_is_calibrated_on_synthetic_reviews():
    inside = inside_next = runs = 0
    for seed in range(12):
        for top in (300, 500, 900):  # within the flagged 800, then past them
            flagged, score, err, spot, outcome = _review(seed, top)
            est = E.estimate_errors_left(flagged, score, outcome, spot, next_n=100, draws=5000, seed=seed)
            true_left = int((err & (outcome < 0)).sum())
            assert est.status == "ok" and est.low <= est.errors_left <= est.high
            assert est.flagged_left + est.unflagged_left == pytest.approx(est.errors_left)
            inside += est.low <= true_left <= est.high
            runs += 1
            nxt = E.queue_order(score, outcome < 0)[:100]
            if top < 800:
                assert any("below every reviewed" in n for n in est.notes)
                inside_next += est.next_fix_low <= err[nxt].sum() <= est.next_fix_high
            else:  # the next 100 are unflagged: their average rate understates them, and the result says so
                assert any("most of the next 100" in n for n in est.notes)
    assert inside >= 0.9 * runs, (inside, runs)
    assert inside_next >= 0.85 * 24, inside_next


def test_estimate_is_deterministic_and_exact_when_all_is_reviewed():
    flagged, score, err, spot, outcome = _review(0, 400)
    a = E.estimate_errors_left(flagged, score, outcome, spot, next_n=100)
    b = E.estimate_errors_left(flagged, score, outcome, spot, next_n=100)
    assert (a.errors_left, a.low, a.high, a.next_fix) == (b.errors_left, b.low, b.high, b.next_fix)
    assert a.summary().startswith("≈ ") and "reviewing the next 100 suspects should fix" in a.summary()
    est = E.estimate_errors_left(flagged, score, err.astype(np.int8), spot)
    assert est.errors_left == 0 and est.low == est.high == 0


def test_estimate_workspace_and_export_report(ws, demo_dir):
    s = ws.scores()
    sc = E.spot_check(ws)
    rank = A.current_ranking(ws)["rank_score"].to_numpy()
    top = A.queue_order(rank, np.ones(len(s), dtype=bool))[:300]
    rows = list(top) + [int(np.flatnonzero(s["sample_id"].to_numpy() == sid)[0]) for sid in sc.sample_ids]
    with ReviewStore.for_workspace(ws.path, reviewer="t") as st:
        st.record_many(_oracle(ws, demo_dir, rows))
    est = E.estimate_workspace(ws, next_n=100)
    assert est.status == "ok" and est.spot_check_reviewed == sc.size and est.reviewed == len(set(rows))
    t = _truth_idx(ws, demo_dir)
    reviewed = np.zeros(len(s), dtype=bool)
    reviewed[rows] = True
    true_left = int(((t != s["label_idx"].to_numpy()) & ~reviewed).sum())
    assert est.low <= true_left <= est.high, (est.low, true_left, est.high)
    _, table = export_csv(ws)
    rp, report = export_report(ws, table)

    def strict(c):
        raise ValueError(f"not JSON: {c}")

    assert json.loads(rp.read_text(), parse_constant=strict)["errors_left"]["bands"]  # no NaN / Infinity
    assert report["errors_left"]["status"] == "ok"
    assert report["errors_left"]["errors_left"] == pytest.approx(est.errors_left)
    assert report["errors_left"]["summary"] == E.estimate_workspace(ws).summary()  # next 200 by default


# --------------------------------------------------------------------------------------------- downstream
def test_downstream_check(ws, demo_dir):
    r = downstream_check(ws, truth_file=demo_dir / "truth.csv")
    assert r.status == "insufficient" and r.trusted is None and "review at least 40" in r.reason
    assert r.truth is not None and r.truth.n_test == round(0.2 * 1797)
    assert r.truth.difference == 0  # nothing decided: cleaned labels are the noisy ones
    rank = A.current_ranking(ws)["rank_score"].to_numpy()
    with ReviewStore.for_workspace(ws.path, reviewer="t") as st:
        st.record_many(_oracle(ws, demo_dir, A.queue_order(rank, np.ones(len(rank), dtype=bool))[:500]))
    r = downstream_check(ws, truth_file=demo_dir / "truth.csv")
    assert r.status == "ok"
    for c in (r.trusted, r.truth):
        assert c.noisy_low <= c.noisy_accuracy <= c.noisy_high
        assert c.cleaned_low <= c.cleaned_accuracy <= c.cleaned_high
        assert c.difference_low <= c.difference <= c.difference_high
    assert r.trusted.n_test == 250 and r.trusted.n_train_noisy == r.trusted.n_train_cleaned == 1797 - 250
    assert r.truth.n_test == 359 and r.truth.n_train_noisy == 1797 - 359
    # the policy for undecided samples is the export's: "drop" trains the cleaned probe on reviewed samples only
    d = downstream_check(ws, undecided="drop")
    assert d.trusted.n_train_cleaned == 500 - 250 and d.trusted.n_train_noisy == 1797 - 250
    text = format_downstream(r)
    assert "cleaned labels" in text and "difference" in text


# ----------------------------------------------------------------------------------------------------- CLI
def test_cli_refit_estimate_downstream(ws, demo_dir, capsys):
    assert cli_main(["estimate", str(ws.path)]) == 0
    out = capsys.readouterr().out
    assert "not estimated yet" in out and "spot-check" in out
    assert cli_main(["refit", str(ws.path), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["n_trusted"] == 0 and A.latest_refit(ws).fit_id == rec["fit_id"]
    assert cli_main(["estimate", str(ws.path), "--json", "--next", "50"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "insufficient" and doc["next_n"] == 50
    assert cli_main(["estimate", str(ws.path), "--spot-check"]) == 0
    out = capsys.readouterr().out
    assert out.count("to review") == E.spot_check(ws).size
    assert cli_main(["downstream", str(ws.path), "--truth", str(demo_dir / "truth.csv"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "insufficient" and doc["truth"]["n_test"] == 359
    assert cli_main(["simulate", str(ws.path), "--truth", str(demo_dir / "truth.csv"), "--budget", "60",
                     "--strategy", "static", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("strategy", "budget", "errors_total", "errors_found", "estimate_left", "estimate_low",
                "estimate_high", "curve"):
        assert key in doc
    assert doc["strategy"] == "static" and doc["budget"] == 60 and doc["reviewed"] == 60
    assert doc["errors_total"] == round(0.3 * 1797) and doc["errors_found"] >= 55
    assert not ws.review_db.exists()  # the simulation never writes decisions


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["estimate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a scanned workspace" in err and "Traceback" not in err


@pytest.mark.slow
def test_bench_refit_section_quick(tmp_path):
    """``python -m bench --quick --sections refit`` runs and reports the refit against the scan's probe."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "-m", "bench", "--quick", "--sections", "refit", "--json", str(out)],
                       cwd=root, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    raw = json.loads(out.read_text())["raw"]["refit"]
    assert raw["probe_s"] > 0 and raw["cold_s"] > 0 and raw["warm_s"] > 0
    assert len(raw["cold_iters"]) == 5 and raw["estimate_low"] <= raw["estimate"] <= raw["estimate_high"]
    rows = {r["metric"]: r for r in json.loads(out.read_text())["rows"] if r["section"] == "refit"}
    assert any(m.startswith("refit after 25 more") for m in rows)
