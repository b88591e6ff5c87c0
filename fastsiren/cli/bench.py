"""`fastsiren bench`: every provider side by side (the suite lives in ``fastsiren.benchmark``).

    fastsiren bench [--quick] [--json FILE] [--markdown FILE] ...
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    # Only the argument definitions: the providers, the profiler and matplotlib load when a run
    # starts (``fastsiren.benchmark.cli.main``).
    from ..benchmark.cli import add_arguments

    bench = sub.add_parser("bench", help="every provider side by side (see bench/)")
    add_arguments(bench)
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from ..benchmark.cli import main

    return main(args)
