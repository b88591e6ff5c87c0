"""Errors a user can act on.

``InputError`` marks bad input from outside the program: a missing or malformed file, an option
out of range, an output folder that cannot be written. Its message names what was expected and
what was found, in one line. The command line prints it without a traceback and exits with
status 2; from Python it is an ordinary ``ValueError``.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input that the user can fix; the message says what was expected."""
