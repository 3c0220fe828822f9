"""The hot path, counted on the wire: loading a session is one round trip, saving it one more."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit, urlunsplit

import pytest
from proxy import CountingProxy
from servers import DB_URI, REDIS_URI, make_config

from dkn_auth.store import open_store


def through(uri: str, port: int) -> str:
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.fixture
def counted(driver, server):
    uri = REDIS_URI if driver == "redis" else DB_URI
    parts = urlsplit(uri)
    proxy = CountingProxy(parts.hostname, parts.port)
    config = make_config(driver, redis_uri=through(REDIS_URI, proxy.port), db_uri=through(DB_URI, proxy.port))
    store = open_store(config)
    yield store, proxy
    store.close()
    proxy.close()


def test_load_is_one_round_trip_and_a_save_one_more(counted):
    store, proxy = counted
    warm = secrets.token_urlsafe(63)
    store.save(warm, {"x": 1}, None)  # connects, creates the table, loads scripts/prepares
    store.load(warm)

    sid = secrets.token_urlsafe(63)
    proxy.reset()
    assert store.load(sid) is None
    assert proxy.round_trips == 1, "loading an unknown session"

    proxy.reset()
    store.save(sid, {"uid": 2, "context": {"lang": "en_US"}}, None)
    assert proxy.round_trips == 1, "creating a session"

    for _ in range(3):
        proxy.reset()
        loaded = store.load(sid)
        assert proxy.round_trips == 1, "loading a session, sliding expiry included"

    proxy.reset()
    store.save(sid, {**loaded.data, "debug": "1"}, loaded)
    assert proxy.round_trips == 1, "saving a changed session"

    proxy.reset()
    store.load(sid)
    store.load(sid)
    assert proxy.round_trips == 2, "the proxy counts every round trip"
    store.delete(sid)
    store.delete(warm)
