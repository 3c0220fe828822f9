"""Two real Odoo nodes while their session backend is paused, killed, or down at start-up."""

from __future__ import annotations

import time

import pytest
import requests
from cluster import ODOO_SRC, Cluster

from tools.servers import PostgresServer, RedisServer

TIMEOUT = 1.0


@pytest.fixture
def breakable(driver, settings):
    """A backend of the test's own, and the cluster settings that point at it."""
    if driver == "redis":
        server = RedisServer(persistent=True).start()
        yield server, {**settings, "redis_uri": server.uri, "timeout": str(TIMEOUT)}
        server.stop()
    else:
        server = PostgresServer().start()
        yield server, {**settings, "db_uri": server.dsn, "timeout": str(TIMEOUT)}
        server.destroy()


def session_info(node, sid: str) -> requests.Response:
    return requests.post(f"{node.url}/web/session/get_session_info", cookies={"session_id": sid},
                         json={"jsonrpc": "2.0", "method": "call", "params": {}}, timeout=30)


def check_outage_answers(node, sid: str) -> None:
    start = time.monotonic()
    response = session_info(node, sid)
    assert time.monotonic() - start < TIMEOUT + 1.0, "a request waits no longer than the bound"
    assert response.status_code == 503, response.text[:300]
    assert response.headers.get("Retry-After") == "1"
    assert "session_id" not in response.cookies, "no new session is issued during an outage"
    static = requests.get(f"{node.url}/web/static/img/favicon.ico", cookies={"session_id": sid}, timeout=30)
    assert static.status_code == 200, "static files need no session"
    assert requests.get(f"{node.url}/web/health", timeout=30).status_code == 200


def back_logged_in(node, sid: str) -> float:
    """Seconds until the node serves the session again."""
    start = time.monotonic()
    while time.monotonic() - start < 10:
        response = session_info(node, sid)
        if response.status_code == 200 and response.json().get("result", {}).get("uid") == 2:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError("the node did not serve the session again")


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "workers2"])
def test_outage_gives_503_then_everyone_is_still_logged_in(breakable, workers):
    server, settings = breakable
    with Cluster(ODOO_SRC, settings, workers=workers) as cluster:
        a, b = cluster.nodes
        sid = a.login()
        assert b.uid(sid) == 2

        server.pause()
        for node in (a, b, a, b):
            check_outage_answers(node, sid)
        server.resume()
        assert back_logged_in(b, sid) < 1.0 and back_logged_in(a, sid) < 1.0

        server.kill()
        for node in (a, b):
            check_outage_answers(node, sid)
        server.start()
        assert back_logged_in(a, sid) < 1.5 and back_logged_in(b, sid) < 1.5

        for node in (a, b):
            assert node.proc.poll() is None, "the node is still running"
            log = node.log()
            assert log.count("is unavailable:") <= 2 * max(workers, 1) + 2, "one line per outage and process"
            assert sid not in log and sid[:42] not in log


def test_odoo_starts_while_the_backend_is_down(breakable):
    server, settings = breakable
    server.kill()
    with Cluster(ODOO_SRC, settings) as cluster:  # Cluster waits for /web/login to answer 200
        a, b = cluster.nodes
        response = requests.post(f"{a.url}/web/session/authenticate", timeout=30, json={
            "jsonrpc": "2.0", "method": "call",
            "params": {"db": cluster.dbname, "login": "admin", "password": "admin"}})
        assert response.status_code == 503
        server.start()
        time.sleep(0.6)  # one probe interval of the breaker
        sid = a.login()
        assert b.uid(sid) == 2
