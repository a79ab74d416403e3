"""The approvers registry on a real ledger, with real WebAuthn responses verified by
py_webauthn (a software P-256 passkey: tests/unit/passkeys.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from webauthn.helpers import base64url_to_bytes

from sizeguard.approvers import (
    MAX_OPEN_CHALLENGES,
    ApproverError,
    Approvers,
    challenge_binding,
    normalize_name,
)
from sizeguard.ledger import Ledger

from .passkeys import ORIGIN, RP_ID, SoftPasskey, approve_as, enroll

CS = "cs-" + "a" * 20
OTHER = "cs-" + "b" * 20


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db") as ledger:
        yield ledger


@pytest.fixture
def registry(ledger: Ledger) -> Approvers:
    return Approvers(ledger)


class _Reason:
    """``with _Reason("revoked"):`` — an ApproverError with that reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self._raises = pytest.raises(ApproverError)

    def __enter__(self) -> None:
        self._info = self._raises.__enter__()

    def __exit__(self, *exc: object) -> bool:
        handled = self._raises.__exit__(*exc)  # type: ignore[arg-type]
        assert self._info.value.reason == self.reason, str(self._info.value)
        return bool(handled)


def test_enrolment_through_an_invite(registry: Approvers, ledger: Ledger) -> None:
    passkey = enroll(registry, "Alice")
    (info,) = registry.list()
    assert (info.name, info.passkeys, info.revoked_at) == ("alice", 1, None)
    assert registry.is_active("ALICE")
    events = [e.event for e in ledger.audit_entries()]
    assert events == ["approver.invited", "approver.enrolled"]
    assert approve_as(registry, passkey, CS).name == "alice"


def test_the_invite_token_is_stored_hashed_and_never_logged(
    registry: Approvers, ledger: Ledger
) -> None:
    invite = registry.invite("alice")
    assert invite.token not in ledger.path.read_bytes().decode("latin-1")
    for entry in ledger.audit_entries():
        assert invite.token not in str(entry.details)
    assert invite.link("http://localhost:8765/") == f"http://localhost:8765/enroll/{invite.token}"


def test_an_invite_works_once(registry: Approvers) -> None:
    invite = registry.invite("alice")
    options = registry.registration_options(invite.token, rp_id=RP_ID)
    registry.finish_registration(
        invite.token, SoftPasskey().register(options), rp_id=RP_ID, origin=ORIGIN
    )
    with _Reason("invite_used"):
        registry.registration_options(invite.token, rp_id=RP_ID)
    with _Reason("invite_used"):
        registry.invite_name(invite.token)


def test_an_expired_invite_is_refused(registry: Approvers) -> None:
    invite = registry.invite("alice", ttl=60, now=time.time() - 120)
    with _Reason("invite_expired"):
        registry.registration_options(invite.token, rp_id=RP_ID)
    with _Reason("invite_unknown"):
        registry.invite_name("not-a-token")


def test_an_invite_that_expires_during_enrolment_is_refused(registry: Approvers) -> None:
    invite = registry.invite("alice", ttl=60)
    options = registry.registration_options(invite.token, rp_id=RP_ID)
    answer = SoftPasskey().register(options)
    with _Reason("invite_expired"):
        registry.finish_registration(
            invite.token, answer, rp_id=RP_ID, origin=ORIGIN, now=time.time() + 120
        )
    assert registry.list() == []


def test_enrolment_without_user_verification_is_refused(registry: Approvers) -> None:
    invite = registry.invite("alice")
    options = registry.registration_options(invite.token, rp_id=RP_ID)
    assert options["authenticatorSelection"]["userVerification"] == "required"
    with _Reason("verification_failed"):
        registry.finish_registration(
            invite.token,
            SoftPasskey().register(options, verified=False),
            rp_id=RP_ID,
            origin=ORIGIN,
        )
    assert registry.list() == []


def test_enrolment_from_another_origin_is_refused(registry: Approvers) -> None:
    invite = registry.invite("alice")
    options = registry.registration_options(invite.token, rp_id=RP_ID)
    answer = SoftPasskey().register(options, origin="http://evil.example")
    with _Reason("verification_failed"):
        registry.finish_registration(invite.token, answer, rp_id=RP_ID, origin=ORIGIN)


