"""Rewrite the README's performance table from the checked-in results, never by hand.

    python bench/make_readme_table.py [--results bench/results] [--readme README.md] [--check]

Only the text between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` changes (and the
headline sentence between ``<!-- headline:begin -->`` and ``<!-- headline:end -->``, if the README
has those markers). Without the bench
markers the script prints what to add and exits with status 1; ``--check`` exits 1 when the
README is not up to date with the results (for CI).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastsiren import benchmark as fb

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    args = parser.parse_args(argv)

    files = sorted(args.results.glob("*.json"))
    if not files:
        print(f"no result files in {args.results}; run `fastsiren bench --preset cpu "
              f"--out {args.results}` first", file=sys.stderr)
        return 1
    docs = []
    for path in files:
        doc = json.loads(path.read_text())
        if doc.get("schema") not in fb.READABLE_SCHEMAS:
            print(f"skipping {path}: schema {doc.get('schema')!r}, expected one of "
                  f"{fb.READABLE_SCHEMAS}", file=sys.stderr)
            continue
        docs.append((f"bench/results/{path.name}", doc))
    section = fb.readme_section(docs)

    readme = args.readme.read_text() if args.readme.exists() else ""
    try:
        updated = fb.replace_readme_section(readme, section)
        if fb.HEADLINE_BEGIN in readme:
            updated = fb.replace_readme_section(
                updated, fb.readme_headline(docs), fb.HEADLINE_BEGIN, fb.HEADLINE_END
            )
    except ValueError:
        print(f"{args.readme} has no benchmark block. Add these two lines where the table "
              f"belongs (the benchmark section), then run this script again:\n\n"
              f"{fb.README_BEGIN}\n{fb.README_END}\n", file=sys.stderr)
        return 1
    if updated == readme:
        print(f"{args.readme} is up to date")
        return 0
    if args.check:
        print(f"{args.readme} is stale: run python bench/make_readme_table.py", file=sys.stderr)
        return 1
    args.readme.write_text(updated)
    print(f"rewrote the benchmark table in {args.readme} from {len(docs)} result file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
