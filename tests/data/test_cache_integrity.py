"""Decoded-audio cache entries are checked when opened, and decoded again when they are not
what decoding gives (issue 14, item 8): NaN samples, two dimensions, another dtype, another
length; and an in-place edit that keeps the size and modification time is noticed."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from audiocpc import load_config
from audiocpc.data import cache as cache_module
from audiocpc.data.cache import AudioCache
from audiocpc.data.scan import scan_folder

RATE = 8000


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    folder = tmp_path / "audio"
    folder.mkdir()
    t = np.arange(RATE) / RATE
    sf.write(folder / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE,
             subtype="FLOAT")
    return folder / "tone.wav"


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files actually decoded (not served from the cache)."""
    calls: list[Path] = []
    real = cache_module.read_audio_with_facts

    def counting(path: Path, rate: int) -> tuple[np.ndarray, Any]:
        calls.append(Path(path))
        return real(path, rate)

    monkeypatch.setattr(cache_module, "read_audio_with_facts", counting)
    return calls


def _damage(cache: AudioCache, path: Path, array: np.ndarray) -> None:
    np.save(cache.entry(path, RATE), array)


@pytest.mark.parametrize("damage", ["nan", "inf", "two_d", "float64", "shorter", "longer"])
def test_damaged_entry_is_decoded_again(damage: str, audio: Path, tmp_path: Path,
                                        decodes: list[Path]) -> None:
    cache = AudioCache(tmp_path / "cache")
    good = np.array(cache.load(audio, RATE))
    wave = good.copy()
    bad = {"nan": lambda: np.where(np.arange(wave.size) == 100, np.nan, wave).astype(np.float32),
           "inf": lambda: np.where(np.arange(wave.size) == 7, np.inf, wave).astype(np.float32),
           "two_d": lambda: np.stack([wave, wave], axis=1),
           "float64": lambda: wave.astype(np.float64),
           "shorter": lambda: wave[: wave.size // 2],
           "longer": lambda: np.concatenate([wave, wave])}[damage]()
    _damage(cache, audio, bad)
    again = cache.load(audio, RATE)
    assert again.ndim == 1 and again.dtype == np.float32
    np.testing.assert_array_equal(again, good)
    assert len(decodes) == 2  # decoded once at first, once more for the damaged entry
    np.testing.assert_array_equal(np.load(cache.entry(audio, RATE)), good)  # repaired on disk


def test_sound_entry_is_used_as_is(audio: Path, tmp_path: Path, decodes: list[Path]) -> None:
    cache = AudioCache(tmp_path / "cache")
    cache.load(audio, RATE)
    cache.load(audio, RATE)
    assert len(decodes) == 1


def test_nan_entry_does_not_pass_check_data(audio: Path, tmp_path: Path) -> None:
    data = load_config("1dconv_tiny", [f"data.cache_dir={tmp_path / 'cache'}"]).data
    scan_folder(audio.parent, data, progress=False)
    cache = AudioCache(data.cache_dir)
    entry = cache.entry(audio, RATE)
    np.save(entry, np.full(RATE, np.nan, dtype=np.float32))
    os.remove(next((Path(data.cache_dir) / "scan").glob("*.json")))  # forget the scan's memo
    report = scan_folder(audio.parent, data, progress=False)
    assert report.files[0].readable and report.files[0].usable and not report.files[0].silent
    assert np.isfinite(np.load(entry)).all()


def test_in_place_edit_keeping_size_and_mtime_is_noticed(audio: Path, tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "cache")
    first = np.array(cache.load(audio, RATE))
    stat = audio.stat()
    t = np.arange(RATE) / RATE
    other = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    with open(audio, "r+b") as handle:  # the same header, other samples, in place
        handle.seek(stat.st_size - other.nbytes)
        handle.write(other.tobytes())
    os.utime(audio, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert audio.stat().st_size == stat.st_size and audio.stat().st_mtime_ns == stat.st_mtime_ns
    second = np.array(cache.load(audio, RATE))
    np.testing.assert_allclose(second, other, atol=1e-6)
    assert not np.allclose(first, second)


def test_replaced_file_with_same_size_and_mtime_is_noticed(audio: Path, tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "cache")
    cache.load(audio, RATE)
    stat = audio.stat()
    replacement = audio.with_name("new.wav")
    t = np.arange(RATE) / RATE
    sf.write(replacement, (0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32), RATE,
             subtype="FLOAT")
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, audio)  # another inode, same size and mtime
    np.testing.assert_allclose(cache.load(audio, RATE), sf.read(audio, dtype="float32")[0], atol=1e-6)


def _stale_temporary(cache_folder: Path, name: str) -> Path:
    stale = cache_folder / "ab" / f".{name}.npy.4242.0a1b2c3d.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half an array")
    old = os.path.getmtime(stale) - cache_module.STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    return stale


