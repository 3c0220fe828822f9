"""Redis driver: a session is a hash, its device index a set, both expiring by Redis TTL.

Hash fields: ``d:<session key>`` → JSON text, ``v`` → version, ``g`` → generation. Every verb
is one Lua script call, so a load or a save is one round trip and atomic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.exceptions import ClusterDownError, MasterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError
from redis.retry import Retry
from redis.sentinel import Sentinel

from .base import Keys, SessionStore
from .config import Config, redact_uri
from .policy import BackendUnavailable

T = TypeVar("T")

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
  -- HSET first: a full Redis refuses a script's first write that needs memory, and only that.
  redis.call('HSET', KEYS[1], 'g', generation)
  local names = redis.call('HKEYS', KEYS[1])
  if #names > 1 then  -- leftovers of a hash without generation: start clean
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'g', generation)
  end
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


def _transient(exc: BaseException) -> bool:
    """Errors another attempt may not meet: lost connections, timeouts, a failover under way."""
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, ReadOnlyError, TryAgainError,
                            ClusterDownError, MasterDownError))


class RedisStore(SessionStore):
    def __init__(self, config: Config) -> None:
        # redis-py cannot bound one command by the time left, so a command gets a quarter of
        # the request's bound, and attempts run while a whole one still fits (see policy.py).
        self.command_timeout = config.timeout / 4
        self.connect_timeout = min(config.connect_timeout, config.timeout / 4)
        where = (f"Redis master {config.redis_sentinel_master!r} of sentinels "
                 f"{','.join(f'{h}:{p}' for h, p in config.redis_sentinels)}" if config.redis_sentinels
                 else f"Redis at {redact_uri(config.redis_uri)}")
        super().__init__(config, where, attempt_timeout=self.command_timeout + self.connect_timeout)
        self.uri = config.redis_uri
        self.max_connections = config.redis_max_conn
        self._client: redis.Redis | None = None
        self._pid = 0

    @property
    def client(self) -> redis.Redis:
        # Opened on first use in each process: prefork workers are forked after this object
        # exists, and must not share the parent's sockets.
        if self._client is None or self._pid != os.getpid():
            client = self._connect()
            self._scripts = {
                name: client.register_script(source)
                for name, source in (("load", _LOAD), ("write", _WRITE), ("soft_rotate", _SOFT_ROTATE),
                                     ("delete", _DELETE), ("delete_index", _DELETE_INDEX))
            }
            self._client, self._pid = client, os.getpid()
        return self._client

    def _connect(self) -> redis.Redis:
        """A client for a plain server, a Sentinel-watched master or a Cluster, as configured."""
        config = self.config
        options: dict = {
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.command_timeout,
            "retry": Retry(NoBackoff(), 0),  # retries are the policy's, within the time bound
            "health_check_interval": 30,
            "client_name": "dkn_auth",
        }
        if config.redis_uri.startswith("rediss://"):
            # Verification stays on (redis-py's default for rediss://); these only add files.
            options.update({k: v for k, v in (("ssl_ca_certs", config.redis_tls_ca),
                                              ("ssl_certfile", config.redis_tls_cert),
                                              ("ssl_keyfile", config.redis_tls_key)) if v})
        if config.redis_cluster:
            return RedisCluster.from_url(self.uri, max_connections=self.max_connections, **options)
        if config.redis_sentinels:
            master = parse_url(self.uri)  # auth, database and TLS of the master
            for key in ("host", "port", "path"):
                master.pop(key, None)
            if master.pop("connection_class", None) is redis.SSLConnection:
                master["ssl"] = True  # Sentinel picks its own connection classes
            sentinel = Sentinel(
                config.redis_sentinels,
                sentinel_kwargs={"username": config.redis_sentinel_username,
                                 "password": config.redis_sentinel_password,
                                 "socket_connect_timeout": self.connect_timeout,
                                 "socket_timeout": self.command_timeout},
                **master, **options)
            return sentinel.master_for(config.redis_sentinel_master, max_connections=self.max_connections)
        pool = redis.BlockingConnectionPool.from_url(
            self.uri, max_connections=self.max_connections,
            timeout=self.command_timeout,  # waiting for a free connection, within one attempt
            **options)
        return redis.Redis(connection_pool=pool)

    def _call(self, attempt: Callable[[redis.Redis], T]) -> T:
        try:
            return self.policy.call(lambda _seconds_left: attempt(self.client), _transient)
        except OutOfMemoryError as exc:
            # maxmemory reached under a no-eviction policy: reads work, writes cannot.
            raise BackendUnavailable(f"dkn_auth: {self.policy.backend} is full (maxmemory): {exc}",
                                     self.policy.probe_interval) from exc

    def _run(self, script: str, keys: list[str], args: list) -> object:
        return self._call(lambda client: self._scripts[script](keys=keys, args=args, client=client))

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
        for index in indexes:  # one call each: a Cluster routes each to its own node
            self._run("delete_index", [index], [keep or ""])

    def _existing_indexes(self, indexes: list[str]) -> set[str]:
        def attempt(client: redis.Redis) -> list:
            pipe = client.pipeline(transaction=False)
            for index in indexes:
                pipe.exists(index)
            return pipe.execute()

        return {index for index, found in zip(indexes, self._call(attempt)) if found}

    def _purge_expired(self) -> int:
        return 0  # Redis expires keys itself.

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
            pool = getattr(self._client, "connection_pool", None)  # a Cluster client has none
            if pool is not None:
                pool.disconnect()
        self._client = None
