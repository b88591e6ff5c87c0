"""The README runs as written: every ```python block and every command of its ```bash blocks,
in order, in one empty working folder, on the install its set-up command makes.

Only the sizes shrink, through documented options: each ``fastsiren fit`` gets ``--steps 2``
(``--steps 4`` to resume) and its task's small sizes (``TINY``), ``fastsiren mesh`` a coarse grid,
``demo`` and ``bench`` tiny cases; a Python block's ``steps=N`` becomes ``steps=2``. A command
that cannot run here is left out through ``EXCLUDED``, each with the reason.

The set-up line runs as a real shell command (the installed ``fastsiren`` entry point, ``&&``);
the other commands call ``fastsiren.cli.main``, the function that entry point runs, in this
process: the same code without paying a torch import per command. Each command must exit with
status 0 and leave the files it promises: a fit its run folder's ``metrics.json`` and checkpoint,
``mesh`` and ``hypernet-predict`` the file their JSON line names, the samples command the samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

# Commands left out, by their first words, and why they cannot run in the test suite.
EXCLUDED = {
    "pip install": "installs packages: CI runs these very commands before the tests (.ci/run)",
    "python -m pytest": "the test suite itself",
    "torchrun": "starts several processes; tests/test_fit.py covers the fit loop under torchrun",
}
EXCLUDED_OPTIONS = {
    "--device cuda": "needs a GPU",
    "--preset gpu": "needs a GPU",
}

STEPS, RESUME_STEPS = 2, 4
# Per task, the smallest sizes that still exercise every output (appended: argparse keeps the
# last value of an option given twice). An option the task's settings do not have is dropped, so
# that a size knob being added or renamed does not break the README's own commands.
TINY = {
    "image": "--max-size 16 --width 16",
    "audio": "--seconds 0.05 --width 16",
    "video": "--max-size 12 --width 16",
    "poisson": "--max-size 16 --width 16",
    "sdf": "--width 16 --batch 256 --resolution 24 --metric-samples 500 --sphere-init-steps 2",
    "occupancy": "--width 16 --batch 256 --pool 2000 --held-out 500 --resolution 24 "
                 "--metric-samples 500",
    "helmholtz": "--width 16 --points 256 --source-points 16 --near-points 16 --eval-size 24",
    "wave": "--width 16 --points 256 --source-points 16 --frames 2 --eval-size 16",
    "init": "--width 16 --held-out 2 --meta-batch 2 --curve-steps 2",
    "hypernet": "--width 8 --hyper-width 16 --latent-dim 8 --batch-size 2 --resolution 12 "
                "--context-min 2 --context-max 50",
}
SMALL = {  # other commands: option -> the small value it takes here
    "mesh": {"--resolution": "24"},
    "demo": {"--n": "64", "--width": "8"},
    "bench": {"--providers": "autograd,fastsiren-torch", "--n": "64", "--widths": "8",
              "--min-time": "0", "--no-memory": None},
}


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.M | re.S)


def shell_commands(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments dropped, ``a && b``
    as two commands."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(shlex.join(words[:cut]))
            words = words[cut + 1:]
    return commands


def excluded(command: str) -> str | None:
    for start, why in EXCLUDED.items():
        if command.startswith(start):
            return why
    for option, why in EXCLUDED_OPTIONS.items():
        if option in command:
            return why
    return None


def with_option(argv: list[str], option: str, value: str | None) -> list[str]:
    """``argv`` with ``option`` set to ``value`` (replaced where given, else appended)."""
    if option in argv:
        i = argv.index(option)
        return argv[:i + 1] + ([value] if value is not None else []) + argv[
            i + (2 if value is not None else 1):]
    return argv + [option] + ([value] if value is not None else [])


def tiny_options(task: str) -> list[str]:
    from fastsiren.tasks import get_task

    fields = {f.name for f in dataclasses.fields(get_task(task).settings_class)}
    words = shlex.split(TINY[task])
    return [word for option, value in zip(words[::2], words[1::2])
            if option[2:].replace("-", "_") in fields for word in (option, value)]


def shrunk(argv: list[str]) -> list[str]:
    """A ``fastsiren ...`` command's arguments with the test's small sizes."""
    command = argv[0]
    if command == "fit" and "--help" not in argv:
        resume = "--resume" in argv
        argv = with_option(argv, "--steps", str(RESUME_STEPS if resume else STEPS))
        if not resume:  # a resumed run keeps its own settings
            argv = argv + tiny_options(argv[1])
        return argv + ["--quiet"]
    for option, value in SMALL.get(command, {}).items():
        argv = with_option(argv, option, value)
    return argv


def run_folder(argv: list[str]) -> Path:
    for option in ("--out", "--resume"):
        if option in argv:
            return Path(argv[argv.index(option) + 1])
    return Path("runs") / argv[1]


def check_promises(argv: list[str], stdout: str) -> None:
    """The files a command promises exist (and what it prints says what it should)."""
    command = argv[0]
    if command == "fit" and "--help" not in argv:
        folder = run_folder(argv)
        assert (folder / "metrics.json").is_file() and (folder / "checkpoint.pt").is_file()
        assert list(folder.glob("*.png")), f"{folder}: no picture"
    elif command in ("mesh", "hypernet-predict"):
        report = json.loads(stdout.strip().splitlines()[-1])
        written = Path(report["mesh" if command == "mesh" else "written"])
        assert written.is_file() and written.stat().st_size > 0
        if "--out" in argv:
            assert written == Path(argv[argv.index("--out") + 1])
    elif command == "check" and "--json" in argv:
        assert json.loads(stdout)["backends"]["torch"] == "available"
    elif command == "bench":
        lines = stdout.splitlines()
        assert any(line.startswith("fastsiren-torch") for line in lines)
        assert max(map(len, lines)) <= 100  # COLUMNS=100 below


def run_in_process(argv: list[str]) -> str:
    from fastsiren.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            status = main(argv)
        except SystemExit as exc:  # --help
            status = exc.code
    assert status == 0, f"exit status {status}"
    return out.getvalue()


def python_module(argv: list[str]) -> str:
    """``python -m MODULE ARGS`` in a child process (a module's ``__main__`` is a program)."""
    done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


SETUP_LINE = next(line for line in code_blocks("bash")[0].splitlines()
                  if line.startswith("fastsiren"))
# every other command, in order (the set-up line runs as a shell command of its own)
COMMANDS = [c for block in code_blocks("bash") for c in shell_commands(block)
            if not excluded(c) and c not in shell_commands(SETUP_LINE)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One empty folder for the whole README, in order (later commands read earlier runs)."""
    return tmp_path_factory.mktemp("readme")


@pytest.fixture
def in_workdir(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("COLUMNS", "100")
    return workdir


def test_readme_has_what_this_test_runs():
    assert len(code_blocks("python")) >= 1 and len(COMMANDS) >= 15
    assert SETUP_LINE.startswith("fastsiren check && fastsiren fit image")
    unknown = [c for c in COMMANDS if not c.startswith(("fastsiren ", "python -m fastsiren.data"))]
    assert not unknown, f"README commands this test does not know how to run: {unknown}"


@pytest.mark.slow
def test_setup_line_as_a_shell_command(in_workdir):
    tiny = f" --steps {STEPS} {shlex.join(tiny_options('image'))} --quiet"
    done = subprocess.run(SETUP_LINE + tiny, shell=True, capture_output=True, text=True,
                          timeout=300, executable="/bin/bash")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (in_workdir / "runs/image/metrics.json").is_file()
    assert (in_workdir / "runs/image/comparison.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("block", code_blocks("python"), ids=lambda b: b.splitlines()[0][:40])
def test_python_block(in_workdir, block):
    source = re.sub(r"\bsteps=\d+", f"steps={STEPS}", block)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(source, "README.md", "exec"), namespace)
    for folder in re.findall(r'out="([^"]+)"', source):
        assert (in_workdir / folder / "metrics.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c[:60] for c in COMMANDS])
def test_command(in_workdir, command):
    argv = shlex.split(command)
    if argv[:3] == ["python", "-m", "fastsiren.data"]:
        python_module(argv)
        for name in ("camera.png", "guitar_fifths.wav", "bunny_clip.npz", "kitten.xyz"):
            assert (in_workdir / argv[3] / name).is_file()
        return
    assert argv[0] == "fastsiren"
    argv = shrunk(argv[1:])
    check_promises(argv, run_in_process(argv))
