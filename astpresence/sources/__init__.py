"""Sources: where presence comes from besides Asterisk and people: calendars (ICS,
CalDAV, Microsoft 365) today, each source a package of its own.

May import: domain, store, engine.
"""
