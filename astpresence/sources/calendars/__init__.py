"""Calendars as a presence source: ICS feeds, CalDAV collections, Microsoft 365.

entries.py (pure: events -> entries -> presence), ics.py and graph.py (feed
formats -> events, no I/O), fetch.py (HTTP), feeds.py (schedule, state, and
the engine's timed source ``calendar``), settings.py (``[[calendars]]``).
"""
