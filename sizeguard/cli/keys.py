"""`sizeguard keys`: create, rotate and publish the Ed25519 keys that sign approvals."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sizeguard.approvals import KeyStoreError, init_key_dir, read_jwks, rotate_key_dir
from sizeguard.errors import CommandError


def register(subparsers: Any) -> None:
    """Add the ``keys`` command group to the top-level sub-parsers."""
    keys = subparsers.add_parser(
        "keys",
        help="manage the Ed25519 keys that sign approvals",
        description=(
            "Manage the key directory: DIR/signing/<kid>.pem (private, 0600), DIR/active "
            "(the signing kid) and DIR/jwks.json (public keys for the webhook)."
        ),
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    init = actions.add_parser("init", help="create the first signing key (never overwrites)")
    _add_dir(init)
    init.set_defaults(func=_init)

    rotate = actions.add_parser(
        "rotate", help="add a new signing key and make it active; the JWKS keeps old keys"
    )
    _add_dir(rotate)
    rotate.set_defaults(func=_rotate)

    jwks = actions.add_parser("jwks", help="print the public JWKS (JSON) for the webhook")
    _add_dir(jwks)
    jwks.set_defaults(func=_jwks)


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, type=Path, metavar="DIR", help="the key directory")


def _init(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    try:
        key = init_key_dir(directory)
    except KeyStoreError as exc:
        raise CommandError(str(exc)) from None
    print(f"created signing key {key.kid} (active)")
    print(f"private key: {directory / 'signing' / (key.kid + '.pem')} (mode 0600)")
    print(f"public keys: {directory / 'jwks.json'}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    try:
        key = rotate_key_dir(directory)
        trusted = read_jwks(directory)
    except KeyStoreError as exc:
        raise CommandError(str(exc)) from None
    print(f"created signing key {key.kid} (active)")
    print(f"public keys: {directory / 'jwks.json'} ({len(trusted.kids)} keys)")
    print(
        "publish the JWKS to every webhook now: until they reload it, approvals signed with "
        "the new key are rejected (unknown_key)"
    )
    return 0


def _jwks(args: argparse.Namespace) -> int:
    try:
        trusted = read_jwks(args.dir)
    except KeyStoreError as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(trusted.to_jwks(), indent=2))
    return 0
