"""`sizeguard docs tools --out DIR`: the MCP tool reference, generated from the live server.

The tools are listed through an in-process ``fastmcp.Client``, exactly as an assistant sees
them (names, descriptions, annotations, input and output JSON schemas), and written as
``tools.json`` and ``tools.md``. ``docs/tools/`` holds the committed copy; a test fails when
it is stale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any, cast

from sizeguard.errors import CommandError

__all__ = ["register", "render_markdown", "tool_reference"]


def register(subparsers: Any) -> None:
    docs = subparsers.add_parser("docs", help="generate reference documentation")
    actions = docs.add_subparsers(dest="docs_command", metavar="ACTION", required=True)
    tools = actions.add_parser(
        "tools",
        help="write the MCP tool reference (tools.md and tools.json) from the server's schemas",
    )
    tools.add_argument("--out", type=Path, required=True, metavar="DIR")
    tools.set_defaults(func=_tools)


def tool_reference() -> list[dict[str, Any]]:
    """Every tool of a full (not read-only) server, as ``tools/list`` returns it."""
    from fastmcp import Client

    from sizeguard.approvals import generate_signing_key
    from sizeguard.server.app import MUTATING_TOOLS, build_app
    from sizeguard.server.service import Service

    # Listing tools touches neither the cluster, OPA nor the ledger; the key only makes the
    # mutating tools appear.
    service = Service(
        cluster=cast(Any, None),
        policy=cast(Any, None),
        ledger=cast(Any, None),
        key=generate_signing_key(),
    )
    app = build_app(service)

    async def listed() -> list[dict[str, Any]]:
        async with Client(app) as client:
            tools = await client.list_tools()
        out = []
        for tool in sorted(tools, key=lambda t: (t.name in MUTATING_TOOLS, t.name)):
            hints = tool.annotations
            out.append(
                {
                    "name": tool.name,
                    "description": (tool.description or "").strip(),
                    "mutating": tool.name in MUTATING_TOOLS,
                    "annotations": None
                    if hints is None
                    else hints.model_dump(mode="json", by_alias=True, exclude_none=True),
                    "inputSchema": tool.input_schema,
                    "outputSchema": tool.output_schema,
                }
            )
        return out

    return asyncio.run(listed())


def _type(spec: dict[str, Any]) -> str:
    """A JSON schema's type as people read it: ``string or null``, ``array of Edit``."""
    if "$ref" in spec:
        return str(spec["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in spec:
        return " or ".join(dict.fromkeys(_type(option) for option in spec["anyOf"]))
    kind = spec.get("type", "")
    if kind == "array" and isinstance(spec.get("items"), dict):
        return f"array of {_type(spec['items'])}"
    if kind == "object" and spec.get("title"):
        return str(spec["title"])
    if "enum" in spec:
        return " | ".join(json.dumps(value) for value in spec["enum"])
    return str(kind or "any")


def _object_of(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema (with properties) an argument holds, through arrays and nullables."""
    if spec.get("properties"):
        return spec
    for inner in (spec.get("items"), *(spec.get("anyOf") or [])):
        if isinstance(inner, dict):
            found = _object_of(inner)
            if found is not None:
                return found
    return None


def _description(spec: dict[str, Any]) -> str:
    """The argument's description on one line (a list item), from it or its first option."""
    for source in (spec, *(spec.get("anyOf") or [])):
        if isinstance(source, dict) and source.get("description"):
            return " ".join(str(source["description"]).split())
    return ""


def _arguments(schema: dict[str, Any], indent: str = "") -> list[str]:
    required = set(schema.get("required") or [])
    lines = []
    for name, spec in (schema.get("properties") or {}).items():
        kind = _type(spec)
        text = _description(spec)
        if indent and text == schema.get("description"):
            text = ""
        default = (
            f" (default `{json.dumps(spec['default'])}`)"
            if name not in required and "default" in spec
            else ""
        )
        lines.append(
            f"{indent}- `{name}`{' **required**' if name in required else ''} {kind}{default}"
            + (f": {text}" if text else "")
        )
        inner = _object_of(spec)
        if inner is not None and not indent:
            lines += _arguments(inner, indent + "  ")
    return lines or [f"{indent}- none"]


def render_markdown(tools: list[dict[str, Any]]) -> str:
    lines = [
        "# sizeguard MCP tools",
        "",
        "Generated by `sizeguard docs tools --out docs/tools` from the server's own schemas;",
        "do not edit by hand. The full JSON schemas are in `tools.json`.",
        "",
        "| tool | read-only | destructive | idempotent |",
        "|---|---|---|---|",
    ]
    for tool in tools:
        hints = tool["annotations"] or {}
        lines.append(
            f"| `{tool['name']}` | {hints.get('readOnlyHint')} | {hints.get('destructiveHint')} "
            f"| {hints.get('idempotentHint')} |"
        )
    for tool in tools:
        lines += ["", f"## `{tool['name']}`", ""]
        if tool["mutating"]:
            lines += ["*Mutating: not offered by `sizeguard serve --read-only`.*", ""]
        lines += [tool["description"], "", "Arguments:", ""]
        lines += _arguments(tool["inputSchema"])
        output = tool["outputSchema"] or {}
        title = output.get("title") or ", ".join(sorted(output.get("properties") or {}))
        lines += ["", f"Returns: `{title}` (structured content; see tools.json)."]
    return "\n".join(lines) + "\n"


def _tools(args: argparse.Namespace) -> int:
    tools = tool_reference()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tools.json").write_text(json.dumps(tools, indent=2, sort_keys=True) + "\n")
        (args.out / "tools.md").write_text(render_markdown(tools))
    except OSError as exc:
        raise CommandError(f"cannot write to {args.out}: {exc.strerror}") from None
    print(f"wrote {len(tools)} tools to {args.out}/tools.md and {args.out}/tools.json")
    return 0
