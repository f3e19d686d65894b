"""The data scan (`audiocpc check-data`, and at the start of `train`) and the settings that
are checked against the data before any work starts: exit code 2, one line per problem."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocpc.data import cache as cache_module
from audiocpc.cli import main
from audiocpc import load_config
from audiocpc.errors import ConfigError
from audiocpc.data.scan import scan_folder
from audiocpc.training.trainer import train

SR = 8000


def _write(folder: Path, name: str, seconds: float, sr: int = SR, channels: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * 330 * t)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    sf.write(folder / name, data.astype(np.float32), sr)
    return folder / name


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    _write(folder, "a_long.wav", 3.0)
    _write(folder, "b_mid.wav", 1.5, sr=16000, channels=2)
    _write(folder / "sub", "c_short.wav", 0.4)
    (folder / "d_bad.wav").write_bytes(b"RIFF not really")
    return folder


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("audiocpc: error")]


def test_check_data_reports_files_and_summary(mixed: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "report.json"
    assert main(["check-data", str(mixed), "--preset", "1dconv_tiny", "--quiet", "--all",
                 "--report", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "a_long.wav: 8000 Hz, 1 ch, 3.000 s, usable" in out
    assert "b_mid.wav: 16000 Hz, 2 ch, 1.500 s, usable" in out
    assert "sub/c_short.wav: 8000 Hz, 1 ch, 0.400 s, too short" in out
    assert "d_bad.wav: unreadable: " in out
    assert "4 audio file(s)" in out and "2 usable" in out and "1 unreadable" in out

    report = json.loads(report_path.read_text())
    summary = report["summary"]
    assert (summary["files"], summary["usable"], summary["too_short"], summary["unreadable"]) == (4, 2, 1, 1)
    assert summary["sample_rates"] == {"8000": 2, "16000": 1}
    assert summary["shortest"] == {"file": "sub/c_short.wav", "seconds": 0.4}
    assert summary["longest"] == {"file": "a_long.wav", "seconds": 3.0}
    assert summary["usable_hours"] == pytest.approx(4.5 / 3600)
    by_file = {f["file"]: f for f in report["files"]}
    assert by_file["b_mid.wav"]["samples"] == int(1.5 * SR)  # at data.sample_rate


def test_check_data_bad_file_policy_error(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-data", str(mixed), "--preset", "1dconv_tiny", "--quiet",
                 "--set", "data.on_bad_file=error"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "d_bad.wav" in errors[0] and "data.on_bad_file=skip" in errors[0]


def test_scan_is_cached_by_path_size_and_mtime(mixed: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_config("1dconv_tiny", [f"data.cache_dir={tmp_path / 'cache'}"]).data
    first = scan_folder(mixed, data, progress=False)

    decoded: list[str] = []  # decodes, not cache requests
    real_read = cache_module.read_audio_with_facts

    def counting_read(path, sample_rate):
        decoded.append(Path(path).name)
        return real_read(path, sample_rate)

    monkeypatch.setattr(cache_module, "read_audio_with_facts", counting_read)
    second = scan_folder(mixed, data, progress=False)
    assert decoded == [] and second.to_dict() == first.to_dict()

    new_mtime = os.stat(mixed / "a_long.wav").st_mtime_ns + 5_000_000_000
    os.utime(mixed / "a_long.wav", ns=(new_mtime, new_mtime))  # "changed": scanned again
    third = scan_folder(mixed, data, progress=False)
    assert decoded == ["a_long.wav"] and third.to_dict() == first.to_dict()


def test_train_writes_the_data_report_into_the_run_folder(mixed: Path, tmp_path: Path) -> None:
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path / 'out'}", "output.name=scan",
                                         "train.epochs=1", "train.steps_per_epoch=2", "data.N=2"])
    result = train(config, mixed, progress=False)
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert report["summary"]["usable"] == 2 and report["crop_seconds"] == 1.0
    assert {f["file"] for f in report["files"] if f["usable"]} == {"a_long.wav", "b_mid.wav"}


def _train_cli(data: Path, out: Path, *overrides: str) -> list[str]:
    args = ["train", "--preset", "1dconv_tiny", "--data", str(data), "--out", str(out),
            "--name", "bad", "--quiet", "--set", "train.epochs=1", "--set", "train.steps_per_epoch=2"]
    for item in overrides:
        args += ["--set", item]
    return args


def test_crop_longer_than_every_file_names_the_setting_and_the_longest_file(
        mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_train_cli(mixed, tmp_path, "data.full_duration=4.0"))
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1
    assert "data.full_duration" in errors[0] and "4.000 s" in errors[0]
    assert "the longest, a_long.wav, has 3.000 s" in errors[0]
    assert not (tmp_path / "cpc" / "bad" / "checkpoint.pt").exists()


def test_missing_data_folder_fails_before_any_work(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_train_cli(tmp_path / "no_such_folder", tmp_path / "out"))
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1 and "data folder not found" in errors[0]
    assert not (tmp_path / "out").exists()  # no run folder was made
    assert main(["check-data", str(tmp_path / "no_such_folder"), "--preset", "1dconv_tiny"]) == 2
    assert "data folder not found" in _errors(capsys)[0]


def test_batch_too_small_for_requested_negatives(mixed: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # 1dconv_tiny: T + k = 16 windows per sequence; 2 sequences leave 16 other-sequence
    # candidates, fewer than the 40 negatives asked for
    code = main(_train_cli(mixed, tmp_path / "out", "data.N=2", "loss.negatives.count=40"))
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1
    assert "loss.negatives.count: 40 negatives" in errors[0] and "at most 16" in errors[0]
    assert not (tmp_path / "out").exists()
    # a count the batch can supply trains
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path / 'ok'}", "data.N=2",
                                         "loss.negatives.count=16", "train.epochs=1",
                                         "train.steps_per_epoch=1"])
    assert train(config, mixed, progress=False).steps == 1


def test_every_settings_problem_is_one_line_with_exit_code_2(
        mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_train_cli(mixed, tmp_path / "out", "data.NN=3", "train.lr=fast",
                           "train.epochs=0", "data.sample_rate=-8000"))
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 4
    assert any("data.NN: unknown key; did you mean 'data.N'?" in e for e in errors)
    assert any(e.startswith("audiocpc: error: train.lr:") for e in errors)
    assert any(e.startswith("audiocpc: error: train.epochs:") for e in errors)
    assert any(e.startswith("audiocpc: error: data.sample_rate:") for e in errors)
    assert not (tmp_path / "out").exists()


def test_t_plus_k_too_long_for_the_crop(mixed: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import audiocpc.models.checks  # noqa: F401  where the check lives: a broken module fails here
    # 16 windows in a crop of 16 samples: one sample per window, too short for the encoder
    code = main(_train_cli(mixed, tmp_path / "out", "data.full_duration=0.002"))
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1 and "too short" in errors[0]
    with pytest.raises(ConfigError, match="data.full_duration"):  # more windows than samples
        load_config("1dconv_tiny", ["data.T=20000"])
    assert not (tmp_path / "out").exists()
