"""Approval strength: the levels, the requester rule, the same person counted once."""

from __future__ import annotations

import pytest

from sizeguard.server.strength import (
    AUTHENTICATED,
    TWO_APPROVERS,
    TYPED,
    Evidence,
    assess,
    needs_page,
    requester_identity,
    strongest,
)

PRODUCTION = [TYPED, AUTHENTICATED]
CRITICAL_PRODUCTION = [TYPED, AUTHENTICATED, TWO_APPROVERS]


@pytest.mark.parametrize(
    ("requester", "identity"),
    [
        ("token:Alice", "alice"),
        ("jwt:alice@example.org", "alice@example.org"),
        ("stdio:alice", "alice"),
        ("jwt:https://idp/x:y", "https://idp/x:y"),  # only the first colon separates
        ("unauthenticated", "unauthenticated"),
    ],
)
def test_requester_identity(requester: str, identity: str) -> None:
    assert requester_identity(requester) == identity


def test_levels_order() -> None:
    assert strongest([]) == "confirmation"
    assert strongest([TYPED]) == TYPED
    assert strongest([AUTHENTICATED, TYPED]) == AUTHENTICATED
    assert strongest(CRITICAL_PRODUCTION) == TWO_APPROVERS
    assert strongest([TYPED, "retina_scan"]) == "retina_scan"
    assert not needs_page([]) and not needs_page([TYPED])
    assert needs_page(PRODUCTION) and needs_page(CRITICAL_PRODUCTION)
    assert needs_page(["retina_scan"])  # unknown: fail closed


def test_nothing_recorded_meets_nothing() -> None:
    verdict = assess([], "token:bob", Evidence())
    assert not verdict.met and verdict.missing == ("confirmation",)


def test_a_confirmation_meets_the_default_only() -> None:
    assert assess([], "token:bob", Evidence(confirmed=True)).met
    verdict = assess([TYPED], "token:bob", Evidence(confirmed=True))
    assert not verdict.met and verdict.missing == (TYPED,)
    assert assess([TYPED], "token:bob", Evidence(confirmed=True, typed=True)).met


def test_a_typed_answer_does_not_meet_an_authenticated_approver() -> None:
    verdict = assess(PRODUCTION, "token:bob", Evidence(confirmed=True, typed=True))
    assert not verdict.met and verdict.missing == (AUTHENTICATED,)
    assert "passkey" in verdict.describe()


def test_one_passkey_approval_meets_production() -> None:
    verdict = assess(PRODUCTION, "token:bob", Evidence(approvers=["alice"]))
    assert verdict.met and verdict.counted == ("alice",)
    assert verdict.describe() == "approved by alice: typed_confirmation, authenticated_approver met"


def test_the_requester_may_be_the_one_approver_of_a_production_change() -> None:
    assert assess(PRODUCTION, "token:alice", Evidence(approvers=["alice"])).met


def test_two_approvers_need_two_different_people() -> None:
    assert assess(CRITICAL_PRODUCTION, "token:bob", Evidence(approvers=["alice", "carol"])).met
    verdict = assess(CRITICAL_PRODUCTION, "token:bob", Evidence(approvers=["alice", "ALICE"]))
    assert not verdict.met and verdict.missing == (TWO_APPROVERS,)
    assert verdict.counted == ("alice",)
    assert "the same person approving twice counts once" in verdict.describe()


def test_the_requester_does_not_count_for_two_approvers() -> None:
    verdict = assess(CRITICAL_PRODUCTION, "token:Alice", Evidence(approvers=["alice", "carol"]))
    assert not verdict.met and verdict.missing == (TWO_APPROVERS,)
    assert verdict.counted == ("carol",)
    assert "alice requested the change" in verdict.describe()


def test_several_requesters_none_counts() -> None:
    verdict = assess(
        CRITICAL_PRODUCTION, ["token:bob", "jwt:carol"], Evidence(approvers=["bob", "carol"])
    )
    assert not verdict.met and verdict.counted == ()
    three = Evidence(approvers=["bob", "carol", "dave", "erin"])
    assert assess(CRITICAL_PRODUCTION, ["token:bob", "jwt:carol"], three).counted == (
        "dave",
        "erin",
    )


def test_an_unknown_level_is_never_met() -> None:
    verdict = assess(["retina_scan"], "token:bob", Evidence(True, True, ["a", "b", "c"]))
    assert not verdict.met and verdict.missing == ("retina_scan",)
    assert "does not know" in verdict.describe()


def test_missing_names_what_must_happen() -> None:
    """Nothing recorded for a production change: a passkey approval, which also meets the
    typed confirmation."""
    verdict = assess(CRITICAL_PRODUCTION, "token:bob", Evidence())
    assert verdict.missing == (AUTHENTICATED, TWO_APPROVERS)
    assert "namespace typed" not in verdict.describe()
    assert assess(PRODUCTION, "token:bob", Evidence()).missing == (AUTHENTICATED,)


@pytest.mark.parametrize(
    ("requester", "identity"),
    [
        ("token:\uff21lice", "alice"),  # fullwidth A: NFKC makes it the ASCII name
        ("stdio:ALICE", "alice"),
        ("token:\u0430lice", None),  # Cyrillic а: outside the safe set, never matches
        ("jwt:al ice", None),
        ("token:", None),
    ],
)
def test_identities_are_compared_normalised_and_unsafe_ones_never_match(
    requester: str, identity: str | None
) -> None:
    assert requester_identity(requester) == identity


def test_a_confusable_requester_is_not_an_approver_by_name() -> None:
    """The Cyrillic requester matches no approver name (approver names are ASCII); only a
    link makes alice the requester."""
    two = Evidence(approvers=["alice", "carol"])
    assert assess(CRITICAL_PRODUCTION, "token:\u0430lice", two).met
    verdict = assess(CRITICAL_PRODUCTION, "token:\u0430lice", two, linked=["alice"])
    assert not verdict.met and verdict.counted == ("carol",)


def test_approvers_linked_to_the_requester_do_not_count_for_two_approvers() -> None:
    two = Evidence(approvers=["alice", "carol"])
    assert assess(CRITICAL_PRODUCTION, "token:local", two).met
    verdict = assess(CRITICAL_PRODUCTION, "token:local", two, linked=["Alice"])
    assert not verdict.met and verdict.counted == ("carol",)
    assert "alice requested the change" in verdict.describe()
    assert assess(PRODUCTION, "token:local", two, linked=["alice"]).met  # one approver: may
