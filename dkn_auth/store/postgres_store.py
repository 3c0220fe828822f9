"""PostgreSQL driver: one row per session in table dkn_auth_session, created on first use.

``data`` is a JSONB object of field → JSON text, so a save merges the changed fields in one
UPDATE; ``expires_at`` is checked on every read and expired rows are removed by ``vacuum``.
Every verb is one statement in autocommit (asynchronous connections are): no transaction stays
open across a request.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from collections.abc import Iterable, Iterator, Mapping

import psycopg2
import psycopg2.errors
from psycopg2.extensions import POLL_OK, POLL_READ
from psycopg2.extras import Json

from .base import Keys, SessionStore
from .config import Config, redact_uri

TABLE = "dkn_auth_session"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key text PRIMARY KEY,
    index_key text NOT NULL,
    data jsonb NOT NULL,
    version bigint NOT NULL,
    generation text NOT NULL,
    expires_at timestamptz NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX IF NOT EXISTS {TABLE}_index_key ON {TABLE} (index_key);
CREATE INDEX IF NOT EXISTS {TABLE}_expires_at ON {TABLE} (expires_at);
"""

# Statements are prepared once per connection: planning the data-modifying CTE of load costs
# more than running it. A save writes only onto the live session of the generation it loaded.
_STATEMENTS = {
    # $1 key, $2 ttl s, $3 slack s. The expiry is pushed back only when it moved by more than
    # the slack, so reads rarely write.
    "dkn_auth_load": ("text, float8, float8", f"""
        WITH hit AS (
            SELECT key, data, version, generation, expires_at FROM {TABLE} WHERE key = $1 AND expires_at > now()
        ), pushed AS (
            UPDATE {TABLE} s SET expires_at = now() + make_interval(secs => $2)
            FROM hit
            WHERE s.key = hit.key AND hit.expires_at < now() + make_interval(secs => $2 - $3)
        )
        SELECT data, version, generation FROM hit"""),
    # $1 key, $2 ttl s, $3 changed fields, $4 removed fields, $5 generation
    "dkn_auth_merge": ("text, float8, jsonb, text[], text", f"""
        UPDATE {TABLE}
        SET data = (data - $4) || $3, version = version + 1, expires_at = now() + make_interval(secs => $2)
        WHERE key = $1 AND expires_at > now() AND generation = $5
        RETURNING version, generation"""),
    # $1 key, $2 index key, $3 ttl s, $4 fields, $5 generation: create, or merge onto a live one.
    "dkn_auth_create": ("text, text, float8, jsonb, text", f"""
        INSERT INTO {TABLE} AS s (key, index_key, data, version, generation, expires_at)
        VALUES ($1, $2, $4, 1, $5, now() + make_interval(secs => $3))
        ON CONFLICT (key) DO UPDATE SET
            data = CASE WHEN s.expires_at > now() THEN s.data || EXCLUDED.data ELSE EXCLUDED.data END,
            generation = CASE WHEN s.expires_at > now() THEN s.generation ELSE EXCLUDED.generation END,
            version = s.version + 1,
            expires_at = EXCLUDED.expires_at
        RETURNING version, generation"""),
    # $1 old key, $2 its generation, $3 its changed fields, $4 its removed fields, $5 claim field,
    # $6 new key, $7 index key, $8 new fields, $9 new generation, $10 ttl s.
    # FOR UPDATE makes a concurrent rotation wait, then see the claim this one stored.
    "dkn_auth_soft_rotate": ("text, text, jsonb, text[], text, text, text, jsonb, text, float8", f"""
        WITH old AS (
            SELECT key, generation, data -> $5 AS winner FROM {TABLE}
            WHERE key = $1 AND expires_at > now() FOR UPDATE
        ), moved AS (
            UPDATE {TABLE} s
            SET data = (s.data - $4) || $3, version = s.version + 1,
                expires_at = now() + make_interval(secs => $10)
            FROM old WHERE s.key = old.key AND old.generation = $2 AND old.winner IS NULL
            RETURNING s.key
        ), created AS (
            INSERT INTO {TABLE} AS s (key, index_key, data, version, generation, expires_at)
            SELECT $6, $7, $8, 1, $9, now() + make_interval(secs => $10) FROM moved
            ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, version = s.version + 1,
                generation = EXCLUDED.generation, expires_at = EXCLUDED.expires_at
            RETURNING version
        )
        SELECT old.generation = $2, old.winner #>> '{{}}', (SELECT version FROM created) FROM old"""),
}


def _wait(conn: psycopg2.extensions.connection, deadline: float) -> None:
    """Drive an asynchronous connection until its operation is done, or raise TimeoutError.

    libpq has no client-side time limit: a paused or unreachable server would hold a
    blocking call for ever, so the connections here are asynchronous and waited on with poll().
    """
    poller = select.poll()
    fd = conn.fileno()
    while True:
        state = conn.poll()
        if state == POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("PostgreSQL did not answer in time")
        poller.register(fd, select.POLLIN if state == POLL_READ else select.POLLOUT)
        poller.poll(left * 1000)
        poller.unregister(fd)


