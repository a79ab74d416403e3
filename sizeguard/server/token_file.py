"""The MCP server's bearer token, in a file of its data directory.

``sizeguard serve --transport http`` creates it on its first start (:func:`load_or_create_token`:
``O_EXCL``, mode 0600, next to the ledger unless ``--token-file`` says otherwise) and never
overwrites it; to replace a token, delete the file and start again. The file holds one line,
``sgmcp.<name>.<secret>``: 256 random bits, and the name its holders are recorded by
(``token:<name>``), so that ``$(cat FILE)`` is the whole header value and the name cannot be
changed without changing the token. Reading refuses a symlink, anything but a regular file,
a file of another user, one that group or others may read or write, and anything but one
token. The secret is never printed or logged: the instructions ``serve`` prints read it from
the file.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "DEFAULT_TOKEN_NAME",
    "NAME_RE",
    "TOKEN_FILE_NAME",
    "TOKEN_RE",
    "LocalToken",
    "TokenFileError",
    "default_token_name",
    "load_or_create_token",
    "read_token",
    "token_name",
]

TOKEN_FILE_NAME: Final = "mcp-token"  # noqa: S105 (a file name)
DEFAULT_TOKEN_NAME: Final = "local"  # noqa: S105 (a name)
TOKEN_PREFIX: Final = "sgmcp"  # noqa: S105 (a prefix)
_NAME: Final = r"[a-z0-9](?:[a-z0-9-]{0,62})"
NAME_RE: Final = re.compile(_NAME)
TOKEN_RE: Final = re.compile(rf"{TOKEN_PREFIX}\.({_NAME})\.[A-Za-z0-9_-]{{43}}")
"""``sgmcp.<name>.<43 base64url characters: 256 random bits>``."""
_MAX_FILE: Final = 1024


class TokenFileError(Exception):
    """The token file cannot be created or used (the message says why and what to do)."""


@dataclass(frozen=True)
class LocalToken:
    """The server's bearer token and its name. ``repr`` never shows the secret."""

    name: str
    path: Path
    created: bool
    secret: str = field(repr=False)

    @property
    def identity(self) -> str:
        return f"token:{self.name}"


def token_name(text: str | None) -> str:
    """A token name from free text (a user name): lower case letters, digits and '-'."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", (text or "").lower()).strip("-")[:63].strip("-")
    return cleaned if cleaned and NAME_RE.fullmatch(cleaned) else DEFAULT_TOKEN_NAME


def default_token_name() -> str:
    try:
        return token_name(getpass.getuser())
    except (OSError, KeyError):
        return DEFAULT_TOKEN_NAME


def _new_secret(name: str) -> str:
    return f"{TOKEN_PREFIX}.{name}.{secrets.token_urlsafe(32)}"


def read_token(path: Path) -> LocalToken:
    """Load an existing token file. Refuses a symlink, anything but a regular file, a file
    another user owns, one that group or others may read or write, and content that is not
    exactly one sizeguard token."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise TokenFileError(f"token file {path} does not exist") from None
    except OSError as exc:
        if path.is_symlink():
            raise TokenFileError(f"token file {path} is a symlink; refusing it") from None
        raise TokenFileError(f"cannot open token file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"token file {path} is not a regular file")
        if info.st_uid != os.geteuid():
            raise TokenFileError(
                f"token file {path} belongs to uid {info.st_uid}, not to this user "
                f"({os.geteuid()}); refusing it"
            )
        if info.st_mode & 0o077:
            raise TokenFileError(
                f"token file {path} has mode {info.st_mode & 0o777:04o}; others may read it. "
                f"Make it 0600 (chmod 600 {path}), or delete it to create a new token"
            )
        data = os.read(fd, _MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_FILE:
        raise TokenFileError(f"token file {path} is too large to be a sizeguard token")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        text = ""
    match = TOKEN_RE.fullmatch(text)
    if match is None:
        raise TokenFileError(
            f"token file {path} does not hold a sizeguard token (sgmcp.<name>.<secret>); "
            "delete it to create a new one"
        )
    return LocalToken(name=match.group(1), path=path, created=False, secret=text)


def _existing(path: Path, name: str | None) -> LocalToken:
    token = read_token(path)
    if name is not None and token.name != name:
        raise TokenFileError(
            f"token file {path} holds token {token.identity}, not token:{name}; pass "
            "another --token-file, or delete this one to create a new token"
        )
    return token


def _write_private(path: Path, data: bytes) -> None:
    """A new file (``O_EXCL``, no symlink followed) of mode 0600 whatever the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def load_or_create_token(path: Path, name: str | None = None) -> LocalToken:
    """The token in ``path``; created (mode 0600) if there is none. An existing file is never
    overwritten, and a ``name`` that differs from its own is refused. The new token is
    written to a private temporary file first and then linked to ``path``, which fails if
    ``path`` exists: a server starting at the same moment reads a whole token or none."""
    if name is not None and NAME_RE.fullmatch(name) is None:
        raise TokenFileError(
            f"token name {name!r} must be 1-63 lower-case letters, digits or '-', "
            "starting with a letter or digit"
        )
    if path.exists() or path.is_symlink():
        return _existing(path, name)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise TokenFileError(f"cannot create {path.parent}: {exc.strerror}") from None
    wanted = name or default_token_name()
    secret = _new_secret(wanted)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        _write_private(temporary, (secret + "\n").encode("ascii"))
        try:
            os.link(temporary, path)  # atomic, and never replaces an existing file
        except FileExistsError:
            return _existing(path, name)
    except OSError as exc:
        raise TokenFileError(f"cannot create token file {path}: {exc.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return LocalToken(name=wanted, path=path, created=True, secret=secret)
