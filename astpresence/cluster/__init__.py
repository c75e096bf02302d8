"""Cluster: an HA group on PostgreSQL. Leadership (the advisory lock), the leader's
notices to its followers, the followers' commands to the leader, and the follower's
copy of what the leader shows.

May import: domain, store, engine (and sources, for the calendars a follower asks
the leader about).
"""
