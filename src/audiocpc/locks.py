"""The lock of a folder that one process at a time may write (a training run's folder).

Imports nothing of the project but its errors (it sits at the bottom of the package, next
to fileio).
"""

from __future__ import annotations

import os
from pathlib import Path

from audiocpc.errors import RunInUseError

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
