"""Per-request cost of dkn_auth's stores next to the raw client doing the minimum.

    .venv/bin/python bench/bench_sessions.py [--requests 3000]

Uses DKN_TEST_REDIS_URI and DKN_TEST_DB_URI like the tests (scripts/run-tests prints them).
Two requests are measured per driver, on a realistic Odoo 18 session:

* load unchanged: what every Odoo 16+ request does (static files too). dkn_auth: ``load``
  (one EVALSHA / one SQL statement, sliding expiry included). Raw: redis-py ``GET`` /
  psycopg2 ``SELECT payload``.
* save changed: a request that loads the session and changes one key. dkn_auth: ``load`` +
  ``save`` (merge of the changed key). Raw: ``GET`` + ``SET ... EX`` / ``SELECT`` + ``UPSERT``.

Prints a Markdown table; the ratio is dkn_auth's time over the raw client's.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dkn_auth.store import open_store  # noqa: E402
from dkn_auth.store.config import Config  # noqa: E402

REDIS_URI = os.environ.get("DKN_TEST_REDIS_URI", "redis://127.0.0.1:6379/15")
DB_URI = os.environ.get("DKN_TEST_DB_URI", "postgresql://postgres@127.0.0.1:5432/dkn_auth_test")

SESSION = {
    "context": {"lang": "en_US", "tz": "Europe/Brussels", "uid": 2, "allowed_company_ids": [1]},
    "db": "production", "debug": "", "login": "admin", "uid": 2,
    "session_token": secrets.token_hex(32),
    "_trace": [{"platform": "linux", "browser": "firefox", "ip_address": "203.0.113.7",
                "first_activity": time.time(), "last_activity": time.time()}],
    "create_time": time.time(),
}


def timed(fn, requests: int, rounds: int = 5) -> float:
    """Median over rounds of the mean time of one call, in microseconds."""
    for _ in range(min(200, requests)):
        fn()
    results = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(requests):
            fn()
        results.append((time.perf_counter() - start) / requests * 1e6)
    return statistics.median(results)


def bench_redis(requests: int) -> list[tuple[str, float, float]]:
    store = open_store(Config(driver="redis", redis_uri=REDIS_URI, prefix=f"bench{uuid.uuid4().hex[:6]}:"))
    raw = redis.Redis.from_url(REDIS_URI)
    sid = secrets.token_urlsafe(63)
    store.save(sid, SESSION, None)
    raw_key, payload = f"bench:raw:{uuid.uuid4().hex}", json.dumps(SESSION)
    raw.set(raw_key, payload, ex=604800)
    counter = iter(range(10**9))

    def store_change():
        loaded = store.load(sid)
        store.save(sid, {**loaded.data, "counter": next(counter)}, loaded)

    def raw_change():
        data = json.loads(raw.get(raw_key))
        data["counter"] = next(counter)
        raw.set(raw_key, json.dumps(data), ex=604800)

    def raw_load():
        return json.loads(raw.get(raw_key))

    rows = [("load unchanged", timed(lambda: store.load(sid), requests), timed(raw_load, requests)),
            ("save changed", timed(store_change, requests), timed(raw_change, requests))]
    store.delete(sid)
    raw.delete(raw_key)
    return rows


def bench_db(requests: int) -> list[tuple[str, float, float]]:
    store = open_store(Config(driver="db", db_uri=DB_URI, prefix=f"bench{uuid.uuid4().hex[:6]}:"))
    sid = secrets.token_urlsafe(63)
    store.save(sid, SESSION, None)
    conn = psycopg2.connect(DB_URI)
    conn.autocommit = True
    cr = conn.cursor()
    cr.execute("CREATE TABLE IF NOT EXISTS bench_raw_session (key text PRIMARY KEY, payload text)")
    raw_key = uuid.uuid4().hex
    cr.execute("INSERT INTO bench_raw_session VALUES (%s, %s)", (raw_key, json.dumps(SESSION)))
    counter = iter(range(10**9))

    def raw_load():
        cr.execute("SELECT payload FROM bench_raw_session WHERE key = %s", (raw_key,))
        return json.loads(cr.fetchone()[0])

    def raw_change():
        data = raw_load()
        data["counter"] = next(counter)
        cr.execute("INSERT INTO bench_raw_session VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                   "SET payload = EXCLUDED.payload", (raw_key, json.dumps(data)))

    def store_change():
        loaded = store.load(sid)
        store.save(sid, {**loaded.data, "counter": next(counter)}, loaded)

    rows = [("load unchanged", timed(lambda: store.load(sid), requests), timed(raw_load, requests)),
            ("save changed", timed(store_change, requests), timed(raw_change, requests))]
    store.delete(sid)
    cr.execute("DROP TABLE bench_raw_session")
    conn.close()
    store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="calls per round (5 rounds)")
    args = parser.parse_args()
    print("| driver | request | dkn_auth µs | raw client µs | ratio |")
    print("|---|---|---:|---:|---:|")
    for driver, bench in (("redis", bench_redis), ("db", bench_db)):
        for name, ours, raw in bench(args.requests):
            print(f"| {driver} | {name} | {ours:.0f} | {raw:.0f} | {ours / raw:.2f} |")


if __name__ == "__main__":
    main()
