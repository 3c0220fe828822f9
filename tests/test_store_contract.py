"""The store contract, run on every driver against a real server."""

from __future__ import annotations

import datetime
import logging
import os
import secrets
import threading
import time

import pytest

from dkn_auth.store import InvalidSessionId, SessionGone
from dkn_auth.store.postgres_store import TABLE


def new_sid() -> str:
    """An Odoo 18+ style session id (84 URL-safe base64 characters)."""
    return secrets.token_urlsafe(63)


def hex_sid() -> str:
    """An Odoo 14-17 style session id (40 hex digits)."""
    return secrets.token_hex(20)


SESSION = {
    "db": "prod", "uid": 2, "login": "admin", "session_token": "t" * 64, "debug": "",
    "context": {"lang": "en_US", "tz": "Europe/Brussels", "allowed_company_ids": [1, 3]},
    "_trace": [{"platform": "linux", "first_activity": 1.5}],
    "identity-check-last": datetime.datetime(2026, 12, 4, 10, 30, 1, 5),
    "seen": {3, 4},
}


@pytest.mark.parametrize("make_sid", [new_sid, hex_sid])
def test_saved_session_loads_back_equal(store, make_sid):
    sid = make_sid()
    assert store.load(sid) is None
    saved = store.save(sid, SESSION, None)
    loaded = store.load(sid)
    assert loaded.data == SESSION
    assert loaded.sid == sid
    assert loaded.version == saved.version == 1


def test_unknown_sid_loads_nothing_and_stores_nothing(store, backend):
    assert store.load(new_sid()) is None
    assert backend.count() == 0


def test_save_writes_only_changes_and_keeps_concurrent_ones(store):
    sid = new_sid()
    store.save(sid, {"a": 1, "b": 2, "c": 3}, None)
    first, second = store.load(sid), store.load(sid)
    # Two requests loaded the same version; each changes its own keys.
    store.save(sid, {**first.data, "a": 10, "new1": "x"}, first)
    data = dict(second.data)
    del data["c"]
    data["b"] = 20
    store.save(sid, data, second)
    assert store.load(sid).data == {"a": 10, "b": 20, "new1": "x"}
    assert store.load(sid).version == 3


def test_unchanged_save_keeps_data_and_bumps_version(store):
    sid = new_sid()
    saved = store.save(sid, SESSION, None)
    again = store.save(sid, SESSION, saved)
    assert again.version == saved.version + 1
    assert store.load(sid).data == SESSION


def test_new_session_created_twice_concurrently_keeps_both_changes(store):
    sid = new_sid()  # two first requests with the same new cookie, neither loaded anything
    store.save(sid, {"a": 1, "b": 2}, None)
    store.save(sid, {"b": 3, "c": 3}, None)
    assert store.load(sid).data == {"a": 1, "b": 3, "c": 3}


def test_save_never_writes_into_a_session_created_again_under_the_same_sid(store):
    sid = new_sid()
    store.save(sid, {"uid": 2, "login": "admin"}, None)
    stale = store.load(sid)  # a slow request of the logged-in session
    store.delete(sid)  # logout
    store.save(sid, {"uid": None}, None)  # the old cookie comes back: a new, anonymous session
    with pytest.raises(SessionGone):
        store.save(sid, {**stale.data, "debug": "1"}, stale)
    assert store.load(sid).data == {"uid": None}


def test_save_after_delete_raises_and_writes_nothing(store, backend):
    sid = new_sid()
    store.save(sid, SESSION, None)
    loaded = store.load(sid)
    store.delete(sid)
    with pytest.raises(SessionGone) as info:
        store.save(sid, {**loaded.data, "uid": 7}, loaded)
    assert sid not in str(info.value)
    assert store.load(sid) is None
    assert backend.count() == 0


def test_delete_removes_only_that_session(store):
    keep, gone = new_sid(), new_sid()
    store.save(keep, {"a": 1}, None)
    store.save(gone, {"a": 2}, None)
    store.delete(gone)
    store.delete(new_sid())  # unknown: no error
    assert store.load(gone) is None
    assert store.load(keep).data == {"a": 1}


@pytest.mark.parametrize("bad", ["", "x", "../../etc/passwd", "a" * 85, "A" * 40, "g" * 40,
                                 "é" * 84, "a" * 10_000, None, 42])
def test_invalid_sid_is_refused_before_any_backend_call(driver, bad):
    from servers import make_config

    from dkn_auth.store import open_store

    # Nothing listens on port 9: reaching the backend would raise a connection error instead.
    down = open_store(make_config(driver, redis_uri="redis://127.0.0.1:9/0",
                                  db_uri="postgresql://postgres@127.0.0.1:9/x"))
    for call in (lambda: down.load(bad), lambda: down.save(bad, {}, None), lambda: down.delete(bad)):
        with pytest.raises(InvalidSessionId):
            call()


