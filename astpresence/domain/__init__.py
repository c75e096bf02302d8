"""Domain: plain values and the rules that decide presence, with no I/O at all.

The presence model (states, subtypes, messages and their checks), records
(contributions, effective presence, history rows, views), the precedence rules
(a pure function over plain values), the BLF mirror's device states, FreePBX's
naming, and log-safe text. May import: the standard library only.
"""
