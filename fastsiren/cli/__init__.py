"""`fastsiren` command line: thin argument parsing over the library.

Each subcommand is a module of this package with a ``register(subparsers)`` function that adds
its parser and sets ``func`` (the handler, called with the parsed arguments, returning the exit
status). Handlers import the heavy parts of the library themselves, so ``fastsiren --help`` and
one subcommand do not pay for the others.

A handler that meets bad input raises ``fastsiren.errors.InputError``: ``main`` prints its
message in one line and exits with status 2, without a traceback. Ctrl-C before a handler has
anything to save ends in one line too (status 130), and warnings print as one line each.
"""

from __future__ import annotations

import argparse
import importlib
import re
import signal
import sys
import threading
import warnings

from ..errors import InputError

# Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = ("fit", "mesh", "eval_mesh", "hypernet_predict", "demo", "bench", "check")
# Long runs that allocate the same large buffers at every step (see ``keep_freed_memory``).
REPEATED_ALLOCATION = ("fit", "mesh")


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="fastsiren",
        description="SIRENs with analytic derivatives: fit signals, compare with autograd.",
    )
    parser.add_argument("--version", action="version", version=f"fastsiren {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory in the process instead of returning it to the system.

    The CPU path allocates the same multi-megabyte jets at every step; by default glibc serves
    them with fresh mmap or trims the heap after each free, so every step page-faults its
    buffers in again. Measured on the 2-core AMD EPYC, one thread, 2->64x3->1, 4096 points:
    the eager Laplacian step 37.8 -> 22.4 ms with the machine busy; with the same settings from
    the environment, the order-2 jet forward 10.0 -> 8.9 ms eager and 6.1 -> 5.5 ms compiled on
    a quiet one. Only for this command-line process (a library must not change its host's
    allocator); elsewhere ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
    in the environment do the same. Returns whether it applied (glibc only)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3
    # mmap only above glibc's largest threshold (32 MiB; CPU chunks stay near 4 MiB), and trim
    # the heap only when 1 GiB at its top is free
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


# A negative number in scientific notation ("-1e-3"), which argparse would take for an option.
_NEGATIVE_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def join_negative_values(argv: list[str]) -> list[str]:
    """``--lr -1e-3`` as ``--lr=-1e-3``: argparse reads a value starting with "-" as an option
    unless it looks like a plain negative number, so an option's negative value in scientific
    notation would be reported as missing."""
    joined: list[str] = []
    for token in argv:
        previous = joined[-1] if joined else ""
        if (_NEGATIVE_NUMBER.fullmatch(token) and previous.startswith("--")
                and "=" not in previous):
            joined[-1] = f"{previous}={token}"
        else:
            joined.append(token)
    return joined


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"fastsiren: warning: {message}\n"


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside a fit's steps (which save first): stop as Ctrl-C does, so
    that what was claimed (a run folder's lock) is released and one line says why."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum, frame):
    raise _Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    command = "(starting)"
    stop_signals = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                    if hasattr(signal, name)]
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _stop) for s in stop_signals} if in_main_thread else {}
    format_warning = warnings.formatwarning
    try:
        args = build_parser().parse_args(
            join_negative_values(sys.argv[1:] if argv is None else list(argv)))
        command = args.command
        if command in REPEATED_ALLOCATION:
            keep_freed_memory()
        warnings.formatwarning = _one_line_warning
        return args.func(args)
    except InputError as exc:
        print(f"fastsiren {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # before the handler had anything to save
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        print(f"fastsiren {command}: interrupted ({signal.Signals(signum).name})",
              file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        warnings.formatwarning = format_warning


if __name__ == "__main__":
    sys.exit(main())
