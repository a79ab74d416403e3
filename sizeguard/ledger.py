"""The ledger: change sets, single-use approvals, snapshots, the objects change sets created,
and a hash-chained audit log.

One SQLite file in WAL mode (stdlib :mod:`sqlite3`), created with mode 0600. Every write runs
inside ``BEGIN IMMEDIATE``, so concurrent writers — threads or processes — are serialised by
SQLite itself; single use of an approval is enforced by a conditional ``UPDATE`` whose row count
is checked, not by anything held in this process.

Audit entries are append-only: there is no API to change or remove one, and triggers make any
``UPDATE``/``DELETE`` on the table fail. Each entry carries ``prev_hash`` (the hash of the entry
before it) and ``hash`` = SHA-256 over the RFC 8785 (JCS) JSON of the entry without ``hash``,
so :meth:`Ledger.verify_audit` detects edited, deleted, reordered and inserted rows. Someone
who can write the file can still rebuild the whole chain (or cut its tail); anchoring the head
(``seq`` and ``hash`` printed by ``sizeguard audit verify``) somewhere else detects that too.

Audit details never hold secrets: :meth:`Ledger.append_audit` refuses (raises
:class:`SecretInDetailsError`) fields named like a token, key, secret, password or
authorization header, and any string that contains a compact JWS or a PEM private key.
:func:`scrub_details` replaces such values by ``"[redacted]"`` for callers that log untrusted
arguments.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import rfc8785
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sizeguard.changes import ChangeSet, Target, change_set_id, target_of

__all__ = [
    "APPROVAL_TTL_SECONDS",
    "GENESIS_HASH",
    "SCHEMA_VERSION",
    "Approval",
    "ApprovalRefusal",
    "ApprovalRefusedError",
    "AuditEntry",
    "AuditVerification",
    "ChangeSetMismatchError",
    "CreatedObject",
    "Ledger",
    "LedgerError",
    "LedgerNotFoundError",
    "LedgerSchemaError",
    "SecretInDetailsError",
    "Snapshot",
    "StoredChangeSet",
    "UnknownChangeSetError",
    "default_ledger_path",
    "find_secrets",
    "scrub_details",
]

SCHEMA_VERSION: Final = 3
APPROVAL_TTL_SECONDS: Final = 300
GENESIS_HASH: Final = "0" * 64
LEDGER_ENV: Final = "SIZEGUARD_LEDGER"
MAX_DETAILS_BYTES: Final = 65536
BUSY_TIMEOUT_MS: Final = 30000
REDACTED: Final = "[redacted]"

Op = Literal["apply", "rollback"]
ApprovalState = Literal["pending", "used", "expired", "cancelled"]

_log = structlog.get_logger("sizeguard.ledger")


# --- errors ------------------------------------------------------------------------------------


class LedgerError(Exception):
    """The ledger cannot do what was asked; the message says why, in one line."""


class LedgerNotFoundError(LedgerError):
    """Opened with ``create=False`` and there is no ledger at that path."""


class LedgerSchemaError(LedgerError):
    """The file is not a sizeguard ledger, or has a schema newer than this code knows."""


class UnknownChangeSetError(LedgerError):
    """The change set id is not in the ledger."""


class ChangeSetMismatchError(LedgerError):
    """A stored change set's content no longer hashes to its id (it was modified)."""


class SecretInDetailsError(LedgerError, ValueError):
    """Audit data would contain a secret. The message names the field, never the value."""


class ApprovalRefusal(StrEnum):
    """Why :meth:`Ledger.consume_approval` refused."""

    NONE = "none"
    EXPIRED = "expired"
    USED = "used"
    CANCELLED = "cancelled"
    WRONG_CHANGE_SET = "wrong_change_set"
    WRONG_OP = "wrong_op"


class ApprovalRefusedError(LedgerError):
    """No usable approval: ``reason`` says why; ``approval`` is the one looked at, if any."""

    def __init__(self, reason: ApprovalRefusal, message: str, approval: Approval | None) -> None:
        super().__init__(message)
        self.reason = reason
        self.approval = approval


# --- models ------------------------------------------------------------------------------------

_MODEL = ConfigDict(extra="forbid", frozen=True)
ChangeSetId = Annotated[str, Field(pattern=r"^cs-[0-9a-f]{20}$")]
Hash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class StoredChangeSet(BaseModel):
    """A change set as proposed: its id, its canonical (RFC 8785) JSON, when and from where."""

    model_config = _MODEL

    id: ChangeSetId
    canonical_json: str
    created_at: float
    source: str

    def change_set(self) -> ChangeSet:
        """Parse and validate the stored content; raise if it no longer hashes to ``id``."""
        try:
            changes = json.loads(self.canonical_json)
            parsed = ChangeSet.model_validate({"changes": changes})
        except (ValueError, ValidationError) as exc:
            raise ChangeSetMismatchError(
                f"change set {self.id} in the ledger is not a valid change set: {exc}"
            ) from None
        if parsed.id != self.id:
            raise ChangeSetMismatchError(
                f"change set {self.id} in the ledger was modified: its content hashes to "
                f"{parsed.id}; preview the change again"
            )
        return parsed


class Approval(BaseModel):
    """One human approval of one change set for one operation; usable once, for 300 s."""

    model_config = _MODEL

    id: int
    change_set_id: ChangeSetId
    op: Op
    approver: str
    created_at: float
    expires_at: float
    state: ApprovalState
    used_at: float | None
    typed_namespaces: tuple[str, ...] = ()
    """The namespaces the human typed (production or critical targets), checked again at apply."""
    approvers: tuple[str, ...] = ()
    """The enrolled approvers (names) who approved on the approval page with a passkey; empty
    for a confirmation answered in the MCP client or a terminal."""


