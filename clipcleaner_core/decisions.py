"""Review-decision store: what a reviewer decided about each sample, with full history and undo.

The store never loses an acknowledged decision: every public write method runs in exactly one
database transaction that is committed (and, on SQLite, fsync'ed: WAL + ``synchronous=FULL``)
before the method returns.

Backends (same schema on both, SQLAlchemy 2 Core):

* **SQLite** (default, one file per workspace, ``WS/review.sqlite``): a path or a
  ``sqlite:///...`` URL. WAL journal, ``synchronous=FULL``, ``busy_timeout`` 30 s, writers take the
  write lock up front (``BEGIN IMMEDIATE``) and "database is locked" is retried, so several
  processes (app, CLI, a second browser tab) can write the same file concurrently.
* **PostgreSQL**: a ``postgresql://`` or ``postgresql+psycopg://`` URL. Writers serialise on a
  table lock so that event ids follow commit order (needed for last-writer-wins and undo). To
  keep the tables of several projects apart, put them in their own schema, e.g.
  ``...?options=-csearch_path%3Dmyproject``.

Tables:

* ``events`` — append-only history. Every action is one row (``kind='action'``); an undo marks
  the undone rows ``undone`` and appends one ``kind='undo'`` row per sample describing the state
  it restored. All rows written by one call share a ``group_id`` (undo rows carry the group id
  of the group they reverted).
* ``decisions`` — the current state, one row per decided sample. It is a materialisation of
  ``events``: a sample's current state is the one set by its latest (highest id) ``action``
  event that has not been undone; a ``clear`` (or no such event) means *undecided*, i.e. no
  row. Conflicting edits by two reviewers are therefore "last writer wins", with both edits kept
  in ``events``.
* ``review_meta`` — ``schema_version``.

A SQLite store checks, before and after every transaction, that the file it has open is still the file at its
path: a ``review.sqlite`` (or its ``-wal`` / ``-shm``) that was deleted, moved or replaced while open would
otherwise take decisions that nobody else sees and that vanish when the process ends. It then raises
:class:`ReviewStoreLostError` (and keeps raising) instead of acknowledging anything. ``read_only=True`` opens an
existing store for reading even when its folder cannot be written (export, audit trail of a read-only copy).

Decisions are keyed by ``sample_id`` only; decisions for samples that vanish from a later scan
are kept and reported by :meth:`ReviewStore.orphans`, never dropped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sqlite3
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL, Connection, Engine, make_url

if TYPE_CHECKING:  # pandas is imported lazily: the CLI and worker processes start faster
    import pandas as pd

__all__ = [
    "ACTIONS",
    "DECIDED_ACTIONS",
    "CURRENT_COLUMNS",
    "HISTORY_COLUMNS",
    "ReviewStore",
    "ReviewConflict",
    "ReviewConflictError",
    "ReviewStoreBusyError",
    "ReviewStoreError",
    "ReviewStoreLostError",
    "label_problem",
    "copy_decisions",
    "dump_json",
    "load_json",
    "open_store",
    "resolve_store_url",
    "set_review_db",
]

log = logging.getLogger(__name__)

ACTIONS: tuple[str, ...] = ("accept", "relabel", "exclude", "unsure", "clear")
"""Valid action names. ``clear`` returns a sample to *undecided*."""
DECIDED_ACTIONS: tuple[str, ...] = ("accept", "relabel", "exclude", "unsure")
"""Actions that can appear in the current state (``decisions.action``)."""

CURRENT_COLUMNS: list[str] = ["sample_id", "action", "label", "reviewer", "updated_at"]
HISTORY_COLUMNS: list[str] = [
    "id", "group_id", "kind", "sample_id", "action", "label", "given_label",
    "prev_action", "prev_label", "reviewer", "created_at", "undone", "note",
]

SCHEMA_VERSION = 1
DEFAULT_DB_NAME = "review.sqlite"
_JSON_FORMAT = "clipcleaner-review"
_SQLITE_CHUNK = 500  # keeps IN (...) lists well below SQLite's bound-parameter limit
_PG_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock n/a

metadata = sa.MetaData()

decisions_table = sa.Table(
    "decisions",
    metadata,
    sa.Column("sample_id", sa.String, primary_key=True),
    sa.Column("action", sa.String, nullable=False),
    sa.Column("label", sa.String, nullable=True),  # final label for 'relabel', else NULL
    sa.Column("reviewer", sa.String, nullable=False),
    sa.Column("updated_at", sa.String, nullable=False),  # UTC ISO-8601
    sa.Column("event_id", sa.Integer, nullable=True),  # the events row that set this state
)

events_table = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("group_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.String, nullable=False),  # 'action' | 'undo'
    sa.Column("sample_id", sa.String, nullable=False),
    # action/label: for kind='action' the action taken; for kind='undo' the state restored
    # (NULL action = back to undecided).
    sa.Column("action", sa.String, nullable=True),
    sa.Column("label", sa.String, nullable=True),
    sa.Column("given_label", sa.String, nullable=True),  # the dataset label at decision time
    sa.Column("prev_action", sa.String, nullable=True),  # state before this event (NULL = none)
    sa.Column("prev_label", sa.String, nullable=True),
    sa.Column("reviewer", sa.String, nullable=False),
    sa.Column("created_at", sa.String, nullable=False),  # UTC ISO-8601
    sa.Column("undone", sa.Boolean, nullable=False, default=False),
    sa.Column("note", sa.String, nullable=True),
    sa.Index("ix_events_sample_id", "sample_id", "id"),
    sa.Index("ix_events_group_id", "group_id"),
    sqlite_autoincrement=True,  # ids are never reused
)

meta_table = sa.Table(
    "review_meta",
    metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("value", sa.String, nullable=False),
)

_IDENTITY_FIELDS = ("group_id", "kind", "sample_id", "action", "label", "reviewer", "created_at")

T = TypeVar("T")


class ReviewStoreError(RuntimeError):
    """The review database cannot be used (not a database, unreadable, opened read-only); one line naming it."""


class ReviewStoreBusyError(ReviewStoreError):
    """The database stayed locked by other writers for longer than ``lock_retry_s``."""


class ReviewStoreLostError(ReviewStoreError):
    """The SQLite file this store has open was removed or replaced on disk: nothing written now would be seen by
    the app, the CLI or the export, so the store refuses every further call."""


@dataclass(frozen=True)
class ReviewConflict:
    """A sample changed since a view showed it: the newest event of ``sample_id`` (``event_id`` > ``seen``)."""

    sample_id: str
    seen: int
    """The latest event id the view had seen (0: none)."""
    event_id: int
    group_id: int
    kind: str
    """'action' or 'undo'."""
    action: str | None
    """The action taken ('action') or the state restored ('undo'; None = back to undecided)."""
    label: str | None
    reviewer: str
    created_at: str


class ReviewConflictError(RuntimeError):
    """A write with ``seen=`` was refused because another write changed a sample after the view that made it was
    drawn (nothing was written). ``conflicts`` says who changed what, per sample."""

    def __init__(self, conflicts: Sequence[ReviewConflict]) -> None:
        self.conflicts = list(conflicts)
        c = self.conflicts[0]
        more = f" (and {len(self.conflicts) - 1} more samples)" if len(self.conflicts) > 1 else ""
        what = c.action or "undecided" if c.kind == "action" else f"undo, back to {c.action or 'undecided'}"
        super().__init__(f"sample {c.sample_id!r} was changed by {c.reviewer} ({what}, {c.created_at}) after this "
                         f"view was drawn{more}; nothing was written")


@dataclass(frozen=True)
class _Item:
    sample_id: str
    action: str
    label: str | None
    given_label: str | None
    note: str | None


def _utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _opt_str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        raise ValueError(f"{what} must be a string, got bytes")
    return str(value)


def label_problem(label: Any, classes: Iterable[str] | None = None) -> str | None:
    """Why ``label`` cannot be a relabel target (one phrase), or None: empty, not one line of text (line breaks,
    control characters), leading/trailing blanks, or not one of ``classes`` when they are given."""
    if not isinstance(label, str) or not label.strip():
        return "is empty"
    if any(unicodedata.category(ch) == "Cc" for ch in label):
        return "is not a single line of text (it holds a line break or control character)"
    if label != label.strip():
        return "has leading or trailing blanks"
    if classes is not None and label not in set(classes):
        return "is not a class of this workspace"
    return None


def _validate(
    sample_id: Any, action: Any, label: Any, given_label: Any, note: Any,
    classes: frozenset[str] | None = None,
) -> _Item:
    if not isinstance(sample_id, str) or not sample_id:
        raise ValueError(f"sample_id must be a non-empty string, got {sample_id!r}")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    label_s = _opt_str(label, "label")
    if action == "relabel":
        if label_s is None or label_s == "":
            raise ValueError(
                f"action 'relabel' needs the new label (label=...) for sample {sample_id!r}"
            )
        why = label_problem(label_s, classes)
        if why is not None:
            shown = label_s if len(label_s) <= 60 else label_s[:57] + "..."
            raise ValueError(f"cannot relabel sample {sample_id!r} to {shown!r}: the label {why}")
    elif label_s is not None:
        raise ValueError(
            f"label={label_s!r} is only valid with action 'relabel' (got {action!r} for "
            f"sample {sample_id!r}); pass the dataset's label as given_label=..."
        )
    return _Item(sample_id, action, label_s, _opt_str(given_label, "given_label"),
                 _opt_str(note, "note"))


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def _file_id(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


_PROC_FD = Path("/proc/self/fd")


def _lost_reason(path: Path, identity: tuple[int, int]) -> str | None:
    """Why the SQLite database at ``path`` is not the one opened as ``identity`` (or a journal this process writes
    to is gone), or None when all is well."""
    try:
        if _file_id(path) != identity:
            return "was replaced by another file"
    except FileNotFoundError:
        return "was removed"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if not _PROC_FD.is_dir():
        return None
    base = str(path)
    try:
        fds = os.listdir(_PROC_FD)
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(_PROC_FD / fd)
        except OSError:
            continue
        if not target.startswith(base):
            continue
        name = target[len(base):]
        deleted = name.endswith(" (deleted)")
        suffix = name[: -len(" (deleted)")] if deleted else name
        if suffix not in ("", "-wal", "-shm"):
            continue
        what = f"file {path.name}{suffix}"
        if deleted:
            return f"({what}) was removed"
        try:
            held, there = os.fstat(int(fd)), os.stat(base + suffix)
        except FileNotFoundError:
            return f"({what}) was removed"
        except OSError:
            continue  # the descriptor closed meanwhile (another thread)
        if (held.st_dev, held.st_ino) != (there.st_dev, there.st_ino):
            return f"({what}) was replaced by another file"
    return None


def _chunks(seq: Sequence[T], n: int = _SQLITE_CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _unique(seq: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(seq))


def _resolve_url(url: str | os.PathLike[str]) -> URL:
    """A filesystem path or URL → SQLAlchemy URL (sqlite+pysqlite / postgresql+psycopg)."""
    if isinstance(url, os.PathLike) or "://" not in str(url):
        path = Path(url).expanduser()
        if str(url) in ("", ":memory:"):
            raise ValueError("an in-memory review store would lose decisions; give a file path")
        return URL.create("sqlite+pysqlite", database=str(path.resolve()))
    u = make_url(str(url))
    backend = u.get_backend_name()
    if backend == "sqlite":
        if u.get_driver_name() not in ("pysqlite", ""):
            raise ValueError(f"unsupported SQLite driver {u.drivername!r}; use sqlite:///PATH")
        db = u.database
        if not db or db == ":memory:" or u.query.get("mode") == "memory":
            raise ValueError("an in-memory review store would lose decisions; give a file path")
        return u.set(drivername="sqlite+pysqlite", database=str(Path(db).expanduser().resolve()))
    if backend == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        if u.get_driver_name() != "psycopg":
            raise ValueError(
                f"unsupported PostgreSQL driver {u.drivername!r}; use postgresql+psycopg://"
            )
        return u
    raise ValueError(
        f"unsupported database URL {u.render_as_string(hide_password=True)!r}: "
        "use a file path, sqlite:///PATH or postgresql+psycopg://USER:PASS@HOST/DB"
    )


class ReviewStore:
    """Durable store of review decisions (current state + append-only history with undo).

    >>> with ReviewStore.for_workspace("ws", reviewer="ann") as store:  # doctest: +SKIP
    ...     store.record("a1b2", "relabel", "cat", given_label="dog")
    ...     store.undo()

    Thread-safe (one engine with a connection pool); several processes may use the same
    database at once. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        reviewer: str = "local",
        *,
        busy_timeout_s: float = 30.0,
        lock_retry_s: float = 300.0,
        read_only: bool = False,
        classes: Iterable[str] | None = None,
    ) -> None:
        """Open (creating tables if needed) the store at ``url``.

        Args:
            url: a filesystem path or ``sqlite:///PATH`` (SQLite), or ``postgresql://...`` /
                ``postgresql+psycopg://...`` (PostgreSQL).
            reviewer: default reviewer name recorded with each action.
            busy_timeout_s: SQLite ``busy_timeout`` (how long one attempt waits for a lock).
            lock_retry_s: total time a transaction is retried while the database is locked
                before :class:`ReviewStoreBusyError` is raised.
            read_only: only read: nothing is created, every write raises :class:`ReviewStoreError`. A SQLite
                file in a folder this process cannot write is still read, with its ``-wal`` (opened
                ``mode=ro``; else ``immutable`` when it has no ``-wal``; else from a private copy).
            classes: the workspace's classes; a relabel to anything else is refused (``ValueError``).

        Raises:
            ReviewStoreError: the file is not a SQLite database, cannot be opened, or (read-only) does not exist.
        """
        if not isinstance(reviewer, str) or not reviewer:
            raise ValueError(f"reviewer must be a non-empty string, got {reviewer!r}")
        self.reviewer: str = reviewer
        self.lock_retry_s = float(lock_retry_s)
        self.read_only = bool(read_only)
        self.classes: frozenset[str] | None = frozenset(classes) if classes is not None else None
        self._url = _resolve_url(url)
        self.backend: str = self._url.get_backend_name()  # 'sqlite' | 'postgresql'
        self.path: Path | None = None
        self._closed = False
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the SQLite file when opened
        self._lost: str | None = None  # why the store refuses every call (ReviewStoreLostError)
        self._snapshot: Path | None = None  # private copy a read-only store reads from
        self._engine: Engine | None = None
        try:
            if self.backend == "sqlite":
                assert self._url.database is not None
                self.path = Path(self._url.database)
                if self.read_only:
                    self._engine = self._sqlite_readonly_engine(self.path, busy_timeout_s)
                else:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._engine = self._sqlite_engine(self._url, busy_timeout_s)
            else:
                self._engine = sa.create_engine(self._url, pool_pre_ping=True)
            if self.read_only:
                self._check_schema()
            else:
                self._init_schema()
            if self.path is not None and self._snapshot is None:
                self._identity = _file_id(self.path)
        except sa.exc.DBAPIError as exc:
            self._dispose()
            raise ReviewStoreError(f"{self.path or self.url}: cannot open the review database "
                                   f"({_first_line(exc)})") from None
        except BaseException:
            self._dispose()
            raise

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_workspace(
        cls,
        ws_dir: str | os.PathLike[str],
        url: str | os.PathLike[str] | None = None,
        reviewer: str = "local",
        **kwargs: Any,
    ) -> ReviewStore:
        """The workspace's store: ``url`` if given, else ``ws_dir/review.sqlite``."""
        return cls(url if url is not None else Path(ws_dir) / DEFAULT_DB_NAME, reviewer, **kwargs)

    @staticmethod
    def _sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
        engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s})
        busy_ms = int(busy_timeout_s * 1000)

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            # Let SQLAlchemy (below) emit BEGIN itself: pysqlite's implicit transactions
            # would start read-only ones that later fail to upgrade to a write lock.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
                mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"could not enable WAL (journal_mode={mode})")
                cur.execute("PRAGMA synchronous = FULL")
            finally:
                cur.close()

        @sa_event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("clipcleaner_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    def _sqlite_readonly_engine(self, path: Path, busy_timeout_s: float) -> Engine:
        """An engine that only reads ``path`` (see ``read_only`` in :meth:`__init__`)."""
        from urllib.parse import quote

        if not path.is_file():
            raise ReviewStoreError(f"{path}: no review database here")
        wal = Path(f"{path}-wal")

        def engine_for(uri: str) -> Engine:
            def connect() -> sqlite3.Connection:
                conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, check_same_thread=False)
                conn.isolation_level = None
                return conn

            return sa.create_engine("sqlite+pysqlite://", creator=connect, poolclass=sa.pool.QueuePool)

        attempts = [f"file:{quote(str(path))}?mode=ro"]
        if not (wal.exists() and wal.stat().st_size > 0):
            attempts.append(f"file:{quote(str(path))}?mode=ro&immutable=1")  # no log: the file holds everything
        for uri in attempts:
            engine = engine_for(uri)
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
                return engine
            except sa.exc.DBAPIError as exc:
                engine.dispose()
                if "not a database" in str(exc.orig) or "malformed" in str(exc.orig):
                    raise
        # the folder cannot be written and a -wal is there: read a private copy of the file and its log
        snap = Path(tempfile.mkdtemp(prefix="clipcleaner-review-"))
        try:
            for src in (path, wal):
                if src.exists():
                    shutil.copyfile(src, snap / src.name.replace(path.name, "review.sqlite"))
        except OSError as exc:
            shutil.rmtree(snap, ignore_errors=True)
            raise ReviewStoreError(f"{path}: cannot read the review database ({exc.strerror or exc})") from None
        self._snapshot = snap
        return engine_for(f"file:{quote(str(snap / 'review.sqlite'))}")

    def _check_schema(self) -> None:
        """Read-only open: the tables must be there and not newer than this clipcleaner."""
        def check(conn: Connection) -> None:
            have = set(sa.inspect(conn).get_table_names())
            missing = {t.name for t in metadata.sorted_tables} - have
            if missing:
                raise ReviewStoreError(f"{self.path or self.url}: not a clipcleaner review database "
                                       f"(no table {', '.join(sorted(missing))})")
            version = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar()
            if version is not None and int(version) > SCHEMA_VERSION:
                raise ReviewStoreError(f"{self.url} has review schema version {version}, newer than this "
                                       f"clipcleaner supports ({SCHEMA_VERSION}); upgrade clipcleaner")

        self._transact(check, write=False)

    def _init_schema(self) -> None:
        def create(conn: Connection) -> None:
            if self.backend == "postgresql":  # concurrent CREATE TABLE IF NOT EXISTS can race
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7161339285441019)"))
            metadata.create_all(conn, checkfirst=True)
            version = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            ).scalar()
            if version is None:
                conn.execute(meta_table.insert().values(key="schema_version",
                                                        value=str(SCHEMA_VERSION)))
            elif int(version) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.url} has review schema version {version}, newer than this "
                    f"clipcleaner supports ({SCHEMA_VERSION}); upgrade clipcleaner"
                )

        self._transact(create, write=True, lock_events=False)

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self._url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Close all pooled connections. Idempotent."""
        if not self._closed:
            self._closed = True
            self._dispose()

    def _dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._snapshot is not None:
            shutil.rmtree(self._snapshot, ignore_errors=True)
            self._snapshot = None

    # ------------------------------------------------------------------ file identity (SQLite)
    def _check_file(self) -> None:
        """Raise :class:`ReviewStoreLostError` when the SQLite file at ``self.path`` is no longer the one this store
        opened, or when a connection of this process holds a ``-wal`` / ``-shm`` that was removed or replaced.
        Called before and after every transaction; once it fails, it fails for good."""
        if self._lost is None and self._identity is not None and self.path is not None:
            why = _lost_reason(self.path, self._identity)
            if why is not None:
                self._lost = (f"{self.path}: the review database {why} while clipcleaner had it open; the last "
                              f"action was NOT saved and nothing more will be. Put the file back or restart "
                              f"(clipcleaner opens the file now at that path)")
        if self._lost is not None:
            raise ReviewStoreLostError(self._lost)

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReviewStore({self.url!r}, reviewer={self.reviewer!r})"

    # ------------------------------------------------------------------ transactions
    def _is_retryable(self, exc: BaseException) -> bool:
        orig = getattr(exc, "orig", None) or exc
        if self.backend == "sqlite":
            msg = str(orig).lower()
            return isinstance(orig, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg)
        return getattr(orig, "sqlstate", None) in _PG_RETRY_SQLSTATES

    def _transact(
        self, fn: Callable[[Connection], T], *, write: bool, lock_events: bool = True
    ) -> T:
        """Run ``fn(conn)`` in one transaction (committed on return), retrying while locked."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if write and self.read_only:
            raise ReviewStoreError(f"{self.path or self.url}: opened read-only; nothing can be written")
        self._check_file()  # before: never write into a file nobody else reads
        deadline = time.monotonic() + self.lock_retry_s
        delay = 0.02
        while True:
            try:
                with self._engine.connect() as conn:
                    if write:
                        conn.execution_options(clipcleaner_write=True)
                    with conn.begin():
                        if write and lock_events and self.backend == "postgresql":
                            # serialise writers: event ids then follow commit order
                            conn.exec_driver_sql("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
                        result = fn(conn)
                self._check_file()  # after the commit: it landed in the file everybody reads, or it is not acked
                return result
            except (sa.exc.DBAPIError, sqlite3.OperationalError) as exc:
                if not self._is_retryable(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise ReviewStoreBusyError(
                        f"{self.url} stayed locked by other writers for {self.lock_retry_s:.0f} s"
                    ) from exc
                log.info("review store busy (%s); retrying", getattr(exc, "orig", exc))
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.5)

    # ------------------------------------------------------------------ internal helpers
    def _states(self, conn: Connection, sample_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """Current (action, label) of the given samples (absent = undecided)."""
        d = decisions_table.c
        out: dict[str, tuple[str, str | None]] = {}
        for chunk in _chunks(sample_ids):
            for sid, action, label in conn.execute(
                sa.select(d.sample_id, d.action, d.label).where(d.sample_id.in_(chunk))
            ):
                out[sid] = (action, label)
        return out

    def _derived(self, conn: Connection, sample_ids: Sequence[str] | None) -> dict[str, dict[str, Any]]:
        """Decision rows implied by ``events`` (latest non-undone action; 'clear' = no row)."""
        e = events_table.c
        out: dict[str, dict[str, Any]] = {}
        chunks: Iterable[Sequence[str] | None] = [None] if sample_ids is None else _chunks(sample_ids)
        for chunk in chunks:
            latest = sa.select(e.sample_id, sa.func.max(e.id).label("mid")).where(
                e.kind == "action", e.undone == sa.false()
            )
            if chunk is not None:
                latest = latest.where(e.sample_id.in_(chunk))
            sub = latest.group_by(e.sample_id).subquery()
            q = sa.select(e.id, e.sample_id, e.action, e.label, e.reviewer, e.created_at).join(
                sub, e.id == sub.c.mid
            )
            for eid, sid, action, label, reviewer, created_at in conn.execute(q):
                if action != "clear":
                    out[sid] = dict(sample_id=sid, action=action, label=label, reviewer=reviewer,
                                    updated_at=created_at, event_id=eid)
        return out

    def _upsert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.backend == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(decisions_table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[decisions_table.c.sample_id],
            set_={c: stmt.excluded[c] for c in ("action", "label", "reviewer", "updated_at",
                                                 "event_id")},
        )
        conn.execute(stmt, rows)

    def _delete(self, conn: Connection, sample_ids: Sequence[str]) -> None:
        for chunk in _chunks(sample_ids):
            conn.execute(decisions_table.delete().where(decisions_table.c.sample_id.in_(chunk)))

    def _sync_decisions(self, conn: Connection, sample_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Make ``decisions`` rows of ``sample_ids`` equal to what ``events`` implies."""
        derived = self._derived(conn, sample_ids)
        self._upsert(conn, [derived[s] for s in sample_ids if s in derived])
        self._delete(conn, [s for s in sample_ids if s not in derived])
        return derived

    def _insert_events(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        if len(rows) == 1:
            return [int(conn.execute(events_table.insert(), rows[0]).inserted_primary_key[0])]
        stmt = events_table.insert().returning(events_table.c.id, sort_by_parameter_order=True)
        return [int(i) for i in conn.execute(stmt, rows).scalars().all()]

    def _latest(self, conn: Connection, sample_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The newest event (action or undo) of each sample that has one."""
        e = events_table.c
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(sample_ids):
            sub = (sa.select(sa.func.max(e.id).label("mid")).where(e.sample_id.in_(chunk))
                   .group_by(e.sample_id).subquery())
            q = sa.select(e.id, e.group_id, e.kind, e.sample_id, e.action, e.label, e.reviewer,
                          e.created_at).join(sub, e.id == sub.c.mid)
            for r in conn.execute(q).mappings():
                out[r["sample_id"]] = dict(r)
        return out

    def _check_seen(self, conn: Connection, seen: Mapping[str, int]) -> None:
        """Raise :class:`ReviewConflictError` when a sample in ``seen`` has an event newer than the one seen."""
        latest = self._latest(conn, list(seen))
        conflicts = [
            ReviewConflict(sample_id=sid, seen=int(seen[sid] or 0), event_id=int(ev["id"]),
                           group_id=int(ev["group_id"]), kind=ev["kind"], action=ev["action"], label=ev["label"],
                           reviewer=ev["reviewer"], created_at=ev["created_at"])
            for sid, ev in latest.items() if int(ev["id"]) > int(seen[sid] or 0)
        ]
        if conflicts:
            raise ReviewConflictError(conflicts)

    def _apply(self, conn: Connection, items: list[_Item], reviewer: str,
               seen: Mapping[str, int] | None = None) -> tuple[int, list[int]]:
        e = events_table.c
        if seen:
            self._check_seen(conn, seen)  # in the write transaction: nobody can slip in between
        group_id = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(e.group_id), 0)))
                       .scalar_one()) + 1
        now = _utcnow()
        state: dict[str, tuple[str, str | None] | None] = dict(
            self._states(conn, _unique(it.sample_id for it in items))
        )
        rows = []
        for it in items:
            prev = state.get(it.sample_id)
            rows.append(dict(
                group_id=group_id, kind="action", sample_id=it.sample_id, action=it.action,
                label=it.label, given_label=it.given_label,
                prev_action=prev[0] if prev else None, prev_label=prev[1] if prev else None,
                reviewer=reviewer, created_at=now, undone=False, note=it.note,
            ))
            state[it.sample_id] = None if it.action == "clear" else (it.action, it.label)
        ids = self._insert_events(conn, rows)
        final: dict[str, tuple[_Item, int]] = {}
        for it, eid in zip(items, ids):
            final.pop(it.sample_id, None)  # keep last occurrence, in order
            final[it.sample_id] = (it, eid)
        self._upsert(conn, [
            dict(sample_id=sid, action=it.action, label=it.label, reviewer=reviewer,
                 updated_at=now, event_id=eid)
            for sid, (it, eid) in final.items() if it.action != "clear"
        ])
        self._delete(conn, [sid for sid, (it, _) in final.items() if it.action == "clear"])
        return group_id, ids

    def _reviewer(self, reviewer: str | None) -> str:
        r = self.reviewer if reviewer is None else reviewer
        if not isinstance(r, str) or not r:
            raise ValueError(f"reviewer must be a non-empty string, got {r!r}")
        return r

    # ------------------------------------------------------------------ writes
    def record(
        self,
        sample_id: str,
        action: str,
        label: str | None = None,
        *,
        given_label: str | None = None,
        note: str | None = None,
        reviewer: str | None = None,
        seen: int | None = None,
    ) -> int:
        """Record one decision; committed durably before returning.

        Args:
            sample_id: the sample's stable id.
            action: ``accept`` | ``relabel`` | ``exclude`` | ``unsure`` | ``clear``.
            label: the new label; required for (and only allowed with) ``relabel``.
                Taking the model's suggestion is ``relabel`` to the suggested label.
            given_label: the dataset's label at decision time (kept in the history).
            note: free-text comment (kept in the history).
            reviewer: overrides the store's default reviewer.
            seen: compare-and-set: the id of the sample's newest event when the decision was shown to the
                reviewer (:meth:`snapshot` ``event_id``; 0 = it had none). When the sample has a newer event
                (somebody decided or undid it since), nothing is written and :class:`ReviewConflictError` says
                who changed it. ``None``: no check (last writer wins).

        Returns:
            The id of the new ``events`` row (its own undo group; use :meth:`record_many` with one item to get
            the group id for ``undo(group_id=...)``).

        Raises:
            ValueError: unknown action, missing/extra label, empty sample id or reviewer.
            ReviewConflictError: ``seen`` is older than the sample's newest event.
        """
        item = _validate(sample_id, action, label, given_label, note, self.classes)
        who = self._reviewer(reviewer)
        check = None if seen is None else {item.sample_id: int(seen)}
        _, ids = self._transact(lambda conn: self._apply(conn, [item], who, check), write=True)
        return ids[0]

    def record_many(
        self,
        items: Sequence[Mapping[str, Any] | Sequence[Any] | str],
        action: str | None = None,
        label: str | None = None,
        *,
        given_label: str | None = None,
        note: str | None = None,
        reviewer: str | None = None,
        seen: Mapping[str, int] | None = None,
    ) -> int:
        """Record a bulk action: one transaction, one undo group.

        Each item is a dict (keys ``sample_id``, ``action``, ``label``, ``given_label``,
        ``note``), a tuple ``(sample_id, action[, label[, given_label[, note]]])`` or a bare
        sample id; missing fields fall back to the keyword arguments, e.g.
        ``record_many(ids, "exclude")``. Items are applied in order (a sample listed twice ends
        in its last state). Nothing is written if any item is invalid.

        ``seen`` maps sample ids to the newest event id the reviewer's view showed (compare-and-set, see
        :meth:`record`): if any of them changed since, nothing is written (:class:`ReviewConflictError` lists
        every changed sample). Samples not in ``seen`` are not checked.

        Returns:
            The group id (pass it to :meth:`undo` as ``group_id`` to revert exactly this group).
        """
        if isinstance(items, (str, bytes)) or isinstance(items, Mapping):
            raise TypeError("items must be a list of dicts, tuples or sample ids")
        fields = ("sample_id", "action", "label", "given_label", "note")
        defaults = dict(action=action, label=label, given_label=given_label, note=note)
        parsed: list[_Item] = []
        for n, raw in enumerate(items):
            if isinstance(raw, str):
                values: dict[str, Any] = {"sample_id": raw}
            elif isinstance(raw, Mapping):
                unknown = set(raw) - set(fields)
                if unknown:
                    raise ValueError(f"item {n}: unknown keys {sorted(unknown)}; allowed {fields}")
                values = dict(raw)
            elif isinstance(raw, Sequence) and not isinstance(raw, bytes):
                if not 1 <= len(raw) <= len(fields):
                    raise ValueError(f"item {n}: expected (sample_id, action[, label[, "
                                     f"given_label[, note]]]), got {raw!r}")
                values = dict(zip(fields, raw))
            else:
                raise ValueError(f"item {n}: expected dict, tuple or sample id, got {raw!r}")
            merged = {**defaults, **{k: v for k, v in values.items() if k != "sample_id"}}
            if "label" not in values and merged["action"] != "relabel":
                merged["label"] = None  # a default relabel label must not leak into other actions
            try:
                parsed.append(_validate(values.get("sample_id"), merged["action"], merged["label"],
                                        merged["given_label"], merged["note"], self.classes))
            except ValueError as exc:
                raise ValueError(f"item {n}: {exc}") from None
        if not parsed:
            raise ValueError("record_many needs at least one item")
        who = self._reviewer(reviewer)
        check = None if seen is None else {str(k): int(v or 0) for k, v in seen.items()}
        group_id, _ = self._transact(lambda conn: self._apply(conn, parsed, who, check), write=True)
        return group_id

    def undo(self, reviewer: str | None = None, *, group_id: int | None = None) -> list[str] | None:
        """Revert the most recent not-yet-undone action group (of ``reviewer`` if given), or exactly the group
        ``group_id`` (what :meth:`record` / :meth:`record_many` returned: a per-tab undo stack uses this, so
        that one browser tab never undoes another's action, even under the same reviewer name).

        Each affected sample gets the state implied by its remaining (not undone) history —
        its state before the group, unless another reviewer has decided it since, in which
        case that later decision stays. The group's events are marked ``undone`` and one
        ``kind='undo'`` event per sample (reviewer: ``reviewer`` or the store's default) is
        appended. Calling it again walks further back.

        Returns:
            The affected sample ids, or ``None`` when there is nothing to undo (with ``group_id``: that group
            does not exist or was undone already).
        """
        who = self._reviewer(reviewer)
        e = events_table.c
        wanted = group_id

        def fn(conn: Connection) -> list[str] | None:
            q = sa.select(e.group_id).where(e.kind == "action", e.undone == sa.false())
            if wanted is not None:
                q = q.where(e.group_id == int(wanted))
            elif reviewer is not None:
                q = q.where(e.reviewer == reviewer)
            group_id = conn.execute(q.order_by(e.group_id.desc()).limit(1)).scalar()
            if group_id is None:
                return None
            sids = _unique(conn.execute(
                sa.select(e.sample_id).where(e.group_id == group_id, e.kind == "action")
                .order_by(e.id)
            ).scalars())
            before = self._states(conn, sids)
            conn.execute(events_table.update()
                         .where(e.group_id == group_id, e.kind == "action")
                         .values(undone=True))
            after = self._sync_decisions(conn, sids)
            now = _utcnow()
            self._insert_events(conn, [
                dict(group_id=group_id, kind="undo", sample_id=sid,
                     action=after[sid]["action"] if sid in after else None,
                     label=after[sid]["label"] if sid in after else None,
                     given_label=None,
                     prev_action=before[sid][0] if sid in before else None,
                     prev_label=before[sid][1] if sid in before else None,
                     reviewer=who, created_at=now, undone=False, note=None)
                for sid in sids
            ])
            return sids

        return self._transact(fn, write=True)

    def rebuild_decisions(self) -> int:
        """Recompute the whole ``decisions`` table from ``events`` (repair tool).

        Returns the number of rows that changed (inserted, updated or deleted).
        """
        def fn(conn: Connection) -> int:
            derived = self._derived(conn, None)
            have = {r["sample_id"]: dict(r) for r in
                    conn.execute(sa.select(decisions_table)).mappings()}
            changed = [row for sid, row in derived.items() if have.get(sid) != row]
            gone = [sid for sid in have if sid not in derived]
            self._upsert(conn, changed)
            self._delete(conn, gone)
            return len(changed) + len(gone)

        return self._transact(fn, write=True)

    # ------------------------------------------------------------------ reads
    def _read(self, fn: Callable[[Connection], T]) -> T:
        return self._transact(fn, write=False)

    def current(self) -> pd.DataFrame:
        """Current decisions, one row per decided sample, sorted by ``sample_id``.

        Columns: sample_id, action, label (NULL unless relabel), reviewer, updated_at.
        """
        import pandas as pd

        d = decisions_table.c
        rows = self._read(lambda conn: [tuple(r) for r in conn.execute(
            sa.select(*(d[c] for c in CURRENT_COLUMNS)).order_by(d.sample_id))])
        return pd.DataFrame(rows, columns=CURRENT_COLUMNS)

    def get(self, sample_id: str) -> dict[str, Any] | None:
        """The current decision of one sample (CURRENT_COLUMNS + event_id), or None."""
        d = decisions_table.c
        row = self._read(lambda conn: conn.execute(
            sa.select(decisions_table).where(d.sample_id == sample_id)).mappings().first())
        return dict(row) if row is not None else None

    def snapshot(self, sample_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """What a view of ``sample_ids`` shows, read in one transaction: per sample its current decision
        (``action`` — None when undecided —, ``label``, ``reviewer``, ``updated_at``) and its newest event
        (``event_id`` — 0 when it has none: pass it as ``seen=`` to :meth:`record` —, ``event_reviewer``,
        ``event_kind``, ``event_at``). Every requested sample has an entry; cheap for a page of samples."""
        sids = _unique(str(s) for s in sample_ids)
        d = decisions_table.c

        def fn(conn: Connection) -> dict[str, dict[str, Any]]:
            cur: dict[str, Any] = {}
            for chunk in _chunks(sids):
                for r in conn.execute(sa.select(d.sample_id, d.action, d.label, d.reviewer, d.updated_at)
                                      .where(d.sample_id.in_(chunk))).mappings():
                    cur[r["sample_id"]] = r
            latest = self._latest(conn, sids)
            out = {}
            for sid in sids:
                c, ev = cur.get(sid), latest.get(sid)
                out[sid] = {"action": c["action"] if c else None, "label": c["label"] if c else None,
                            "reviewer": c["reviewer"] if c else None, "updated_at": c["updated_at"] if c else None,
                            "event_id": int(ev["id"]) if ev else 0, "event_reviewer": ev["reviewer"] if ev else None,
                            "event_kind": ev["kind"] if ev else None, "event_at": ev["created_at"] if ev else None}
            return out

        return self._read(fn)

    def history(self, sample_id: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Audit trail (who did what, when), newest first.

        Args:
            sample_id: only this sample's events.
            limit: at most this many (the most recent) events.

        Columns: HISTORY_COLUMNS (``kind`` is 'action' or 'undo'; ``undone`` marks actions
        reverted by a later undo).
        """
        import pandas as pd

        e = events_table.c
        q = sa.select(*(e[c] for c in HISTORY_COLUMNS)).order_by(e.id.desc())
        if sample_id is not None:
            q = q.where(e.sample_id == sample_id)
        if limit is not None:
            q = q.limit(int(limit))
        rows = self._read(lambda conn: [tuple(r) for r in conn.execute(q)])
        df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
        df["undone"] = df["undone"].astype(bool)
        return df

    def counts(self) -> dict[str, int]:
        """Number of samples currently in each decided state (all DECIDED_ACTIONS present)."""
        d = decisions_table.c
        rows = self._read(lambda conn: conn.execute(
            sa.select(d.action, sa.func.count()).group_by(d.action)).all())
        out = {a: 0 for a in DECIDED_ACTIONS}
        out.update({a: int(n) for a, n in rows})
        return out

    def version(self) -> tuple[int, int]:
        """(highest event id, number of events): changes with every write, undo included. A cheap stamp for
        caches of :meth:`current` that must notice other processes' (other reviewers') writes."""
        e = events_table.c
        row = self._read(lambda conn: conn.execute(sa.select(sa.func.max(e.id), sa.func.count())).one())
        return int(row[0] or 0), int(row[1] or 0)

    def orphans(self, known_sample_ids: Iterable[str]) -> pd.DataFrame:
        """Decisions whose sample_id is not among ``known_sample_ids`` (e.g. the current scan).

        They stay in the store (a file may come back, or be renamed back); this only reports
        them. Same columns as :meth:`current`.
        """
        known = {str(s) for s in known_sample_ids}
        df = self.current()
        return df[~df["sample_id"].isin(known)].reset_index(drop=True)

    def events_since(self, after_id: int = 0) -> list[dict[str, Any]]:
        """Raw ``events`` rows with id > ``after_id``, oldest first (for export / sync)."""
        e = events_table.c
        return self._read(lambda conn: [dict(r) for r in conn.execute(
            sa.select(events_table).where(e.id > after_id).order_by(e.id)).mappings()])

    # ------------------------------------------------------------------ merge (copy / import)
    def merge_events(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Import ``events`` rows (with their ids) from another store; idempotent.

        Rows whose id already exists must be the same event (else ``ValueError``: the two
        histories diverged and nothing is written); an ``undone`` flag set in ``rows`` is
        carried over. ``decisions`` of the touched samples are then recomputed from the
        merged history. Returns the number of events inserted.
        """
        cols = [c.name for c in events_table.columns]
        incoming = sorted((dict(r) for r in rows), key=lambda r: int(r["id"]))
        for r in incoming:
            missing = [c for c in cols if c not in r]
            if missing:
                raise ValueError(f"event {r.get('id')!r} lacks fields {missing}")
        e = events_table.c

        def fn(conn: Connection) -> int:
            existing: dict[int, dict[str, Any]] = {}
            ids = [int(r["id"]) for r in incoming]
            for chunk in _chunks(ids):
                for r in conn.execute(sa.select(events_table).where(e.id.in_(chunk))).mappings():
                    existing[int(r["id"])] = dict(r)
            new, newly_undone, touched = [], [], []
            for r in incoming:
                have = existing.get(int(r["id"]))
                row = {c: r[c] for c in cols}
                row["id"], row["group_id"] = int(row["id"]), int(row["group_id"])
                row["undone"] = bool(row["undone"])
                if have is None:
                    new.append(row)
                    touched.append(row["sample_id"])
                    continue
                diff = [f for f in _IDENTITY_FIELDS if have[f] != row[f]]
                if diff:
                    raise ValueError(
                        f"event id {row['id']} differs between source and destination "
                        f"({', '.join(diff)}): the histories have diverged; refusing to merge"
                    )
                if row["undone"] and not have["undone"]:
                    newly_undone.append(row["id"])
                    touched.append(row["sample_id"])
            for chunk in _chunks(new, 200):
                conn.execute(events_table.insert(), list(chunk))
            for chunk in _chunks(newly_undone):
                conn.execute(events_table.update().where(e.id.in_(chunk)).values(undone=True))
            if new and self.backend == "postgresql":
                conn.execute(sa.text(
                    "SELECT setval(pg_get_serial_sequence('events', 'id'), "
                    "(SELECT MAX(id) FROM events))"))
            self._sync_decisions(conn, _unique(touched))
            return len(new)

        return self._transact(fn, write=True)


# ---------------------------------------------------------------------- module functions
def copy_decisions(src: ReviewStore, dst: ReviewStore) -> int:
    """Copy the decision history (and so the current decisions) of ``src`` into ``dst``.

    Works between any two backends (SQLite → PostgreSQL and back). Idempotent and
    incremental: events already in ``dst`` are skipped, new ones keep their ids, undo marks
    are carried over; ``dst``'s own newer events are kept. Raises ``ValueError`` (writing
    nothing) if the two histories diverged (same event id, different event).
    Returns the number of events copied.
    """
    return dst.merge_events(src.events_since(0))


def dump_json(store: ReviewStore, path: str | os.PathLike[str]) -> int:
    """Write the store's full history + current decisions to a JSON file (atomically).

    Returns the number of events written. Re-import with :func:`load_json`.
    """
    events = store.events_since(0)
    current = store.current()
    doc = {
        "format": _JSON_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "exported_at": _utcnow(),
        "events": events,
        "decisions": [
            {k: (None if v != v else v) for k, v in rec.items()}  # NaN → null
            for rec in current.astype(object).to_dict("records")
        ],
    }
    from .workspace import atomic_write_text

    atomic_write_text(Path(path), json.dumps(doc, ensure_ascii=False, indent=1))
    return len(events)


def load_json(path: str | os.PathLike[str], store: ReviewStore) -> int:
    """Merge a :func:`dump_json` file into ``store`` (see :meth:`ReviewStore.merge_events`).

    Returns the number of events inserted.
    """
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != _JSON_FORMAT:
        raise ValueError(f"{path} is not a clipcleaner review dump")
    if int(doc.get("schema_version", 0)) > SCHEMA_VERSION:
        raise ValueError(f"{path} was written by a newer clipcleaner (schema "
                         f"{doc['schema_version']})")
    return store.merge_events(doc["events"])


# ---------------------------------------------------------------------- workspace setting (shared review DB)
DB_URL_ENV = "CLIPCLEANER_DB_URL"
"""Environment variable naming the review database of every workspace opened by this process."""
REVIEWER_ENV = "CLIPCLEANER_REVIEWER"
"""Environment variable with the default reviewer name."""
WORKSPACE_DB_KEY = "review_db"
"""Key of the review-database URL in ``WS/review.json`` (the workspace's user settings, kept by re-scans)."""


def resolve_store_url(
    workspace: str | os.PathLike[str], url: str | os.PathLike[str] | None = None
) -> tuple[str | None, str]:
    """Which review database a workspace uses, and why: ``(url, source)``.

    In order: ``url`` given here (source ``"argument"``), ``$CLIPCLEANER_DB_URL`` (``"env"``), the
    ``review_db`` entry of ``WS/review.json`` (``"review.json"``), else ``(None, "default")``
    meaning the workspace's own ``WS/review.sqlite``. A relative SQLite path in review.json is
    relative to the workspace folder.
    """
    if url is not None and str(url) != "":
        return str(url), "argument"
    env = os.environ.get(DB_URL_ENV, "").strip()
    if env:
        return env, "env"
    from .workspace import Workspace, WorkspaceError

    ws_dir = Path(workspace)
    try:
        entry = Workspace(ws_dir).user_settings().get(WORKSPACE_DB_KEY)
    except WorkspaceError as exc:
        raise ValueError(str(exc)) from None
    if entry:
        entry = str(entry)
        if "://" not in entry and not Path(entry).expanduser().is_absolute():
            entry = str(ws_dir / entry)
        return entry, "review.json"
    return None, "default"


def default_reviewer(login: bool = False) -> str:
    """The reviewer name when nobody gave one: ``$CLIPCLEANER_REVIEWER`` if set, else (``login``: the CLI) the
    login name, else ``"local"``. The one rule for the CLI, the API and the app (which asks each person)."""
    name = os.environ.get(REVIEWER_ENV, "").strip()
    if not name and login:
        import getpass

        try:
            name = getpass.getuser().strip()
        except (KeyError, OSError):
            name = ""
    return name or "local"


def workspace_classes(workspace: str | os.PathLike[str]) -> list[str] | None:
    """The classes of a scanned workspace (from its manifest), or None when it has none yet."""
    from .workspace import Workspace, WorkspaceError

    try:
        return Workspace(workspace).classes()
    except WorkspaceError:
        return None


def open_store(
    workspace: str | os.PathLike[str],
    url: str | os.PathLike[str] | None = None,
    reviewer: str | None = None,
    **kwargs: Any,
) -> ReviewStore:
    """The review store of ``workspace``, on the database chosen by :func:`resolve_store_url`.

    This is what the app, the CLI and scripts should call so that everybody working on a workspace
    reads and writes the same (possibly shared PostgreSQL) database. ``reviewer`` defaults to
    :func:`default_reviewer`. A relabel is checked against the workspace's classes (unless ``classes=`` is
    given). Extra keyword arguments go to :class:`ReviewStore` (e.g. ``read_only=True``).
    """
    resolved, _ = resolve_store_url(workspace, url)
    kwargs.setdefault("classes", workspace_classes(workspace))
    return ReviewStore.for_workspace(workspace, url=resolved, reviewer=reviewer or default_reviewer(),
                                     **kwargs)


def set_review_db(workspace: str | os.PathLike[str], url: str | None) -> str | None:
    """Record (or with ``None`` remove) the workspace's shared review database in ``WS/review.json``.

    The URL is validated and the database opened once (creating the tables), so a wrong URL fails
    here and not in the app. Returns the URL as stored. A password in the URL is stored as given:
    prefer ``~/.pgpass`` or ``$PGPASSWORD`` (read by the PostgreSQL driver) and a URL without it.
    """
    from .workspace import Workspace

    ws = Workspace(workspace)
    if url is not None:
        url = str(url)
        local = "://" not in url and not Path(url).expanduser().is_absolute()
        ReviewStore(ws.path / url if local else url).close()
    ws.set_user_setting(WORKSPACE_DB_KEY, url)
    return url
