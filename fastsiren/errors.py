"""Errors a user can act on.

``InputError`` marks bad input from outside the program: a missing or malformed file, an option
out of range, an output folder that cannot be written. Its message names what was expected and
what was found, in one line. The command line prints it without a traceback and exits with
status 2; from Python it is an ordinary ``ValueError``.
"""

from __future__ import annotations

import os

__all__ = ["InputError", "check_not_folder"]


class InputError(ValueError):
    """Bad input that the user can fix; the message says what was expected."""


def check_not_folder(path: str | os.PathLike, what: str) -> None:
    """An InputError when ``path`` is a folder where a file is expected: said as such, rather
    than as a missing file. ``what`` names the file expected ("WAV file")."""
    if os.path.isdir(path):
        raise InputError(f"{os.fspath(path)!r} is a folder; expected a {what}")
