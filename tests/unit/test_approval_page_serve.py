"""`sizeguard serve`'s approval-page flags and the page's own server thread."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from sizeguard.errors import CommandError
from sizeguard.ledger import Ledger
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


def test_port_0_serves_on_a_free_port_and_tells_the_service_its_url(service: Service) -> None:
    options = page_options(flags("--approval-port", "0"))
    assert options is not None and options.approval is None
    server = serve_page(options, service)
    assert server is not None
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


def test_a_taken_port_is_a_warning_not_the_end_of_the_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        options = page_options(flags("--approval-port", str(port)))
        assert options is not None

        def build(approval: ApprovalOrigin, bound: int) -> Any:
            raise AssertionError("no app is built without a socket")

        server, approval = start_page(options, build)
    assert server is None
    assert approval.url == f"http://localhost:{port}"
    assert "cannot listen" in capsys.readouterr().err


def test_the_approval_url_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIZEGUARD_APPROVAL_URL", "https://approvals.example.com")
    options = page_options(flags())
    assert options is not None and options.approval is not None
    assert options.approval.origin == "https://approvals.example.com"
    explicit = page_options(flags("--approval-url", "http://localhost:9999"))
    assert explicit is not None and explicit.approval is not None
    assert explicit.approval.url == "http://localhost:9999"
