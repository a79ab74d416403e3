"""A JSON HTTP server on 127.0.0.1 for unit tests of how sizeguard words the API server's
answers (statuses, odd documents) — never a stand-in for a claim about a real API server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[str], tuple[int, object]]


@contextmanager
def json_server(route: Route) -> Iterator[tuple[str, list[str]]]:
    """Serve ``route(path)`` (status, JSON document) to every GET; yield the base URL and the
    list of paths asked for, in order."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            code, document = route(self.path)
            body = json.dumps(document).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
