"""`healbot mcp`: the read-only MCP server a diagnosis looks through (incident, logs, health, history, repo).

Not named `mcp`: a top-level package of that name would shadow the SDK. Importing this package costs
nothing; the SDK is imported only by `bot.mcp_server.server`.
"""
