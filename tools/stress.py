"""Stress one session from many processes and threads through two store instances.

    python tools/stress.py [--driver redis|db] [--processes 4] [--threads 4] [--saves 10000]
                           [--races 1000] [--baseline]

Every process opens two independent stores (two Odoo nodes, as far as the backend can tell)
on the same backend; its threads use them in turn.

* updates: every thread loads the session, adds a key of its own and removes the key it added
  the time before, then saves. A thread that does not find its previous key at its next load
  has lost an update to another request's save.
* races: a logged-in session is loaded by two requests; at the same moment one logs out
  (deletes the session) and the other saves a change. A session still there afterwards has
  come back from the dead.

--baseline runs the same work as Odoo's own session store does it (last writer wins, the
whole session), to show what the counts look like without dkn_auth.

Servers: DKN_TEST_REDIS_URI and DKN_TEST_DB_URI, as for the tests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import sys
import threading
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dkn_auth.store import SessionGone, open_store  # noqa: E402
from dkn_auth.store.config import Config  # noqa: E402

REDIS_URI = os.environ.get("DKN_TEST_REDIS_URI", "redis://127.0.0.1:6379/15")
DB_URI = os.environ.get("DKN_TEST_DB_URI", "postgresql://postgres@127.0.0.1:5432/dkn_auth_test")


class LastWriterWins:
    """Odoo's own behaviour, for --baseline: the whole session is written back on save."""

    def __init__(self, driver: str, prefix: str) -> None:
        self.driver, self.prefix = driver, prefix
        if driver == "redis":
            import redis

            self.redis = redis.Redis.from_url(REDIS_URI)
        else:
            import psycopg2

            self.conn = psycopg2.connect(DB_URI)
            self.conn.autocommit = True
            self.lock = threading.Lock()
            with self.lock, self.conn.cursor() as cr:
                cr.execute("CREATE TABLE IF NOT EXISTS dkn_stress_baseline (key text PRIMARY KEY, data text)")

    def load(self, sid: str):
        if self.driver == "redis":
            raw = self.redis.get(self.prefix + sid)
        else:
            with self.lock, self.conn.cursor() as cr:
                cr.execute("SELECT data FROM dkn_stress_baseline WHERE key = %s", (self.prefix + sid,))
                row = cr.fetchone()
            raw = row[0] if row else None
        return None if raw is None else Loaded(json.loads(raw))

    def save(self, sid: str, data: dict, loaded) -> None:
        if self.driver == "redis":
            self.redis.set(self.prefix + sid, json.dumps(data), ex=3600)
        else:
            with self.lock, self.conn.cursor() as cr:
                cr.execute("INSERT INTO dkn_stress_baseline VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                           "SET data = EXCLUDED.data", (self.prefix + sid, json.dumps(data)))

    def delete(self, sid: str) -> None:
        if self.driver == "redis":
            self.redis.delete(self.prefix + sid)
        else:
            with self.lock, self.conn.cursor() as cr:
                cr.execute("DELETE FROM dkn_stress_baseline WHERE key = %s", (self.prefix + sid,))

    def close(self) -> None:
        if self.driver == "db":
            self.conn.close()


class Loaded:
    def __init__(self, data: dict) -> None:
        self.data = data


def open_pair(driver: str, prefix: str, baseline: bool) -> list:
    """Two independent store instances on one backend."""
    if baseline:
        return [LastWriterWins(driver, prefix), LastWriterWins(driver, prefix)]
    config = Config(driver=driver, prefix=prefix, expiry=3600, redis_uri=REDIS_URI, db_uri=DB_URI)
    return [open_store(config), open_store(config)]


def _updates_worker(args: tuple) -> int:
    driver, prefix, baseline, sid, process, threads, saves = args
    stores = open_pair(driver, prefix, baseline)
    lost = [0] * threads

    def work(thread: int) -> None:
        store = stores[(process + thread) % 2]
        previous = None
        for i in range(saves):
            loaded = store.load(sid)
            data = dict(loaded.data)
            if previous is not None:
                if previous in data:
                    del data[previous]
                else:
                    lost[thread] += 1
            previous = f"p{process}t{thread}i{i}"
            data[previous] = i
            store.save(sid, data, loaded)
        if previous not in store.load(sid).data:
            lost[thread] += 1

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    for store in stores:
        store.close()
    return sum(lost)


def _races_worker(args: tuple) -> int:
    driver, prefix, baseline, rounds = args
    stores = open_pair(driver, prefix, baseline)
    resurrected = 0
    for i in range(rounds):
        sid = secrets.token_urlsafe(63)
        stores[0].save(sid, {"uid": 2, "login": "admin"}, None)
        loaded = [stores[0].load(sid), stores[1].load(sid)]
        barrier = threading.Barrier(2)

        def logout(loaded=loaded[0], barrier=barrier, sid=sid) -> None:
            barrier.wait()
            stores[0].delete(sid)

        def change(loaded=loaded[1], barrier=barrier, sid=sid, i=i) -> None:
            barrier.wait()
            try:
                stores[1].save(sid, {**loaded.data, "debug": str(i)}, loaded)
            except SessionGone:
                pass  # the logout came first: the change is dropped, as it must be

        pair = [threading.Thread(target=logout), threading.Thread(target=change)]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()
        if stores[1].load(sid) is not None:
            resurrected += 1
            stores[1].delete(sid)
    for store in stores:
        store.close()
    return resurrected


def run(driver: str, processes: int = 4, threads: int = 4, saves: int = 10_000, races: int = 1_000,
        baseline: bool = False) -> dict[str, int]:
    """Counts for one driver: saves made, updates lost, races run, sessions resurrected."""
    prefix = f"stress{uuid.uuid4().hex[:8]}:"
    sid = secrets.token_urlsafe(63)
    first = open_pair(driver, prefix, baseline)[0]
    first.save(sid, {"uid": 2}, None)
    per_thread = max(1, saves // (processes * threads))
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        lost = sum(pool.map(_updates_worker, [(driver, prefix, baseline, sid, p, threads, per_thread)
                                              for p in range(processes)]))
        per_process = max(1, races // processes)
        resurrected = sum(pool.map(_races_worker, [(driver, prefix, baseline, per_process)] * processes))
    first.delete(sid)
    first.close()
    return {"saves": per_thread * processes * threads, "lost": lost,
            "races": per_process * processes, "resurrected": resurrected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--driver", choices=["redis", "db"], action="append",
                        help="repeat for both (default: both)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--saves", type=int, default=10_000)
    parser.add_argument("--races", type=int, default=1_000)
    parser.add_argument("--baseline", action="store_true", help="last writer wins, as Odoo's own store")
    args = parser.parse_args()
    failed = False
    for driver in args.driver or ["redis", "db"]:
        counts = run(driver, args.processes, args.threads, args.saves, args.races, args.baseline)
        print(f"{driver}{' (baseline)' if args.baseline else ''}: {counts['saves']} saves, "
              f"{counts['lost']} lost updates; {counts['races']} logout-vs-save races, "
              f"{counts['resurrected']} resurrected sessions")
        failed |= bool(counts["lost"] or counts["resurrected"])
    sys.exit(1 if failed and not args.baseline else 0)


if __name__ == "__main__":
    main()
