"""Web: the HTTP and WebSocket API (aiohttp), its OpenAPI document, tokens and
presence levels (auth), rate limits, connection admission and the board's files.

May import: domain, store, engine, asterisk, cluster, sources.
"""
