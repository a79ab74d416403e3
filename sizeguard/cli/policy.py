"""`sizeguard policy`: ask OPA for a sizeguard decision from the command line.

``sizeguard policy eval --input FILE --decision changeset|admission [--opa-url URL]`` reads
a policy input (JSON; ``-`` for stdin), asks OPA through :mod:`sizeguard.policy` and prints
the decision as JSON. It fails closed like every other caller: when OPA gives no usable
answer the printed decision is the deny and the command exits 4.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sizeguard.errors import CommandError
from sizeguard.policy import DEFAULT_OPA_URL, PolicyClient, default_opa_url

EXIT_DENIED = 3
"""Exit status when the policy denies the change (1: bad input, 2: usage error)."""

EXIT_UNAVAILABLE = 4
"""Exit status when OPA gave no usable answer (the printed decision is the fail-closed deny)."""


def register(subparsers: Any) -> None:
    """Add the ``policy`` command group to the top-level sub-parsers."""
    policy = subparsers.add_parser(
        "policy",
        help="evaluate sizeguard's Rego policies through OPA",
        description="Ask OPA (the only evaluator of policies/) for a sizeguard decision.",
    )
    actions = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    evaluate = actions.add_parser(
        "eval",
        help="print the changeset or admission decision for an input file",
        description=(
            "POST the input to OPA's data.sizeguard.<decision>.decision and print the decision "
            f"as JSON. Exit 0 when allowed, {EXIT_DENIED} when denied, {EXIT_UNAVAILABLE} when OPA "
            "gave no usable answer (the printed decision is then the fail-closed deny), 1 when "
            "the input cannot be read, 2 on a usage error."
        ),
    )
    evaluate.add_argument(
        "--input",
        required=True,
        metavar="FILE",
        help="policy input as JSON (see docs/policies.md); '-' reads stdin",
    )
    evaluate.add_argument(
        "--decision",
        required=True,
        choices=("changeset", "admission"),
        help="which decision to ask for",
    )
    evaluate.add_argument(
        "--opa-url",
        default=None,
        metavar="URL",
        help=f"OPA's base URL (default: $OPA_URL, else {DEFAULT_OPA_URL})",
    )
    evaluate.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long to wait for OPA (default: 2)",
    )
    evaluate.set_defaults(func=_eval)


def _read_input(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read the policy input {source}: {exc.strerror}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"the policy input {source} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CommandError(f"the policy input {source} must be a JSON object")
    return document


def _eval(args: argparse.Namespace) -> int:
    document = _read_input(args.input)
    if args.timeout <= 0:
        raise CommandError("--timeout must be positive")
    url = args.opa_url or default_opa_url()
    try:
        client = PolicyClient(url, timeout=args.timeout)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    with client:
        decision = (
            client.changeset_decision(document)
            if args.decision == "changeset"
            else client.admission_decision(document)
        )
    print(decision.model_dump_json(indent=2))
    if decision.engine_error is not None:
        raise CommandError(
            f"no decision from OPA ({decision.engine_error}); the decision above is the "
            "fail-closed deny",
            exit_code=EXIT_UNAVAILABLE,
        )
    return 0 if decision.allowed else EXIT_DENIED
