"""Store: current state, history, tokens and the HA group's rows, in SQLite or
PostgreSQL behind one protocol (base.Store). May import: domain.
"""
