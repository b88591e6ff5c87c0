"""The run folder as one process's property: its lock, its manifest and the swap of ``--overwrite``.

A fit claims its folder before it writes anything in it (``RunFolder.claim``):

- **lock**: ``.fastsiren.lock`` holds the owner's process id under an exclusive ``flock``; the
  kernel drops the lock when the process dies, however it dies, so a second fit into the same
  folder stops with one line naming the owner, and a lock file left by a killed process is
  taken over with a warning naming it. Under torchrun, rank 0 owns the folder.
- **manifest**: ``manifest.json`` lists every file the run wrote (relative paths) and the
  fingerprints of its inputs (size and SHA-256). It is written before the files it names, so
  after any crash it names at least what is there.
- **what may be replaced**: a new run goes into a new or empty folder; ``--overwrite`` replaces
  a previous run's own files (those of its manifest; for a run written before manifests, the
  loop's fixed names and the outputs of its metrics.json) and refuses a folder holding files of
  anyone else. The new run is written beside the old one in ``.fastsiren-new/`` and swapped in at
  its first checkpoint (``swap_in``), so a run that fails earlier leaves the old run as it was.
  Under torchrun the other processes write into the folder itself, so there the old run's files
  are removed when the new run starts.

Hidden names (a leading dot) are never a run's results and never the user's work at risk: the
lock, temporary files and the staging folder are hidden, and hidden files of others are left
alone and not counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from ..checkpoint import CHECKPOINT_NAME, atomic_write, unwritable
from ..errors import InputError

try:
    import fcntl
except ImportError:  # Windows: an O_EXCL lock file with the owner's pid instead
    fcntl = None

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "STAGING_NAME", "RunFolder", "fingerprint_inputs",
           "changed_inputs"]

LOCK_NAME = ".fastsiren.lock"
MANIFEST_NAME = "manifest.json"
STAGING_NAME = ".fastsiren-new"
MANIFEST_FORMAT = 1
# What the fit loop writes under fixed names (runs without a manifest are recognised by them).
LOOP_FILES = ("settings.json", "log.jsonl", CHECKPOINT_NAME, "metrics.json", "curve.png")


class RunFolder:
    """A run folder locked by this process. ``write_dir`` is where the run writes now: the
    folder itself, or its staging folder until ``swap_in`` after ``--overwrite``."""

    def __init__(self, path: Path, lock_fd: int, created: bool, previous: set[str] | None):
        self.path = path
        self.lock_fd: int | None = lock_fd
        self.created = created
        self.previous = previous  # the replaced run's files, until the swap
        self.write_dir = path / STAGING_NAME if previous is not None else path
        self.files: set[str] = set()
        self.inputs: list[dict[str, Any]] = []
        self.resuming = False

    # -- claiming -------------------------------------------------------------------------------
    @classmethod
    def claim(cls, path: str | Path, *, resume: bool = False, overwrite: bool = False,
              stage: bool = True) -> RunFolder:
        """Lock ``path`` (created if missing) and check that this run may write there; with
        ``stage``, a run replacing another writes beside it until ``swap_in``."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"--out {path}: is a file, not a folder")
        if resume and not path.is_dir():
            raise InputError(f"--resume {path}: no such run folder")
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = _lock(path)
        except OSError as exc:
            raise InputError(f"--out {path}: cannot write there ({exc.strerror or exc})") from None
        folder = cls(path, fd, created, None)
        try:
            shutil.rmtree(path / STAGING_NAME, ignore_errors=True)  # a killed --overwrite's
            if not resume:
                folder.previous = folder._replaceable(overwrite)
                if folder.previous and not stage:
                    folder._remove(folder.previous)
                    folder.previous = None
                folder.write_dir = path / STAGING_NAME if folder.previous else path
                folder.write_dir.mkdir(exist_ok=True)
            else:
                folder.resuming = True
                folder.files = run_files(path) or set()
            _check_writable(folder.write_dir)
        except BaseException:
            folder.release(failed=True)
            raise
        if not folder.previous:
            folder.previous = None
        return folder

    def _replaceable(self, overwrite: bool) -> set[str]:
        """The previous run's files that this run replaces (empty for an empty folder), or an
        InputError when the folder holds anything this run may not replace."""
        entries = sorted(p.name for p in self.path.iterdir() if not p.name.startswith("."))
        if not entries:
            return set()
        own = run_files(self.path)
        if own is None:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise InputError(f"--out {self.path}: holds files that are not a fastsiren run's "
                             f"({shown}); a new run goes into an empty or new folder")
        if not overwrite:
            raise InputError(
                f"--out {self.path} already holds a run; continue it with --resume "
                f"{self.path}, choose another --out, or pass --overwrite to replace it")
        tops = {Path(name).parts[0] for name in own} | {MANIFEST_NAME}
        foreign = [name for name in entries if name not in tops]
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise InputError(f"--out {self.path}: --overwrite replaces only a run's own files, "
                             f"and the folder also holds {shown}; move them or choose another "
                             "--out")
        return own

    # -- what the run wrote ---------------------------------------------------------------------
    def record(self, names) -> None:
        """Add ``names`` (relative paths) to the manifest, before the files are written."""
        new = set(names) - self.files
        if new:
            self.files |= new
            self.write_manifest(self.write_dir)

    def write_manifest(self, folder: Path, files: set[str] | None = None) -> None:
        write_manifest(folder, {"format": MANIFEST_FORMAT,
                                "files": sorted(self.files if files is None else files),
                                "inputs": self.inputs})

    def swap_in(self) -> None:
        """Replace the previous run by the staged one: first a manifest naming both (a crash
        during the swap leaves nothing unaccounted for), then the old run's files that the new
        one does not have are removed, the new files renamed over the old, the manifest last."""
        if self.previous is None:
            return
        staging, previous = self.write_dir, self.previous
        self.write_manifest(self.path, previous | self.files)
        self._remove(previous - self.files)
        for name in sorted(self.files):
            source = staging / name
            if source.is_file():
                (self.path / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, self.path / name)
        self.write_manifest(self.path)
        shutil.rmtree(staging, ignore_errors=True)
        self.previous, self.write_dir = None, self.path

    def _remove(self, names) -> None:
        for name in sorted(names):
            (self.path / name).unlink(missing_ok=True)
            _remove_empty_parents(self.path / name, self.path)

    # -- releasing ------------------------------------------------------------------------------
    def release(self, failed: bool = False) -> None:
        """Unlock. A new run that failed before its first checkpoint (``failed``) leaves no
        trace: its files are removed (a staged run's staging folder; the previous run stays), and
        so is a folder it created. A resumed run's files are always kept."""
        if self.lock_fd is None:
            return
        if failed and not self.resuming:
            if self.previous is not None:
                shutil.rmtree(self.path / STAGING_NAME, ignore_errors=True)
            elif self.files:  # what this run wrote, its manifest with it (never another's)
                self._remove(self.files | {MANIFEST_NAME})
        (self.path / LOCK_NAME).unlink(missing_ok=True)
        if fcntl is not None:
            os.close(self.lock_fd)
        self.lock_fd = None
        if failed and self.created:
            if self.write_dir != self.path:
                shutil.rmtree(self.write_dir, ignore_errors=True)
            try:
                next((self.path).iterdir())
            except StopIteration:
                self.path.rmdir()
            except OSError:
                pass