def test_expired_session_is_gone(make_store):
    store = make_store(expiry=1)
    sid = new_sid()
    store.save(sid, SESSION, None)
    assert store.load(sid) is not None
    time.sleep(1.3)
    assert store.load(sid) is None


def test_expiry_slides_on_use_without_rewriting(make_store):
    store = make_store(expiry=2)
    sid = new_sid()
    saved = store.save(sid, SESSION, None)
    for _ in range(4):  # used every 0.8 s for 3.2 s: longer than the 2 s lifetime
        time.sleep(0.8)
        loaded = store.load(sid)
        assert loaded is not None
        assert loaded.version == saved.version  # the read wrote no new version
    time.sleep(2.3)
    assert store.load(sid) is None


def test_storage_holds_no_session_id(store, backend):
    sids = [new_sid() for _ in range(5)] + [hex_sid()]
    for sid in sids:
        store.save(sid, {**SESSION, "note": "payload"}, None)
        store.load(sid)
    dump = backend.dump()
    assert "payload" in dump  # the dump does show stored data...
    for sid in sids:
        assert sid not in dump  # ...but no session id, nor its identifier part
        assert sid[:42] not in dump
        assert sid[:20] not in dump


def test_prefix_separates_clusters(make_store):
    one, two = make_store(), make_store(prefix=f"other{secrets.token_hex(4)}:")
    sid = new_sid()
    one.save(sid, {"who": "one"}, None)
    assert two.load(sid) is None
    two.save(sid, {"who": "two"}, None)
    assert one.load(sid).data == {"who": "one"}
    two.delete(sid)
    assert one.load(sid).data == {"who": "one"}


def test_two_store_instances_share_sessions(make_store):
    node_a, node_b = make_store(), make_store()
    sid = new_sid()
    node_a.save(sid, SESSION, None)
    assert node_b.load(sid).data == SESSION
    node_b.delete(sid)
    assert node_a.load(sid) is None


def soft_rotated(sid: str) -> str:
    """Odoo 19 soft rotation: same 42-character identifier, new second half."""
    return sid[:42] + new_sid()[42:]


def test_delete_identifiers_removes_every_session_of_those_devices(store):
    device = new_sid()
    rotated = soft_rotated(device)
    other = new_sid()
    for sid in (device, rotated, other):
        store.save(sid, {"sid_end": sid[-4:]}, None)
    store.delete_identifiers([device[:42]])
    assert store.load(device) is None
    assert store.load(rotated) is None
    assert store.load(other) is not None


def test_delete_identifiers_can_keep_the_current_session(store):
    old = new_sid()
    current = soft_rotated(old)
    store.save(old, {"x": 1}, None)
    store.save(current, {"x": 2}, None)
    store.delete_identifiers([old[:42]], keep_sid=current)
    assert store.load(old) is None
    assert store.load(current).data == {"x": 2}


def test_missing_identifiers(store):
    live, deleted, never = new_sid(), new_sid(), new_sid()
    store.save(live, {"x": 1}, None)
    store.save(deleted, {"x": 1}, None)
    store.delete(deleted)
    idents = [live[:42], deleted[:42], never[:42]]
    assert store.missing_identifiers(idents) == {deleted[:42], never[:42]}
    assert store.missing_identifiers([]) == set()


def test_missing_identifiers_sees_expiry(make_store):
    store = make_store(expiry=1)
    sid = new_sid()
    store.save(sid, {"x": 1}, None)
    assert store.missing_identifiers([sid[:42]]) == set()
    time.sleep(1.3)
    assert store.missing_identifiers([sid[:42]]) == {sid[:42]}


@pytest.mark.parametrize("bad", ["short", "x" * 43, "../" * 14, None])
def test_malformed_identifier_is_refused(store, bad):
    with pytest.raises(InvalidSessionId):
        store.delete_identifiers([bad])
    with pytest.raises(InvalidSessionId):
        store.missing_identifiers([bad])


def test_purge_expired(make_store, driver, backend):
    store = make_store(expiry=1)
    for _ in range(3):
        store.save(new_sid(), {"x": 1}, None)
    live = make_store(expiry=3600)
    live.save(new_sid(), {"x": 2}, None)
    time.sleep(1.3)
    removed = store.purge_expired()
    if driver == "db":
        assert removed >= 3  # other tests' expired rows may go too
    else:
        assert removed == 0  # Redis expired them itself
    assert backend.count() == 1


