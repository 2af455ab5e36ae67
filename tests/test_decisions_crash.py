"""Durability and concurrency of the SQLite review store, with real processes.

* crash test: a worker records decisions (single, bulk, undo) and prints each one *after* the
  call returned (= acknowledged); the test SIGKILLs it at seeded-random moments, then checks that
  every acknowledged write is stored, that no half-applied transaction is visible and that the
  file passes ``PRAGMA integrity_check``.
* concurrency test: two processes write 1,000 decisions each into the same file at once.

Workers load ``clipcleaner_core/decisions.py`` by file path (not ``import clipcleaner_core``) so
that they start fast whatever the package ``__init__`` imports (torch, ...).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clipcleaner_core.decisions import ReviewStore

pytestmark = pytest.mark.slow  # long: run by CI and `pytest`, skipped by `pytest -m "not slow"`

HANG_GUARD_S = 600
"""Only a hung worker fails on time (a slow, busy runner never does)."""
DECISIONS_PY = Path(__file__).resolve().parents[1] / "clipcleaner_core" / "decisions.py"

_LOAD = f"""
import importlib.util, sys
_spec = importlib.util.spec_from_file_location("cc_decisions_under_test", {str(DECISIONS_PY)!r})
dec = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = dec
_spec.loader.exec_module(dec)
"""

CRASH_WORKER = _LOAD + r"""
import random
db, rnd, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
store = dec.ReviewStore(db, reviewer=f"r{rnd}")
print("ready", flush=True)
i = 0
while True:
    op = rng.random()
    if op < 0.6:
        sid = f"{rnd}-{i}"
        action = rng.choice(["accept", "exclude", "unsure", "relabel"])
        label = "cat" if action == "relabel" else None
        eid = store.record(sid, action, label, given_label="dog")
        print(f"R {eid} {sid} {action}", flush=True)
    elif op < 0.9:
        sids = [f"{rnd}-{i}-{k}" for k in range(rng.randint(2, 6))]
        gid = store.record_many(sids, "exclude")
        print(f"B {gid} {','.join(sids)}", flush=True)
    else:
        undone = store.undo(reviewer=f"r{rnd}")
        print(f"U {','.join(undone or [])}", flush=True)
    i += 1
