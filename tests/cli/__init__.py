"""Tests of astpresence/cli/: the command line and doctor."""
