"""A tiny scriptable Prometheus HTTP API on 127.0.0.1 for tests of bad answers."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, Any] | None  # (status, JSON body); None: hang until the server stops
Responder = Callable[[str, dict[str, str]], Answer]


@dataclass
class FakePrometheus:
    url: str
    requests: list[dict[str, str]] = field(default_factory=list)

    def queries(self, containing: str = "") -> list[str]:
        return [r.get("query", "") for r in self.requests if containing in r.get("query", "")]


def vector(*samples: tuple[dict[str, str], str | float]) -> tuple[int, Any]:
    return 200, {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1_700_000_000, str(v)]} for m, v in samples],
        },
    }


@contextmanager
def fake_prometheus(responder: Responder) -> Iterator[FakePrometheus]:
    stop = threading.Event()
    state = FakePrometheus(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, params: dict[str, str]) -> None:
            state.requests.append(params)
            answer = responder(self.path.split("?")[0], params)
            if answer is None:
                stop.wait(30)
                return
            status, body = answer
            payload = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode()
            self._answer(dict(urllib.parse.parse_qsl(body)))

        def do_GET(self) -> None:
            query = urllib.parse.urlparse(self.path).query
            self._answer(dict(urllib.parse.parse_qsl(query)))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        stop.set()
        time.sleep(0.05)
        server.shutdown()
        server.server_close()


def test_the_fake_answers_what_it_is_told() -> None:
    import httpx

    with fake_prometheus(lambda path, params: vector(({"a": "b"}, 1.5))) as prom:
        body = httpx.post(f"{prom.url}/api/v1/query", data={"query": "x"}).json()
    assert body["data"]["result"][0]["value"][1] == "1.5"
    assert prom.queries() == ["x"]
