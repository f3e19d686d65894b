"""Giving back the pages of read-only memory maps, so that a process's RSS stays bounded
however much of a memory-mapped corpus it reads.

Every page of a map that a read touches stays in the process's page tables, and so in its
RSS (the file-backed part, RssFile in /proc/self/status), until the map is closed: random
crops from one 10-hour shard would grow RSS up to the shard's size. `PageBudget` counts the
bytes read since the last release; when they pass the budget the owner of the maps calls
`release_pages` on each, which tells the kernel (madvise MADV_DONTNEED) that the process no
longer needs those pages. On a shared read-only file mapping that only drops the process's
page table entries: the page cache keeps the data, the map and every numpy view of it stay
valid, and the next access re-reads the same bytes (a minor fault). Values never change.
Where madvise or MADV_DONTNEED is missing (not Linux), nothing is released.
"""

from __future__ import annotations

import mmap
from typing import Any, Optional

RELEASE_BYTES = 256 << 20  # bytes read between two releases of a process's map pages
# A read adds more than its own bytes to RSS: Linux maps the cached pages around a faulting
# page too (fault-around, whole large page-cache folios). An 8 KB crop added ~195 KiB on
# average (Linux 6.18, ext4), so each read is charged this much extra to keep RSS under the
# budget.
MAPPED_AROUND_BYTES = 256 << 10


def mapping_of(array: Any) -> Optional[mmap.mmap]:
    """The mmap object under `array` (a np.memmap, np.load(mmap_mode=...), np.frombuffer
    of an mmap, or any view of those), or None for memory the process owns."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return None


def release_pages(array: Any) -> bool:
    """Drop the process's pages of the read-only map under `array`; whether it did. A
    writeable map is left alone: dropping a copy-on-write page would lose what was written."""
    mapping = mapping_of(array)
    dontneed = getattr(mmap, "MADV_DONTNEED", None)
    if (mapping is None or mapping.closed or dontneed is None or not hasattr(mapping, "madvise")
            or getattr(array, "flags", None) is None or array.flags.writeable):
        return False
    try:
        mapping.madvise(dontneed)
    except (OSError, ValueError):  # a kernel that refuses: keep the pages, values are intact
        return False
    return True


class PageBudget:
    """Bytes read from memory maps since the last release, against a `limit`."""

    def __init__(self, limit: int = RELEASE_BYTES):
        self.limit = max(int(limit), 1)
        self.spent = 0

    def charge(self, nbytes: int) -> bool:
        """Count one read of `nbytes`; True (and start counting again) when the budget is
        spent and the maps' pages should be released."""
        self.spent += int(nbytes) + MAPPED_AROUND_BYTES
        if self.spent < self.limit:
            return False
        self.spent = 0
        return True


def release_all(arrays: Any) -> int:
    """`release_pages` on each array; how many maps were released."""
    return sum(release_pages(a) for a in arrays)

