"""Fixtures: the same store contract runs against a real Redis and a real PostgreSQL.

DKN_TEST_REDIS_URI and DKN_TEST_DB_URI name the servers (scripts/run-tests sets them). A test
that needs a server it cannot reach fails; it never skips.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkn_auth.store import open_store  # noqa: E402
from dkn_auth.store.config import Config  # noqa: E402
from dkn_auth.store.postgres_store import TABLE  # noqa: E402

REDIS_URI = os.environ.get("DKN_TEST_REDIS_URI", "redis://127.0.0.1:6379/15")
DB_URI = os.environ.get("DKN_TEST_DB_URI", "postgresql://postgres@127.0.0.1:5432/dkn_auth_test")
DRIVERS = ("redis", "db")


def _require(what: str, check) -> None:
    try:
        check()
    except Exception as exc:  # the whole point: say which server is missing, then fail
        pytest.fail(f"{what} is not reachable ({exc}); start it or set the DKN_TEST_* variable "
                    f"(scripts/run-tests starts throwaway servers)", pytrace=False)


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URI, socket_connect_timeout=2, socket_timeout=5)
    _require(f"Redis at {REDIS_URI}", client.ping)
    return client


@pytest.fixture(scope="session")
def db_conn():
    def connect():
        return psycopg2.connect(DB_URI, connect_timeout=2)

    holder = []
    _require(f"PostgreSQL at {DB_URI}", lambda: holder.append(connect()))
    conn = holder[0]
    conn.autocommit = True
    yield conn
    conn.close()


def make_config(driver: str, **overrides) -> Config:
    values = {"driver": driver, "prefix": f"t{uuid.uuid4().hex[:10]}:", "expiry": 3600,
              "redis_uri": REDIS_URI, "db_uri": DB_URI}
    values.update(overrides)
    return Config(**values)


class Backend:
    """Raw access to what a store wrote, for assertions: the test's view, not the store's."""

    def __init__(self, driver: str, prefix: str, redis_client, db_conn) -> None:
        self.driver, self.prefix = driver, prefix
        self.redis, self.db = redis_client, db_conn

    def dump(self) -> str:
        """Everything stored under the prefix, as text."""
        if self.driver == "redis":
            parts = []
            for key in self.redis.scan_iter(match=self.prefix + "*"):
                parts.append(key.decode())
                if self.redis.type(key) == b"hash":
                    parts += [f"{k.decode()}={v.decode()}" for k, v in self.redis.hgetall(key).items()]
                else:
                    parts += [m.decode() for m in self.redis.smembers(key)]
            return "\n".join(parts)
        with self.db.cursor() as cr:
            cr.execute(f"SELECT * FROM {TABLE} WHERE key LIKE %s", (self.prefix + "%",))
            return "\n".join(repr(row) for row in cr.fetchall())

    def count(self) -> int:
        if self.driver == "redis":
            return sum(1 for key in self.redis.scan_iter(match=self.prefix + "*")
                       if self.redis.type(key) == b"hash")
        with self.db.cursor() as cr:
            cr.execute(f"SELECT count(*) FROM {TABLE} WHERE key LIKE %s", (self.prefix + "%",))
            return cr.fetchone()[0]

    def clear(self) -> None:
        if self.driver == "redis":
            for key in self.redis.scan_iter(match=self.prefix + "*"):
                self.redis.delete(key)
        else:
            with self.db.cursor() as cr:
                cr.execute("SELECT to_regclass(%s)", (TABLE,))
                if cr.fetchone()[0]:
                    cr.execute(f"DELETE FROM {TABLE} WHERE key LIKE %s", (self.prefix + "%",))


@pytest.fixture(params=DRIVERS)
def driver(request) -> str:
    return request.param


@pytest.fixture
def server(driver, request):
    """Make sure the driver's server is up; returns the raw client."""
    return request.getfixturevalue("redis_client" if driver == "redis" else "db_conn")


@pytest.fixture
def make_store(driver, server, request):
    """A factory of stores of the current driver, sharing one fresh prefix unless told otherwise."""
    made = []
    prefix = f"t{uuid.uuid4().hex[:10]}:"

    def factory(**overrides):
        overrides.setdefault("prefix", prefix)
        store = open_store(make_config(driver, **overrides))
        made.append(store)
        return store

    yield factory
    for store in made:
        Backend(driver, store.prefix, request.getfixturevalue("redis_client") if driver == "redis" else None,
                request.getfixturevalue("db_conn") if driver == "db" else None).clear()
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()


@pytest.fixture
def backend(driver, store, request) -> Backend:
    return Backend(driver, store.prefix,
                   request.getfixturevalue("redis_client") if driver == "redis" else None,
                   request.getfixturevalue("db_conn") if driver == "db" else None)
