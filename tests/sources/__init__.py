"""Tests of astpresence/sources/: calendars."""
