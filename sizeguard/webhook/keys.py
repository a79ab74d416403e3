"""The webhook's trusted public keys (a JWKS file), reloaded when the file changes.

:meth:`JwksFile.current` is called on every guarded request. At most once per
``min_interval`` seconds it stats the file (following symlinks, so a Kubernetes ConfigMap
volume's atomic ``..data`` swap is seen) and reloads it if its identity (device, inode, size,
mtime) changed. A reload that fails keeps the last good keys for at most ``grace`` seconds
(a file being rewritten) and is logged; after that, and at once for a well-formed JWKS with no
keys (``{"keys": []}``, how an operator revokes every key), the webhook trusts nothing: it is
not ready, and no approval verifies. Revocation must never wait for a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from sizeguard.approvals import KeyStoreError, TrustedKeys

_log = structlog.get_logger("sizeguard.webhook.keys")

Identity = tuple[int, int, int, int]


class JwksFile:
    def __init__(
        self,
        path: Path,
        *,
        min_interval: float = 1.0,
        grace: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = path
        self.min_interval = min_interval
        self.grace = grace
        self._failing_since: float | None = None
        self._clock = clock
        self._on_reload = on_reload
        self._keys: TrustedKeys | None = None
        self._identity: Identity | None = None
        self._checked_at: float | None = None
        self.last_error: str | None = None

    def _stat(self) -> Identity | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def refresh(self, *, force: bool = False) -> None:
        """Reload the file if it changed (and the minimum interval has passed)."""
        now = self._clock()
        if (
            not force
            and self._checked_at is not None
            and now - self._checked_at < self.min_interval
        ):
            return
        self._checked_at = now
        identity = self._stat()
        if identity is not None and identity == self._identity and self._keys is not None:
            return
        if self._revoked_all():
            if self._keys is not None:
                _log.warning("jwks.revoked", path=str(self.path), dropped=list(self._keys.kids))
            self._keys = None
            self._identity = identity
            self._failing_since = None
            self.last_error = "the JWKS lists no keys: every approval is refused"
            if self._on_reload:
                self._on_reload(False)
            return
        try:
            keys = TrustedKeys.from_file(self.path)
        except (KeyStoreError, OSError, ValueError) as exc:
            message = str(exc)
            if self._failing_since is None:
                self._failing_since = now
            expired = now - self._failing_since >= self.grace
            if expired and self._keys is not None:
                _log.error(
                    "jwks.dropped",
                    path=str(self.path),
                    error=message,
                    dropped=list(self._keys.kids),
                    after_seconds=self.grace,
                )
                self._keys = None
            elif message != self.last_error or identity != self._identity:
                _log.error(
                    "jwks.reload_failed",
                    path=str(self.path),
                    error=message,
                    keeping=list(self._keys.kids) if self._keys else [],
                    keeping_for_seconds=self.grace,
                )
            self.last_error = message
            self._identity = identity
            if self._on_reload:
                self._on_reload(False)
            return
        previous = self._keys.kids if self._keys else ()
        self._keys = keys
        self._identity = identity
        self._failing_since = None
        self.last_error = None
        if keys.kids != previous:
            _log.info("jwks.loaded", path=str(self.path), kids=list(keys.kids))
        if self._on_reload:
            self._on_reload(True)

    def _revoked_all(self) -> bool:
        """True for a well-formed JWKS whose key list is empty."""
        try:
            document = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return False
        return isinstance(document, dict) and document.get("keys") == []

    def current(self) -> TrustedKeys | None:
        """The trusted keys (after a cheap change check), or None if none ever loaded."""
        self.refresh()
        return self._keys
