"""WebDataset shards and URLs (issue 13, item 4): `prepare --format webdataset` writes tars
that `tarfile` reads as key.npy + key.json pairs in scan order, with the manifest's offsets
as their index; random-access crops through file:// and fsspec URLs equal those of the
int16 corpus; streaming mode gives every file once per pass and resumes exactly from the
shard and offset of the oldest buffered file; bad URLs are one clear line."""

from __future__ import annotations

import builtins
import io
import itertools
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocpc import load_config
from audiocpc.cli import main
from audiocpc.data.corpus import CropSampler, batch_stream
from audiocpc.data.labels import training_label_rule
from audiocpc.data.prepared import (RemoteShardSlice, ShardSlice, open_data, prepare_corpus,
                                    read_manifest)
from audiocpc.data.remote import Location, data_location
from audiocpc.data.streaming import StreamSampler
from audiocpc.errors import ConfigError
from audiocpc.training.checkpoint import load_checkpoint
from audiocpc.training.trainer import train

fsspec = pytest.importorskip("fsspec")


def _folder(folder: Path, files: int = 9) -> Path:
    """Clips of 0.3-1.4 s at three rates from speakers a, b, c, a stereo one, a file that is
    not audio and a symlinked duplicate."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for n in range(files):
        rate = (8000, 16000, 22050)[n % 3]
        t = np.arange(int((0.3 + 0.14 * n) * rate)) / rate
        tone = 0.4 * np.sin(2 * np.pi * (150 + 60 * n) * t) + 0.05 * rng.standard_normal(t.size)
        wave = np.stack([tone, 0.5 * tone], axis=1) if n == 4 else tone
        sf.write(folder / f"{n}_{'abc'[n % 3]}_{n}.wav", wave.astype(np.float32), rate)
    (folder / "x_a_broken.wav").write_bytes(b"not audio")
    (folder / "1_b_1_dup.wav").symlink_to(folder / "1_b_1.wav")
    return folder


def _data(tmp_path: Path, *overrides: str) -> Any:
    return load_config("cpc_tiny", [f"data.cache_dir={tmp_path / 'cache'}", "data.sample_rate=8000",
                                    "data.full_duration=0.25", *overrides]).data


def _prepared(tmp_path: Path, data: Any, shard_format: str, name: str, **kw: Any) -> Path:
    source = tmp_path / "audio"
    if not source.exists():
        _folder(source)
    if (tmp_path / name).exists():  # prepared by an earlier call of this test
        return tmp_path / name
    kw.setdefault("workers", 1)
    prepare_corpus(source, tmp_path / name, data, progress=False, shard_format=shard_format, **kw)
    return tmp_path / name


def _to_memory(folder: Path, name: str) -> str:
    """A copy of a corpus in fsspec's in-memory file system: the code path of s3:// or gs://."""
    memory = fsspec.filesystem("memory")
    if memory.exists(f"/{name}"):
        memory.rm(f"/{name}", recursive=True)
    memory.put(str(folder), f"/{name}", recursive=True)
    return f"memory://{name}"


