"""Tests of astpresence/domain/: the presence model and the rules."""
