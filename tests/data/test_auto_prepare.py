"""`data.auto_prepare`: a folder given to train, embed, check-data or run is prepared once
into the cache and read from its shards, reused while the folder's files are unchanged,
prepared again when they change or when the copy is damaged, and named as the folder."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocpc import load_config
from audiocpc.cli import main
from audiocpc.data import prepared
from audiocpc.data.prepared import AUTO_FOLDER, AUTO_LOCK, auto_home, is_prepared, open_data
from audiocpc.data.scan import scan_folder

SR = 8000


def _clips(folder: Path, count: int = 6, seconds: float = 1.3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in range(count):
        t = np.arange(int(seconds * SR)) / SR
        wave = 0.4 * np.sin(2 * np.pi * (200 + 70 * n) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(folder / f"{n}_{'ab'[n % 2]}_{n}.wav", wave.astype(np.float32), SR)
    sf.write(folder / "short.wav", np.full(400, 0.1, np.float32), SR)  # shorter than a crop
    return folder


def _data(tmp_path: Path, auto: bool = True):
    return load_config("cpc_tiny", [f"data.cache_dir={tmp_path / 'cache'}", f"data.sample_rate={SR}",
                                    "data.full_duration=1.0", f"data.auto_prepare={str(auto).lower()}"]).data


@pytest.fixture
def shard_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of files each prepare's shard writer decoded (one entry per shard)."""
    calls: list[int] = []
    real = prepared.write_shard

    def counting(task):  # type: ignore[no-untyped-def]
        calls.append(len(task.paths))
        return real(task)

    monkeypatch.setattr(prepared, "write_shard", counting)
    return calls


def _copies(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "cache" / AUTO_FOLDER).glob("*/*") if p.is_dir())


def test_a_folder_is_read_from_its_prepared_copy_named_as_the_folder(tmp_path: Path,
                                                                      shard_writes: list[int]) -> None:
    folder = _clips(tmp_path / "audio")
    report = open_data(folder, _data(tmp_path), progress=False)
    (copy,) = _copies(tmp_path)
    assert is_prepared(copy) and shard_writes == [7]
    plain = scan_folder(folder, _data(tmp_path / "plain", auto=False), progress=False)
    # the same report as the folder's, naming the folder and its files (not the cache)
    assert report.root == plain.root
    assert [(f.file, f.usable, f.samples) for f in report.files] == \
        [(f.file, f.usable, f.samples) for f in plain.files]
    corpus, plain_corpus = report.corpus(), plain.corpus()
    assert corpus.paths == plain_corpus.paths and all(p.parent == folder for p in corpus.paths)
    for index in range(len(corpus)):  # the samples, up to int16 rounding
        np.testing.assert_allclose(np.asarray(corpus.wave(index)[:]),
                                   np.asarray(plain_corpus.wave(index)[:]), atol=0.5 / 32767 + 1e-6)
    # no float32 copy per file: the folder's audio lives in the shards only
    assert not list((tmp_path / "cache").glob("??/*.npy"))


def test_the_copy_is_reused_while_the_folder_is_unchanged_and_replaced_when_it_changes(
        tmp_path: Path, shard_writes: list[int]) -> None:
    folder = _clips(tmp_path / "audio")
    data = _data(tmp_path)
    open_data(folder, data, progress=False)
    first = _copies(tmp_path)
    open_data(folder, data, progress=False)
    assert shard_writes == [7] and _copies(tmp_path) == first  # reused: nothing decoded

    louder = np.full(int(1.3 * SR), 0.25, np.float32)
    sf.write(folder / "0_a_0.wav", louder, SR)  # edited in place
    report = open_data(folder, data, progress=False)
    assert len(shard_writes) == 2
    (second,) = _copies(tmp_path)  # the old copy is gone
    assert second != first[0]
    corpus = report.corpus()
    changed = corpus.paths.index(folder / "0_a_0.wav")
    np.testing.assert_allclose(np.asarray(corpus.wave(changed)[:]), louder, atol=1e-4)


def test_a_damaged_copy_is_prepared_again(tmp_path: Path, shard_writes: list[int],
                                          caplog: pytest.LogCaptureFixture) -> None:
    folder = _clips(tmp_path / "audio")
    data = _data(tmp_path)
    open_data(folder, data, progress=False)
    (copy,) = _copies(tmp_path)
    for shard in (copy / "shards").glob("*.bin"):
        os.truncate(shard, 100)  # cut short
    report = open_data(folder, data, progress=False)
    assert len(shard_writes) == 2 and "damaged" in caplog.text
    assert len(report.corpus()) == 6


def test_train_and_embed_a_folder_through_its_prepared_copy(tmp_path: Path,
                                                            shard_writes: list[int]) -> None:
    folder = _clips(tmp_path / "audio")
    common = ["--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", f"data.sample_rate={SR}",
              "--set", "data.full_duration=1.0", "--set", "data.auto_prepare=true"]
    assert main(["train", "--preset", "cpc_tiny", "--data", str(folder), "--out", str(tmp_path / "out"),
                 "--quiet", "--set", "data.N=4", "--set", "train.epochs=1",
                 "--set", "train.steps_per_epoch=2", *common]) == 0
    run = tmp_path / "out" / "cpc" / "cpc_tiny"
    assert main(["embed", str(run), "--data", str(folder), "--split", "test", "--crops", "2",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(shard_writes) == 1  # train prepared it; embed (same folder, same rate) reused it
    with open(tmp_path / "out" / "embeddings" / "cpc_tiny" / "test.csv", newline="") as handle:
        files = sorted({row["file"] for row in csv.DictReader(handle)})
    assert files == sorted(f"{n}_{'ab'[n % 2]}_{n}.wav" for n in range(6))


@pytest.mark.slow  # two processes
def test_processes_asking_at_once_share_one_prepare(tmp_path: Path) -> None:
    """As torchrun's ranks do: both open the folder while the lock is held (here by the
    test); once it is free, one prepares and the other waits for it and reads that copy."""
    import fcntl
    import subprocess
    import sys
    import time

    folder = _clips(tmp_path / "audio", count=40)
    home = auto_home(folder, _data(tmp_path))
    home.mkdir(parents=True)
    src = Path(__file__).resolve().parents[2] / "src"
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from audiocpc import load_config\n"
        "from audiocpc.data.prepared import open_data\n"
        f"data = load_config('cpc_tiny', ['data.cache_dir={tmp_path / 'cache'}', "
        f"'data.sample_rate={SR}', 'data.full_duration=1.0', 'data.auto_prepare=true']).data\n"
        "open(sys.argv[1], 'w').close()\n"  # about to ask for the folder
        f"report = open_data({str(folder)!r}, data, progress=False)\n"
        "print(len(report.corpus()))\n")
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    with open(home / AUTO_LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        markers = [tmp_path / f"asking{n}" for n in range(2)]
        procs = [subprocess.Popen([sys.executable, "-c", script, str(marker)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for marker in markers]
        deadline = time.monotonic() + 240
        while not all(m.exists() for m in markers) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # from the marker to the lock: a scan of 41 names
    results = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert [out.strip() for out, _ in results] == ["40", "40"]
    logs = "".join(err for _, err in results)
    assert logs.count("waiting for another process") >= 2  # both met the held lock
    assert logs.count("once into") == 1  # one prepare; the other process reused it
    assert len(_copies(tmp_path)) == 1
