"""Tests of astpresence/web/: the HTTP/WebSocket API, limits, the board."""
