"""`sizeguard serve`'s approval-page flags and the page's own server thread."""

from __future__ import annotations

import argparse
import errno
import socket
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from sizeguard import cli
from sizeguard.cli import serve as server_commands
from sizeguard.errors import CommandError
from sizeguard.ledger import Ledger
from sizeguard.server import app as server_app
from sizeguard.server.page import runner
from sizeguard.server.page.options import add_page_flags, page_options, serve_page, start_page
from sizeguard.server.page.security import ApprovalOrigin
from sizeguard.server.service import Service


def flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--read-only", action="store_true")
    add_page_flags(parser)
    return parser.parse_args(list(argv))


def test_the_flags_default_to_localhost_8765() -> None:
    options = page_options(flags())
    assert options is not None
    assert (options.host, options.port) == ("127.0.0.1", 8765)
    assert options.approval is not None and options.approval.url == "http://localhost:8765"
    assert options.approval.host == "localhost"
    custom = page_options(flags("--approval-port", "9000"))
    assert custom is not None and custom.approval is not None
    assert custom.approval.url == "http://localhost:9000"
    behind = page_options(
        flags("--approval-host", "0.0.0.0", "--approval-url", "https://ok.example.com/")  # noqa: S104
    )
    assert behind is not None and behind.approval is not None
    assert (behind.host, behind.approval.origin) == ("0.0.0.0", "https://ok.example.com")  # noqa: S104


def test_no_page_when_asked_or_read_only_and_bad_urls_refused() -> None:
    assert page_options(flags("--no-approval-page")) is None
    assert page_options(flags("--read-only")) is None
    for argv in (
        ("--approval-url", "http://approvals.example.com"),
        ("--approval-url", "http://127.0.0.1:8765"),
        ("--approval-port", "70000"),
    ):
        with pytest.raises(CommandError):
            page_options(flags(*argv))


@pytest.fixture
def service(tmp_path: Path) -> Any:
    ledger = Ledger(tmp_path / "ledger.db")
    yield Service(cluster=cast(Any, None), policy=cast(Any, None), ledger=ledger, key=None)
    ledger.close()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = _has_ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not IPV6, reason="this machine has no IPv6 loopback")


def _listening(family: socket.AddressFamily, address: str) -> socket.socket:
    """Another program's socket, listening on a free port of ``address``."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, 0))
    sock.listen()
    return sock


def _free(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def test_port_0_serves_on_a_free_port_and_tells_the_service_its_url(service: Service) -> None:
    options = page_options(flags("--approval-port", "0"))
    assert options is not None and options.approval is None
    server = serve_page(options, service)
    try:
        assert service.approval_url == f"http://localhost:{server.port}"
        page = httpx.get(f"{service.approval_url}/", timeout=10)
        assert page.status_code == 200 and "Pending change sets" in page.text
        # a loopback name on the page's port is sent to the approval URL
        moved = httpx.get(f"http://127.0.0.1:{server.port}/", timeout=10)
        assert moved.status_code == 303
        assert moved.headers["location"] == f"{service.approval_url}/"
    finally:
        server.stop()
    assert not server.thread.is_alive()


def test_a_localhost_page_is_served_on_both_loopback_addresses(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    """Browsers try ``::1`` for localhost first: the page owns it as well as 127.0.0.1, on
    one port, and answers on both (no one else can)."""
    options = page_options(flags("--approval-port", "0"))
    assert options is not None and options.localhost
    server = serve_page(options, service)
    try:
        expected = ("127.0.0.1", "::1") if IPV6 else ("127.0.0.1",)
        assert server.addresses == expected
        where = " and ".join(f"[{a}]:{server.port}" if ":" in a else f"{a}:{server.port}"
                             for a in expected)  # fmt: skip
        assert f"(listening on {where})" in capsys.readouterr().err
        for address in expected:
            assert not _free(address, server.port), address
            host = f"[{address}]" if ":" in address else address
            moved = httpx.get(f"http://{host}:{server.port}/", timeout=10)
            assert moved.status_code == 303, address  # the page's own redirect
            assert moved.headers["location"] == f"http://localhost:{server.port}/"
    finally:
        server.stop()
    for address in expected:
        assert _free(address, server.port), f"{address} still held after stop"


@pytest.mark.parametrize(
    ("host", "localhost", "expected"),
    [
        ("127.0.0.1", True, [("127.0.0.1", False), ("::1", True)]),
        ("localhost", True, [("127.0.0.1", False), ("::1", True)]),
        ("::1", True, [("::1", False), ("127.0.0.1", False)]),
        ("0.0.0.0", True, [("0.0.0.0", False), ("::1", True)]),  # noqa: S104
        ("::", True, [("::", False)]),  # dual-stack: both loopbacks are its own
        ("10.1.2.3", True, [("10.1.2.3", False), ("127.0.0.1", False), ("::1", True)]),
        ("127.0.0.1", False, [("127.0.0.1", False)]),  # https://approvals.example.com
        ("0.0.0.0", False, [("0.0.0.0", False)]),  # noqa: S104
    ],
)
def test_which_addresses_the_page_must_own(
    host: str, localhost: bool, expected: list[tuple[str, bool]]
) -> None:
    assert runner.page_addresses(host, localhost=localhost) == expected


def test_a_port_taken_on_127_0_0_1_stops_serve_before_any_url_is_handed_out(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    service: Service,
) -> None:
    """`sizeguard serve` itself: the sentence on stderr, exit 1, no MCP server, no URL."""
    monkeypatch.setattr(server_commands, "build_service", lambda *a, **k: service)

    def no_mcp_server(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the MCP server started without its approval page")

    monkeypatch.setattr(server_app, "build_app", no_mcp_server)
    saved = structlog.get_config()  # serve configures logging for the process
    try:
        with _listening(socket.AF_INET, "127.0.0.1") as taken:
            port = taken.getsockname()[1]
            capsys.readouterr()
            code = cli.main(["serve", "--key-dir", str(tmp_path), "--approval-port", str(port)])
            _, err = capsys.readouterr()
    finally:
        structlog.configure(**saved)
    assert code == 1
    sentence = next(line for line in err.splitlines() if line.startswith("sizeguard: "))
    assert sentence == (
        f"sizeguard: the approval port {port} is taken on 127.0.0.1:{port} (another program, "
        "perhaps another user's, listens there); serve does not start rather than send "
        f"approvers to http://localhost:{port}, which another program could answer: free the "
        "port, choose another with --approval-port PORT (0: a free one), or serve without the "
        "page with --no-approval-page"
    )
    assert "approval page on" not in err


@needs_ipv6
def test_a_port_taken_on_ipv6_loopback_only_stops_serve_too(service: Service) -> None:
    """The squat of the review: another user listens on [::1]:PORT, 127.0.0.1:PORT is free.
    Chromium would open the squatter's page for http://localhost:PORT: serve refuses."""
    before = service.approval_url
    for _ in range(20):
        taken = _listening(socket.AF_INET6, "::1")
        port = taken.getsockname()[1]
        if _free("127.0.0.1", port):
            break
        taken.close()
    else:
        pytest.skip("no port free on 127.0.0.1 whose ::1 side could be taken")
    with taken:
        options = page_options(flags("--approval-port", str(port)))
        assert options is not None
        with pytest.raises(CommandError) as refused:
            serve_page(options, service)
        assert f"the approval port {port} is taken on [::1]:{port}" in str(refused.value)
        assert "--approval-port" in str(refused.value)
        assert "--no-approval-page" in str(refused.value)
        assert _free("127.0.0.1", port), "the 127.0.0.1 socket was left open"
    assert service.approval_url == before  # not told of a page that is not there


