"""Folders of short clips (data.join): clips are joined within a group (or the whole folder)
into sequences that training crops are cut from; a crop never crosses a group boundary,
every file is used, labels follow the file a crop starts in, resume stays exact, and the
data report says how many sequences there are and how long."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocpc import load_config  # public name: stays valid across the config split
from audiocpc.cli import main
from audiocpc.data.corpus import CropSampler, Join
from audiocpc.data.labels import training_label_rule
from audiocpc.data.scan import scan_folder
from audiocpc.training.checkpoint import load_checkpoint
from audiocpc.training.trainer import train

SR = 8000
CLIP_SECONDS = 0.3
# Each file is a constant: the sign says its group, the value which file it is.
VALUES = {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [-0.1, -0.2, -0.3, -0.4, -0.5]}


def _constant_clips(folder: Path, by_folder: bool = False) -> Path:
    """Ten 0.3 s clips `{i}_{group}_{n}.wav` (digit i, group a or b), or `a/`, `b/` folders."""
    for group, values in VALUES.items():
        for n, value in enumerate(values):
            name = f"{n}_{group}_{n}.wav"
            path = folder / group / name if by_folder else folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.full(int(CLIP_SECONDS * SR), value, np.float32), SR, subtype="FLOAT")
    return folder


def _data(tmp_path: Path, *overrides: str):
    # 1 s crops at 8 kHz: longer than every clip, shorter than a group (5 x 0.3 s)
    # raw samples (no data.standardize): the groups' constant levels must reach the crops
    return load_config("cpc_tiny", [f"data.cache_dir={tmp_path / 'cache'}", "data.standardize=false",
                                    *overrides]).data


GROUP_BY_NAME = ["data.join=group", "data.join_pattern=_(?P<group>[a-z]+)_"]


def test_without_join_short_clips_are_refused_with_a_hint(tmp_path: Path) -> None:
    data = _data(tmp_path)
    report = scan_folder(_constant_clips(tmp_path / "clips"), data, progress=False)
    with pytest.raises(Exception, match=r"data.join=group"):
        report.check()


@pytest.mark.parametrize("join", [GROUP_BY_NAME, ["data.join=group", "data.join_by=folder"]])
def test_no_crop_crosses_a_group_boundary_and_every_file_is_used(join: list[str],
                                                                 tmp_path: Path) -> None:
    by_folder = "data.join_by=folder" in join
    folder = _constant_clips(tmp_path / "clips", by_folder=by_folder)
    data = _data(tmp_path, *join)
    report = scan_folder(folder, data, progress=False)
    report.check()
    corpus = report.corpus()
    assert len(corpus) == 10 and len(corpus.sequence_lengths) == 2
    assert corpus.sequence_lengths.tolist() == [5 * int(CLIP_SECONDS * SR)] * 2
    seen: set[float] = set()
    sampler = CropSampler(corpus, data.crop_samples, 8, seed=1)
    for step in range(40):
        for crop in sampler.batch(step):
            signs = np.unique(np.sign(crop))
            assert signs.size == 1, f"step {step}: a crop mixes groups a and b"
            seen |= {round(float(v), 3) for v in np.unique(crop)}
    assert seen == {round(v, 3) for values in VALUES.values() for v in values}  # every file


def test_group_mode_without_any_group_says_how_to_give_one(tmp_path: Path) -> None:
    # FSDD-like names have no leading word for the `auto` rule: nothing would be joined
    report = scan_folder(_constant_clips(tmp_path / "clips"), _data(tmp_path, "data.join=group"),
                         progress=False)
    with pytest.raises(Exception, match=r"no file .* has a group .*data.join_pattern") as error:
        report.check()
    assert "\n" not in str(error.value)


def test_embedding_uses_each_file_alone_and_gives_no_join_hint(tmp_path: Path) -> None:
    from audiocpc.data.corpus import NO_JOIN

    data = _data(tmp_path, *GROUP_BY_NAME)
    report = scan_folder(_constant_clips(tmp_path / "clips"), data, progress=False, join=NO_JOIN)
    with pytest.raises(Exception, match="longer than every file") as error:
        report.check()
    assert "data.join" not in str(error.value)


def test_a_gap_of_silence_between_joined_clips(tmp_path: Path) -> None:
    folder = _constant_clips(tmp_path / "clips")
    data = _data(tmp_path, *GROUP_BY_NAME, "data.join_gap_seconds=0.05")
    corpus = scan_folder(folder, data, progress=False).corpus()
    gap = int(0.05 * SR)
    assert corpus.sequence_lengths.tolist() == [5 * int(CLIP_SECONDS * SR) + 4 * gap] * 2
    whole = np.empty(int(corpus.sequence_lengths[0]), np.float32)
    corpus.read(0, 0, whole)  # group a in file order, with silence between the clips
    clip = int(CLIP_SECONDS * SR)
    for n, value in enumerate(VALUES["a"]):
        begin = n * (clip + gap)
        assert np.all(whole[begin : begin + clip] == np.float32(value))
        if n < 4:
            assert np.all(whole[begin + clip : begin + clip + gap] == 0)


def test_join_all_makes_one_sequence_of_the_folder(tmp_path: Path) -> None:
    folder = _constant_clips(tmp_path / "clips")
    corpus = scan_folder(folder, _data(tmp_path, "data.join=all"), progress=False).corpus()
    assert len(corpus.sequence_lengths) == 1 and corpus.sequence_lengths[0] == 10 * int(CLIP_SECONDS * SR)


def test_a_crop_is_labelled_by_the_file_it_starts_in(tmp_path: Path) -> None:
    folder = _constant_clips(tmp_path / "clips")
    # labels = the digit; groups = a / b: each joined sequence holds several labels
    data = _data(tmp_path, *GROUP_BY_NAME, "data.labels=regex",
                 "data.label_pattern=^(?P<label>\\d)_")
    corpus = scan_folder(folder, data, progress=False).corpus(labels=training_label_rule(data))
    sampler = CropSampler(corpus, data.crop_samples, 8, seed=2)
    digit_of_value = {round(v, 3): n for values in VALUES.values() for n, v in enumerate(values)}
    for step in range(10):
        crops, labels = sampler.batch_with_labels(step)
        for crop, label in zip(crops, labels):
            assert corpus.classes[label] == str(digit_of_value[round(float(crop[0]), 3)])


def test_the_data_report_counts_sequences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _constant_clips(tmp_path / "clips")
    report_path = tmp_path / "report.json"
    args = ["check-data", str(folder), "--preset", "cpc_tiny", "--quiet", "--report", str(report_path),
            "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    for item in GROUP_BY_NAME:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "joined (data.join=group): 10 file(s) into 2 sequence(s) of 1.500 s to 1.500 s" in out
    report = json.loads(report_path.read_text())
    assert report["summary"]["usable"] == 10 and report["join"] == "group"
    assert report["summary"]["sequences"]["count"] == 2
    groups = {f["file"]: (f["group"], f["sequence"]) for f in report["files"]}
    assert groups["0_a_0.wav"] == ("a", 0) and groups["4_b_4.wav"] == ("b", 1)


def test_a_bad_join_pattern_is_one_line_before_any_decoding(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = _constant_clips(tmp_path / "clips")
    code = main(["train", "--preset", "cpc_tiny", "--data", str(folder), "--out", str(tmp_path / "out"),
                 "--quiet", "--set", "data.join=group", "--set", "data.join_pattern=_([a-z]+)_",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("audiocpc: error")]
    assert code == 2 and len(errors) == 1
    assert "data.join_pattern" in errors[0] and "named group 'group'" in errors[0]
    assert not (tmp_path / "cache").exists()  # refused before the scan decoded anything


def test_resume_is_exact_with_join_group(tmp_path: Path) -> None:
    folder = _constant_clips(tmp_path / "clips")
    rng = np.random.default_rng(0)  # constants teach nothing: add noise so the loss moves
    for path in sorted(folder.glob("*.wav")):
        wave, _ = sf.read(path, dtype="float32")
        sf.write(path, wave + 0.1 * rng.standard_normal(wave.size).astype(np.float32), SR, subtype="FLOAT")

    def config(out: Path, epochs: int):
        return load_config("cpc_tiny", [f"output.dir={out}", f"data.cache_dir={tmp_path / 'cache'}",
                                        *GROUP_BY_NAME, "data.N=4", f"train.epochs={epochs}",
                                        "train.steps_per_epoch=3", "train.checkpoint_every=3",
                                        # extended 1 -> 2 epochs: exact with a constant rate
                                        "train.lr_schedule=constant"])

    straight = train(config(tmp_path / "a", 2), folder, progress=False)
    train(config(tmp_path / "b", 1), folder, progress=False)
    resumed = train(config(tmp_path / "b", 2), folder, resume=True, progress=False)
    assert resumed.steps == 6 and resumed.step_losses == straight.step_losses
    a, b = load_checkpoint(straight.run_dir)["model"], load_checkpoint(resumed.run_dir)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    report = json.loads((straight.run_dir / "data_report.json").read_text())
    assert report["summary"]["sequences"]["count"] == 2


def _speaker_clips(folder: Path, speakers: tuple[str, ...] = ("george", "lucas", "nicolas"),
                   per_digit: int = 2, seconds: float = 0.5) -> Path:
    """FSDD-like clips `{digit}_{speaker}_{i}.wav` of 0.5 s at 8 kHz: shorter than a crop of
    the long-context presets, 10 s per speaker when joined."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    for s, speaker in enumerate(speakers):
        for digit in range(10):
            for i in range(per_digit):
                f0 = 120 + 40 * s + 15 * digit
                wave = 0.4 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.standard_normal(t.size)
                sf.write(folder / f"{digit}_{speaker}_{i}.wav", wave.astype(np.float32), SR)
    return folder


