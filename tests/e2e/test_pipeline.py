"""End to end on the synthetic data: train -> embed -> classify -> t-SNE with a tiny preset,
through `audiocpc run`, with a test folder and without one."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audiocpc.cli import main
from audiocpc.experiments.pipeline import DEMO_OVERRIDES
from audiocpc.training.checkpoint import load_checkpoint


def _metrics(out: Path, features: str) -> dict:
    return json.loads((out / "classifier" / features / "metrics.json").read_text())


def _assert_mfcc_rows_are_of_the_listed_crops(mfcc_dir: Path, data_dir: Path) -> None:
    """The MFCC manifest is a copy of the CPC one, so equal manifests prove nothing: each stored
    row must be the MFCC summary of the audio at that row's own start, recomputed here from the
    decoded file, and not that of the file's beginning."""
    from audiocpc.data.audio import read_audio
    from audiocpc.evaluation.mfcc import mfcc_summary
    from audiocpc.evaluation.store import EmbeddingSplit

    stored = EmbeddingSplit.read(mfcc_dir, "test")
    rate = int(EmbeddingSplit.read_info(mfcc_dir, "test")["sample_rate"])
    later = [i for i, start in enumerate(stored.start_seconds) if float(start) > 0.1]
    assert len(later) >= len(stored) // 2   # crops start across the files, not all at 0
    for i in later[:12]:
        wave = read_audio(data_dir / stored.files[i], rate)
        start, length = round(float(stored.start_seconds[i]) * rate), round(float(stored.duration_seconds[i]) * rate)
        at_crop = mfcc_summary(wave[start:start + length], rate)
        at_file_start = mfcc_summary(wave[:length], rate)
        row = np.asarray(stored.features[i])
        assert np.allclose(row, at_crop, atol=1e-3), (stored.files[i], float(stored.start_seconds[i]))
        assert np.abs(row - at_file_start).max() > 1e-2


