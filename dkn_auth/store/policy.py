"""How a store bears a slow, failing or absent backend: one time bound, retries, a breaker.

Both drivers hand every backend call to ``FailurePolicy.call`` with a predicate saying which
errors are worth another try; the policy owns the deadline, the backoff and the circuit
breaker, so no call site carries its own.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

_logger = logging.getLogger(__name__)
T = TypeVar("T")


class BackendUnavailable(Exception):
    """The session backend could not answer in time; the message names it and the cause."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FailurePolicy:
    """Deadline, retries with backoff and jitter, and a circuit breaker, for one backend.

    A call gets ``timeout`` seconds in all; each attempt gets the time left, and a driver whose
    socket waits cannot follow that says how long one attempt may take (``attempt_timeout``):
    no attempt starts that could end after the deadline. Transient errors are tried again after
    a jittered, doubling pause while time is left. After ``failures_to_open`` calls in a row
    fail, the breaker opens: calls then fail at once, except one probe every ``probe_interval``
    seconds, whose success closes it again. One log line is written when an outage starts, one when it ends.
    """

    def __init__(self, backend: str, timeout: float, attempt_timeout: float = 0.0, failures_to_open: int = 3,
                 probe_interval: float = 0.5, first_backoff: float = 0.02) -> None:
        self.backend = backend
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.failures_to_open = failures_to_open
        self.probe_interval = probe_interval
        self.first_backoff = first_backoff
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0  # monotonic time before which calls fail at once; 0: closed
        self._probing = False
        self._outage_cause: str | None = None

    def call(self, attempt: Callable[[float], T], transient: Callable[[BaseException], bool]) -> T:
        """``attempt(seconds_left)`` until it returns, raises a non-transient error, or time is up."""
        probe = self._admit()
        deadline = time.monotonic() + self.timeout
        backoff = self.first_backoff
        while True:
            try:
                result = attempt(max(deadline - time.monotonic(), 0.001))
            except Exception as exc:
                if not transient(exc):
                    self._settle(probe, None)
                    raise
                pause = backoff * random.uniform(0.5, 1.5)
                if time.monotonic() + pause + self.attempt_timeout >= deadline:
                    cause = _describe(exc)
                    self._settle(probe, cause)
                    raise BackendUnavailable(f"dkn_auth: {self.backend} did not answer within "
                                             f"{self.timeout:g} s: {cause}", self.probe_interval) from exc
                time.sleep(pause)
                backoff *= 2
            else:
                self._settle(probe, None)
                return result

    def _admit(self) -> bool:
        """Let a call through (True: as the breaker's probe) or fail it at once."""
        with self._lock:
            if not self._open_until:
                return False
            now = time.monotonic()
            if now >= self._open_until and not self._probing:
                self._probing = True
                return True
            cause = self._outage_cause
        raise BackendUnavailable(f"dkn_auth: {self.backend} is unavailable ({cause}); "
                                 f"failing fast until a probe succeeds", self.probe_interval)

    def _settle(self, probe: bool, cause: str | None) -> None:
        with self._lock:
            if probe:
                self._probing = False
            if cause is None:
                if self._outage_cause is not None:
                    _logger.warning("dkn_auth: %s is back; sessions are served again", self.backend)
                self._failures, self._open_until, self._outage_cause = 0, 0.0, None
                return
            self._failures += 1
            if self._outage_cause is None:
                _logger.error("dkn_auth: %s is unavailable: %s. Requests that need a session get "
                              "HTTP 503 until it is back.", self.backend, cause)
            self._outage_cause = cause
            if self._failures >= self.failures_to_open or probe:
                self._open_until = time.monotonic() + self.probe_interval


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
