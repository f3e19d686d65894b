"""A prepared corpus: a data folder decoded once into a few large int16 shards and one
manifest. The one owner of this format (writing it, reading it, recognising it).

    audiocpc prepare DATA --out CORPUS      # scan, decode, resample, write; atomically
    audiocpc train --data CORPUS ...        # the same report, corpus and crops as --data DATA

Layout of CORPUS:

    manifest.jsonl     line 1: {"format": "audiocpc-prepared", "version", "sample_rate", ...}
                       then one line per file of the scan, in the scan's order: the scan's facts
                       (file, readable, reason, sample_rate, channels, format, duration, samples,
                       silent, duplicate_of), group and label as they were at prepare time, and
                       where its samples are: shard, offset, length (samples), scale, and
                       the mean and variance of those samples as read (data.standardize's
                       statistics; a row without them, written before they were stored, is
                       measured when first read)
    shards/shard-NNNNN.bin   little-endian int16 samples at the corpus's rate, files end to end
                       (--format webdataset: shards/shard-NNNNNN.tar, WebDataset tars of
                       KEY.npy + KEY.json pairs owned by data/webdataset.py; `offset` still
                       counts int16 samples from the start of the shard file, so both are
                       memory-mapped alike, and the header says "shard_format")
    data_report.json   the data report (the same as `check-data` prints)

Samples are stored as int16 scaled per file to its own peak (sample = int16 * scale, scale =
peak / 32767): a quiet recording keeps all 16 bits, and the error is at most half a step,
peak / 65534 (-96 dB below the file's peak), against 4 bytes per sample in the float32 cache.

A file is decoded whole when short, in blocks when long (`audio.stream_audio`: two passes,
one for the peak, one to write), in worker processes that each write their own shard, so
memory stays a few blocks per worker whatever the files' lengths. Everything is written
into a hidden sibling folder and renamed into place at the end: a killed prepare leaves no
half corpus (its partial folder is removed by the next prepare on this machine).

Reading opens one memory map per shard (data/corpus.py `ShardMaps`), so a corpus of a
million recordings trains with a handful of open files. A corpus at a URL other than
file:// (data/remote.py: s3://, gs://, memory://, ... through fsspec) is read by byte ranges
(`RemoteShardSlice`), or front to back in streaming mode (data/streaming.py). `open_data` is the one entry for
train, embed, check-data and run: a prepared corpus (recognised by its manifest) or a folder
(`scan_folder`). Labels, groups and usability are worked out again from the names and
lengths with the settings of the command that reads it, exactly as for the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from tqdm.auto import tqdm

from audiocpc.config import DataConfig
from audiocpc.data.audio import WaveStatistics, WaveView
from audiocpc.data.cache import AudioCache
from audiocpc.data.corpus import Join, ShardMaps
from audiocpc.data.labels import assign_labels, training_label_rule
from audiocpc.data.prepared_shards import (MANIFEST_NAME, STATISTICS_FIELDS, ShardTask,
                                           dequantize, is_prepared, stored_statistics,
                                           url_problems, write_shard)
from audiocpc.data.remote import Location, data_location
from audiocpc.data.webdataset import SHARD_PATTERN, TarTask, member_key, write_tar_shard
from audiocpc.data.audio import relative_name
from audiocpc.data.scan import (DataReport, FileReport, Found, assemble_report,
                                discover_recordings, display_name, scan_folder)
from audiocpc.errors import ConfigError, NoUsableAudioError
from audiocpc.fileio import atomic_write_text, disk_full_as

log = logging.getLogger("audiocpc")

REPORT_NAME = "data_report.json"
SHARD_FOLDER = "shards"
FORMAT = "audiocpc-prepared"
FORMAT_VERSION = 1
SHARD_BYTES = 1 << 30  # a worker's shard is closed once its source files reach this size
MIN_SHARD_BYTES = 64 << 20  # below this, splitting a corpus over workers is not worth a process
SHARD_FORMATS = ("int16", "webdataset")  # raw .bin shards, or tars (data/webdataset.py)
FACT_FIELDS = ("readable", "reason", "sample_rate", "channels", "format", "duration", "samples",
               "silent")


def open_data(root: str | Path, data: DataConfig, min_samples: Optional[int] = None,
              progress: bool = True, join: Optional[Join] = None) -> DataReport:
    """The data report of `root`, a prepared corpus or a folder of audio: the one way in for
    train, embed, check-data and run (`report.check(...)`, then `report.corpus(...)`)."""
    location = data_location(root)
    if isinstance(location, str):  # a URL other than file://: only a prepared corpus
        problems = url_problems(location)
        if problems:
            raise ConfigError(problems[0])
        return load_prepared(location, data, min_samples, join)
    if is_prepared(location):
        return load_prepared(location, data, min_samples, join)
    if data.auto_prepare and location.is_dir():
        corpus = auto_prepared(location, data, progress)
        if corpus is not None:
            try:
                return load_prepared(corpus, data, min_samples, join, source=location)
            except (ConfigError, NoUsableAudioError) as exc:  # a damaged copy: made again, once
                log.warning("%s: the prepared copy of %s is damaged (%s); preparing it again",
                            corpus, location, exc)
                shutil.rmtree(corpus, ignore_errors=True)
                corpus = auto_prepared(location, data, progress)
                assert corpus is not None
                return load_prepared(corpus, data, min_samples, join, source=location)
    return scan_folder(location, data, min_samples, progress=progress, join=join)


AUTO_FOLDER = "prepared"  # below the decoded-audio cache: <cache>/prepared/<folder>/<state>
AUTO_LOCK = ".lock"


def folder_state(root: str | Path, data: DataConfig) -> Optional[str]:
    """A digest of what a prepared copy of `root` depends on: every audio file's name and
    stat (size, modification and change times, inode: as the cache keys its entries), the
    sample rate and the corpus format; None when there is no audio file. Reads no audio."""
    root = Path(root)
    files: list[list[Any]] = []
    found = discover_recordings(root, data.extensions)
    if not found:
        return None
    for item in found:
        name = item.path.relative_to(root).as_posix()
        st = item.stat
        files.append([name, item.reason] if st is None else
                     [name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, item.original])
    ident = {"format": FORMAT, "version": FORMAT_VERSION, "sample_rate": data.sample_rate,
             "files": files}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def auto_home(root: str | Path, data: DataConfig) -> Path:
    """The cache folder that holds the prepared copy of the folder `root` (and its lock)."""
    source = os.path.abspath(root).encode("utf-8", "surrogateescape")
    return AudioCache(data.cache_dir).folder / AUTO_FOLDER / hashlib.sha256(source).hexdigest()[:16]


def auto_prepared(root: str | Path, data: DataConfig, progress: bool = True) -> Optional[Path]:
    """The prepared corpus of the folder `root` in the cache (data.auto_prepare): prepared
    the first time, reused while the folder's files are unchanged (`folder_state`), and
    replaced when they change; None for a folder without audio files (the scan says so).
    Processes asking at once (torchrun ranks) wait for one prepare instead of each writing
    their own."""
    source = os.path.abspath(root)
    home = auto_home(root, data)
    home.mkdir(parents=True, exist_ok=True)
    with _waiting_lock(home / AUTO_LOCK):
        state = folder_state(root, data)
        if state is None:
            return None
        target = home / state
        if is_prepared(target):
            return target
        log.info("data.auto_prepare: preparing %s once into %s (reused while its files are "
                 "unchanged)", source, target)
        prepare_corpus(root, target, data, force=True, progress=progress)
        for older in home.iterdir():  # copies of the folder as it was before (or half-made)
            if older.is_dir() and older != target:
                shutil.rmtree(older, ignore_errors=True)
    return target


@contextlib.contextmanager
def _waiting_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`, waited for (released by the kernel if we die)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("data.auto_prepare: waiting for another process that prepares this folder")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: go on unlocked
            pass
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading


class ScaledInt16(WaveView):
    """A file's int16 samples in a shard, read as float32 (x scale) when sliced; nothing is
    copied until then. Behaves like the 1-D float32 array of the decoded file."""

    def __init__(self, samples: np.ndarray, scale: float):
        self.base, self.scale = samples, float(scale)

    def __getitem__(self, index: Any) -> np.ndarray:  # any numpy index
        return dequantize(self.base[index], self.scale)


@dataclass(frozen=True)
class ShardSlice:
    """Where one file's samples are: `length` int16 samples from sample `offset` of `shard`."""

    shard: Path
    offset: int
    length: int
    scale: float
    statistics: Optional[WaveStatistics] = None  # stored at prepare time (older: None)

    def open(self, shards: ShardMaps) -> ScaledInt16:
        samples = shards.get(self.shard, lambda: _map_shard(self.shard))
        return ScaledInt16(samples[self.offset : self.offset + self.length], self.scale)


