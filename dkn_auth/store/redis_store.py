"""Redis driver: a session is a hash, its device index a set, both expiring by Redis TTL.

Hash fields: ``d:<session key>`` → JSON text, ``v`` → version. Every verb is one Lua script
call, so a load or a save is one round trip and atomic.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import redis

from .base import Keys, SessionStore

# KEYS: session, index. ARGV: ttl ms, slack ms.
# Pushes the expiry back only when it moved by more than the slack, so reads rarely write.
_LOAD = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return fields end
local ttl, slack = tonumber(ARGV[1]), tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl - slack then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return fields
"""

# KEYS: session, index. ARGV: merge (1|0), ttl ms, number of changed fields, then the changed
# fields as name, value pairs, then the names of removed fields.
_WRITE = """
local merge, ttl, n = ARGV[1] == '1', ARGV[2], tonumber(ARGV[3])
if merge then
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
else
  redis.call('DEL', KEYS[1])
end
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 4, 3 + 2 * n)) end
if #ARGV > 3 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 4 + 2 * n)) end
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return version
"""

# KEYS: session, index.
_DELETE = """
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], KEYS[1])
"""

# KEYS: one index. ARGV: session key to keep, or ''. The session keys share the index's hash
# slot, so this is atomic in Redis Cluster too.
_DELETE_INDEX = """
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if key ~= ARGV[1] then
    redis.call('DEL', key)
    redis.call('SREM', KEYS[1], key)
  end
end
"""


class RedisStore(SessionStore):
    def __init__(self, uri: str, max_connections: int, prefix: str, expiry: int) -> None:
        super().__init__(prefix, expiry)
        self.uri = uri
        self.max_connections = max_connections
        self._client: redis.Redis | None = None
        self._pid = 0

    @property
    def client(self) -> redis.Redis:
        # Opened on first use in each process: prefork workers are forked after this object
        # exists, and must not share the parent's sockets.
        if self._client is None or self._pid != os.getpid():
            pool = redis.BlockingConnectionPool.from_url(
                self.uri,
                max_connections=self.max_connections,
                timeout=5,
                socket_connect_timeout=2,
                socket_timeout=5,
                health_check_interval=30,
                client_name="dkn_auth",
            )
            client = redis.Redis(connection_pool=pool)
            self._scripts = {
                name: client.register_script(source)
                for name, source in (("load", _LOAD), ("write", _WRITE),
                                     ("delete", _DELETE), ("delete_index", _DELETE_INDEX))
            }
            self._client, self._pid = client, os.getpid()
        return self._client

    def _run(self, script: str, keys: list[str], args: list) -> object:
        client = self.client
        return self._scripts[script](keys=keys, args=args, client=client)

    def _load(self, keys: Keys) -> tuple[dict[str, str], int] | None:
        flat = self._run("load", [keys.session, keys.index],
                         [self.expiry * 1000, int(self.refresh_slack * 1000)])
        if not flat:
            return None
        fields, version = {}, 0
        for name, value in zip(flat[::2], flat[1::2]):
            if name == b"v":
                version = int(value)
            elif name.startswith(b"d:"):
                fields[name[2:].decode()] = value.decode()
        return fields, version

    def _write(self, keys: Keys, changed: Mapping[str, str], removed: Iterable[str], merge: bool) -> int | None:
        args: list = ["1" if merge else "0", self.expiry * 1000, len(changed)]
        for name, value in changed.items():
            args += ("d:" + name, value)
        args += ["d:" + name for name in removed]
        version = self._run("write", [keys.session, keys.index], args)
        return None if version is None else int(version)

    def _delete(self, keys: Keys) -> None:
        self._run("delete", [keys.session, keys.index], [])

    def _delete_indexes(self, indexes: list[str], keep: str | None) -> None:
        pipe = self.client.pipeline(transaction=False)
        for index in indexes:
            self._scripts["delete_index"](keys=[index], args=[keep or ""], client=pipe)
        pipe.execute()

    def _existing_indexes(self, indexes: list[str]) -> set[str]:
        pipe = self.client.pipeline(transaction=False)
        for index in indexes:
            pipe.exists(index)
        return {index for index, found in zip(indexes, pipe.execute()) if found}

    def _purge_expired(self) -> int:
        return 0  # Redis expires keys itself.

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.connection_pool.disconnect()
        self._client = None
