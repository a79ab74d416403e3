"""A software passkey for unit tests: a real EC P-256 key, real WebAuthn responses.

py_webauthn verifies responses and has no helper to make them, so this builds what a browser's
authenticator sends — attestation ``none`` at registration, an assertion at login — with
``cryptography`` for the key and signature and py_webauthn's own CBOR encoder. The real
browser flows (Chromium's virtual authenticator) are tested in
``tests/integration/test_approval_page.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.encode_cbor import encode_cbor

ORIGIN = "http://localhost:8765"
RP_ID = "localhost"

_UP, _UV, _AT = 0x01, 0x04, 0x40


def _b64(data: bytes) -> str:
    return bytes_to_base64url(data)


@dataclass
class SoftPasskey:
    """One credential on one authenticator. ``counter`` grows by one per assertion."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    counter: int = 0
    user_handle: bytes | None = None

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return encode_cbor(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def _auth_data(self, rp_id: str, flags: int, attested: bytes = b"") -> bytes:
        return (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([flags])
            + struct.pack(">I", self.counter)
            + attested
        )

    def register(
        self, options: dict[str, Any], *, origin: str = ORIGIN, verified: bool = True
    ) -> dict[str, Any]:
        """The answer to ``navigator.credentials.create(options)``."""
        self.user_handle = _decode(options["user"]["id"])
        client_data = json.dumps(
            {
                "type": "webauthn.create",
                "challenge": options["challenge"],
                "origin": origin,
                "crossOrigin": False,
            }
        ).encode()
        attested = (
            bytes(16)
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + self._cose_key()
        )
        flags = _UP | _AT | (_UV if verified else 0)
        auth_data = self._auth_data(options["rp"]["id"], flags, attested)
        attestation = encode_cbor({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": _b64(self.credential_id),
            "rawId": _b64(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": _b64(client_data),
                "attestationObject": _b64(attestation),
            },
            "clientExtensionResults": {},
        }

    def assert_(
        self,
        options: dict[str, Any],
        *,
        origin: str = ORIGIN,
        verified: bool = True,
        advance: bool = True,
    ) -> dict[str, Any]:
        """The answer to ``navigator.credentials.get(options)``; ``advance=False`` reuses the
        last counter (what a cloned authenticator would send)."""
        if advance:
            self.counter += 1
        client_data = json.dumps(
            {
                "type": "webauthn.get",
                "challenge": options["challenge"],
                "origin": origin,
                "crossOrigin": False,
            }
        ).encode()
        auth_data = self._auth_data(options["rpId"], _UP | (_UV if verified else 0))
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        response: dict[str, Any] = {
            "clientDataJSON": _b64(client_data),
            "authenticatorData": _b64(auth_data),
            "signature": _b64(signature),
        }
        if self.user_handle is not None:
            response["userHandle"] = _b64(self.user_handle)
        return {
            "id": _b64(self.credential_id),
            "rawId": _b64(self.credential_id),
            "type": "public-key",
            "response": response,
            "clientExtensionResults": {},
        }


def _decode(text: str) -> bytes:
    return base64url_to_bytes(text)


def enroll(registry: Any, name: str, *, now: float | None = None) -> SoftPasskey:
    """Enrol ``name`` with a new software passkey through an invite, as the page does."""
    invite = registry.invite(name, now=now)
    passkey = SoftPasskey()
    options = registry.registration_options(invite.token, rp_id=RP_ID, now=now)
    registry.finish_registration(
        invite.token, passkey.register(options), rp_id=RP_ID, origin=ORIGIN, now=now
    )
    return passkey


def approve_as(
    registry: Any, passkey: SoftPasskey, change_set_id: str, action: str = "approve"
) -> Any:
    """A verified passkey assertion for ``action`` of ``change_set_id``: the approver."""
    options = registry.authentication_options(change_set_id, action, rp_id=RP_ID)
    return registry.finish_authentication(
        change_set_id, action, passkey.assert_(options), rp_id=RP_ID, origin=ORIGIN
    )
