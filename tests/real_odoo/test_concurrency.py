"""Concurrent requests of one session on two real Odoo nodes keep every change; logout is final."""

from __future__ import annotations

import threading
from functools import partial

import pytest
import requests
from cluster import ODOO_SRC, Cluster

DEBUG_MODES = ("assets", "tests")  # values Odoo stores as given


def set_collectors(node, sid: str, value: str) -> None:
    """Odoo writes session['profile_collectors'] = [value]."""
    response = requests.get(f"{node.url}/web/set_profiling", params={"collectors": value},
                            cookies={"session_id": sid}, timeout=30)
    assert response.status_code == 200, response.text[:500]


def set_debug(node, sid: str, mode: str) -> None:
    """Odoo writes session['debug'] = mode, from the query string of any request."""
    body, _ = node.rpc(f"/web/webclient/version_info?debug={mode}", {}, sid)
    assert "result" in body, body


def at_once(*calls) -> None:
    barrier = threading.Barrier(len(calls))
    errors = []

    def run(call):
        barrier.wait()
        try:
            call()
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "workers2"])
def test_parallel_requests_keep_each_others_session_changes(settings, raw, cluster_store, workers):
    with Cluster(ODOO_SRC, settings, workers=workers) as cluster:
        a, b = cluster.nodes
        sid = a.login()
        lost = []
        for i in range(20):
            collectors, mode = f"c{i}", DEBUG_MODES[i % 2]
            at_once(partial(set_collectors, a, sid, collectors), partial(set_debug, b, sid, mode))
            data = cluster_store.load(sid).data
            if data.get("profile_collectors") != [collectors]:
                lost.append((i, "profile_collectors", data.get("profile_collectors")))
            if data.get("debug") != mode:
                lost.append((i, "debug", data.get("debug")))
        assert lost == [], f"{len(lost)} of 40 changes lost: {lost}"
        assert b.uid(sid) == 2


def test_logout_racing_with_session_writes_is_final(settings, raw, cluster_store):
    with Cluster(ODOO_SRC, settings) as cluster:
        a, b = cluster.nodes
        came_back = []
        for i in range(15):
            sid = a.login()
            at_once(partial(a.logout, sid),
                    partial(set_collectors, a, sid, f"a{i}"), partial(set_collectors, b, sid, f"b{i}"),
                    partial(set_debug, b, sid, DEBUG_MODES[i % 2]), partial(set_debug, a, sid, "1"))
            if a.uid(sid) is not None or b.uid(sid) is not None:
                came_back.append(i)
            stored = cluster_store.load(sid)
            assert stored is None or not stored.data.get("uid"), "no logged-in session under that cookie"
        assert came_back == [], f"the logged-out cookie worked again in rounds {came_back}"
