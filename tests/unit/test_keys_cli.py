"""`sizeguard keys init|rotate|jwks` through the real command line entry point."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from sizeguard import cli
from sizeguard.approvals import TrustedKeys, load_signing_key

REGISTERED = cli.COMMAND_MODULES  # as cli.py declares it, before any test patches it


@pytest.fixture(autouse=True)
def only_keys_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other command groups are developed in parallel; these tests exercise ours alone.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("sizeguard.cli.keys",))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_is_a_registered_command_group() -> None:
    assert "sizeguard.cli.keys" in REGISTERED


def test_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "keys"
    code, out, err = run(capsys, "keys", "init", "--dir", str(directory))
    assert code == 0, err
    kid = load_signing_key(directory).kid
    assert f"created signing key {kid} (active)" in out
    pem = directory / "signing" / f"{kid}.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert str(pem) in out


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "keys", "init", "--dir", str(tmp_path))[0] == 0
    kid = load_signing_key(tmp_path).kid
    jwks_before = (tmp_path / "jwks.json").read_bytes()
    code, out, err = run(capsys, "keys", "init", "--dir", str(tmp_path))
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("sizeguard: ")
    assert "refusing to overwrite" in err
    assert load_signing_key(tmp_path).kid == kid
    assert (tmp_path / "jwks.json").read_bytes() == jwks_before


def test_jwks_prints_public_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "keys", "init", "--dir", str(tmp_path))
    code, out, _ = run(capsys, "keys", "jwks", "--dir", str(tmp_path))
    assert code == 0
    document = json.loads(out)
    assert TrustedKeys.from_jwks(document).kids == (load_signing_key(tmp_path).kid,)
    assert document["keys"][0]["kty"] == "OKP"
    assert "d" not in document["keys"][0]
    assert "PRIVATE" not in out


def test_rotate_keeps_old_public_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "keys", "init", "--dir", str(tmp_path))
    first = load_signing_key(tmp_path).kid
    code, out, err = run(capsys, "keys", "rotate", "--dir", str(tmp_path))
    assert code == 0, err
    second = load_signing_key(tmp_path).kid
    assert second != first
    assert f"created signing key {second} (active)" in out
    assert "(2 keys)" in out
    code, out, _ = run(capsys, "keys", "jwks", "--dir", str(tmp_path))
    assert [key["kid"] for key in json.loads(out)["keys"]] == [second, first]


def test_rotate_and_jwks_without_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("rotate", "jwks"):
        code, out, err = run(capsys, "keys", action, "--dir", str(tmp_path / "nothing"))
        assert code == 1
        assert out == ""
        assert err.startswith("sizeguard: ")
        assert err.count("\n") == 1


@pytest.mark.parametrize("argv", [["keys"], ["keys", "init"], ["keys", "bogus", "--dir", "x"]])
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
