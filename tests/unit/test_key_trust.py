"""How the webhook's dry-run answers name the keys it trusts, and how the server reads them
(against the real webhook: tests/integration/test_http_access.py)."""

from __future__ import annotations

from sizeguard.key_trust import PREFIX, trusted_key_sets, trusted_keys_warning, verdict

A, B, C = ("A" * 43, "B" * 43, "C-_" + "c" * 40)


def test_a_warning_round_trips() -> None:
    warning = trusted_keys_warning([B, A])
    assert warning == f"{PREFIX}{A}, {B}"
    assert len(trusted_keys_warning([A, B, C, "D" * 43])) < 256  # the API server keeps it whole
    sets, others = trusted_key_sets(["sizeguard: dry run admitted", warning, "other"])
    assert sets == [frozenset({A, B})]
    assert others == ["sizeguard: dry run admitted", "other"]
    assert trusted_key_sets([trusted_keys_warning([])])[0] == [frozenset()]


def test_unreadable_trust_warnings_are_no_answer() -> None:
    for bad in (
        PREFIX + A[:30] + "...",  # truncated by the API server
        PREFIX + f"{A},{B}",
        PREFIX + "",
        PREFIX + "kid-with spaces",
        PREFIX + A + ", ",
    ):
        sets, others = trusted_key_sets([bad])
        assert sets == [] and others == [], bad


def test_every_answer_must_name_the_kid() -> None:
    assert verdict(A, [frozenset({A, B})]).trusted is True
    two_webhooks = [frozenset({A}), frozenset({B})]
    untrusted = verdict(A, two_webhooks)
    assert untrusted.trusted is False and untrusted.webhook_kids == (A, B)
    assert verdict(A, [frozenset()]).trusted is False
    assert verdict(A, []).trusted is None  # no answer: unknown, never "no"
    assert verdict(None, [frozenset({A})]).trusted is None  # read-only: nothing to check


def test_the_verdict_says_what_to_do() -> None:
    no = verdict(A, [frozenset({B})]).describe()
    assert no.startswith("NO: ") and A in no and B in no
    assert "SIZEGUARD_KEY_DIR" in no and "sizeguard keys jwks" in no
    assert verdict(A, [frozenset({A})]).describe().startswith("yes: ")
    assert verdict(A, []).describe().startswith("unknown: ")
    assert "read-only" in verdict(None, []).describe()
