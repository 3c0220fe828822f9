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

# Statements are prepared once per connection: planning the data-modifying CTE of LOAD costs
# more than running it. Parameters: $1 key, $2 ttl s, $3 refresh slack s (LOAD); $1 key,
# $2 ttl s, $3 changed fields, $4 removed fields (MERGE); $1 key, $2 index key, $3 ttl s, $4
# fields (REPLACE).
_STATEMENTS = {
    # The expiry is pushed back only when it moved by more than the slack, so reads rarely write.
    "dkn_auth_load": ("text, float8, float8", f"""
        WITH hit AS (
            SELECT key, data, version, expires_at FROM {TABLE} WHERE key = $1 AND expires_at > now()
        ), pushed AS (
            UPDATE {TABLE} s SET expires_at = now() + make_interval(secs => $2)
            FROM hit
            WHERE s.key = hit.key AND hit.expires_at < now() + make_interval(secs => $2 - $3)
        )
        SELECT data, version FROM hit"""),
    "dkn_auth_merge": ("text, float8, jsonb, text[]", f"""
        UPDATE {TABLE}
        SET data = (data - $4) || $3, version = version + 1, expires_at = now() + make_interval(secs => $2)
        WHERE key = $1 AND expires_at > now()
        RETURNING version"""),
    "dkn_auth_replace": ("text, text, float8, jsonb", f"""
        INSERT INTO {TABLE} (key, index_key, data, version, expires_at)
        VALUES ($1, $2, $4, 1, now() + make_interval(secs => $3))
        ON CONFLICT (key) DO UPDATE
        SET data = EXCLUDED.data, version = {TABLE}.version + 1, expires_at = EXCLUDED.expires_at
        RETURNING version"""),
}


class ConnectionPool:
    """At most ``size`` connections per process, opened on demand, waited for up to ``timeout`` s."""

    def __init__(self, dsn: str, size: int, on_connect=None, timeout: float = 5.0) -> None:
        self.dsn, self.size, self.timeout = dsn, size, timeout
        self.on_connect = on_connect
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
                if self.on_connect is not None:
                    self.on_connect(conn)
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
        self.pool = ConnectionPool(dsn, max_connections, on_connect=self._prepare)
        self._schema_ready = False

    def _prepare(self, conn: psycopg2.extensions.connection) -> None:
        with conn.cursor() as cr:
            if not self._schema_ready:
                # The lock makes concurrent first starts of several nodes wait for one another.
                cr.execute("SELECT pg_advisory_lock(hashtext(%s))", (TABLE,))
                try:
                    cr.execute(_SCHEMA)
                finally:
                    cr.execute("SELECT pg_advisory_unlock(hashtext(%s))", (TABLE,))
                self._schema_ready = True
            for name, (types, sql) in _STATEMENTS.items():
                cr.execute(f"PREPARE {name} ({types}) AS {sql}")

    def _execute(self, sql: str, params: Mapping | tuple = ()) -> list[tuple]:
        with self.pool.connection() as conn, conn.cursor() as cr:
            cr.execute(sql, params)
            return cr.fetchall() if cr.description else []

    def _load(self, keys: Keys) -> tuple[dict[str, str], int] | None:
        rows = self._execute("EXECUTE dkn_auth_load (%s, %s, %s)", (keys.session, self.expiry, self.refresh_slack))
        return (rows[0][0], rows[0][1]) if rows else None

    def _write(self, keys: Keys, changed: Mapping[str, str], removed: Iterable[str], merge: bool) -> int | None:
        fields = psycopg2.extras.Json(dict(changed))
        if merge:
            rows = self._execute("EXECUTE dkn_auth_merge (%s, %s, %s, %s)",
                                 (keys.session, self.expiry, fields, list(removed)))
        else:
            rows = self._execute("EXECUTE dkn_auth_replace (%s, %s, %s, %s)",
                                 (keys.session, keys.index, self.expiry, fields))
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
