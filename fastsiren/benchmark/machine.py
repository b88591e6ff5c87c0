"""The machine line every result carries: device, torch, triton, Python, commit and date."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path

import torch


def machine_info(device: torch.device) -> dict:
    """Device, torch, triton and commit: the line every result carries."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        detail = f"{props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        name = _cpu_name()
        detail = f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    return {
        "device_type": device.type,
        "device": name,
        "device_detail": detail,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_line(machine: dict) -> str:
    return (
        f"{machine['device']} ({machine['device_detail']}) · torch {machine['torch']} · "
        f"triton {machine['triton'] or 'n/a'} · commit {machine['commit']} · {machine['date']}"
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root,
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def device_slug(machine: dict) -> str:
    name = re.sub(r"\(r\)|\(tm\)|cpu @.*|processor", "", machine["device"].lower())
    name = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return f"{machine['device_type']}-{name}"[:60].rstrip("-")
