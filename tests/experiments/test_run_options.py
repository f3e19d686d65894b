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


def test_plan_lists_each_stage_with_an_estimate_and_the_fast_option(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import soundfile as sf

    import audiocpc.evaluation.embed as embed
    import audiocpc.evaluation.mfcc as mfcc
    import audiocpc.training.estimate as estimate

    # The plan measures each stage on this machine; the measurements are pinned here, so what
    # the plan says (the note above all) does not depend on how loaded the machine is.
    monkeypatch.setattr(estimate, "time_train_step", lambda *args, **kwargs: 0.5)
    monkeypatch.setattr(embed, "measure_embed_seconds", lambda *args, **kwargs: 2.0)
    monkeypatch.setattr(Experiment, "_classify_seconds", lambda self, rows, dim: 5.0)
    monkeypatch.setattr(mfcc, "mfcc_summary", lambda *args, **kwargs: None)  # timed: ~0 s
    data = tmp_path / "clips"
    data.mkdir()
    for i in range(6):  # clips of 1.5 s: two consecutive 0.75 s crops each
        sf.write(data / f"{'ab'[i % 2]}.{i:05d}.wav", np.zeros(12000, np.float32) + 0.01, 8000)
    experiment = Experiment(RunOptions(models=["1dconv_tiny"], train_data=data, out=tmp_path / "r",
                                       overrides=["train.epochs=1", "train.steps_per_epoch=3"]))
    lines = experiment.plan(experiment.configs())
    text = "\n".join(lines)
    assert "plan for 1dconv_tiny: train 3 steps: about 2 s (0.50 s per step, measured on" in text
    # 2 s measured on the probe's crops (every one of the 540 here), twice: the untrained model too
    assert ("embed train: 6 of 6 file(s) x 90 crop(s) per file = 540 crops of 0.750 s: about 4 s "
            "(with the untrained baseline)") in text
    assert "MFCC baseline of the same 540 crops: about under 1 s" in text
    assert "classify (logreg on 3 feature set(s)): about 5 s; t-SNE" in text
    assert "note:" not in text  # quick here: no advice

    # embedding that dwarfs training (FSDD: 2700 clips x 90 crops did not finish in 15 minutes)
    monkeypatch.setattr(embed, "measure_embed_seconds", lambda *args, **kwargs: 3000.0)
    text = "\n".join(experiment.plan(experiment.configs()))
    assert "take far longer than training" in text
    assert "--crops-train 5 takes about" in text and "--crops-train all (the 12 consecutive crops" in text


def test_faster_crops_hint_only_when_slow() -> None:
    from audiocpc.evaluation.embed import faster_crops_hint

    assert faster_crops_hint(30.0, 90, [10_000] * 4, 6000) == ""
    assert faster_crops_hint(1000.0, 5, [10_000] * 4, 6000) == ""
    # 6 crops are more than the 5 the hint offers: worth saying
    assert faster_crops_hint(1000.0, 6, [60_000] * 4, 6000).startswith("--crops 5 takes about")
    # files of 5 crops each: `--crops 5` already takes them all, so `all` is not offered
    assert "--crops all" not in faster_crops_hint(900.0, 90, [30_000] * 4, 6000)
    hint = faster_crops_hint(900.0, 90, [60_000] * 4, 6000)
    assert "--crops 5 takes about 50 s" in hint and "--crops all" not in hint  # 10 crops per file
    # clips of 1-2 crops: `all` (the crops they hold) is offered too, with its own estimate
    hint = faster_crops_hint(900.0, 90, [6_000, 12_000, 12_000, 13_000], 6000)
    assert hint == ("--crops 5 takes about 50 s; --crops all (the 7 consecutive crops the files hold, "
                    "1.8 per file) about 18 s")


def test_models_auto_joins_short_clips_and_the_users_overrides_win(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    data = tmp_path / "digits"
    data.mkdir()
    for speaker in ("jackson", "theo"):
        for n in range(3):  # 0.1 s: shorter than the `clips` preset's 0.25 s crop
            sf.write(data / f"{n}_{speaker}_{n}.wav", np.zeros(1600, np.float32), 16000)
    experiment = Experiment(RunOptions(models=["auto", "1dconv_tiny"], train_data=data,
                                       out=tmp_path / "results",
                                       overrides=["data.join_gap_seconds=0.05"]))
    auto, named = experiment.configs()
    assert auto.preset == "clips" and auto.data.join == "group"
    assert auto.data.join_pattern == "_(?P<group>[A-Za-z]+)_" and auto.data.join_gap_seconds == 0.05
    assert named.data.join == "none"  # only the model chosen by auto gets its join