class Snapshot(BaseModel):
    """The full original object of one target, saved before a change set was applied."""

    model_config = _MODEL

    change_set_id: ChangeSetId
    target: Target
    object: dict[str, Any]
    created_at: float


class CreatedObject(BaseModel):
    """An object a change set created (an HPA), by its uid: what a rollback of that change set
    deletes, and only while it is still this object."""

    model_config = _MODEL

    change_set_id: ChangeSetId
    target: Target
    created_at: float


class AuditEntry(BaseModel):
    """One audit log entry. ``hash`` covers every other field (RFC 8785 JSON, SHA-256)."""

    model_config = _MODEL

    seq: int
    at: str
    actor: str
    event: str
    change_set_id: str | None
    target: Target | None
    result: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def hashed_document(self) -> dict[str, Any]:
        """The JSON the hash is computed over: the entry without ``hash``."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "event": self.event,
            "change_set_id": self.change_set_id,
            "target": None if self.target is None else self.target.model_dump(mode="json"),
            "result": self.result,
            "details": self.details,
            "prev_hash": self.prev_hash,
        }


class AuditVerification(BaseModel):
    """The outcome of :meth:`Ledger.verify_audit`: ok, or the first broken link and why."""

    model_config = _MODEL

    ok: bool
    entries: int
    head_seq: int | None
    head_hash: str | None
    first_bad_seq: int | None = None
    reason: str | None = None


# --- secrets -----------------------------------------------------------------------------------

# Words that make a field name secret-looking. Names are split on _ - . space and camelCase, so
# "apiKey", "signing_key", "X-Auth-Token" and "client_secret" match; "kid" and "monkey" do not.
_SECRET_WORDS: Final = frozenset(
    {
        "token",
        "tokens",
        "key",
        "keys",
        "apikey",
        "privatekey",
        "secret",
        "secrets",
        "password",
        "passwd",
        "passphrase",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "cookie",
        "bearer",
        "jwt",
        "jws",
        "pem",
    }
)
_WORD_RE: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# A compact JWS (or JWT): a base64url JSON header (it starts with '{"' = "eyJ"), payload, signature.
_JWS_RE: Final = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{16,}")
_PEM_RE: Final = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
# The MCP server's bearer token (sizeguard.server.auth): sgmcp.<name>.<secret>.
_BEARER_RE: Final = re.compile(r"sgmcp\.[a-z0-9-]{1,63}\.[A-Za-z0-9_-]{20,}")


def _secret_name(name: str) -> bool:
    words = {word.lower() for word in _WORD_RE.findall(name)}
    return bool(words & _SECRET_WORDS)


def _secret_value(value: str) -> str | None:
    if _JWS_RE.search(value):
        return "a compact JWS (token)"
    if _PEM_RE.search(value):
        return "a PEM private key"
    if _BEARER_RE.search(value):
        return "a sizeguard bearer token"
    return None


def find_secrets(value: object, path: str = "details") -> list[str]:
    """Paths (``details.args.token``) of secret-looking fields and values; never the values.

    A field named like a secret passes only when its value is ``"[redacted]"``.
    """
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}"
            if isinstance(key, str) and _secret_name(key) and item != REDACTED:
                found.append(f"{where} (field named like a secret)")
            else:
                found.extend(find_secrets(item, where))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found.extend(find_secrets(item, f"{path}[{index}]"))
    elif isinstance(value, str):
        kind = _secret_value(value)
        if kind is not None:
            found.append(f"{path} (value looks like {kind})")
    return found


def scrub_details(value: Any) -> Any:
    """A copy of ``value`` with secret-looking fields and values replaced by ``"[redacted]"``."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and _secret_name(key) else scrub_details(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_details(item) for item in value]
    if isinstance(value, str) and _secret_value(value) is not None:
        return REDACTED
    return value


# --- helpers -----------------------------------------------------------------------------------


