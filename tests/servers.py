"""Where the test servers are, and raw access to what a store wrote (the test's view, not the store's)."""

from __future__ import annotations

import os
import uuid

from dkn_auth.store.config import Config
from dkn_auth.store.postgres_store import TABLE

REDIS_URI = os.environ.get("DKN_TEST_REDIS_URI", "redis://127.0.0.1:6379/15")
DB_URI = os.environ.get("DKN_TEST_DB_URI", "postgresql://postgres@127.0.0.1:5432/dkn_auth_test")
DRIVERS = ("redis", "db")


def make_config(driver: str, **overrides) -> Config:
    values = {"driver": driver, "prefix": f"t{uuid.uuid4().hex[:10]}:", "expiry": 3600,
              "redis_uri": REDIS_URI, "db_uri": DB_URI}
    values.update(overrides)
    return Config(**values)


class Backend:
    """Raw access to what a store wrote, for assertions: the test's view, not the store's."""

    def __init__(self, driver: str, prefix: str, redis_client, db_conn) -> None:
        self.driver, self.prefix = driver, prefix
        self.redis, self.db = redis_client, db_conn

    def dump(self) -> str:
        """Everything stored under the prefix, as text."""
        if self.driver == "redis":
            parts = []
            for key in self.redis.scan_iter(match=self.prefix + "*"):
                parts.append(key.decode())
                if self.redis.type(key) == b"hash":
                    parts += [f"{k.decode()}={v.decode()}" for k, v in self.redis.hgetall(key).items()]
                else:
                    parts += [m.decode() for m in self.redis.smembers(key)]
            return "\n".join(parts)
        with self.db.cursor() as cr:
            cr.execute(f"SELECT * FROM {TABLE} WHERE key LIKE %s", (self.prefix + "%",))
            return "\n".join(repr(row) for row in cr.fetchall())

    def count(self) -> int:
        if self.driver == "redis":
            return sum(1 for key in self.redis.scan_iter(match=self.prefix + "*")
                       if self.redis.type(key) == b"hash")
        with self.db.cursor() as cr:
            cr.execute(f"SELECT count(*) FROM {TABLE} WHERE key LIKE %s", (self.prefix + "%",))
            return cr.fetchone()[0]

    def clear(self) -> None:
        if self.driver == "redis":
            for key in self.redis.scan_iter(match=self.prefix + "*"):
                self.redis.delete(key)
        else:
            with self.db.cursor() as cr:
                cr.execute("SELECT to_regclass(%s)", (TABLE,))
                if cr.fetchone()[0]:
                    cr.execute(f"DELETE FROM {TABLE} WHERE key LIKE %s", (self.prefix + "%",))
