"""`--preset auto`: the preset from the files' durations, and data.join when most files are
shorter than its crop: by group when the groups can be found (sub-folders, leading words,
or FSDD-like names `7_jackson_32.wav`), else the whole folder; one line says what and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocpc.cli import main
from audiocpc.data.auto_preset import choose_preset
from audiocpc.data.scan import scan_folder
from audiocpc.presets import load_config

SR = 16000


def _write(folder: Path, names: list[str], seconds: float) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * rng.standard_normal(int(seconds * SR)).astype(np.float32), SR)
    return folder


FSDD_NAMES = [f"{d}_{speaker}_{n}.wav" for speaker in ("jackson", "theo", "lucas")
              for d in range(3) for n in range(2)]  # 18 files, 3 speakers


def _corpus(folder: Path, preset: str, overrides: list[str], tmp_path: Path):
    data = load_config(preset, [*overrides, f"data.cache_dir={tmp_path / 'cache'}"]).data
    report = scan_folder(folder, data, progress=False)
    report.check()
    return report.corpus()


def test_short_clips_with_speakers_in_their_names_are_joined_by_speaker(tmp_path: Path) -> None:
    folder = _write(tmp_path / "digits", FSDD_NAMES, 0.1)  # shorter than the 0.25 s crop
    choice = choose_preset(folder)
    assert choice.preset == "clips"
    assert choice.overrides == ["data.join=group", "data.join_pattern=_(?P<group>[A-Za-z]+)_"]
    assert "data.join=group (3 groups by name pattern" in choice.reason and "\n" not in choice.reason
    assert "100% of the files are shorter than a crop" in choice.reason
    corpus = _corpus(folder, choice.preset, choice.overrides, tmp_path)
    assert len(corpus) == 18 and len(corpus.sequences) == 3  # every file, one sequence per speaker


def test_short_clips_in_sub_folders_are_joined_by_folder(tmp_path: Path) -> None:
    names = [f"{speaker}/{n:04d}.wav" for speaker in ("ann", "bob") for n in range(5)]
    folder = _write(tmp_path / "words", names, 0.1)
    choice = choose_preset(folder)
    assert choice.preset == "clips" and choice.overrides == ["data.join=group"]
    assert "data.join=group (2 groups by sub-folder or leading word" in choice.reason
    corpus = _corpus(folder, choice.preset, choice.overrides, tmp_path)
    assert len(corpus) == 10 and len(corpus.sequences) == 2


def test_short_clips_without_groups_are_joined_as_one_sequence(tmp_path: Path) -> None:
    folder = _write(tmp_path / "numbered", [f"{n:04d}.wav" for n in range(12)], 0.1)
    choice = choose_preset(folder)
    assert choice.preset == "clips" and choice.overrides == ["data.join=all"]
    assert "data.join=all (no groups found" in choice.reason
    corpus = _corpus(folder, choice.preset, choice.overrides, tmp_path)
    assert len(corpus) == 12 and len(corpus.sequences) == 1


def test_one_file_per_group_is_not_a_grouping(tmp_path: Path) -> None:
    # every name has its own leading word: grouping by it would join nothing
    folder = _write(tmp_path / "events", [f"{w}_01.wav" for w in ("bark", "bell", "car", "door")], 0.1)
    assert choose_preset(folder).overrides == ["data.join=all"]


@pytest.mark.parametrize("seconds, preset", [(0.5, "clips"), (4.0, "recordings")])
def test_files_longer_than_the_crop_are_not_joined(seconds: float, preset: str, tmp_path: Path) -> None:
    folder = _write(tmp_path / "long", FSDD_NAMES[:4], seconds)
    choice = choose_preset(folder)
    assert choice.preset == preset and choice.overrides == []
    assert "no data.join: 0% of the files are shorter than a crop" in choice.reason


def test_check_data_with_preset_auto_reports_the_joined_sequences(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write(tmp_path / "digits", FSDD_NAMES, 0.1)
    code = main(["check-data", str(folder), "--preset", "auto", "--quiet",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    captured = capsys.readouterr()
    assert code == 0
    assert "--preset auto chose 'clips'" in captured.err
    assert "joined (data.join=group): 18 file(s) into 3 sequence(s)" in captured.out


def test_the_users_set_overrides_the_automatic_join(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write(tmp_path / "digits", FSDD_NAMES, 0.1)
    code = main(["check-data", str(folder), "--preset", "auto", "--quiet", "--set", "data.join=all",
                 "--set", "data.join_pattern=null", "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    assert code == 0
    assert "joined (data.join=all): 18 file(s) into 1 sequence(s)" in capsys.readouterr().out
