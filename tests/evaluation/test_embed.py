"""Embedding folders: output format, crop positions, shared window encoding, the CLI."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocpc.cli import main
from audiocpc import load_config
from audiocpc.api import embed_folder
from audiocpc.evaluation.embed import MANIFEST_COLUMNS, crop_starts, embed_crops, window_reuse
from audiocpc.errors import ConfigError
from audiocpc.models import build_cpc

TINY_CROP = 12 * 500  # 1dconv_tiny: T=12 windows of 500 samples at 8 kHz
TINY_SR = 8000


def _manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        return list(reader)


def _write(folder: Path, name: str, seconds: float, sample_rate: int = TINY_SR, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = 0.4 * np.sin(2 * np.pi * rng.uniform(200, 900) * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(folder / name, wave.astype(np.float32), sample_rate, subtype="FLOAT")
    return folder / name


def test_output_files_match_each_other(tiny_run: Path, demo_dir: Path, tmp_path: Path) -> None:
    result = embed_folder(tiny_run, demo_dir / "test", "test", crops=3, out=tmp_path, progress=False)
    folder = tmp_path / "embeddings" / "tiny"
    array = np.load(folder / "test.npy")
    rows = _manifest(folder / "test.csv")
    info = json.loads((folder / "test.json").read_text())
    files = sorted(p.name for p in (demo_dir / "test").glob("*.wav"))
    assert array.dtype == np.float32 and array.shape == (len(files) * 3, 64)
    assert np.all(np.isfinite(array)) and array.std() > 0
    assert np.array_equal(array, result.embeddings)
    assert [int(r["row"]) for r in rows] == list(range(len(array)))
    assert sorted({r["file"] for r in rows}) == files
    assert all(r["label"] == r["file"].split(".")[0] for r in rows)  # hum.00003.wav -> hum
    assert {float(r["duration_seconds"]) for r in rows} == {TINY_CROP / TINY_SR}
    assert info["rows"] == len(rows) and info["dim"] == 64 and info["kind"] == "context"
    assert info["crops"] == 3 and info["run"] == "tiny" and info["sample_rate"] == TINY_SR
    assert info["labels"] == ["buzz", "chirp", "hum", "pulse", "whistle"]
    assert info["skipped_short"] == 0 and info["random_init"] is False


def test_crops_lie_inside_files_and_repeat_with_the_seed(tiny_run: Path, demo_dir: Path,
                                                          tmp_path: Path) -> None:
    first = embed_folder(tiny_run, demo_dir / "test", "test", crops=4, out=tmp_path / "a",
                         seed=3, progress=False)
    again = embed_folder(tiny_run, demo_dir / "test", "test", crops=4, out=tmp_path / "b",
                         seed=3, progress=False)
    other = embed_folder(tiny_run, demo_dir / "test", "test", crops=4, out=tmp_path / "c",
                         seed=4, progress=False)
    durations = {p.name: sf.info(str(p)).duration for p in (demo_dir / "test").glob("*.wav")}
    for name, start, length in zip(first.files, first.start_seconds, first.duration_seconds):
        assert 0 <= start and start + length <= durations[name] + 1e-6
    assert np.array_equal(first.start_seconds, again.start_seconds)
    assert np.array_equal(first.embeddings, again.embeddings)
    assert not np.array_equal(first.start_seconds, other.start_seconds)
    # distinct starts per file while the file has room, on the 500-sample window grid
    for name in set(first.files):
        starts = first.start_seconds[[f == name for f in first.files]]
        assert len(set(starts)) == 4
        assert np.allclose(np.round(starts * TINY_SR) % 500, 0)


def test_crops_all_tile_the_file(tiny_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    lengths = {"a.wav": 3.3, "b.wav": 0.75, "c.wav": 1.6}
    for i, (name, seconds) in enumerate(lengths.items()):
        _write(data, name, seconds, seed=i)
    result = embed_folder(tiny_run, data, "test", crops="all", out=tmp_path, progress=False)
    for name, seconds in lengths.items():
        starts = np.round(result.start_seconds[[f == name for f in result.files]] * TINY_SR)
        count = int(seconds * TINY_SR) // TINY_CROP
        assert list(starts) == [i * TINY_CROP for i in range(count)]  # consecutive, no overlap
        assert seconds * TINY_SR - (starts[-1] + TINY_CROP) < TINY_CROP  # only a short tail left


def test_short_files_are_skipped_and_reported(tiny_run: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "rock" / "data"  # a parent folder named like a class must not matter
    _write(data, "blues.00000.wav", 1.0)
    _write(data, "7seven00032.wav", 1.2, seed=1)
    _write(data, "pop37.wav", 0.5, seed=2)  # shorter than one 0.75 s crop
    with caplog.at_level(logging.WARNING, logger="audiocpc"):
        result = embed_folder(tiny_run, data, "train", crops=2, out=tmp_path, progress=False)
    assert sorted(set(result.files)) == ["7seven00032.wav", "blues.00000.wav"]
    assert sorted(set(result.labels)) == ["blues", "seven"]
    assert result.info["skipped_short"] == 1 and result.info["files"] == 2
    assert any("skipped 1 file(s) shorter than 0.750 s" in r.getMessage() for r in caplog.records)
    # the crop is T windows here (full_duration is 1.0 s): the warning names what sets it
    warning = next(r.getMessage() for r in caplog.records if "shorter than" in r.getMessage())
    assert "data.T = 12 windows of 500 samples" in warning and "(data.full_duration)" not in warning


def test_train_and_test_of_different_kinds_are_refused_naming_the_split(
        tiny_run: Path, demo_dir: Path, tmp_path: Path) -> None:
    from audiocpc.errors import AudiocpcError
    from audiocpc.evaluation.classify import classify

    embed_folder(tiny_run, demo_dir / "train", "train", crops=2, out=tmp_path, progress=False)
    embed_folder(tiny_run, demo_dir / "test", "test", crops=2, kind="z_mean", out=tmp_path,
                 progress=False)
    with pytest.raises(AudiocpcError) as err:
        classify(tmp_path / "embeddings" / "tiny", tmp_path / "classifier", ["logreg"])
    message = str(err.value)
    assert "kind: train 'context', test 'z_mean'" in message
    assert "re-embed the test split" in message and "--split test --kind context" in message


def _window_model(context: str) -> CPCModel:
    overrides = ["model.context.type=transformer", "model.context.dense_units=[32]"] \
        if context == "transformer" else []
    torch.manual_seed(0)
    return build_cpc(load_config("1dconv_tiny", overrides)).eval()


@pytest.mark.parametrize("context", ["gru", "transformer"])
def test_shared_window_encoding_equals_crop_by_crop(context: str) -> None:
    model = _window_model(context)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.3 for n in (20000, 6000, 13457)]
    # 14 crops: enough distinct ones to share windows (the 6000-sample file's 14 are one crop)
    starts = [crop_starts(w.size, TINY_CROP, 14, 0, str(i), grid=500) for i, w in enumerate(waves)]
    starts[2] = np.array([0, 37, 500, 1999, 7457])  # off the grid too: still exact
    for kind in ("context", "context_mean", "z_mean") if context == "gru" else ("context",):
        shared, used = embed_crops(model, waves, starts, TINY_CROP, kind, batch_size=4, shared=True)
        direct, _ = embed_crops(model, waves, starts, TINY_CROP, kind, batch_size=7, shared=False)
        assert used and shared.shape == (sum(map(len, starts)), 64)
        np.testing.assert_allclose(shared, direct, atol=1e-5, rtol=0)
        automatic, chosen = embed_crops(model, waves, starts, TINY_CROP, kind, batch_size=4)
        assert chosen and np.array_equal(automatic, shared)
    # one crop per file shares nothing: embedded crop by crop
    single = [s[:1] for s in starts]
    assert window_reuse(single, TINY_CROP, 500) == 1.0
    assert not embed_crops(model, waves, single, TINY_CROP, "context", batch_size=4)[1]


def test_random_init_is_the_untrained_baseline(tiny_run: Path, demo_dir: Path, tmp_path: Path) -> None:
    trained = embed_folder(tiny_run, demo_dir / "test", "test", crops=1, out=tmp_path, progress=False)
    baseline = embed_folder(tiny_run, demo_dir / "test", "test", crops=1, out=tmp_path,
                            random_init=True, progress=False)
    assert baseline.folder == tmp_path / "embeddings" / "tiny_random"
    assert baseline.info["random_init"] is True
    assert np.array_equal(trained.start_seconds, baseline.start_seconds)
    assert not np.allclose(trained.embeddings, baseline.embeddings, atol=1e-3)


def test_bad_options_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown embedding kind"):
        embed_folder(tmp_path / "missing-run", tmp_path, "test", kind="c_last")
    with pytest.raises(ConfigError, match="positive number or 'all'"):
        embed_folder(tmp_path / "missing-run", tmp_path, "test", crops=0)
    with pytest.raises(ConfigError, match="plain name"):
        embed_folder(tmp_path / "missing-run", tmp_path, "../test")


def test_cli_embed_writes_the_split(tiny_run: Path, demo_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["embed", str(tiny_run), "--data", str(demo_dir / "test"), "--split", "test",
                 "--crops", "2", "--kind", "z_mean", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    folder = tmp_path / "embeddings" / "tiny"
    array = np.load(folder / "test.npy")
    assert array.shape == (40, 64) and len(_manifest(folder / "test.csv")) == 40
    assert json.loads((folder / "test.json").read_text())["kind"] == "z_mean"
    assert "test.npy (40 x 64" in capsys.readouterr().out


def test_cli_embed_with_a_bad_run_folder_exits_2(tmp_path: Path, demo_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["embed", str(tmp_path / "nope"), "--data", str(demo_dir / "test"),
                 "--split", "test", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "audiocpc: error: no trained model in" in err and "checkpoint.pt not found" in err
    assert not (tmp_path / "embeddings").exists()


def test_labels_from_a_table_reach_the_manifest(tiny_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data / "takes", "a.wav", 1.0)
    _write(data, "b.wav", 1.0, seed=1)
    table = tmp_path / "labels.csv"
    table.write_text("file,label\ntakes/a.wav,dog\n")
    code = main(["embed", str(tiny_run), "--data", str(data), "--split", "test", "--crops", "1",
                 "--labels-csv", str(table), "--out", str(tmp_path), "--quiet"])
    assert code == 0
    rows = _manifest(tmp_path / "embeddings" / "tiny" / "test.csv")
    assert [(r["file"], r["label"]) for r in rows] == [("b.wav", ""), ("takes/a.wav", "dog")]
    info = json.loads((tmp_path / "embeddings" / "tiny" / "test.json").read_text())
    assert info["unlabelled_files"] == 1 and info["labels"] == ["dog"]


def test_embed_a_layer_with_pooling(tiny_run: Path, demo_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from audiocpc.cli import main

    common = [str(tiny_run), "--data", str(demo_dir / "test"), "--crops", "2", "--quiet"]
    assert main(["embed", *common, "--split", "zmean", "--kind", "z_mean", "--out", str(tmp_path / "a")]) == 0
    assert main(["embed", *common, "--split", "zmean", "--layer", "z", "--out", str(tmp_path / "b")]) == 0
    by_kind = np.load(tmp_path / "a" / "embeddings" / "tiny" / "zmean.npy")
    by_layer = np.load(tmp_path / "b" / "embeddings" / "tiny" / "zmean.npy")
    assert np.allclose(by_kind, by_layer, atol=1e-5)  # the same crops, the same numbers
    assert main(["embed", *common, "--split", "conv", "--layer", "encoder.conv2", "--pool", "meanstd",
                 "--out", str(tmp_path)]) == 0
    conv = np.load(tmp_path / "embeddings" / "tiny" / "conv.npy")
    info = json.loads((tmp_path / "embeddings" / "tiny" / "conv.json").read_text())
    assert conv.shape == (by_kind.shape[0], 2 * 64) and info["layer"] == "encoder.conv2"
    assert info["pool"] == "meanstd" and (conv[:, 64:] >= 0).all()  # the second half is a std
    # the layer is part of what the rows are made from (another layer: another embedding)
    assert (info["inputs"]["settings"]["layer"], info["inputs"]["settings"]["pool"]) == ("encoder.conv2", "meanstd")
    capsys.readouterr()
    assert main(["embed", *common, "--split", "x", "--layer", "conv9", "--out", str(tmp_path)]) == 2
    assert ("--layer: no layer named 'conv9'; this model's layers are: encoder.conv1, encoder.conv2, "
            "encoder.conv3, z, c") in capsys.readouterr().err
    assert main(["embed", *common, "--split", "x", "--pool", "meanmax", "--out", str(tmp_path)]) == 2
    assert "--pool: the 'context' embedding is c at the crop's last step" in capsys.readouterr().err


def test_hidden_states_from_python(tiny_run: Path) -> None:
    import audiocpc

    model = audiocpc.load(tiny_run, device="cpu")
    rng = np.random.default_rng(0)
    waves = [rng.uniform(-0.5, 0.5, 16000), rng.uniform(-0.5, 0.5, 8000)]  # 1 s and 0.5 s at 16 kHz
    states = model.hidden_states(waves, 16000)
    assert states.names == ["encoder.conv1", "encoder.conv2", "encoder.conv3", "z", "c"]
    assert states["c"].shape == (2, 16, 64) and states.lengths["c"].tolist() == [16, 8]
    assert states.frame_rate("z") == 16.0  # windows of 500 samples at 8 kHz
    features = model.embed(waves, 16000)
    assert torch.allclose(states["c"], features.c, atol=1e-5) and torch.allclose(states["z"], features.z, atol=1e-5)


def test_embed_prints_its_plan_with_a_measured_estimate(tiny_run: Path, demo_dir: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="audiocpc"):
        embed_folder(tiny_run, demo_dir / "test", "test", crops=2, out=tmp_path, progress=True)
    plan = [r.getMessage() for r in caplog.records if r.getMessage().startswith("plan: embedding")]
    assert len(plan) == 1
    assert "20 file(s) x 2 crop(s) = 40 crops of 0.750 s" in plan[0] and "measured on one batch" in plan[0]
    assert any(r.getMessage().startswith("classes found: 5 class(es) in 20 file(s)") for r in caplog.records)


def test_a_folder_without_usable_audio_is_one_clear_error_before_any_work(tiny_run: Path,
                                                                          tmp_path: Path) -> None:
    from audiocpc.errors import NoUsableAudioError

    data = tmp_path / "broken"
    data.mkdir()
    (data / "noise.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio at all")
    with pytest.raises(NoUsableAudioError, match="broken"):
        embed_folder(tiny_run, data, "test", crops=2, out=tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").rglob("test.*"))


def test_the_device_asked_for_is_the_one_used(tiny_run: Path, demo_dir: Path, tmp_path: Path) -> None:
    # no machine has a hundredth GPU: asked for, it is refused rather than silently replaced
    with pytest.raises(ConfigError, match="cuda:99"):
        embed_folder(tiny_run, demo_dir / "test", "test", crops=1, device="cuda:99", out=tmp_path,
                     progress=False)


def test_a_file_with_fewer_crop_starts_than_crops_is_counted_once_in_the_log(
        tiny_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    _write(data, "long.wav", 3.0)
    _write(data, "one_crop.wav", TINY_CROP / TINY_SR, seed=1)  # exactly one crop: one start
    with caplog.at_level(logging.INFO, logger="audiocpc"):
        result = embed_folder(tiny_run, data, "test", crops=3, out=tmp_path, progress=False)
    assert len(result.files) == 6
    message = next(r.getMessage() for r in caplog.records if "fewer crop starts" in r.getMessage())
    distinct = len({(f, s) for f, s in zip(result.files, result.start_seconds)})
    assert message.startswith("1 file(s) offer fewer crop starts")
    assert f"({distinct} distinct of 6 rows)" in message


def test_an_unreadable_file_stops_embedding_under_on_bad_file_error(tiny_run: Path,
                                                                    tmp_path: Path) -> None:
    import dataclasses

    from audiocpc.errors import NoUsableAudioError
    from audiocpc.training.restore import restore_run

    data = tmp_path / "data"
    _write(data, "good.wav", 2.0)
    (data / "noise.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio at all")
    run = restore_run(tiny_run, device="cpu")
    strict = run.config.model_copy(deep=True)
    strict.data.on_bad_file = "error"
    with pytest.raises(NoUsableAudioError, match="noise.wav.*data.on_bad_file=skip"):
        embed_folder(dataclasses.replace(run, config=strict), data, "test", crops=1,
                     out=tmp_path / "out", progress=False)
    # the run's own policy (skip) embeds the good file
    assert embed_folder(run, data, "test", crops=1, out=tmp_path / "out", progress=False).files == ["good.wav"]


def test_the_recorded_inputs_name_the_label_pattern(tiny_run: Path, tmp_path: Path) -> None:
    """The label pattern is part of what an embedding is made from: another pattern must make
    the recorded inputs differ, or a rerun would reuse labels read by the old pattern."""
    data = tmp_path / "data"
    _write(data, "dog_1.wav", 1.0)
    _write(data, "cat_1.wav", 1.0, seed=1)
    pattern = r"(?P<label>[a-z]+)_\d"
    code = main(["embed", str(tiny_run), "--data", str(data), "--split", "test", "--crops", "1",
                 "--label-pattern", pattern, "--out", str(tmp_path), "--quiet"])
    assert code == 0
    rows = _manifest(tmp_path / "embeddings" / "tiny" / "test.csv")
    assert sorted(r["label"] for r in rows) == ["cat", "dog"]
    info = json.loads((tmp_path / "embeddings" / "tiny" / "test.json").read_text())
    assert info["inputs"]["settings"]["labels"] == {"mode": "auto", "pattern": pattern}
