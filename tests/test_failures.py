"""A backend that is paused, killed, restarted, full or absent: bounded time, clear errors, no loss.

Every test starts its own Redis or PostgreSQL on a spare port and breaks it for real.
"""

from __future__ import annotations

import logging
import secrets
import time

import pytest
from servers import make_config

from dkn_auth.store import BackendUnavailable, open_store
from tools.outage import SteadyLoad, break_under_load
from tools.servers import PostgresServer, RedisServer, wait_for

TIMEOUT = 1.0  # dkn_auth_timeout of these tests
SLACK = 0.3  # scheduling on a loaded 2-core machine


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    yield server
    server.destroy()


@pytest.fixture
def breakable(driver, request):
    """(server, config) of a backend this test may break."""
    if driver == "redis":
        server = RedisServer(persistent=True).start()
        yield server, make_config("redis", redis_uri=server.uri, timeout=TIMEOUT)
        server.stop()
    else:
        server = request.getfixturevalue("postgres")
        if server.proc_state() != "running":
            server.start()
        yield server, make_config("db", db_uri=server.dsn, timeout=TIMEOUT)
        if server.proc_state() != "running":
            server.start()


def check_outage(load: SteadyLoad, back: float) -> None:
    assert load.outcomes() <= {"ok", "unavailable"}, load.outcomes()
    assert "unavailable" in load.outcomes(), "the outage was noticed"
    assert load.slowest() <= TIMEOUT + SLACK, f"a call took {load.slowest():.2f} s, bound {TIMEOUT} s"
    assert load.first_success_after(back) <= 1.0, "service is back within 1 s of the backend"
    assert load.lost() == 0, "nothing acknowledged was lost"


def test_paused_backend_costs_bounded_time_and_heals(breakable, caplog):
    server, config = breakable
    store = open_store(config)
    with caplog.at_level(logging.WARNING, logger="dkn_auth"):
        load, paused, back = break_under_load(server, store, "pause", 10)
    check_outage(load, back)
    assert load.failing_fast(paused + 3 * TIMEOUT, back - 0.6) < 0.05, "an open breaker fails in milliseconds"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "unavailable" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # one line per outage
    assert "did not answer" in errors[0].getMessage() or "Timeout" in errors[0].getMessage()
    assert any("is back" in r.getMessage() for r in caplog.records)
    for sid in load.sids:
        assert sid not in caplog.text and sid[:42] not in caplog.text
    store.close()


def test_killed_backend_restarted_later_loses_no_session(breakable):
    server, config = breakable
    store = open_store(config)
    load, _, back = break_under_load(server, store, "kill", 10)
    check_outage(load, back)
    store.close()


def test_backend_down_at_start_then_up(driver, breakable):
    server, config = breakable
    server.kill()
    store = open_store(config)  # as Odoo starts: nothing connects yet
    sid = secrets.token_urlsafe(63)
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        store.load(sid)
    assert time.monotonic() - start <= TIMEOUT + SLACK
    assert ("Redis" if driver == "redis" else "PostgreSQL") in str(info.value)
    server.start()
    up = time.monotonic()
    wait_for(lambda: store.load(sid) is None or True, timeout=5, what="the store works again")
    assert time.monotonic() - up <= 1.5
    store.save(sid, {"a": 1}, None)
    assert store.load(sid).data == {"a": 1}
    store.close()


def test_full_redis_refuses_writes_clearly_and_keeps_serving_reads():
    server = RedisServer("--maxmemory-policy", "noeviction").start()
    try:
        store = open_store(make_config("redis", redis_uri=server.uri, timeout=TIMEOUT))
        sid = secrets.token_urlsafe(63)
        store.save(sid, {"uid": 2}, None)
        import redis

        filler = redis.Redis(port=server.port)
        for i in range(300):
            filler.set(f"filler:{i}", "x" * 10_000)
        filler.config_set("maxmemory", "1mb")  # well below what is used: every write is refused
        with pytest.raises(BackendUnavailable, match="full"):
            store.save(secrets.token_urlsafe(63), {"uid": 3}, None)  # a new session
        loaded = store.load(sid)
        assert loaded.data == {"uid": 2}  # reads still work
        with pytest.raises(BackendUnavailable, match="full"):
            store.save(sid, {"uid": 2, "debug": "1"}, loaded)  # a change
        filler.config_set("maxmemory", "0")
        store.save(sid, {"uid": 2, "debug": "1"}, loaded)  # room again: writes work at once
        assert store.load(sid).data == {"uid": 2, "debug": "1"}
        store.close()
    finally:
        server.stop()


def test_postgres_restart_is_invisible_between_calls(postgres):
    store = open_store(make_config("db", db_uri=postgres.dsn, timeout=TIMEOUT))
    sid = secrets.token_urlsafe(63)
    store.save(sid, {"a": 1}, None)  # a pooled connection now exists
    postgres.stop("fast")
    postgres.start()
    assert store.load(sid).data == {"a": 1}  # the dead pooled connection is replaced on the way
    store.close()
