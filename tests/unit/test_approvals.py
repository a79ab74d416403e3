"""Approval JWS: minting, every verification failure code, keys, JWKS and the key directory."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sizeguard import approvals
from sizeguard.approvals import (
    APPROVAL_ANNOTATION,
    APPROVAL_TYP,
    CREATE_TTL_SECONDS,
    LEEWAY_SECONDS,
    MAX_TOKEN_LENGTH,
    MIN_AGE_TO_DELETE_SECONDS,
    KeyStoreError,
    SigningKey,
    TrustedKeys,
    VerifyResult,
    approval_of,
    generate_signing_key,
    init_key_dir,
    jwk_thumbprint,
    load_signing_key,
    load_signing_key_file,
    mint_approval,
    mint_for_change,
    public_jwk,
    read_jwks,
    rotate_key_dir,
    verify_transition,
)
from sizeguard.changes import ResourceChange, Target, guarded_state, hpa_object, target_of

NOW = 1_800_000_000
CS = "cs-0123456789abcdef0123"
MI = 1024**2


def deployment(
    *,
    replicas: int = 3,
    cpu: str = "100m",
    memory: str = "128Mi",
    name: str = "web",
    namespace: str = "shop",
    uid: str = "3f1c0b4e-0000-4000-8000-000000000001",
    token: Any = None,
    rv: str = "41",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "resourceVersion": rv,
    }
    if token is not None:
        metadata["annotations"] = {APPROVAL_ANNOTATION: token}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "resources": {"requests": {"cpu": cpu, "memory": memory}},
                        }
                    ]
                }
            },
        },
    }


OLD = deployment()
NEW = deployment(replicas=5, cpu="250m")


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def trusted(key: SigningKey) -> TrustedKeys:
    return TrustedKeys([key.public_key])


def mint(
    key: SigningKey,
    old: dict[str, Any] = OLD,
    new: dict[str, Any] = NEW,
    *,
    now: float = NOW,
) -> str:
    return mint_approval(
        key,
        change_set_id=CS,
        op="apply",
        target=target_of(old),
        before=guarded_state(old),
        after=guarded_state(new),
        subject="alice@example.com",
        resource_version=old["metadata"].get("resourceVersion"),
        now=now,
    )


def verify(
    token: object,
    trusted: TrustedKeys | dict[str, Any],
    old: dict[str, Any] = OLD,
    new: dict[str, Any] = NEW,
    *,
    kind: str = "Deployment",
    namespace: str = "shop",
    name: str = "web",
    now: float = NOW + 10,
) -> VerifyResult:
    return verify_transition(
        token,
        kind=kind,
        namespace=namespace,
        name=name,
        old_object=old,
        new_object=new,
        jwks=trusted,
        now=now,
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def good_header(key: SigningKey) -> dict[str, Any]:
    return {"alg": "EdDSA", "typ": APPROVAL_TYP, "kid": key.kid}


def good_claims(old: dict[str, Any] = OLD, new: dict[str, Any] = NEW) -> dict[str, Any]:
    return {
        "iss": "sizeguard",
        "sub": "alice@example.com",
        "jti": str(uuid.uuid4()),
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 300,
        "cs": CS,
        "op": "apply",
        "target": target_of(old).model_dump(),
        "rv": old["metadata"]["resourceVersion"],
        "from": guarded_state(old).model_dump(),
        "to": guarded_state(new).model_dump(),
    }


def craft(
    header: dict[str, Any] | bytes,
    claims: dict[str, Any] | bytes,
    sign: Callable[[bytes], bytes],
) -> str:
    """Build a compact JWS by hand, so tests do not depend on the code under test."""
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw_claims = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64(raw_header)}.{b64(raw_claims)}".encode()
    return f"{signing_input.decode()}.{b64(sign(signing_input))}"


def assert_code(result: VerifyResult, code: str) -> None:
    assert result.code == code, result.message
    assert result.ok is (code == "ok")
    assert result.message  # every outcome explains itself


# --- the happy path ----------------------------------------------------------------------------


def test_mint_then_verify(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": "sizeguard-approval+jwt", "kid": key.kid}
    result = verify(token, trusted)
    assert_code(result, "ok")
    assert result.claims is not None
    assert result.claims.cs == CS
    assert result.claims.to == guarded_state(NEW)
    assert "alice@example.com" in result.message


def test_claims_follow_the_design(key: SigningKey) -> None:
    token = mint(key)
    claims = jwt.decode(
        token,
        key.public_key,
        algorithms=["EdDSA"],
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert set(claims) == {
        "iss", "sub", "jti", "iat", "nbf", "exp", "cs", "op", "target", "rv", "from", "to",
    }  # fmt: skip
    assert claims["iss"] == "sizeguard"
    assert claims["iat"] == claims["nbf"] == NOW
    assert claims["exp"] == NOW + 300
    assert uuid.UUID(claims["jti"]).version == 4
    assert claims["target"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "namespace": "shop",
        "name": "web",
        "uid": OLD["metadata"]["uid"],
    }
    assert claims["from"]["replicas"] == 3
    assert claims["to"]["containers"]["web"]["cpu_request"] == 250
    assert mint(key) != token  # a fresh jti each time


def test_policy_input(key: SigningKey, trusted: TrustedKeys) -> None:
    ok = verify(mint(key), trusted).policy_input()
    assert ok["present"] is True
    assert ok["valid"] is True
    assert ok["error"] is None
    assert ok["claims"]["from"]["replicas"] == 3
    assert ok["claims"]["target"]["apiVersion"] == "apps/v1"
    json.dumps(ok)  # JSON-ready for OPA
    missing = verify(None, trusted).policy_input()
    assert missing == {"present": False, "valid": False, "error": "missing", "claims": None}
    forged = verify(mint(generate_signing_key()), trusted).policy_input()
    assert forged["present"] is True
    assert forged["claims"] is None  # never unverified claims


def test_rollback_reverses_the_change(key: SigningKey, trusted: TrustedKeys) -> None:
    change = ResourceChange(
        target=target_of(OLD),
        before=guarded_state(OLD),
        after=guarded_state(NEW),
        reason="r",
        source="s",
    )

    def approve(op: Literal["apply", "rollback"]) -> str:
        return mint_for_change(
            key, change, change_set_id=CS, op=op, subject="a", resource_version="41", now=NOW
        )

    apply, rollback = approve("apply"), approve("rollback")
    assert_code(verify(apply, trusted, OLD, NEW), "ok")
    assert_code(verify(rollback, trusted, NEW, OLD), "ok")
    assert_code(verify(rollback, trusted, OLD, NEW), "from_mismatch")
    result = verify(rollback, trusted, NEW, OLD)
    assert result.claims is not None
    assert result.claims.op == "rollback"


def test_mint_refuses_a_no_op_and_oversized_tokens(key: SigningKey) -> None:
    with pytest.raises(ValueError, match="nothing to approve"):
        mint(key, OLD, copy.deepcopy(OLD))
    many = [{"name": f"c{n:03d}", "resources": {"requests": {"cpu": "1"}}} for n in range(200)]
    big_old = copy.deepcopy(OLD)
    big_old["spec"]["template"]["spec"]["containers"] = many
    big_new = copy.deepcopy(big_old)
    big_new["spec"]["replicas"] = 4
    with pytest.raises(ValueError, match="byte limit"):
        mint(key, big_old, big_new)
    with pytest.raises(ValueError):
        mint_approval(
            key,
            change_set_id="not-an-id",
            op="apply",
            target=target_of(OLD),
            before=guarded_state(OLD),
            after=guarded_state(NEW),
            subject="alice",
        )


def test_approval_of() -> None:
    assert approval_of(deployment(token="abc")) == "abc"
    assert approval_of(deployment()) is None
    assert approval_of({"metadata": {"annotations": None}}) is None
    assert approval_of({"metadata": "x"}) is None
    assert approval_of({}) is None


# --- missing and malformed ---------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
def test_missing(trusted: TrustedKeys, token: object) -> None:
    assert_code(verify(token, trusted), "missing")


@pytest.mark.parametrize("token", [7, b"abc", ["a.b.c"], {"t": 1}, True])
def test_non_string_is_malformed(trusted: TrustedKeys, token: object) -> None:
    assert_code(verify(token, trusted), "malformed")


def test_one_megabyte_annotation_is_rejected_before_parsing(
    key: SigningKey, trusted: TrustedKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed an oversized token")

    monkeypatch.setattr(approvals, "_check_header", explode)
    monkeypatch.setattr(approvals, "_b64url_decode", explode)
    padded = mint(key) + "A" * (1024 * 1024)
    result = verify(padded, trusted)
    assert_code(result, "malformed")
    assert str(MAX_TOKEN_LENGTH) in result.message
    assert_code(verify("x" * (1024 * 1024), trusted), "malformed")


def test_truncated_tokens_are_rejected(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    for cut in list(range(1, 80)) + list(range(80, len(token), 37)) + [len(token) - 1]:
        result = verify(token[:cut], trusted)
        assert result.code in {"malformed", "bad_signature"}, (cut, result)
        assert not result.ok
    header, payload, signature = token.split(".")
    assert_code(verify(f"{header}.{payload}", trusted), "malformed")
    assert_code(verify(f"{header}.{payload}.", trusted), "malformed")
    assert_code(verify(f"{header}..{signature}", trusted), "malformed")


@pytest.mark.parametrize(
    "garbage",
    [
        "not a token",
        "....",
        "a.b.c",
        "eyJ.eyJ.sig",
        "%%%.%%%.%%%",
        "a.b.c.d",
        " " + "a.b.c",
        "\u00e9.\u00e9.\u00e9",
        "0" * 500,
        "null",
        "{}",
    ],
)
def test_garbled_annotations_are_malformed(trusted: TrustedKeys, garbage: str) -> None:
    assert_code(verify(garbage, trusted), "malformed")


def test_whitespace_around_a_good_token_is_malformed(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    for variant in (f" {token}", f"{token}\n", token.replace(".", " .", 1)):
        assert_code(verify(variant, trusted), "malformed")


def test_alg_none_is_malformed(key: SigningKey, trusted: TrustedKeys) -> None:
    header = {"alg": "none", "typ": APPROVAL_TYP, "kid": key.kid}
    unsigned = craft(header, good_claims(), lambda _: b"")
    assert_code(verify(unsigned, trusted), "malformed")
    assert_code(verify(unsigned.rstrip("."), trusted), "malformed")
    with_sig = craft(header, good_claims(), key.private_key.sign)
    result = verify(with_sig, trusted)
    assert_code(result, "malformed")
    assert "'none'" in result.message


def test_hs256_signed_with_the_public_key_is_malformed(
    key: SigningKey, trusted: TrustedKeys
) -> None:
    """The classic algorithm-confusion attack: HMAC keyed with public key material."""
    header = {"alg": "HS256", "typ": APPROVAL_TYP, "kid": key.kid}
    raw = key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_json = json.dumps(public_jwk(key.public_key)).encode()
    for secret in (raw, pem, jwk_json, b64(raw).encode()):
        token = craft(
            header, good_claims(), lambda data, s=secret: hmac.new(s, data, hashlib.sha256).digest()
        )
        result = verify(token, trusted)
        assert_code(result, "malformed")
        assert "only EdDSA" in result.message


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "EdDSA", "typ": "JWT", "kid": "K"},
        {"alg": "EdDSA", "kid": "K"},
        {"alg": "EdDSA", "typ": APPROVAL_TYP},
        {"alg": "EdDSA", "typ": APPROVAL_TYP, "kid": 5},
        {"alg": "EdDSA", "typ": APPROVAL_TYP, "kid": "../../etc/passwd"},
        {"alg": "EdDSA", "typ": APPROVAL_TYP, "kid": "K", "crit": ["exp"]},
        {"alg": "EdDSA", "typ": APPROVAL_TYP, "kid": "K", "jku": "https://evil.example/jwks"},
        {"alg": "EdDSA", "typ": APPROVAL_TYP, "kid": "K", "b64": False},
        {"alg": "ES256", "typ": APPROVAL_TYP, "kid": "K"},
        {"alg": "RS256", "typ": APPROVAL_TYP, "kid": "K"},
        {"alg": "eddsa", "typ": APPROVAL_TYP, "kid": "K"},
        {"alg": ["EdDSA"], "typ": APPROVAL_TYP, "kid": "K"},
    ],
)
def test_unexpected_headers_are_malformed(
    key: SigningKey, trusted: TrustedKeys, header: dict[str, Any]
) -> None:
    header = {name: (key.kid if value == "K" else value) for name, value in header.items()}
    token = craft(header, good_claims(), key.private_key.sign)
    assert_code(verify(token, trusted), "malformed")


def test_duplicate_header_members_are_malformed(key: SigningKey, trusted: TrustedKeys) -> None:
    raw = (f'{{"alg":"HS256","typ":"{APPROVAL_TYP}","kid":"{key.kid}","alg":"EdDSA"}}').encode()
    token = craft(raw, good_claims(), key.private_key.sign)
    assert_code(verify(token, trusted), "malformed")


def test_non_canonical_base64_is_malformed(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    header, payload, signature = token.split(".")
    assert_code(verify(f"{header}=.{payload}.{signature}", trusted), "malformed")
    assert_code(verify(f"{header}.{payload}.{signature}==", trusted), "malformed")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(iss="someone-else"),
        lambda c: c.update(exp=c["iat"] + 86400),  # longer than the 300 s lifetime
        lambda c: c.update(nbf=c["exp"]),
        lambda c: c.update(iat="1800000000"),
        lambda c: c.update(exp=float(c["exp"])),
        lambda c: c.update(jti="not-a-uuid"),
        lambda c: c.update(jti=str(uuid.uuid1())),
        lambda c: c.update(cs="cs-XYZ"),
        lambda c: c.update(op="delete"),
        lambda c: c.update(sub=""),
        lambda c: c.update(extra="claim"),
        lambda c: c.pop("to"),
        lambda c: c.pop("exp"),
        lambda c: c["to"].update(replicas="5"),
        lambda c: c["to"].update(replicas=True),
        lambda c: c["to"].update(replicas=-1),
        lambda c: c["to"]["containers"]["web"].pop("cpu_limit"),
        lambda c: c["target"].pop("uid"),
        lambda c: c["target"].update(api_version=c["target"].pop("apiVersion")),
        lambda c: c.update(from_=c.pop("from")),
    ],
)
def test_signed_but_invalid_claims_are_malformed(
    key: SigningKey, trusted: TrustedKeys, mutate: Callable[[dict[str, Any]], object]
) -> None:
    claims = good_claims()
    mutate(claims)
    token = craft(good_header(key), claims, key.private_key.sign)
    assert_code(verify(token, trusted), "malformed")


@pytest.mark.parametrize("payload", [b"[]", b"null", b"not json", b'{"iss":"a","iss":"b"}', b"{"])
def test_signed_non_object_payloads_are_malformed(
    key: SigningKey, trusted: TrustedKeys, payload: bytes
) -> None:
    token = craft(good_header(key), payload, key.private_key.sign)
    assert_code(verify(token, trusted), "malformed")


def test_hand_crafted_valid_token_verifies(key: SigningKey, trusted: TrustedKeys) -> None:
    """The test helpers build tokens exactly as the contract says (guards the tests above)."""
    token = craft(good_header(key), good_claims(), key.private_key.sign)
    assert_code(verify(token, trusted), "ok")


# --- keys and signatures -----------------------------------------------------------------------


def test_unknown_key(key: SigningKey, trusted: TrustedKeys) -> None:
    stranger = generate_signing_key()
    result = verify(mint(stranger), trusted)
    assert_code(result, "unknown_key")
    assert stranger.kid in result.message


def test_key_no_longer_in_the_jwks(tmp_path: Path) -> None:
    first = init_key_dir(tmp_path)
    old_token = mint(first)
    second = rotate_key_dir(tmp_path)
    # After rotation both keys are trusted...
    assert_code(verify(old_token, read_jwks(tmp_path)), "ok")
    assert_code(verify(mint(second), read_jwks(tmp_path)), "ok")
    # ...until the old key is retired from the JWKS the webhook uses.
    retired = TrustedKeys([second.public_key])
    assert_code(verify(old_token, retired), "unknown_key")
    assert_code(verify(mint(second), retired), "ok")


def test_bad_signature_from_another_key_under_a_trusted_kid(
    key: SigningKey, trusted: TrustedKeys
) -> None:
    stranger = generate_signing_key()
    token = craft(good_header(key), good_claims(), stranger.private_key.sign)
    result = verify(token, trusted)
    assert_code(result, "bad_signature")
    assert result.claims is None


def test_tampered_payload_is_bad_signature(key: SigningKey, trusted: TrustedKeys) -> None:
    header, _, signature = mint(key).split(".")
    claims = good_claims()
    claims["to"]["replicas"] = 50
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert_code(verify(forged, trusted), "bad_signature")


def test_garbled_signature_is_bad_signature(key: SigningKey, trusted: TrustedKeys) -> None:
    header, payload, signature = mint(key).split(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert_code(verify(f"{header}.{payload}.{flipped}", trusted), "bad_signature")
    short = signature[:-6]  # 80 characters: canonical base64url of a 60-byte "signature"
    assert_code(verify(f"{header}.{payload}.{short}", trusted), "bad_signature")
    assert_code(verify(f"{header}.{payload}.AAAA", trusted), "bad_signature")


# --- time --------------------------------------------------------------------------------------


def test_expired(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key, now=NOW)
    assert_code(verify(token, trusted, now=NOW + 300 + LEEWAY_SECONDS), "ok")
    result = verify(token, trusted, now=NOW + 300 + LEEWAY_SECONDS + 1)
    assert_code(result, "expired")
    assert "approve the change again" in result.message
    assert_code(verify(token, trusted, now=NOW + 10**6), "expired")


def test_not_yet_valid(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key, now=NOW)
    assert_code(verify(token, trusted, now=NOW - LEEWAY_SECONDS), "ok")
    assert_code(verify(token, trusted, now=NOW - LEEWAY_SECONDS - 1), "not_yet_valid")


# --- binding to the object and the transition --------------------------------------------------


def test_valid_token_for_another_object(key: SigningKey, trusted: TrustedKeys) -> None:
    other_old, other_new = deployment(name="api"), deployment(name="api", replicas=5, cpu="250m")
    token_for_api = mint(key, other_old, other_new)
    # Presented on web's update (web is in exactly the same state as api):
    result = verify(token_for_api, trusted, OLD, NEW)
    assert_code(result, "wrong_target")
    assert "Deployment/shop/api" in result.message


def test_valid_token_for_another_namespace(key: SigningKey, trusted: TrustedKeys) -> None:
    staging_old = deployment(namespace="staging")
    staging_new = deployment(namespace="staging", replicas=5, cpu="250m")
    token = mint(key, staging_old, staging_new)
    assert_code(verify(token, trusted, OLD, NEW), "wrong_target")


def test_request_kind_namespace_name_must_match(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    assert_code(verify(token, trusted, kind="StatefulSet"), "wrong_target")
    assert_code(verify(token, trusted, namespace="prod"), "wrong_target")
    assert_code(verify(token, trusted, name="api"), "wrong_target")
    renamed_old = deployment(name="api")  # request says web, the old object says api
    assert_code(verify(token, trusted, renamed_old, NEW), "wrong_target")
    other_version = copy.deepcopy(OLD)
    other_version["apiVersion"] = "apps/v1beta2"
    assert_code(verify(token, trusted, other_version, NEW), "wrong_target")


def test_valid_token_for_another_uid(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    recreated_old = deployment(uid="3f1c0b4e-0000-4000-8000-000000000002")
    recreated_new = deployment(uid="3f1c0b4e-0000-4000-8000-000000000002", replicas=5, cpu="250m")
    result = verify(token, trusted, recreated_old, recreated_new)
    assert_code(result, "wrong_uid")
    assert "recreated" in result.message


def test_uid_comes_from_the_old_object(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    new_claims_other_uid = deployment(uid="something-else", replicas=5, cpu="250m")
    assert_code(verify(token, trusted, OLD, new_claims_other_uid), "ok")
    no_uid = copy.deepcopy(OLD)
    del no_uid["metadata"]["uid"]
    assert_code(verify(token, trusted, no_uid, NEW), "wrong_uid")


def test_to_differs_by_one_millicore(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    sneaky = deployment(replicas=5, cpu="251m")
    result = verify(token, trusted, OLD, sneaky)
    assert_code(result, "to_mismatch")
    assert "250m → 251m" in result.message


def test_to_differs_in_spelling_only_is_ok(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    respelled = deployment(replicas=5, cpu="0.25", memory="134217728")
    assert_code(verify(token, trusted, OLD, respelled), "ok")


def _at(obj: dict[str, Any], rv: str) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": rv}}


def test_replay_after_a_rollback_is_refused(key: SigningKey, trusted: TrustedKeys) -> None:
    """A -> B approved and applied, then rolled back B -> A: the A -> B token must not apply
    again, although the object is back in its ``from`` state. No memory is needed: the token
    names the resourceVersion it was minted against, and every write moves it on."""
    a1, b2, a3 = _at(OLD, "100"), _at(NEW, "101"), _at(OLD, "102")
    forward = mint(key, a1, b2)
    back = mint(key, b2, a3)
    assert_code(verify(forward, trusted, a1, b2), "ok")
    assert_code(verify(back, trusted, b2, a3, now=NOW + 20), "ok")
    replay = verify(forward, trusted, a3, _at(NEW, "103"), now=NOW + 30)
    assert_code(replay, "from_mismatch")
    assert "resourceVersion 102, approved at 100" in replay.message
    # Any other write in between (a label, a status update) is enough to end it too.
    assert_code(verify(forward, trusted, _at(OLD, "150"), NEW), "from_mismatch")


def test_an_object_without_a_resource_version_matches_no_approval(
    key: SigningKey, trusted: TrustedKeys
) -> None:
    token = mint(key)
    bare = copy.deepcopy(OLD)
    del bare["metadata"]["resourceVersion"]
    assert_code(verify(token, trusted, bare, NEW), "from_mismatch")
    with pytest.raises(ValueError, match="rv is set exactly for apply and rollback"):
        mint(key, bare, NEW)


def test_replay_after_the_change_was_applied(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    assert_code(verify(token, trusted, OLD, NEW), "ok")
    # The change is in; now someone re-sends the same annotated object (old object == `to`).
    result = verify(token, trusted, NEW, NEW)
    assert_code(result, "from_mismatch")
    assert "already" in result.message
    # ...or replays it after someone else changed the object in between.
    drifted = deployment(replicas=4)
    assert_code(verify(token, trusted, drifted, NEW), "from_mismatch")


def test_unreadable_objects_fail_closed(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint(key)
    broken_new = copy.deepcopy(NEW)
    broken_new["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "x"
    assert_code(verify(token, trusted, OLD, broken_new), "to_mismatch")
    broken_old = copy.deepcopy(OLD)
    broken_old["spec"]["replicas"] = "3"
    assert_code(verify(token, trusted, broken_old, NEW), "from_mismatch")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": NEW["metadata"], "spec": {}}
    assert_code(verify(token, trusted, OLD, pod), "to_mismatch")


def test_hpa_transition(key: SigningKey, trusted: TrustedKeys) -> None:
    def hpa(min_replicas: int, max_replicas: int) -> dict[str, Any]:
        return {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "uid": "hpa-uid",
                "resourceVersion": "9",
            },
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
            },
        }

    token = mint(key, hpa(2, 10), hpa(4, 10))
    assert_code(
        verify(token, trusted, hpa(2, 10), hpa(4, 10), kind="HorizontalPodAutoscaler"), "ok"
    )
    assert_code(
        verify(token, trusted, hpa(2, 10), hpa(4, 11), kind="HorizontalPodAutoscaler"),
        "to_mismatch",
    )


# --- JWKS --------------------------------------------------------------------------------------


def test_thumbprint_matches_rfc_8037_example() -> None:
    # RFC 8037, appendix A.3.
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    public_key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
    assert jwk_thumbprint(public_key) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_public_jwk_shape(key: SigningKey) -> None:
    jwk = public_jwk(key.public_key)
    assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("OKP", "Ed25519", "sig", "EdDSA")
    assert jwk["kid"] == key.kid


def test_verify_accepts_a_jwks_mapping(key: SigningKey, trusted: TrustedKeys) -> None:
    assert_code(verify(mint(key), trusted.to_jwks()), "ok")
    assert TrustedKeys.from_json(json.dumps(trusted.to_jwks())).kids == (key.kid,)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda j: j.update(kid="wrong"),
        lambda j: j.update(crv="X25519"),
        lambda j: j.update(kty="RSA"),
        lambda j: j.update(alg="HS256"),
        lambda j: j.update(use="enc"),
        lambda j: j.update(x=j["x"][:-2]),
        lambda j: j.update(x=123),
        lambda j: j.update(d="private-part"),
        lambda j: j.update(x5u="https://evil.example"),
        lambda j: j.pop("x"),
    ],
)
def test_invalid_jwks_are_refused(
    key: SigningKey, mutate: Callable[[dict[str, Any]], object]
) -> None:
    jwk: dict[str, Any] = dict(public_jwk(key.public_key))
    mutate(jwk)
    with pytest.raises(ValueError):
        TrustedKeys.from_jwks({"keys": [jwk]})


@pytest.mark.parametrize("document", [{}, {"keys": []}, {"keys": {}}, [], {"keys": [], "x": 1}])
def test_invalid_jwks_documents_are_refused(document: Any) -> None:
    with pytest.raises(ValueError):
        TrustedKeys.from_jwks(document)


def test_duplicate_keys_are_refused(key: SigningKey) -> None:
    jwk = public_jwk(key.public_key)
    with pytest.raises(ValueError, match="twice"):
        TrustedKeys.from_jwks({"keys": [jwk, jwk]})


# --- key directory -----------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_layout_and_modes(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    key = init_key_dir(directory)
    pem = directory / "signing" / f"{key.kid}.pem"
    assert mode(pem) == 0o600
    assert mode(directory) == 0o700
    assert mode(directory / "signing") == 0o700
    assert (directory / "active").read_text() == f"{key.kid}\n"
    assert read_jwks(directory).kids == (key.kid,)
    assert load_signing_key(directory).kid == key.kid
    assert b"PRIVATE KEY" in pem.read_bytes()
    assert "d" not in json.loads((directory / "jwks.json").read_text())["keys"][0]


def test_init_never_overwrites(tmp_path: Path) -> None:
    key = init_key_dir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(KeyStoreError, match="refusing to overwrite"):
        init_key_dir(tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert load_signing_key(tmp_path).kid == key.kid


def test_init_refuses_a_directory_with_stray_keys(tmp_path: Path) -> None:
    (tmp_path / "signing").mkdir()
    (tmp_path / "signing" / "something.pem").write_text("x")
    with pytest.raises(KeyStoreError, match="refusing"):
        init_key_dir(tmp_path)


def test_key_files_are_created_exclusively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    init_key_dir(tmp_path)
    clash = generate_signing_key()
    victim = tmp_path / "signing" / f"{clash.kid}.pem"
    victim.write_text("do not touch")
    monkeypatch.setattr(approvals, "generate_signing_key", lambda: clash)
    with pytest.raises(KeyStoreError, match="refusing to overwrite"):
        rotate_key_dir(tmp_path)
    assert victim.read_text() == "do not touch"


def test_rotate(tmp_path: Path) -> None:
    first = init_key_dir(tmp_path)
    second = rotate_key_dir(tmp_path)
    third = rotate_key_dir(tmp_path)
    assert load_signing_key(tmp_path).kid == third.kid
    assert read_jwks(tmp_path).kids == (third.kid, second.kid, first.kid)
    assert len(list((tmp_path / "signing").glob("*.pem"))) == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_rotate_without_init(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="keys init"):
        rotate_key_dir(tmp_path)
    with pytest.raises(KeyStoreError):
        rotate_key_dir(tmp_path / "missing")


def test_loose_key_file_permissions_are_refused(tmp_path: Path) -> None:
    key = init_key_dir(tmp_path)
    pem = tmp_path / "signing" / f"{key.kid}.pem"
    pem.chmod(0o644)
    with pytest.raises(KeyStoreError, match="mode 0644"):
        load_signing_key(tmp_path)
    pem.chmod(0o440)
    assert load_signing_key(tmp_path).kid == key.kid


@pytest.mark.parametrize("active", ["../../etc/passwd", "", "x" * 43 + "/", "\u00e9" * 43])
def test_tampered_active_file_is_refused(tmp_path: Path, active: str) -> None:
    init_key_dir(tmp_path)
    (tmp_path / "active").write_text(active)
    with pytest.raises(KeyStoreError):
        load_signing_key(tmp_path)


def test_active_pointing_at_another_key_is_refused(tmp_path: Path) -> None:
    key = init_key_dir(tmp_path)
    other = generate_signing_key()
    pem = tmp_path / "signing" / f"{key.kid}.pem"
    pem.chmod(0o600)
    pem.write_bytes(
        other.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyStoreError, match="holds key"):
        load_signing_key(tmp_path)


def test_non_ed25519_or_garbage_key_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(KeyStoreError, match="not an unencrypted PEM"):
        load_signing_key_file(path)
    with pytest.raises(KeyStoreError, match="cannot read"):
        load_signing_key_file(tmp_path / "absent.pem")


# --- properties --------------------------------------------------------------------------------

quantity_cpu = st.one_of(
    st.none(),
    st.integers(1, 64_000).map(lambda m: f"{m}m"),
    st.integers(1, 64).map(str),
    st.sampled_from(["0.5", ".25", "1.5", "2e-1", "100000u"]),
)
quantity_memory = st.one_of(
    st.none(),
    st.integers(1, 64 * 1024).map(lambda m: f"{m}Mi"),
    st.integers(1, 64).map(lambda g: f"{g}Gi"),
    st.integers(1, 10**11),
    st.sampled_from(["1G", "512M", "1.5Gi", "1e9"]),
)


@st.composite
def container_specs(draw: st.DrawFn, prefix: str) -> list[dict[str, Any]]:
    count = draw(st.integers(1 if prefix == "c" else 0, 3))
    result = []
    for index in range(count):
        requests = {"cpu": draw(quantity_cpu), "memory": draw(quantity_memory)}
        limits = {"cpu": draw(quantity_cpu), "memory": draw(quantity_memory)}
        result.append(
            {
                "name": f"{prefix}{index}",
                "resources": {
                    "requests": {k: v for k, v in requests.items() if v is not None},
                    "limits": {k: v for k, v in limits.items() if v is not None},
                },
            }
        )
    return result


@st.composite
def transitions(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    kind = draw(st.sampled_from(["Deployment", "StatefulSet", "DaemonSet"]))
    containers, init_containers = draw(container_specs("c")), draw(container_specs("i"))

    def build(
        replicas: int, containers: list[dict[str, Any]], init_containers: list[dict[str, Any]]
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "template": {"spec": {"containers": containers, "initContainers": init_containers}}
        }
        if kind != "DaemonSet":
            spec["replicas"] = replicas
        return {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": "w", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"},
            "spec": spec,
        }

    old = build(draw(st.integers(0, 100)), containers, init_containers)
    new_containers = [
        {**c, "resources": draw(container_specs("c"))[0]["resources"]} if draw(st.booleans()) else c
        for c in containers
    ]
    new = build(draw(st.integers(0, 100)), new_containers, init_containers)
    return old, new


@settings(max_examples=100, deadline=None)
@given(transitions(), st.integers(0, 300 + LEEWAY_SECONDS))
def test_verify_of_mint_holds_for_valid_transitions(
    key: SigningKey, trusted: TrustedKeys, case: tuple[dict[str, Any], dict[str, Any]], age: int
) -> None:
    old, new = case
    if guarded_state(old) == guarded_state(new):
        with pytest.raises(ValueError, match="nothing to approve"):
            mint(key, old, new)
        return
    token = mint(key, old, new)
    annotated = copy.deepcopy(new)
    annotated["metadata"]["annotations"] = {APPROVAL_ANNOTATION: token}
    result = verify_transition(
        approval_of(annotated),
        kind=old["kind"],
        namespace="ns",
        name="w",
        old_object=old,
        new_object=annotated,
        jwks=trusted,
        now=NOW + age,
    )
    assert_code(result, "ok")
    # ...and the same token never approves the reverse or a replay.
    assert_code(
        verify_transition(
            token,
            kind=old["kind"],
            namespace="ns",
            name="w",
            old_object=new,
            new_object=new,
            jwks=trusted,
            now=NOW + age,
        ),
        "from_mismatch",
    )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_-]{0,80}(\.[A-Za-z0-9_=-]{0,80}){0,3}"))
def test_arbitrary_strings_never_verify(trusted: TrustedKeys, text: str) -> None:
    result = verify(text, trusted)
    assert not result.ok
    assert result.code in {"missing", "malformed", "unknown_key", "bad_signature"}


@pytest.mark.parametrize(
    "raw_hex",
    [
        "01" + "00" * 31,  # the identity point
        "00" * 32,  # order 4
        "ec" + "ff" * 30 + "7f",  # y = -1, order 2
        "ed" + "ff" * 30 + "7f",  # y = p: non-canonical
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    ],
)
def test_weak_public_keys_are_refused(raw_hex: str) -> None:
    """Under a small-order key, x||0 signs anything: such a JWKS entry must be refused."""
    x = base64.urlsafe_b64encode(bytes.fromhex(raw_hex)).rstrip(b"=").decode()
    document = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k"}]}
    with pytest.raises(ValueError, match="small order or non-canonical"):
        TrustedKeys.from_jwks(document)


# --- creating and deleting an HPA --------------------------------------------------------------

HPA_SPEC: dict[str, Any] = {
    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
    "minReplicas": 2,
    "maxReplicas": 6,
}


def hpa_live(uid: str = "hpa-uid-1", **spec: Any) -> dict[str, Any]:
    obj = hpa_object(HPA_TARGET, {**HPA_SPEC, **spec})
    obj["metadata"].update(uid=uid, resourceVersion="77")
    return obj


HPA_TARGET = Target(
    api_version="autoscaling/v2",
    kind="HorizontalPodAutoscaler",
    namespace="shop",
    name="web",
    uid=None,
)
CREATE = ResourceChange(
    target=HPA_TARGET,
    before=None,
    after=guarded_state(hpa_object(HPA_TARGET, HPA_SPEC)),
    reason="",
    source="edit",
    create_spec=HPA_SPEC,
)


def verify_hpa(token: object, trusted: TrustedKeys, old: Any, new: Any, **kw: Any) -> VerifyResult:
    return verify(token, trusted, old, new, kind="HorizontalPodAutoscaler", **kw)


def test_a_create_approval_admits_exactly_the_approved_object(
    key: SigningKey, trusted: TrustedKeys
) -> None:
    token = mint_for_change(key, CREATE, change_set_id=CS, op="apply", subject="a", now=NOW)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["op"], claims["from"], claims["rv"]) == ("create", None, None)
    assert claims["target"]["uid"] is None
    assert claims["exp"] - claims["iat"] == CREATE_TTL_SECONDS
    assert_code(verify_hpa(token, trusted, None, hpa_live()), "ok")
    assert_code(verify_hpa(token, trusted, None, hpa_live(maxReplicas=60)), "to_mismatch")
    assert_code(verify_hpa(token, trusted, None, hpa_live(), name="api"), "wrong_target")
    # a create approval is no approval for an update of the object it created, or a delete
    assert_code(verify_hpa(token, trusted, hpa_live(), hpa_live(minReplicas=3)), "wrong_operation")
    assert_code(verify_hpa(token, trusted, hpa_live(), None), "wrong_operation")
    # it lives CREATE_TTL_SECONDS (+ leeway), not five minutes
    late = NOW + CREATE_TTL_SECONDS + LEEWAY_SECONDS + 1
    assert_code(verify_hpa(token, trusted, None, hpa_live(), now=late), "expired")
    assert MIN_AGE_TO_DELETE_SECONDS == CREATE_TTL_SECONDS + 3 * LEEWAY_SECONDS == 120


def test_a_delete_approval_is_bound_to_the_object_it_deletes(
    key: SigningKey, trusted: TrustedKeys
) -> None:
    live = hpa_live()
    delete = ResourceChange(
        target=target_of(live), before=guarded_state(live), after=None, reason="", source="edit"
    )
    token = mint_for_change(key, delete, change_set_id=CS, op="apply", subject="a", now=NOW)
    assert_code(verify_hpa(token, trusted, live, None), "ok")
    assert_code(verify_hpa(token, trusted, hpa_live(uid="hpa-uid-2"), None), "wrong_uid")
    assert_code(verify_hpa(token, trusted, hpa_live(maxReplicas=9), None), "from_mismatch")
    assert_code(verify_hpa(token, trusted, live, hpa_live(maxReplicas=9)), "wrong_operation")
    # rolling back a delete re-creates the object: a create approval
    rollback = mint_for_change(key, delete, change_set_id=CS, op="rollback", subject="a", now=NOW)
    assert jwt.decode(rollback, options={"verify_signature": False})["op"] == "create"


def test_an_update_approval_does_not_create_or_delete(
    key: SigningKey, trusted: TrustedKeys
) -> None:
    token = mint(key, hpa_live(), hpa_live(maxReplicas=9))
    assert_code(verify_hpa(token, trusted, None, hpa_live(maxReplicas=9)), "wrong_operation")
    assert_code(verify_hpa(token, trusted, hpa_live(), None), "wrong_operation")


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"op": "create", "exp": NOW + 30}, "from is null exactly for create"),
        ({"op": "delete", "exp": NOW + 60}, "from is null exactly for create, to exactly"),
        ({"rv": None}, "rv is set exactly for apply and rollback"),
        ({"exp": NOW + 301}, "lives at most 300 s"),
        ({"op": "create", "from": None, "rv": None, "exp": NOW + 31}, "lives at most 30 s"),
        ({"op": "create", "from": None, "rv": None, "exp": NOW + 30}, "has a uid unless"),
        (
            {"op": "delete", "to": None, "rv": None, "exp": NOW + 60},
            "only HorizontalPodAutoscalers",
        ),
        ({"op": "delete", "to": None, "rv": None}, "lives at most 60 s"),
    ],
)
def test_claims_must_be_consistent(
    key: SigningKey, trusted: TrustedKeys, update: dict[str, Any], message: str
) -> None:
    """Even a correctly signed token is refused when its claims do not hang together."""
    claims = {**good_claims(), **update}

    def sign(data: bytes) -> bytes:
        return key.private_key.sign(data)

    result = verify(craft(good_header(key), claims, sign), trusted)
    assert_code(result, "malformed")
    assert message in result.message


# --- the approvers of a page approval (issue 16) ----------------------------------------------


def mint_by(key: SigningKey, approvers: list[str]) -> str:
    return mint_approval(
        key,
        change_set_id=CS,
        op="apply",
        target=target_of(OLD),
        before=guarded_state(OLD),
        after=guarded_state(NEW),
        subject=f"approver:{approvers[0]}",
        approvers=approvers,
        resource_version=OLD["metadata"]["resourceVersion"],
        now=NOW,
    )


def test_a_page_approval_names_its_approvers(key: SigningKey, trusted: TrustedKeys) -> None:
    token = mint_by(key, ["alice", "carol"])
    result = verify(token, trusted)
    assert_code(result, "ok")
    assert result.claims is not None
    assert (result.claims.sub, result.claims.approvers) == ("approver:alice", ["alice", "carol"])
    assert "approver:alice and approver:carol" in result.message
    assert result.policy_input()["claims"]["approvers"] == ["alice", "carol"]


def test_an_approval_without_approvers_has_no_approvers_claim(key: SigningKey) -> None:
    """What a webhook older than the claim still accepts (it rejects unknown claims)."""
    payload = mint(key).split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert "approvers" not in claims


@pytest.mark.parametrize(
    "approvers",
    [
        ["alice", "alice"],  # the same person twice
        [],
        ["Alice"],  # names are lower case
        ["token:alice"],
        [f"a{i}" for i in range(11)],
    ],
)
def test_signed_approvers_must_be_valid(
    key: SigningKey, trusted: TrustedKeys, approvers: list[str]
) -> None:
    claims = good_claims() | {"sub": f"approver:{(approvers or ['x'])[0]}", "approvers": approvers}
    token = craft(good_header(key), claims, key.private_key.sign)
    assert_code(verify(token, trusted), "malformed")


def test_the_subject_of_a_page_approval_is_its_first_approver(
    key: SigningKey, trusted: TrustedKeys
) -> None:
    claims = good_claims() | {"sub": "approver:carol", "approvers": ["alice", "carol"]}
    token = craft(good_header(key), claims, key.private_key.sign)
    assert_code(verify(token, trusted), "malformed")
    good = good_claims() | {"sub": "approver:alice", "approvers": ["alice", "carol"]}
    assert_code(verify(craft(good_header(key), good, key.private_key.sign), trusted), "ok")
    with pytest.raises(ValueError, match="sub must be"):
        mint_approval(
            key, change_set_id=CS, op="apply", target=target_of(OLD), before=guarded_state(OLD),
            after=guarded_state(NEW), subject="human via token:x", approvers=["alice"],
            resource_version=OLD["metadata"]["resourceVersion"], now=NOW,
        )  # fmt: skip
