"""App: the wiring. The config (defaults < TOML < environment < flags), the
daemon that builds every part and runs them, the database lock, metrics,
history retention, systemd integration, and the shipped kit (dialplan, unit).

May import: everything below it (not cli).
"""