def test_the_challenge_is_bound_to_the_change_set_and_action(registry: Approvers) -> None:
    options = registry.authentication_options(CS, "approve", rp_id=RP_ID)
    challenge = base64url_to_bytes(options["challenge"])
    assert len(challenge) == 64
    assert challenge[32:] == challenge_binding(CS, "approve")
    assert options["userVerification"] == "required"
    again = registry.authentication_options(CS, "approve", rp_id=RP_ID)
    assert again["challenge"] != options["challenge"]


def test_an_assertion_for_another_change_set_is_refused(registry: Approvers) -> None:
    passkey = enroll(registry, "alice")
    options = registry.authentication_options(OTHER, "approve", rp_id=RP_ID)
    with _Reason("wrong_change_set"):
        registry.finish_authentication(
            CS, "approve", passkey.assert_(options), rp_id=RP_ID, origin=ORIGIN
        )


def test_an_assertion_to_decline_does_not_approve(registry: Approvers) -> None:
    passkey = enroll(registry, "alice")
    options = registry.authentication_options(CS, "decline", rp_id=RP_ID)
    with _Reason("wrong_change_set"):
        registry.finish_authentication(
            CS, "approve", passkey.assert_(options), rp_id=RP_ID, origin=ORIGIN
        )


def test_a_replayed_assertion_is_refused(registry: Approvers) -> None:
    passkey = enroll(registry, "alice")
    options = registry.authentication_options(CS, "approve", rp_id=RP_ID)
    answer = passkey.assert_(options)
    registry.finish_authentication(CS, "approve", answer, rp_id=RP_ID, origin=ORIGIN)
    with _Reason("challenge_used"):
        registry.finish_authentication(CS, "approve", answer, rp_id=RP_ID, origin=ORIGIN)


def test_a_challenge_not_issued_here_is_refused(registry: Approvers) -> None:
    passkey = enroll(registry, "alice")
    forged = {"challenge": "A" * 86, "rpId": RP_ID}
    with _Reason("challenge_unknown"):
        registry.finish_authentication(
            CS, "approve", passkey.assert_(forged), rp_id=RP_ID, origin=ORIGIN
        )


def test_an_expired_challenge_is_refused(registry: Approvers) -> None:
    passkey = enroll(registry, "alice")
    options = registry.authentication_options(CS, "approve", rp_id=RP_ID, now=time.time() - 600)
    with _Reason("challenge_expired"):
        registry.finish_authentication(
            CS, "approve", passkey.assert_(options), rp_id=RP_ID, origin=ORIGIN
        )


def test_no_assertion_at_all_is_refused(registry: Approvers) -> None:
    for junk in ({}, {"id": "x"}, {"id": "x", "rawId": "x", "response": {}}):
        with _Reason("verification_failed"):
            registry.finish_authentication(CS, "approve", junk, rp_id=RP_ID, origin=ORIGIN)


def test_a_revoked_approver_is_refused(registry: Approvers, ledger: Ledger) -> None:
    passkey = enroll(registry, "alice")
    registry.revoke("alice")
    assert not registry.is_active("alice")
    (info,) = registry.list()
    assert info.revoked_at is not None and info.passkeys == 0
    with _Reason("revoked"):
        approve_as(registry, passkey, CS)
    assert ledger.audit_entries()[-1].event == "approver.revoked"


def test_revoking_cancels_open_invites(registry: Approvers) -> None:
    invite = registry.invite("bob")
    registry.revoke("bob")
    with _Reason("invite_used"):
        registry.registration_options(invite.token, rp_id=RP_ID)
    with _Reason("unknown_approver"):
        registry.revoke("nobody")


def test_a_revoked_approver_enrolled_again_has_only_the_new_passkey(registry: Approvers) -> None:
    old = enroll(registry, "alice")
    registry.revoke("alice")
    new = enroll(registry, "alice")
    assert approve_as(registry, new, CS).name == "alice"
    with _Reason("revoked"):
        approve_as(registry, old, CS)


def test_an_unknown_passkey_is_refused(registry: Approvers) -> None:
    enroll(registry, "alice")
    stranger = SoftPasskey()
    options = registry.authentication_options(CS, "approve", rp_id=RP_ID)
    with _Reason("unknown_passkey"):
        registry.finish_authentication(
            CS, "approve", stranger.assert_(options), rp_id=RP_ID, origin=ORIGIN
        )