"""

CONCURRENT_WORKER = _LOAD + r"""
import time
db, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = dec.ReviewStore(db, reviewer=name)
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
ids = [store.record(f"{name}-{i}", "exclude" if i % 2 else "accept") for i in range(n // 2)]
print("half", flush=True)  # both workers are mid-way before either writes its second half
assert sys.stdin.readline().strip() == "go2"
ids += [store.record(f"{name}-{i}", "exclude" if i % 2 else "accept") for i in range(n // 2, n)]
store.close()
print("done", flush=True)
"""


def _spawn(script: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as raw:
        return raw.execute("PRAGMA integrity_check").fetchone()[0]


def test_sigkill_never_loses_acknowledged_decisions(tmp_path: Path) -> None:
    db = tmp_path / "review.sqlite"
    rng = random.Random(7)
    rounds, killed_running, killed_starting = 20, 0, 0
    records: list[tuple[int, str, str]] = []  # acknowledged (event id, sample id, action)
    bulks: list[tuple[int, list[str]]] = []  # acknowledged (group id, sample ids)
    undos: list[list[str]] = []  # acknowledged undos (sample ids)
    t0 = time.monotonic()
    for rnd in range(rounds):
        proc = _spawn(CRASH_WORKER, str(db), str(rnd), str(rng.randrange(2**31)))
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True)
        reader.start()
        if rnd > 0 and rng.random() < 0.2:
            # kill at any moment, possibly while it is still opening / creating the database
            time.sleep(rng.uniform(0.0, 0.4))
            killed_starting += 1
        else:
            # let it acknowledge a random number of writes, then kill it a random instant later
            # (counting acknowledgements keeps the amount of work independent of machine speed)
            # no wall-clock deadline: a busy runner only makes this slower (HANG_GUARD_S catches a real hang)
            want = 1 + rng.randint(5, 60)
            hang_guard = time.monotonic() + HANG_GUARD_S
            while len(lines) < want and proc.poll() is None and time.monotonic() < hang_guard:
                time.sleep(0.001)
            assert lines and lines[0] == "ready\n", proc.stderr.read() if proc.poll() else lines
            assert len(lines) >= want, f"worker stuck for {HANG_GUARD_S} s: {len(lines)} lines"
            time.sleep(rng.uniform(0.0, 0.01))
            killed_running += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        reader.join(timeout=10)
        err = proc.stderr.read()
        assert proc.returncode == -signal.SIGKILL, f"worker exited by itself:\n{err}"
        for line in lines:
            if not line.endswith("\n"):
                continue  # cut off by the kill: not acknowledged
            kind, *rest = line.split()
            if kind == "R":
                records.append((int(rest[0]), rest[1], rest[2]))
            elif kind == "B":
                bulks.append((int(rest[0]), rest[1].split(",")))
            elif kind == "U":
                undos.append(rest[0].split(",") if rest else [])
        assert _integrity(db) == "ok", f"round {rnd}"

    assert len(records) > 150 and len(bulks) > 50 and len(undos) > 10, (
        len(records), len(bulks), len(undos))
    with ReviewStore(db) as store:
        hist = store.history()
        events = hist.set_index("id")
        undo_sids = set(hist.loc[hist["kind"] == "undo", "sample_id"])
        current = store.current().set_index("sample_id")
        # 1. every acknowledged single record is stored, and is the current state unless undone
        for eid, sid, action in records:
            assert eid in events.index, f"acknowledged event {eid} lost"
            ev = events.loc[eid]
            assert (ev["sample_id"], ev["action"], ev["kind"]) == (sid, action, "action")
            if ev["undone"]:
                assert sid in undo_sids and sid not in current.index
            else:
                assert current.loc[sid, "action"] == action
                assert (current.loc[sid, "label"] == "cat") == (action == "relabel")
        # 2. every acknowledged bulk is stored completely (all or nothing)
        for gid, sids in bulks:
            grp = hist[(hist["group_id"] == gid) & (hist["kind"] == "action")]
            assert sorted(grp["sample_id"]) == sorted(sids), f"bulk group {gid} incomplete"
            if grp["undone"].all():
                assert not set(sids) & set(current.index)
            else:
                assert not grp["undone"].any()
                assert set(current.loc[sids, "action"]) == {"exclude"}
        # 3. every acknowledged undo is stored
        for sids in undos:
            for sid in sids:
                assert sid in undo_sids and sid not in current.index
        # 4. no half-applied transaction anywhere: decisions are exactly what events imply
        assert store.rebuild_decisions() == 0
        n_events = len(hist)
    elapsed = time.monotonic() - t0
    print(f"\ncrash test: {rounds} rounds ({killed_running} killed while writing, "
          f"{killed_starting} at a random moment), acknowledged {len(records)} records, "
          f"{len(bulks)} bulks, {len(undos)} undos; {n_events} events stored; {elapsed:.1f} s")


def test_two_processes_write_same_file_concurrently(tmp_path: Path) -> None:
    db = tmp_path / "review.sqlite"  # does not exist yet: both workers race to create it
    n = 1000
    procs = [_spawn(CONCURRENT_WORKER, str(db), name, str(n), stdin=subprocess.PIPE)
             for name in ("w0", "w1")]
    for p in procs:
        assert p.stdout.readline() == "ready\n", p.stderr.read()
    t0 = time.monotonic()
    for p in procs:  # start both together
        p.stdin.write("go\n")
        p.stdin.flush()
    # the writing windows overlap by construction (not by timing): neither writes its second half before both
    # have written their first. (Ids need not interleave: SQLite's busy handler is not fair, so under CPU
    # load one process may commit many transactions while the other waits for the lock.)
    for p in procs:
        assert p.stdout.readline() == "half\n", p.stderr.read()
    for p in procs:
        p.stdin.write("go2\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    elapsed = time.monotonic() - t0
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "done", (out, err)
        assert "locked" not in err.lower() and "busy" not in err.lower(), err

    assert _integrity(db) == "ok"
    with ReviewStore(db) as store:
        cur = store.current()
        assert len(cur) == 2 * n
        assert set(cur["sample_id"]) == {f"w{k}-{i}" for k in range(2) for i in range(n)}
        assert store.counts() == {"accept": n, "exclude": n, "relabel": 0, "unsure": 0}
        hist = store.history()
        assert len(hist) == 2 * n and hist["group_id"].is_unique
        assert sorted(hist["id"]) == list(range(1, 2 * n + 1))
    print(f"\nconcurrency test: 2 x {n} record() calls in {elapsed:.1f} s")

