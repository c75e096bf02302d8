"""Tests of astpresence/app/: config, the daemon as a process, packaging, the shape of the package."""
