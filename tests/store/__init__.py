"""Tests of astpresence/store/: the stores (SQLite, PostgreSQL, memory)."""
