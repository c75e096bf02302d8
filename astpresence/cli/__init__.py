"""CLI: the ``astpresence`` command (click: parse arguments, call plain functions)
and ``doctor``. May import: everything.
"""
