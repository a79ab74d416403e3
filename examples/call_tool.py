"""Call one sizeguard tool over streamable HTTP with the official MCP SDK client.

    python examples/call_tool.py --url http://127.0.0.1:8000/mcp --token-file FILE \\
        TOOL ['{"json": "arguments"}'] [--fields a,b]

The bearer token comes from ``--token-file`` (the server's ``mcp-token``, or a file holding
a ServiceAccount token) or ``$MCP_TOKEN``. It prints the tool's structured answer as JSON
(only ``--fields``, if given). A script is not a person: if the server asks for
confirmation, this prints the question and declines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ElicitRequestParams, ElicitResult, Implementation


async def decline(context: Any, params: ElicitRequestParams) -> ElicitResult:
    print(f"the server asks the human (this script declines):\n{params.message}", file=sys.stderr)
    return ElicitResult(action="decline")


async def call(url: str, token: str, tool: str, arguments: dict[str, Any]) -> Any:
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(
            read,
            write,
            elicitation_callback=decline,
            client_info=Implementation(name="call-tool", version="1"),
        ) as session,
    ):
        await session.initialize()
        result = await session.call_tool(tool, arguments)
        if result.is_error:
            return {"error": " ".join(getattr(c, "text", "") for c in result.content)}
        return result.structured_content


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the MCP endpoint")
    parser.add_argument("--token-file", type=Path, help="a file holding the bearer token")
    parser.add_argument("--fields", help="comma-separated fields of the answer to print")
    parser.add_argument("tool")
    parser.add_argument("arguments", nargs="?", default="{}", help="JSON object")
    args = parser.parse_args()
    token = (
        args.token_file.read_text().strip()
        if args.token_file is not None
        else os.environ.get("MCP_TOKEN", "")
    )
    if not token:
        parser.error("give --token-file or set MCP_TOKEN")
    answer = asyncio.run(call(args.url, token, args.tool, json.loads(args.arguments)))
    if args.fields and isinstance(answer, dict) and "error" not in answer:
        answer = {name: answer.get(name) for name in args.fields.split(",")}
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    return 1 if isinstance(answer, dict) and "error" in answer else 0


if __name__ == "__main__":
    sys.exit(main())
