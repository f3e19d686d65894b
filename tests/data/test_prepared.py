"""A prepared corpus (audiocpc prepare): the same report, corpus and crops as the folder it
was made from (up to int16 rounding, at most half a step of each file's peak / 32767), long
files streamed in blocks to the same samples, a bounded number of open maps, atomic writes
(a failure leaves nothing), one clear line for bad input, and exact resume on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocpc import load_config
from audiocpc.cli import main
from audiocpc.data import prepared, prepared_shards
from audiocpc.data.audio import read_audio
from audiocpc.data.corpus import CropSampler
from audiocpc.data.labels import training_label_rule
from audiocpc.data.prepared import MANIFEST_NAME, is_prepared, open_data, prepare_corpus
from audiocpc.data.prepared_shards import FULL_SCALE
from audiocpc.data.scan import scan_folder
from audiocpc.training.checkpoint import load_checkpoint
from audiocpc.training.trainer import train


def _mixed_folder(folder: Path) -> Path:
    """Speakers a and b, clips at three rates (one stereo, one 50 dB below full scale), a
    symlinked duplicate, a file that is not audio and one too short for a crop."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for n, (rate, channels, level) in enumerate([(8000, 1, 0.5), (16000, 1, 0.3),
                                                 (44100, 2, 0.4), (22050, 1, 0.003)]):
        for speaker in "ab":
            t = np.arange(int(1.3 * rate)) / rate
            tone = level * np.sin(2 * np.pi * (200 + 90 * n) * t) + 0.1 * level * rng.standard_normal(t.size)
            wave = np.stack([tone, 0.5 * tone], axis=1) if channels == 2 else tone
            sf.write(folder / f"{n}_{speaker}_{n}.wav", wave.astype(np.float32), rate)
    os.symlink(folder / "0_a_0.wav", folder / "0_a_0_dup.wav")
    (folder / "9_a_broken.wav").write_bytes(b"not audio at all")
    sf.write(folder / "8_b_short.wav", np.zeros(800, np.float32) + 0.1, 8000)
    return folder


def _data(tmp_path: Path, *overrides: str):
    return load_config("cpc_tiny", [f"data.cache_dir={tmp_path / 'cache'}", "data.sample_rate=8000",
                                    "data.full_duration=1.0", *overrides]).data


def _half_step(peak: float) -> float:
    """Half an int16 step of a file of this peak, plus float32's own rounding of step x scale."""
    return peak / FULL_SCALE / 2 + 4 * float(np.spacing(np.float32(peak)))


def _step_tolerance(report) -> float:
    """Largest int16 rounding error of any usable file: half a step of its peak."""
    worst = 0.0
    for f in report.files:
        if f.usable and f.original:
            wave = read_audio(f.path, report.sample_rate)
            worst = max(worst, _half_step(float(np.abs(wave).max())))
    return worst


@pytest.mark.parametrize("overrides", [[], ["data.join=group", "data.join_pattern=_(?P<group>[a-z]+)_",
                                            "data.labels=regex", "data.label_pattern=^(?P<label>\\d)_"]])
def test_prepared_corpus_gives_the_crops_of_its_folder_up_to_int16_rounding(
        tmp_path: Path, overrides: list[str]) -> None:
    source = _mixed_folder(tmp_path / "audio")
    data = _data(tmp_path, "data.standardize=false", *overrides)
    prepare_corpus(source, tmp_path / "corpus", data, workers=1, progress=False)
    assert is_prepared(tmp_path / "corpus")

    folder_report = scan_folder(source, data, progress=False)
    corpus_report = open_data(tmp_path / "corpus", data)
    a, b = folder_report.summary(), corpus_report.summary()
    assert a == b and a["duplicates"] == 1 and a["unreadable"] == 1
    assert a["too_short"] == (0 if overrides else 1)  # joined into its group's sequence
    assert [f.file for f in folder_report.files] == [f.file for f in corpus_report.files]
    assert [f.reason for f in folder_report.files] == [f.reason for f in corpus_report.files]
    # the symlinked duplicate is stored once: its row points at its original's samples
    rows = {r["file"]: r for r in prepared.read_manifest(tmp_path / "corpus")[1]}
    dup, original = rows["0_a_0_dup.wav"], rows["0_a_0.wav"]
    assert dup["duplicate_of"] == "0_a_0.wav"
    assert (dup["shard"], dup["offset"]) == (original["shard"], original["offset"])
    stored = sum(r["length"] for r in rows.values() if r.get("shard") and not r["duplicate_of"])
    shard_bytes = sum(p.stat().st_size for p in (tmp_path / "corpus" / "shards").iterdir())
    assert shard_bytes == 2 * stored

    rule = training_label_rule(data)
    from_folder, from_corpus = folder_report.corpus(labels=rule), corpus_report.corpus(labels=rule)
    assert np.array_equal(from_folder.sequence_lengths, from_corpus.sequence_lengths)
    assert from_folder.labels == from_corpus.labels
    tolerance = _step_tolerance(folder_report)
    for step in range(5):
        x, lx = CropSampler(from_folder, 8000, 6, seed=3).batch_with_labels(step)
        y, ly = CropSampler(from_corpus, 8000, 6, seed=3).batch_with_labels(step)
        assert np.abs(x - y).max() <= tolerance
        assert (lx is None and ly is None) or np.array_equal(lx, ly)