def default_ledger_path() -> Path:
    """``$SIZEGUARD_LEDGER``, else ``~/.local/state/sizeguard/ledger.db``."""
    configured = os.environ.get(LEDGER_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "state" / "sizeguard" / "ledger.db"


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical(document: Any) -> str:
    return rfc8785.dumps(document).decode("utf-8")


def entry_hash(document: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the RFC 8785 JSON of an audit entry without its ``hash``."""
    return hashlib.sha256(rfc8785.dumps(dict(document))).hexdigest()


# Version 2: the objects a change set created (an HPA create), so that its rollback deletes
# exactly them (by uid). Version 1 ledgers are migrated by adding the table.
_CREATED_TABLE: Final = """
    CREATE TABLE created_objects (
        change_set_id TEXT NOT NULL REFERENCES change_sets(id),
        api_version   TEXT NOT NULL,
        kind          TEXT NOT NULL,
        namespace     TEXT NOT NULL,
        name          TEXT NOT NULL,
        uid           TEXT NOT NULL,
        created_at    REAL NOT NULL,
        PRIMARY KEY (change_set_id, uid)
    );
    """
# Version 3: the approvers registry (sizeguard.approvers) — people enrolled with a passkey,
# their credentials, one-time invites (hashed), server-issued WebAuthn challenges — the
# requests for approval on the page, the page's decisions (voided when their approver is
# revoked before the request is decided), the links from requester identities to approvers,
# and the approvers of an approval.
_APPROVER_TABLES: Final = (
    """
    CREATE TABLE approvers (
        name       TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    """,
    """
    CREATE TABLE approver_credentials (
        credential_id TEXT PRIMARY KEY,
        approver      TEXT NOT NULL REFERENCES approvers(name),
        public_key    BLOB NOT NULL,
        sign_count    INTEGER NOT NULL,
        created_at    REAL NOT NULL,
        last_used_at  REAL,
        revoked_at    REAL
    );
    """,
    """
    CREATE TABLE approver_invites (
        token_hash TEXT PRIMARY KEY,
        approver   TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at    REAL
    );
    """,
    """
    CREATE TABLE webauthn_challenges (
        challenge  TEXT PRIMARY KEY,
        purpose    TEXT NOT NULL CHECK (purpose IN ('register', 'approve', 'decline')),
        subject    TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at    REAL
    );
    """,
    """
    CREATE TABLE approval_requests (
        change_set_id TEXT PRIMARY KEY REFERENCES change_sets(id),
        op            TEXT NOT NULL CHECK (op IN ('apply', 'rollback')),
        requester     TEXT NOT NULL,
        requesters_json TEXT NOT NULL,
        requires_json TEXT NOT NULL,
        preview_json  TEXT NOT NULL,
        requested_at  REAL NOT NULL,
        expires_at    REAL NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'declined')),
        decided_at    REAL
    );
    """,
    """
    CREATE TABLE page_decisions (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        change_set_id TEXT NOT NULL REFERENCES change_sets(id),
        op            TEXT NOT NULL CHECK (op IN ('apply', 'rollback')),
        approver      TEXT NOT NULL,
        action        TEXT NOT NULL CHECK (action IN ('approve', 'decline')),
        credential_id TEXT NOT NULL,
        at            REAL NOT NULL,
        voided_at     REAL
    );
    """,
    """
    CREATE INDEX page_decisions_by_change_set ON page_decisions (change_set_id, at);
    """,
    """
    CREATE TABLE approver_links (
        identity   TEXT NOT NULL,
        approver   TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (identity, approver)
    );
    """,
)
# from version -> the statements that bring a ledger of that version to the next one
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (_CREATED_TABLE,),
    2: (
        "ALTER TABLE approvals ADD COLUMN approvers_json TEXT NOT NULL DEFAULT '[]'",
        *_APPROVER_TABLES,
    ),
}

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
    """,
    """
    CREATE TABLE IF NOT EXISTS change_sets (
        id             TEXT PRIMARY KEY,
        canonical_json TEXT NOT NULL,
        created_at     REAL NOT NULL,
        source         TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE IF NOT EXISTS approvals (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        change_set_id TEXT NOT NULL REFERENCES change_sets(id),
        op            TEXT NOT NULL CHECK (op IN ('apply', 'rollback')),
        approver      TEXT NOT NULL,
        created_at    REAL NOT NULL,
        expires_at    REAL NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('pending', 'used', 'expired', 'cancelled')),
        used_at       REAL,
        typed_json    TEXT NOT NULL DEFAULT '[]',
        approvers_json TEXT NOT NULL DEFAULT '[]'
    );
    """,
    """
    CREATE INDEX IF NOT EXISTS approvals_by_change_set ON approvals (change_set_id, op);
    """,
    """
    CREATE TABLE IF NOT EXISTS snapshots (
        change_set_id TEXT NOT NULL REFERENCES change_sets(id),
        api_version   TEXT NOT NULL,
        kind          TEXT NOT NULL,
        namespace     TEXT NOT NULL,
        name          TEXT NOT NULL,
        uid           TEXT NOT NULL,
        object_json   TEXT NOT NULL,
        created_at    REAL NOT NULL,
        PRIMARY KEY (change_set_id, kind, namespace, name)
    );
    """,
    _CREATED_TABLE,
    *_APPROVER_TABLES,
    """
    CREATE TABLE IF NOT EXISTS audit (
        seq           INTEGER PRIMARY KEY,
        at            TEXT NOT NULL,
        actor         TEXT NOT NULL,
        event         TEXT NOT NULL,
        change_set_id TEXT,
        target_json   TEXT,
        result        TEXT NOT NULL,
        details_json  TEXT NOT NULL,
        prev_hash     TEXT NOT NULL,
        hash          TEXT NOT NULL
    );
    """,
    """
    CREATE INDEX IF NOT EXISTS audit_by_change_set ON audit (change_set_id, seq);
    """,
    """
    CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the sizeguard audit log is append-only'); END;
    """,
    """
    CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the sizeguard audit log is append-only'); END;
    """,
)

_EVENT_RE: Final = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")


def _check_text(value: str, what: str, limit: int = 256) -> None:
    if not value or len(value) > limit:
        raise ValueError(f"{what} must be 1 to {limit} characters")
    if _secret_value(value) is not None:
        raise SecretInDetailsError(f"{what} looks like a secret; refusing to record it")


# --- the ledger --------------------------------------------------------------------------------


