"""`audiocpc run` set-up: how models are named and checked before any stage runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiocpc.cli import main
from audiocpc.errors import AudiocpcError
from audiocpc.experiments.pipeline import Experiment, RunOptions


def _config_show_copy(capsys: pytest.CaptureFixture[str], path: Path, *overrides: str) -> Path:
    assert main(["config", "show", "1dconv_tiny", *[a for o in overrides for a in ("--set", o)]]) == 0
    path.write_text(capsys.readouterr().out)  # keeps `preset: 1dconv_tiny`, as users' copies do
    return path


def test_edited_copies_of_one_preset_are_named_by_their_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = _config_show_copy(capsys, tmp_path / "tiny_small.yaml", "model.c_dim=32")
    lstm = _config_show_copy(capsys, tmp_path / "tiny_lstm.yaml", "model.context.type=lstm")
    experiment = Experiment(RunOptions(models=[str(small), str(lstm), "1dconv_tiny"],
                                       train_data=tmp_path, out=tmp_path / "results"))
    assert [c.run_name for c in experiment.configs()] == ["tiny_small", "tiny_lstm", "1dconv_tiny"]


def test_two_models_with_one_name_say_which_key_to_change(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _config_show_copy(capsys, tmp_path / "a" / "model.yaml")
    second = _config_show_copy(capsys, tmp_path / "b" / "model.yaml", "model.c_dim=32")
    experiment = Experiment(RunOptions(models=[str(first), str(second)], train_data=tmp_path))
    with pytest.raises(AudiocpcError, match="distinct output.name inside each") as err:
        experiment.configs()
    assert str(first) in str(err.value) and str(second) in str(err.value)
