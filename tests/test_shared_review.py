"""Shared review database: several reviewers, one database (SQLite file or PostgreSQL server).

Every test taking ``shared_url`` runs twice: on a SQLite file outside the workspace and on PostgreSQL (a
private schema on ``$CLIPCLEANER_TEST_PG_URL``, dropped afterwards; that variant is skipped when the variable
is unset — start a server with ``bash .ci/postgres.sh && . .ci/pg.env``).
"""
from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from _pg import pg_schema_url  # tests/_pg.py

from clipcleaner_core import cli
from clipcleaner_core.config import EncoderConfig
from clipcleaner_core.decisions import ReviewStore, open_store, resolve_store_url, set_review_db
from clipcleaner_core.export import export_csv
from clipcleaner_core.pipeline import scan
from clipcleaner_core.workspace import Workspace

PIXELS = EncoderConfig(encoder="pixels")  # no weights needed (not CLIP)
N = 40


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch):
    monkeypatch.delenv("CLIPCLEANER_DB_URL", raising=False)
    monkeypatch.delenv("CLIPCLEANER_REVIEWER", raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request, tmp_path) -> Iterator[str]:
    """An empty shared review database: a SQLite file, or a fresh schema on the PostgreSQL test server."""
    if request.param == "sqlite":
        yield str(tmp_path / "server" / "team-review.sqlite")
        return
    with pg_schema_url("cc_shared") as url:
        yield url


@pytest.fixture(scope="module")
def scanned(demo_dir: Path, tmp_path_factory) -> Path:
    """A scanned workspace of 40 demo images (pixels encoder), no review database yet."""
    d = tmp_path_factory.mktemp("shared_review")
    pd.read_csv(demo_dir / "labels.csv").iloc[:N].to_csv(d / "subset.csv", index=False)
    scan(d / "subset.csv", d / "ws", root=str(demo_dir), classes_file=str(demo_dir / "classes.txt"), encoder=PIXELS)
    return d / "ws"


@pytest.fixture
def ws(scanned: Path, tmp_path: Path) -> Path:
    """A private copy of the scanned workspace (tests change workspace.json and review.sqlite)."""
    out = tmp_path / "ws"
    shutil.copytree(scanned, out)
    return out


def _state(store: ReviewStore) -> dict[str, tuple]:
    return {r.sample_id: (r.action, None if pd.isna(r.label) else r.label, r.reviewer)
            for r in store.current().itertuples(index=False)}


def _rows(df: pd.DataFrame) -> list[tuple]:
    return [tuple(None if (not isinstance(v, (list, tuple)) and pd.isna(v)) else v for v in row)
            for row in df.astype(object).itertuples(index=False)]


def _samples(ws: Path) -> pd.DataFrame:
    return Workspace(ws).scores()


# ------------------------------------------------------------------------------------------- resolution
def test_store_url_resolution_order(ws: Path, tmp_path: Path, monkeypatch, demo_dir: Path):
    assert resolve_store_url(ws) == (None, "default")
    with open_store(ws, reviewer="ann") as st:
        assert st.path == ws / "review.sqlite"

    set_review_db(ws, "team.sqlite")  # relative: next to the workspace's files
    assert resolve_store_url(ws) == (str(ws / "team.sqlite"), "review.json")
    monkeypatch.setenv("CLIPCLEANER_DB_URL", str(tmp_path / "env.sqlite"))
    assert resolve_store_url(ws) == (str(tmp_path / "env.sqlite"), "env")
    assert resolve_store_url(ws, tmp_path / "arg.sqlite") == (str(tmp_path / "arg.sqlite"), "argument")
    monkeypatch.setenv("CLIPCLEANER_REVIEWER", "carol")
    with open_store(ws) as st:
        assert st.path == tmp_path / "env.sqlite" and st.reviewer == "carol"
    monkeypatch.delenv("CLIPCLEANER_DB_URL")

    # a re-scan keeps the workspace's review database setting
    source = Workspace(ws).settings().data.source
    scan(source, ws, root=str(demo_dir), classes_file=str(demo_dir / "classes.txt"), encoder=PIXELS)
    assert json.loads((ws / "review.json").read_text())["review_db"] == "team.sqlite"
    assert resolve_store_url(ws)[1] == "review.json"
    set_review_db(ws, None)
    assert resolve_store_url(ws) == (None, "default")
    with pytest.raises(ValueError, match="unsupported database URL"):
        set_review_db(ws, "mysql://somewhere/db")


