"""PostgreSQL driver: one row per session in table dkn_auth_session, created on first use.

``data`` is a JSONB object of field → JSON text, so a save merges the changed fields in one
UPDATE; ``expires_at`` is checked on every read and expired rows are removed by ``vacuum``.
Every verb is one statement in autocommit: no transaction stays open across a request.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping

import psycopg2
import psycopg2.extras

from .base import Keys, SessionStore

TABLE = "dkn_auth_session"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key text PRIMARY KEY,
    index_key text NOT NULL,
    data jsonb NOT NULL,
    version bigint NOT NULL,
    expires_at timestamptz NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX IF NOT EXISTS {TABLE}_index_key ON {TABLE} (index_key);
CREATE INDEX IF NOT EXISTS {TABLE}_expires_at ON {TABLE} (expires_at);
"""

# The expiry is pushed back only when it moved by more than the slack, so reads rarely write.
_LOAD = f"""
WITH hit AS (
    SELECT key, data, version, expires_at FROM {TABLE}
    WHERE key = %(key)s AND expires_at > now()
), pushed AS (
    UPDATE {TABLE} s SET expires_at = now() + make_interval(secs => %(ttl)s)
    FROM hit
    WHERE s.key = hit.key AND hit.expires_at < now() + make_interval(secs => %(ttl)s - %(slack)s)
)
SELECT data, version FROM hit
"""

_MERGE = f"""
UPDATE {TABLE}
SET data = (data - %(removed)s::text[]) || %(changed)s,
    version = version + 1,
    expires_at = now() + make_interval(secs => %(ttl)s)
WHERE key = %(key)s AND expires_at > now()
RETURNING version
"""

_REPLACE = f"""
INSERT INTO {TABLE} (key, index_key, data, version, expires_at)
VALUES (%(key)s, %(index)s, %(changed)s, 1, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (key) DO UPDATE
SET data = EXCLUDED.data, version = {TABLE}.version + 1, expires_at = EXCLUDED.expires_at
RETURNING version
"""


class ConnectionPool:
    """At most ``size`` connections per process, opened on demand, waited for up to ``timeout`` s."""

    def __init__(self, dsn: str, size: int, timeout: float = 5.0) -> None:
        self.dsn, self.size, self.timeout = dsn, size, timeout
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(self.size)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        if self._pid != os.getpid():
            # A forked child must not close the parent's connections (closing sends a
            # Terminate message on the shared socket); it forgets them and opens its own.
            self._reset()
        if not self._slots.acquire(timeout=self.timeout):
            raise psycopg2.OperationalError(
                f"dkn_auth: all {self.size} session database connections busy for {self.timeout} s")
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = psycopg2.connect(self.dsn, connect_timeout=2, application_name="dkn_auth",
                                        options="-c statement_timeout=5000")
                conn.autocommit = True
            yield conn
        except psycopg2.Error:
            if conn is not None:
                conn.close()  # its state is unknown after an error
                conn = None
            raise
        finally:
            if conn is not None:
                self._idle.put(conn)
            self._slots.release()

    def close(self) -> None:
        if self._pid == os.getpid():
            while not self._idle.empty():
                self._idle.get_nowait().close()
        self._reset()


class PostgresStore(SessionStore):
    def __init__(self, dsn: str, max_connections: int, prefix: str, expiry: int) -> None:
        super().__init__(prefix, expiry)
        self.pool = ConnectionPool(dsn, max_connections)
        self._schema_ready = False

    def _execute(self, sql: str, params: Mapping | tuple = ()) -> list[tuple]:
        with self.pool.connection() as conn, conn.cursor() as cr:
            if not self._schema_ready:
                # The lock makes concurrent first starts of several nodes wait for one another.
                cr.execute("SELECT pg_advisory_lock(hashtext(%s))", (TABLE,))
                try:
                    cr.execute(_SCHEMA)
                finally:
                    cr.execute("SELECT pg_advisory_unlock(hashtext(%s))", (TABLE,))
                self._schema_ready = True
            cr.execute(sql, params)
            return cr.fetchall() if cr.description else []

    def _load(self, keys: Keys) -> tuple[dict[str, str], int] | None:
        rows = self._execute(_LOAD, {"key": keys.session, "ttl": self.expiry, "slack": self.refresh_slack})
        return (rows[0][0], rows[0][1]) if rows else None

    def _write(self, keys: Keys, changed: Mapping[str, str], removed: Iterable[str], merge: bool) -> int | None:
        params = {"key": keys.session, "index": keys.index, "ttl": self.expiry,
                  "changed": psycopg2.extras.Json(dict(changed)), "removed": list(removed)}
        rows = self._execute(_MERGE if merge else _REPLACE, params)
        return rows[0][0] if rows else None

    def _delete(self, keys: Keys) -> None:
        self._execute(f"DELETE FROM {TABLE} WHERE key = %s", (keys.session,))

    def _delete_indexes(self, indexes: list[str], keep: str | None) -> None:
        self._execute(f"DELETE FROM {TABLE} WHERE index_key = ANY(%s) AND key IS DISTINCT FROM %s",
                      (indexes, keep))

    def _existing_indexes(self, indexes: list[str]) -> set[str]:
        rows = self._execute(
            f"SELECT DISTINCT index_key FROM {TABLE} WHERE index_key = ANY(%s) AND expires_at > now()",
            (indexes,))
        return {row[0] for row in rows}

    def _purge_expired(self) -> int:
        rows = self._execute(
            f"WITH gone AS (DELETE FROM {TABLE} WHERE expires_at <= now() RETURNING 1) SELECT count(*) FROM gone")
        return rows[0][0]

    def close(self) -> None:
        self.pool.close()