def test_corrupted_payload_is_no_session_and_is_logged(store, driver, backend, caplog):
    sid = new_sid()
    store.save(sid, {"a": 1, "b": "ok"}, None)
    key = store.keys(sid).session
    if driver == "redis":
        backend.redis.hset(key, "d:b", b"{not json")
    else:
        with backend.db.cursor() as cr:
            cr.execute(f"UPDATE {TABLE} SET data = jsonb_set(data, '{{b}}', '\"{{not json\"') WHERE key = %s",
                       (key,))
    with caplog.at_level(logging.WARNING):
        assert store.load(sid) is None
    assert "unreadable payload" in caplog.text
    assert sid not in caplog.text and sid[:42] not in caplog.text
    assert backend.count() == 0  # deleted: nobody can use it
    store.save(sid, {"a": 2}, None)  # a new session may take the sid
    assert store.load(sid).data == {"a": 2}


def test_store_works_in_forked_children(store):
    sid = new_sid()
    store.save(sid, {"parent": True}, None)  # the parent has a connection open now
    pid = os.fork()
    if pid == 0:  # child: its own connection, leaving the parent's alone
        code = 1
        try:
            loaded = store.load(sid)
            store.save(sid, {**loaded.data, "child": True}, loaded)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.load(sid).data == {"parent": True, "child": True}


def test_soft_rotation_moves_the_session_to_its_successor(store):
    sid = new_sid()
    store.save(sid, {"uid": 2, "create_time": 1}, None)
    loaded = store.load(sid)
    successor = soft_rotated(sid)
    new = store.soft_rotate(loaded, {**loaded.data, "next_sid": successor, "deletion_time": 9},
                            successor, {"uid": 2, "create_time": 2, "gc_previous_sessions": True})
    assert new.sid == successor
    assert store.load(successor).data == {"uid": 2, "create_time": 2, "gc_previous_sessions": True}
    assert store.load(sid).data == {"uid": 2, "create_time": 1, "next_sid": successor, "deletion_time": 9}
    store.save(successor, {**new.data, "debug": "1"}, new)  # the successor is a live session
    assert store.load(successor).data["debug"] == "1"


def test_soft_rotation_by_a_second_request_gets_the_first_successor(store):
    sid = new_sid()
    store.save(sid, {"uid": 2}, None)
    first, second = store.load(sid), store.load(sid)
    winner, loser = soft_rotated(sid), soft_rotated(sid)
    store.soft_rotate(first, {**first.data, "next_sid": winner}, winner, {"uid": 2})
    assert store.soft_rotate(second, {**second.data, "next_sid": loser}, loser, {"uid": 2}) == winner
    assert store.load(loser) is None


def test_soft_rotation_of_a_deleted_session_raises(store):
    sid = new_sid()
    store.save(sid, {"uid": 2}, None)
    loaded = store.load(sid)
    store.delete(sid)
    successor = soft_rotated(sid)
    with pytest.raises(SessionGone):
        store.soft_rotate(loaded, {**loaded.data, "next_sid": successor}, successor, {"uid": 2})
    assert store.load(successor) is None and store.load(sid) is None


def test_soft_rotation_keeps_the_identifier(store):
    sid = new_sid()
    store.save(sid, {"uid": 2}, None)
    with pytest.raises(InvalidSessionId):
        store.soft_rotate(store.load(sid), {}, new_sid(), {})


def rotate_at_once(stores: list, sid: str) -> list[str]:
    """Each store loads the session, then all soft-rotate it at the same moment; the sids they end on."""
    loaded = [store.load(sid) for store in stores]
    barrier = threading.Barrier(len(stores))
    results: list = [None] * len(stores)

    def rotate(i: int) -> None:
        candidate = soft_rotated(sid)
        barrier.wait()
        outcome = stores[i].soft_rotate(loaded[i], {**loaded[i].data, "next_sid": candidate}, candidate, {"uid": 2})
        results[i] = outcome if isinstance(outcome, str) else outcome.sid

    threads = [threading.Thread(target=rotate, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_soft_rotations_converge_on_one_successor(make_store):
    """Many requests of one session rotate it at once, through two store instances."""
    node_a, node_b = make_store(), make_store()
    for _ in range(20):
        sid = new_sid()
        node_a.save(sid, {"uid": 2}, None)
        results = rotate_at_once([node_a, node_b] * 4, sid)
        assert len(set(results)) == 1, results
        assert node_b.load(results[0]).data == {"uid": 2}
        assert node_a.load(sid).data["next_sid"] == results[0]