def test_the_stale_temporary_sweep_runs_once_per_folder_and_says_how_many_it_removed(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "empty")          # its own folder swept, nothing there
    cache.folder = tmp_path / "cache"
    first = _stale_temporary(cache.folder, "ab12")
    assert cache.sweep_stale_temporaries() == 1 and not first.exists()
    later = _stale_temporary(cache.folder, "ab34")
    assert cache.sweep_stale_temporaries() == 0     # once per process and folder
    assert later.exists()


def test_the_sweep_logs_what_it_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _stale_temporary(tmp_path / "cache", "ab12")
    with caplog.at_level(logging.DEBUG, logger="audiocpc"):
        AudioCache(tmp_path / "cache")
    assert f"removed 1 stale temporary file(s) from {tmp_path / 'cache'}" in caplog.text


def test_the_cache_folder_follows_audiocpc_cache_then_xdg_cache_home_then_the_home_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUDIOCPC_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_module.default_cache_dir() == tmp_path / "mine" / "audio"
    monkeypatch.delenv("AUDIOCPC_CACHE")
    assert cache_module.default_cache_dir() == tmp_path / "xdg" / "audiocpc" / "audio"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_module.default_cache_dir() == tmp_path / "home" / ".cache" / "audiocpc" / "audio"


def test_a_loaded_file_is_memory_mapped_whether_decoded_now_or_cached(audio: Path, tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "cache")
    assert isinstance(cache.load(audio, RATE), np.memmap)   # just decoded
    assert isinstance(cache.load(audio, RATE), np.memmap)   # from the cache


def test_a_damaged_entry_is_reported_by_its_audio_file_and_may_vanish_meanwhile(
        audio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = AudioCache(tmp_path / "cache")
    cache.load(audio, RATE)
    entry = cache.entry(audio, RATE)
    np.save(entry, np.full(RATE, np.nan, dtype=np.float32))
    warnings: list[str] = []

    def warn_while_another_process_removes_it(message: str, *args: Any) -> None:
        warnings.append(message % args)
        entry.unlink()   # e.g. a second run that found the same damage first

    monkeypatch.setattr(cache_module.log, "warning", warn_while_another_process_removes_it)
    assert cache_module.open_entry(entry, RATE, audio) is None
    assert warnings == [(f"{audio}: its decoded copy in the cache is damaged (NaN or infinite samples); "
                         "decoding it again")]


def test_an_entry_laid_out_as_earlier_runs_wrote_it_is_used_without_decoding(
        audio: Path, tmp_path: Path, decodes: list[Path]) -> None:
    # the layout <first two hex digits of the key>/<key>.npy is what cache folders already on
    # disk (or shared with other machines) hold: a change would decode everything again
    wave = np.array(AudioCache(tmp_path / "first").load(audio, RATE))
    cache = AudioCache(tmp_path / "cache")
    key = cache.key(audio, RATE)
    (tmp_path / "cache" / key[:2]).mkdir(parents=True)
    np.save(tmp_path / "cache" / key[:2] / f"{key}.npy", wave)
    np.testing.assert_array_equal(cache.load(audio, RATE), wave)
    assert len(decodes) == 1   # the first cache's decoding only
