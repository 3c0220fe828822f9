"""The storage core of dkn_auth: configuration, codec and session stores. Imports nothing from Odoo."""

from __future__ import annotations

from .base import IDENTIFIER_LENGTH, IDENTIFIER_RE, InvalidSessionId, SessionGone, SessionStore, StoredSession
from .config import SETTINGS, Config, ConfigError, load_config
from .policy import BackendUnavailable

__all__ = [
    "IDENTIFIER_LENGTH", "IDENTIFIER_RE", "SETTINGS", "BackendUnavailable", "Config", "ConfigError",
    "InvalidSessionId", "SessionGone", "SessionStore", "StoredSession", "load_config", "open_store",
]


def open_store(config: Config) -> SessionStore:
    """The store ``config`` asks for; no connection is opened until it is first used."""
    if config.driver == "redis":
        from .redis_store import RedisStore

        return RedisStore(config)
    from .postgres_store import PostgresStore

    return PostgresStore(config)
