"""The webhook's trusted public keys (a JWKS file), reloaded when the file changes.

:meth:`JwksFile.current` is called on every guarded request. At most once per
``min_interval`` seconds it stats the file (following symlinks, so a Kubernetes ConfigMap
volume's atomic ``..data`` swap is seen) and reloads it if its identity (device, inode, size,
mtime) changed. A reload that fails keeps the last good keys and is logged; with no good keys
ever loaded the webhook is not ready, and approvals cannot verify.
"""

from __future__ import annotations

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
        clock: Callable[[], float] = time.monotonic,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = path
        self.min_interval = min_interval
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
        try:
            keys = TrustedKeys.from_file(self.path)
        except (KeyStoreError, OSError, ValueError) as exc:
            message = str(exc)
            if message != self.last_error or identity != self._identity:
                _log.error(
                    "jwks.reload_failed",
                    path=str(self.path),
                    error=message,
                    keeping=list(self._keys.kids) if self._keys else [],
                )
            self.last_error = message
            self._identity = identity
            if self._on_reload:
                self._on_reload(False)
            return
        previous = self._keys.kids if self._keys else ()
        self._keys = keys
        self._identity = identity
        self.last_error = None
        if keys.kids != previous:
            _log.info("jwks.loaded", path=str(self.path), kids=list(keys.kids))
        if self._on_reload:
            self._on_reload(True)

    def current(self) -> TrustedKeys | None:
        """The trusted keys (after a cheap change check), or None if none ever loaded."""
        self.refresh()
        return self._keys
