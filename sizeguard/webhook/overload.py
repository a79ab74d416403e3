"""Overload control: a bound on the decisions in flight, and the request's deadline.

The API server calls the webhook at whatever rate its clients write, and gives up on a call
after the registration's ``timeoutSeconds`` (it says how long in the URL: ``?timeout=5s``).
A webhook that accepts everything keeps working on requests nobody waits for any more, holds
every one of them in memory, and answers nothing until the backlog is gone. So:

- :class:`Gate` admits at most ``max_in_flight`` decisions at once in this process. A request
  that arrives while the gate is full is **shed at once**: it is denied with a message saying
  the webhook is overloaded (reason ``overloaded``), having read no more of its body than it
  takes to find its uid. Memory is bounded by the gate, not by the request rate, and once the
  load ends the gate is empty as soon as the decisions in it finish.
- :func:`request_timeout` reads ``?timeout=`` (a Go duration). The decision's deadline is
  its arrival plus that time: OPA is given what is left of it (never more than its own
  timeout), and a decision whose deadline has passed before OPA is asked is dropped with a
  deny (reason ``deadline_exceeded``) instead of spending OPA's time on an answer nobody reads.

Both answers are denies: a shed request is never admitted. The API server treats them like
any deny; its caller retries (the HPA controller at its next sync, kubectl by hand).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog

DEFAULT_MAX_IN_FLIGHT: Final = 32
"""Decisions one process works on at once. Enough for bursts at hundreds of requests a second
(a decision takes milliseconds), few enough that the ones admitted under overload are answered
well within the API server's timeout."""

DEFAULT_MAX_CONNECTIONS: Final = 512
"""Connections a pod holds open or in their TLS handshake at once, shared by its workers
(``sizeguard webhook --max-connections``); more wait in the kernel's accept queue."""

DEFAULT_TIMEOUT_SECONDS: Final = 10.0
"""The deadline of a request whose URL names none (the API server always sends one)."""

MAX_TIMEOUT_SECONDS: Final = 30.0
"""The API server's own maximum for ``timeoutSeconds``."""

DEADLINE_MARGIN_SECONDS: Final = 0.02
"""OPA is not asked when less than this is left before the deadline: the answer could not
reach the API server in time."""

UID_SCAN_BYTES: Final = 4096
"""How much of a shed request's body is kept to find its uid (the API server writes
``request.uid`` first, after ``kind`` and ``apiVersion``)."""

_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_UID: Final = re.compile(rb'"request"\s*:\s*\{\s*"uid"\s*:\s*"([A-Za-z0-9-]{1,256})"')

_log = structlog.get_logger("sizeguard.webhook")


def go_duration(text: str) -> float | None:
    """Seconds of a Go ``time.Duration`` string (``5s``, ``1m0s``, ``1.5s``, ``500ms``), None
    when it is not one."""
    if not text or len(text) > 64:
        return None
    position, total = 0, 0.0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total


def request_timeout(scope: Mapping[str, Any]) -> float:
    """The time the API server waits for this call (``?timeout=``), within (0, 30] s;
    :data:`DEFAULT_TIMEOUT_SECONDS` when the URL names none or names an unreadable one."""
    raw = scope.get("query_string", b"")
    if not isinstance(raw, bytes) or b"timeout=" not in raw:
        return DEFAULT_TIMEOUT_SECONDS
    for pair in raw.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name == b"timeout":
            seconds = go_duration(value.decode("ascii", "replace"))
            if seconds is None or seconds <= 0:
                return DEFAULT_TIMEOUT_SECONDS
            return min(seconds, MAX_TIMEOUT_SECONDS)
    return DEFAULT_TIMEOUT_SECONDS


def uid_of_prefix(prefix: bytes) -> str:
    """The ``request.uid`` of an AdmissionReview from the start of its body, or ``""``. Used
    only to address the deny of a shed request; a wrong uid there makes the API server count
    the call as failed, which denies all the same."""
    match = _UID.search(prefix)
    return match.group(1).decode("ascii") if match else ""


class Gate:
    """Counts the decisions in flight and refuses more than ``max_in_flight``. Sheds are
    logged once a second at most, as one ``admission.overloaded`` event with their count (a
    log line per shed request would cost as much as the shed itself)."""

    def __init__(
        self,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        *,
        clock: Callable[[], float] = time.monotonic,
        log_interval: float = 1.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._clock = clock
        self._log_interval = log_interval
        self._shed_since_log = 0
        self._logged_at: float | None = None

    def try_enter(self) -> bool:
        """Take a place, or False when the gate is full (the request is to be shed)."""
        if self.in_flight >= self.max_in_flight:
            self._shed()
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def _shed(self) -> None:
        self._shed_since_log += 1
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= self._log_interval:
            _log.warning(
                "admission.overloaded",
                shed=self._shed_since_log,
                in_flight=self.in_flight,
                max_in_flight=self.max_in_flight,
            )
            self._shed_since_log = 0
            self._logged_at = now


def overloaded_message(gate: Gate) -> str:
    return (
        f"sizeguard: the admission webhook is overloaded ({gate.in_flight} decisions in "
        "flight, its limit); the request is denied without being judged, retry in a moment "
        "(if this persists, give the webhook more replicas or CPU)"
    )


def deadline_message(timeout: float) -> str:
    return (
        f"sizeguard: the admission webhook could not decide within the API server's "
        f"timeout ({timeout:g}s, deadline exceeded); the request is denied, retry in a moment"
    )
