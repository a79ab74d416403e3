"""The HTTP transport's credentials: the token file, the verifiers and the requester identity
(the HTTP behaviour itself is tested over real HTTP in tests/integration/test_http_access.py)."""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastmcp import Client, Context, FastMCP
from fastmcp.server.auth import AccessToken
from fastmcp.server.auth.providers.jwt import RSAKeyPair
from mcp_types import Implementation

from sizeguard.ledger import REDACTED, find_secrets, scrub_details
from sizeguard.server import auth
from sizeguard.server.auth import (
    IDENTITY_CLAIM,
    LocalTokenVerifier,
    SubjectJWTVerifier,
    identity_of,
    requester,
)
from sizeguard.server.token_file import (
    TOKEN_RE,
    TokenFileError,
    load_or_create_token,
    read_token,
    token_name,
)

# --- the token file ---------------------------------------------------------------------------


def test_the_first_start_creates_a_0600_token_file_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "state" / "mcp-token"
    old = os.umask(0)  # a permissive umask must not make the file readable by others
    try:
        token = load_or_create_token(path, "alice")
    finally:
        os.umask(old)
    assert token.created and token.name == "alice" and token.identity == "token:alice"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert text == token.secret + "\n"
    assert TOKEN_RE.fullmatch(token.secret)
    assert token.secret.startswith("sgmcp.alice.") and len(token.secret.split(".")[2]) == 43
    assert token.secret not in repr(token)
    assert [p.name for p in path.parent.iterdir()] == ["mcp-token"]  # no temporary file left


def test_a_later_start_reads_the_same_token_and_never_overwrites_it(tmp_path: Path) -> None:
    path = tmp_path / "mcp-token"
    first = load_or_create_token(path, "alice")
    again = load_or_create_token(path)  # no name given: the file's
    assert not again.created and again.secret == first.secret and again.name == "alice"
    with pytest.raises(TokenFileError, match="holds token token:alice, not token:bob"):
        load_or_create_token(path, "bob")
    assert path.read_text() == first.secret + "\n"


def test_two_servers_starting_at_once_end_with_one_token(tmp_path: Path) -> None:
    path = tmp_path / "mcp-token"
    barrier = threading.Barrier(8)
    secrets: list[str] = []

    def start() -> None:
        barrier.wait()
        secrets.append(load_or_create_token(path, "alice").secret)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(secrets) == 8 and len(set(secrets)) == 1
    assert path.read_text().strip() == secrets[0]


def test_a_name_from_free_text_is_made_safe() -> None:
    assert token_name("Jane.Doe@EXAMPLE") == "jane-doe-example"
    assert token_name("") == "local" and token_name("___") == "local"
    assert token_name(None) == "local"


def test_a_default_token_is_named_after_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sizeguard.server.token_file.getpass.getuser", lambda: "Ops User")
    assert load_or_create_token(tmp_path / "t").name == "ops-user"


@pytest.mark.parametrize("name", ["Alice", "-x", "a b", "a" * 64, "ä", ""])
def test_a_bad_token_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(TokenFileError, match="token name"):
        load_or_create_token(tmp_path / "t", name)
    assert not (tmp_path / "t").exists()


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mcp-token"
    load_or_create_token(path, "alice")
    for mode in (0o644, 0o640, 0o604, 0o660, 0o606):
        path.chmod(mode)
        with pytest.raises(TokenFileError, match=f"mode {mode:04o}.*chmod 600"):
            load_or_create_token(path)
    path.chmod(0o400)  # read-only for its owner is fine
    assert read_token(path).name == "alice"


def test_a_symlink_a_directory_and_another_users_file_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    load_or_create_token(real, "alice")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(TokenFileError, match="symlink"):
        load_or_create_token(link)
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(TokenFileError, match="not a regular file"):
        read_token(directory)
    if os.geteuid() == 0:
        os.chown(real, 4242, -1)
        with pytest.raises(TokenFileError, match="belongs to uid 4242"):
            read_token(real)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b"hunter2\n",
        b"sgmcp.alice.tooshort\n",
        b"sgmcp.Alice." + b"A" * 43 + b"\n",
        b"sgmcp.alice." + b"A" * 43 + b"\nsgmcp.bob." + b"B" * 43 + b"\n",
        b"\xff\xfe" + b"A" * 50,
        b"x" * 5000,
    ],
)
def test_a_file_that_holds_no_token_is_refused_and_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "mcp-token"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(TokenFileError):
        load_or_create_token(path)
    assert path.read_bytes() == content  # never overwritten


def test_the_token_is_redacted_from_audit_details(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path / "t", "alice")
    details = {"arguments": {"reason": f"my key is {token.secret}"}}
    assert scrub_details(details) == {"arguments": {"reason": REDACTED}}
    assert find_secrets(details) == [
        "details.arguments.reason (value looks like a sizeguard bearer token)"
    ]


# --- the verifiers ----------------------------------------------------------------------------


