"""Turn a first-light folder (``bench/gpu_first_light.py --out DIR``) into the repository's
records.

    python bench/record_gpu_results.py DIR [--results bench/results] [--readme README.md]

Writes, under ``--results``:

- the benchmark's JSON, Markdown and plot (``DIR/bench/<device>.*``, with their machine line),
  copied as they are: ``fastsiren bench`` wrote them;
- ``precision/kernel-errors-<device>.md``: the kernels' measured errors against the torch
  backend in float64 per family, order and precision mode (``fastsiren check``'s self-check);
- ``first-light-<device>.md``: the run's machine line, each step's status and time against its
  estimate, the configs autotuning picked with their registers and spills, the roofline rows
  and the image fit's wall time and PSNR;

then regenerates the README's benchmark table from every result there
(``bench/make_readme_table.py``). Steps that did not finish leave their parts out and say so.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def error_table(check: dict) -> str:
    rows = check["self_check"]["rows"]
    dev = check["device"]
    lines = [f"# Kernel errors on {dev.get('name', dev['type'])}",
             "",
             "Largest error of each kernel family against the torch backend in float64 on the "
             "same rounded inputs (max |triton - torch| over max |torch|, per slab and gradient; "
             "`fastsiren check`, " + ", ".join(f"{k} {v}" for k, v in check["versions"].items())
             + ").",
             "",
             "| precision | family | order | error | limit | kernel with the largest error |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        order = f"{r['order']}" + (" (Hessian diagonal)" if r["hessian_diag"] else "")
        if "skipped" in r:
            lines.append(f"| {r['precision']} | {r['family']} | {order} | - | - | "
                         f"{r['skipped']} |")
        elif r["failure"]:
            lines.append(f"| {r['precision']} | {r['family']} | {order} | FAILED | "
                         f"{r['limit']:.0e} | {r['kernel']}: {r['failure']} |")
        else:
            lines.append(f"| {r['precision']} | {r['family']} | {order} | {r['error']:.1e} | "
                         f"{r['limit']:.0e} | {r['kernel']} |")
    return "\n".join(lines) + "\n"


def first_light_report(run: Path, summary: dict) -> str:
    machine = summary.get("machine", {})
    lines = [f"# First light on {machine.get('device', '?')}", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), "",
             "| step | status | seconds | estimate |", "|---|---|---|---|"]
    for s in summary.get("steps", []):
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | "
                     f"{s['estimate']:.0f} |")
    registers = _load(run / "registers.json")
    if registers:
        lines += ["", f"Configs autotuning picked (N = {registers['n']}, width "
                  f"{registers['width']}):", "",
                  "| workload | kernel | config | registers | spills |", "|---|---|---|---|---|"]
        for p in registers["picked"]:
            lines.append(f"| {p['workload']} | {p['kernel']} | {p['config']} | "
                         f"{p['registers']} | {p['spills']} |")
    roofline = _load(run / "roofline.json")
    if roofline:
        lines += ["", f"Roofline ({roofline['layout']}, N = {roofline['n']}, width "
                  f"{roofline['width']}):", "", "| op | ms | TFLOP/s | GB/s |", "|---|---|---|---|"]
        for name, r in roofline["rows"].items():
            lines.append(f"| {name} | {r['ms']:.3f} | {r['tflops']:.1f} | {r['gbps']:.0f} |")
    fit = _load(run / "fit-image" / "metrics.json")
    if fit:
        keep = {k: v for k, v in fit.items() if isinstance(v, (int, float, str))}
        lines += ["", "Image fit: " + ", ".join(f"{k} {v}" for k, v in keep.items())]
    missing = [s["name"] for s in summary.get("steps", []) if s["status"] != "ok"]
    if missing:
        lines += ["", "Not finished: " + ", ".join(missing) + " (see their logs in the run "
                  "folder)."]
    return "\n".join(lines) + "\n"


def record(run: Path, results: Path, readme: Path) -> list[Path]:
    """Write the records; return the files written."""
    summary = _load(run / "summary.json")
    if summary is None:
        raise SystemExit(f"error: {run}/summary.json not found: is {run} a first-light folder?")
    device = slug(summary.get("machine", {}).get("device", "device"))
    written = []
    results.mkdir(parents=True, exist_ok=True)
    for path in sorted((run / "bench").glob("*")):
        if path.suffix in (".json", ".md", ".png"):
            written.append(Path(shutil.copy2(path, results / path.name)))
    check = _load(run / "check.json")
    if check and check.get("self_check", {}).get("rows"):
        (results / "precision").mkdir(exist_ok=True)
        target = results / "precision" / f"kernel-errors-{device}.md"
        target.write_text(error_table(check))
        written.append(target)
    target = results / f"first-light-{device}.md"
    target.write_text(first_light_report(run, summary))
    written.append(target)
    if any(p.suffix == ".json" for p in written):
        sys.path.insert(0, str(ROOT / "bench"))
        import make_readme_table

        if make_readme_table.main(["--results", str(results), "--readme", str(readme)]) != 0:
            raise SystemExit("error: the README table could not be regenerated (see above)")
        written.append(readme)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the folder gpu_first_light.py wrote")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    for path in record(args.run, args.results, args.readme):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