def test_webdataset_shards_are_tars_of_key_npy_and_json_pairs_indexed_by_the_manifest(
        tmp_path: Path) -> None:
    data = _data(tmp_path, "data.labels=regex", "data.label_pattern=^(?P<label>\\d)_",
                 "data.join=group", "data.join_pattern=_(?P<group>[a-z])_")
    corpus = _prepared(tmp_path, data, "webdataset", "wds", shard_bytes=40_000)
    header, rows = read_manifest(corpus)
    assert header["shard_format"] == "webdataset"
    tars = sorted((corpus / "shards").iterdir())
    assert len(tars) > 1 and all(t.name.startswith("shard-") and t.suffix == ".tar" for t in tars)
    stored = [r for r in rows if r.get("key")]
    assert len(stored) == 9  # not the unreadable file, not the duplicate (it points at 1_b_1)
    dup = next(r for r in rows if r["file"] == "1_b_1_dup.wav")
    assert "key" not in dup and dup["offset"] == next(r for r in rows if r["file"] == "1_b_1.wav")["offset"]
    seen: list[str] = []
    for tar in tars:
        with tarfile.open(tar) as archive:
            members = archive.getmembers()
            names = [m.name for m in members]
            keys = [n.split(".")[0] for n in names[::2]]
            assert names == [f"{k}{ext}" for k in keys for ext in (".npy", ".json")]
            for key, npy, about in zip(keys, members[::2], members[1::2]):
                row = next(r for r in stored if r["key"] == key)
                assert row["shard"] == f"shards/{tar.name}"
                raw = archive.extractfile(npy).read()
                header_bytes = len(raw) - 2 * row["length"]  # the index: just after the .npy header
                assert npy.offset_data + header_bytes == 2 * row["offset"]
                samples = np.load(io.BytesIO(raw))
                assert samples.dtype == np.dtype("<i2") and samples.shape == (row["length"],)
                meta = json.loads(archive.extractfile(about).read())
                assert (meta["file"], meta["label"], meta["group"]) == (row["file"], row["label"], row["group"])
                assert (meta["offset"], meta["length"], meta["scale"]) == (row["offset"], row["length"], row["scale"])
                assert (meta["mean"], meta["variance"]) == (row["mean"], row["variance"])
                assert meta["sample_rate"] == 8000 and meta["source"].endswith(row["file"])
                seen.append(row["file"])
    assert seen == [r["file"] for r in stored]  # tar order is the scan's order
    assert {r["label"] for r in stored} == {str(n) for n in range(9)}
    assert {r["group"] for r in stored} == {"a", "b", "c"}


@pytest.mark.parametrize("overrides", [[], ["data.standardize=false", "data.labels=regex",
                                            "data.label_pattern=^(?P<label>\\d)_"]])
def test_random_access_crops_through_file_and_fsspec_urls_equal_the_int16_corpus(
        tmp_path: Path, overrides: list[str]) -> None:
    data = _data(tmp_path, *overrides)
    plain = open_data(_prepared(tmp_path, data, "int16", "bin"), data)
    wds = _prepared(tmp_path, data, "webdataset", "wds")
    by_file_url = open_data(wds.resolve().as_uri(), data)
    by_memory = open_data(_to_memory(wds, "wds-random"), data)
    assert plain.summary() == by_file_url.summary() == by_memory.summary()
    rule = training_label_rule(data)
    corpora = [r.corpus(labels=rule) for r in (plain, by_file_url, by_memory)]
    assert all(isinstance(e, ShardSlice) for e in corpora[1].entries)  # file://: memory-mapped
    assert all(isinstance(e, RemoteShardSlice) for e in corpora[2].entries)  # byte ranges
    for step in range(4):
        batches = [CropSampler(c, 2000, 6, seed=5).batch_with_labels(step) for c in corpora]
        for crops, labels in batches[1:]:
            assert np.array_equal(crops, batches[0][0])  # the same int16 samples, the same crops
            assert (labels is None and batches[0][1] is None) or np.array_equal(labels, batches[0][1])


def _streaming(tmp_path: Path, buffer: int = 16, **kw: Any) -> StreamSampler:
    data = _data(tmp_path, "data.standardize=true")
    wds = _prepared(tmp_path, data, "webdataset", "wds", shard_bytes=30_000)
    corpus = open_data(wds.resolve().as_uri(), data).corpus()
    return StreamSampler(corpus, 2000, 4, seed=7, buffer=buffer, **kw)


