"""Asterisk: the AMI client and frames (bytes in, frames out), the bridge that
keeps one link per server, the sync that turns events into engine calls, the
outbox and write kinds, queue members, the ARI client and the PRESENCE_STATE codec.

May import: domain, store, engine.
"""