# ---------------------------------------------------------------------------------------- two reviewers
def test_two_reviewers_see_each_other_on_reload(ws: Path, shared_url: str):
    set_review_db(ws, shared_url)
    sids = list(_samples(ws)["sample_id"])
    ann, bob = open_store(ws, reviewer="ann"), open_store(ws, reviewer="bob")  # two browsers
    try:
        assert ann.backend == bob.backend == ("sqlite" if "://" not in shared_url else "postgresql")
        ann.record(sids[0], "exclude")
        bob.record(sids[1], "relabel", "seven", given_label="one")
        ann.record_many(sids[2:5], "accept")
        # each session re-reads the database (no client-side cache): both see both
        want = {sids[0]: ("exclude", None, "ann"), sids[1]: ("relabel", "seven", "bob"),
                **{s: ("accept", None, "ann") for s in sids[2:5]}}
        assert _state(ann) == _state(bob) == want
    finally:
        ann.close()
        bob.close()
    with open_store(ws, reviewer="ann") as reloaded:  # a browser reload opens the store anew
        assert _state(reloaded) == want
        assert reloaded.counts() == {"accept": 3, "relabel": 1, "exclude": 1, "unsure": 0}


def test_conflicting_edit_last_writer_wins_history_kept(ws: Path, shared_url: str):
    set_review_db(ws, shared_url)
    sid = _samples(ws)["sample_id"].iloc[7]
    with open_store(ws, reviewer="ann") as ann, open_store(ws, reviewer="bob") as bob:
        ann.record(sid, "relabel", "three", given_label="eight")
        bob.record(sid, "relabel", "five", given_label="eight")  # later: wins
        assert _state(ann)[sid] == ("relabel", "five", "bob")
        h = ann.history(sample_id=sid)
        assert list(h["reviewer"]) == ["bob", "ann"]
        assert list(h["label"]) == ["five", "three"]
        assert h["prev_label"].iloc[0] == "three"  # bob's edit records what it overwrote
        # ann undoes her edit: bob's later decision stays, both edits stay in the history
        assert ann.undo(reviewer="ann") == [sid]
        assert _state(bob)[sid] == ("relabel", "five", "bob")
        h = bob.history(sample_id=sid)
        assert len(h) == 3 and h["undone"].tolist() == [False, False, True]


# ------------------------------------------------------------------------------------------------ export
def test_export_reflects_shared_decisions(ws: Path, shared_url: str, tmp_path: Path, capsys):
    scores = _samples(ws)
    s_ex, s_re = scores["sample_id"].iloc[0], scores["sample_id"].iloc[1]
    other = next(c for c in Workspace(ws).classes()
                 if c != scores["label"].iloc[1])
    with ReviewStore(shared_url, reviewer="ann") as st:
        st.record(s_ex, "exclude")
        st.record(s_re, "relabel", other, reviewer="bob")

    _, table = export_csv(ws, tmp_path / "a.csv", db_url=shared_url)
    assert len(table) == N - 1 and s_ex not in set(table["sample_id"])
    row = table.set_index("sample_id").loc[s_re]
    assert (row["label"], row["decision"], row["reviewer"]) == (other, "relabel", "bob")
    assert not (ws / "review.sqlite").exists()  # nothing went to the workspace's local file

    # the CLI without --db finds the shared database through workspace.json
    set_review_db(ws, shared_url)
    assert cli.main(["export", str(ws), "-o", str(tmp_path / "b.csv")]) == 0
    assert f"wrote {N - 1} rows" in capsys.readouterr().out
    b = pd.read_csv(tmp_path / "b.csv", keep_default_na=False)
    assert b.set_index("sample_id").loc[s_re, "label"] == other
    assert s_ex not in set(b["sample_id"])


