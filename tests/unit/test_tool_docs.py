"""The committed tool reference (docs/tools) matches the live server's tool schemas."""

from __future__ import annotations

import json
from pathlib import Path

from sizeguard.cli import main
from sizeguard.cli.docs import render_markdown, tool_reference

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tools"


def test_the_committed_tool_reference_is_current(tmp_path: Path) -> None:
    assert main(["docs", "tools", "--out", str(tmp_path)]) == 0
    for name in ("tools.json", "tools.md"):
        assert (tmp_path / name).read_text() == (DOCS / name).read_text(), (
            f"docs/tools/{name} is stale: run `sizeguard docs tools --out docs/tools`"
        )


def test_the_reference_lists_every_tool_with_schemas_and_hints() -> None:
    tools = {t["name"]: t for t in tool_reference()}
    assert {"preview_changes", "apply_changes", "request_confirmation"} <= set(tools)
    apply = tools["apply_changes"]
    assert apply["mutating"] and apply["annotations"]["destructiveHint"] is True
    assert apply["inputSchema"]["required"] == ["change_set_id"]
    assert "## `apply_changes`" in render_markdown(list(tools.values()))
    json.dumps(list(tools.values()))  # serialisable as written
