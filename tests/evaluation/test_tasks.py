"""HEAR-format tasks: `make-task` writes them with group-aware folds, `evaluate` runs HEAR's
downstream protocol (MLP grid, early stopping on validation) and a linear probe on the
model, its untrained twin and MFCCs."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocpc.cli import main
from audiocpc.data.audio import read_audio
from audiocpc.data.synthetic import synth_clip
from audiocpc.errors import ConfigError
from audiocpc.evaluation.tasks import (EvaluateOptions, MLPGrid, assign_folds, evaluate_task, make_task,
                                       read_task, task_scores)

QUICK = MLPGrid(hidden_layers=(1,), learning_rates=(1e-3, 1e-4), max_epochs=30, patience=5)


def _speaker_folder(folder: Path, speakers: int = 4, digits: int = 3, takes: int = 2) -> Path:
    """FSDD-like names `{digit}_{speaker}_{take}.wav` (8 kHz), made from synthetic clips."""
    folder.mkdir(parents=True, exist_ok=True)
    classes = ["hum", "whistle", "pulse"]
    for s in range(speakers):
        for d in range(digits):
            for t in range(takes):
                wave = synth_clip(classes[d], 0.3 + 0.1 * t, 8000, np.random.default_rng([s, d, t]))
                sf.write(folder / f"{d}_{'abcdefgh'[s] * 3}_{t}.wav", wave, 8000, subtype="PCM_16")
    return folder


def test_make_task_writes_hear_format_with_whole_groups_per_fold(tmp_path: Path) -> None:
    data = _speaker_folder(tmp_path / "speech")
    task = make_task(data, tmp_path / "task", label_pattern=r"^(?P<label>\d)_",
                     group_pattern=r"_(?P<group>[a-z]+)_", folds=3, sample_rates=[16000, 22050])
    meta = json.loads((tmp_path / "task" / "task_metadata.json").read_text())
    assert meta["embedding_type"] == "scene" and meta["prediction_type"] == "multiclass"
    assert meta["split_mode"] == "new_split_kfold" and meta["nfolds"] == 3 and meta["files"] == 24
    with open(tmp_path / "task" / "labelvocabulary.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == [{"idx": "0", "label": "0"}, {"idx": "1", "label": "1"},
                                                 {"idx": "2", "label": "2"}]
    assert task.sample_rates() == [16000, 22050]
    speakers_per_fold = []
    for fold in ("fold00", "fold01", "fold02"):
        table = json.loads((tmp_path / "task" / f"{fold}.json").read_text())
        speakers_per_fold.append({re.search(r"_([a-z]+)_", n).group(1) for n in table})
        for name, labels in table.items():
            assert labels == [name[0]]
            for rate in (16000, 22050):
                wave, rate_read = sf.read(tmp_path / "task" / str(rate) / fold / name, dtype="float32")
                assert rate_read == rate
                assert np.abs(wave - read_audio(data / name, rate)).max() < 1e-4  # PCM_16 rounding
    assert sum(len(s) for s in speakers_per_fold) == 4  # every speaker in exactly one fold
    assert all(speakers_per_fold) and set.union(*speakers_per_fold) == {"aaa", "bbb", "ccc", "ddd"}


def test_folds_balance_files_and_keep_groups_whole() -> None:
    groups = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["e"] * 2 + ["f"]
    folds = assign_folds(groups, 3, seed=0)
    by_group = {}
    for g, f in zip(groups, folds):
        assert by_group.setdefault(g, f) == f
    assert sorted(np.bincount(folds).tolist()) == [5, 5, 6]
    with pytest.raises(ConfigError, match="3 folds need at least 3 groups, but the files form 2"):
        assign_folds(["a", "b", "a"], 3)


def test_make_task_settings_are_checked(tmp_path: Path) -> None:
    data = _speaker_folder(tmp_path / "speech", speakers=2, digits=2, takes=1)
    with pytest.raises(ConfigError, match="needs a named group 'group'"):
        make_task(data, tmp_path / "t", group_pattern="_([a-z]+)_")
    with pytest.raises(ConfigError, match="at least 3 folds"):
        make_task(data, tmp_path / "t", folds=2)
    with pytest.raises(ConfigError, match="8000 is not a HEAR rate"):
        make_task(data, tmp_path / "t", sample_rates=[8000])
    assert main(["make-task", str(tmp_path / "missing"), "--out", str(tmp_path / "t")]) == 2


def test_read_task_refuses_event_tasks_and_missing_files(tmp_path: Path, hear_task: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(hear_task, copy)
    meta = json.loads((copy / "task_metadata.json").read_text())
    (copy / "fold01.json").unlink()
    with pytest.raises(ConfigError, match="fold02.json|at least 3 fold files"):
        evaluate_task(copy, "unused", tmp_path / "out", EvaluateOptions(features=("mfcc",)))
    meta["embedding_type"] = "event"
    (copy / "task_metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="only scene-level tasks are supported so far"):
        read_task(copy)
    with pytest.raises(ConfigError, match="not a HEAR task"):
        read_task(tmp_path)


def test_kfold_tasks_test_each_fold_and_validate_on_the_next(hear_task: Path) -> None:
    assert read_task(hear_task).folds() == [(["fold02"], "fold01", "fold00"),
                                            (["fold00"], "fold02", "fold01"),
                                            (["fold01"], "fold00", "fold02")]


def test_evaluate_prints_cpc_mfcc_and_random_init(tiny_run: Path, hear_task: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", str(hear_task), "--model", str(tiny_run), "--out", str(tmp_path),
                 "--hidden-layers", "1", "--lrs", "1e-3", "1e-4", "--max-epochs", "30", "--patience", "5"])
    assert code == 0
    printed = capsys.readouterr().out
    for row in ("| CPC | 64 |", "| random-init | 64 |", "| MFCC | 40 |"):
        assert row in printed
    assert "MLP grid (HEAR)" in printed and "linear probe" in printed
    results = json.loads((tmp_path / "synthetic" / "results.json").read_text())
    assert results["metric"] == "top1_acc" and results["folds"] == 3 and results["sample_rate"] == 16000
    assert set(results["scores"]) == {f"{f}/{p}" for f in ("cpc", "random", "mfcc") for p in ("mlp", "linear")}
    for entry in results["scores"].values():
        assert len(entry["folds"]) == 3 and 0.0 <= entry["mean"] <= 1.0
        for fold in entry["folds"]:  # the configuration reported is the best on validation
            assert fold["chosen"]["valid"] == max(trial["valid"] for trial in fold["grid"])
    assert results["scores"]["mfcc/linear"]["mean"] > 0.5  # five distinct synthetic classes; chance 0.2
    assert results["scores"]["cpc/mlp"]["folds"][0]["train_files"] == 10  # one fold trains, one validates
    assert (tmp_path / "synthetic" / "results.md").read_text().startswith("synthetic: top1_acc")


def test_a_model_rate_the_task_lacks_is_refused(tiny_run: Path, hear_task: Path, tmp_path: Path) -> None:
    options = EvaluateOptions(features=("cpc",), grid=QUICK, hear_options={"sample_rate": 22050})
    with pytest.raises(ConfigError, match=r"the model takes 22050 Hz audio, but the task has 16000"):
        evaluate_task(hear_task, tiny_run, tmp_path, options)


def _multilabel_task(folder: Path) -> Path:
    """trainvaltest, multilabel: a clip is the sum of one or two synthetic classes."""
    rng = np.random.default_rng(0)
    names = ["hum", "whistle", "pulse"]
    for split, count in (("train", 24), ("valid", 9), ("test", 9)):
        (folder / "16000" / split).mkdir(parents=True)
        table = {}
        for i in range(count):
            chosen = sorted(set(rng.choice(3, size=int(rng.integers(1, 3)))))
            wave = sum(synth_clip(names[c], 0.5, 16000, rng) for c in chosen) / len(chosen)
            sf.write(folder / "16000" / split / f"{i}.wav", wave, 16000)
            table[f"{i}.wav"] = [names[c] for c in chosen]
        (folder / f"{split}.json").write_text(json.dumps(table))
    (folder / "labelvocabulary.csv").write_text("idx,label\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    (folder / "task_metadata.json").write_text(json.dumps({
        "task_name": "mixtures", "embedding_type": "scene", "prediction_type": "multilabel",
        "split_mode": "trainvaltest", "evaluation": ["mAP"]}))
    return folder


def test_multilabel_tasks_score_mean_average_precision(tmp_path: Path) -> None:
    task = _multilabel_task(tmp_path / "mixtures")
    results = evaluate_task(task, "unused", tmp_path / "out", EvaluateOptions(features=("mfcc",), grid=QUICK))
    assert results["metric"] == "mAP" and results["folds"] == 1
    assert results["scores"]["mfcc/linear"]["mean"] > 0.6 and results["scores"]["mfcc/mlp"]["mean"] > 0.6
    perfect = task_scores("multilabel", np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[1, 0], [0, 1]]))
    assert perfect == {"mAP": 1.0, "top1_acc": 1.0}


def test_an_fsdd_task_made_with_speaker_groups(fsdd_dir: Path, tmp_path: Path) -> None:
    subset = tmp_path / "fsdd"
    subset.mkdir()
    for speaker in ("george", "jackson", "lucas", "nicolas", "theo", "yweweler"):
        for digit in range(3):
            for take in range(2):
                shutil.copy(fsdd_dir / f"{digit}_{speaker}_{take}.wav", subset)
    assert main(["make-task", str(subset), "--out", str(tmp_path / "task"), "--label-pattern",
                 r"^(?P<label>\d)_", "--group-pattern", r"_(?P<group>[a-z]+)_", "--folds", "3"]) == 0
    task = read_task(tmp_path / "task")
    assert task.vocabulary == ["0", "1", "2"] and task.metadata["files"] == 36
    speakers = [{n.split("_")[1] for n in task.labels[f]} for f in ("fold00", "fold01", "fold02")]
    assert all(len(s) == 2 for s in speakers) and len(set.union(*speakers)) == 6


def test_make_task_replaces_its_own_task_and_refuses_other_folders(tmp_path: Path) -> None:
    data = _speaker_folder(tmp_path / "speech")
    rules = {"label_pattern": r"^(?P<label>\d)_", "group_pattern": r"_(?P<group>[a-z]+)_"}
    make_task(data, tmp_path / "task", folds=4, **rules)
    task = make_task(data, tmp_path / "task", folds=3, **rules)
    assert task.splits == ["fold00", "fold01", "fold02"]  # no fold03 left from the first one
    assert not (tmp_path / "task" / "16000" / "fold03").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty and is not a task written by make-task"):
        make_task(data, other, folds=3, **rules)
    assert (other / "notes.txt").read_text() == "mine"


def test_files_whose_names_differ_only_in_extension_both_get_in(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for label in ("hum", "buzz"):
        (data / label).mkdir(parents=True)
        for i in range(3):
            wave = synth_clip(label, 0.3, 16000, np.random.default_rng(i))
            sf.write(data / label / f"clip{i}.wav", wave, 16000)
        sf.write(data / label / "clip0.flac", synth_clip(label, 0.3, 16000, np.random.default_rng(9)), 16000)
    task = make_task(data, tmp_path / "task", folds=3)
    names = sorted(n for table in task.labels.values() for n in table)
    assert len(names) == 8 and {"hum__clip0__flac.wav", "hum__clip0__wav.wav", "hum__clip1.wav"} <= set(names)
