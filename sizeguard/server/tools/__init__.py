"""The MCP tools, as module-level functions grouped by purpose; :func:`sizeguard.server.app.
build_app` registers them.

- :mod:`.reading`: the cluster, metrics, recommendations, the safety report, history, report;
- :mod:`.proposing`: ``preview_changes`` (a change set, checked; nothing changes);
- :mod:`.confirming`: ``request_confirmation`` (the human approves, never the model);
- :mod:`.executing`: ``apply_changes``, ``scale_workload``, ``rollback_changes``.

Each tool takes its server's :class:`~sizeguard.server.tools.common.Runtime` (the
:class:`~sizeguard.server.service.Service` and the pending confirmations) from the context,
and runs its work through :func:`~sizeguard.server.tools.common.run`.
"""
