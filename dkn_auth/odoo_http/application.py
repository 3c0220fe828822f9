"""Odoo 16.0-19.0: the store behind ``odoo.http.Application.session_store``.

It subclasses Odoo's own FilesystemSessionStore so that key generation and validation,
``new()`` and hard/soft ``rotate`` stay Odoo's code for the running series; only the verbs
that touch storage are redirected to the dkn_auth store.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator

import odoo.http
import werkzeug.exceptions
from odoo.service import security
from odoo.tools import config as odoo_config

from ..store import (
    IDENTIFIER_LENGTH,
    IDENTIFIER_RE,
    BackendUnavailable,
    InvalidSessionId,
    SessionGone,
    SessionStore,
    StoredSession,
)

_logger = logging.getLogger(__name__)


class Session(odoo.http.Session):
    """Odoo's session, remembering what was loaded so that a save writes only the changes."""

    # 16.0-18.0 route attribute writes by ``key in self.__slots__``, so list the parent's too.
    __slots__ = (*odoo.http.Session.__slots__, "dkn_stored")

    def __init__(self, data, sid, new=False):
        super().__init__(data, sid, new)
        self.dkn_stored = None


class SessionStoreUnavailable(werkzeug.exceptions.ServiceUnavailable):
    """HTTP 503 with Retry-After, for a request that needs a session while the backend is down."""

    def __init__(self, cause: BackendUnavailable) -> None:
        super().__init__("Sessions are unavailable for a moment; please retry.",
                         retry_after=max(1, math.ceil(cause.retry_after)))
        self._response = self.get_response()

    # Odoo 16.0-19.0 answer an exception that carries an ``error_response`` with it. Inside a
    # route, 17.0/18.0 overwrite it with their JSON-RPC error page (status 200): keep the 503.
    @property
    def error_response(self):
        return self._response

    @error_response.setter
    def error_response(self, _ignored) -> None:
        pass


@contextlib.contextmanager
def _http_503() -> Iterator[None]:
    try:
        yield
    except BackendUnavailable as exc:
        raise SessionStoreUnavailable(exc) from exc


def _needs_no_session() -> bool:
    """Static files and the health check work without a session in Odoo 16+, so they should
    keep working while the session backend is down."""
    request = odoo.http.request
    if not request:
        return False
    path = request.httprequest.path
    return path == "/web/health" or bool(odoo.http.root.get_static_file(path))


class OdooSessionStore(odoo.http.FilesystemSessionStore):
    def __init__(self, backend: SessionStore) -> None:
        # The folder is never written; Odoo code reading ``.path`` still finds a real one.
        super().__init__(odoo_config.session_dir, session_class=Session, renew_missing=True)
        self.backend = backend

    def get(self, sid):
        if not self.is_valid_key(sid):
            return self.new()
        try:
            stored = self.backend.load(sid)
        except BackendUnavailable as exc:
            if not _needs_no_session():
                raise SessionStoreUnavailable(exc) from exc
            # Never a new session (a new cookie would log the user out): an empty one that
            # cannot be saved, under the same sid.
            session = self.session_class({}, sid, False)
            session.can_save = False
            return session
        if stored is None:
            return self.session_class({}, sid, True)
        session = self.session_class(stored.data, sid, False)
        session.dkn_stored = stored
        return session

    def save(self, session):
        try:
            with _http_503():
                stored = self.backend.save(session.sid, dict(session), _stored(session))
        except SessionGone as exc:
            # Logged out, rotated or revoked by another request meanwhile: writing now would
            # bring the session back.
            _logger.info("dkn_auth: not saved: %s", exc)
            return
        if isinstance(session, Session):
            session.dkn_stored = stored

    def delete(self, session):
        with _http_503():
            self.backend.delete(session.sid)
        if isinstance(session, Session):
            session.dkn_stored = None

    def rotate(self, session, env, soft=False):
        if not soft:  # 16.0-18.0 rotate(session, env); 19.0 hard rotation
            return super().rotate(session, env)
        return self._soft_rotate(session, env)

    def _soft_rotate(self, session, env):
        """Odoo 19's soft rotation, with the claim of the successor and its creation made one
        atomic store call, so concurrent requests of a session converge on one successor."""
        stored = _stored(session)
        if stored is None or stored.sid != session.sid:
            return super().rotate(session, env, soft=True)  # not loaded by this store: Odoo's way
        old_sid = session.sid
        next_sid = old_sid[:IDENTIFIER_LENGTH] + self.generate_key()[IDENTIFIER_LENGTH:]
        old_data = {**session, "next_sid": next_sid,
                    "deletion_time": time.time() + odoo.http.SESSION_DELETION_TIMER}
        new_data = {**session, "gc_previous_sessions": True, "create_time": time.time()}
        if session.uid:
            session.sid = next_sid  # the token is computed from the sid
            try:
                new_data["session_token"] = security.compute_session_token(session, env)
            finally:
                session.sid = old_sid
        try:
            with _http_503():
                outcome = self.backend.soft_rotate(stored, old_data, next_sid, new_data)
        except SessionGone as exc:
            _logger.info("dkn_auth: not rotated: %s", exc)
            return
        session.should_rotate = False
        if isinstance(outcome, str):  # a concurrent request rotated first: follow it, as Odoo does
            session.sid = outcome
            session.dkn_stored = None
            return
        session.sid = next_sid
        for key, value in new_data.items():
            session[key] = value
        session.dkn_stored = outcome

    def vacuum(self, *args, **kwargs):
        # Odoo passes max_lifetime; the lifetime here is dkn_auth_expiry, enforced by the backend.
        self.backend.purge_expired()

    def delete_from_identifiers(self, identifiers):
        identifiers = list(identifiers)
        try:
            with _http_503():
                self.backend.delete_identifiers(identifiers)
        except InvalidSessionId:
            if odoo.release.version_info[0] >= 19:
                raise ValueError("Identifier format incorrect, did you pass in a string instead of a list?") from None
            # 18.0 skips malformed identifiers.
            valid = [i for i in identifiers if isinstance(i, str) and IDENTIFIER_RE.match(i)]
            self.backend.delete_identifiers(valid)

    def get_missing_session_identifiers(self, identifiers):
        return self.backend.missing_identifiers(identifiers)

    def delete_old_sessions(self, session):
        # Odoo 19: after a soft rotation, drop the previous sessions of this device. Odoo's own
        # version deletes the current session too and saves it again; here it is never absent.
        deadline = session.get("create_time", 0) + odoo.http.SESSION_DELETION_TIMER
        if "gc_previous_sessions" in session and deadline < time.time():
            self.backend.delete_identifiers([session.sid[:IDENTIFIER_LENGTH]], keep_sid=session.sid)
            del session["gc_previous_sessions"]
            self.save(session)

    def list(self):
        raise NotImplementedError("dkn_auth does not list sessions: it would scan the whole backend")


def _stored(session) -> StoredSession | None:
    """What this store loaded for ``session``; None for a session made elsewhere (16.0-18.0
    sessions answer any unknown attribute from their data, so no getattr)."""
    return session.dkn_stored if isinstance(session, Session) else None


def install(backend: SessionStore) -> None:
    store = OdooSessionStore(backend)
    # A plain class attribute replaces the lazy/cached property; drop a value already cached
    # on the instance, if any request ran before this.
    odoo.http.Application.session_store = store
    odoo.http.root.__dict__.pop("session_store", None)