def test_an_assertion_without_user_verification_is_refused(registry: Approvers) -> None:
    passkey = enroll(registry, "alice")
    options = registry.authentication_options(CS, "approve", rp_id=RP_ID)
    with _Reason("verification_failed"):
        registry.finish_authentication(
            CS, "approve", passkey.assert_(options, verified=False), rp_id=RP_ID, origin=ORIGIN
        )


def test_a_sign_count_that_does_not_grow_is_refused(registry: Approvers) -> None:
    passkey = enroll(registry, "alice")
    approve_as(registry, passkey, CS)
    options = registry.authentication_options(CS, "approve", rp_id=RP_ID)
    with _Reason("verification_failed"):  # a cloned authenticator
        registry.finish_authentication(
            CS, "approve", passkey.assert_(options, advance=False), rp_id=RP_ID, origin=ORIGIN
        )


def test_an_assertion_from_another_origin_is_refused(registry: Approvers) -> None:
    passkey = enroll(registry, "alice")
    options = registry.authentication_options(CS, "approve", rp_id=RP_ID)
    with _Reason("verification_failed"):
        registry.finish_authentication(
            CS,
            "approve",
            passkey.assert_(options, origin="http://localhost:9999"),
            rp_id=RP_ID,
            origin=ORIGIN,
        )


def test_names(registry: Approvers) -> None:
    assert normalize_name(" Alice@Example.org ") == "alice@example.org"
    for bad in ("", "-x", "a b", "x" * 65, "token:alice"):
        with _Reason("invalid_name"):
            normalize_name(bad)
    with _Reason("invalid_ttl"):
        registry.invite("alice", ttl=0)


def test_links_from_requester_identities_to_approvers(registry: Approvers) -> None:
    enroll(registry, "alice")
    registry.invite("bob")  # invited, not yet enrolled: may be linked already
    registry.link("alice", "token:local")
    registry.link("alice", "JWT:system:serviceaccount:ai:assistant")
    registry.link("bob", "stdio:\uff42ob")  # NFKC: stdio:bob
    assert registry.links() == [
        ("alice", "jwt:system:serviceaccount:ai:assistant"),
        ("alice", "token:local"),
        ("bob", "stdio:bob"),
    ]
    assert registry.linked_approvers(["token:LOCAL"]) == {"alice"}
    assert registry.linked_approvers(["stdio:bob", "token:other"]) == {"bob"}
    assert registry.linked_approvers(["token:\u0430lice", "unauthenticated"]) == set()
    registry.unlink("alice", "token:local")
    assert registry.linked_approvers(["token:local"]) == set()
    with _Reason("unknown_link"):
        registry.unlink("alice", "token:local")


@pytest.mark.parametrize(
    "identity", ["local", "token:", "cert:alice", "token:\u0430lice", "token:a b", "x" * 300]
)
def test_a_link_needs_a_requester_identity(registry: Approvers, identity: str) -> None:
    enroll(registry, "alice")
    with _Reason("invalid_identity"):
        registry.link("alice", identity)


def test_a_link_needs_a_known_approver(registry: Approvers) -> None:
    with _Reason("unknown_approver"):
        registry.link("alcie", "token:local")


def test_open_challenges_per_change_set_are_capped(registry: Approvers) -> None:
    now = time.time()
    for _ in range(MAX_OPEN_CHALLENGES):
        registry.authentication_options(CS, "approve", rp_id=RP_ID, now=now)
    with _Reason("too_many_challenges"):
        registry.authentication_options(CS, "decline", rp_id=RP_ID, now=now)
    registry.authentication_options(OTHER, "approve", rp_id=RP_ID, now=now)  # another: fine
    # expired ones do not count
    registry.authentication_options(CS, "approve", rp_id=RP_ID, now=now + 301)


def test_a_spent_challenge_frees_its_place(registry: Approvers) -> None:
    passkey = enroll(registry, "alice")
    now = time.time()
    for _ in range(MAX_OPEN_CHALLENGES - 1):
        registry.authentication_options(CS, "approve", rp_id=RP_ID, now=now)
    approve_as(registry, passkey, CS)  # issues one (the 16th) and spends it
    registry.authentication_options(CS, "approve", rp_id=RP_ID, now=now)
