"""`fastsiren` command line: thin argument parsing over the library.

Each subcommand is a module of this package with a ``register(subparsers)`` function that adds
its parser and sets ``func`` (the handler, called with the parsed arguments, returning the exit
status). Handlers import the heavy parts of the library themselves, so ``fastsiren --help`` and
one subcommand do not pay for the others.

A handler that meets bad input raises ``fastsiren.errors.InputError``: ``main`` prints its
message in one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import InputError

# Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = ("fit", "mesh", "hypernet_predict", "demo", "bench")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fastsiren",
        description="SIRENs with analytic derivatives: fit signals, compare with autograd.",
    )
    parser.add_argument("--version", action="version", version=f"fastsiren {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"fastsiren {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