class RangeSamples:
    """A file's int16 samples in a remote shard: each slice is one byte-range request."""

    def __init__(self, location: Location, shard: str, offset: int, length: int):
        self.location, self.shard, self.offset = location, shard, offset
        self.shape = (length,)
        self.size = length

    def __getitem__(self, index: Any) -> np.ndarray:
        if not (isinstance(index, slice) and index.step in (None, 1)):
            return self[:][index]
        start, stop, _ = index.indices(self.shape[0])
        if stop <= start:
            return np.zeros(0, dtype="<i2")
        try:
            data = self.location.read_range(self.shard, 2 * (self.offset + start),
                                            2 * (self.offset + stop))
        except Exception as exc:  # fsspec back ends raise their own types
            raise NoUsableAudioError(
                f"{self.location.child(self.shard)}: cannot read samples {start}..{stop} "
                f"({exc}); check the connection, then run again (with --resume)") from None
        return np.frombuffer(data, dtype="<i2")


@dataclass(frozen=True)
class RemoteShardSlice:
    """A `ShardSlice` of a corpus at a URL (data/remote.py): read by byte ranges."""

    location: Location
    shard: str  # relative to the corpus, posix
    offset: int
    length: int
    scale: float
    statistics: Optional[WaveStatistics] = None  # stored at prepare time (older: None)

    def open(self, shards: ShardMaps) -> ScaledInt16:
        return ScaledInt16(RangeSamples(self.location, self.shard, self.offset, self.length),  # type: ignore[arg-type]
                           self.scale)


