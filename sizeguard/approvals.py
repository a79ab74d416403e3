"""Signed approvals: Ed25519 keys, the public JWKS, and minting/verifying approval JWS.

An approval is a compact JWS (RFC 7515, EdDSA per RFC 8037) carried in the
``sizeguard.io/approval`` annotation of the object written. It binds one object (kind,
namespace, name, uid), one version of it (``rv``, its resourceVersion: so it admits exactly one
write, with no memory in the verifier) and one transition of its guarded state (``from`` ->
``to``; ``from`` null creates an HPA, ``to`` null deletes one). The webhook admits the write
only if :func:`verify_transition` returns ``ok``.

Verification fails closed and checks, in this order (the first failure is reported):

``missing``        no token
``malformed``      not a sizeguard approval: too long, not compact JWS, bad base64/JSON, a
                   header other than exactly ``{"alg":"EdDSA","typ":...,"kid":...}`` (so
                   ``alg`` ``none``, ``HS256`` etc. are *malformed*; no other algorithm is ever
                   tried), or claims that fail the strict claims model after the signature
                   verified
``unknown_key``    ``kid`` is not in the trusted JWKS
``bad_signature``  the EdDSA signature does not verify under that key
``not_yet_valid`` / ``expired``  now is outside [nbf, exp] widened by :data:`LEEWAY_SECONDS`
``wrong_operation`` the approval's op does not fit the request (a create approval on an update)
``wrong_target``   apiVersion/kind/namespace/name differ from the request and the object
``wrong_uid``      same name but another object (deleted and recreated)
``from_mismatch``  the object was written since (``rv``), or is not in the ``from`` state
``to_mismatch``    the new object is not the approved ``to`` state

Key directory layout (see docs/contract.md)::

    DIR/signing/<kid>.pem   Ed25519 private keys, PKCS#8 PEM, mode 0600, never overwritten
    DIR/active              the kid that signs new approvals
    DIR/jwks.json           the public keys of every key in DIR/signing (what webhooks trust)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sizeguard.changes import (
    HPA_KIND,
    GuardedState,
    ResourceChange,
    Target,
    describe_changes,
    guarded_state,
)

__all__ = [
    "ALGORITHM",
    "APPROVAL_ANNOTATION",
    "APPROVAL_TTL_SECONDS",
    "APPROVAL_TYP",
    "APPROVER_SUBJECT_PREFIX",
    "CREATE_TTL_SECONDS",
    "DELETE_TTL_SECONDS",
    "ISSUER",
    "LEEWAY_SECONDS",
    "MAX_TOKEN_LENGTH",
    "MIN_AGE_TO_DELETE_SECONDS",
    "ApprovalClaims",
    "KeyStoreError",
    "Op",
    "SigningKey",
    "TrustedKeys",
    "VerifyCode",
    "VerifyResult",
    "approval_of",
    "approval_op",
    "approver_subject",
    "generate_signing_key",
    "init_key_dir",
    "jwk_thumbprint",
    "lifetime",
    "load_signing_key",
    "load_signing_key_file",
    "mint_approval",
    "mint_for_change",
    "public_jwk",
    "read_jwks",
    "rotate_key_dir",
    "verify_transition",
]

APPROVAL_ANNOTATION: Final = "sizeguard.io/approval"
ISSUER: Final = "sizeguard"
APPROVAL_TYP: Final = "sizeguard-approval+jwt"
ALGORITHM: Final = "EdDSA"
APPROVAL_TTL_SECONDS: Final = 300
LEEWAY_SECONDS: Final = 30
# Checked before any parsing. Room for ~60 containers; mint refuses to exceed it.
MAX_TOKEN_LENGTH: Final = 16 * 1024

# An approval lives this long, except one that creates an object (see
# MIN_AGE_TO_DELETE_SECONDS) or deletes one (the server writes it onto the object and deletes
# at once; should the delete fail after that, the approval must not stay usable for long).
CREATE_TTL_SECONDS: Final = 30
DELETE_TTL_SECONDS: Final = 60
MIN_AGE_TO_DELETE_SECONDS: Final = CREATE_TTL_SECONDS + 3 * LEEWAY_SECONDS
"""A create approval binds nothing but the name: the API server refuses a second create while
the object exists. So that it cannot create the object again after an approved delete, the
admission policy refuses to delete an HPA younger than this: every create approval that could
have made it has expired by then. (It was admitted at most one leeway before its ``iat``, it
verifies until one leeway after its ``exp``, and one more leeway covers a webhook replica whose
clock runs ahead of the API server's, which stamps ``creationTimestamp``.)"""

Op = Literal["apply", "rollback", "create", "delete"]
VerifyCode = Literal[
    "ok",
    "missing",
    "malformed",
    "wrong_operation",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_target",
    "wrong_uid",
    "from_mismatch",
    "to_mismatch",
]

_KID_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest
_COMPACT_RE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_UUID4_RE: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
# An enrolled approver's name (sizeguard.approvers), and the sub of a page approval.
_APPROVER_RE: Final = r"^[a-z0-9][a-z0-9._@+-]{0,63}$"
APPROVER_SUBJECT_PREFIX: Final = "approver:"


def approver_subject(name: str) -> str:
    """The ``sub`` (and audit actor) of an enrolled approver: ``approver:NAME``."""
    return f"{APPROVER_SUBJECT_PREFIX}{name}"


_HEADER_KEYS: Final = frozenset({"alg", "typ", "kid"})
_JWK_KEYS: Final = frozenset({"kty", "crv", "x", "kid", "use", "alg"})
_MAX_KEY_FILE: Final = 64 * 1024
_MAX_JWKS_FILE: Final = 1024 * 1024


# --- encoding helpers --------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Strict base64url without padding: the only accepted spelling is the canonical one."""
    if len(text) % 4 == 1 or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("invalid base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid base64url") from exc
    if _b64url(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate JSON member {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON number {name}")


def _json_object(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- keys and JWKS -----------------------------------------------------------------------------


class KeyStoreError(Exception):
    """A key directory or key file that cannot be used as asked (one-line message)."""


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def jwk_thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(public_key))}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")
    return _b64url(hashlib.sha256(canonical).digest())


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The public JWK of a key, with its thumbprint as ``kid``."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(_raw_public(public_key)),
        "kid": jwk_thumbprint(public_key),
        "use": "sig",
        "alg": ALGORITHM,
    }


@dataclass(frozen=True)
class SigningKey:
    """A private key and its kid (the RFC 7638 thumbprint of its public key)."""

    kid: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()


def generate_signing_key() -> SigningKey:
    private_key = Ed25519PrivateKey.generate()
    return SigningKey(jwk_thumbprint(private_key.public_key()), private_key)


# Encodings of the Ed25519 points of small order (and their sign-bit twins). Under such a
# "public key" a signature can be forged for any message, so a JWKS listing one is refused.
_SMALL_ORDER = frozenset(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000080",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    )
)
_FIELD_PRIME = 2**255 - 19


def _reject_weak(raw: bytes, where: str) -> None:
    """Refuse small-order and non-canonical Ed25519 public keys."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if raw in _SMALL_ORDER or y >= _FIELD_PRIME:
        raise ValueError(f"{where}: not a usable Ed25519 public key (small order or non-canonical)")


def _parse_jwk(jwk: object, index: int) -> tuple[str, Ed25519PublicKey]:
    where = f"JWKS keys[{index}]"
    if not isinstance(jwk, Mapping):
        raise ValueError(f"{where}: expected an object")
    if "d" in jwk:
        raise ValueError(f"{where}: contains a private key ('d'); publish public keys only")
    unknown = set(jwk) - _JWK_KEYS
    if unknown:
        raise ValueError(f"{where}: unexpected members {sorted(unknown)}")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError(f"{where}: only kty OKP with crv Ed25519 is supported")
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", ALGORITHM) != ALGORITHM:
        raise ValueError(f"{where}: use must be 'sig' and alg must be 'EdDSA'")
    x = jwk.get("x")
    try:
        raw = _b64url_decode(x) if isinstance(x, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{where}: 'x' is not a base64url Ed25519 public key")
    _reject_weak(raw, where)
    public_key = Ed25519PublicKey.from_public_bytes(raw)
    kid = jwk_thumbprint(public_key)
    if jwk.get("kid") != kid:
        raise ValueError(f"{where}: 'kid' must be the key's RFC 7638 thumbprint {kid}")
    return kid, public_key


class TrustedKeys:
    """The public keys a verifier trusts, by kid (a parsed and validated JWKS)."""

    def __init__(self, public_keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for public_key in public_keys:
            _reject_weak(public_key.public_bytes_raw(), "trusted key")
            kid = jwk_thumbprint(public_key)
            if kid in self._keys:
                raise ValueError(f"key {kid} is listed twice")
            self._keys[kid] = public_key

    @classmethod
    def from_jwks(cls, document: object) -> TrustedKeys:
        """Parse a JWKS document; raises ``ValueError`` for anything but Ed25519 public JWKs."""
        if not isinstance(document, Mapping) or set(document) != {"keys"}:
            raise ValueError('JWKS must be an object with exactly one member, "keys"')
        keys = document["keys"]
        if not isinstance(keys, list) or not keys:
            raise ValueError('JWKS "keys" must be a non-empty list')
        parsed = [_parse_jwk(jwk, index) for index, jwk in enumerate(keys)]
        return cls(public_key for _, public_key in parsed)

    @classmethod
    def from_json(cls, text: str | bytes) -> TrustedKeys:
        return cls.from_jwks(_json_object(text, "JWKS"))

    @classmethod
    def from_file(cls, path: Path) -> TrustedKeys:
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_JWKS_FILE + 1)
        except OSError as exc:
            raise KeyStoreError(f"cannot read JWKS {path}: {exc.strerror}") from None
        if len(data) > _MAX_JWKS_FILE:
            raise KeyStoreError(f"JWKS {path} is larger than {_MAX_JWKS_FILE} bytes")
        try:
            return cls.from_json(data)
        except ValueError as exc:
            raise KeyStoreError(f"invalid JWKS {path}: {exc}") from None

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [public_jwk(public_key) for public_key in self._keys.values()]}


# --- key directory -----------------------------------------------------------------------------


def _signing_dir(directory: Path) -> Path:
    return directory / "signing"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise writers (init/rotate) on one key directory."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively (never overwrite, never follow a symlink)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _replace_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace ``path``: write a fresh temporary file, then rename it over."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    _write_new_file(temporary, data, mode)
    try:
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _save_private_key(directory: Path, key: SigningKey) -> Path:
    signing = _signing_dir(directory)
    signing.mkdir(mode=0o700, exist_ok=True)
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = signing / f"{key.kid}.pem"
    try:
        _write_new_file(path, pem, 0o600)
    except FileExistsError:
        raise KeyStoreError(f"{path} already exists; refusing to overwrite a key") from None
    _fsync_dir(signing)
    return path


def _save_public(directory: Path, trusted: TrustedKeys, active: str) -> None:
    text = json.dumps(trusted.to_jwks(), indent=2) + "\n"
    _replace_file(directory / "jwks.json", text.encode("ascii"), 0o644)
    _replace_file(directory / "active", f"{active}\n".encode("ascii"), 0o644)


def _has_keys(directory: Path) -> bool:
    names = ("active", "jwks.json")
    if any((directory / name).exists() or (directory / name).is_symlink() for name in names):
        return True
    signing = _signing_dir(directory)
    return signing.is_dir() and any(signing.iterdir())


def _prepare_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyStoreError(f"cannot create key directory {directory}: {exc.strerror}") from None
    if not directory.is_dir():
        raise KeyStoreError(f"{directory} is not a directory")


def init_key_dir(directory: Path) -> SigningKey:
    """Create the first signing key in ``directory``; refuses if any key material exists."""
    _prepare_dir(directory)
    with _locked(directory):
        if _has_keys(directory):
            raise KeyStoreError(
                f"{directory} already holds sizeguard keys; refusing to overwrite them "
                "(use `sizeguard keys rotate` to add a new key)"
            )
        key = generate_signing_key()
        _save_private_key(directory, key)
        _save_public(directory, TrustedKeys([key.public_key]), key.kid)
    return key


def rotate_key_dir(directory: Path) -> SigningKey:
    """Add a new key, make it active, and keep every older public key in the JWKS."""
    if not directory.is_dir():
        raise KeyStoreError(f"{directory} is not a key directory; run `sizeguard keys init`")
    with _locked(directory):
        current = load_signing_key(directory)
        trusted = read_jwks(directory)
        if trusted.get(current.kid) is None:
            raise KeyStoreError(f"{directory}/jwks.json does not contain the active key")
        key = generate_signing_key()
        _save_private_key(directory, key)
        older = [trusted.get(kid) for kid in trusted.kids]
        public_keys = [key.public_key, *(public for public in older if public is not None)]
        _save_public(directory, TrustedKeys(public_keys), key.kid)
    return key


def _read_active(directory: Path) -> str:
    path = directory / "active"
    try:
        with path.open("rb") as handle:
            text = handle.read(256).decode("ascii").strip()
    except FileNotFoundError:
        raise KeyStoreError(
            f"{directory} has no active key ({path} is missing); run `sizeguard keys init`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyStoreError(f"cannot read {path}: {exc}") from None
    if not _KID_RE.fullmatch(text):
        raise KeyStoreError(f"{path} does not name a key id")
    return text


def load_signing_key_file(path: Path, *, expected_kid: str | None = None) -> SigningKey:
    """Load an unencrypted PKCS#8 PEM Ed25519 private key (e.g. a mounted Secret).

    Refuses files that others can read or that anyone but the owner can write.
    """
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyStoreError(f"cannot read signing key {path}: {exc.strerror}") from None
    if mode & 0o027:
        raise KeyStoreError(
            f"signing key {path} has mode {mode & 0o777:04o}; make it 0600 (or 0400/0440)"
        )
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise KeyStoreError(f"{path} is not an Ed25519 private key")
    key = SigningKey(jwk_thumbprint(private_key.public_key()), private_key)
    if expected_kid is not None and key.kid != expected_kid:
        raise KeyStoreError(f"{path} holds key {key.kid}, not {expected_kid}")
    return key


def load_signing_key(directory: Path) -> SigningKey:
    """The active signing key of a key directory: ``DIR/signing/<kid>.pem``, or the flat
    ``DIR/<kid>.pem`` of a Kubernetes Secret mounted as a volume (it has no subdirectories)."""
    kid = _read_active(directory)
    nested = _signing_dir(directory) / f"{kid}.pem"
    flat = directory / f"{kid}.pem"
    path = flat if not nested.exists() and flat.exists() else nested
    return load_signing_key_file(path, expected_kid=kid)


def read_jwks(directory: Path) -> TrustedKeys:
    """The public keys of a key directory (``DIR/jwks.json``), validated."""
    return TrustedKeys.from_file(directory / "jwks.json")


# --- claims ------------------------------------------------------------------------------------


class ApprovalClaims(BaseModel):
    """The claims of an approval; strict: exact types, no extra members."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
    )

    iss: Literal["sizeguard"]
    sub: Annotated[str, Field(min_length=1, max_length=256)]
    jti: Annotated[str, Field(pattern=_UUID4_RE)]
    iat: Annotated[int, Field(ge=0, le=2**53 - 1)]
    nbf: Annotated[int, Field(ge=0, le=2**53 - 1)]
    exp: Annotated[int, Field(ge=0, le=2**53 - 1)]
    cs: Annotated[str, Field(pattern=r"^cs-[0-9a-f]{20}$")]
    op: Op
    target: Target
    # metadata.resourceVersion of the object the approval was minted for (apply, rollback).
    # Every write of an object gives it a new resourceVersion, so the approval admits exactly
    # one write, with no memory in any webhook replica. None for create (there is no object
    # yet) and delete (an object, by its uid, is deleted once).
    rv: Annotated[str, Field(min_length=1, max_length=64)] | None
    from_: GuardedState | None = Field(alias="from")
    to: GuardedState | None
    # The enrolled approvers who approved on the approval page with a passkey (issue 16), in
    # the order they approved; ``sub`` is then ``approver:<the first>``. Absent (None) for a
    # confirmation given in the MCP client or a terminal, so that a webhook older than this
    # claim still accepts those approvals (it rejects unknown claims: upgrade webhooks first).
    approvers: (
        Annotated[
            list[Annotated[str, Field(pattern=_APPROVER_RE)]], Field(min_length=1, max_length=10)
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalClaims:
        if not self.iat <= self.nbf < self.exp:
            raise ValueError("claims must satisfy iat <= nbf < exp")
        if self.approvers is not None:
            if len(set(self.approvers)) != len(self.approvers):
                raise ValueError("approvers must be different people")
            if self.sub != approver_subject(self.approvers[0]):
                raise ValueError("sub must be approver:<the first of approvers>")
        if self.exp - self.iat > lifetime(self.op):
            raise ValueError(f"a {self.op} approval lives at most {lifetime(self.op)} s")
        creates, deletes = self.op == "create", self.op == "delete"
        if (self.from_ is None) != creates or (self.to is None) != deletes:
            raise ValueError("from is null exactly for create, to exactly for delete")
        if (self.target.uid is None) != creates:
            raise ValueError("the target has a uid unless the approval creates it")
        if (self.rv is None) != (creates or deletes):
            raise ValueError("rv is set exactly for apply and rollback")
        if (creates or deletes) and self.target.kind != HPA_KIND:
            raise ValueError("only HorizontalPodAutoscalers are created or deleted by approval")
        return self


def lifetime(op: Op) -> int:
    """How long an approval for ``op`` lives: :data:`CREATE_TTL_SECONDS` for a create (see
    :data:`MIN_AGE_TO_DELETE_SECONDS`), :data:`DELETE_TTL_SECONDS` for a delete,
    :data:`APPROVAL_TTL_SECONDS` otherwise."""
    return {"create": CREATE_TTL_SECONDS, "delete": DELETE_TTL_SECONDS}.get(
        op, APPROVAL_TTL_SECONDS
    )


def approval_op(before: GuardedState | None, after: GuardedState | None, op: Op) -> Op:
    """The op an approval of the transition ``before`` -> ``after`` carries: ``create`` or
    ``delete`` when it creates or deletes the object, else ``op`` (``apply``/``rollback``)."""
    if before is None:
        return "create"
    if after is None:
        return "delete"
    return op


def mint_approval(
    key: SigningKey,
    *,
    change_set_id: str,
    op: Op,
    target: Target,
    before: GuardedState | None,
    after: GuardedState | None,
    subject: str,
    approvers: Sequence[str] = (),
    resource_version: str | None = None,
    now: float | None = None,
) -> str:
    """Sign an approval for one object's transition ``before`` -> ``after`` (None: no object).

    ``resource_version`` is the live object's ``metadata.resourceVersion`` for an update
    (``apply``/``rollback``): the approval admits only the write made against that version.
    ``approvers``: the enrolled approvers who approved on the page (the ``approvers`` claim,
    left out when empty); ``subject`` is then ``approver:<the first>``."""
    if before == after:
        raise ValueError(f"{target.ref()}: nothing to approve, before and after are equal")
    issued = int(time.time() if now is None else now)
    try:
        claims = ApprovalClaims.model_validate(
            {
                "iss": ISSUER,
                "sub": subject,
                "jti": str(uuid.uuid4()),
                "iat": issued,
                "nbf": issued,
                "exp": issued + lifetime(op),
                "cs": change_set_id,
                "op": op,
                "target": target,
                "rv": resource_version,
                "from": before,
                "to": after,
                "approvers": list(approvers) or None,
            }
        )
    except ValidationError as exc:
        raise ValueError(f"{target.ref()}: cannot approve this: {exc.errors()[0]['msg']}") from None
    token = jwt.encode(
        claims.model_dump(
            mode="json", by_alias=True, exclude={"approvers"} if claims.approvers is None else None
        ),
        key.private_key,
        algorithm=ALGORITHM,
        headers={"typ": APPROVAL_TYP, "kid": key.kid},
    )
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(
            f"{target.ref()}: approval would be {len(token)} bytes, over the "
            f"{MAX_TOKEN_LENGTH}-byte limit verifiers accept"
        )
    return token


def mint_for_change(
    key: SigningKey,
    change: ResourceChange,
    *,
    change_set_id: str,
    op: Op,
    subject: str,
    approvers: Sequence[str] = (),
    resource_version: str | None = None,
    now: float | None = None,
) -> str:
    """Approve one change of a change set: ``apply`` goes before -> after, ``rollback``
    after -> before; where that creates or deletes the object the op is ``create`` or
    ``delete``. ``resource_version``: the live object's, for an update."""
    before, after = (
        (change.before, change.after) if op == "apply" else (change.after, change.before)
    )
    target = change.target
    if before is None:  # the object is created anew: it will have another uid
        target = target.model_copy(update={"uid": None})
    return mint_approval(
        key,
        change_set_id=change_set_id,
        op=approval_op(before, after, op),
        target=target,
        before=before,
        after=after,
        subject=subject,
        approvers=approvers,
        resource_version=resource_version,
        now=now,
    )


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify_transition`. ``claims`` is set only once the signature
    verified (never unverified data)."""

    ok: bool
    code: VerifyCode
    message: str
    claims: ApprovalClaims | None = None

    def policy_input(self) -> dict[str, Any]:
        """The ``approval`` member of the admission policy input."""
        return {
            "present": self.code != "missing",
            "valid": self.ok,
            "error": None if self.ok else self.code,
            "claims": None if self.claims is None else self.claims.model_dump(mode="json"),
        }


def _fail(code: VerifyCode, message: str, claims: ApprovalClaims | None = None) -> VerifyResult:
    return VerifyResult(ok=False, code=code, message=message, claims=claims)


def _malformed(detail: str) -> VerifyResult:
    return _fail(
        "malformed", f"the {APPROVAL_ANNOTATION} annotation is not a valid approval: {detail}"
    )


def approval_of(obj: Mapping[str, Any]) -> object | None:
    """The raw approval annotation of an object (``None`` when absent). The value is returned
    untyped on purpose: pass it to :func:`verify_transition`, which checks it."""
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if not isinstance(annotations, Mapping):
        return None
    return annotations.get(APPROVAL_ANNOTATION)


def _check_header(token: str) -> str | VerifyResult:
    """Return the kid, or a failure. Nothing but the exact sizeguard header is accepted."""
    try:
        header = _json_object(_b64url_decode(token.split(".", 1)[0]), "header")
    except ValueError as exc:
        return _malformed(str(exc))
    if set(header) != _HEADER_KEYS:
        return _malformed(
            f"the header must have exactly alg, typ and kid, got {sorted(header)!r:.120}"
        )
    if header["alg"] != ALGORITHM:
        return _malformed(f"algorithm {header['alg']!r:.40} is not accepted, only EdDSA")
    if header["typ"] != APPROVAL_TYP:
        return _malformed(f"type {header['typ']!r:.60} is not {APPROVAL_TYP}")
    kid = header["kid"]
    if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
        return _malformed("the key id is not a JWK thumbprint")
    return kid


def _describe(expected: GuardedState | None, actual: GuardedState | None) -> str:
    lines = describe_changes(expected, actual)
    more = f"; and {len(lines) - 4} more" if len(lines) > 4 else ""
    return "approved → actual: " + "; ".join(lines[:4]) + more


def _metadata_string(obj: Mapping[str, Any], key: str) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get(key) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) and value else None


def _state(obj: Mapping[str, Any] | None) -> GuardedState | None:
    return None if obj is None else guarded_state(obj)


_OPERATION_OPS: Final[dict[str, tuple[Op, ...]]] = {
    "CREATE": ("create",),
    "UPDATE": ("apply", "rollback"),
    "DELETE": ("delete",),
}


def _check_identity(
    claims: ApprovalClaims, *, kind: str, namespace: str, name: str, obj: Mapping[str, Any]
) -> VerifyResult | None:
    """The request, the object it names and the approval must name the same object."""
    approved = claims.target
    api_version = obj.get("apiVersion")
    obj_ref = (api_version, obj.get("kind"), _metadata_string(obj, "namespace"))
    request = (api_version, kind, namespace, name)
    approved_ref = (approved.api_version, approved.kind, approved.namespace, approved.name)
    current = (*obj_ref, _metadata_string(obj, "name"))
    if approved_ref != request or current != request:
        return _fail(
            "wrong_target",
            f"the approval is for {approved.api_version} {approved.ref()}, not for "
            f"{api_version} {kind}/{namespace}/{name}",
            claims,
        )
    return None


def _check_binding(
    claims: ApprovalClaims, old_object: Mapping[str, Any] | None
) -> VerifyResult | None:
    """The approval must be for this object (uid) and, for an update, this version of it."""
    if old_object is None:
        return None  # a create: nothing exists to bind to (see MIN_AGE_TO_DELETE_SECONDS)
    uid = _metadata_string(old_object, "uid")
    if claims.target.uid != uid:
        return _fail(
            "wrong_uid",
            f"the approval is for another {claims.target.ref()} (uid {claims.target.uid}); this "
            f"one has uid {uid}, so it was deleted and recreated since the approval",
            claims,
        )
    version = _metadata_string(old_object, "resourceVersion")
    if claims.rv is not None and claims.rv != version:
        return _fail(
            "from_mismatch",
            f"the object was written since the approval (resourceVersion {version}, approved at "
            f"{claims.rv}): an approval is good for one write of one object version; approve "
            "the change again",
            claims,
        )
    return None


def _check_states(
    claims: ApprovalClaims,
    old_object: Mapping[str, Any] | None,
    new_object: Mapping[str, Any] | None,
    states: tuple[GuardedState | None, GuardedState | None] | None,
) -> VerifyResult | None:
    try:
        old_state = _state(old_object) if states is None else states[0]
    except ValueError as exc:
        return _fail("from_mismatch", f"cannot read the current object: {exc}", claims)
    if claims.from_ != old_state:
        return _fail(
            "from_mismatch",
            "the object is no longer in the state the approval starts from (was it already "
            f"applied, or changed since?): {_describe(claims.from_, old_state)}",
            claims,
        )
    try:
        new_state = _state(new_object) if states is None else states[1]
    except ValueError as exc:
        return _fail("to_mismatch", f"cannot read the updated object: {exc}", claims)
    if claims.to != new_state:
        return _fail(
            "to_mismatch",
            f"the update differs from what was approved: {_describe(claims.to, new_state)}",
            claims,
        )
    return None


def _check_object(
    claims: ApprovalClaims,
    *,
    kind: str,
    namespace: str,
    name: str,
    old_object: Mapping[str, Any] | None,
    new_object: Mapping[str, Any] | None,
    states: tuple[GuardedState | None, GuardedState | None] | None,
) -> VerifyResult:
    operation = "CREATE" if old_object is None else "DELETE" if new_object is None else "UPDATE"
    if claims.op not in _OPERATION_OPS[operation]:
        return _fail(
            "wrong_operation",
            f"the approval is for {claims.op} of {claims.target.ref()}, not for this "
            f"{operation.lower()}",
            claims,
        )
    obj = new_object if old_object is None else old_object
    assert obj is not None
    failure = (
        _check_identity(claims, kind=kind, namespace=namespace, name=name, obj=obj)
        or _check_binding(claims, old_object)
        or _check_states(claims, old_object, new_object, states)
    )
    if failure is not None:
        return failure
    return VerifyResult(
        ok=True,
        code="ok",
        message=f"approved by {_approved_by(claims)} (change set {claims.cs}, {claims.op})",
        claims=claims,
    )


def _approved_by(claims: ApprovalClaims) -> str:
    if claims.approvers is None:
        return claims.sub
    return " and ".join(approver_subject(name) for name in claims.approvers)


def _verified_claims(token: object, trusted: TrustedKeys) -> ApprovalClaims | VerifyResult:
    """The claims of a token whose header, key and signature check out, or the failure."""
    if token is None or token == "":
        return _fail(
            "missing",
            f"the request changes what sizeguard guards but carries no approval "
            f"(annotation {APPROVAL_ANNOTATION}); approve the change with sizeguard",
        )
    if not isinstance(token, str):
        return _malformed(f"expected a string, got {type(token).__name__}")
    if len(token) > MAX_TOKEN_LENGTH:
        return _malformed(f"longer than {MAX_TOKEN_LENGTH} characters")
    if not _COMPACT_RE.fullmatch(token):
        return _malformed("not a compact JWS (three base64url parts separated by dots)")
    kid = _check_header(token)
    if isinstance(kid, VerifyResult):
        return kid
    public_key = trusted.get(kid)
    if public_key is None:
        return _fail(
            "unknown_key",
            f"the approval was signed with key {kid}, which this cluster does not trust "
            "(not in its JWKS; retired, or from another installation)",
        )
    # The compact JWS is checked here rather than by a JWT library: the header is exactly
    # {alg: EdDSA, typ, kid} (above), each part is canonical base64url, and the Ed25519
    # signature covers the ASCII "header.payload" (RFC 7515 section 5.2, RFC 8037).
    signed, _, signature_part = token.rpartition(".")
    try:
        signature = _b64url_decode(signature_part)
        payload = _b64url_decode(signed.partition(".")[2])
    except ValueError as exc:
        return _malformed(str(exc))
    try:
        public_key.verify(signature, signed.encode("ascii"))
    except InvalidSignature:
        return _fail(
            "bad_signature",
            f"the approval's signature does not verify under key {kid}: it was altered or "
            "not signed by sizeguard",
        )
    try:
        return ApprovalClaims.model_validate(
            _json_object(payload, "claims"), by_alias=True, by_name=False
        )
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'claims'}: {error['msg']}"
            for error in exc.errors()[:3]
        )
        return _malformed(f"invalid claims: {details}")
    except ValueError as exc:
        return _malformed(str(exc))


def verify_transition(
    token: object,
    *,
    kind: str,
    namespace: str,
    name: str,
    old_object: Mapping[str, Any] | None,
    new_object: Mapping[str, Any] | None,
    jwks: TrustedKeys | Mapping[str, Any],
    now: float | None = None,
    states: tuple[GuardedState | None, GuardedState | None] | None = None,
) -> VerifyResult:
    """Check that ``token`` approves exactly this write of this object, now.

    ``kind``/``namespace``/``name`` come from the admission request. An update passes both
    objects (the uid, resourceVersion and ``from`` state come from ``old_object``, the ``to``
    state from ``new_object``); a create passes ``old_object=None`` and a delete
    ``new_object=None``. A ``jwks`` given as a mapping is parsed first (``ValueError`` if it
    is not a valid JWKS: a configuration error). ``states`` may give ``(guarded_state(old_object),
    guarded_state(new_object))`` already computed by the caller (None for a missing object), so
    that the webhook computes each footprint once; they must be exactly those.
    """
    trusted = jwks if isinstance(jwks, TrustedKeys) else TrustedKeys.from_jwks(jwks)
    if old_object is None and new_object is None:
        raise ValueError("verify_transition needs the old object, the new one, or both")
    claims = _verified_claims(token, trusted)
    if isinstance(claims, VerifyResult):
        return claims
    current = time.time() if now is None else now
    if current < claims.nbf - LEEWAY_SECONDS:
        return _fail(
            "not_yet_valid",
            f"the approval is not valid before {_iso(claims.nbf)} (now {_iso(current)}); "
            "check the clocks of sizeguard and the cluster",
            claims,
        )
    if current > claims.exp + LEEWAY_SECONDS:
        return _fail(
            "expired",
            f"the approval expired at {_iso(claims.exp)} (now {_iso(current)}); approve the "
            "change again",
            claims,
        )
    return _check_object(
        claims,
        kind=kind,
        namespace=namespace,
        name=name,
        old_object=old_object,
        new_object=new_object,
        states=states,
    )
