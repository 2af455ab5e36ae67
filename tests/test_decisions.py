"""Tests of the review-decision store (clipcleaner_core/decisions.py).

Every test taking the ``store``/``open_store`` fixtures runs twice: against SQLite and against
PostgreSQL. The PostgreSQL variant uses the server in ``$CLIPCLEANER_TEST_PG_URL`` (CI sets it
with ``bash .ci/postgres.sh && . .ci/pg.env``); each test gets its own schema, dropped after.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from _pg import PG_ENV, PG_SKIP_REASON, pg_schema_url  # noqa: E402  (tests/_pg.py)

from clipcleaner_core.decisions import (
    ACTIONS,
    CURRENT_COLUMNS,
    HISTORY_COLUMNS,
    ReviewConflictError,
    ReviewStore,
    copy_decisions,
    dump_json,
    load_json,
)

# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Database URL of an empty store: a SQLite file or a private PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "ws" / "review.sqlite")
    else:
        with pg_schema_url() as url:
            yield url


@pytest.fixture
def open_store(db_url: str) -> Iterator[Callable[..., ReviewStore]]:
    """Factory opening (another) ReviewStore on the test database; all closed at teardown."""
    opened: list[ReviewStore] = []

    def _open(reviewer: str = "ann", url: str | None = None) -> ReviewStore:
        s = ReviewStore(url or db_url, reviewer=reviewer)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Callable[..., ReviewStore]) -> ReviewStore:
    return open_store("ann")


def state(s: ReviewStore) -> dict[str, tuple[str, str | None, str]]:
    """sample_id -> (action, label, reviewer) of the current decisions."""
    out = {}
    for r in s.current().itertuples(index=False):
        out[r.sample_id] = (r.action, None if pd.isna(r.label) else r.label, r.reviewer)
    return out


def norm(df: pd.DataFrame) -> list[tuple]:
    """DataFrame rows as plain tuples with NaN → None (backend-independent comparison)."""
    return [tuple(None if (not isinstance(v, (list, tuple)) and pd.isna(v)) else v for v in row)
            for row in df.astype(object).itertuples(index=False)]


# ------------------------------------------------------------------------------ basics
def test_record_current_get(store: ReviewStore) -> None:
    e1 = store.record("s1", "accept", given_label="cat")
    e2 = store.record("s2", "relabel", "dog", given_label="cat", note="clearly a dog")
    e3 = store.record("s3", "exclude")
    e4 = store.record("s4", "unsure", reviewer="bob")
    assert e1 < e2 < e3 < e4

    cur = store.current()
    assert list(cur.columns) == CURRENT_COLUMNS
    assert state(store) == {
        "s1": ("accept", None, "ann"),
        "s2": ("relabel", "dog", "ann"),
        "s3": ("exclude", None, "ann"),
        "s4": ("unsure", None, "bob"),
    }
    got = store.get("s2")
    assert got is not None
    assert {k: got[k] for k in ("sample_id", "action", "label", "reviewer", "event_id")} == {
        "sample_id": "s2", "action": "relabel", "label": "dog", "reviewer": "ann", "event_id": e2}
    ts = datetime.fromisoformat(got["updated_at"])
    assert ts.utcoffset() == timedelta(0)
    assert store.get("nope") is None
    assert store.counts() == {"accept": 1, "relabel": 1, "exclude": 1, "unsure": 1}

    h = store.history("s2")
    assert list(h.columns) == HISTORY_COLUMNS
    row = h.iloc[0]
    assert (row["kind"], row["action"], row["label"], row["given_label"], row["note"],
            row["reviewer"], bool(row["undone"])) == (
        "action", "relabel", "dog", "cat", "clearly a dog", "ann", False)


def test_validation_errors_write_nothing(store: ReviewStore) -> None:
    with pytest.raises(ValueError, match="relabel.*needs the new label"):
        store.record("s1", "relabel")
    with pytest.raises(ValueError, match="relabel.*needs the new label"):
        store.record("s1", "relabel", "")
    with pytest.raises(ValueError, match="unknown action 'delete'"):
        store.record("s1", "delete")
    with pytest.raises(ValueError, match="only valid with action 'relabel'"):
        store.record("s1", "accept", "cat")
    with pytest.raises(ValueError, match="sample_id"):
        store.record("", "accept")
    with pytest.raises(ValueError, match="reviewer"):
        store.record("s1", "accept", reviewer="")
    # one bad item in a bulk → nothing of the bulk is written
    with pytest.raises(ValueError, match="item 1: .*relabel"):
        store.record_many([("a", "accept"), ("b", "relabel"), ("c", "exclude")])
    with pytest.raises(ValueError, match="at least one"):
        store.record_many([])
    with pytest.raises(ValueError, match="unknown keys"):
        store.record_many([{"sample_id": "a", "action": "accept", "colour": "red"}])
    assert store.current().empty
    assert store.history().empty
    assert sorted(ACTIONS) == ["accept", "clear", "exclude", "relabel", "unsure"]


def test_clear_returns_sample_to_undecided(store: ReviewStore) -> None:
    store.record("s1", "relabel", "dog")
    store.record("s1", "clear")
    assert store.get("s1") is None
    assert store.counts() == {"accept": 0, "relabel": 0, "exclude": 0, "unsure": 0}
    h = store.history("s1")
    assert list(h["action"]) == ["clear", "relabel"]
    assert (h.iloc[0]["prev_action"], h.iloc[0]["prev_label"]) == ("relabel", "dog")
    assert store.undo() == ["s1"]
    assert state(store) == {"s1": ("relabel", "dog", "ann")}


def test_record_many_forms_and_duplicates(store: ReviewStore) -> None:
    g = store.record_many(["a", "b"], "exclude")
    g2 = store.record_many(
        [("c", "relabel", "cat"), {"sample_id": "d", "action": "accept", "given_label": "dog"},
         ("a", "unsure"), ("a", "relabel", "bird")],
        note="batch",
    )
    assert g2 == g + 1
    assert state(store) == {
        "a": ("relabel", "bird", "ann"),
        "b": ("exclude", None, "ann"),
        "c": ("relabel", "cat", "ann"),
        "d": ("accept", None, "ann"),
    }
    h = store.history()
    assert set(h.loc[h["group_id"] == g2, "note"]) == {"batch"}
    # the second edit of 'a' inside the bulk saw the first as its previous state
    a_rows = h[(h["sample_id"] == "a") & (h["group_id"] == g2)].sort_values("id")
    assert list(a_rows["prev_action"]) == ["exclude", "unsure"]
    # undoing the bulk restores 'a' to its state before the bulk, not an intermediate one
    assert sorted(store.undo()) == ["a", "c", "d"]
    assert state(store) == {"a": ("exclude", None, "ann"), "b": ("exclude", None, "ann")}


# ------------------------------------------------------------------------------ undo
def test_bulk_then_undo_whole_group(store: ReviewStore) -> None:
    store.record("s1", "accept")
    store.record("s2", "relabel", "cat")
    before = norm(store.current())
    gid = store.record_many([("s1", "exclude"), ("s2", "exclude"), ("s3", "exclude")])
    assert store.counts()["exclude"] == 3

    undone = store.undo()
    assert undone == ["s1", "s2", "s3"]
    assert norm(store.current()) == before  # exactly the state before the bulk
    h = store.history()
    grp = h[h["group_id"] == gid]
    assert set(grp.loc[grp["kind"] == "action", "undone"]) == {True}
    undo_rows = grp[grp["kind"] == "undo"].sort_values("sample_id")
    assert list(undo_rows["sample_id"]) == ["s1", "s2", "s3"]
    assert norm(undo_rows[["action", "label", "prev_action"]]) == [
        ("accept", None, "exclude"), ("relabel", "cat", "exclude"), (None, None, "exclude")]
    # the two single records before it are untouched and undoable afterwards
    assert not h.loc[h["group_id"] < gid, "undone"].any()


def test_undo_walks_back(store: ReviewStore) -> None:
    store.record("s", "accept")
    store.record("s", "relabel", "cat")
    store.record("s", "exclude")
    assert store.undo() == ["s"]
    assert state(store)["s"][:2] == ("relabel", "cat")
    assert store.undo() == ["s"]
    assert state(store)["s"][:2] == ("accept", None)
    assert store.undo() == ["s"]
    assert store.get("s") is None
    assert store.undo() is None
    assert store.undo() is None
    # history keeps all three actions (undone) plus three undo events
    h = store.history("s")
    assert list(h["kind"]) == ["undo"] * 3 + ["action"] * 3
    assert h.loc[h["kind"] == "action", "undone"].all()
    # recording after undo works normally and is itself undoable
    store.record("s", "unsure")
    assert state(store)["s"][:2] == ("unsure", None)
    assert store.undo() == ["s"] and store.get("s") is None


def test_undo_per_reviewer(open_store: Callable[..., ReviewStore]) -> None:
    ann, bob = open_store("ann"), open_store("bob")
    ann.record("s1", "accept")
    bob.record("s2", "exclude")
    ann.record("s3", "relabel", "cat")
    bob.record_many([("s4", "unsure"), ("s5", "unsure")])

    assert bob.undo(reviewer="bob") == ["s4", "s5"]
    assert bob.undo(reviewer="bob") == ["s2"]
    assert bob.undo(reviewer="bob") is None
    assert sorted(state(ann)) == ["s1", "s3"]  # ann's work untouched
    assert ann.undo(reviewer="ann") == ["s3"]
    assert sorted(state(bob)) == ["s1"]
    # without a reviewer filter: most recent group of anyone
    bob.record("s6", "exclude")
    assert ann.undo() == ["s6"]
    h = ann.history("s6")
    assert list(zip(h["kind"], h["reviewer"])) == [("undo", "ann"), ("action", "bob")]


def test_undo_keeps_a_later_decision_of_another_reviewer(
        open_store: Callable[..., ReviewStore]) -> None:
    ann, bob = open_store("ann"), open_store("bob")
    ann.record("s1", "relabel", "cat")
    bob.record("s1", "exclude")
    # ann undoes her relabel: bob's later exclude must stay
    assert ann.undo(reviewer="ann") == ["s1"]
    assert state(ann) == {"s1": ("exclude", None, "bob")}
    # bob undoes his exclude: ann's relabel was undone, so s1 becomes undecided
    assert bob.undo(reviewer="bob") == ["s1"]
    assert ann.get("s1") is None
    assert ann.rebuild_decisions() == 0


def test_undo_a_given_group_leaves_other_groups(open_store: Callable[..., ReviewStore]) -> None:
    """Two browser tabs of the same reviewer: each undoes exactly its own groups (per-tab undo)."""
    tab1, tab2 = open_store("ann"), open_store("ann")
    g1 = tab1.record_many([("s1", "exclude")])
    g2 = tab2.record_many([("s2", "accept")])
    g3 = tab1.record_many([("s3", "relabel", "cat"), ("s4", "unsure")])
    assert tab1.undo(group_id=g3) == ["s3", "s4"]
    assert tab1.undo(group_id=g3) is None  # already undone
    assert tab1.undo(group_id=g1) == ["s1"]
    assert state(tab2) == {"s2": ("accept", None, "ann")}  # tab 2's decision untouched
    assert tab1.undo(group_id=10_000) is None  # unknown group
    assert tab2.undo(group_id=g2) == ["s2"] and tab2.current().empty
    h = tab1.history()
    assert set(h.loc[h["kind"] == "undo", "group_id"]) == {g1, g2, g3}
    assert tab1.rebuild_decisions() == 0


def test_snapshot_reports_state_and_newest_event(open_store: Callable[..., ReviewStore]) -> None:
    ann, bob = open_store("ann"), open_store("bob")
    assert ann.snapshot(["s1"]) == {"s1": {"action": None, "label": None, "reviewer": None, "updated_at": None,
                                           "event_id": 0, "event_reviewer": None, "event_kind": None,
                                           "event_at": None}}
    e1 = ann.record("s1", "relabel", "cat")
    bob.record("s2", "exclude")
    snap = ann.snapshot(["s1", "s2", "s3", "s1"])
    assert list(snap) == ["s1", "s2", "s3"]
    assert (snap["s1"]["action"], snap["s1"]["label"], snap["s1"]["event_id"]) == ("relabel", "cat", e1)
    assert snap["s2"]["event_reviewer"] == "bob" and snap["s2"]["event_kind"] == "action"
    assert snap["s3"]["event_id"] == 0 and snap["s3"]["action"] is None
    bob.undo(reviewer="bob")  # an undo is an event too: a view drawn before it is stale
    after = ann.snapshot(["s2"])["s2"]
    assert after["action"] is None and after["event_kind"] == "undo" and after["event_id"] > snap["s2"]["event_id"]


def test_compare_and_set_refuses_a_stale_view(open_store: Callable[..., ReviewStore]) -> None:
    ann, bob = open_store("ann"), open_store("bob")
    seen = ann.snapshot(["s1"])["s1"]["event_id"]  # ann's tab shows s1 undecided
    e_bob = bob.record("s1", "exclude")  # bob decides it meanwhile
    with pytest.raises(ReviewConflictError) as err:
        ann.record("s1", "accept", seen=seen)
    (c,) = err.value.conflicts
    assert (c.sample_id, c.seen, c.event_id, c.reviewer, c.kind, c.action) == ("s1", 0, e_bob, "bob", "action",
                                                                              "exclude")
    assert "bob" in str(err.value) and "nothing was written" in str(err.value)
    assert state(ann) == {"s1": ("exclude", None, "bob")}  # not overwritten
    assert len(ann.history("s1")) == 1
    # with the fresh view (ann saw bob's decision and chose to override it) the write goes through
    ann.record("s1", "accept", seen=ann.snapshot(["s1"])["s1"]["event_id"])
    assert state(ann) == {"s1": ("accept", None, "ann")}
    # an up-to-date view and no check at all both write
    ann.record("s2", "unsure", seen=0)
    ann.record("s2", "exclude")
    assert state(ann)["s2"] == ("exclude", None, "ann")


def test_compare_and_set_bulk_is_all_or_nothing(open_store: Callable[..., ReviewStore]) -> None:
    ann, bob = open_store("ann"), open_store("bob")
    ann.record_many([("s1", "accept"), ("s2", "accept")])
    view = ann.snapshot(["s1", "s2", "s3"])
    bob.undo()  # anybody's undo of the group (here bob undoes ann's) also makes the view stale
    n_events = len(ann.history())
    with pytest.raises(ReviewConflictError) as err:
        ann.record_many(["s1", "s2", "s3"], "exclude", seen={k: v["event_id"] for k, v in view.items()})
    assert sorted(c.sample_id for c in err.value.conflicts) == ["s1", "s2"]
    assert all(c.kind == "undo" and c.reviewer == "bob" and c.action is None for c in err.value.conflicts)
    assert len(ann.history()) == n_events and ann.current().empty  # nothing written
    # samples left out of ``seen`` are not checked
    gid = ann.record_many(["s1", "s3"], "exclude", seen={"s3": 0})
    assert state(ann) == {"s1": ("exclude", None, "ann"), "s3": ("exclude", None, "ann")}
    assert ann.undo(group_id=gid) == ["s1", "s3"]


def test_compare_and_set_under_concurrency(open_store: Callable[..., ReviewStore]) -> None:
    """Many writers with the same stale view of one sample: exactly one wins, the others are refused."""
    stores = [open_store(f"r{i}") for i in range(6)]
    seen = stores[0].snapshot(["hot"])["hot"]["event_id"]
    wins, refused = [], []
    barrier = threading.Barrier(len(stores))

    def work(st: ReviewStore) -> None:
        barrier.wait()
        try:
            st.record("hot", "accept", seen=seen)
            wins.append(st.reviewer)
        except ReviewConflictError:
            refused.append(st.reviewer)

    threads = [threading.Thread(target=work, args=(st,)) for st in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(refused) == len(stores) - 1
    assert len(stores[0].history("hot")) == 1 and stores[0].get("hot")["reviewer"] == wins[0]


# ------------------------------------------------------------------------------ multi-user
def test_last_writer_wins_and_history_keeps_both(open_store: Callable[..., ReviewStore]) -> None:
    ann, bob = open_store("ann"), open_store("bob")
    e_ann = ann.record("s", "relabel", "cat", given_label="dog")
    e_bob = bob.record("s", "relabel", "bird", given_label="dog")
    for s in (ann, bob):
        assert state(s) == {"s": ("relabel", "bird", "bob")}
        assert s.get("s")["event_id"] == e_bob
    h = ann.history("s")
    assert norm(h[["id", "reviewer", "label", "prev_action", "prev_label"]]) == [
        (e_bob, "bob", "bird", "relabel", "cat"),
        (e_ann, "ann", "cat", None, None),
    ]
    assert h["created_at"].is_monotonic_decreasing


def test_orphans_are_reported_and_kept(open_store: Callable[..., ReviewStore]) -> None:
    s = open_store()
    s.record("a", "accept")
    s.record("b", "relabel", "cat")
    s.record("gone1", "exclude")
    s.record("gone2", "relabel", "dog")
    orph = s.orphans(["a", "b", "c"])
    assert list(orph.columns) == CURRENT_COLUMNS
    assert list(orph["sample_id"]) == ["gone1", "gone2"]
    assert len(s.current()) == 4  # reported, never dropped
    s.close()
    s2 = open_store()
    assert sorted(s2.current()["sample_id"]) == ["a", "b", "gone1", "gone2"]
    assert list(s2.orphans(iter({"a", "b", "gone1", "gone2"}))["sample_id"]) == []


def test_reopen_shows_same_state(open_store: Callable[..., ReviewStore]) -> None:
    s = open_store("ann")
    s.record("a", "accept")
    s.record_many([("b", "relabel", "cat"), ("c", "exclude")], reviewer="bob")
    s.record("d", "unsure")
    s.undo()
    cur, hist = norm(s.current()), norm(s.history())
    last_id = int(s.history()["id"].max())
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        s.current()

    with open_store("carl") as s2:
        assert norm(s2.current()) == cur
        assert norm(s2.history()) == hist
        assert s2.record("e", "accept") > last_id  # ids are not reused
        assert s2.undo() == ["e"]
        assert s2.undo(reviewer="bob") == ["b", "c"]


def test_history_filters_and_limit(store: ReviewStore) -> None:
    for i in range(5):
        store.record(f"s{i}", "accept")
    store.record("s0", "exclude")
    h = store.history(limit=3)
    assert len(h) == 3 and list(h["sample_id"]) == ["s0", "s4", "s3"]
    assert list(store.history("s0")["action"]) == ["exclude", "accept"]
    assert len(store.history()) == 6


def test_model_based_random_sequence(open_store: Callable[..., ReviewStore]) -> None:
    """A seeded random mix of records, bulks, clears and undos matches a pure-Python model."""
    rng = random.Random(20240607)
    stores = {r: open_store(r) for r in ("ann", "bob")}
    groups: list[dict] = []  # {"reviewer", "items": [(sid, action, label)], "undone"}
    sids = [f"s{i}" for i in range(12)]

    def item() -> tuple[str, str, str | None]:
        a = rng.choice(ACTIONS)
        return rng.choice(sids), a, (rng.choice(["cat", "dog"]) if a == "relabel" else None)

    def model() -> dict[str, tuple[str, str | None, str]]:
        out: dict[str, tuple[str, str | None, str]] = {}
        for g in groups:
            if g["undone"]:
                continue
            for sid, a, lab in g["items"]:
                if a == "clear":
                    out.pop(sid, None)
                else:
                    out[sid] = (a, lab, g["reviewer"])
        return out

    for _ in range(150):
        who = rng.choice(["ann", "bob"])
        s = stores[who]
        op = rng.random()
        if op < 0.5:
            sid, a, lab = item()
            s.record(sid, a, lab)
            groups.append({"reviewer": who, "items": [(sid, a, lab)], "undone": False})
        elif op < 0.75:
            items = [item() for _ in range(rng.randint(1, 5))]
            s.record_many(items)
            groups.append({"reviewer": who, "items": items, "undone": False})
        else:
            mine = rng.random() < 0.5
            todo = [g for g in groups if not g["undone"] and (not mine or g["reviewer"] == who)]
            got = s.undo(reviewer=who if mine else None)
            if not todo:
                assert got is None
            else:
                todo[-1]["undone"] = True
                assert got == list(dict.fromkeys(sid for sid, _, _ in todo[-1]["items"]))
        assert state(s) == model()
    assert stores["ann"].rebuild_decisions() == 0  # decisions == what events imply


def test_concurrent_threads_on_shared_samples(open_store: Callable[..., ReviewStore]) -> None:
    """Threads (as in Streamlit) of two reviewers hammer the same samples at once: no error,
    and the current state is still exactly the last committed event of each sample."""
    stores = [open_store("ann"), open_store("bob")]
    errors: list[BaseException] = []

    def work(t: int) -> None:
        rng = random.Random(t)
        s = stores[t % 2]
        try:
            for i in range(60):
                sid = f"s{rng.randrange(10)}"
                if i % 10 == 9:
                    s.record_many([(sid, "exclude"), (f"s{rng.randrange(10)}", "unsure")])
                elif i % 15 == 14:
                    s.undo(reviewer=s.reviewer)
                else:
                    s.record(sid, "relabel", f"t{t}-{i}")
                if i % 20 == 0:
                    s.current()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert stores[0].rebuild_decisions() == 0
    h = stores[0].history()
    assert len(h) >= 4 * 60 and h["id"].is_unique
    # each group id belongs to exactly one transaction (one reviewer, one timestamp)
    acts = h[h["kind"] == "action"].groupby("group_id")
    assert acts["created_at"].nunique().max() == 1 and acts["reviewer"].nunique().max() == 1


# ------------------------------------------------------------------------------ migration
def _populate(s: ReviewStore) -> None:
    s.record("a", "accept", given_label="cat")
    s.record("b", "relabel", "dog", given_label="cat", note="n")
    s.record_many([("c", "exclude"), ("d", "unsure")], reviewer="bob")
    s.record("e", "exclude")
    s.undo()  # undoes 'e'
    s.record("a", "relabel", "bird", reviewer="bob")


def test_copy_roundtrip_sqlite_to_db_and_back(
        tmp_path: Path, open_store: Callable[..., ReviewStore]) -> None:
    """SQLite → (SQLite | PostgreSQL) → SQLite: current() and history() are preserved."""
    with ReviewStore(tmp_path / "src.sqlite", reviewer="ann") as src:
        _populate(src)
        dst = open_store("ann")
        assert copy_decisions(src, dst) == len(src.history())
        assert copy_decisions(src, dst) == 0  # idempotent
        assert norm(dst.current()) == norm(src.current())
        assert norm(dst.history()) == norm(src.history())

        # the copy is fully usable: new ids continue after the copied ones, undo works
        new_id = dst.record("f", "exclude")
        assert new_id > int(src.history()["id"].max())
        assert dst.undo(reviewer="bob") == ["a"]  # bob's relabel of 'a', made in src

        # and back: an incremental copy brings the new work home
        assert copy_decisions(dst, src) == 2  # the "f" action + the undo event; undone flag carried
        assert norm(src.current()) == norm(dst.current())
        assert norm(src.history()) == norm(dst.history())
        with ReviewStore(tmp_path / "back.sqlite") as back:
            copy_decisions(dst, back)
            assert norm(back.current()) == norm(dst.current())
            assert norm(back.history()) == norm(dst.history())


def test_copy_refuses_diverged_histories(
        tmp_path: Path, open_store: Callable[..., ReviewStore]) -> None:
    with ReviewStore(tmp_path / "src.sqlite", reviewer="ann") as src:
        src.record("a", "accept")
        dst = open_store("bob")
        copy_decisions(src, dst)
        src.record("b", "accept")  # both get event id 2, different events
        dst.record("c", "exclude")
        before = norm(dst.history())
        with pytest.raises(ValueError, match="diverged"):
            copy_decisions(src, dst)
        assert norm(dst.history()) == before  # nothing written


@pytest.mark.skipif(not os.environ.get(PG_ENV), reason=PG_SKIP_REASON)
def test_copy_sqlite_to_postgresql_to_sqlite(tmp_path: Path) -> None:
    with pg_schema_url() as pg_url, \
            ReviewStore(tmp_path / "a.sqlite", reviewer="ann") as a, \
            ReviewStore(pg_url, reviewer="ann") as pg, \
            ReviewStore(tmp_path / "b.sqlite", reviewer="ann") as b:
        assert pg.backend == "postgresql" and a.backend == b.backend == "sqlite"
        _populate(a)
        copy_decisions(a, pg)
        pg.record("z", "relabel", "cat")
        copy_decisions(pg, b)
        assert norm(b.current()) == norm(pg.current())
        assert norm(b.history()) == norm(pg.history())
        assert state(b)["z"] == ("relabel", "cat", "ann")
        assert norm(b.history())[1:] == norm(a.history())


def test_dump_and_load_json(tmp_path: Path, store: ReviewStore) -> None:
    _populate(store)
    out = tmp_path / "backup" / "review.json"
    n = dump_json(store, out)
    doc = json.loads(out.read_text())
    assert doc["format"] == "clipcleaner-review" and len(doc["events"]) == n
    assert {d["sample_id"] for d in doc["decisions"]} == set(store.current()["sample_id"])
    with ReviewStore(tmp_path / "restored.sqlite") as restored:
        assert load_json(out, restored) == n
        assert load_json(out, restored) == 0
        assert norm(restored.current()) == norm(store.current())
        assert norm(restored.history()) == norm(store.history())
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a clipcleaner review dump"):
        load_json(tmp_path / "other.json", store)


# ------------------------------------------------------------------------------ opening
def test_tables_created_idempotently(open_store: Callable[..., ReviewStore]) -> None:
    a = open_store()
    a.record("x", "accept")
    b = open_store()  # opening again must neither fail nor touch data
    c = open_store()
    assert state(c) == {"x": ("accept", None, "ann")}
    assert b.record("y", "exclude") == 2


def test_sqlite_workspace_default_and_pragmas(tmp_path: Path) -> None:
    ws = tmp_path / "my ws"
    with ReviewStore.for_workspace(ws, reviewer="ann") as s:
        assert s.backend == "sqlite" and s.path == (ws / "review.sqlite").resolve()
        s.record("a", "accept")
        with s._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30000
    with sqlite3.connect(ws / "review.sqlite") as raw:
        assert raw.execute("SELECT sample_id, action FROM decisions").fetchall() == [("a", "accept")]
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # the same file through a sqlite:/// URL, and through an explicit url= argument
    with ReviewStore(f"sqlite:///{ws / 'review.sqlite'}") as s2:
        assert list(s2.current()["sample_id"]) == ["a"]
    with ReviewStore.for_workspace(tmp_path, url=ws / "review.sqlite") as s3:
        assert list(s3.current()["sample_id"]) == ["a"]


@pytest.mark.parametrize("bad", [":memory:", "sqlite://", "sqlite:///:memory:",
                                 "mysql://u:p@h/db", "sqlite+aiosqlite:///x.db"])
def test_rejects_unsupported_urls(bad: str) -> None:
    with pytest.raises(ValueError):
        ReviewStore(bad)


@pytest.mark.skipif(not os.environ.get(PG_ENV), reason=PG_SKIP_REASON)
def test_plain_postgresql_url_uses_psycopg() -> None:
    with pg_schema_url() as url:
        plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
        with ReviewStore(plain) as s:
            assert s.url.startswith("postgresql+psycopg://") and "***" in s.url
            s.record("a", "accept")
            assert list(s.current()["sample_id"]) == ["a"]


def test_newer_schema_version_is_refused(open_store: Callable[..., ReviewStore],
                                         db_url: str) -> None:
    s = open_store()
    with s._engine.begin() as conn:
        conn.exec_driver_sql("UPDATE review_meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="newer than this clipcleaner"):
        ReviewStore(db_url)


def test_sqlite_lock_is_waited_out_not_raised(tmp_path: Path) -> None:
    """A writer holding the lock longer than busy_timeout: record() retries and succeeds."""
    path = tmp_path / "review.sqlite"
    with ReviewStore(path, busy_timeout_s=0.05) as s:
        s.record("a", "accept")
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.6, lambda: blocker.execute("COMMIT"))
        release.start()
        t0 = time.monotonic()
        try:
            s.record("b", "exclude")  # would raise "database is locked" without the retry
        finally:
            release.join()
            blocker.close()
        assert time.monotonic() - t0 >= 0.5
        assert sorted(s.current()["sample_id"]) == ["a", "b"]
