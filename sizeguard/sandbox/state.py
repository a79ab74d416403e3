"""The sandbox directory's record of what it started: ``DIR/sandbox.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sizeguard.sandbox.processes import Component, is_running

STATE_FILE = "sandbox.json"


@dataclass
class SandboxState:
    directory: Path
    components: list[Component] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def save(self) -> None:
        data = {
            "components": [c.to_json() for c in self.components],
            "urls": self.urls,
            "info": self.info,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.path)

    @classmethod
    def load(cls, directory: Path) -> SandboxState | None:
        path = directory / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is unreadable: {exc}") from exc
        return cls(
            directory=directory,
            components=[Component.from_json(c) for c in data.get("components", [])],
            urls=dict(data.get("urls", {})),
            info=dict(data.get("info", {})),
        )

    def running(self) -> list[Component]:
        return [c for c in self.components if is_running(c)]

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)
