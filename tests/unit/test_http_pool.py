"""sizeguard.http_pool against a scripted loopback server (real sockets, no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from sizeguard.http_pool import HttpPool, HttpProtocolError

Script = Callable[[int, bytes], bytes | None]
"""(request number, request body) -> the raw answer to write; None closes the connection."""


@dataclass
class Server:
    script: Script
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                answer = self.script(len(self.requests), body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"result": 1}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@contextlib.asynccontextmanager
async def serving(script: Script) -> AsyncIterator[Server]:
    server = Server(script)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/base/"
    try:
        yield server
    finally:
        listener.close()


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_one_kept_alive_connection_serves_sequential_posts() -> None:
    async def main() -> None:
        async with serving(lambda n, body: ok(b'{"n": %d}' % n)) as server:
            pool = HttpPool(server.url, headers={"Authorization": "Bearer t"})
            answers = [await pool.post("/v1/data/x", b'{"input": 1}') for _ in range(5)]
            await pool.aclose()
        assert [a.body for a in answers] == [b'{"n": %d}' % n for n in range(1, 6)]
        assert {a.status for a in answers} == {200}
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /base/v1/data/x HTTP/1.1\r\n")
        assert b"\r\nHost: 127.0.0.1:" in first and b"\r\nAuthorization: Bearer t\r\n" in first
        assert first.endswith(b'\r\nContent-Length: 12\r\n\r\n{"input": 1}')

    run(main())


def test_concurrent_posts_use_at_most_size_connections() -> None:
    async def main() -> None:
        async with serving(lambda n, body: ok()) as server:
            pool = HttpPool(server.url, size=3)
            await asyncio.gather(*(pool.post("/", b"{}") for _ in range(30)))
            await pool.aclose()
        assert 1 <= server.connections <= 3

    run(main())


def test_chunked_answers_and_interim_answers_are_read() -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    )

    async def main() -> None:
        async with serving(lambda n, body: chunked) as server:
            pool = HttpPool(server.url)
            first = await pool.post("/", b"{}")
            second = await pool.post("/", b"{}")
            await pool.aclose()
        assert first.body == second.body == b"hello world"
        assert server.connections == 1

    run(main())


def test_connection_close_and_unsized_answers_are_not_reused() -> None:
    answers = {
        1: ok(extra=b"Connection: close\r\n"),
        2: b"HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\nbusy",  # read to the end
    }

    async def main() -> None:
        async with serving(lambda n, body: answers.get(n) or ok()) as server:
            pool = HttpPool(server.url)
            first = await pool.post("/", b"{}")
            second = await pool.post("/", b"{}")
            third = await pool.post("/", b"{}")
            await pool.aclose()
        assert (first.status, second.status, second.body, third.status) == (200, 503, b"busy", 200)
        assert server.connections == 3

    run(main())


def test_a_connection_the_server_closed_while_idle_is_replaced_once() -> None:
    def script(n: int, body: bytes) -> bytes | None:
        return ok() if n != 2 else None  # the second request finds the connection closed

    async def main() -> None:
        async with serving(script) as server:
            pool = HttpPool(server.url)
            assert (await pool.post("/", b"{}")).status == 200
            assert (await pool.post("/", b"{}")).status == 200  # sent again, on a new one
            await pool.aclose()
        assert server.connections == 2
        assert len(server.requests) == 3

    run(main())


def test_a_new_connection_that_fails_is_not_retried() -> None:
    async def main() -> None:
        async with serving(lambda n, body: None) as server:
            pool = HttpPool(server.url)
            with pytest.raises(HttpProtocolError, match="closed the connection"):
                await pool.post("/", b"{}")
            await pool.aclose()
        assert len(server.requests) == 1

    run(main())


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SPDY/3 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 2xx OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "repeated"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "hexadecimal"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "larger than"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", "header lines"),
        (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", "longer than"),
    ],
)
def test_answers_it_cannot_read_are_errors(answer: bytes, message: str) -> None:
    async def main() -> None:
        async with serving(lambda n, body: answer) as server:
            pool = HttpPool(server.url, max_body=50)
            with pytest.raises(HttpProtocolError, match=message):
                await pool.post("/", b"{}")
            await pool.aclose()

    run(main())


def test_a_call_cancelled_midway_leaves_no_connection_behind() -> None:
    async def main() -> None:
        async with serving(lambda n, body: ok() if n > 1 else b"HTTP/1.1 200 OK\r\n") as server:
            pool = HttpPool(server.url)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await pool.post("/", b"{}")  # the answer never finishes
            assert (await pool.post("/", b"{}")).status == 200
            await pool.aclose()
        assert server.connections == 2  # the half-answered connection was not reused

    run(main())


def test_urls_it_cannot_use_are_refused() -> None:
    for url in ("ftp://opa", "http://", "opa:8181"):
        with pytest.raises(ValueError, match="not an http"):
            HttpPool(url)