class Ledger:
    """One ledger file. Safe to share between threads; any number of processes may open it."""

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.RLock()
        if not self.path.exists():
            if not create:
                raise LedgerNotFoundError(f"no ledger at {self.path}")
            self._create_file()
        elif stat.S_IMODE(self.path.stat().st_mode) & 0o077:
            _log.warning("ledger.permissions", path=str(self.path), hint="chmod 600")
        try:
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from None
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise LedgerSchemaError(f"{self.path} is not a sizeguard ledger: {exc}") from None
        except LedgerError:
            self._db.close()
            raise

    # -- opening --

    def _create_file(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)  # whatever the umask
            os.close(fd)
            _log.info("ledger.created", path=str(self.path))

    def _setup(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        version = self._stored_version()
        if version is not None and version > SCHEMA_VERSION:
            raise LedgerSchemaError(
                f"the ledger {self.path} has schema version {version}, newer than this "
                f"sizeguard understands ({SCHEMA_VERSION}); upgrade sizeguard"
            )
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerError(f"cannot put the ledger {self.path} in WAL mode (got {mode})")
        db.execute("PRAGMA synchronous = FULL")
        if version == SCHEMA_VERSION:
            return
        with self._write():
            version = self._stored_version()
            if version is None:
                if db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                    raise LedgerSchemaError(
                        f"{self.path} is an SQLite database but not a sizeguard ledger"
                    )
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                _log.info("ledger.schema_created", path=str(self.path), version=SCHEMA_VERSION)
            elif version > SCHEMA_VERSION:
                raise LedgerSchemaError(
                    f"the ledger {self.path} has schema version {version}; this sizeguard "
                    f"understands {SCHEMA_VERSION}"
                )
            elif version < SCHEMA_VERSION:  # (another process may have migrated it meanwhile)
                self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring a ledger of an older schema up to :data:`SCHEMA_VERSION`, one version at a
        time, inside the caller's write transaction (all or nothing)."""
        start = version
        while version < SCHEMA_VERSION:
            steps = _MIGRATIONS.get(version)
            if steps is None:
                raise LedgerSchemaError(
                    f"the ledger {self.path} has schema version {version}, which this "
                    f"sizeguard cannot migrate to {SCHEMA_VERSION}"
                )
            for statement in steps:
                self._db.execute(statement)
            version += 1
        self._db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        _log.info("ledger.schema_migrated", path=str(self.path), old=start, new=SCHEMA_VERSION)

    def _stored_version(self) -> int | None:
        has_table = self._db.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if not has_table:
            return None
        row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        if row is None or row[0] is None:
            return None
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` takes SQLite's write lock up front."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``) for the modules that keep their own tables
        in this file (:mod:`sizeguard.approvers`); append audit entries inside it with
        :meth:`audit_in`, so that a change and its audit entry commit together."""
        return self._write()

    def snapshot(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A read transaction: one consistent view of the file."""
        return self._read()

    def audit_in(
        self,
        db: sqlite3.Connection,
        *,
        actor: str,
        event: str,
        result: str,
        change_set_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> AuditEntry:
        """Append an audit entry inside a :meth:`transaction` (same checks as
        :meth:`append_audit`)."""
        return self._append(
            db, actor=actor, event=event, result=result, cs_id=change_set_id, target=None,
            details=details or {}, at=_now(now),
        )  # fmt: skip

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot of the WAL."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def schema_version(self) -> int:
        with self._lock:
            version = self._stored_version()
        assert version is not None
        return version

    # -- change sets --

    def put_change_set(
        self, change_set: ChangeSet, *, source: str, now: float | None = None
    ) -> StoredChangeSet:
        """Store a change set as proposed (idempotent: the same id is stored once)."""
        _check_text(source, "source", 253)
        document = [change.model_dump(mode="json", by_alias=True) for change in change_set.changes]
        stored = StoredChangeSet(
            id=change_set_id(change_set.changes),
            canonical_json=_canonical(document),
            created_at=_now(now),
            source=source,
        )
        with self._write() as db:
            existing = self._change_set_row(db, stored.id)
            if existing is not None:
                return existing
            db.execute(
                "INSERT INTO change_sets (id, canonical_json, created_at, source) "
                "VALUES (?, ?, ?, ?)",
                (stored.id, stored.canonical_json, stored.created_at, stored.source),
            )
        _log.info("ledger.change_set_stored", change_set_id=stored.id, targets=len(document))
        return stored

    @staticmethod
    def _change_set_row(db: sqlite3.Connection, cs_id: str) -> StoredChangeSet | None:
        row = db.execute(
            "SELECT id, canonical_json, created_at, source FROM change_sets WHERE id = ?",
            (cs_id,),
        ).fetchone()
        if row is None:
            return None
        return StoredChangeSet(id=row[0], canonical_json=row[1], created_at=row[2], source=row[3])

    def get_change_set(self, cs_id: str) -> StoredChangeSet | None:
        with self._read() as db:
            return self._change_set_row(db, cs_id)

    def load_change_set(self, cs_id: str) -> ChangeSet:
        """The change set with this id, checked: its content must still hash to ``cs_id``."""
        stored = self.get_change_set(cs_id)
        if stored is None:
            raise UnknownChangeSetError(f"no change set {cs_id} in the ledger; preview it first")
        return stored.change_set()

    # -- approvals --

    def record_approval(
        self,
        cs_id: str,
        op: Op,
        approver: str,
        *,
        now: float | None = None,
        ttl: float = APPROVAL_TTL_SECONDS,
        typed_namespaces: tuple[str, ...] = (),
        approvers: tuple[str, ...] = (),
    ) -> Approval:
        """Record a human's approval of a stored change set; pending for ``ttl`` seconds.
        ``typed_namespaces``: the namespaces the human typed to confirm, which apply checks
        against what the policy requires then; ``approvers``: the enrolled approvers who
        approved it on the approval page (their names go into the signed approval)."""
        with self._write() as db:
            approval = self.record_approval_in(
                db, cs_id, op, approver, now=now, ttl=ttl, typed_namespaces=typed_namespaces,
                approvers=approvers,
            )  # fmt: skip
        _log.info("ledger.approval_recorded", approval_id=approval.id, change_set_id=cs_id, op=op)
        return approval

    def record_approval_in(
        self,
        db: sqlite3.Connection,
        cs_id: str,
        op: Op,
        approver: str,
        *,
        now: float | None = None,
        ttl: float = APPROVAL_TTL_SECONDS,
        typed_namespaces: tuple[str, ...] = (),
        approvers: tuple[str, ...] = (),
    ) -> Approval:
        """:meth:`record_approval` inside a :meth:`transaction` (the caller's checks and the
        approval commit together)."""
        _check_text(approver, "approver")
        for name in approvers:
            _check_text(name, "approver name", 64)
        typed = sorted(set(typed_namespaces))
        for namespace in typed:
            _check_text(namespace, "typed namespace", 63)
        if op not in ("apply", "rollback"):
            raise ValueError(f"op must be apply or rollback, not {op!r}")
        if not 0 < ttl <= APPROVAL_TTL_SECONDS:
            raise ValueError(f"ttl must be in (0, {APPROVAL_TTL_SECONDS}] seconds")
        created = _now(now)
        if self._change_set_row(db, cs_id) is None:
            raise UnknownChangeSetError(f"no change set {cs_id} in the ledger")
        cursor = db.execute(
            "INSERT INTO approvals (change_set_id, op, approver, created_at, expires_at, "
            "state, typed_json, approvers_json) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
            (cs_id, op, approver, created, created + ttl, json.dumps(typed),
             json.dumps(list(approvers))),
        )  # fmt: skip
        assert cursor.lastrowid is not None
        approval = Approval(
            id=cursor.lastrowid, change_set_id=cs_id, op=op, approver=approver,
            created_at=created, expires_at=created + ttl, state="pending", used_at=None,
            typed_namespaces=tuple(typed), approvers=tuple(approvers),
        )  # fmt: skip
        self._append(
            db, actor=approver, event="approval.recorded", result="ok", cs_id=cs_id,
            target=None, details={"approval_id": approval.id, "op": op,
                                  "expires_at": _iso(approval.expires_at),
                                  "typed_namespaces": typed,
                                  "approvers": list(approvers)},
            at=created,
        )  # fmt: skip
        return approval

    @staticmethod
    def _approval(row: tuple[Any, ...]) -> Approval:
        return Approval(
            id=row[0], change_set_id=row[1], op=row[2], approver=row[3], created_at=row[4],
            expires_at=row[5], state=row[6], used_at=row[7],
            typed_namespaces=tuple(json.loads(row[8])), approvers=tuple(json.loads(row[9])),
        )  # fmt: skip

    _APPROVAL_COLUMNS: Final = (
        "id, change_set_id, op, approver, created_at, expires_at, state, used_at, typed_json, "
        "approvers_json"
    )

    def approvals(self, cs_id: str | None = None) -> list[Approval]:
        query = f"SELECT {self._APPROVAL_COLUMNS} FROM approvals"  # noqa: S608 (constant column list)
        params: tuple[str, ...] = ()
        if cs_id is not None:
            query += " WHERE change_set_id = ?"
            params = (cs_id,)
        with self._read() as db:
            return [self._approval(row) for row in db.execute(query + " ORDER BY id", params)]

    def consume_approval(
        self,
        cs_id: str,
        op: Op,
        now: float | None = None,
        *,
        approval_id: int | None = None,
    ) -> Approval:
        """Use a pending, unexpired approval of ``cs_id`` for ``op`` exactly once.

        Without ``approval_id`` the newest usable approval is taken. Using one cancels every
        other pending approval of the same change set (either op) in the same transaction, so
        a spare approval cannot re-apply a change set after it was applied (or rolled back).
        Raises
        :class:`ApprovalRefusedError` with the reason: none, expired, used, cancelled,
        wrong_change_set (``approval_id`` approves another change set) or wrong_op.
        """
        moment = _now(now)
        refusal: ApprovalRefusedError | None = None
        used: Approval | None = None
        with self._write() as db:
            try:
                chosen = self._choose_approval(db, cs_id, op, moment, approval_id)
            except ApprovalRefusedError as exc:
                refusal = exc
                if exc.reason is ApprovalRefusal.EXPIRED and exc.approval is not None:
                    db.execute(
                        "UPDATE approvals SET state = 'expired' WHERE id = ? AND state = 'pending'",
                        (exc.approval.id,),
                    )
            else:
                cursor = db.execute(
                    "UPDATE approvals SET state = 'used', used_at = ? "
                    "WHERE id = ? AND state = 'pending' AND expires_at > ?",
                    (moment, chosen.id, moment),
                )
                if cursor.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; fail closed
                    refusal = ApprovalRefusedError(
                        ApprovalRefusal.USED, f"approval {chosen.id} was used concurrently", chosen
                    )
                else:
                    used = chosen.model_copy(update={"state": "used", "used_at": moment})
                    self._append(
                        db, actor=chosen.approver, event="approval.used", result="ok",
                        cs_id=cs_id, target=None, details={"approval_id": chosen.id, "op": op},
                        at=moment,
                    )  # fmt: skip
                    spares = [
                        row[0]
                        for row in db.execute(
                            "SELECT id FROM approvals WHERE change_set_id = ? AND id != ? "
                            "AND state = 'pending'",
                            (cs_id, chosen.id),
                        )
                    ]
                    for spare in spares:
                        db.execute(
                            "UPDATE approvals SET state = 'cancelled' WHERE id = ?", (spare,)
                        )
                        self._append(
                            db, actor=chosen.approver, event="approval.cancelled",
                            result="superseded", cs_id=cs_id, target=None,
                            details={"approval_id": spare, "used": chosen.id}, at=moment,
                        )  # fmt: skip
        if refusal is not None:
            _log.info(
                "ledger.approval_refused", change_set_id=cs_id, op=op, reason=str(refusal.reason)
            )
            raise refusal
        assert used is not None
        _log.info("ledger.approval_used", approval_id=used.id, change_set_id=cs_id, op=op)
        return used

    def _choose_approval(
        self, db: sqlite3.Connection, cs_id: str, op: Op, now: float, approval_id: int | None
    ) -> Approval:
        columns = self._APPROVAL_COLUMNS
        if approval_id is not None:
            row = db.execute(
                f"SELECT {columns} FROM approvals WHERE id = ?",  # noqa: S608 (constant column list)
                (approval_id,),
            ).fetchone()
            if row is None:
                raise ApprovalRefusedError(
                    ApprovalRefusal.NONE, f"there is no approval {approval_id}", None
                )
            candidates = [self._approval(row)]
            if candidates[0].change_set_id != cs_id:
                raise ApprovalRefusedError(
                    ApprovalRefusal.WRONG_CHANGE_SET,
                    f"approval {approval_id} is for change set {candidates[0].change_set_id}, "
                    f"not {cs_id}; the change set was modified or another one was approved",
                    candidates[0],
                )
            if candidates[0].op != op:
                raise ApprovalRefusedError(
                    ApprovalRefusal.WRONG_OP,
                    f"approval {approval_id} approves {candidates[0].op}, not {op}",
                    candidates[0],
                )
        else:
            candidates = [
                self._approval(row)
                for row in db.execute(
                    f"SELECT {columns} FROM approvals WHERE change_set_id = ? AND op = ? "  # noqa: S608 (constant column list)
                    "ORDER BY id DESC",
                    (cs_id, op),
                )
            ]
        for approval in candidates:
            if approval.state == "pending" and approval.expires_at > now:
                return approval
        if not candidates:
            other = db.execute(
                "SELECT op FROM approvals WHERE change_set_id = ? LIMIT 1", (cs_id,)
            ).fetchone()
            if other is not None:
                raise ApprovalRefusedError(
                    ApprovalRefusal.WRONG_OP,
                    f"change set {cs_id} is approved for {other[0]}, not {op}; ask for approval",
                    None,
                )
            raise ApprovalRefusedError(
                ApprovalRefusal.NONE,
                f"change set {cs_id} has no approval for {op}; a human must approve it first",
                None,
            )
        latest = candidates[0]
        if latest.state == "used":
            when = _iso(latest.used_at) if latest.used_at is not None else "earlier"
            raise ApprovalRefusedError(
                ApprovalRefusal.USED,
                f"the approval of change set {cs_id} ({op}) was already used at {when}; "
                "an approval is good for one use, ask for a new one",
                latest,
            )
        if latest.state == "cancelled":
            raise ApprovalRefusedError(
                ApprovalRefusal.CANCELLED,
                f"the approval of change set {cs_id} ({op}) was cancelled",
                latest,
            )
        raise ApprovalRefusedError(
            ApprovalRefusal.EXPIRED,
            f"the approval of change set {cs_id} ({op}) expired at {_iso(latest.expires_at)}; "
            "ask for a new one",
            latest,
        )

    def cancel_approval(self, approval_id: int, *, actor: str, now: float | None = None) -> bool:
        """Cancel a pending approval; False if it was not pending."""
        _check_text(actor, "actor")
        moment = _now(now)
        with self._write() as db:
            row = db.execute(
                "SELECT change_set_id FROM approvals WHERE id = ? AND state = 'pending'",
                (approval_id,),
            ).fetchone()
            if row is None:
                return False
            self._cancel_in(db, approval_id, row[0], actor, moment)
        _log.info("ledger.approval_cancelled", approval_id=approval_id)
        return True

    def _cancel_in(
        self, db: sqlite3.Connection, approval_id: int, cs_id: str, actor: str, moment: float
    ) -> None:
        db.execute("UPDATE approvals SET state = 'cancelled' WHERE id = ?", (approval_id,))
        self._append(
            db, actor=actor, event="approval.cancelled", result="ok", cs_id=cs_id,
            target=None, details={"approval_id": approval_id}, at=moment,
        )  # fmt: skip

    def cancel_approvals_in(
        self,
        db: sqlite3.Connection,
        cs_id: str,
        *,
        actor: str,
        naming: str | None = None,
        now: float | None = None,
    ) -> list[int]:
        """Cancel the pending approvals of ``cs_id`` (only those whose approvers include
        ``naming``, when given) inside a :meth:`transaction`; their ids."""
        _check_text(actor, "actor")
        moment = _now(now)
        cancelled: list[int] = []
        for approval_id, approvers_json in db.execute(
            "SELECT id, approvers_json FROM approvals WHERE change_set_id = ? "
            "AND state = 'pending' ORDER BY id",
            (cs_id,),
        ).fetchall():
            if naming is not None and naming not in json.loads(approvers_json):
                continue
            self._cancel_in(db, approval_id, cs_id, actor, moment)
            cancelled.append(int(approval_id))
        return cancelled

    # -- snapshots --

    def save_snapshot(
        self, cs_id: str, obj: Mapping[str, Any], *, now: float | None = None
    ) -> Snapshot:
        """Save the full original object before applying ``cs_id`` to it.

        The first snapshot of a target for a change set wins: originals are never overwritten
        (a retried apply returns the snapshot already stored).
        """
        target = target_of(obj)
        document = json.loads(json.dumps(obj))
        snapshot = Snapshot(
            change_set_id=cs_id, target=target, object=document, created_at=_now(now)
        )
        with self._write() as db:
            if self._change_set_row(db, cs_id) is None:
                raise UnknownChangeSetError(f"no change set {cs_id} in the ledger")
            existing = self._snapshot_row(db, cs_id, target)
            if existing is not None:
                if existing.target.uid != target.uid:
                    raise LedgerError(
                        f"a snapshot of {target.ref()} for {cs_id} exists with another uid "
                        f"({existing.target.uid}); the object was recreated"
                    )
                return existing
            db.execute(
                "INSERT INTO snapshots (change_set_id, api_version, kind, namespace, name, uid, "
                "object_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cs_id, target.api_version, target.kind, target.namespace, target.name,
                 target.uid, json.dumps(document, sort_keys=True), snapshot.created_at),
            )  # fmt: skip
        _log.info("ledger.snapshot_saved", change_set_id=cs_id, target=target.ref())
        return snapshot

    @staticmethod
    def _snapshot(row: tuple[Any, ...]) -> Snapshot:
        target = Target.model_validate(
            {
                "apiVersion": row[1],
                "kind": row[2],
                "namespace": row[3],
                "name": row[4],
                "uid": row[5],
            }
        )
        return Snapshot(
            change_set_id=row[0], target=target, object=json.loads(row[6]), created_at=row[7]
        )

    _SNAPSHOT_COLUMNS: Final = (
        "change_set_id, api_version, kind, namespace, name, uid, object_json, created_at"
    )

    def _snapshot_row(self, db: sqlite3.Connection, cs_id: str, target: Target) -> Snapshot | None:
        row = db.execute(
            f"SELECT {self._SNAPSHOT_COLUMNS} FROM snapshots WHERE change_set_id = ? "  # noqa: S608 (constant column list)
            "AND kind = ? AND namespace = ? AND name = ?",
            (cs_id, target.kind, target.namespace, target.name),
        ).fetchone()
        return None if row is None else self._snapshot(row)

    def get_snapshot(self, cs_id: str, target: Target) -> Snapshot | None:
        with self._read() as db:
            return self._snapshot_row(db, cs_id, target)

    def snapshots(self, cs_id: str) -> list[Snapshot]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT {self._SNAPSHOT_COLUMNS} FROM snapshots WHERE change_set_id = ? "  # noqa: S608 (constant column list)
                "ORDER BY namespace, kind, name",
                (cs_id,),
            ).fetchall()
        return [self._snapshot(row) for row in rows]

    # -- objects created --

    def record_created(
        self, cs_id: str, obj: Mapping[str, Any], *, now: float | None = None
    ) -> CreatedObject:
        """Record that applying ``cs_id`` created ``obj`` (as the API server returned it, with
        its uid). Idempotent: the same object is recorded once."""
        target = target_of(obj)
        created = CreatedObject(change_set_id=cs_id, target=target, created_at=_now(now))
        with self._write() as db:
            if self._change_set_row(db, cs_id) is None:
                raise UnknownChangeSetError(f"no change set {cs_id} in the ledger")
            db.execute(
                "INSERT OR IGNORE INTO created_objects (change_set_id, api_version, kind, "
                "namespace, name, uid, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cs_id, target.api_version, target.kind, target.namespace, target.name,
                 target.uid, created.created_at),
            )  # fmt: skip
        _log.info("ledger.created_recorded", change_set_id=cs_id, target=target.ref())
        return created

    def created_objects(self, cs_id: str) -> list[CreatedObject]:
        """The objects applying ``cs_id`` created, oldest first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT change_set_id, api_version, kind, namespace, name, uid, created_at "
                "FROM created_objects WHERE change_set_id = ? ORDER BY created_at, rowid",
                (cs_id,),
            ).fetchall()
        return [self._created(row) for row in rows]

    @staticmethod
    def _created(row: tuple[Any, ...]) -> CreatedObject:
        target = Target.model_validate(
            {"apiVersion": row[1], "kind": row[2], "namespace": row[3], "name": row[4],
             "uid": row[5]}
        )  # fmt: skip
        return CreatedObject(change_set_id=row[0], target=target, created_at=row[6])

    # -- audit --

    def append_audit(
        self,
        *,
        actor: str,
        event: str,
        result: str,
        change_set_id: str | None = None,
        target: Target | None = None,
        details: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> AuditEntry:
        """Append one entry to the hash chain. Refuses secrets (see :func:`find_secrets`)."""
        with self._write() as db:
            entry = self._append(
                db, actor=actor, event=event, result=result, cs_id=change_set_id,
                target=target, details=details or {}, at=_now(now),
            )  # fmt: skip
        _log.info("ledger.audit_appended", seq=entry.seq, audit_event=event, result=result)
        return entry

    def _append(
        self,
        db: sqlite3.Connection,
        *,
        actor: str,
        event: str,
        result: str,
        cs_id: str | None,
        target: Target | None,
        details: Mapping[str, Any],
        at: float,
    ) -> AuditEntry:
        _check_text(actor, "actor")
        _check_text(result, "result", 64)
        if not _EVENT_RE.match(event):
            raise ValueError(f"event must match {_EVENT_RE.pattern}, got {event!r}")
        if cs_id is not None:
            _check_text(cs_id, "change_set_id", 64)
        secrets = find_secrets(details)
        if secrets:
            raise SecretInDetailsError(
                "refusing to write secrets to the audit log: " + ", ".join(secrets)
            )
        try:
            details_json = _canonical(dict(details))
        except Exception as exc:  # rfc8785 raises its own errors for non-JSON values
            raise ValueError(f"audit details must be JSON (RFC 8785): {exc}") from None
        if len(details_json) > MAX_DETAILS_BYTES:
            raise ValueError(f"audit details exceed {MAX_DETAILS_BYTES} bytes")
        last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (1, GENESIS_HASH) if last is None else (last[0] + 1, last[1])
        draft = AuditEntry(
            seq=seq, at=_iso(at), actor=actor, event=event, change_set_id=cs_id, target=target,
            result=result, details=json.loads(details_json), prev_hash=prev_hash,
            hash=GENESIS_HASH,
        )  # fmt: skip
        entry = draft.model_copy(update={"hash": entry_hash(draft.hashed_document())})
        target_json = None if target is None else _canonical(target.model_dump(mode="json"))
        db.execute(
            "INSERT INTO audit (seq, at, actor, event, change_set_id, target_json, result, "
            "details_json, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.seq, entry.at, actor, event, cs_id, target_json, result, details_json,
             prev_hash, entry.hash),
        )  # fmt: skip
        return entry

    _AUDIT_COLUMNS: Final = (
        "seq, at, actor, event, change_set_id, target_json, result, details_json, prev_hash, hash"
    )

    @staticmethod
    def _audit_entry(row: tuple[Any, ...]) -> AuditEntry:
        return AuditEntry(
            seq=row[0], at=row[1], actor=row[2], event=row[3], change_set_id=row[4],
            target=None if row[5] is None else Target.model_validate(json.loads(row[5])),
            result=row[6], details=json.loads(row[7]), prev_hash=row[8], hash=row[9],
        )  # fmt: skip

    def audit_entries(
        self, *, change_set_id: str | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        """Entries in ``seq`` order; with ``limit``, the last ``limit`` of them."""
        query = f"SELECT {self._AUDIT_COLUMNS} FROM audit"  # noqa: S608 (constant column list)
        params: list[Any] = []
        if change_set_id is not None:
            query += " WHERE change_set_id = ?"
            params.append(change_set_id)
        query += " ORDER BY seq DESC"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        with self._read() as db:
            rows = db.execute(query, params).fetchall()
        return [self._audit_entry(row) for row in reversed(rows)]

    def verify_audit(self, *, anchor: tuple[int, str] | None = None) -> AuditVerification:
        """Walk the chain from seq 1; report the first broken link, or ok.

        ``anchor`` = ``(seq, hash)`` recorded elsewhere earlier (e.g. from a previous verify):
        the chain must still contain that entry with that hash, which also detects a rewritten
        chain and a cut tail.
        """
        expected_seq = 1
        prev_hash = GENESIS_HASH
        count = 0
        anchored = anchor is None
        with self._read() as db:
            rows = db.execute(f"SELECT {self._AUDIT_COLUMNS} FROM audit ORDER BY seq")  # noqa: S608 (constant column list)
            for row in rows:
                bad = self._check_link(row, expected_seq, prev_hash)
                if bad is not None:
                    return AuditVerification(
                        ok=False, entries=count, head_seq=expected_seq - 1 or None,
                        head_hash=None if count == 0 else prev_hash,
                        first_bad_seq=bad[0], reason=bad[1],
                    )  # fmt: skip
                if anchor is not None and row[0] == anchor[0]:
                    if row[9] != anchor[1]:
                        return AuditVerification(
                            ok=False, entries=count, head_seq=expected_seq - 1 or None,
                            head_hash=None if count == 0 else prev_hash, first_bad_seq=row[0],
                            reason=f"entry {row[0]} has hash {row[9]}, not the anchored "
                            f"{anchor[1]}: the log was rewritten",
                        )  # fmt: skip
                    anchored = True
                count += 1
                expected_seq += 1
                prev_hash = row[9]
        head_seq = count or None
        head_hash = prev_hash if count else None
        if not anchored:
            assert anchor is not None
            return AuditVerification(
                ok=False, entries=count, head_seq=head_seq, head_hash=head_hash,
                first_bad_seq=anchor[0],
                reason=f"entry {anchor[0]} (anchored) is missing: the log was truncated",
            )  # fmt: skip
        return AuditVerification(ok=True, entries=count, head_seq=head_seq, head_hash=head_hash)

    @staticmethod
    def _check_link(
        row: tuple[Any, ...], expected_seq: int, prev_hash: str
    ) -> tuple[int, str] | None:
        seq = row[0]
        if seq != expected_seq:
            if isinstance(seq, int) and seq > expected_seq:
                return expected_seq, (
                    f"entry {expected_seq} is missing (deleted?); the next entry is {seq}"
                )
            return expected_seq, f"entry {expected_seq} has an invalid seq {seq!r}"
        if row[8] != prev_hash:
            return seq, (
                f"prev_hash does not match the hash of entry {seq - 1}: entries were deleted, "
                "inserted or reordered, or the previous entry was edited and re-hashed"
            )
        try:
            entry = Ledger._audit_entry(row)
        except (ValueError, ValidationError, TypeError) as exc:
            first = str(exc).splitlines()[0]
            return seq, f"entry {seq} cannot be read (edited?): {first}"
        try:
            actual = entry_hash(entry.hashed_document())
        except Exception as exc:
            return seq, f"entry {seq} cannot be hashed (edited?): {exc}"
        if actual != entry.hash:
            return seq, f"entry {seq} does not match its hash: its contents were edited"
        return None