def test_int16_error_is_half_a_step_of_each_files_own_peak(tmp_path: Path) -> None:
    """The quiet file (-50 dB) is as exact, relative to its level, as the loud ones."""
    source = _mixed_folder(tmp_path / "audio")
    data = _data(tmp_path, "data.standardize=false")
    corpus = prepare_corpus(source, tmp_path / "corpus", data, workers=1, progress=False).corpus()
    for i, path in enumerate(corpus.paths):
        exact = read_audio(source / path.name, 8000)
        stored = corpus.wave(i)[:]
        peak = float(np.abs(exact).max())
        error = float(np.abs(stored - exact).max())
        assert error <= _half_step(peak), path.name
        assert error < 1e-4 * peak  # about -96 dB below the file's peak, quiet or loud


def test_a_long_file_is_streamed_in_blocks_to_the_samples_of_a_whole_decode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "long"
    source.mkdir()
    rng = np.random.default_rng(1)
    stereo = (0.3 * rng.standard_normal((44100 * 3, 2))).astype(np.float32)
    sf.write(source / "long.wav", stereo, 44100)
    monkeypatch.setattr(prepared_shards, "STREAM_SAMPLES", 10_000)  # 3 s of stereo: streamed
    monkeypatch.setattr(prepared_shards, "BLOCK_FRAMES", 4_096)
    seen: list[int] = []
    real = prepared_shards.stream_audio
    monkeypatch.setattr(prepared_shards, "stream_audio",
                        lambda *a: (seen.append(a[2]), real(*a))[1])
    data = _data(tmp_path, "data.standardize=false")
    corpus = prepare_corpus(source, tmp_path / "corpus", data, workers=1, progress=False).corpus()
    assert seen and set(seen) == {4_096}
    whole = read_audio(source / "long.wav", 8000)
    stored = corpus.wave(0)[:]
    assert stored.shape == whole.shape
    assert np.abs(stored - whole).max() <= _half_step(float(np.abs(whole).max()))


def test_many_recordings_keep_one_map_per_shard_open(tmp_path: Path) -> None:
    source = tmp_path / "many"
    source.mkdir()
    for i in range(200):
        sf.write(source / f"clip{i:03d}.wav", np.full(1200, 0.01 * (i % 50 + 1), np.float32), 8000)
    data = _data(tmp_path, "data.full_duration=0.125", "data.standardize=false")
    corpus = prepare_corpus(source, tmp_path / "corpus", data, workers=1, progress=False).corpus()
    assert len(corpus) == 200
    fds = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    sampler = CropSampler(corpus, 1000, 32, seed=0)
    for step in range(20):
        sampler.batch(step)
    assert corpus.open_count == len(list((tmp_path / "corpus" / "shards").iterdir())) == 1
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) - fds <= 1


def test_a_prepared_corpus_sent_to_a_loader_process_reopens_its_shards(tmp_path: Path) -> None:
    import pickle

    source = _mixed_folder(tmp_path / "audio")
    data = _data(tmp_path)
    corpus = prepare_corpus(source, tmp_path / "corpus", data, workers=1, progress=False).corpus()
    before = CropSampler(corpus, 8000, 4, seed=1).batch(0)
    assert corpus.open_count == 1
    copy = pickle.loads(pickle.dumps(corpus))  # what a DataLoader worker receives
    assert copy.open_count == 0  # no map travels; each process maps the shards itself
    assert np.array_equal(CropSampler(copy, 8000, 4, seed=1).batch(0), before)