@pytest.mark.slow  # ~30 s on a CPU: two full-size models
@pytest.mark.parametrize("preset", ["cpc_paper", "1dconv_gru"])
def test_long_context_presets_train_on_short_clips_joined_by_speaker(preset: str,
                                                                     tmp_path: Path) -> None:
    folder = _speaker_clips(tmp_path / "clips")
    overrides = [f"output.dir={tmp_path / 'out'}", f"data.cache_dir={tmp_path / 'cache'}",
                 "data.N=2", "train.epochs=1", "train.steps_per_epoch=2"]
    refused = load_config(preset, overrides)
    with pytest.raises(Exception, match="longer than every file"):
        scan_folder(folder, refused.data, progress=False).check()
    config = load_config(preset, [*overrides, *GROUP_BY_NAME])
    result = train(config, folder, progress=False)
    assert result.steps == 2 and all(np.isfinite(result.step_losses))
    summary = json.loads((result.run_dir / "data_report.json").read_text())["summary"]
    assert summary["usable"] == 60 and summary["too_short"] == 0  # every clip is used
    assert summary["sequences"]["count"] == 3  # one per speaker


def test_a_file_without_a_group_stays_a_sequence_of_its_own_in_first_file_order(tmp_path: Path) -> None:
    # the join pattern finds no group in "loose.wav": it is neither joined nor dropped
    join = Join.from_config(_data(tmp_path, *GROUP_BY_NAME))
    names = ["0_a_0.wav", "loose.wav", "1_a_1.wav", "2_b_2.wav"]
    assert join.sequences(names, [100] * 4) == [[0, 2], [1], [3]]