# --------------------------------------------------------------------------------------------- migration
def test_migration_sqlite_to_shared_and_back_via_cli(ws: Path, shared_url: str, tmp_path: Path, capsys):
    sids = list(_samples(ws)["sample_id"])
    with ReviewStore.for_workspace(ws, reviewer="ann") as local:  # a workspace reviewed alone, on SQLite
        local.record(sids[0], "exclude")
        local.record(sids[1], "relabel", "two", given_label="one", note="clearly a 2")
        local.record_many(sids[2:6], "accept", reviewer="bob")
        local.record(sids[3], "unsure")
        local.undo()  # undoes the 'unsure'
        want_hist, want_cur = _rows(local.history()), _rows(local.current())

    assert cli.main(["db", "copy", str(ws), shared_url]) == 0
    assert f"copied {len(want_hist)} new events" in capsys.readouterr().out
    assert cli.main(["db", "copy", str(ws), shared_url]) == 0  # idempotent
    assert "copied 0 new events" in capsys.readouterr().out
    back = tmp_path / "back" / "review.sqlite"
    assert cli.main(["db", "copy", shared_url, str(back)]) == 0
    for url in (shared_url, str(back)):
        with ReviewStore(url) as st:
            assert _rows(st.history()) == want_hist
            assert _rows(st.current()) == want_cur

    # work continues on the shared database, then comes back into the workspace file incrementally
    assert cli.main(["db", "use", str(ws), shared_url]) == 0
    assert cli.main(["db", "decide", str(ws), "exclude", sids[10], "--reviewer", "carol"]) == 0
    assert cli.main(["db", "copy", shared_url, str(ws)]) == 0
    assert "copied 1 new events" in capsys.readouterr().out
    with ReviewStore.for_workspace(ws) as local:
        assert _state(local)[sids[10]] == ("exclude", None, "carol")
    with pytest.raises(SystemExit):
        cli.main(["db", "copy"])
    assert cli.main(["db", "copy", str(tmp_path / "nowhere"), shared_url]) == 2


# ------------------------------------------------------------------------------------ CLI decisions, audit
def test_cli_reviewer_history_and_undo(ws: Path, shared_url: str, capsys):
    scores = _samples(ws)
    p0, p1 = scores["path"].iloc[0], scores["path"].iloc[1]
    s0 = scores["sample_id"].iloc[0]
    assert cli.main(["db", "use", str(ws), shared_url]) == 0
    assert cli.main(["db", "decide", str(ws), "relabel", p0, "--label", "nine", "--reviewer", "ann"]) == 0
    assert cli.main(["db", "decide", str(ws), "exclude", p0, p1, "--reviewer", "bob"]) == 0
    assert cli.main(["db", "decide", str(ws), "relabel", p1, "--reviewer", "bob"]) == 2  # no --label
    assert cli.main(["db", "decide", str(ws), "accept", "no/such/file.png"]) == 2
    capsys.readouterr()

    assert cli.main(["db", "history", str(ws), "--sample", s0, "--csv"]) == 0
    h = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert list(h["reviewer"]) == ["bob", "ann"] and list(h["action"]) == ["exclude", "relabel"]
    assert set(h["path"]) == {p0} and h["given_label"].iloc[1] == scores["label"].iloc[0]

    assert cli.main(["db", "undo", str(ws), "--reviewer", "ann"]) == 0  # ann's relabel, not bob's exclude
    with open_store(ws) as st:
        assert st.backend == ("sqlite" if "://" not in shared_url else "postgresql")
        assert _state(st)[s0] == ("exclude", None, "bob")
    assert cli.main(["db", "undo", str(ws), "--reviewer", "bob"]) == 0
    with open_store(ws) as st:
        assert st.current().empty
    assert cli.main(["db", "history", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "undo" in out and "bob" in out and "ann" in out
