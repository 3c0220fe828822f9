"""Redis as operators run it: TLS, ACL users, unix sockets, Cluster, Sentinel with failover.

Each test starts the real servers it needs on spare ports.
"""

from __future__ import annotations

import os
import secrets
import time

import pytest
from servers import make_config

from dkn_auth.store import BackendUnavailable, SessionGone, open_store
from tools.servers import Certificates, RedisCluster, RedisServer, SentinelServer, wait_for


def roundtrip(store) -> None:
    """Every verb once, so a wrong setup cannot pass by luck."""
    sid = secrets.token_urlsafe(63)
    assert store.load(sid) is None
    saved = store.save(sid, {"uid": 2, "context": {"lang": "en_US"}}, None)
    loaded = store.load(sid)
    assert loaded.data == {"uid": 2, "context": {"lang": "en_US"}}
    store.save(sid, {**loaded.data, "debug": "1"}, loaded)
    successor = sid[:42] + secrets.token_urlsafe(63)[42:]
    new = store.soft_rotate(store.load(sid), {**loaded.data, "next_sid": successor}, successor, {"uid": 2})
    assert new.sid == successor
    assert store.missing_identifiers([sid[:42]]) == set()
    store.delete_identifiers([sid[:42]], keep_sid=successor)
    assert store.load(sid) is None and store.load(successor).data == {"uid": 2}
    store.delete(successor)
    with pytest.raises(SessionGone):
        store.save(sid, loaded.data, saved)


@pytest.fixture(scope="module")
def certificates():
    certs = Certificates()
    yield certs
    certs.remove()


def test_tls_with_the_servers_ca(certificates):
    server = RedisServer("--tls-auth-clients", "no", tls=certificates).start()
    try:
        store = open_store(make_config("redis", redis_uri=server.uri, redis_tls_ca=certificates.ca))
        roundtrip(store)
        store.close()
    finally:
        server.stop()


def test_tls_verifies_the_server_by_default(certificates):
    server = RedisServer("--tls-auth-clients", "no", tls=certificates).start()
    try:
        store = open_store(make_config("redis", redis_uri=server.uri, timeout=0.5))  # no CA: system CAs
        with pytest.raises(BackendUnavailable, match="certificate verify failed"):
            store.load(secrets.token_urlsafe(63))
        store.close()
    finally:
        server.stop()


def test_tls_with_a_client_certificate(certificates):
    server = RedisServer("--tls-auth-clients", "yes", tls=certificates).start()
    try:
        without = open_store(make_config("redis", redis_uri=server.uri, redis_tls_ca=certificates.ca, timeout=0.5))
        with pytest.raises(BackendUnavailable):
            without.load(secrets.token_urlsafe(63))
        store = open_store(make_config("redis", redis_uri=server.uri, redis_tls_ca=certificates.ca,
                                       redis_tls_cert=certificates.client_cert,
                                       redis_tls_key=certificates.client_key))
        roundtrip(store)
        store.close()
    finally:
        server.stop()


def test_acl_user_and_wrong_password():
    server = RedisServer().start()
    try:
        admin = server.client()
        admin.acl_setuser("odoo", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"])
        admin.acl_setuser("default", enabled=False)
        store = open_store(make_config("redis", redis_uri=f"redis://odoo:s3cret@127.0.0.1:{server.port}/0"))
        roundtrip(store)
        wrong = open_store(make_config("redis", redis_uri=f"redis://odoo:nope@127.0.0.1:{server.port}/0",
                                       timeout=0.5))
        with pytest.raises(BackendUnavailable) as info:
            wrong.load(secrets.token_urlsafe(63))
        assert "nope" not in str(info.value) and "***" in str(info.value)
    finally:
        server.stop()


def test_unix_socket():
    server = RedisServer("--unixsocket", "SOCKET", "--unixsocketperm", "700")
    path = os.path.join(server.dir, "redis.sock")
    server.args[server.args.index("SOCKET")] = path
    server.start()
    try:
        store = open_store(make_config("redis", redis_uri=f"unix://{path}?db=2"))
        roundtrip(store)
        store.close()
    finally:
        server.stop()


def test_cluster_keeps_each_session_in_one_slot():
    cluster = RedisCluster().start()
    try:
        store = open_store(make_config("redis", redis_uri=cluster.uri, redis_cluster=True))
        roundtrip(store)
        node = cluster.nodes[0].client()
        for _ in range(20):  # spread over the slots of all three nodes
            keys = store.keys(secrets.token_urlsafe(63))
            assert node.cluster("keyslot", keys.session) == node.cluster("keyslot", keys.index)
        slots = {node.cluster("keyslot", store.keys(secrets.token_urlsafe(63)).session) for _ in range(50)}
        assert len(slots) > 40, "sessions spread over the cluster"
        for _ in range(30):
            sid = secrets.token_urlsafe(63)
            store.save(sid, {"uid": 2}, None)
            assert store.load(sid).data == {"uid": 2}
        store.close()
    finally:
        cluster.stop()


def test_sentinel_failover_keeps_sessions():
    master = RedisServer("--repl-diskless-sync-delay", "0", password="masterpw")
    replica = RedisServer("--replicaof", "127.0.0.1", str(master.port), password="masterpw")
    sentinels = [SentinelServer(master, password="sentinelpw") for _ in range(3)]
    try:
        for server in (master, replica, *sentinels):
            server.start()
        wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up", what="replica in sync")
        store = open_store(make_config(
            "redis", redis_uri="redis://:masterpw@ignored:6379/0", timeout=1.0,
            redis_sentinels=tuple(("127.0.0.1", s.port) for s in sentinels),
            redis_sentinel_password="sentinelpw"))
        roundtrip(store)
        sids = [secrets.token_urlsafe(63) for _ in range(20)]
        for sid in sids:
            store.save(sid, {"uid": 2}, None)
        assert master.client().wait(1, 2000) == 1  # replicated before the crash

        master.kill()
        killed = time.monotonic()

        def served_again() -> bool:
            try:
                return all(store.load(sid).data == {"uid": 2} for sid in sids)
            except BackendUnavailable:
                return False

        wait_for(served_again, timeout=20, what="sessions served by the new master")
        failover = time.monotonic() - killed
        sid = secrets.token_urlsafe(63)
        store.save(sid, {"uid": 3}, None)  # writes go to the promoted replica
        assert replica.client().hgetall(store.keys(sid).session)
        assert failover < 10, f"failover took {failover:.1f} s"
        store.close()
    finally:
        for server in (*sentinels, replica, master):
            server.stop()
