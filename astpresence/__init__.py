"""astpresence: the presence server Asterisk never had."""

__version__ = "0.2.0"
