"""Fixtures: the same store contract runs against a real Redis and a real PostgreSQL.

DKN_TEST_REDIS_URI and DKN_TEST_DB_URI name the servers (scripts/run-tests sets them). A test
that needs a server it cannot reach fails; it never skips.
"""

from __future__ import annotations

import uuid

import psycopg2
import pytest
import redis
from servers import DB_URI, DRIVERS, REDIS_URI, Backend, make_config

from dkn_auth.store import open_store


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