# -- the lock -------------------------------------------------------------------------------------
def _lock(folder: Path) -> int:
    """An exclusive lock on ``folder``'s lock file, holding our pid; an InputError naming the
    owner when another live process holds it."""
    lock_path = folder / LOCK_NAME
    if fcntl is None:
        return _lock_without_flock(lock_path)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(fd)
            os.close(fd)
            raise InputError(_busy(folder, owner)) from None
        # Its previous owner may have removed the file between our open and our lock: then the
        # lock is on a file nobody else will see; start over on the current one.
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:
            os.close(fd)
            continue
        _take_over(fd, folder, _read_pid(fd))
        return fd


def _lock_without_flock(lock_path: Path) -> int:
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            owner = _read_pid_of(lock_path)
            if owner is not None and _alive(owner):
                raise InputError(_busy(lock_path.parent, owner)) from None
            lock_path.unlink(missing_ok=True)
            _report_stale(lock_path.parent, owner)
            continue
        _take_over(fd, lock_path.parent, None)
        os.close(fd)
        return -1


def _take_over(fd: int, folder: Path, stale_owner: int | None) -> None:
    if stale_owner is not None and stale_owner != os.getpid():
        _report_stale(folder, stale_owner)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _busy(folder: Path, owner: int | None) -> str:
    who = f"process {owner}" if owner is not None else "another process"
    return (f"--out {folder}: {who} is fitting into this folder; wait for it to end or "
            "choose another --out")


def _report_stale(folder: Path, owner: int | None) -> None:
    warnings.warn(f"{folder}: process {owner} ended without releasing the run folder (killed?); "
                  "taking it over", stacklevel=4)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


def _read_pid_of(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _check_writable(folder: Path) -> None:
    reason = unwritable(folder)
    if reason is not None:
        raise InputError(f"--out {folder}: cannot write there ({reason})")


def _remove_empty_parents(path: Path, root: Path) -> None:
    parent = path.parent
    while parent != root:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


# -- the manifest ---------------------------------------------------------------------------------
def read_manifest(folder: Path) -> dict:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest(folder: Path, data: dict) -> None:
    with atomic_write(folder / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def run_files(folder: Path) -> set[str] | None:
    """The files of the run in ``folder`` (None: it holds no run). A run with a manifest owns
    what it lists; an older one, the loop's fixed names, its processes' logs and checkpoints
    and the outputs its metrics.json lists."""
    manifest = read_manifest(folder)
    if manifest:
        return set(manifest.get("files", ()))
    if not (folder / CHECKPOINT_NAME).is_file():
        return None
    own = {name for name in LOOP_FILES if (folder / name).is_file()}
    own |= {p.name for p in folder.glob("log-rank*.jsonl")}
    own |= {p.name for p in folder.glob("checkpoint-rank*.pt")}
    try:
        own |= set(json.loads((folder / "metrics.json").read_text()).get("outputs", ()))
    except (OSError, ValueError, AttributeError):
        pass
    return own


# -- inputs ---------------------------------------------------------------------------------------
def fingerprint_inputs(inputs) -> list[dict[str, Any]]:
    """Size and SHA-256 of every input file (the files of an input folder, recursively, hidden
    ones left out), so that a resumed run knows whether its data changed."""
    files = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            files.append(path)
    prints = []
    for file in files:
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        prints.append({"path": str(file), "size": file.stat().st_size,
                       "sha256": digest.hexdigest()})
    return prints


def changed_inputs(before: list[dict], now: list[dict]) -> list[str]:
    """The paths whose size or hash differ between two fingerprints (added or gone included)."""
    old = {p["path"]: (p["size"], p["sha256"]) for p in before}
    new = {p["path"]: (p["size"], p["sha256"]) for p in now}
    return sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))
