"""Data scan: what a data folder holds, and what of it a configuration can use. The one
way in to a data folder, for train, embed, check-data and run alike:

    report = scan_folder(root, data)       # one discovery, one decode pass, one progress bar
    report.check(data.on_bad_file)         # the one place that says "nothing usable"
    corpus = report.corpus(labels=rule)    # the usable files, labelled once, no audio read

`scan_folder` inspects every audio file below a folder: readable or not (with a one-line
reason), its own sample rate, channels and duration, whether it is silent, whether it is a
link to a file already listed, and whether it is long enough for one training crop (on its
own, or in its joined sequence with data.join). Decoding goes through the audio cache, so
the scan also prepares training; per-file results are cached by path, size and modification
time, so a second scan of an unchanged folder reads no audio. `audiocpc check-data` prints
the report, `train` writes it to `data_report.json` in the run folder before it starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from audiocpc.config import DataConfig
from audiocpc.data.audio import (SILENCE_PEAK, AudioFacts, audio_facts, check_readable, discover_audio_files,
                                 read_failure_reason, readable_stat, relative_name)
from audiocpc.data.cache import AudioCache, expected_length, open_entry
from audiocpc.data.corpus import NO_JOIN, OPEN_FILES, AudioCorpus, Join
from audiocpc.data.labels import LabelRule, assign_labels
from audiocpc.errors import (AudiocpcError, AudioReadError, ConfigError, DiskFullError,
                             NoUsableAudioError)
from audiocpc.fileio import atomic_write_json, disk_full_as

log = logging.getLogger("audiocpc")

REPORT_NAME = "data_report.json"
SHOWN_NAMES = 5  # how many file names a message lists
SCAN_CACHE_VERSION = 1
PRIVATE_FIELDS = ("path", "entry")  # a FileReport's handles for the corpus, not in the JSON


@dataclass
class FileReport:
    """One file of a scan. `samples` is the length at the model's rate (data.sample_rate)."""

    file: str  # path below the data folder (undecodable bytes shown as \\xNN)
    readable: bool
    reason: Optional[str] = None
    sample_rate: Optional[int] = None
    channels: Optional[int] = None
    format: Optional[str] = None
    duration: float = 0.0  # seconds
    samples: int = 0
    silent: bool = False
    usable: bool = False
    duplicate_of: Optional[str] = None  # a link (or hard link) to a file listed before it
    group: Optional[str] = None  # its group, with data.join=group
    sequence: Optional[int] = None  # the joined sequence it is part of, with data.join
    path: Optional[Path] = field(default=None, repr=False, compare=False)
    # its decoded copy: a cache entry (Path), or a slice of a prepared corpus's shard
    entry: Optional[Any] = field(default=None, repr=False, compare=False)

    @property
    def original(self) -> bool:
        return self.duplicate_of is None


