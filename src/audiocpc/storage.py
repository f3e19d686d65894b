"""Full disks and the temporary files writes leave behind.

Every write in audiocpc goes to a temporary file that is renamed into place, so a failed
write never damages the previous file; these helpers turn "no space left" into one clear
message naming the file system, and sweep temporary files whose writer is gone.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Iterable

from audiocpc.errors import DiskFullError, RunInUseError

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
STALE_AFTER_S = 3600.0  # a temporary file untouched this long has no live writer


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def mount_point(path: str | Path) -> Path:
    """The folder where the file system holding `path` is mounted."""
    current = Path(os.path.abspath(path))
    while not current.exists() and current != current.parent:
        current = current.parent
    try:
        device = os.stat(current).st_dev
        while current != current.parent and os.stat(current.parent).st_dev == device:
            current = current.parent
    except OSError:
        pass
    return current


def _free(path: Path) -> str:
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "?"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if free < 1024 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return "?"


def disk_full_error(path: str | Path, then: str) -> DiskFullError:
    """'no space left on the file system at M (F free) while writing PATH; THEN'."""
    mount = mount_point(Path(path).parent)
    return DiskFullError(f"no space left on the file system at {mount} ({_free(mount)} free) "
                         f"while writing {path}; {then}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _writer_pid(name: str) -> int | None:
    """The process id in a temporary name such as `<key>.<pid>.tmp.npy`, if it has one."""
    for part in name.split(".")[1:]:
        if part.isdigit():
            return int(part)
    return None


def sweep_temporaries(paths: Iterable[Path], now: float | None = None) -> int:
    """Remove the temporary files among `paths` whose writing process is gone (or that
    nobody touched for an hour); return how many were removed."""
    now = time.time() if now is None else now
    removed = 0
    for path in paths:
        try:
            age = now - path.stat().st_mtime
        except OSError:
            continue
        pid = _writer_pid(path.name)
        if (pid is not None and pid != os.getpid() and not pid_alive(pid)) or age > STALE_AFTER_S:
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed


LOCK_NAME = ".audiocpc.lock"


class FolderLock:
    """An exclusive lock on `folder` for as long as the `with` block runs: `flock` on
    `folder/.audiocpc.lock`, which holds the owner's PID for the refusal message. The kernel
    releases it when the process ends, however it ends, so a lock left by a killed process
    never blocks (its file stays, naming a process that is gone). If the block fails and
    the folders made for the lock hold nothing else, they are removed again: a refused
    command leaves no empty run folder behind."""

    def __init__(self, folder: str | Path, purpose: str):
        self.folder = Path(folder)
        self.purpose = purpose
        self._fd: int | None = None
        self._created: list[Path] = []

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def __enter__(self) -> "FolderLock":
        import fcntl

        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        self._created = missing  # deepest first
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "PID unknown"
            stop = f"stop it (kill {holder})" if holder else "stop it"
            raise RunInUseError(
                f"{self.folder} is in use by another audiocpc process ({who}, {self.purpose}); "
                f"wait for it to finish, {stop}, or choose another --name") from None
        except OSError:  # a file system without flock (some network mounts): go on unlocked
            os.close(fd)
            return self
        try:
            if _read_pid(fd) != os.getpid():  # unchanged otherwise: the folder is left as it was
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # a full disk: the lock holds all the same, without the PID
            pass
        self._fd = fd
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._fd is None:
            return
        if exc_type is not None and self._created:
            try:
                if [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
                    self.path.unlink()
                    for folder in self._created:
                        folder.rmdir()
            except OSError:
                pass  # something else appeared in the meantime: leave it all
        os.close(self._fd)  # releases the flock; the file is left (unlinking it would race)
        self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