@pytest.mark.slow
def test_run_trains_embeds_classifies_and_beats_the_random_baseline(
        demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)  # the tiny model trains fastest on one thread
    out = tmp_path / "results"
    overrides = [a for o in DEMO_OVERRIDES if not o.startswith("train.epochs") for a in ("--set", o)]
    common = ["run", "--models", "1dconv_tiny", "--train-data", str(demo_dir / "train"),
              "--out", str(out), "--crops-train", "8", "--crops-test", "4", "--points", "300",
              "--quiet", *overrides, "--set", "train.epochs=3", "--set", "train.steps_per_epoch=50"]
    assert main([*common, "--embed-test", str(demo_dir / "test")]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out

    cpc, random, mfcc = (_metrics(out, f"1dconv_tiny{s}") for s in ("", "_random", "_mfcc"))
    assert cpc["split"]["mode"] == "test split" and cpc["split"]["test_files"] == 20
    assert cpc["classes"] == ["buzz", "chirp", "hum", "pulse", "whistle"]
    linear = cpc["probes"]["logreg"]["crop_accuracy"]
    assert linear > 0.7  # chance is 0.2
    assert linear > random["probes"]["logreg"]["crop_accuracy"]
    # the baselines saw exactly the crops the trained model embedded
    manifests = [(out / "embeddings" / f"1dconv_tiny{s}" / "test.csv").read_text()
                 for s in ("", "_random", "_mfcc")]
    assert manifests[0] == manifests[1] == manifests[2]
    assert mfcc["dim"] == 40 and mfcc["split"] == cpc["split"]
    _assert_mfcc_rows_are_of_the_listed_crops(out / "embeddings" / "1dconv_tiny_mfcc", demo_dir / "test")

    tsne = json.loads((out / "tsne" / "1dconv_tiny" / "tsne.json").read_text())
    assert tsne["points"] == 300 and len(tsne["per_class"]) == 5
    report = (out / "report.md").read_text()
    for text in ("| 1dconv_tiny |", "untrained (random init)", "MFCC mean+std",
                 "tsne/1dconv_tiny/tsne.png", "classifier/1dconv_tiny/confusion_logreg.png"):
        assert text in report
    for link in [line.split("](")[1].split(")")[0] for line in report.splitlines() if "](" in line]:
        assert (out / link).is_file(), link

    # again: every stage is finished, so nothing runs
    assert main([*common, "--embed-test", str(demo_dir / "test")]) == 0
    assert "train ran" not in (out / "report.md").read_text()
    assert "Stages this time: train skipped, embed skipped, mfcc skipped, classify skipped, " \
           "tsne skipped" in (out / "report.md").read_text()

    # without a test folder: whole files of the train folder are held out instead
    assert main(common) == 0
    cpc = _metrics(out, "1dconv_tiny")
    assert cpc["split"]["mode"] == "by file"
    assert not (out / "embeddings" / "1dconv_tiny" / "test.npy").exists()
    with open(out / "classifier" / "1dconv_tiny" / "split.csv") as handle:
        sides: dict[str, set[str]] = {}
        for row in csv.DictReader(handle):
            sides.setdefault(row["file"], set()).add(row["side"])
    assert {s for v in sides.values() for s in v} == {"train", "test"}
    assert all(len(v) == 1 for v in sides.values())
    assert cpc["probes"]["logreg"]["crop_accuracy"] > 0.5
    tsne = json.loads((out / "tsne" / "1dconv_tiny" / "tsne.json").read_text())
    assert len(tsne["per_class"]) == 5  # the held-out files are shown as test


def test_run_refuses_a_finished_run_trained_with_other_settings(demo_dir: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from audiocpc import load_config
    from audiocpc.training.checkpoint import save_checkpoint

    run_dir = tmp_path / "cpc" / "1dconv_tiny"
    trained = load_config("1dconv_tiny", [f"output.dir={tmp_path}"])
    save_checkpoint(run_dir / "checkpoint.pt", {"config": trained.to_dict(), "model": {},
                                                "step": 200, "finished": True})
    # config.yaml is for people: the checkpoint's own configuration is what counts
    asked = load_config("1dconv_tiny", [f"output.dir={tmp_path}", "train.lr=1e-4"])
    (run_dir / "config.yaml").write_text(asked.to_yaml())
    code = main(["run", "--models", "1dconv_tiny", "--train-data", str(demo_dir / "train"),
                 "--out", str(tmp_path), "--set", "train.lr=1e-4"])
    assert code == 2
    assert "train.lr" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["empty", "truncated", "missing"])
def test_a_damaged_config_yaml_beside_a_valid_checkpoint_changes_nothing(
        damage: str, tiny_run: Path, demo_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """#14.10: `run` trusts the checkpoint's own configuration, not config.yaml."""
    torch.set_num_threads(1)
    out = tmp_path / "results"
    run_dir = out / "cpc" / "1dconv_tiny"
    shutil.copytree(tiny_run, run_dir)
    config_yaml = run_dir / "config.yaml"
    if damage == "empty":
        config_yaml.write_text("")
    elif damage == "truncated":
        config_yaml.write_text(config_yaml.read_text()[: len(config_yaml.read_text()) // 2])
    else:
        config_yaml.unlink()
    # the settings tiny_run was trained with (its name and folder are not settings)
    same = ["--set", "data.N=8", "--set", "train.epochs=1", "--set", "train.steps_per_epoch=30"]
    command = ["run", "--models", "1dconv_tiny", "--train-data", str(demo_dir / "train"),
               "--embed-test", str(demo_dir / "test"), "--out", str(out), "--crops-train", "2",
               "--crops-test", "2", "--baselines", "--method", "pca", "--points", "50", "--quiet", *same]
    assert main(command) == 0, capsys.readouterr().err
    assert "Stages this time: train skipped, embed ran" in (out / "report.md").read_text()
    assert load_checkpoint(run_dir)["step"] == 30  # the training was kept, not redone
    # other settings are still refused, from the checkpoint's configuration alone
    assert main([*command, "--set", "train.lr=1e-4"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_classify_and_tsne_commands_on_embeddings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the helpers of tests/evaluation, importable also when only tests/e2e is collected
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
    from test_probe import clustered, write_embeddings

    x, files, labels = clustered(3, 6, crops=5, dim=8, spread=0.5, seed=0)
    write_embeddings(tmp_path / "embeddings" / "m", "train", x, files, labels)
    assert main(["classify", "m", "--out", str(tmp_path), "--probe", "logreg", "--probe", "knn",
                 "--pca", "4"]) == 0
    printed = capsys.readouterr().out
    assert "m logreg: crop accuracy" in printed and "m knn:" in printed
    metrics = json.loads((tmp_path / "classifier" / "m" / "metrics.json").read_text())
    assert metrics["probe_settings"]["pca_dim"] == 4 and metrics["split"]["mode"] == "by file"
    assert main(["tsne", str(tmp_path / "embeddings" / "m"), "--method", "pca", "--points", "50"]) == 0
    assert (tmp_path / "tsne" / "m" / "pca.svg").is_file()
    assert main(["classify", "m", "--out", str(tmp_path), "--features", "random"]) == 2
    assert "--random-init" in capsys.readouterr().err


def test_run_stops_before_training_when_the_files_carry_no_classes(tone_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # tone000.wav, tone001.wav, ...: one class ("tone") for every file
    assert main(["run", "--models", "1dconv_tiny", "--train-data", str(tone_dir),
                 "--out", str(tmp_path)]) == 2
    assert "only tone found" in capsys.readouterr().err
    assert not (tmp_path / "cpc").exists()
