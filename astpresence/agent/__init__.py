"""The desktop agent (``astpresence agent``): a client of the API that keeps one
session open for the person at the computer and reports whether they are active,
idle or the screen is locked (sources/sessions/ on the server side).

readers.py (what the computer says: systemd-logind over D-Bus on Linux, ioreg on
macOS, GetLastInputInfo on Windows), client.py (the session over HTTP: open,
report, heartbeat, close, reconnect). It sends state and times only: never a
window title, never a key count. May import: domain, engine (its backoff only).
"""
