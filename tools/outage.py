"""Sessions under a steady load while the backend is paused or killed, with the figures.

    python tools/outage.py [--driver redis|db] [--fault pause|kill] [--seconds 10] [--timeout 2]

Starts its own Redis or PostgreSQL on a spare port (tools/servers.py), runs 4 threads that
load and change their own session in a loop, breaks the server for --seconds, brings it back,
and reports: the slowest call, how fast calls fail once the breaker is open, how soon after
the backend's return calls succeed again, and whether any acknowledged change was lost.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import threading
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dkn_auth.store import BackendUnavailable, open_store  # noqa: E402
from dkn_auth.store.config import Config  # noqa: E402
from tools.servers import PostgresServer, RedisServer  # noqa: E402


class SteadyLoad:
    """Threads that load and change their own session in a loop, timing every call."""

    def __init__(self, store, threads: int = 4) -> None:
        self.store = store
        self.sids = [secrets.token_urlsafe(63) for _ in range(threads)]
        for sid in self.sids:
            store.save(sid, {"counter": 0}, None)
        self.acked = {sid: 0 for sid in self.sids}  # last counter a save returned for
        self.tried = {sid: 0 for sid in self.sids}  # last counter a save was attempted with
        self.calls: list[tuple[float, float, str]] = []  # (start, seconds, outcome)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(sid,)) for sid in self.sids]

    def _timed(self, fn):
        start = time.monotonic()
        try:
            result, outcome = fn(), "ok"
        except BackendUnavailable:
            result, outcome = None, "unavailable"
        except Exception as exc:  # anything else is a defect the test reports
            result, outcome = None, f"{type(exc).__name__}: {exc}"
        self.calls.append((start, time.monotonic() - start, outcome))
        return result, outcome

    def _run(self, sid: str) -> None:
        while not self._stop.is_set():
            loaded, outcome = self._timed(lambda: self.store.load(sid))
            if outcome == "ok":
                assert loaded is not None, "a loaded session vanished"
                counter = loaded.data["counter"] + 1
                self.tried[sid] = counter
                _, outcome = self._timed(partial(self.store.save, sid, {"counter": counter}, loaded))
                if outcome == "ok":
                    self.acked[sid] = counter
            time.sleep(0.01)

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def outcomes(self) -> set[str]:
        return {outcome for _, _, outcome in self.calls}

    def slowest(self) -> float:
        return max(seconds for _, seconds, _ in self.calls)

    def first_success_after(self, moment: float) -> float:
        return min(start + seconds for start, seconds, outcome in self.calls
                   if outcome == "ok" and start >= moment) - moment

    def failing_fast(self, since: float, until: float) -> float:
        """Median seconds of the failed calls in that window."""
        return statistics.median(seconds for start, seconds, outcome in self.calls
                                 if outcome == "unavailable" and since <= start <= until)



    def lost(self) -> int:
        """Sessions whose last acknowledged change is not what is stored."""
        return sum(self.store.load(sid).data["counter"] not in (self.acked[sid], self.tried[sid])
                   for sid in self.sids)


def break_under_load(server, store, fault: str, seconds: float) -> tuple[SteadyLoad, float, float]:
    """Steady load for 1 s, ``server`` paused or killed for ``seconds``, then 3 s more; returns the
    load and the moments the backend broke and came back."""
    with SteadyLoad(store) as load:
        time.sleep(1)
        broken = time.monotonic()
        server.pause() if fault == "pause" else server.kill()
        time.sleep(seconds)
        server.resume() if fault == "pause" else server.start()
        back = time.monotonic()
        time.sleep(3)
    return load, broken, back


def run(driver: str, fault: str, seconds: float, timeout: float) -> dict[str, float]:
    server = RedisServer(persistent=True).start() if driver == "redis" else PostgresServer().start()
    uri = server.uri if driver == "redis" else server.dsn
    store = open_store(Config(driver=driver, redis_uri=uri, db_uri=uri, timeout=timeout))
    try:
        load, broken, back = break_under_load(server, store, fault, seconds)
        return {"calls": len(load.calls), "failed": sum(o == "unavailable" for *_, o in load.calls),
                "other errors": sum(o not in ("ok", "unavailable") for *_, o in load.calls),
                "slowest call s": load.slowest(),
                "fast fail median ms": load.failing_fast(broken + 3 * timeout, back - 0.6) * 1000,
                "back after s": load.first_success_after(back), "lost": load.lost()}
    finally:
        store.close()
        server.stop() if driver == "redis" else server.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--driver", choices=["redis", "db"], default="redis")
    parser.add_argument("--fault", choices=["pause", "kill"], default="pause")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--timeout", type=float, default=2.0, help="dkn_auth_timeout")
    args = parser.parse_args()
    figures = run(args.driver, args.fault, args.seconds, args.timeout)
    print(" ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                   for name, value in figures.items()))


if __name__ == "__main__":
    main()