def test_streaming_gives_every_file_once_per_pass_with_the_samples_of_random_access(
        tmp_path: Path) -> None:
    sampler = _streaming(tmp_path)
    corpus = sampler.corpus
    per_pass = sampler.crops_per_pass
    assert per_pass == int(sum(length // 2000 for length in corpus.lengths))
    read = list(itertools.islice(sampler.crops(), per_pass + 1))  # what is read, in order
    assert [c.pass_number for c in read] == [0] * per_pass + [1]
    assert np.array_equal(np.bincount([c.file for c in read[:per_pass]]), corpus.lengths // 2000)
    stream = sampler.stream()
    # a crop leaves the buffer after buffer_size emissions on average (WebDataset's shuffle):
    # within ten passes' emissions every crop of pass 0 has come out, each once
    out = [stream.emit() for _ in range(10 * per_pass)]
    first_pass = [(crop, samples) for crop, samples in out if crop.pass_number == 0]
    assert sorted(c.serial for c, _ in first_pass) == list(range(per_pass))
    counts = np.bincount([crop.file for crop, _ in first_pass], minlength=len(corpus))
    assert np.array_equal(counts, corpus.lengths // 2000) and counts.min() >= 1
    for crop, samples in first_pass:  # non-overlapping within a file, the audio random access reads
        expected = np.empty(2000, np.float32)
        corpus.read(crop.file, crop.start, expected)
        assert np.array_equal(samples, expected)
    starts = sorted((c.file, c.start) for c, _ in first_pass)
    assert all(b[1] - a[1] >= 2000 for a, b in zip(starts, starts[1:]) if a[0] == b[0])
    # shards read front to back: within a pass each shard is opened once, offsets increasing
    reads = sampler.reader.reads[:len(corpus)]
    shards = [s for s, _ in reads]
    assert len(set(shards)) == len(sampler.shard_names) > 1
    assert sum(1 for a, b in itertools.pairwise(shards) if a != b) == len(set(shards)) - 1
    assert all(a[1] < b[1] for a, b in itertools.pairwise(reads) if a[0] == b[0])
    # the order of passes differs (seeded per pass), and the shuffle mixes files across shards
    second = [c.file for c, _ in out if c.pass_number == 1]
    assert [c.file for c, _ in first_pass] != second[:per_pass]


def test_streaming_resume_reads_on_from_the_recorded_shard_and_offset_to_the_same_batches(
        tmp_path: Path) -> None:
    straight = _streaming(tmp_path)
    batches = [straight.batch_with_labels(step) for step in range(12)]
    resumed = _streaming(tmp_path)
    at = 7
    shard, offset, _ = resumed.resume_point(at)
    for step in range(at, 12):
        assert np.array_equal(resumed.batch(step), batches[step][0])
    assert resumed.reader.reads[0] == (shard, offset) and offset > 0
    # from there on it reads files the uninterrupted run read, in its order (the files still
    # holding buffered crops, then new ones), and nothing the run read before that point
    later = iter(straight.reader.reads[straight.reader.reads.index((shard, offset)):])
    assert all(read in later for read in resumed.reader.reads)
    assert len(resumed.reader.reads) < len(straight.reader.reads)


def test_streaming_splits_one_global_batch_over_ranks_and_loads_in_one_process(
        tmp_path: Path) -> None:
    whole = _streaming(tmp_path, world_size=1)
    wide = [_streaming(tmp_path, rank=r, world_size=2) for r in range(2)]
    doubled = StreamSampler(whole.corpus, 2000, 8, seed=7, buffer=16, world_size=1)
    for step in range(3):
        both = np.concatenate([w.batch(step) for w in wide])
        assert np.array_equal(both, doubled.batch(step))  # ranks share one stream, 4 rows each
    loaded = [crops for _, crops, _ in batch_stream(whole, 2, 6, num_workers=2)]
    fresh = _streaming(tmp_path, world_size=1)
    assert all(np.array_equal(c.numpy(), fresh.batch(s)) for s, c in zip(range(2, 6), loaded))


def test_streaming_refuses_a_folder_and_joined_clips_with_the_setting_named(
        tmp_path: Path) -> None:
    data = _data(tmp_path)
    folder_corpus = open_data(_folder(tmp_path / "audio"), data).corpus()
    with pytest.raises(ConfigError, match=r"data\.streaming: .*folder of audio.*audiocpc prepare"):
        StreamSampler(folder_corpus, 2000, 4, seed=0)
    with pytest.raises(ConfigError, match=r"data\.streaming.*data\.join=none"):
        load_config("cpc_tiny", ["data.streaming=true", "data.join=all"])


def _train_config(out: Path, epochs: int, *extra: str) -> Any:
    return load_config("cpc_tiny", [f"output.dir={out}", "data.sample_rate=8000",
                                    "data.full_duration=0.25", "data.N=4", f"train.epochs={epochs}",
                                    "train.steps_per_epoch=3", "train.checkpoint_every=3",
                                    "train.lr_schedule=constant", "train.validation_fraction=0",
                                    "train.threads=1", *extra])


def test_training_from_a_file_url_streams_and_resumes_exactly(tmp_path: Path) -> None:
    data = _data(tmp_path)
    url = _prepared(tmp_path, data, "webdataset", "wds", shard_bytes=30_000).resolve().as_uri()
    stream = ["data.streaming=true", "data.shuffle_buffer=8"]
    random_access = train(_train_config(tmp_path / "r", 1), url, progress=False)
    assert random_access.steps == 3 and np.isfinite(random_access.step_losses).all()
    straight = train(_train_config(tmp_path / "a", 2, *stream), url, progress=False)
    train(_train_config(tmp_path / "b", 1, *stream), url, progress=False)
    resumed = train(_train_config(tmp_path / "b", 2, *stream), url, resume=True, progress=False)
    assert resumed.step_losses == straight.step_losses and len(straight.step_losses) == 6
    a, b = load_checkpoint(straight.run_dir)["model"], load_checkpoint(resumed.run_dir)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.step_losses[:3] != random_access.step_losses  # really another order of crops
    for changed in ("data.shuffle_buffer=9", "data.streaming=false"):  # another stream: refused
        with pytest.raises(ConfigError, match=changed.split("=")[0]):
            train(_train_config(tmp_path / "b", 3, *stream, changed), url, resume=True, progress=False)
    # embed reads a file:// URL as its path
    assert main(["embed", str(straight.run_dir), "--data", url, "--split", "test", "--crops", "2",
                 "--out", str(tmp_path / "emb"), "--quiet", "--device", "cpu"]) == 0
    assert len(np.load(next((tmp_path / "emb").rglob("test.npy")))) == 2 * 9


def test_bad_urls_and_a_missing_fsspec_are_one_line_naming_the_setting_and_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--preset", "cpc_tiny", "--out", str(tmp_path / "runs")]
    cases = {"nosuch://bucket/corpus": "Protocol not known",
             "memory://no-corpus-here": "holds no prepared corpus",
             "file://otherhost/data": "three slashes"}
    assert main(["embed", str(tmp_path), "--data", "memory://corpus", "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data: embed reads local data" in err[0]
    for url, reason in cases.items():
        assert main(["train", "--data", url, *common]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].count("--data") >= 1 and reason in err[0], err

    real_import = builtins.__import__

    def no_fsspec(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("fsspec"):
            raise ImportError("No module named 'fsspec'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fsspec)
    assert main(["train", "--data", "s3://bucket/corpus", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0] and "needs fsspec" in err[0]
    assert "pip install 'audiocpc[stream]'" in err[0]
    # a file:// URL needs no fsspec: it is a local path
    assert data_location("file:///tmp/x%20y") == Path("/tmp/x y")
    assert Location("file:///tmp").local == Path("/tmp")


def test_prepare_format_webdataset_from_the_command_line_and_check_data_by_url(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _folder(tmp_path / "audio")
    out = tmp_path / "wds"
    settings = ["--preset", "cpc_tiny", "--set", "data.sample_rate=8000",
                "--set", "data.full_duration=0.25"]
    assert main(["prepare", str(source), "--out", str(out), "--format", "webdataset", "--quiet",
                 "--workers", "1", *settings]) == 0
    assert "WebDataset tar shards" in capsys.readouterr().out
    assert [p.name for p in (out / "shards").iterdir()] == ["shard-000000.tar"]
    assert main(["check-data", out.resolve().as_uri(), "--quiet", *settings]) == 0
    assert "9 usable" in capsys.readouterr().out


def test_streaming_and_training_through_fsspec_read_what_file_urls_read(tmp_path: Path) -> None:
    local = _streaming(tmp_path)
    data = _data(tmp_path, "data.standardize=true")
    url = _to_memory(tmp_path / "wds", "wds-stream")
    remote = StreamSampler(open_data(url, data).corpus(), 2000, 4, seed=7, buffer=16)
    assert all(isinstance(e, RemoteShardSlice) for e in remote.corpus.entries)
    cached = StreamSampler(open_data(f"simplecache::{(tmp_path / 'wds').resolve().as_uri()}",
                                     data).corpus(), 2000, 4, seed=7, buffer=16)  # a chained URL
    for step in (0, 1, 5, 6):  # in order, then resumed at 5
        assert np.array_equal(remote.batch(step), local.batch(step))
        assert np.array_equal(cached.batch(step), local.batch(step))
    assert type(remote.reader.handle).__module__.startswith("fsspec")  # read through fsspec
    streamed = train(_train_config(tmp_path / "m", 1, "data.streaming=true"), url, progress=False)
    by_file = train(_train_config(tmp_path / "f", 1, "data.streaming=true"),
                    (tmp_path / "wds").resolve().as_uri(), progress=False)
    assert streamed.step_losses == by_file.step_losses


def test_the_webdataset_library_reads_the_shards_as_samples_of_npy_and_json(tmp_path: Path) -> None:
    webdataset = pytest.importorskip("webdataset")
    data = _data(tmp_path, "data.standardize=false")
    corpus = _prepared(tmp_path, data, "webdataset", "wds", shard_bytes=30_000)
    rows = {r["key"]: r for r in read_manifest(corpus)[1] if r.get("key")}
    stored = open_data(corpus, data).corpus()
    waves = {p.name: stored.wave(i)[:] for i, p in enumerate(stored.paths)}
    urls = [t.resolve().as_uri() for t in sorted((corpus / "shards").iterdir())]
    seen = []
    for sample in webdataset.WebDataset(urls, shardshuffle=False).decode():
        row = rows[sample["__key__"]]
        meta = sample["json"]
        assert meta["file"] == row["file"] and sample["npy"].shape == (row["length"],)
        float_samples = sample["npy"].astype(np.float32) * np.float32(meta["scale"])
        if row["file"] in waves:  # long enough to train on
            assert np.array_equal(float_samples, waves[row["file"]])
        seen.append(sample["__key__"])
    assert seen == sorted(rows)  # every stored recording, in order


def test_tars_written_by_several_worker_processes_hold_the_same_samples(tmp_path: Path) -> None:
    data = _data(tmp_path, "data.standardize=false")
    one = open_data(_prepared(tmp_path, data, "webdataset", "one"), data).corpus()
    many = open_data(_prepared(tmp_path, data, "webdataset", "many", shard_bytes=1, workers=2),
                     data)
    tars = sorted((tmp_path / "many" / "shards").iterdir())
    assert len(tars) == 9 and all(t.suffix == ".tar" for t in tars)  # one per readable recording
    for tar in tars:
        with tarfile.open(tar) as archive:
            assert len(archive.getnames()) == 2
    corpus = many.corpus()
    assert [p.name for p in corpus.paths] == [p.name for p in one.paths]
    for i in range(len(one)):
        assert np.array_equal(one.wave(i)[:], corpus.wave(i)[:])
