"""Tests of astpresence/engine/: the presence service."""
