"""No per-file ceilings, links and duplicates, and a cache that never keeps half-written
files: the corpus keeps a bounded number of files open whatever the number of recordings;
a linked or hard-linked duplicate is decoded and counted once; a crash while writing a
decoded copy leaves no temporary file behind, and stale ones from killed runs are swept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocpc import load_config  # public name: stays valid across the config split
from audiocpc.cli import main
from audiocpc.data import cache as cache_module
from audiocpc.data.cache import STALE_TEMP_SECONDS, AudioCache
from audiocpc.data.scan import scan_folder
from audiocpc.errors import DiskFullError

SR = 8000
SRC = Path(__file__).resolve().parents[2] / "src"


def _write_clips(folder: Path, count: int, seconds: float, prefix: str = "a") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        wave = 0.3 * rng.standard_normal(int(seconds * SR))
        sf.write(folder / f"{prefix}{i}.wav", wave.astype(np.float32), SR, subtype="PCM_16")
        paths.append(folder / f"{prefix}{i}.wav")
    return paths


def _open_files_limited_train(data: Path, out: Path, cache: Path, limit: int) -> subprocess.CompletedProcess:
    """`audiocpc train` in a child whose open-file limit is `limit` (as `ulimit -n` would)."""
    script = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
        "from audiocpc.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(SRC), "AUDIOCPC_CACHE": str(cache),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = ["train", "--preset", "cpc_tiny", "--data", str(data), "--out", str(out), "--quiet",
            "--set", "data.full_duration=0.25", "--set", "train.epochs=1",
            "--set", "train.steps_per_epoch=3", "--set", "data.N=8"]
    return subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow  # real processes or a learning run: seconds, not milliseconds
def test_training_on_more_files_than_the_open_file_limit(tmp_path: Path) -> None:
    """300 recordings under a limit of 160 open files: the corpus opens its decoded copies on
    demand (a small LRU of memory maps) instead of one open map per recording."""
    data = tmp_path / "data"
    _write_clips(data, 300, 0.3)
    done = _open_files_limited_train(data, tmp_path / "out", tmp_path / "cache", limit=160)
    assert done.returncode == 0, done.stderr[-2000:]
    checkpoint = tmp_path / "out" / "cpc" / "cpc_tiny" / "checkpoint.pt"
    assert checkpoint.is_file()


def test_the_corpus_keeps_at_most_its_lru_of_files_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_clips(data, 40, 0.3)
    config = load_config("cpc_tiny", [f"data.cache_dir={tmp_path / 'cache'}",
                                      "data.full_duration=0.25"])
    corpus = scan_folder(data, config.data, progress=False).corpus(open_files=8)
    first = [np.array(corpus.wave(i)) for i in range(len(corpus))]
    assert corpus.open_count <= 8
    again = [np.array(corpus.wave(i)) for i in reversed(range(len(corpus)))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert corpus.open_count <= 8


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_symlinked_duplicates_on_a_cold_cache(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's reproduction: 60 files, each with a symbolic link to it beside it. The
    scan used to crash with FileNotFoundError (two threads wrote the same decoded copy)."""
    data = tmp_path / "data"
    for path in _write_clips(data, 60, 1.2):
        os.symlink(path.name, path.with_name(f"{path.stem}_dup.wav"))
    cache = tmp_path / "cache"
    report_path = tmp_path / "report.json"
    code = main(["check-data", str(data), "--preset", "cpc_tiny", "--quiet",
                 "--set", f"data.cache_dir={cache}", "--report", str(report_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(report_path.read_text())["summary"]
    assert summary["usable"] == 60 and summary["duplicates"] == 60
    assert summary["usable_hours"] == pytest.approx(60 * 1.2 / 3600)
    assert "60 duplicate" in out.out
    assert not list(cache.rglob("*.tmp*"))
    assert len(list(cache.rglob("*.npy"))) == 60  # one decoded copy per recording


def test_a_duplicate_is_decoded_once_and_used_once(tmp_path: Path,
                                                   decoded_files: list[str]) -> None:
    data = tmp_path / "data"
    first, second = _write_clips(data, 2, 1.2)
    os.symlink(first.name, data / "a0_link.wav")
    os.link(second, data / "a1_hard.wav")  # a hard link: another name for the same inode
    decoded = decoded_files
    config = load_config("cpc_tiny", [f"data.cache_dir={tmp_path / 'cache'}"])
    report = scan_folder(data, config.data, progress=False)
    assert sorted(decoded) == ["a0.wav", "a1.wav"]
    by_name = {f.file: f for f in report.files}
    assert by_name["a0_link.wav"].duplicate_of == "a0.wav"
    assert by_name["a1_hard.wav"].duplicate_of == "a1.wav"
    assert not by_name["a0_link.wav"].usable and by_name["a0.wav"].usable
    corpus = report.corpus()
    assert sorted(p.name for p in corpus.paths) == ["a0.wav", "a1.wav"]


def test_a_crash_while_writing_a_decoded_copy_leaves_no_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (path,) = _write_clips(tmp_path / "data", 1, 1.0)
    cache = AudioCache(tmp_path / "cache")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module.os, "replace", disk_full)
    with pytest.raises(DiskFullError, match="no space left"):  # one line, not a traceback
        cache.load(path, SR)
    assert not list((tmp_path / "cache").rglob("*.tmp*"))
    monkeypatch.undo()
    assert cache.load(path, SR).shape == (SR,)


def test_stale_temporary_files_of_killed_runs_are_swept(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "ab"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".ab12.npy.4242.0a1b2c3d.tmp", folder / ".ab34.npy.4243.0e1f2a3b.tmp"
    stale.write_bytes(b"half an array")
    fresh.write_bytes(b"another process is writing this one")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    (path,) = _write_clips(tmp_path / "data", 1, 1.0)
    config = load_config("cpc_tiny", [f"data.cache_dir={tmp_path / 'cache'}"])
    scan_folder(tmp_path / "data", config.data, progress=False)
    assert not stale.exists() and fresh.exists()


@pytest.mark.slow  # a child process that trains and embeds
def test_check_data_train_and_embed_run_under_the_macos_open_file_limit(tmp_path: Path) -> None:
    """The issue's target: under `ulimit -n 256` (macOS's default) the README's folder
    commands (check-data, train, embed) run on more recordings than the limit."""
    data = tmp_path / "data"
    _write_clips(data, 320, 0.3)
    out = tmp_path / "out"
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))\n"
        "from audiocpc.cli import main\n"
        "common = ['--preset', 'cpc_tiny', '--set', 'data.full_duration=0.25']\n"
        f"data, out = {str(data)!r}, {str(out)!r}\n"
        "for args in (['check-data', data, *common],\n"
        "             ['train', '--data', data, '--out', out, '--quiet', *common, '--set', 'data.N=8',\n"
        "              '--set', 'train.epochs=1', '--set', 'train.steps_per_epoch=3'],\n"
        "             ['embed', out + '/cpc/cpc_tiny', '--data', data, '--split', 'train',\n"
        "              '--crops', '2', '--out', out, '--quiet']):\n"
        "    code = main(args)\n"
        "    if code:\n"
        "        sys.exit(f'{args[0]} exited with {code}')\n")
    env = {**os.environ, "PYTHONPATH": str(SRC), "AUDIOCPC_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Too many open files" not in done.stderr
    embedded = np.load(out / "embeddings" / "cpc_tiny" / "train.npy")
    assert embedded.shape[0] == 320 * 2
