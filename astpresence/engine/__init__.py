"""Engine: the presence service that applies the rules to what the sources say.

Users, devices, contact cards, contributions, timers, the event hub for
streams, the Prometheus instruments, and the group commit to the store. What it
needs from outside (each Asterisk server's side, the HA group's notices, a
leader that runs a follower's writes) are the small protocols of ports.py,
handed to it at wiring time. May import: domain, store.
"""
