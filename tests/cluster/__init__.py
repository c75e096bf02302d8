"""Tests of astpresence/cluster/: an HA group on PostgreSQL."""
