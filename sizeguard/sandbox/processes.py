"""Start, watch and stop the sandbox's background processes.

Every process is started in its own session (so a Ctrl-C in the terminal that ran
``sandbox up`` does not reach it) with its output in a log file. A process is identified by
its pid *and* its kernel start time, so ``down`` never signals a process that merely reused a
pid: it stops what it started and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Component:
    name: str
    pid: int
    start_time: int
    log: str
    argv: list[str]
    url: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Component:
        return cls(**data)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return int(fields[19])


def is_running(component: Component) -> bool:
    return proc_start_time(component.pid) == component.start_time


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Component:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    started = proc_start_time(proc.pid)
    # Popen objects are dropped on purpose: the process outlives this one. Reap it if it dies
    # while we are still here, so it does not linger as a zombie.
    _CHILDREN[proc.pid] = proc
    return Component(name, proc.pid, started or 0, str(log), list(argv))


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def exited(component: Component) -> bool:
    child = _CHILDREN.get(component.pid)
    if child is not None:
        return child.poll() is not None
    return not is_running(component)


def log_tail(component: Component, lines: int = 15) -> str:
    try:
        text = Path(component.log).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def wait_until(
    component: Component,
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
) -> None:
    """Poll ``ready`` until it holds; raise if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if exited(component):
            raise StartError(component, f"{component.name} exited while {what}")
        with contextlib.suppress(Exception):
            if ready():
                return
        if time.monotonic() > deadline:
            raise StartError(component, f"{component.name} not {what} after {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


class StartError(Exception):
    def __init__(self, component: Component, message: str) -> None:
        super().__init__(message)
        self.component = component


def stop(component: Component, *, grace: float = 10.0) -> bool:
    """Stop one component if it is still the process we started. True if it was running."""
    if not is_running(component):
        _reap(component.pid)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(component.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(component.pid)
        if not is_running(component):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(component.pid, signal.SIGKILL)
    for _ in range(100):
        _reap(component.pid)
        if not is_running(component):
            break
        time.sleep(0.05)
    return True


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