def test_a_page_that_cannot_listen_builds_no_app() -> None:
    with _listening(socket.AF_INET, "127.0.0.1") as taken:
        options = page_options(flags("--approval-port", str(taken.getsockname()[1])))
        assert options is not None

        def build(approval: ApprovalOrigin, bound: int) -> Any:
            raise AssertionError("no app is built without its sockets")

        with pytest.raises(CommandError, match=r"is taken on 127\.0\.0\.1"):
            start_page(options, build)


def test_without_an_ipv6_loopback_the_page_listens_on_127_0_0_1_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = runner._bind

    def no_ipv6(host: str, port: int) -> socket.socket:
        if host == "::1":
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        return real(host, port)

    monkeypatch.setattr(runner, "_bind", no_ipv6)
    with capture_logs() as logs:
        socks = runner.listen_page("127.0.0.1", 0, localhost=True)
    try:
        assert [s.getsockname()[0] for s in socks] == ["127.0.0.1"]
    finally:
        for sock in socks:
            sock.close()
    assert [e["event"] for e in logs] == ["page.no_ipv6_loopback"]


def test_other_failures_on_ipv6_loopback_are_not_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    real = runner._bind

    def refused(host: str, port: int) -> socket.socket:
        if host == "::1":
            raise OSError(errno.EACCES, "Permission denied")
        return real(host, port)

    monkeypatch.setattr(runner, "_bind", refused)
    with pytest.raises(runner.PageStartError, match=r"cannot listen on \[::1\]:\d+"):
        runner.listen_page("127.0.0.1", 0, localhost=True)


@needs_ipv6
def test_port_0_picks_a_port_free_on_both_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    real = runner._bind
    tries: list[tuple[str, int]] = []

    def first_taken_on_ipv6(host: str, port: int) -> socket.socket:
        tries.append((host, port))
        if host == "::1" and len(tries) == 2:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return real(host, port)

    monkeypatch.setattr(runner, "_bind", first_taken_on_ipv6)
    socks = runner.listen_page("127.0.0.1", 0, localhost=True)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(socks) == 2 and len(ports) == 1
        assert [host for host, _ in tries] == ["127.0.0.1", "::1", "127.0.0.1", "::1"]
    finally:
        for sock in socks:
            sock.close()


def test_the_approval_url_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIZEGUARD_APPROVAL_URL", "https://approvals.example.com")
    options = page_options(flags())
    assert options is not None and options.approval is not None
    assert options.approval.origin == "https://approvals.example.com"
    explicit = page_options(flags("--approval-url", "http://localhost:9999"))
    assert explicit is not None and explicit.approval is not None
    assert explicit.approval.url == "http://localhost:9999"
