"""PostgreSQL test helpers shared by the review-store test modules (the server comes from `.ci/postgres.sh`)."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

PG_ENV = "CLIPCLEANER_TEST_PG_URL"
PG_SKIP_REASON = (
    f"PostgreSQL tests need ${PG_ENV} (e.g. `bash .ci/postgres.sh && . .ci/pg.env`); "
    "it is not set"
)


@contextmanager
def pg_schema_url(prefix: str = "cc_test") -> Iterator[str]:
    """A URL pointing at a fresh, private schema on the test server (dropped afterwards); skips without a server."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP_REASON)
    url = make_url(base)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()
