"""PostgreSQL as operators run it: libpq multi-host URIs that follow the writable server."""

from __future__ import annotations

import secrets

import psycopg2
import pytest
from servers import make_config

from dkn_auth.store import open_store
from tools.servers import PostgresServer, free_port


def set_read_only(server: PostgresServer, read_only: bool) -> None:
    """Make a server refuse writes, as a standby does, or accept them, as a promoted one."""
    conn = psycopg2.connect(server.dsn)
    conn.autocommit = True
    with conn.cursor() as cr:
        cr.execute(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if read_only else 'off'}")
        cr.execute("SELECT pg_reload_conf()")
        if read_only:  # sessions opened before the reload keep writing: end them, as a failover does
            cr.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE application_name = 'dkn_auth'")
    conn.close()


@pytest.fixture
def pair():
    servers = [PostgresServer().start(), PostgresServer().start()]
    yield servers
    for server in servers:
        server.destroy()


def test_multi_host_uri_follows_the_writable_server(pair):
    first, second = pair
    set_read_only(first, True)
    uri = (f"postgresql://postgres@127.0.0.1:{free_port()},127.0.0.1:{first.port},127.0.0.1:{second.port}"
           "/postgres?target_session_attrs=read-write")
    store = open_store(make_config("db", db_uri=uri, timeout=2.0))
    sid = secrets.token_urlsafe(63)
    store.save(sid, {"uid": 2}, None)  # a dead host and a read-only one are skipped
    assert store.load(sid).data == {"uid": 2}

    # Failover: the first server becomes the writable one. Sessions written before live on the
    # old primary only (these two servers do not replicate); new ones go to the new primary.
    set_read_only(second, True)
    set_read_only(first, False)
    other = secrets.token_urlsafe(63)
    store.save(other, {"uid": 3}, None)  # reconnects within the time bound, to the new primary
    conn = psycopg2.connect(first.dsn)
    with conn.cursor() as cr:
        cr.execute("SELECT count(*) FROM dkn_auth_session WHERE key = %s", (store.keys(other).session,))
        assert cr.fetchone()[0] == 1
    conn.close()
    store.close()
