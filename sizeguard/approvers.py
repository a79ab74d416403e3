"""The approvers registry: people enrolled with a passkey, and the WebAuthn ceremonies that
prove one of them is at the approval page.

The registry lives in the ledger's SQLite file (tables created by :mod:`sizeguard.ledger`,
schema version 3), so it has the same protection as the ledger and the signing key: whoever can
write that file can enrol an approver (or revoke one), exactly as whoever can read the signing
key can sign approvals.

- **Invites.** :meth:`Approvers.invite` makes a one-time enrolment token (short-lived, default
  15 minutes); only its SHA-256 is stored. The token is the path of the enrolment link.
- **Enrolment.** :meth:`Approvers.registration_options` / :meth:`Approvers.finish_registration`
  (py_webauthn): a discoverable credential, user verification required, attestation ``none``.
  Finishing spends the invite.
- **Assertions.** :meth:`Approvers.authentication_options` issues a challenge bound to one
  change set and one action: ``challenge = nonce (32 random bytes) || SHA-256(change_set_id
  "\\n" action)``, stored server side, single use, short-lived.
  :meth:`Approvers.finish_authentication` takes the challenge out of the assertion's
  ``clientDataJSON``, spends it (a replayed assertion finds it spent), checks that it was issued
  for this change set and action, then lets py_webauthn verify the signature, the RP id, the
  origin, user presence and verification, and the sign count (a counter that did not grow is a
  cloned authenticator: refused; authenticators that always report 0 cannot be checked so).
  At most :data:`MAX_OPEN_CHALLENGES` unexpired, unused challenges per change set (or
  invite), so that asking for options cannot fill the ledger. A revoked approver, or a
  revoked passkey, is refused.

- **Links.** :meth:`Approvers.link` records that a requester identity (``token:NAME``,
  ``jwt:SUBJECT``, ``stdio:USER``) is an approver, so that the requester rule of
  :mod:`sizeguard.server.strength` excludes that approver from the two approvers of a change the
  identity requested. Without a link only the name part equal to the approver's name ties them.
- **Revocation** voids the approver's decisions on requests not yet decided or not yet used
  (enrolling them again does not revive those decisions).

Nothing here decides what an approval is worth: :mod:`sizeguard.server.strength` does, and
:mod:`sizeguard.server.decisions` records the page's decisions.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    options_to_json_dict,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from sizeguard.approvals import approver_subject
from sizeguard.ledger import Ledger
from sizeguard.texts import fold

__all__ = [
    "CHALLENGE_TTL_SECONDS",
    "DEFAULT_INVITE_TTL_SECONDS",
    "MAX_INVITE_TTL_SECONDS",
    "MAX_OPEN_CHALLENGES",
    "Action",
    "Approver",
    "ApproverError",
    "ApproverInfo",
    "Approvers",
    "Invite",
    "challenge_binding",
    "normalize_identity",
    "normalize_name",
]

DEFAULT_INVITE_TTL_SECONDS: Final = 15 * 60
MAX_INVITE_TTL_SECONDS: Final = 24 * 3600
CHALLENGE_TTL_SECONDS: Final = 300
MAX_OPEN_CHALLENGES: Final = 16
"""Unexpired, unused challenges one change set (or one invite) may have at a time."""
CEREMONY_TIMEOUT_MS: Final = 120_000
NONCE_BYTES: Final = 32
RP_NAME: Final = "sizeguard"

Action = Literal["approve", "decline"]
Purpose = Literal["register", "approve", "decline"]

# An approver's name: what the page, the audit log and the signed approval call them; compared
# case-insensitively with the requester's identity (token:NAME, jwt:SUBJECT, stdio:USER).
_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,63}$")
# A requester identity a link names: token:NAME, jwt:SUBJECT, stdio:USER (normalised as the
# requester rule compares them: NFKC, case folded; safe ASCII only).
_IDENTITY_RE: Final = re.compile(r"^(token|jwt|stdio):[a-z0-9._@+:/-]{1,200}$")

_log = structlog.get_logger("sizeguard.approvers")


class ApproverError(Exception):
    """A refusal, in one sentence a person understands; ``reason`` is a short code
    (``invalid_name``, ``invite_unknown``, ``invite_expired``, ``invite_used``,
    ``challenge_unknown``, ``challenge_used``, ``challenge_expired``, ``wrong_change_set``,
    ``unknown_passkey``, ``revoked``, ``verification_failed``, ``unknown_approver``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Invite:
    """A one-time enrolment token (shown once; the ledger keeps only its hash)."""

    token: str
    name: str
    expires_at: float

    def link(self, approval_url: str) -> str:
        """The enrolment link on the approval page."""
        return f"{approval_url.rstrip('/')}/enroll/{self.token}"


@dataclass(frozen=True)
class Approver:
    """An enrolled person, as proved by a passkey assertion (or an enrolment)."""

    name: str
    credential_id: str
    """The passkey used (base64url credential id)."""


@dataclass(frozen=True)
class ApproverInfo:
    """One row of ``sizeguard approvers list``."""

    name: str
    enrolled_at: float
    revoked_at: float | None
    passkeys: int
    last_used_at: float | None


def normalize_name(name: str) -> str:
    """The canonical approver name (NFKC, case folded); refuses names that are not simple
    ASCII ids."""
    canonical = fold(name)
    if not _NAME_RE.match(canonical):
        raise ApproverError(
            "invalid_name",
            f"{name!r} is not a valid approver name: 1 to 64 of a-z 0-9 . _ @ + - "
            "(starting with a letter or digit)",
        )
    return canonical


def normalize_identity(identity: str) -> str:
    """A requester identity as links store it (NFKC, case folded); refuses anything but
    ``token:NAME``, ``jwt:SUBJECT`` or ``stdio:USER`` in safe ASCII."""
    canonical = fold(identity)
    if not _IDENTITY_RE.match(canonical):
        raise ApproverError(
            "invalid_identity",
            f"{identity[:80]!r} is not a requester identity: token:NAME, jwt:SUBJECT or "
            "stdio:USER (a-z 0-9 . _ @ + - : /), as sizeguard records requesters",
        )
    return canonical


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def challenge_binding(change_set_id: str, action: str) -> bytes:
    """The last 32 bytes of an approval challenge: what it approves (or declines)."""
    return hashlib.sha256(f"{change_set_id}\n{action}".encode()).digest()


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _client_challenge(client_data_json: bytes) -> bytes:
    try:
        return parse_client_data_json(client_data_json).challenge
    except (WebAuthnException, ValueError, TypeError):
        raise ApproverError(
            "verification_failed", "the passkey answer is not valid WebAuthn client data"
        ) from None


class Approvers:
    """The registry over one ledger file. Every method is synchronous (SQLite)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    # -- invites ---------------------------------------------------------------------------

    def invite(
        self,
        name: str,
        *,
        ttl: float = DEFAULT_INVITE_TTL_SECONDS,
        actor: str = "cli",
        now: float | None = None,
    ) -> Invite:
        """A one-time enrolment token for ``name`` (a new approver, or one more passkey for an
        enrolled one; a revoked approver enrolled again gets only the new passkey)."""
        canonical = normalize_name(name)
        if not 0 < ttl <= MAX_INVITE_TTL_SECONDS:
            raise ApproverError(
                "invalid_ttl", f"an invite lives 1 to {MAX_INVITE_TTL_SECONDS} seconds"
            )
        token = secrets.token_urlsafe(32)
        moment = _now(now)
        with self.ledger.transaction() as db:
            row = db.execute(
                "SELECT user_id FROM approvers WHERE name = ?", (canonical,)
            ).fetchone()
            user_id = row[0] if row else bytes_to_base64url(secrets.token_bytes(32))
            db.execute(
                "INSERT INTO approver_invites (token_hash, approver, user_id, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?)",
                (_token_hash(token), canonical, user_id, moment, moment + ttl),
            )
            self.ledger.audit_in(
                db, actor=actor, event="approver.invited", result="ok",
                details={"approver": canonical, "expires_in_seconds": int(ttl)}, now=moment,
            )  # fmt: skip
        _log.info("approvers.invited", approver=canonical, ttl=int(ttl))
        return Invite(token=token, name=canonical, expires_at=moment + ttl)

    def _open_invite(self, db: sqlite3.Connection, token: str, now: float) -> tuple[str, str]:
        """(name, user_id) of a usable invite, or a refusal."""
        row = db.execute(
            "SELECT approver, user_id, expires_at, used_at FROM approver_invites "
            "WHERE token_hash = ?",
            (_token_hash(token),),
        ).fetchone()
        if row is None:
            raise ApproverError(
                "invite_unknown", "this enrolment link is not valid; ask for a new invite"
            )
        name, user_id, expires_at, used_at = row
        if used_at is not None:
            raise ApproverError(
                "invite_used", "this enrolment link was already used; ask for a new invite"
            )
        if expires_at <= now:
            raise ApproverError(
                "invite_expired", "this enrolment link has expired; ask for a new invite"
            )
        return str(name), str(user_id)

    def invite_name(self, token: str, *, now: float | None = None) -> str:
        """The name a usable invite enrols (for the enrolment page), or a refusal."""
        with self.ledger.snapshot() as db:
            return self._open_invite(db, token, _now(now))[0]

    # -- challenges ------------------------------------------------------------------------

    def _issue_challenge(
        self, db: sqlite3.Connection, purpose: Purpose, subject: str, binding: bytes, now: float
    ) -> bytes:
        challenge = secrets.token_bytes(NONCE_BYTES) + binding
        db.execute("DELETE FROM webauthn_challenges WHERE expires_at < ?", (now - 3600,))
        (open_now,) = db.execute(
            "SELECT count(*) FROM webauthn_challenges WHERE subject = ? AND used_at IS NULL "
            "AND expires_at > ?",
            (subject, now),
        ).fetchone()
        if open_now >= MAX_OPEN_CHALLENGES:
            raise ApproverError(
                "too_many_challenges",
                f"{open_now} passkey challenges for this are still open; finish or cancel the "
                f"passkey prompts you started, or wait {CHALLENGE_TTL_SECONDS // 60} minutes",
            )
        db.execute(
            "INSERT INTO webauthn_challenges (challenge, purpose, subject, created_at, "
            "expires_at) VALUES (?, ?, ?, ?, ?)",
            (bytes_to_base64url(challenge), purpose, subject, now, now + CHALLENGE_TTL_SECONDS),
        )
        return challenge

    def _spend_challenge(
        self, challenge: bytes, purposes: tuple[Purpose, ...], subject: str, binding: bytes,
        now: float,
    ) -> Purpose:  # fmt: skip
        """Mark a challenge used (committed, whatever happens next) and check what it was
        issued for. Returns its purpose."""
        encoded = bytes_to_base64url(challenge)
        with self.ledger.transaction() as db:
            row = db.execute(
                "SELECT purpose, subject, expires_at, used_at FROM webauthn_challenges "
                "WHERE challenge = ?",
                (encoded,),
            ).fetchone()
            if row is not None and row[3] is None:
                db.execute(
                    "UPDATE webauthn_challenges SET used_at = ? WHERE challenge = ?",
                    (now, encoded),
                )
        if row is None:
            raise ApproverError(
                "challenge_unknown",
                "the passkey answer does not carry a challenge this server issued",
            )
        purpose, issued_for, expires_at, used_at = row
        if used_at is not None:
            raise ApproverError(
                "challenge_used", "this passkey answer was already used once (a replay); refused"
            )
        if expires_at <= now:
            raise ApproverError(
                "challenge_expired", "the passkey challenge expired; press the button again"
            )
        if purpose not in purposes or issued_for != subject or challenge[NONCE_BYTES:] != binding:
            raise ApproverError(
                "wrong_change_set",
                f"this passkey answer was given for {purpose} of {issued_for}, not for "
                f"{'/'.join(purposes)} of {subject}; refused",
            )
        return purpose  # type: ignore[no-any-return]

    # -- enrolment -------------------------------------------------------------------------

    def registration_options(
        self, token: str, *, rp_id: str, rp_name: str = RP_NAME, now: float | None = None
    ) -> dict[str, Any]:
        """``PublicKeyCredentialCreationOptions`` (JSON-ready, base64url) for the invite's
        person: a discoverable passkey with user verification required."""
        moment = _now(now)
        subject = _token_hash(token)
        with self.ledger.transaction() as db:
            name, user_id = self._open_invite(db, token, moment)
            existing = [
                PublicKeyCredentialDescriptor(id=base64url_to_bytes(row[0]))
                for row in db.execute(
                    "SELECT credential_id FROM approver_credentials WHERE approver = ? "
                    "AND revoked_at IS NULL",
                    (name,),
                )
            ]
            challenge = self._issue_challenge(
                db, "register", subject, challenge_binding(subject, "register"), moment
            )
        options = generate_registration_options(
            rp_id=rp_id,
            rp_name=rp_name,
            user_name=name,
            user_id=base64url_to_bytes(user_id),
            user_display_name=name,
            challenge=challenge,
            timeout=CEREMONY_TIMEOUT_MS,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                require_resident_key=True,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=existing,
        )
        return options_to_json_dict(options)

    def finish_registration(
        self,
        token: str,
        credential: dict[str, Any],
        *,
        rp_id: str,
        origin: str,
        now: float | None = None,
    ) -> Approver:
        """Verify the browser's ``navigator.credentials.create()`` answer and enrol the
        passkey; spends the invite. Refusals raise :class:`ApproverError`."""
        moment = _now(now)
        subject = _token_hash(token)
        with self.ledger.snapshot() as db:
            self._open_invite(db, token, moment)
        try:
            parsed = parse_registration_credential_json(credential)
        except (WebAuthnException, ValueError, TypeError, KeyError):
            raise ApproverError(
                "verification_failed", "the browser's passkey answer is not a WebAuthn credential"
            ) from None
        challenge = _client_challenge(parsed.response.client_data_json)
        self._spend_challenge(
            challenge, ("register",), subject, challenge_binding(subject, "register"), moment
        )
        try:
            verified = verify_registration_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=rp_id,
                expected_origin=origin,
                require_user_verification=True,
            )
        except WebAuthnException as exc:
            raise ApproverError(
                "verification_failed", f"the passkey could not be verified: {exc}"
            ) from None
        credential_id = bytes_to_base64url(verified.credential_id)
        with self.ledger.transaction() as db:
            name, user_id = self._open_invite(db, token, moment)  # not spent meanwhile
            db.execute(
                "UPDATE approver_invites SET used_at = ? WHERE token_hash = ?", (moment, subject)
            )
            db.execute(
                "INSERT INTO approvers (name, user_id, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET revoked_at = NULL",
                (name, user_id, moment),
            )
            if db.execute(
                "SELECT 1 FROM approver_credentials WHERE credential_id = ?", (credential_id,)
            ).fetchone():
                raise ApproverError("verification_failed", "this passkey is enrolled already")
            db.execute(
                "INSERT INTO approver_credentials (credential_id, approver, public_key, "
                "sign_count, created_at) VALUES (?, ?, ?, ?, ?)",
                (credential_id, name, verified.credential_public_key, verified.sign_count,
                 moment),
            )  # fmt: skip
            self.ledger.audit_in(
                db, actor=approver_subject(name), event="approver.enrolled", result="ok",
                details={"approver": name, "passkey_id": credential_id[:16]}, now=moment,
            )  # fmt: skip
        _log.info("approvers.enrolled", approver=name)
        return Approver(name=name, credential_id=credential_id)

    # -- approving -------------------------------------------------------------------------

    def authentication_options(
        self, change_set_id: str, action: Action, *, rp_id: str, now: float | None = None
    ) -> dict[str, Any]:
        """``PublicKeyCredentialRequestOptions`` (JSON-ready) whose challenge is bound to
        ``action`` of ``change_set_id``; any enrolled passkey may answer (discoverable)."""
        if action not in ("approve", "decline"):
            raise ApproverError("invalid_action", f"the action is approve or decline, not {action}")
        moment = _now(now)
        with self.ledger.transaction() as db:
            challenge = self._issue_challenge(
                db, action, change_set_id, challenge_binding(change_set_id, action), moment
            )
        options = generate_authentication_options(
            rp_id=rp_id,
            challenge=challenge,
            timeout=CEREMONY_TIMEOUT_MS,
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        return options_to_json_dict(options)

    def finish_authentication(
        self,
        change_set_id: str,
        action: Action,
        credential: dict[str, Any],
        *,
        rp_id: str,
        origin: str,
        now: float | None = None,
    ) -> Approver:
        """Verify a ``navigator.credentials.get()`` answer for ``action`` of
        ``change_set_id``: the challenge (issued here, unused, unexpired, for this change set
        and action), the passkey (enrolled, not revoked), the signature, RP id, origin, user
        verification and sign count. Returns who it was; refusals raise
        :class:`ApproverError`."""
        moment = _now(now)
        try:
            parsed = parse_authentication_credential_json(credential)
        except (WebAuthnException, ValueError, TypeError, KeyError):
            raise ApproverError(
                "verification_failed", "no passkey answer (a WebAuthn assertion) was sent"
            ) from None
        challenge = _client_challenge(parsed.response.client_data_json)
        self._spend_challenge(
            challenge, (action,), change_set_id, challenge_binding(change_set_id, action), moment
        )
        credential_id = bytes_to_base64url(parsed.raw_id)
        with self.ledger.snapshot() as db:
            row = db.execute(
                "SELECT c.approver, c.public_key, c.sign_count, c.revoked_at, a.revoked_at, "
                "a.user_id FROM approver_credentials c JOIN approvers a ON a.name = c.approver "
                "WHERE c.credential_id = ?",
                (credential_id,),
            ).fetchone()
        if row is None:
            raise ApproverError(
                "unknown_passkey", "this passkey is not enrolled with this sizeguard server"
            )
        name, public_key, sign_count, credential_revoked, approver_revoked, user_id = row
        if credential_revoked is not None or approver_revoked is not None:
            raise ApproverError("revoked", f"the approver {name} was revoked; refused")
        handle = parsed.response.user_handle
        if handle is not None and bytes_to_base64url(handle) != user_id:
            raise ApproverError("verification_failed", "the passkey answer names another user")
        try:
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=rp_id,
                expected_origin=origin,
                credential_public_key=bytes(public_key),
                credential_current_sign_count=int(sign_count),
                require_user_verification=True,
            )
        except WebAuthnException as exc:
            raise ApproverError(
                "verification_failed", f"the passkey answer could not be verified: {exc}"
            ) from None
        with self.ledger.transaction() as db:
            cursor = db.execute(
                "UPDATE approver_credentials SET sign_count = ?, last_used_at = ? "
                "WHERE credential_id = ? AND sign_count = ? AND revoked_at IS NULL",
                (verified.new_sign_count, moment, credential_id, sign_count),
            )
            if cursor.rowcount != 1:
                raise ApproverError(
                    "verification_failed", "the passkey was used concurrently or revoked"
                )
        _log.info("approvers.authenticated", approver=name, action=action)
        return Approver(name=str(name), credential_id=credential_id)

    # -- administration --------------------------------------------------------------------

    def list(self) -> list[ApproverInfo]:
        """Every approver ever enrolled, by name."""
        with self.ledger.snapshot() as db:
            rows = db.execute(
                "SELECT a.name, a.created_at, a.revoked_at, "
                "count(c.credential_id) FILTER (WHERE c.revoked_at IS NULL), "
                "max(c.last_used_at) FROM approvers a LEFT JOIN approver_credentials c "
                "ON c.approver = a.name GROUP BY a.name ORDER BY a.name"
            ).fetchall()
        return [ApproverInfo(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]

    def is_active(self, name: str) -> bool:
        """Enrolled, not revoked, with at least one passkey that is not revoked."""
        with self.ledger.snapshot() as db:
            return self.is_active_in(db, name)

    @staticmethod
    def is_active_in(db: sqlite3.Connection, name: str) -> bool:
        """:meth:`is_active` inside the caller's transaction."""
        row = db.execute(
            "SELECT 1 FROM approvers a JOIN approver_credentials c ON c.approver = a.name "
            "WHERE a.name = ? AND a.revoked_at IS NULL AND c.revoked_at IS NULL LIMIT 1",
            (fold(name),),
        ).fetchone()
        return row is not None

    # -- links from requester identities -----------------------------------------------------

    def link(
        self, name: str, identity: str, *, actor: str = "cli", now: float | None = None
    ) -> None:
        """Record that the requester ``identity`` is the approver ``name`` (enrolled or
        invited): ``name`` then never counts as one of the two approvers of a change
        ``identity`` requested. Linking twice is harmless."""
        canonical = normalize_name(name)
        key = normalize_identity(identity)
        moment = _now(now)
        with self.ledger.transaction() as db:
            known = db.execute(
                "SELECT 1 FROM approvers WHERE name = ? UNION "
                "SELECT 1 FROM approver_invites WHERE approver = ?",
                (canonical, canonical),
            ).fetchone()
            if known is None:
                raise ApproverError("unknown_approver", f"there is no approver {canonical}")
            db.execute(
                "INSERT INTO approver_links (identity, approver, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (identity, approver) DO NOTHING",
                (key, canonical, moment),
            )
            self.ledger.audit_in(
                db, actor=actor, event="approver.linked", result="ok",
                details={"approver": canonical, "identity": key}, now=moment,
            )  # fmt: skip
        _log.info("approvers.linked", approver=canonical, identity=key)

    def unlink(
        self, name: str, identity: str, *, actor: str = "cli", now: float | None = None
    ) -> None:
        """Remove a link made by :meth:`link`."""
        canonical = normalize_name(name)
        key = normalize_identity(identity)
        moment = _now(now)
        with self.ledger.transaction() as db:
            removed = db.execute(
                "DELETE FROM approver_links WHERE identity = ? AND approver = ?", (key, canonical)
            ).rowcount
            if not removed:
                raise ApproverError("unknown_link", f"{key} is not linked to {canonical}")
            self.ledger.audit_in(
                db, actor=actor, event="approver.unlinked", result="ok",
                details={"approver": canonical, "identity": key}, now=moment,
            )  # fmt: skip
        _log.info("approvers.unlinked", approver=canonical, identity=key)

    def links(self) -> builtins.list[tuple[str, str]]:
        """Every link, as (approver, identity), sorted."""
        with self.ledger.snapshot() as db:
            rows = db.execute(
                "SELECT approver, identity FROM approver_links ORDER BY approver, identity"
            ).fetchall()
        return [(str(a), str(i)) for a, i in rows]

    def linked_approvers(self, identities: Iterable[str]) -> set[str]:
        """The approvers linked to any of the requester ``identities``."""
        with self.ledger.snapshot() as db:
            return self.linked_approvers_in(db, identities)

    @staticmethod
    def linked_approvers_in(db: sqlite3.Connection, identities: Iterable[str]) -> set[str]:
        """:meth:`linked_approvers` inside the caller's transaction."""
        keys = {fold(identity) for identity in identities}
        keys = {key for key in keys if _IDENTITY_RE.match(key)}
        if not keys:
            return set()
        marks = ", ".join("?" for _ in keys)
        rows = db.execute(
            f"SELECT DISTINCT approver FROM approver_links WHERE identity IN ({marks})",  # noqa: S608 (placeholders only)
            tuple(sorted(keys)),
        ).fetchall()
        return {str(row[0]) for row in rows}

    def revoke(self, name: str, *, actor: str = "cli", now: float | None = None) -> None:
        """Revoke an approver: their passkeys and open invites stop working at once; their
        past decisions stay in the history and the audit log."""
        canonical = normalize_name(name)
        moment = _now(now)
        with self.ledger.transaction() as db:
            row = db.execute(
                "SELECT revoked_at FROM approvers WHERE name = ?", (canonical,)
            ).fetchone()
            invites = db.execute(
                "UPDATE approver_invites SET used_at = ? WHERE approver = ? AND used_at IS NULL",
                (moment, canonical),
            ).rowcount
            if row is None and not invites:
                raise ApproverError("unknown_approver", f"there is no approver {canonical}")
            db.execute(
                "UPDATE approvers SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (moment, canonical),
            )
            db.execute(
                "UPDATE approver_credentials SET revoked_at = ? WHERE approver = ? "
                "AND revoked_at IS NULL",
                (moment, canonical),
            )
            voided = self._void_decisions(db, canonical, actor, moment)
            self.ledger.audit_in(
                db, actor=actor, event="approver.revoked", result="ok",
                details={"approver": canonical, "open_invites_cancelled": invites,
                         "decisions_voided": voided}, now=moment,
            )  # fmt: skip
        _log.info("approvers.revoked", approver=canonical)

    def _void_decisions(
        self, db: sqlite3.Connection, name: str, actor: str, now: float
    ) -> builtins.list[str]:
        """Void ``name``'s approvals of requests still pending, or approved and not yet used
        (those go back to pending: their approval is cancelled). The change sets touched."""
        rows = db.execute(
            "SELECT DISTINCT r.change_set_id, r.state FROM page_decisions d "
            "JOIN approval_requests r ON r.change_set_id = d.change_set_id "
            "WHERE d.approver = ? AND d.action = 'approve' AND d.voided_at IS NULL "
            "AND d.at >= r.requested_at AND r.state IN ('pending', 'approved') "
            "ORDER BY r.change_set_id",
            (name,),
        ).fetchall()
        touched: builtins.list[str] = []
        for change_set_id, state in rows:
            if state == "approved":
                cancelled = self.ledger.cancel_approvals_in(
                    db, change_set_id, actor=actor, naming=name, now=now
                )
                if not cancelled:
                    continue  # used already (applied), or expired: history, not voided
                db.execute(
                    "UPDATE approval_requests SET state = 'pending', decided_at = NULL "
                    "WHERE change_set_id = ?",
                    (change_set_id,),
                )
            db.execute(
                "UPDATE page_decisions SET voided_at = ? WHERE change_set_id = ? "
                "AND approver = ? AND action = 'approve' AND voided_at IS NULL",
                (now, change_set_id, name),
            )
            touched.append(str(change_set_id))
        return touched
