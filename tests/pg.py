"""The PostgreSQL that tests use: one schema per test, dropped afterwards."""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from timeline.config import Settings

POSTGRES_URL = os.environ.get("TIMELINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@functools.lru_cache(maxsize=1)
def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means: not available here
        return f"no PostgreSQL answers at {POSTGRES_URL} ({exc.__class__.__name__}: {exc})".strip()
    return None


def need_postgres() -> None:
    """Skip with the reason, or fail where CI promised a PostgreSQL (TIMELINE_REQUIRE_POSTGRES=1)."""
    problem = postgres_problem()
    if problem is None:
        return
    if os.environ.get("TIMELINE_REQUIRE_POSTGRES") == "1":
        pytest.fail(problem)
    pytest.skip(problem)


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def postgres_settings(home: Path) -> Iterator[Settings]:
    need_postgres()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        yield Settings(home=home, database_url=f"{POSTGRES_URL}?schema={schema}")
    finally:
        drop_schema(schema)
