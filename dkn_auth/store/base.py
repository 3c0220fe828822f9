"""What every session store shares: sid checks, storage keys, encoding, change tracking.

A driver (redis_store.py, postgres_store.py) implements only the storage verbs at the bottom
of SessionStore, on keys this module derived; it never sees a session id.

Data model, the same for every driver:

* A session is stored as fields: each top-level session key maps to its value encoded as
  JSON text (codec.py), plus a version number that grows with every write.
* Its storage key is ``<prefix>{<H(identifier)>}:<H(sid)>``, H a one-way hash, so a copy of
  the backend holds no usable session id. ``identifier`` is ``sid[:42]``, the part Odoo 18+
  keeps in res.device.log; the braces make it the Redis Cluster hash tag, so every key of one
  device shares a slot.
* Its index key is ``<prefix>{<H(identifier)>}``: the sessions sharing an identifier (Odoo 19
  soft rotation keeps the first 42 characters), so that removing a device costs one lookup.
* A save writes only the fields the request changed, merged atomically onto the stored
  session, and only onto the same generation (life) of the session the request loaded: a
  logged-out, rotated or revoked session is never written again. A version counts writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from . import codec
from .config import Config
from .policy import FailurePolicy

_logger = logging.getLogger(__name__)

# Odoo 14-17 session ids are 40 hex digits; Odoo 18+ ids are 84 URL-safe base64 characters.
SID_RE = re.compile(r"\A(?:[a-f0-9]{40}|[A-Za-z0-9_-]{84})\Z")
IDENTIFIER_LENGTH = 42
IDENTIFIER_RE = re.compile(r"\A(?:[a-f0-9]{40}|[A-Za-z0-9_-]{42})\Z")


class InvalidSessionId(ValueError):
    """A session id or identifier does not have a format Odoo generates."""


class SessionGone(Exception):
    """A save found that the session it loaded was deleted or rotated away meanwhile."""


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).hexdigest()


def identifier(sid: str) -> str:
    """The non-secret part of a sid that Odoo 18+ stores per device (the whole sid before 18)."""
    return sid[:IDENTIFIER_LENGTH]


@dataclasses.dataclass(frozen=True)
class Keys:
    session: str
    index: str

    @property
    def tag(self) -> str:
        """A short, non-secret name of the session for log lines."""
        return self.session[-8:]


@dataclasses.dataclass(frozen=True)
class StoredSession:
    """A session as one load or save left it; hand it back to ``save`` to write only changes.

    ``generation`` names one life of a session: it is drawn when the session is created, so a
    session deleted and created again under the same sid is another generation.
    """

    sid: str
    data: dict[str, Any]
    fields: Mapping[str, str]
    version: int
    generation: str


def _new_generation() -> str:
    return secrets.token_hex(8)


def _encode(data: Mapping[str, Any]) -> dict[str, str]:
    return {name: codec.encode(value) for name, value in data.items()}


def _changes(loaded: StoredSession, data: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """``data`` encoded, the fields that differ from ``loaded``, and the names it no longer has."""
    fields = _encode(data)
    changed = {k: v for k, v in fields.items() if loaded.fields.get(k) != v}
    removed = [k for k in loaded.fields if k not in fields]
    return fields, changed, removed


class SessionStore(ABC):
    """Sessions by sid: load, save, delete, and removal by device identifier."""

    def __init__(self, config: Config, backend: str, attempt_timeout: float = 0.0) -> None:
        self.config = config
        self.prefix = config.prefix
        self.expiry = config.expiry
        # Sliding expiry without a write per request: a read pushes the expiry back only when
        # it moved by more than this many seconds since the last push.
        self.refresh_slack = min(60.0, config.expiry / 10)
        self.policy = FailurePolicy(backend, config.timeout, attempt_timeout)

    def keys(self, sid: str) -> Keys:
        if not isinstance(sid, str) or not SID_RE.match(sid):
            raise InvalidSessionId("not a session id Odoo generates")
        index = f"{self.prefix}{{{_digest(identifier(sid))}}}"
        return Keys(session=f"{index}:{_digest(sid)}", index=index)

    def index_key(self, ident: str) -> str:
        if not isinstance(ident, str) or not IDENTIFIER_RE.match(ident):
            raise InvalidSessionId("not a session identifier Odoo generates")
        return f"{self.prefix}{{{_digest(ident)}}}"

    def load(self, sid: str) -> StoredSession | None:
        """The live session of ``sid``, its expiry pushed back; None if unknown, expired or unreadable.

        An unreadable session is deleted: nobody can use it, and a new one may take its sid.
        """
        keys = self.keys(sid)
        found = self._load(keys)
        if found is None:
            return None
        fields, version, generation = found
        try:
            data = {name: codec.decode(text) for name, text in fields.items()}
        except codec.UndecodableValue as exc:
            _logger.warning("dkn_auth: session …%s has an unreadable payload (%s); deleted and "
                            "treated as no session", keys.tag, exc)
            self._delete(keys)
            return None
        return StoredSession(sid, data, fields, version, generation)

    def save(self, sid: str, data: Mapping[str, Any], loaded: StoredSession | None) -> StoredSession:
        """Store ``data`` under ``sid``; only what this request changed is written.

        ``loaded`` is what ``load`` (or the last ``save``) returned for this request. The keys
        whose value differs from it are written and the keys it had that ``data`` lacks are
        removed, merged onto the stored session in one atomic step, so concurrent requests keep
        each other's changes. If that session was deleted, expired or replaced meanwhile
        (logout, rotation, revocation), nothing is written and SessionGone is raised.

        Without ``loaded`` (a new session, or another sid) the session is created; should a
        concurrent request have created it first, ``data`` is merged onto that one.
        """
        keys = self.keys(sid)
        if loaded is not None and loaded.sid == sid:
            fields, changed, removed = _changes(loaded, data)
            written = self._write(keys, changed, removed, loaded.generation, create=False)
            if written is None:
                raise SessionGone(f"session …{keys.tag} was deleted or rotated before this save")
        else:
            fields = _encode(data)
            written = self._write(keys, fields, (), _new_generation(), create=True)
        version, generation = written
        return StoredSession(sid, dict(data), fields, version, generation)

    def soft_rotate(self, loaded: StoredSession, old_data: Mapping[str, Any], new_sid: str,
                    new_data: Mapping[str, Any], claim: str = "next_sid") -> StoredSession | str:
        """Odoo 19's soft rotation, made atomic: at most one successor per session.

        If the stored session still has no ``claim`` key, save ``old_data`` onto it (it names
        ``new_sid`` under ``claim``) and create ``new_sid`` with ``new_data``, in one step; return
        the new session. If a concurrent request rotated first, write nothing and return the
        successor sid it stored. SessionGone if the session no longer exists.
        """
        old_keys, new_keys = self.keys(loaded.sid), self.keys(new_sid)
        if identifier(new_sid) != identifier(loaded.sid):
            raise InvalidSessionId("a soft rotation keeps the session identifier")
        _, changed, removed = _changes(loaded, old_data)
        new_fields = _encode(new_data)
        generation = _new_generation()
        outcome = self._soft_rotate(old_keys, loaded.generation, changed, removed, claim,
                                    new_keys, new_fields, generation)
        if outcome is None:
            raise SessionGone(f"session …{old_keys.tag} was deleted or rotated before its rotation")
        if isinstance(outcome, str):
            return codec.decode(outcome)
        return StoredSession(new_sid, dict(new_data), new_fields, outcome, generation)

    def delete(self, sid: str) -> None:
        self._delete(self.keys(sid))

    def delete_identifiers(self, identifiers: Iterable[str], keep_sid: str | None = None) -> None:
        """Delete every session of these identifiers, except ``keep_sid``'s own."""
        indexes = [self.index_key(ident) for ident in identifiers]
        if indexes:
            self._delete_indexes(indexes, self.keys(keep_sid).session if keep_sid else None)

    def missing_identifiers(self, identifiers: Iterable[str]) -> set[str]:
        """The identifiers that have no live session."""
        wanted = {self.index_key(ident): ident for ident in identifiers}
        if not wanted:
            return set()
        present = self._existing_indexes(list(wanted))
        return {ident for index, ident in wanted.items() if index not in present}

    def purge_expired(self) -> int:
        """Remove what expired, where the backend does not do it by itself; returns a count."""
        return self._purge_expired()

    # -- storage verbs, one implementation per driver ------------------------------------

    @abstractmethod
    def _load(self, keys: Keys) -> tuple[dict[str, str], int, str] | None:
        """Fields, version and generation of a live session, pushing its expiry back (see refresh_slack)."""

    @abstractmethod
    def _write(self, keys: Keys, changed: Mapping[str, str], removed: Iterable[str], generation: str,
               create: bool) -> tuple[int, str] | None:
        """Apply ``changed``/``removed`` to a live session atomically, reset its expiry; return its
        new version and its generation.

        create=False: only onto the live session of that ``generation``; else None, nothing written.
        create=True: create it with that ``generation`` if there is no live session, else merge.
        """

    @abstractmethod
    def _soft_rotate(self, old: Keys, generation: str, changed: Mapping[str, str], removed: Iterable[str],
                     claim: str, new: Keys, new_fields: Mapping[str, str], new_generation: str) -> int | str | None:
        """Atomically: None if ``old`` is not live with ``generation``; the stored value of field
        ``claim`` if it has one; else apply ``changed``/``removed`` to ``old``, create ``new`` and
        return the new session's version."""

    @abstractmethod
    def _delete(self, keys: Keys) -> None: ...

    @abstractmethod
    def _delete_indexes(self, indexes: list[str], keep: str | None) -> None:
        """Delete every session listed under these index keys, except the session key ``keep``."""

    @abstractmethod
    def _existing_indexes(self, indexes: list[str]) -> set[str]: ...

    @abstractmethod
    def _purge_expired(self) -> int: ...

    @abstractmethod
    def close(self) -> None:
        """Close this process's connections."""
