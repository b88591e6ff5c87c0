"""The package version (pyproject.toml's ``version`` is the same string; a test checks it)."""

__version__ = "0.1.0"
