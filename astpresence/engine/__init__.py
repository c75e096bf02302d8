"""Engine: the presence service that applies the rules to what the sources say.

Users, devices, contact cards, contributions, timers, the event hub for
streams, and the group commit to the store. May import: domain, store (its
protocol). Today the service still builds its Asterisk nodes and relays the HA
group's notices itself (asterisk, cluster): docs/architecture.md lists those
imports as the debt the layer check allows, to be turned into ports.
"""