def _map_shard(shard: Path) -> np.ndarray:
    try:
        return np.memmap(shard, dtype="<i2", mode="r")
    except (OSError, ValueError) as exc:
        raise NoUsableAudioError(
            f"{shard}: a shard of this prepared corpus cannot be read ({exc}); prepare the "
            "corpus again (audiocpc prepare DATA --out CORPUS --force)") from None


def read_manifest(folder: "str | Path | Location") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, one row per file) of a prepared corpus; a damaged manifest is one clear error."""
    location = folder if isinstance(folder, Location) else Location(folder)
    path = location.child(MANIFEST_NAME)
    fix = "prepare the corpus again (audiocpc prepare DATA --out CORPUS --force)"
    try:
        lines = [json.loads(line) for line in location.read_text(MANIFEST_NAME).splitlines()
                 if line.strip()]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable manifest ({exc}); {fix}") from None
    if not lines or not isinstance(lines[0], dict) or lines[0].get("format") != FORMAT:
        raise ConfigError(f"{path}: not an audiocpc prepared-corpus manifest; {fix}")
    header = lines[0]
    if header.get("version") != FORMAT_VERSION:
        raise ConfigError(f"{path}: prepared-corpus format version {header.get('version')}, "
                          f"this audiocpc reads version {FORMAT_VERSION}; {fix}")
    if len(lines) - 1 != header.get("files"):
        raise ConfigError(f"{path}: {len(lines) - 1} file rows where the header says "
                          f"{header.get('files')} (cut short?); {fix}")
    return header, lines[1:]


def load_prepared(folder: str | Path, data: DataConfig, min_samples: Optional[int] = None,
                  join: Optional[Join] = None, source: Optional[str | Path] = None) -> DataReport:
    """The data report of a prepared corpus, as `scan_folder` gives it for the source folder
    (usable files, sequences and labels follow the settings given now). Reads no audio.
    `source`: the folder it was prepared from, named in the report instead of the corpus
    (data.auto_prepare: the user gave the folder, the corpus is the cache's)."""
    location = Location(folder)
    # a URL's files are named below it (for labels and messages) but read through `location`
    folder = location.local if location.local is not None else Path(str(location.url))
    named = Path(source) if source is not None else folder
    header, rows = read_manifest(location)
    rate = int(header["sample_rate"])
    if rate != data.sample_rate:
        raise ConfigError(
            f"data.sample_rate: {folder} was prepared at {rate} Hz but the settings ask for "
            f"{data.sample_rate} Hz; use --set data.sample_rate={rate}, or prepare the source "
            "again with this preset (audiocpc prepare DATA --out CORPUS --preset ...)")
    min_samples = data.crop_samples if min_samples is None else min_samples
    join_from_config = join is None
    join = Join.from_config(data) if join is None else join
    shard_sizes: dict[str, int] = {}
    files: list[FileReport] = []
    for row in rows:
        entry = None
        if row.get("shard"):
            shard = location.child(row["shard"])
            if row["shard"] not in shard_sizes:
                try:
                    shard_sizes[row["shard"]] = location.size(row["shard"]) // 2
                except OSError:
                    raise NoUsableAudioError(
                        f"{shard}: a shard of this prepared corpus is missing; prepare the corpus "
                        "again (audiocpc prepare DATA --out CORPUS --force)") from None
            if row["offset"] + row["length"] > shard_sizes[row["shard"]]:
                raise NoUsableAudioError(
                    f"{shard}: shorter than its manifest says (cut short?); prepare the corpus "
                    "again (audiocpc prepare DATA --out CORPUS --force)")
            try:
                statistics = stored_statistics(row)
            except ValueError as exc:
                raise ConfigError(f"{location.child(MANIFEST_NAME)}: the row of {row['file']} "
                                  f"has {exc}; prepare the corpus again (audiocpc prepare DATA "
                                  "--out CORPUS --force)") from None
            place = (int(row["offset"]), int(row["length"]), float(row["scale"]), statistics)
            entry = (ShardSlice(location.local / row["shard"], *place) if location.local is not None
                     else RemoteShardSlice(location, row["shard"], *place))
        facts: dict[str, Any] = {k: row[k] for k in FACT_FIELDS if k in row}
        files.append(FileReport(file=row["file"], **facts, duplicate_of=row.get("duplicate_of"),
                                path=named / row["file"], entry=entry))
    report = DataReport(str(named) if source is not None else str(location), rate,
                        min_samples / rate, files, join=join.mode,
                        min_samples=min_samples, extensions=tuple(data.extensions),
                        join_plan=join, joinable=join_from_config, standardize=data.standardize)
    report._mark_usable()
    return report


# ---------------------------------------------------------------- writing


def _plan(originals: list[Found], workers: int, shard_bytes: int) -> list[list[Found]]:
    """Consecutive runs of files, each at most `shard_bytes` of source files (a longer file
    is a run of its own), and small enough that every worker gets several."""
    sizes = [item.stat.st_size if item.stat else 0 for item in originals]
    target = max(1, min(shard_bytes, max(MIN_SHARD_BYTES, sum(sizes) // max(4 * workers, 1))))
    runs: list[list[Found]] = []
    current: list[Found] = []
    total = 0
    for item, size in zip(originals, sizes):
        if current and total + size > target:
            runs.append(current)
            current, total = [], 0
        current.append(item)
        total += size
    if current:
        runs.append(current)
    return runs


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-{socket.gethostname()}-"


def _sweep_partials(out: Path) -> None:
    """Remove the partial folders of prepares of `out` killed on this machine (their process
    is gone); another machine's, which may still be running, are left alone."""
    prefix = _partial_prefix(out)
    for candidate in out.parent.glob(prefix + "*"):
        try:
            pid = int(candidate.name[len(prefix):].split(".")[0])  # PID, or PID.old
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(candidate, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def prepare_corpus(data_root: str | Path, out: str | Path, data: DataConfig, *,
                   workers: Optional[int] = None, shard_bytes: int = SHARD_BYTES,
                   force: bool = False, progress: bool = True,
                   shard_format: str = "int16") -> DataReport:
    """Decode every recording below `data_root` once (at data.sample_rate, mono) into the
    prepared corpus `out`, and return its data report (read back from `out`). Nothing is
    written at `out` until the whole corpus is complete. `shard_format`: "int16" (raw .bin
    shards) or "webdataset" (tar shards of key.npy + key.json pairs, data/webdataset.py)."""
    if shard_format not in SHARD_FORMATS:
        raise ConfigError(f"--format: '{shard_format}'; give one of {', '.join(SHARD_FORMATS)}")
    root, out = Path(data_root), Path(out)
    if out.exists():
        if not is_prepared(out) and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"--out: {out} exists and is not a prepared corpus; give a new "
                              "folder")
        if is_prepared(out) and not force:
            raise ConfigError(f"--out: {out} already holds a prepared corpus; give --force to "
                              "replace it, or another --out")
    if root.resolve() == out.resolve():
        raise ConfigError(f"--out: {out} is the data folder itself; give a new folder")
    found = discover_recordings(root, data.extensions)
    originals = [item for item in found if item.stat is not None and item.original is None]
    workers = max(1, workers or min(8, os.cpu_count() or 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep_partials(out)
    partial = out.parent / f"{_partial_prefix(out)}{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / SHARD_FOLDER).mkdir(parents=True)
    try:
        with disk_full_as(partial, "free space, or give --out on a bigger disk"):
            members = _tar_members(root, found, data) if shard_format == "webdataset" else None
            inspected = _decode_all(originals, partial, data.sample_rate, workers, shard_bytes,
                                    progress, members)
            report = assemble_report(root, data, found, inspected)
            _write_manifest(partial, report, data, shard_format)
            report.write(partial / REPORT_NAME)
        _move_into_place(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return load_prepared(out, data)


def _tar_members(root: Path, found: list[Found], data: DataConfig) -> dict[int, dict[str, Any]]:
    """What each original's .json member says (keyed by id(found item)): its key (its row in
    the manifest), name, source path, label and group, worked out from the names as the
    manifest's rows are (labels and groups depend on a file's name only)."""
    rule = training_label_rule(data)
    join = Join.from_config(data)
    members: dict[int, dict[str, Any]] = {}
    for index, item in enumerate(found):
        if item.stat is None or item.original is not None:
            continue
        name = display_name(item.path, root)
        members[id(item)] = {
            "key": member_key(index), "file": name, "source": os.path.abspath(item.path),
            "label": rule.label(relative_name(item.path, root)) if rule is not None else None,
            "group": join.groups([relative_name(item.path, root)])[0] if data.join == "group" else None}
    return members


def _decode_all(originals: list[Found], partial: Path, sample_rate: int, workers: int,
                shard_bytes: int, progress: bool,
                members: Optional[dict[int, dict[str, Any]]] = None
                ) -> dict[int, tuple[dict[str, Any], Any]]:
    """Decode the originals into shards (.bin, or WebDataset tars when `members` gives their
    .json), in worker processes; the facts and place of each, keyed by id(found item)."""
    runs = _plan(originals, workers, shard_bytes)
    tasks: list[Any]
    if members is None:
        tasks = [ShardTask(n, [item.path for item in run], sample_rate,
                           partial / SHARD_FOLDER / f"shard-{n:05d}.bin") for n, run in enumerate(runs)]
        writer: Any = write_shard
    else:
        tasks = [TarTask(n, [item.path for item in run], sample_rate,
                         partial / SHARD_FOLDER / SHARD_PATTERN.format(n),
                         [members[id(item)] for item in run]) for n, run in enumerate(runs)]
        writer = write_tar_shard
    bar = tqdm(total=len(originals), desc="preparing audio", unit="file", disable=not progress,
               leave=False)
    inspected: dict[int, tuple[dict[str, Any], Any]] = {}

    def record(task: Any, run: list[Found], results: list[dict[str, Any]]) -> None:
        relative = task.shard.relative_to(partial)
        for item, result in zip(run, results):
            place = None
            if result.get("readable"):
                place = {"shard": relative.as_posix(), "offset": result.pop("offset"),
                         "length": result.pop("length"), "scale": result.pop("scale"),
                         **{k: result.pop(k) for k in STATISTICS_FIELDS}}
            inspected[id(item)] = (result, place)
        bar.update(len(run))

    try:
        if workers == 1 or len(tasks) == 1:
            for task, run in zip(tasks, runs):
                record(task, run, writer(task))
        else:  # spawn: a clean interpreter per worker (the parent may hold torch's threads)
            with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=get_context("spawn")) as pool:
                for task, run, results in zip(tasks, runs, pool.map(writer, tasks)):
                    record(task, run, results)
    finally:
        bar.close()
    return inspected


def _write_manifest(partial: Path, report: DataReport, data: DataConfig,
                    shard_format: str = "int16") -> None:
    names = [report._name(f) for f in report.files]
    rule = training_label_rule(data)
    labels = assign_labels(names, rule) if rule is not None else [None] * len(names)
    header = {"format": FORMAT, "version": FORMAT_VERSION, "sample_rate": report.sample_rate,
              "sample_format": "int16 x scale (per file)", "shard_format": shard_format,
              "source": os.path.abspath(report.root),
              "files": len(report.files), "shards": sorted(p.name for p in (partial / SHARD_FOLDER).iterdir())}
    lines = [json.dumps(header)]
    for f, label in zip(report.files, labels):
        row: dict[str, Any] = {"file": f.file}
        row.update({k: getattr(f, k) for k in FACT_FIELDS})
        row.update({"duplicate_of": f.duplicate_of, "group": f.group, "label": label})
        row.update(f.entry or {})
        if shard_format == "webdataset" and f.entry and f.original:
            row["key"] = member_key(len(lines) - 1)  # its pair of members in the tar
        lines.append(json.dumps(row))
    atomic_write_text(partial / MANIFEST_NAME, "\n".join(lines) + "\n")


def _move_into_place(partial: Path, out: Path) -> None:
    """Rename the finished corpus to `out` (replacing an old prepared corpus there)."""
    if not out.exists():
        os.replace(partial, out)
        return
    old = out.parent / f"{_partial_prefix(out)}{os.getpid()}.old"
    os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)



def manifest_files(folder: str | Path) -> list[Path]:
    """The files a prepared corpus is made of (its manifest and shards), for fingerprints
    of what an embedding was made from."""
    folder = Path(folder)
    return [folder / MANIFEST_NAME, *sorted((folder / SHARD_FOLDER).glob("shard-*"))]


def prepared_lengths(folder: str | Path) -> tuple[list[str], list[int]]:
    """(names, samples at the corpus's rate) of the readable recordings, from the manifest."""
    rows = read_manifest(folder)[1]
    kept = [r for r in rows if r.get("readable") and r.get("duplicate_of") is None]
    return [r["file"] for r in kept], [int(r["samples"]) for r in kept]
