"""astpresence: the presence server Asterisk never had."""

__version__ = "0.1.0"
