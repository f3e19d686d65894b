"""The one data path: `scan_folder` -> `report.check` -> `report.corpus`. One discovery and
one decode per recording, one message for a folder that cannot be used, labels worked out
once, and the same seeded crops as the two-pass loader it replaced."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocpc import load_config  # public name: stays valid across the config split
from audiocpc.cli import main
from audiocpc.data.corpus import CropSampler
from audiocpc.data.labels import training_label_rule
from audiocpc.data.scan import scan_folder
from audiocpc.training.trainer import train

# Computed with the previous loader (load_corpus + CropSampler, before the one data path) on
# the folder `_crop_folder` writes: (step, file, start sample, label) of every crop, and the
# sha1 of the crops' bytes, for 4 steps of 4 crops (seed 5), and rank 1 of 2 (3 per rank).
OLD_SINGLE = [[0, 'high/clip2.wav', 3064, 'high'], [0, 'high/clip0.wav', 4702, 'high'], [0, 'low/clip2.wav', 362, 'low'], [0, 'low/clip1.wav', 1045, 'low'], [1, 'low/clip0.wav', 328, 'low'], [1, 'low/clip1.wav', 969, 'low'], [1, 'low/clip2.wav', 6488, 'low'], [1, 'high/clip2.wav', 4086, 'high'], [2, 'low/clip3.wav', 135, 'low'], [2, 'low/clip2.wav', 5243, 'low'], [2, 'high/clip0.wav', 509, 'high'], [2, 'high/clip2.wav', 5690, 'high'], [3, 'high/clip2.wav', 5109, 'high'], [3, 'low/clip0.wav', 356, 'low'], [3, 'high/clip0.wav', 2061, 'high'], [3, 'low/clip3.wav', 7327, 'low']]
OLD_SINGLE_SHA1 = 'a847562feeedd97d06e09e363255a427de074e55'
OLD_RANK1 = [[0, 'low/clip0.wav', 104, 'low'], [0, 'high/clip2.wav', 485, 'high'], [0, 'low/clip1.wav', 3, 'low'], [1, 'high/clip2.wav', 10378, 'high'], [1, 'low/clip0.wav', 103, 'low'], [1, 'low/clip2.wav', 2032, 'low'], [2, 'low/clip1.wav', 3343, 'low'], [2, 'high/clip0.wav', 403, 'high'], [2, 'low/clip0.wav', 89, 'low'], [3, 'high/clip0.wav', 2199, 'high'], [3, 'high/clip2.wav', 1438, 'high'], [3, 'low/clip0.wav', 664, 'low']]
OLD_RANK1_SHA1 = 'a2728164c7cafcd09331ca5ddd64df57e7c71966'
OLD_NAMES = ["high/clip0.wav", "high/clip1.wav", "high/clip2.wav", "low/clip0.wav",
             "low/clip1.wav", "low/clip2.wav", "low/clip3.wav"]
OLD_LENGTHS = [12800, 15760, 18720, 8800, 11760, 14720, 17680]


def _crop_folder(folder: Path) -> Path:
    rng = np.random.default_rng(123)
    for label, n in (("low", 4), ("high", 3)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            seconds = 1.1 + 0.37 * i + (0.5 if label == "high" else 0)
            wave = 0.3 * rng.standard_normal(int(seconds * 8000))
            sf.write(folder / label / f"clip{i}.wav", wave.astype(np.float32), 8000, subtype="PCM_16")
    sf.write(folder / "low" / "short.wav", (0.1 * rng.standard_normal(4000)).astype(np.float32),
             8000, subtype="PCM_16")
    return folder


@pytest.mark.parametrize("case", ["single", "rank1of2"])
def test_report_corpus_gives_the_same_crops_as_before(case: str, tmp_path: Path) -> None:
    folder = _crop_folder(tmp_path / "data")
    # the old loader gave the raw samples: compared without data.standardize
    config = load_config("1dconv_tiny", [f"data.cache_dir={tmp_path / 'cache'}", "data.labels=folder",
                                         "data.standardize=false"])
    report = scan_folder(folder, config.data, progress=False)
    report.check(config.data.on_bad_file)
    corpus = report.corpus(labels=training_label_rule(config.data))
    names = [p.relative_to(folder).as_posix() for p in corpus.paths]
    assert names == OLD_NAMES and corpus.lengths.tolist() == OLD_LENGTHS
    if case == "single":
        sampler, expected, digest_expected = CropSampler(corpus, config.data.crop_samples, 4, seed=5), OLD_SINGLE, OLD_SINGLE_SHA1
    else:
        sampler = CropSampler(corpus, config.data.crop_samples, 3, seed=5, rank=1, world_size=2)
        expected, digest_expected = OLD_RANK1, OLD_RANK1_SHA1
    rows, digest = [], hashlib.sha1()
    for step in range(4):
        crops, labels = sampler.batch_with_labels(step)
        digest.update(crops.tobytes())
        for crop, label in zip(crops, labels):
            # which file and start: the crop is a slice of the file the old loader named
            step_rows = [r for r in expected if r[0] == step]
            file, start = step_rows[len([r for r in rows if r[0] == step])][1:3]
            wave = np.asarray(corpus.wave(names.index(file)))
            assert np.array_equal(wave[start : start + crop.size], crop)
            rows.append([step, file, start, corpus.classes[label]])
    assert rows == expected
    assert digest.hexdigest() == digest_expected


def test_training_decodes_each_file_once_on_a_cold_cache(tmp_path: Path,
                                                         decoded_files: list[str]) -> None:
    folder = _crop_folder(tmp_path / "data")
    (folder / "bad.wav").write_bytes(b"RIFF not audio at all")
    decoded = decoded_files
    config = load_config("1dconv_tiny", [f"data.cache_dir={tmp_path / 'cache'}",
                                         f"output.dir={tmp_path / 'out'}", "data.labels=folder",
                                         "train.epochs=1", "train.steps_per_epoch=2", "data.N=4"])
    train(config, folder, progress=False)
    # every file (the short and the bad one too) is looked at once: one decode pass
    assert sorted(decoded) == sorted([*(n.split("/")[1] for n in OLD_NAMES), "short.wav", "bad.wav"])
    decoded.clear()
    report = scan_folder(folder, config.data, progress=False)  # warm: no audio read at all
    CropSampler(report.corpus(), config.data.crop_samples, 4, seed=0).batch(0)
    assert decoded == []


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("audiocpc: error")]


@pytest.mark.parametrize("content", ["unreadable", "none"])
def test_one_message_for_an_unusable_folder(content: str, tiny_run: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """train, embed, check-data and run stop at the same one line for a folder with nothing
    usable in it (all files unreadable, or no audio files at all)."""
    folder = tmp_path / "data"
    folder.mkdir()
    if content == "unreadable":
        for i in range(3):
            (folder / f"bad{i}.wav").write_bytes(b"RIFF not really")
    else:
        (folder / "notes.txt").write_text("not audio")
    commands = {
        "check-data": ["check-data", str(folder), "--preset", "1dconv_tiny", "--quiet"],
        "train": ["train", "--preset", "1dconv_tiny", "--data", str(folder), "--out",
                  str(tmp_path / "out"), "--quiet"],
        "embed": ["embed", str(tiny_run), "--data", str(folder), "--split", "test", "--out",
                  str(tmp_path / "emb"), "--quiet"],
        "run": ["run", "--models", "1dconv_tiny", "--train-data", str(folder), "--out",
                str(tmp_path / "run"), "--quiet"],
    }
    messages = {}
    for name, args in commands.items():
        assert main(args) == 2, name
        lines = _error_lines(capsys)
        assert len(lines) == 1, (name, lines)
        messages[name] = lines[0]
    assert len(set(messages.values())) == 1, messages
    expected = "can be read" if content == "unreadable" else "no audio files with extensions"
    assert expected in messages["train"]


def test_standardized_crops_are_slices_of_the_file_scaled_as_a_whole(tmp_path: Path) -> None:
    folder = _crop_folder(tmp_path / "data")
    config = load_config("1dconv_tiny", [f"data.cache_dir={tmp_path / 'cache'}"])
    assert config.data.standardize
    report = scan_folder(folder, config.data, progress=False)
    corpus = report.corpus()
    crops, _ = CropSampler(corpus, config.data.crop_samples, 4, seed=5).batch_with_labels(0)
    scaled = [(w - w.mean()) / w.std() for w in (np.asarray(corpus.wave(i), np.float64)
                                                 for i in range(len(corpus)))]
    for crop in crops:
        found = [w for w in scaled if any(np.allclose(w[s : s + crop.size], crop, atol=1e-4)
                                          for s in np.flatnonzero(np.isclose(w, crop[0], atol=1e-4))
                                          if s + crop.size <= w.size)]
        assert found, "each crop is a slice of one file standardised as a whole"
