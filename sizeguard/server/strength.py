"""How strongly a person must prove they approved, and whether what was recorded is enough.

The changeset policy names the requirements in ``requires`` (``policies/sizeguard/changeset/
approval.rego``); the levels, weakest first:

- ``confirmation``: the MCP client's elicitation answer (or ``sizeguard approve``);
- ``typed_confirmation``: the same, with the namespace names typed;
- ``authenticated_approver``: an enrolled approver's passkey on the approval page;
- ``two_approvers``: two different enrolled approvers, neither of them the requester.

A stronger proof meets the weaker requirements (a passkey approval after reading the summary
on the page is more than a typed namespace). An unknown level cannot be met (fail closed).

The requester rule: for ``two_approvers``, an approver who is the requester does not count;
the same person twice counts once. An approver is the requester when their name equals the
requester identity's name part — after the first colon of ``token:NAME``, ``jwt:SUBJECT`` or
``stdio:USER`` — or when the identity is linked to them (``sizeguard approvers link``; the
caller looks the links up and passes them as ``linked``). Names are compared after Unicode
NFKC normalisation and case folding; a name part with anything outside a safe ASCII set
(a-z 0-9 ``. _ @ + - : /``) matches no approver (approver names are ASCII only), so a
look-alike such as a Cyrillic ``а`` cannot pass for an approver's name — and cannot be
excluded by name either: only a link excludes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from sizeguard.texts import fold

__all__ = [
    "AUTHENTICATED",
    "CONFIRMATION",
    "LEVELS",
    "TWO_APPROVERS",
    "TYPED",
    "Evidence",
    "Strength",
    "assess",
    "identity_key",
    "needs_page",
    "requester_identity",
    "strongest",
]

CONFIRMATION: Final = "confirmation"
TYPED: Final = "typed_confirmation"
AUTHENTICATED: Final = "authenticated_approver"
TWO_APPROVERS: Final = "two_approvers"
LEVELS: Final = (CONFIRMATION, TYPED, AUTHENTICATED, TWO_APPROVERS)
_RANK: Final = {level: rank for rank, level in enumerate(LEVELS)}


_SAFE: Final = re.compile(r"^[a-z0-9._@+:/-]{1,256}$")


def identity_key(text: str) -> str | None:
    """``text`` as identities are compared: NFKC-normalised, case-folded, stripped; None when
    anything is left outside the safe ASCII set (such a name matches nothing)."""
    key = fold(text)
    return key if _SAFE.match(key) else None


def requester_identity(requester: str) -> str | None:
    """The name part an approver's name is compared with: ``token:Alice`` -> ``alice``; an
    identity without a colon as it is; None when it is not safe ASCII (it matches no
    approver name)."""
    _, colon, rest = requester.partition(":")
    return identity_key(rest if colon else requester)


def strongest(requires: Iterable[str]) -> str:
    """The strongest level named (``confirmation`` when none); an unknown level is stronger
    than every known one (it can never be met)."""
    best = CONFIRMATION
    for level in requires:
        if level not in _RANK:
            return level
        if _RANK[level] > _RANK.get(best, -1):
            best = level
    return best


def needs_page(requires: Iterable[str]) -> bool:
    """True when no answer in the MCP client or a terminal can satisfy ``requires``."""
    level = strongest(requires)
    return level not in _RANK or _RANK[level] >= _RANK[AUTHENTICATED]


@dataclass(frozen=True)
class Evidence:
    """What was recorded for a change set: a confirmation answer (``confirmed``), whether the
    namespaces were typed as required (``typed``), and the approvers (names, as enrolled) whose
    passkey approvals on the page are recorded, in order."""

    confirmed: bool = False
    typed: bool = False
    approvers: Sequence[str] = ()


@dataclass(frozen=True)
class Strength:
    """The verdict: ``met`` when every required level is met; ``missing`` names the levels
    still to meet (without the weaker ones a page approval meets anyway), ``counted`` the
    approvers that count, ``not_counted`` the others and why."""

    required: tuple[str, ...]
    met: bool
    missing: tuple[str, ...]
    counted: tuple[str, ...]
    not_counted: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """One sentence for people (and the assistant)."""
        if self.met:
            who = f" by {', '.join(self.counted)}" if self.counted else ""
            return f"approved{who}: {', '.join(self.required)} met"
        text = "still needed: " + ", ".join(_words(level) for level in self.missing)
        if self.not_counted:
            text += " (" + "; ".join(self.not_counted) + ")"
        return text


def _words(level: str) -> str:
    return {
        CONFIRMATION: "a person's confirmation",
        TYPED: "the namespace typed by a person",
        AUTHENTICATED: "an enrolled approver's passkey approval on the approval page",
        TWO_APPROVERS: "passkey approvals from two different enrolled approvers, neither of "
        "them the requester",
    }.get(level, f"{level!r}, a requirement this sizeguard does not know (it cannot be met)")


def assess(
    requires: Iterable[str],
    requester: str | Iterable[str],
    evidence: Evidence,
    *,
    linked: Iterable[str] = (),
) -> Strength:
    """Whether ``evidence`` meets ``requires`` for a change set requested by ``requester``
    (one identity, or several: e.g. who requested it and who applies it). ``linked``: the
    approvers linked to those identities (:meth:`sizeguard.approvers.Approvers.linked_approvers`);
    they are requesters too."""
    required = tuple(sorted(set(requires), key=lambda level: (_RANK.get(level, 99), level)))
    identities = [requester] if isinstance(requester, str) else list(requester)
    requesters = {requester_identity(r) for r in identities} | {identity_key(n) for n in linked}
    requesters.discard(None)
    distinct: list[str] = []
    for approver in evidence.approvers:
        name = identity_key(approver) or approver
        if name not in distinct:
            distinct.append(name)
    counted = tuple(name for name in distinct if name not in requesters)
    not_counted = tuple(
        f"{name} requested the change and cannot be one of the two approvers"
        for name in distinct
        if name in requesters
    )
    if len(evidence.approvers) > len(distinct):
        not_counted += ("the same person approving twice counts once",)
    met_levels = {
        CONFIRMATION: evidence.confirmed or bool(distinct),
        TYPED: evidence.typed or bool(distinct),
        AUTHENTICATED: bool(distinct),
        TWO_APPROVERS: len(counted) >= 2,
    }
    missing = tuple(level for level in required if not met_levels.get(level, False))
    if any(level in missing for level in (AUTHENTICATED, TWO_APPROVERS)):
        # an approval on the page meets the weaker levels too: name only what must happen
        missing = tuple(level for level in missing if level not in (CONFIRMATION, TYPED))
    if not required and not met_levels[CONFIRMATION]:
        missing = (CONFIRMATION,)
    two = TWO_APPROVERS in required
    return Strength(
        required=required or (CONFIRMATION,),
        met=not missing,
        missing=missing,
        counted=counted if two else tuple(distinct),
        not_counted=not_counted if two else (),
    )
