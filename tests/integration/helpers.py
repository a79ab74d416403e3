"""Small helpers shared by integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def prom_query(url: str, query: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"query": query}
    if at is not None:
        params["time"] = at
    response = httpx.get(f"{url}/api/v1/query", params=params, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def eventually(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


def processes_in(directory: Path) -> list[int]:
    """Pids of live processes whose working directory is ``directory``."""
    target = directory.resolve()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = (entry / "cwd").readlink()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and cwd == target:
            found.append(int(entry.name))
    return found