def test_the_local_verifier_accepts_exactly_its_token(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path / "t", "alice")
    verifier = LocalTokenVerifier(token)

    def verify(text: str) -> AccessToken | None:
        return asyncio.run(verifier.verify_token(text))

    good = verify(token.secret)
    assert good is not None and identity_of(good) == "token:alice"
    assert good.client_id == "token:alice"
    assert token.secret not in str(good.claims)
    for wrong in (
        "",
        token.secret[:-1],
        token.secret + "x",
        token.secret.replace("alice", "bob"),
        "sgmcp.alice." + "A" * 43,
        "ünïcode",
    ):
        assert verify(wrong) is None, wrong


def _jwt_verifier(keys: RSAKeyPair, subjects: list[str]) -> SubjectJWTVerifier:
    return SubjectJWTVerifier(
        allowed_subjects=subjects,
        public_key=keys.public_key,
        issuer="https://issuer.example",
        audience="sizeguard",
    )


def test_a_jwt_identity_is_its_subject_when_the_subject_is_allowed() -> None:
    keys = RSAKeyPair.generate()
    verifier = _jwt_verifier(keys, ["system:serviceaccount:ai:*"])

    def token(subject: str, **kwargs: Any) -> str:
        return keys.create_token(
            subject=subject,
            issuer=kwargs.pop("issuer", "https://issuer.example"),
            audience=kwargs.pop("audience", "sizeguard"),
            **kwargs,
        )

    def verify(text: str) -> AccessToken | None:
        return asyncio.run(verifier.verify_token(text))

    good = verify(token("system:serviceaccount:ai:assistant"))
    assert good is not None
    assert identity_of(good) == "jwt:system:serviceaccount:ai:assistant"
    # a claim of that name in the token itself does not choose the identity
    forged = verify(
        token(
            "system:serviceaccount:ai:assistant",
            additional_claims={IDENTITY_CLAIM: "token:admin"},
        )
    )
    assert forged is not None and identity_of(forged) == "jwt:system:serviceaccount:ai:assistant"
    assert verify(token("system:serviceaccount:other:assistant")) is None  # not allowed
    assert verify(token("system:serviceaccount:ai:assistant", audience="kubernetes")) is None
    assert verify(token("system:serviceaccount:ai:assistant", issuer="https://evil")) is None
    assert verify(token("system:serviceaccount:ai:a b")) is None  # not a usable subject
    signed_elsewhere = RSAKeyPair.generate().create_token(
        subject="system:serviceaccount:ai:x", issuer="https://issuer.example", audience="sizeguard"
    )
    assert verify(signed_elsewhere) is None


def test_a_jwt_verifier_needs_allowed_subjects() -> None:
    with pytest.raises(ValueError, match="subjects"):
        _jwt_verifier(RSAKeyPair.generate(), [])


# --- the requester ----------------------------------------------------------------------------


def test_identity_of_reads_only_what_sizeguard_verifiers_set() -> None:
    def access(claims: dict[str, Any]) -> AccessToken:
        return AccessToken(token="t", client_id="someone", scopes=[], claims=claims)

    assert identity_of(None) is None
    assert identity_of(access({})) is None  # another verifier's token: no identity
    assert identity_of(access({IDENTITY_CLAIM: "token:alice"})) == "token:alice"
    assert identity_of(access({IDENTITY_CLAIM: "token:al\nice\x00"})) == "token:alice"
    assert identity_of(access({IDENTITY_CLAIM: 42})) is None


def test_the_requester_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "get_access_token", lambda: None)
    monkeypatch.setattr(auth.os, "geteuid", lambda: 4242)
    monkeypatch.setattr(
        auth.pwd, "getpwuid", lambda uid: SimpleNamespace(pw_name="alice" if uid == 4242 else "?")
    )
    assert requester(SimpleNamespace(transport="stdio")) == "stdio:alice"  # type: ignore[arg-type]
    for transport in ("streamable-http", None):
        ctx = SimpleNamespace(transport=transport)
        assert requester(ctx) == "unauthenticated"  # type: ignore[arg-type]
    monkeypatch.setattr(
        auth,
        "get_access_token",
        lambda: AccessToken(token="t", client_id="x", scopes=[], claims={IDENTITY_CLAIM: "jwt:s"}),
    )
    assert requester(SimpleNamespace(transport="stdio")) == "jwt:s"  # type: ignore[arg-type]


def test_an_in_process_tool_call_is_unauthenticated_whatever_the_client_says() -> None:
    mcp = FastMCP("t")

    @mcp.tool
    async def who(ctx: Context) -> str:
        return requester(ctx)

    async def go() -> str:
        async with Client(mcp, client_info=Implementation(name="token:admin", version="1")) as c:
            result = await c.call_tool("who", {})
            return str(result.data)

    assert asyncio.run(go()) == "unauthenticated"


def test_the_stdio_requester_is_the_effective_user_not_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """$LOGNAME and $USER come from the MCP client's configuration: not who the server runs as."""
    monkeypatch.setattr(auth, "get_access_token", lambda: None)
    monkeypatch.setenv("LOGNAME", "not-me")
    monkeypatch.setenv("USER", "not-me")
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert requester(SimpleNamespace(transport="stdio")) == f"stdio:{me}"  # type: ignore[arg-type]