class ConnectionPool:
    """At most ``size`` asynchronous connections per process, opened on demand."""

    def __init__(self, dsn: str, size: int, connect_timeout: float, on_connect) -> None:
        self.dsn, self.size, self.connect_timeout = dsn, size, connect_timeout
        self.on_connect = on_connect
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(self.size)

    @contextlib.contextmanager
    def connection(self, deadline: float) -> Iterator[psycopg2.extensions.connection]:
        if self._pid != os.getpid():
            # A forked child must not close the parent's connections (closing sends a
            # Terminate message on the shared socket); it forgets them and opens its own.
            self._reset()
        if not self._slots.acquire(timeout=max(deadline - time.monotonic(), 0)):
            raise TimeoutError(f"all {self.size} session database connections stayed busy")
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = psycopg2.connect(self.dsn, async_=True, application_name="dkn_auth")
                _wait(conn, min(deadline, time.monotonic() + self.connect_timeout))
                self.on_connect(conn, deadline)
            yield conn
        except BaseException:
            if conn is not None:
                conn.close()  # its state is unknown: an answer may still be on the way
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


def _transient(exc: BaseException) -> bool:
    """Errors another attempt may not meet: lost connections, timeouts, restarts, failovers."""
    return isinstance(exc, (psycopg2.OperationalError, psycopg2.extensions.TransactionRollbackError,
                            psycopg2.errors.ReadOnlySqlTransaction, TimeoutError))


class PostgresStore(SessionStore):
    def __init__(self, config: Config) -> None:
        super().__init__(config, f"PostgreSQL at {redact_uri(config.db_uri)}")
        self.pool = ConnectionPool(config.db_uri, config.db_max_conn, config.connect_timeout, self._prepare)

    def _run(self, conn: psycopg2.extensions.connection, deadline: float, sql: str, params=()) -> list[tuple]:
        with conn.cursor() as cr:
            cr.execute(sql, params)
            _wait(conn, deadline)
            return cr.fetchall() if cr.description else []

    def _prepare(self, conn: psycopg2.extensions.connection, deadline: float) -> None:
        # A statement stuck on a lock is stopped by the server too.
        self._run(conn, deadline, "SET statement_timeout = %s", (int(self.config.timeout * 1000),))
        # Checked on every new connection: after a failover or a restore, it may be another server.
        if self._run(conn, deadline, "SELECT to_regclass(%s) IS NULL", (TABLE,))[0][0]:
            # The lock makes concurrent first starts of several nodes wait for one another.
            self._run(conn, deadline, "SELECT pg_advisory_lock(hashtext(%s))", (TABLE,))
            try:
                self._run(conn, deadline, _SCHEMA)
            finally:
                self._run(conn, deadline, "SELECT pg_advisory_unlock(hashtext(%s))", (TABLE,))
        for name, (types, sql) in _STATEMENTS.items():
            self._run(conn, deadline, f"PREPARE {name} ({types}) AS {sql}")

    def _execute(self, sql: str, params: Mapping | tuple = ()) -> list[tuple]:
        def attempt(seconds_left: float) -> list[tuple]:
            deadline = time.monotonic() + seconds_left
            with self.pool.connection(deadline) as conn:
                return self._run(conn, deadline, sql, params)

        return self.policy.call(attempt, _transient)
    def _load(self, keys: Keys) -> tuple[dict[str, str], int, str] | None:
        rows = self._execute("EXECUTE dkn_auth_load (%s, %s, %s)", (keys.session, self.expiry, self.refresh_slack))
        return rows[0] if rows else None

    def _write(self, keys: Keys, changed: Mapping[str, str], removed: Iterable[str], generation: str,
               create: bool) -> tuple[int, str] | None:
        fields = Json(dict(changed))
        if create:
            rows = self._execute("EXECUTE dkn_auth_create (%s, %s, %s, %s, %s)",
                                 (keys.session, keys.index, self.expiry, fields, generation))
        else:
            rows = self._execute("EXECUTE dkn_auth_merge (%s, %s, %s, %s, %s)",
                                 (keys.session, self.expiry, fields, list(removed), generation))
        return rows[0] if rows else None

    def _soft_rotate(self, old: Keys, generation: str, changed: Mapping[str, str], removed: Iterable[str],
                     claim: str, new: Keys, new_fields: Mapping[str, str], new_generation: str) -> int | str | None:
        rows = self._execute(
            "EXECUTE dkn_auth_soft_rotate (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (old.session, generation, Json(dict(changed)), list(removed), claim,
             new.session, new.index, Json(dict(new_fields)), new_generation, self.expiry))
        if not rows or not rows[0][0]:
            return None
        _, winner, version = rows[0]
        return winner if winner is not None else version

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
