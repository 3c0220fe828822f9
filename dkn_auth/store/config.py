"""Settings of dkn_auth: declared once here, read from odoo.conf options and DKN_AUTH_* variables.

Every setting has an odoo.conf key ``dkn_auth_<name>`` and an environment variable
``DKN_AUTH_<NAME>``; the environment variable wins when both are set, so a container can
override a baked-in odoo.conf. The README's configuration table is checked against SETTINGS
by the test suite.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a value dkn_auth cannot use; the message names key, problem and fix."""


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    example: str

    @property
    def conf_key(self) -> str:
        return f"dkn_auth_{self.name}"

    @property
    def env_var(self) -> str:
        return f"DKN_AUTH_{self.name.upper()}"


def _driver(value: str) -> str:
    value = value.strip().lower()
    if value not in ("db", "redis"):
        raise ValueError("must be 'db' (PostgreSQL) or 'redis'")
    return value


_PREFIX_RE = re.compile(r"\A[!-~]{0,64}\Z")


def _prefix(value: str) -> str:
    # Braces would collide with the Redis Cluster hash tag the stores put after the prefix.
    if not _PREFIX_RE.match(value) or "{" in value or "}" in value:
        raise ValueError("must be at most 64 printable ASCII characters without spaces or braces")
    return value


def _positive_int(value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError("must be a whole number") from None
    if number < 1:
        raise ValueError("must be 1 or more")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 < number <= 600:
        raise ValueError("must be more than 0 and at most 600 seconds")
    return number


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _hosts(value: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in value.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("must be host:port pairs separated by commas")
        hosts.append((host.strip("[]"), int(port)))
    return tuple(hosts)


def _text(value: str) -> str:
    return value.strip()


def _file(value: str) -> str:
    import os

    value = value.strip()
    if not os.path.isfile(value):
        raise ValueError("names no readable file")
    return value


def _redis_uri(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must start with redis://, rediss:// or unix://")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ValueError("names no host")
        try:
            parts.port  # noqa: B018 -- raises on a non-numeric port
        except ValueError:
            raise ValueError("has a port that is not a number") from None
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError("has a database number that is not a number")
    elif not parts.path:
        raise ValueError("names no socket path")
    return value


def _db_uri(value: str) -> str:
    import psycopg2.extensions

    value = value.strip()
    try:
        dsn = psycopg2.extensions.parse_dsn(value)
    except psycopg2.ProgrammingError as exc:
        raise ValueError(f"is not a libpq URI or DSN ({str(exc).strip()})") from None
    if not dsn.get("dbname"):
        raise ValueError("names no database")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("driver", None, _driver, "Session backend: `db` (PostgreSQL) or `redis`. Mandatory.", "redis"),
    Setting("prefix", "session:", _prefix,
            "Prefix of every key (Redis) and row key (PostgreSQL); clusters sharing one backend "
            "need different prefixes.", "session:prod:"),
    Setting("expiry", 604800, _positive_int,
            "Session lifetime in seconds, counted from the session's last use (sliding).", "604800"),
    Setting("redis_uri", "redis://localhost:6379/1", _redis_uri,
            "Redis URI (`redis://`, `rediss://`, `unix://`), with user, password and database number.",
            "redis://:secret@redis:6379/1"),
    Setting("redis_max_conn", 64, _positive_int,
            "Most Redis connections one Odoo process opens; a request waits for a free one.", "64"),
    Setting("db_uri", None, _db_uri,
            "PostgreSQL URI or DSN of the sessions database. Unset: Odoo's own db_host/db_port/"
            "db_user/db_password and the first db_name.", "postgresql://odoo@pg/sessions"),
    Setting("db_max_conn", 16, _positive_int,
            "Most PostgreSQL connections one Odoo process opens; a request waits for a free one.", "16"),
    Setting("redis_sentinels", None, _hosts,
            "Redis Sentinel addresses; set, the master is found through them (auth and TLS of the "
            "master from `dkn_auth_redis_uri`, whose host is then ignored).", "s1:26379,s2:26379,s3:26379"),
    Setting("redis_sentinel_master", "mymaster", _text, "Name of the master the sentinels watch.", "mymaster"),
    Setting("redis_sentinel_username", None, _text, "ACL user for the sentinels (not the master's).", "sentinel"),
    Setting("redis_sentinel_password", None, _text, "Password for the sentinels (not the master's).", "secret"),
    Setting("redis_cluster", False, _boolean,
            "`true`: `dkn_auth_redis_uri` names one node of a Redis Cluster.", "true"),
    Setting("redis_tls_ca", None, _file,
            "CA file to verify the Redis server with `rediss://` (default: the system's CAs).",
            "/etc/ssl/redis-ca.pem"),
    Setting("redis_tls_cert", None, _file, "Client certificate for `rediss://`, when Redis asks for one.",
            "/etc/ssl/odoo.pem"),
    Setting("redis_tls_key", None, _file, "Key of `dkn_auth_redis_tls_cert`.", "/etc/ssl/odoo.key"),
    Setting("timeout", 2.0, _seconds,
            "The most one request waits on the session backend, retries included.", "2"),
    Setting("connect_timeout", 0.5, _seconds,
            "The most one connection attempt to the backend takes.", "0.5"),
)


@dataclasses.dataclass(frozen=True)
class Config:
    driver: str
    prefix: str = "session:"
    expiry: int = 604800
    redis_uri: str = "redis://localhost:6379/1"
    redis_max_conn: int = 64
    db_uri: str | None = None
    db_max_conn: int = 16
    timeout: float = 2.0
    connect_timeout: float = 0.5
    redis_sentinels: tuple[tuple[str, int], ...] | None = None
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_username: str | None = None
    redis_sentinel_password: str | None = None
    redis_cluster: bool = False
    redis_tls_ca: str | None = None
    redis_tls_cert: str | None = None
    redis_tls_key: str | None = None


def load_config(
    options: Mapping[str, Any], environ: Mapping[str, str], default_db_uri: str | None = None
) -> Config:
    """Read every setting; raise ConfigError naming the first bad one and how to fix it.

    ``default_db_uri`` is the framework's own database, used by the ``db`` driver when
    ``dkn_auth_db_uri`` is not set.
    """
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw, source = environ.get(setting.env_var), setting.env_var
        if raw is None or raw == "":
            raw, source = options.get(setting.conf_key), setting.conf_key
        # Odoo reports an odoo.conf key that is absent as None or False.
        if raw is None or raw is False or (isinstance(raw, str) and raw.strip() == ""):
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(
                f"dkn_auth: {source} = {_shown(setting, raw)} {exc}; "
                f"fix: set {setting.conf_key} in odoo.conf or {setting.env_var}, e.g. {setting.example}"
            ) from None
    if values["driver"] is None:
        raise ConfigError(
            "dkn_auth: dkn_auth_driver is not set; fix: set dkn_auth_driver = db or redis "
            "in odoo.conf (or DKN_AUTH_DRIVER)"
        )
    if values["redis_sentinels"] and values["redis_cluster"]:
        raise ConfigError("dkn_auth: dkn_auth_redis_sentinels and dkn_auth_redis_cluster are both set; "
                          "fix: keep the one your Redis runs")
    tls = [s.conf_key for s in SETTINGS if s.name.startswith("redis_tls_") and values[s.name]]
    if tls and not values["redis_uri"].startswith("rediss://"):
        raise ConfigError(f"dkn_auth: {tls[0]} is set but dkn_auth_redis_uri is not rediss://; "
                          "fix: use rediss://host:port/db for TLS")
    if bool(values["redis_tls_cert"]) != bool(values["redis_tls_key"]):
        raise ConfigError("dkn_auth: dkn_auth_redis_tls_cert and dkn_auth_redis_tls_key go together; "
                          "fix: set both or neither")
    if values["driver"] == "db" and values["db_uri"] is None:
        if not default_db_uri:
            raise ConfigError(
                "dkn_auth: the db driver has no database: dkn_auth_db_uri is not set and Odoo's "
                "db_name is empty; fix: set dkn_auth_db_uri = postgresql://user@host/dbname "
                "(or DKN_AUTH_DB_URI), or db_name"
            )
        values["db_uri"] = default_db_uri
    return Config(**values)


def _shown(setting: Setting, raw: Any) -> str:
    """The value for a log line, without a password a URI may carry."""
    text = str(raw)
    if setting.name.endswith("_password"):
        text = "***"
    elif setting.name.endswith("_uri"):
        text = redact_uri(text)
    return repr(text)


def redact_uri(uri: str) -> str:
    """Replace the password of a URI (or a DSN's password=...) with ***."""
    uri = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", uri)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", uri)