def test_a_failed_prepare_leaves_nothing_and_a_killed_ones_folder_is_swept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _mixed_folder(tmp_path / "audio")
    data = _data(tmp_path)
    out = tmp_path / "corpus"
    dead = tmp_path / f"{prepared._partial_prefix(out)}999999999"  # a pid that cannot exist
    (dead / "shards").mkdir(parents=True)

    def fail(*args, **kwargs):
        raise OSError("simulated crash while writing the manifest")

    monkeypatch.setattr(prepared, "_write_manifest", fail)
    with pytest.raises(OSError, match="simulated"):
        prepare_corpus(source, out, data, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio"]  # nothing half-written


def test_prepare_refuses_to_overwrite_and_reading_it_at_another_rate_names_the_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _mixed_folder(tmp_path / "audio")
    out = tmp_path / "corpus"
    args = ["prepare", str(source), "--out", str(out), "--preset", "cpc_tiny", "--quiet",
            "--set", "data.sample_rate=8000", "--set", "data.full_duration=1.0", "--workers", "1"]
    assert main(args) == 0
    assert "prepared corpus" in capsys.readouterr().out
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    header = json.loads((out / MANIFEST_NAME).read_text().splitlines()[0])
    assert header["sample_rate"] == 8000 and header["files"] == 11
    assert main(args + ["--force"]) == 0
    assert main(["train", "--preset", "auto", "--data", str(out), "--out", str(tmp_path)]) == 2
    assert "give the preset it was prepared with" in capsys.readouterr().err
    assert main(["check-data", str(out), "--preset", "1dconv_gru", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prepared at 8000 Hz" in err[0] and "data.sample_rate=8000" in err[0]


@pytest.mark.slow  # four short training runs: about a minute on 2 shared cores
def test_training_on_a_prepared_corpus_resumes_exactly(tone_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "tones"
    base = load_config("1dconv_tiny").data
    prepare_corpus(tone_dir, corpus, base, workers=1, progress=False)
    common = ["train.steps_per_epoch=4", "train.checkpoint_every=3", "train.lr_schedule=constant"]

    def config(out: Path, epochs: int):
        return load_config("1dconv_tiny", [f"output.dir={out}", f"train.epochs={epochs}", *common])

    straight = train(config(tmp_path / "a", 2), corpus, progress=False)
    train(config(tmp_path / "b", 1), corpus, progress=False)
    resumed = train(config(tmp_path / "b", 2), corpus, resume=True, progress=False)
    assert resumed.step_losses == straight.step_losses
    a, b = load_checkpoint(straight.run_dir)["model"], load_checkpoint(resumed.run_dir)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the losses are those of training on the folder, up to int16 rounding (which the
    # updates carry forward: measured 0.3 % apart after 8 steps)
    folder = train(config(tmp_path / "c", 2), tone_dir, progress=False)
    assert folder.step_losses[0] == pytest.approx(straight.step_losses[0], rel=1e-5)
    assert np.allclose(folder.step_losses, straight.step_losses, rtol=1e-2)


def test_embedding_a_prepared_corpus_gives_the_rows_and_manifest_of_its_folder(
        tiny_run: Path, demo_dir: Path, tmp_path: Path) -> None:
    from audiocpc.api import embed_folder

    corpus = tmp_path / "test-corpus"
    prepare_corpus(demo_dir / "test", corpus, load_config("1dconv_tiny").data, workers=1,
                   progress=False)
    folder = embed_folder(tiny_run, demo_dir / "test", "test", crops=3, out=tmp_path / "a",
                          progress=False)
    shards = embed_folder(tiny_run, corpus, "test", crops=3, out=tmp_path / "b", progress=False)
    assert folder.files == shards.files and folder.labels == shards.labels
    assert np.array_equal(folder.start_seconds, shards.start_seconds)
    assert np.allclose(folder.features, shards.features, atol=2e-3)
    assert not np.array_equal(folder.features, shards.features)  # really read from shards


def test_shards_written_by_several_worker_processes_hold_the_same_audio(tmp_path: Path) -> None:
    source = _mixed_folder(tmp_path / "audio")
    data = _data(tmp_path, "data.standardize=false")
    one = prepare_corpus(source, tmp_path / "one", data, workers=1, progress=False).corpus()
    many = prepare_corpus(source, tmp_path / "many", data, workers=2, shard_bytes=1,
                          progress=False).corpus()
    # one shard per readable recording (the unreadable one's is removed), any order of finishing
    assert len(list((tmp_path / "many" / "shards").iterdir())) == 9 and len(many) == len(one) == 8
    for i in range(len(one)):
        assert np.array_equal(one.wave(i)[:], many.wave(i)[:])
