"""Atomic file writes and content fingerprints: the one place that knows how to replace a file.

Every writer goes through `atomic_path`: the new content goes to a uniquely named temporary
file in the target's own folder (same file system, so the rename is atomic), is flushed to
disk, then renamed over the target; the folder entry is flushed too. A kill at any moment
leaves either the old file or the new one, whole; a failure removes the temporary file.
Temporary names are `.<name>.<pid>.<random>.tmp[<suffix>]`, so `stale_temporaries` can find
the ones a killed process left behind.

Also: sweeping temporary files, and turning a full disk into one message (`disk_full_as`).
Imports nothing of the project but its errors (it sits at the bottom of the package).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from audiocpc.errors import DiskFullError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_save_npy", "stale_temporaries", "sweep_temporaries", "is_disk_full",
           "disk_full_error", "disk_full_as", "sha256_file", "sha256_json",
           "sha256_bytes", "files_fingerprint", "normalised_json", "read_json"]


def _fsync_dir(folder: Path) -> None:
    """Flush the folder entry, so the rename itself survives a power cut (POSIX only)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write the new content of `path` to (for writers that need a
    path or open the file themselves: torch.save, savefig, np.save). When the block ends
    without an error the file is flushed and renamed over `path`; otherwise it is removed.
    `suffix` is appended to the temporary name, for writers that pick a format from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(path.parent)


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporary files of `path` left by writers that were killed mid-write."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp*"))


def sweep_temporaries(paths: Iterable[Path], older_than_s: float) -> int:
    """Remove the temporary files among `paths` untouched for `older_than_s` seconds (their
    writer was killed: a live write takes seconds); return how many were removed."""
    cutoff = time.time() - older_than_s
    removed = 0
    for path in paths:
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:  # gone already (another process swept it) or not ours to remove
            continue
    return removed


# ---------------------------------------------------------------- full disks

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


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
        free: float = shutil.disk_usage(path).free
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


@contextlib.contextmanager
def disk_full_as(path: str | Path, then: str) -> Iterator[None]:
    """Turn a full disk inside the block into one DiskFullError naming the file being
    written (the error's own, else `path`) and `then`, the fix (`atomic_path` has already
    removed its temporary file)."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise disk_full_error(exc.filename or path, then) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a handle: np.save would append .npy to the name
            np.save(handle, array)
    return Path(path)


# ---------------------------------------------------------------- fingerprints

# sha256 of files already hashed in this process, by (path, size, mtime, ctime, inode): a
# stage check and the stage itself often hash the same large file.
_HASHES: dict[tuple[str, int, int, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    path = Path(path)
    stat = path.stat()
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(payload: Any) -> str:
    """A hash of plain data that does not depend on dict order."""
    return sha256_bytes(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def normalised_json(payload: Any) -> Any:
    """`payload` as it reads back from a JSON file (tuples become lists, keys strings), so
    an identity computed now compares equal to one that was stored."""
    return json.loads(json.dumps(payload))


def files_fingerprint(root: str | Path, paths: Iterable[str | Path]) -> dict[str, Any]:
    """What a set of files below `root` looks like now, without reading them: a hash of
    their relative paths, sizes and modification times (any change to a file, or a file
    added or removed, changes it)."""
    root = Path(root)
    entries = []
    for p in paths:
        p = Path(p)
        rel = os.path.relpath(p, root).replace(os.sep, "/")
        try:
            stat = p.stat()
        except OSError:  # a broken link or a file gone: its absence is the fact recorded
            entries.append(f"{rel}\x00missing")
            continue
        entries.append(f"{rel}\x00{stat.st_size}\x00{stat.st_mtime_ns}")
    entries.sort()
    text = "\n".join(entries).encode("utf-8", "surrogateescape")
    return {"folder": os.path.abspath(root), "files": len(entries), "sha256": sha256_bytes(text)}


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file, or {} when it is missing, damaged or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
