"""`fastsiren bench`: every provider side by side (the suite lives in ``fastsiren.benchmark``).

    fastsiren bench [--quick] [--json FILE] [--markdown FILE] ...
"""

from __future__ import annotations

import argparse
import os
import sys


def register(sub) -> None:
    from ..benchmark import add_arguments

    bench = sub.add_parser("bench", help="every provider side by side (see bench/)")
    add_arguments(bench)
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from .. import benchmark

    return benchmark.main(args)


def end_process(status: int) -> int:
    """Called by ``main`` after the handler: a run that used the CPU memory profiler ends here."""
    from .. import benchmark

    if benchmark.CPU_MEMORY_PROFILED:
        # Every result is on disk; skip the interpreter's final collection, which aborts after
        # a long run of torch's CPU memory profiler (see benchmark.CPU_MEMORY_PROFILED).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
