"""Redis driver: a session is a hash, its device index a set, both expiring by Redis TTL.

Hash fields: ``d:<session key>`` → JSON text, ``v`` → version, ``g`` → generation. Every verb is one Lua script
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

# KEYS: session, index. ARGV: generation, create (1|0), ttl ms, number of changed fields, the
# changed fields as name, value pairs, then the names of removed fields.
# Writes only onto the live session of that generation; with create, makes one if none lives.
_WRITE = """
local generation, create, ttl, n = ARGV[1], ARGV[2] == '1', ARGV[3], tonumber(ARGV[4])
local stored = redis.call('HGET', KEYS[1], 'g')
if not stored then
  if not create then return false end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'g', generation)
  stored = generation
elseif stored ~= generation and not create then
  return false
end
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + 2 * n)) end
if #ARGV > 4 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 5 + 2 * n)) end
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return {version, stored}
"""

# KEYS: old session, index, new session (one hash slot: same identifier). ARGV: generation of
# old, ttl ms, claim field, then n + n pairs of changed fields, n + n names of removed fields of
# old, then the new generation, n + n pairs of fields of the new session.
_SOFT_ROTATE = """
local generation, ttl, claim = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', KEYS[1], 'g') ~= generation then return false end
local winner = redis.call('HGET', KEYS[1], claim)
if winner then return winner end
local i = 4
local n = tonumber(ARGV[i])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, i + 1, i + 2 * n)) end
i = i + 1 + 2 * n
n = tonumber(ARGV[i])
if n > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, i + 1, i + n)) end
i = i + 1 + n
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('PEXPIRE', KEYS[1], ttl)
local new_generation = ARGV[i]
n = tonumber(ARGV[i + 1])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'g', new_generation, 'v', 1)
if n > 0 then redis.call('HSET', KEYS[3], unpack(ARGV, i + 2, i + 1 + 2 * n)) end
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('SADD', KEYS[2], KEYS[3])
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
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


def _pairs(fields: Mapping[str, str]) -> list:
    """A count, then name, value, name, value… with the hash's data prefix."""
    flat: list = [len(fields)]
    for name, value in fields.items():
        flat += ("d:" + name, value)
    return flat


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
                for name, source in (("load", _LOAD), ("write", _WRITE), ("soft_rotate", _SOFT_ROTATE),
                                     ("delete", _DELETE), ("delete_index", _DELETE_INDEX))
            }
            self._client, self._pid = client, os.getpid()
        return self._client

    def _run(self, script: str, keys: list[str], args: list) -> object:
        client = self.client
        return self._scripts[script](keys=keys, args=args, client=client)

    def _load(self, keys: Keys) -> tuple[dict[str, str], int, str] | None:
        flat = self._run("load", [keys.session, keys.index],
                         [self.expiry * 1000, int(self.refresh_slack * 1000)])
        fields, version, generation = {}, 0, None
        for name, value in zip(flat[::2], flat[1::2]):
            if name.startswith(b"d:"):
                fields[name[2:].decode()] = value.decode()
            elif name == b"v":
                version = int(value)
            elif name == b"g":
                generation = value.decode()
        if generation is None:  # nothing stored, or a hash dkn_auth did not write
            return None
        return fields, version, generation

    def _write(self, keys: Keys, changed: Mapping[str, str], removed: Iterable[str], generation: str,
               create: bool) -> tuple[int, str] | None:
        args: list = [generation, "1" if create else "0", self.expiry * 1000, *_pairs(changed)]
        args += ["d:" + name for name in removed]
        written = self._run("write", [keys.session, keys.index], args)
        return None if written is None else (int(written[0]), written[1].decode())

    def _soft_rotate(self, old: Keys, generation: str, changed: Mapping[str, str], removed: Iterable[str],
                     claim: str, new: Keys, new_fields: Mapping[str, str], new_generation: str) -> int | str | None:
        removed = ["d:" + name for name in removed]
        args: list = [generation, self.expiry * 1000, "d:" + claim, *_pairs(changed), len(removed), *removed,
                      new_generation, *_pairs(new_fields)]
        outcome = self._run("soft_rotate", [old.session, old.index, new.session], args)
        return outcome.decode() if isinstance(outcome, bytes) else outcome

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
