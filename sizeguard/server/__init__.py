"""The MCP server: tools, confirmation, executor (see ``app.build_app``)."""
