"""The WebDataset shard layout of a prepared corpus (`audiocpc prepare --format webdataset`):
the one owner of the tar files. data/prepared.py owns the corpus (manifest, reading); this
module writes a shard and says where a sample's samples lie in it.

A shard `shards/shard-NNNNNN.tar` is a plain POSIX (ustar) tar whose members come in pairs,
one pair per recording, in the order of the scan (WebDataset's convention: files of one
sample share a key, the part after the first dot is the extension):

    00000012.npy    int16 [samples] at the corpus's rate (numpy .npy, version 1.0)
    00000012.json   {"key", "file", "source", "label", "group", "sample_rate", "length",
                     "scale", "offset", "mean", "variance"}: float samples = int16 x scale,
                     whose mean and variance (data.standardize's statistics) are given

so `tar tf` lists them, `tarfile` reads them and WebDataset's loaders decode them (`.npy`
and `.json` are among its default decoders). The manifest keeps, per file, `offset`: where
its int16 samples start in the tar, counted in int16 samples from the start of the file (byte
2 x offset; tar data starts on a 512-byte block and an .npy header fills a multiple of 64
bytes, so the offset is always even). That index is what makes random access possible: a
crop is one byte range, and a local tar is memory-mapped as int16 exactly like a .bin shard.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from audiocpc.data.audio import SILENCE_PEAK
from audiocpc.data.prepared_shards import decode_for_shard, statistics_fields, write_pieces
from audiocpc.errors import AudioReadError

SHARD_PATTERN = "shard-{:06d}.tar"
KEY_DIGITS = 8
BLOCK = tarfile.BLOCKSIZE  # 512


def member_key(index: int) -> str:
    """The WebDataset key of the `index`-th file of the scan (no dots: a dot starts the
    extension)."""
    return f"{index:0{KEY_DIGITS}d}"


@dataclass(frozen=True)
class TarTask:
    """One worker's share: consecutive original files and what each one's .json says."""

    number: int
    paths: list[Path]
    sample_rate: int
    shard: Path
    members: list[dict[str, Any]]  # per path: key, file, source, label, group


def _npy_header(length: int) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<i2", "fortran_order": False, "shape": (length,)})
    return buffer.getvalue()


def _member_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0  # mtime 0: the same input, the same bytes
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pad(out: IO[bytes], size: int) -> None:
    out.write(b"\0" * (-size % BLOCK))


def write_tar_shard(task: TarTask) -> list[dict[str, Any]]:
    """Decode the task's files into its tar: per file its facts and where its samples lie (or
    why it cannot be read), as `prepared_shards.write_shard` gives them for a .bin shard.
    Runs in a worker process; memory is one file (or block) at a time."""
    results: list[dict[str, Any]] = []
    with open(task.shard, "wb") as out:
        for path, member in zip(task.paths, task.members):
            start = out.tell()
            try:
                facts, scale, pieces = decode_for_shard(path, task.sample_rate)
                length = int(facts["samples"])
                npy = _npy_header(length)
                out.write(_member_header(f"{member['key']}.npy", len(npy) + 2 * length))
                out.write(npy)
                offset = out.tell()
                assert offset % 2 == 0, "tar data and .npy headers keep int16 samples aligned"
                written, statistics = write_pieces(out, pieces(), scale)
                if written != length:  # changed between the two passes
                    raise AudioReadError(path, "changed while it was being prepared; run again")
            except (AudioReadError, MemoryError) as exc:
                out.seek(start)  # drop what was written of this file
                out.truncate()
                reason = exc.reason if isinstance(exc, AudioReadError) else "not enough memory"
                results.append({"readable": False, "reason": reason})
                continue
            _pad(out, len(npy) + 2 * length)
            facts["silent"] = facts.pop("peak") < SILENCE_PEAK
            place = {"offset": offset // 2, "length": length, "scale": scale,
                     **statistics_fields(statistics)}
            about = json.dumps(member | {"sample_rate": task.sample_rate} | place).encode()
            out.write(_member_header(f"{member['key']}.json", len(about)))
            out.write(about)
            _pad(out, len(about))
            results.append(facts | place)
        if out.tell() == 0:
            empty = True
        else:
            out.write(b"\0" * (2 * BLOCK))  # the end-of-archive marker
            empty = False
    if empty:
        task.shard.unlink()
    return results


def read_samples(handle: IO[bytes], offset: int, length: int) -> np.ndarray:
    """`length` int16 samples from sample `offset` (byte 2 x offset) of an open shard, .tar or
    .bin; reads forward only when the handle is already there (a streamed shard)."""
    if handle.tell() != 2 * offset:
        handle.seek(2 * offset)
    data = handle.read(2 * length)
    if len(data) != 2 * length:
        raise OSError(f"{len(data) // 2} of {length} samples at sample {offset} (cut short?)")
    return np.frombuffer(data, dtype="<i2")
