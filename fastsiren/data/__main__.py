"""`python -m fastsiren.data [DIR]`: list the built-in samples, or copy them into DIR."""

from __future__ import annotations

import sys

from ..errors import InputError
from . import SAMPLES, copy_samples, sample


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if len(argv) > 1:
        print(f"usage: {__doc__.strip()}", file=sys.stderr)
        return 2
    if not argv:
        for name, (_, what) in SAMPLES.items():
            print(f"{name:<8} {sample(name)}  ({what})")
        return 0
    try:
        copied = copy_samples(argv[0])
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in copied:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
