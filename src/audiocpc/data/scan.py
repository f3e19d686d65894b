"""Data scan: what a data folder holds, and what of it a configuration can use.

`scan_folder` inspects every audio file below a folder: readable or not (with a one-line
reason), its own sample rate, channels and duration, whether it is silent, and whether it is
long enough for one training crop. Decoding goes through the audio cache, so the scan also
prepares training; per-file results are cached by path, size and modification time, so a
second scan of an unchanged folder reads no audio. `audiocpc check-data` prints the report,
`train` writes it to `data_report.json` in the run folder before it starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from tqdm.auto import tqdm

from audiocpc.data.audio import audio_info, check_readable, discover_audio_files, relative_name
from audiocpc.data.cache import AudioCache
from audiocpc.config import DataConfig
from audiocpc.errors import AudioReadError, ConfigError, NoUsableAudioError

log = logging.getLogger("audiocpc")

REPORT_NAME = "data_report.json"
SILENCE_PEAK = 1e-5  # -100 dBFS: nothing audible in the whole file
SHOWN_NAMES = 5  # how many file names a message lists
SCAN_CACHE_VERSION = 1


@dataclass
class FileReport:
    """One file of a scan. `samples` is the length at the model's rate (data.desired_sr)."""

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


@dataclass
class DataReport:
    root: str
    desired_sr: int
    crop_seconds: float
    files: list[FileReport]

    @property
    def usable(self) -> list[FileReport]:
        return [f for f in self.files if f.usable]

    @property
    def unreadable(self) -> list[FileReport]:
        return [f for f in self.files if not f.readable]

    @property
    def too_short(self) -> list[FileReport]:
        return [f for f in self.files if f.readable and not f.usable]

    @property
    def silent(self) -> list[FileReport]:
        return [f for f in self.files if f.readable and f.silent]

    def summary(self) -> dict[str, Any]:
        readable = [f for f in self.files if f.readable]
        rates: dict[str, int] = {}
        channels: dict[str, int] = {}
        for f in readable:
            rates[str(f.sample_rate)] = rates.get(str(f.sample_rate), 0) + 1
            channels[str(f.channels)] = channels.get(str(f.channels), 0) + 1
        shortest = min(readable, key=lambda f: f.duration, default=None)
        longest = max(readable, key=lambda f: f.duration, default=None)

        def extreme(f: Optional[FileReport]) -> Optional[dict[str, Any]]:
            return {"file": f.file, "seconds": round(f.duration, 6)} if f else None

        return {
            "files": len(self.files),
            "readable": len(readable),
            "unreadable": len(self.unreadable),
            "usable": len(self.usable),
            "too_short": len(self.too_short),
            "silent": len(self.silent),
            "usable_hours": sum(f.duration for f in self.usable) / 3600,
            "readable_hours": sum(f.duration for f in readable) / 3600,
            "sample_rates": dict(sorted(rates.items(), key=lambda kv: int(kv[0]))),
            "channels": dict(sorted(channels.items(), key=lambda kv: int(kv[0]))),
            "shortest": extreme(shortest),
            "longest": extreme(longest),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "desired_sr": self.desired_sr,
                "crop_seconds": self.crop_seconds, "summary": self.summary(),
                "files": [asdict(f) for f in self.files]}

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON (atomically: a crash never leaves half a report)."""
        return _write_json(Path(path), self.to_dict())

    def summary_lines(self) -> list[str]:
        """A few lines for the screen: the counts, then the problem files by kind."""
        s = self.summary()
        rates = ", ".join(s["sample_rates"]) or "none"
        head = (f"{s['files']} audio file(s) below {self.root}: {s['usable']} usable "
                f"({s['usable_hours']:.2f} h), {s['unreadable']} unreadable, {s['too_short']} "
                f"shorter than the {self.crop_seconds:.3f} s crop, {s['silent']} silent; "
                f"sample rates {rates} Hz")
        if s["shortest"]:
            head += (f"; shortest {s['shortest']['seconds']:.3f} s ({s['shortest']['file']}), "
                     f"longest {s['longest']['seconds']:.3f} s ({s['longest']['file']})")
        lines = [head]
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
        """Raise a clear error if nothing can be trained on, or if bad files exist and the
        policy is `error`. `advice(report)` replaces the generic fix when every file is
        shorter than a crop (the caller knows the model: a value that works)."""
        if self.unreadable and on_bad_file == "error":
            raise NoUsableAudioError(
                f"{len(self.unreadable)} unreadable audio file(s) below {self.root}: "
                + _listing([f"{f.file}: {f.reason}" for f in self.unreadable], "; ")
                + " (set data.on_bad_file=skip to use the others)")
        if self.usable:
            return
        readable = [f for f in self.files if f.readable]
        if not self.files:
            raise NoUsableAudioError(f"no audio files found below {self.root} (check "
                                     "data.extensions)")
        if not readable:
            raise NoUsableAudioError(
                f"none of the {len(self.files)} audio file(s) below {self.root} can be read: "
                + _listing([f"{f.file}: {f.reason}" for f in self.unreadable], "; "))
        longest = max(readable, key=lambda f: f.duration)
        raise ConfigError(
            f"data.full_duration: a crop of {self.crop_seconds:.3f} s is longer than every file "
            f"below {self.root}; the longest, {longest.file}, has {longest.duration:.3f} s. "
            + (advice(self) if advice else "Lower data.full_duration (keeping "
               "full_duration*desired_sr/(T+k) whole) or add longer files."))


def _listing(items: list[str], sep: str = ", ") -> str:
    shown = sep.join(items[:SHOWN_NAMES])
    return shown + (f"{sep}... (+{len(items) - SHOWN_NAMES} more)" if len(items) > SHOWN_NAMES else "")


def _display_name(path: Path, root: Path) -> str:
    """The name below the data folder as valid text: bytes that are not UTF-8 become \\xNN."""
    name = relative_name(path, root)
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _inspect(path: Path, cache: AudioCache, sample_rate: int) -> tuple[dict[str, Any], bool]:
    """(facts about one file, whether they may be cached). Problems that come from the
    file system (gone, no permission) are not cached: they can change without the file."""
    try:
        check_readable(path)
    except AudioReadError as exc:
        return {"readable": False, "reason": exc.reason}, False
    try:
        wave = cache.load(path, sample_rate)
        info = audio_info(path)
    except AudioReadError as exc:
        return {"readable": False, "reason": exc.reason}, True
    samples = int(wave.shape[0])
    peak = float(np.max(np.abs(wave))) if samples else 0.0
    return {"readable": True, "sample_rate": int(info.samplerate), "channels": int(info.channels),
            "format": f"{info.format} {info.subtype}",
            "duration": float(info.frames) / info.samplerate if info.samplerate else 0.0,
            "samples": samples, "silent": peak < SILENCE_PEAK}, True


def _scan_cache_file(cache: AudioCache, root: Path, sample_rate: int) -> Path:
    ident = f"{os.fsdecode(root.resolve())}|{sample_rate}|{SCAN_CACHE_VERSION}"
    key = hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()
    return cache.folder / "scan" / f"{key}.json"


def _file_stamp(path: Path) -> Optional[list[int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def scan_folder(root: str | Path, data: DataConfig, min_samples: Optional[int] = None,
                progress: bool = True) -> DataReport:
    """Inspect every audio file below `root` for training with `data` (a crop is
    `min_samples` samples at data.desired_sr; default data.crop_samples). Never raises for a
    bad file; a missing folder is a ConfigError."""
    root = Path(root)
    min_samples = data.crop_samples if min_samples is None else min_samples
    paths = discover_audio_files(root, data.extensions)
    cache = AudioCache(data.cache_dir)
    sr = data.desired_sr
    cache_file = _scan_cache_file(cache, root, sr)
    try:
        known: dict[str, Any] = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}

    def one(path: Path) -> tuple[Path, dict[str, Any], Optional[list[int]], bool]:
        key = os.fsdecode(path.absolute())
        stamp = _file_stamp(path)
        hit = known.get(key)
        if stamp is not None and isinstance(hit, dict) and hit.get("stamp") == stamp:
            return path, hit["facts"], stamp, True
        facts, cacheable = _inspect(path, cache, sr)
        return path, facts, stamp if cacheable else None, cacheable

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(one, paths), total=len(paths), desc="scanning audio",
                            unit="file", disable=not progress, leave=False))

    files: list[FileReport] = []
    remembered: dict[str, Any] = {}
    for path, facts, stamp, cacheable in results:
        report = FileReport(file=_display_name(path, root), **facts)
        report.usable = report.readable and report.samples >= min_samples
        files.append(report)
        if cacheable and stamp is not None:
            remembered[os.fsdecode(path.absolute())] = {"stamp": stamp, "facts": facts}
    if remembered != known:
        try:
            _write_json(cache_file, remembered)
        except OSError as exc:  # a read-only cache only costs speed
            log.debug("could not write the scan cache %s: %s", cache_file, exc)
    return DataReport(str(root), sr, min_samples / sr, files)
