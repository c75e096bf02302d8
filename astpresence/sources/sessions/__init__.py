"""Presence from people's computers: client sessions (the desktop agent, a board tab,
a desk client) reporting active, idle or locked.

model.py (pure: sessions -> the ``sessions`` contribution), source.py (the
sessions at work on the leader), plugin.py (``[sessions]``, the command its
followers forward), web.py (``/v1/me/sessions``, ``/v1/users/{user}/sessions``).
The desktop agent that reports them is ``astpresence/agent/``.
"""