@dataclass
class DataReport:
    root: str
    sample_rate: int
    crop_seconds: float
    files: list[FileReport]
    join: str = "none"
    min_samples: int = 0
    extensions: tuple[str, ...] = ()
    join_plan: Join = field(default=NO_JOIN, repr=False, compare=False)
    joinable: bool = True  # whether data.join applies here (training) or not (embedding)
    standardize: bool = False  # the corpus gives each file scaled as a whole (data.standardize)

    @property
    def distinct(self) -> list[FileReport]:
        """Every recording once (links to a file already listed are left out)."""
        return [f for f in self.files if f.original]

    @property
    def duplicates(self) -> list[FileReport]:
        return [f for f in self.files if not f.original]

    @property
    def usable(self) -> list[FileReport]:
        return [f for f in self.files if f.usable]

    @property
    def unreadable(self) -> list[FileReport]:
        return [f for f in self.distinct if not f.readable]

    @property
    def too_short(self) -> list[FileReport]:
        return [f for f in self.distinct if f.readable and not f.usable]

    @property
    def silent(self) -> list[FileReport]:
        return [f for f in self.distinct if f.readable and f.silent]

    def sequence_seconds(self) -> list[float]:
        """The length of every usable joined sequence, in seconds (data.join)."""
        totals: dict[int, list[FileReport]] = {}
        for f in self.usable:
            if f.sequence is not None:
                totals.setdefault(f.sequence, []).append(f)
        return [self.join_plan.length([f.samples for f in members]) / self.sample_rate
                for members in totals.values()]

    def summary(self) -> dict[str, Any]:
        readable = [f for f in self.distinct if f.readable]
        rates: dict[str, int] = {}
        channels: dict[str, int] = {}
        for f in readable:
            rates[str(f.sample_rate)] = rates.get(str(f.sample_rate), 0) + 1
            channels[str(f.channels)] = channels.get(str(f.channels), 0) + 1
        shortest = min(readable, key=lambda f: f.duration, default=None)
        longest = max(readable, key=lambda f: f.duration, default=None)

        def extreme(f: Optional[FileReport]) -> Optional[dict[str, Any]]:
            return {"file": f.file, "seconds": round(f.duration, 6)} if f else None

        summary = {
            "files": len(self.distinct),
            "readable": len(readable),
            "unreadable": len(self.unreadable),
            "usable": len(self.usable),
            "too_short": len(self.too_short),
            "silent": len(self.silent),
            "duplicates": len(self.duplicates),
            "usable_hours": sum(f.duration for f in self.usable) / 3600,
            "readable_hours": sum(f.duration for f in readable) / 3600,
            "sample_rates": dict(sorted(rates.items(), key=lambda kv: int(kv[0]))),
            "channels": dict(sorted(channels.items(), key=lambda kv: int(kv[0]))),
            "shortest": extreme(shortest),
            "longest": extreme(longest),
        }
        if self.join != "none":
            seconds = sorted(self.sequence_seconds())
            summary["sequences"] = {
                "join": self.join, "count": len(seconds),
                "gap_seconds": self.join_plan.gap_samples / self.sample_rate,
                "shortest_seconds": round(seconds[0], 6) if seconds else None,
                "median_seconds": round(float(np.median(seconds)), 6) if seconds else None,
                "longest_seconds": round(seconds[-1], 6) if seconds else None,
            }
        return summary

    def to_dict(self) -> dict[str, Any]:
        files = [{k: v for k, v in asdict(f).items() if k not in PRIVATE_FIELDS}
                 for f in self.files]
        return {"root": self.root, "sample_rate": self.sample_rate,
                "crop_seconds": self.crop_seconds, "join": self.join,
                "summary": self.summary(), "files": files}

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON (atomically: a crash never leaves half a report)."""
        return _write_json(Path(path), self.to_dict())

    def summary_lines(self) -> list[str]:
        """A few lines for the screen: the counts, then the problem files by kind."""
        s = self.summary()
        rates = ", ".join(s["sample_rates"]) or "none"
        dups = (f" (+{s['duplicates']} duplicate link(s) of these, counted once)"
                if s["duplicates"] else "")
        short = (f"shorter than the {self.crop_seconds:.3f} s crop" if self.join == "none" else
                 f"in sequences shorter than the {self.crop_seconds:.3f} s crop")
        head = (f"{s['files']} audio file(s) below {self.root}{dups}: {s['usable']} usable "
                f"({s['usable_hours']:.2f} h), {s['unreadable']} unreadable, {s['too_short']} "
                f"{short}, {s['silent']} silent; sample rates {rates} Hz")
        if s["shortest"]:
            head += (f"; shortest {s['shortest']['seconds']:.3f} s ({s['shortest']['file']}), "
                     f"longest {s['longest']['seconds']:.3f} s ({s['longest']['file']})")
        lines = [head]
        if "sequences" in s and s["sequences"]["count"]:
            q = s["sequences"]
            lines.append(f"joined (data.join={self.join}): {s['usable']} file(s) into "
                         f"{q['count']} sequence(s) of {q['shortest_seconds']:.3f} s to "
                         f"{q['longest_seconds']:.3f} s (median {q['median_seconds']:.3f} s)")
        if self.unreadable:
            lines.append(f"unreadable ({len(self.unreadable)}): "
                         + _listing([f"{f.file}: {f.reason}" for f in self.unreadable], "; "))
        if self.too_short:
            lines.append(f"too short ({len(self.too_short)}): "
                         + _listing([f"{f.file} ({f.duration:.3f} s)" for f in self.too_short]))
        if self.silent:
            lines.append(f"silent, still used ({len(self.silent)}): "
                         + _listing([f.file for f in self.silent]))
        return lines

    def check(self, on_bad_file: str = "skip",
              advice: Optional[Callable[["DataReport"], str]] = None) -> None:
        """The one place that decides whether this folder can be trained on: raise a clear
        error if nothing is usable, or if bad files exist and the policy is `error`.
        `advice(report)` replaces the generic fix when every file is shorter than a crop
        (the caller knows the model: a value that works)."""
        if self.unreadable and on_bad_file == "error":
            raise NoUsableAudioError(
                f"{len(self.unreadable)} unreadable audio file(s) below {self.root}: "
                + _listing([f"{f.file}: {f.reason}" for f in self.unreadable], "; ")
                + " (set data.on_bad_file=skip to use the others)")
        if not self.usable:
            raise self.nothing_usable(self.min_samples, self.join_plan, advice)

    def nothing_usable(self, min_samples: int, join: Join,
                       advice: Optional[Callable[["DataReport"], str]] = None) -> AudiocpcError:
        """The one message for "no file can be used" with these crops and this join."""
        readable = [f for f in self.distinct if f.readable]
        if not self.files:
            formats = ", ".join(self.extensions) or "the configured extensions"
            return NoUsableAudioError(f"no audio files with extensions {formats} found below "
                                      f"{self.root} (set data.extensions to the formats you have)")
        if not readable:
            return NoUsableAudioError(
                f"none of the {len(self.distinct)} audio file(s) below {self.root} can be read: "
                + _listing([f"{f.file}: {f.reason}" for f in self.unreadable], "; "))
        crop = min_samples / self.sample_rate
        if join.mode == "none":
            longest = max(readable, key=lambda f: f.duration)
            # embedding never joins (joining is for training crops): no join hint there
            hint = (", or join short clips into sequences (data.join=group or all)"
                    if self.joinable else "")
            return ConfigError(
                f"data.full_duration: a crop of {crop:.3f} s is longer than every file "
                f"below {self.root}; the longest, {longest.file}, has {longest.duration:.3f} s. "
                + (advice(self) if advice else "Lower data.full_duration (keeping "
                   f"full_duration*sample_rate/(T+k) whole), add longer files{hint}."))
        if join.mode == "group" and not any(join.groups([self._name(f) for f in readable])):
            return ConfigError(
                f"data.join_by: no file below {self.root} has a group ({join.rule.mode if join.rule else ''} "
                "groups), so no clips are joined. Set data.join_pattern (a regex with a named "
                "group 'group', e.g. '_(?P<group>[a-z]+)_' for 7_jackson_32.wav), "
                "data.join_by=folder or data.join_csv, or use data.join=all.")
        plans = self._sequences(join)
        members = max(plans, key=lambda seq: join.length([self.files[i].samples for i in seq]))
        seconds = join.length([self.files[i].samples for i in members]) / self.sample_rate
        return ConfigError(
            f"data.full_duration: a crop of {crop:.3f} s is longer than every joined sequence "
            f"below {self.root} (data.join={join.mode}); the longest, {len(members)} file(s) "
            f"from {self.files[members[0]].file}, has {seconds:.3f} s. Lower "
            "data.full_duration, join larger groups (data.join=all) or add files.")

    def _sequences(self, join: Join) -> list[list[int]]:
        """The sequences (indices into self.files) the readable recordings form with `join`."""
        candidates = [i for i, f in enumerate(self.files) if f.readable and f.original]
        names = [self._name(self.files[i]) for i in candidates]
        plan = join.sequences(names, [self.files[i].samples for i in candidates])
        return [[candidates[j] for j in seq] for seq in plan]

    def _usable_sequences(self, min_samples: int, join: Join) -> list[list[int]]:
        return [seq for seq in self._sequences(join)
                if join.length([self.files[i].samples for i in seq]) >= min_samples]

    def _name(self, f: FileReport) -> str:
        """The name labels and groups are read from (the path below the data folder)."""
        return relative_name(f.path, self.root) if f.path is not None else f.file

    def _mark_usable(self) -> None:
        groups = self.join_plan.mode == "group"
        candidates = [f for f in self.files if f.readable and f.original]
        if groups:
            for f, group in zip(candidates, self.join_plan.groups([self._name(f) for f in candidates])):
                f.group = group
        for f in self.files:
            f.usable, f.sequence = False, None
        for number, seq in enumerate(self._usable_sequences(self.min_samples, self.join_plan)):
            for i in seq:
                self.files[i].usable = True
                if self.join_plan.mode != "none":
                    self.files[i].sequence = number

    def corpus(self, min_samples: Optional[int] = None, labels: Optional[LabelRule] = None,
               join: Optional[Join] = None, open_files: int = OPEN_FILES,
               crop_source: str = "data.full_duration", label_source: str = "") -> AudioCorpus:
        """The training (or embedding) corpus of this scan: the files that can be used with
        crops of `min_samples` (default: the scan's) joined by `join` (default: the scan's),
        each labelled by `labels` (once, here). Reads no audio; says why nothing is usable
        with the same message as `check`. `crop_source` names what sets `min_samples` in the
        warning about short files (embedding crops in window mode are T windows, shorter
        than a training crop); `label_source` names the labels in the classes it logs."""
        min_samples = self.min_samples if min_samples is None else min_samples
        join = self.join_plan if join is None else join
        sequences = self._usable_sequences(min_samples, join)
        if not sequences:
            raise self.nothing_usable(min_samples, join)
        used = sorted(i for seq in sequences for i in seq)
        position = {report_index: n for n, report_index in enumerate(used)}
        files = [self.files[i] for i in used]
        root = Path(self.root)
        paths: list[Path] = []
        entries: list[Any] = []
        for f in files:
            assert f.path is not None and f.entry is not None
            paths.append(f.path)
            entries.append(f.entry)
        short = [_scanned_path(self.files[i]) for i, f in enumerate(self.files)
                 if f.readable and f.original and i not in position]
        bad = [(_scanned_path(f), f.reason or "") for f in self.unreadable]
        corpus = AudioCorpus(root, self.sample_rate, paths, entries,
                             np.asarray([f.samples for f in files], dtype=np.int64),
                             skipped_short=short, bad_files=bad,
                             sequences=[[position[i] for i in seq] for seq in sequences],
                             gap_samples=join.gap_samples, join=join.mode, open_files=open_files,
                             standardize=self.standardize)
        self._warn_skipped(corpus, min_samples, join, crop_source)
        if labels is not None:
            corpus.labels = assign_labels([relative_name(p, root) for p in paths], labels, label_source)
            corpus.classes = sorted(set(corpus.labels))
            index = {name: i for i, name in enumerate(corpus.classes)}
            corpus.label_ids = np.array([index[name] for name in corpus.labels], dtype=np.int64)
        return corpus

    def _warn_skipped(self, corpus: AudioCorpus, min_samples: int, join: Join,
                      crop_source: str = "data.full_duration") -> None:
        root = Path(self.root)
        if corpus.bad_files:
            log.warning("skipped %d unreadable file(s): %s", len(corpus.bad_files),
                        _listing([f"{relative_name(p, root)}: {r}" for p, r in corpus.bad_files], "; "))
        if corpus.skipped_short:
            where = "" if join.mode == "none" else f" (in their joined sequence, data.join={join.mode})"
            considered = len(corpus.skipped_short) + len(corpus)
            log.warning("skipped %d file(s) shorter than %.3f s (%s)%s, %d of %d: %s",
                        len(corpus.skipped_short), min_samples / self.sample_rate, crop_source,
                        where, len(corpus.skipped_short), considered,
                        _listing([relative_name(p, root) for p in corpus.skipped_short]))
        if join.mode == "group":
            alone = [f for f in self.files if f.usable and f.group == ""]
            if alone:
                log.warning("%d file(s) have no group (data.join_by=%s) and are not joined: %s",
                            len(alone), join.rule.mode if join.rule else "", _listing([f.file for f in alone]))
        if self.duplicates:
            log.info("%d duplicate link(s) to files already listed, each used once",
                     len(self.duplicates))


def _listing(items: list[str], sep: str = ", ") -> str:
    shown = sep.join(items[:SHOWN_NAMES])
    return shown + (f"{sep}... (+{len(items) - SHOWN_NAMES} more)" if len(items) > SHOWN_NAMES else "")


def _scanned_path(report: FileReport) -> Path:
    """The file of a report made by a scan (only a report read back from JSON has none)."""
    assert report.path is not None
    return report.path


def display_name(path: Path, root: Path) -> str:
    """The name below the data folder as valid text: bytes that are not UTF-8 become \\xNN."""
    name = relative_name(path, root)
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _write_json(path: Path, payload: Any) -> Path:
    with disk_full_as(path, "free space (or write the report elsewhere)"):
        return atomic_write_json(path, payload, indent=1)


def _facts(wave: np.ndarray, facts: AudioFacts) -> dict[str, Any]:
    samples = int(wave.shape[0])
    peak = float(np.max(np.abs(wave))) if samples else 0.0
    return {"readable": True, "sample_rate": facts.sample_rate, "channels": facts.channels,
            "format": facts.format, "duration": facts.duration, "samples": samples,
            "silent": peak < SILENCE_PEAK}


def _inspect(path: Path, entry: Path, cache: AudioCache, sample_rate: int) -> tuple[dict[str, Any], bool]:
    """(facts about one file, whether they may be cached). The file is decoded at most once,
    into the cache. Problems that come from the file system (gone, no permission) are not
    cached: they can change without the file."""
    try:
        if entry.exists():  # decoded before (by another scan of this file): no decoding
            facts = audio_facts(path)
            cached = open_entry(entry, expected_length(facts, sample_rate), path)
            if cached is not None:  # else damaged (now removed): decoded again below
                return _facts(cached, facts), True
        wave, facts = cache.decode(path, sample_rate, entry)
        return _facts(wave, facts), True
    except AudioReadError as exc:
        try:
            check_readable(path)
        except AudioReadError:
            return {"readable": False, "reason": exc.reason}, False
        return {"readable": False, "reason": exc.reason}, True


def _scan_cache_file(cache: AudioCache, root: Path, sample_rate: int) -> Path:
    ident = f"{os.fsdecode(root.resolve())}|{sample_rate}|{SCAN_CACHE_VERSION}"
    key = hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()
    return cache.folder / "scan" / f"{key}.json"


@dataclass
class Found:
    """One discovered path after its one stat: who it is, or why it cannot be used."""

    path: Path
    stat: Optional[os.stat_result] = None
    reason: Optional[str] = None
    original: Optional[int] = None  # index of the path it duplicates

    @property
    def identity(self) -> Optional[tuple[int, int]]:
        return None if self.stat is None else (self.stat.st_dev, self.stat.st_ino)


def discover_recordings(root: str | Path, extensions: Sequence[str]) -> list[Found]:
    """Every audio file below `root`, each after its one stat: readable or why not, and for a
    link (or hard link) to a file found before it, the index of that original."""
    found: list[Found] = []
    first_of: dict[tuple[int, int], int] = {}
    for path in discover_audio_files(Path(root), extensions):  # the first name is the original
        try:
            item = Found(path, stat=readable_stat(path))
        except AudioReadError as exc:
            item = Found(path, reason=exc.reason)
        if item.identity is not None:
            item.original = first_of.setdefault(item.identity, len(found))
            if item.original == len(found):
                item.original = None
        found.append(item)
    return found


def scan_folder(root: str | Path, data: DataConfig, min_samples: Optional[int] = None,
                progress: bool = True, join: Optional[Join] = None) -> DataReport:
    """Discover and inspect every audio file below `root` once: each distinct recording is
    decoded once into the cache (links and hard links to one file are recognised and
    decoded and counted once), its facts cached by path, size and modification time. A file
    is usable when its sequence (the file itself, or its joined group: `join`, default from
    data.join) holds a crop of `min_samples` (default data.crop_samples). Never raises for
    a bad file; a missing folder is a ConfigError."""
    root = Path(root)
    found = discover_recordings(root, data.extensions)
    cache = AudioCache(data.cache_dir)
    sample_rate = data.sample_rate
    cache_file = _scan_cache_file(cache, root, sample_rate)
    try:
        known: dict[str, Any] = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}

    def one(item: Found) -> tuple[dict[str, Any], Optional[Path], bool]:
        assert item.stat is not None
        try:
            entry = cache.entry(item.path, sample_rate, item.stat)
        except (OSError, RuntimeError) as exc:  # gone since its stat; RuntimeError: link loop
            return {"readable": False, "reason": read_failure_reason(exc)}, None, False
        hit = known.get(os.fsdecode(item.path.absolute()))
        if isinstance(hit, dict) and hit.get("stamp") == _stamp(item.stat):
            return hit["facts"], entry, True
        facts, cacheable = _inspect(item.path, entry, cache, sample_rate)
        return facts, entry, cacheable

    originals = [item for item in found if item.stat is not None and item.original is None]
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = dict(zip((id(item) for item in originals),
                           tqdm(pool.map(one, originals), total=len(originals),
                                desc="scanning audio", unit="file", disable=not progress,
                                leave=False)))

    remembered: dict[str, Any] = {}
    for item in originals:
        facts, entry, cacheable = results[id(item)]
        if cacheable:
            assert item.stat is not None
            remembered[os.fsdecode(item.path.absolute())] = {"stamp": _stamp(item.stat),
                                                             "facts": facts}
    if remembered != known:
        try:
            _write_json(cache_file, remembered)
        except (OSError, DiskFullError) as exc:  # a read-only or full cache only costs speed
            log.debug("could not write the scan cache %s: %s", cache_file, exc)
    inspected = {key: (facts, entry) for key, (facts, entry, _) in results.items()}
    return assemble_report(root, data, found, inspected, min_samples, join)


def assemble_report(root: str | Path, data: DataConfig, found: list[Found],
                    inspected: dict[int, tuple[dict[str, Any], Any]],
                    min_samples: Optional[int] = None, join: Optional[Join] = None) -> DataReport:
    """The report of a scan: `found` from `discover_recordings`, `inspected` the facts and
    decoded copy (`entry`) of each original, keyed by id(found item). Shared by the folder
    scan and `audiocpc prepare`, so both say the same about the same folder."""
    root = Path(root)
    min_samples = data.crop_samples if min_samples is None else min_samples
    join_from_config = join is None
    join = Join.from_config(data) if join is None else join
    files: list[FileReport] = []
    for item in found:
        name = display_name(item.path, root)
        if item.stat is None:
            files.append(FileReport(file=name, readable=False, reason=item.reason, path=item.path))
            continue
        if item.original is not None:
            source = files[item.original]
            facts = {k: v for k, v in asdict(source).items()
                     if k not in ("file", "usable", "duplicate_of", "group", "sequence", *PRIVATE_FIELDS)}
            files.append(FileReport(file=name, **facts, duplicate_of=source.file, path=item.path,
                                    entry=source.entry))
            continue
        facts, entry = inspected[id(item)]
        files.append(FileReport(file=name, **facts, path=item.path,
                                entry=entry if facts.get("readable") else None))
    report = DataReport(str(root), data.sample_rate,
                        min_samples / data.sample_rate, files, join=join.mode,
                        min_samples=min_samples, extensions=tuple(data.extensions),
                        join_plan=join, joinable=join_from_config,
                        standardize=data.standardize)
    report._mark_usable()
    return report


def _stamp(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns]
