"""`audiocpc run` after a kill: every stage's output must come from the inputs on disk now.

The issue's case: a run finished with 2 epochs, rerun with 3 and killed when the test split
is being embedded; the next run must not keep the 2-epoch test embeddings (or the metrics
made from them). The kills are simulated deterministically by an exception raised where the
stage starts (the files are written atomically, so a kill -9 there leaves the same state);
one test also kills a real `audiocpc run` process with SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

import audiocpc
from audiocpc.evaluation import classify as classify_module
from audiocpc.evaluation import embed as embed_module
from audiocpc.evaluation.classify import classify
from audiocpc.evaluation.probe import ProbeSettings
from audiocpc.experiments.pipeline import RunOptions, run_experiments
from audiocpc.training.checkpoint import load_checkpoint

MODEL = "1dconv_tiny"
STEPS_PER_EPOCH = 3


class Killed(Exception):
    """Stands for the process dying at this point."""


def _options(out: Path, demo_dir: Path, epochs: int) -> RunOptions:
    return RunOptions(models=[MODEL], train_data=demo_dir / "train", embed_test=demo_dir / "test",
                      overrides=[f"train.epochs={epochs}", f"train.steps_per_epoch={STEPS_PER_EPOCH}",
                                 "data.N=4"],
                      out=out, probes=["logreg", "mlp"], crops_train=2, crops_test=2,
                      tsne_method="pca", tsne_points=100, progress=False)


def _stages(out: Path) -> str:
    """'train skipped, embed ran, ...' from the report, without the seconds."""
    line = next(l for l in (out / "report.md").read_text().splitlines() if l.startswith("Stages this time"))
    return re.sub(r" \(\d+ s\)", "", line.split(": ", 1)[1].rstrip("."))


def _metrics(out: Path, feature: str = "") -> dict[str, Any]:
    return json.loads((out / "classifier" / f"{MODEL}{feature}" / "metrics.json").read_text())


def _assert_made_from_the_current_checkpoint(out: Path, demo_dir: Path, tmp_path: Path) -> None:
    run_dir = out / "cpc" / MODEL
    assert load_checkpoint(run_dir)["step"] == 3 * STEPS_PER_EPOCH
    embeddings = out / "embeddings" / MODEL
    for split in ("train", "test"):  # what the final model gives for the same crops
        # with the embedding `audiocpc run` uses by default (z and c, mean and std)
        fresh = audiocpc.embed_folder(run_dir, demo_dir / split, split, crops=2, kind="zc",
                                      pool="meanstd",
                                      out=tmp_path / "fresh", progress=False)
        assert np.array_equal(np.load(embeddings / f"{split}.npy"), fresh.embeddings), split
    # the metrics are those of these embeddings (the MLP's loss history is continuous, so
    # metrics of other embeddings cannot agree by chance)
    fresh_metrics = classify(embeddings, tmp_path / "fresh-metrics", ["logreg", "mlp"],
                             ProbeSettings(seed=0), 0.25, 0)
    assert _metrics(out)["probes"] == fresh_metrics["probes"]


def test_a_run_killed_while_embedding_the_test_split_is_finished_with_the_new_model(
        demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "results"
    run_experiments(_options(out, demo_dir, epochs=2))

    real_embed = embed_module.embed_folder

    def dies_at_the_test_split(*args: Any, **kwargs: Any) -> Any:
        if args[2] == "test" and not kwargs.get("random_init"):
            raise Killed
        return real_embed(*args, **kwargs)

    monkeypatch.setattr(embed_module, "embed_folder", dies_at_the_test_split)
    with pytest.raises(Killed):
        run_experiments(_options(out, demo_dir, epochs=3))
    monkeypatch.setattr(embed_module, "embed_folder", real_embed)

    run_experiments(_options(out, demo_dir, epochs=3))
    _assert_made_from_the_current_checkpoint(out, demo_dir, tmp_path)
    # the 3-epoch model was kept; the test split and everything made from it redone (the
    # MFCCs of the same crops of the same audio are still current)
    assert _stages(out) == "train skipped, embed ran, mfcc skipped, classify ran, tsne ran"


def test_a_run_killed_while_classifying_redoes_the_metrics(
        demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "results"
    run_experiments(_options(out, demo_dir, epochs=2))
    real_classify = classify_module.classify

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise Killed

    monkeypatch.setattr(classify_module, "classify", dies)
    with pytest.raises(Killed):
        run_experiments(_options(out, demo_dir, epochs=3))
    monkeypatch.setattr(classify_module, "classify", real_classify)

    run_experiments(_options(out, demo_dir, epochs=3))
    _assert_made_from_the_current_checkpoint(out, demo_dir, tmp_path)
    for feature in ("_random", "_mfcc"):  # the baselines' metrics are those of their embeddings
        fresh = classify(out / "embeddings" / f"{MODEL}{feature}", tmp_path / f"fresh{feature}",
                         ["logreg", "mlp"], ProbeSettings(seed=0), 0.25, 0)
        assert _metrics(out, feature)["probes"] == fresh["probes"]


def test_outputs_record_what_they_were_made_from(demo_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "results"
    run_experiments(_options(out, demo_dir, epochs=1))
    from audiocpc.fileio import sha256_file

    checkpoint = out / "cpc" / MODEL / "checkpoint.pt"
    test_json = json.loads((out / "embeddings" / MODEL / "test.json").read_text())
    assert test_json["inputs"]["model"] == {"checkpoint": {"step": STEPS_PER_EPOCH,
                                                           "sha256": sha256_file(checkpoint)}}
    assert test_json["inputs"]["data"]["files"] == 20
    assert test_json["inputs"]["settings"]["crops"] == 2
    random_json = json.loads((out / "embeddings" / f"{MODEL}_random" / "test.json").read_text())
    assert random_json["inputs"]["model"]["random_init"] is True
    embeddings = out / "embeddings" / MODEL
    metrics = _metrics(out)
    assert metrics["inputs"]["embeddings"]["test"] == {"npy": sha256_file(embeddings / "test.npy"),
                                                       "csv": sha256_file(embeddings / "test.csv")}
    assert metrics["inputs"]["settings"]["probes"] == ["logreg", "mlp"]
    tsne = json.loads((out / "tsne" / MODEL / "pca.json").read_text())
    assert tsne["inputs"]["embeddings"] == metrics["inputs"]["embeddings"]
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"][MODEL]["model"] == test_json["inputs"]["model"]

    # the same audio in another folder: the embeddings are made again, come out the same, so
    # the metrics and the map (made from their content) are kept
    copy = tmp_path / "test-data"
    shutil.copytree(demo_dir / "test", copy)
    options = _options(out, demo_dir, epochs=1)
    options.embed_test = copy
    run_experiments(options)
    assert _stages(out) == "train skipped, embed ran, mfcc ran, classify skipped, tsne skipped"
    run_experiments(options)
    assert _stages(out) == "train skipped, embed skipped, mfcc skipped, classify skipped, tsne skipped"
    # one file's audio changed on disk: everything made from it is redone, training is not
    victim = sorted(copy.glob("*.wav"))[0]
    wave, rate = sf.read(victim, dtype="float32")
    sf.write(victim, wave[::-1].copy(), rate)
    run_experiments(options)
    assert _stages(out) == "train skipped, embed ran, mfcc ran, classify ran, tsne ran"


def _read_until(process: subprocess.Popen, text: str) -> str:
    """Lines of the process's stderr up to the one holding `text` (a condition, not a timer)."""
    seen = []
    assert process.stderr is not None
    for line in process.stderr:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"the process ended before printing {text!r}:\n{''.join(seen)}")


def test_kill_9_when_embedding_the_test_split_then_rerun(demo_dir: Path, tmp_path: Path) -> None:
    """The issue's reproduction with a real process and SIGKILL."""
    out = tmp_path / "results"
    command = [sys.executable, "-m", "audiocpc", "run", "--models", MODEL,
               "--train-data", str(demo_dir / "train"), "--embed-test", str(demo_dir / "test"),
               "--out", str(out), "--crops-train", "2", "--crops-test", "2", "--method", "pca",
               "--points", "100", "--baselines", "mfcc", "--probe", "logreg", "--probe", "mlp", "--quiet",
               "--set", f"train.steps_per_epoch={STEPS_PER_EPOCH}", "--set", "data.N=4"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    subprocess.run([*command, "--set", "train.epochs=2"], env=env, check=True,
                   capture_output=True, timeout=600)
    process = subprocess.Popen([*command, "--set", "train.epochs=3"], env=env, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _read_until(process, "embedding test (cpc)")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    finished = subprocess.run([*command, "--set", "train.epochs=3"], env=env, capture_output=True,
                              text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    _assert_made_from_the_current_checkpoint(out, demo_dir, tmp_path)
