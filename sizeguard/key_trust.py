"""Which approval keys the cluster's webhook trusts, told in its dry-run answers.

The MCP server signs approvals with its private key; the webhook verifies them with the
public keys of its JWKS. Nothing else tells the server whether the two match, and a mismatch
shows only when an apply is refused — after a human has approved. So the webhook names the
keys it trusts in every dry-run answer it decides, as one admission warning::

    sizeguard: trusted approval keys: <kid>, <kid>

(``none`` when it has none loaded), and the server, which dry-runs every change set before
anyone is asked, reads it back: :func:`trusted_key_sets` takes these warnings out of the
ones shown to people, and :func:`verdict` says whether the server's kid is among them.

A kid is the RFC 7638 thumbprint of a public key: public, so naming it discloses nothing.
The answer of every webhook that decided the dry run must name the kid (two sizeguard
configurations answer with one warning each; identical ones arrive once). A warning the API
server truncated, or one this module cannot read, counts as no answer, never as a "no".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "PREFIX",
    "KeyTrust",
    "trusted_key_sets",
    "trusted_keys_warning",
    "verdict",
]

PREFIX: Final = "sizeguard: trusted approval keys: "
_KID: Final = r"[A-Za-z0-9_-]{43}"
_LINE_RE: Final = re.compile(rf"(none|{_KID}(?:, {_KID})*)")


def trusted_keys_warning(kids: Iterable[str]) -> str:
    """The warning a webhook adds to a dry-run answer: the kids it trusts (sorted)."""
    names = sorted(kids)
    return PREFIX + (", ".join(names) if names else "none")


def trusted_key_sets(warnings: Iterable[str]) -> tuple[list[frozenset[str]], list[str]]:
    """(the key sets named by trust warnings, every other warning in order). A trust warning
    that cannot be read (truncated, malformed) is dropped: it is no answer."""
    sets: list[frozenset[str]] = []
    others: list[str] = []
    for warning in warnings:
        if not warning.startswith(PREFIX):
            others.append(warning)
            continue
        rest = warning[len(PREFIX) :].strip()
        if _LINE_RE.fullmatch(rest) is None:
            continue
        sets.append(frozenset() if rest == "none" else frozenset(rest.split(", ")))
    return sets, others


@dataclass(frozen=True)
class KeyTrust:
    """Whether the webhook trusts the server's signing key: ``trusted`` is None when no
    answer said (no dry run reached the webhook, or the server signs nothing)."""

    trusted: bool | None
    kid: str | None
    webhook_kids: tuple[str, ...] = ()
    unknown_because: str = ""

    def describe(self) -> str:
        if self.kid is None:
            return "not checked: this server has no signing key (read-only)"
        if self.trusted is None and self.unknown_because:
            return f"unknown: {self.unknown_because}"
        if self.trusted is None:
            return (
                f"unknown: no dry run reached the sizeguard webhook to say whether it trusts "
                f"kid {self.kid}"
            )
        if self.trusted:
            return f"yes: the sizeguard webhook trusts kid {self.kid}"
        return "NO: " + self.problem()

    def problem(self) -> str:
        """What is wrong when the webhook does not trust the key, and what to do."""
        trusted = ", ".join(self.webhook_kids) or "no key at all"
        return (
            f"the sizeguard webhook does not trust this server's signing key (kid "
            f"{self.kid}; it trusts {trusted}), so it would refuse every change this server "
            "applies, after the human approved it. Start the server with the key directory "
            "whose jwks.json the webhook loads (--key-dir / SIZEGUARD_KEY_DIR), or add this "
            "key's public JWK to the webhook's JWKS (`sizeguard keys jwks`)"
        )


def verdict(kid: str | None, sets: Sequence[frozenset[str]]) -> KeyTrust:
    """Trusted iff every answer names ``kid``; unknown without answers or without a kid."""
    if kid is None or not sets:
        return KeyTrust(None, kid)
    named = tuple(sorted(frozenset().union(*sets)))
    return KeyTrust(all(kid in s for s in sets), kid, named)
