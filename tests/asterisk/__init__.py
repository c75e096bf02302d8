"""Tests of astpresence/asterisk/: AMI, the bridge, the writes, the fake Asterisk."""
