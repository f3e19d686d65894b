"""The decoded-audio cache notices a changed file: its key holds every fact of the file that
changes with its content (path, size, modification and change times, inode) and the rate,
and a file rewritten with the same size is decoded again (decodes counted, not requests)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from audiocpc import load_config
from audiocpc.data.cache import AudioCache, entry_key
from audiocpc.data.scan import scan_folder

RATE = 8000
FACTS = {"st_size": 16044, "st_mtime_ns": 1_700_000_000_000_000_000,
         "st_ctime_ns": 1_700_000_000_500_000_000, "st_ino": 4242}


def _key(path: str = "/data/a.wav", rate: int = RATE, **changed: int) -> str:
    stat: Any = SimpleNamespace(**{**FACTS, **changed})  # entry_key reads these attributes only
    return entry_key(path, stat, rate)


@pytest.mark.parametrize("fact", sorted(FACTS))
def test_each_file_fact_is_part_of_the_cache_key(fact: str) -> None:
    assert _key(**{fact: FACTS[fact] + 1}) != _key()


def test_path_and_rate_are_part_of_the_cache_key() -> None:
    assert _key(path="/data/b.wav") != _key()
    assert _key(rate=16000) != _key()
    assert _key() == _key()  # and nothing else: the same facts give the same entry


def _write(path: Path, pitch: float) -> np.ndarray:
    t = np.arange(RATE) / RATE
    wave = (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32)
    sf.write(path, wave, RATE, subtype="FLOAT")
    return wave


def _rewrite_same_size_later(path: Path, pitch: float) -> np.ndarray:
    """New content, the same size, a modification time 5 s later (a coarse clock may
    otherwise give the rewrite the old time)."""
    before = path.stat()
    wave = _write(path, pitch)
    assert path.stat().st_size == before.st_size
    later = before.st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(later, later))
    return wave


def test_file_rewritten_with_the_same_size_is_decoded_again(tmp_path: Path,
                                                            decoded_files: list[str]) -> None:
    path = tmp_path / "a.wav"
    _write(path, 440)
    cache = AudioCache(tmp_path / "cache")
    cache.load(path, RATE)
    cache.load(path, RATE)
    assert decoded_files == ["a.wav"]  # unchanged: decoded once
    new = _rewrite_same_size_later(path, 1000)
    np.testing.assert_allclose(cache.load(path, RATE), new, atol=1e-6)
    assert decoded_files == ["a.wav", "a.wav"]


def test_scanned_corpus_reads_the_rewritten_file(tmp_path: Path, decoded_files: list[str]) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    _write(folder / "a.wav", 440)
    data = load_config("1dconv_tiny", [f"data.cache_dir={tmp_path / 'cache'}",
                                       "data.standardize=false"]).data
    scan_folder(folder, data, progress=False)
    scan_folder(folder, data, progress=False)
    assert decoded_files == ["a.wav"]
    new = _rewrite_same_size_later(folder / "a.wav", 1000)
    corpus = scan_folder(folder, data, progress=False).corpus()
    assert decoded_files == ["a.wav", "a.wav"]
    np.testing.assert_allclose(corpus.wave(0), new, atol=1e-6)
