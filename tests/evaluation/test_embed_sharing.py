"""Embedding shares encoder work on every data shape, and gives crop-by-crop's numbers:
frame mode encodes the frames a file's crops cover once, window mode keeps crops on the
window grid, and a crop planned twice is embedded once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_models import build_model, tiny_config

from audiocpc.api import embed_folder
from audiocpc.evaluation import embed as embed_module
from audiocpc.evaluation.embed import crop_length, crop_starts, embed_crops, plan_crops
from audiocpc.models import CPCModel

FRAME_PRESETS = ["cpc_tiny", "cpc_paper", "clips", "recordings"]  # frame mode, local encoders


def _seeded_model(preset: str) -> CPCModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(tiny_config(preset)).eval()


def _noise(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * sample_rate)) * 0.3).astype(np.float32)


@pytest.mark.parametrize("preset", FRAME_PRESETS)
def test_frame_mode_shares_frames_and_equals_crop_by_crop(preset: str) -> None:
    config = tiny_config(preset)
    model = _seeded_model(preset)
    crop, rate = crop_length(config), config.data.sample_rate
    hop = embed_module.crop_grid(model)
    assert model.mode == "frame" and hop > 1  # the encoder's frame hop
    # a clip of two crops, a 5 s clip, a longer recording
    waves = [_noise(2 * crop / rate, rate, 1), _noise(5.0, rate, 2), _noise(8.0, rate, 3)]
    starts = plan_crops([w.size for w in waves], ["a", "b", "c"], crop, 40, seed=0, grid=hop)
    assert all(np.all(s % hop == 0) for s in starts)
    starts[2] = np.concatenate([starts[2][:12], starts[2][:4] + 37])  # off the frame grid too: still exact
    kinds = (("zc", "meanstd"), ("context", "mean"), ("z_mean", "mean")) if preset == "cpc_tiny" \
        else (("zc", "meanstd"),)  # the kinds differ after the encoder only: one preset is enough
    for kind, pool in kinds:
        direct, used_direct = embed_crops(model, waves, starts, crop, kind, batch_size=8, shared=False, pool=pool)
        automatic, used = embed_crops(model, waves, starts, crop, kind, batch_size=8, pool=pool)
        assert used and not used_direct
        assert automatic.shape == (sum(map(len, starts)), direct.shape[1])
        np.testing.assert_allclose(automatic, direct, atol=2e-5, rtol=1e-4)


def test_frame_mode_blocks_and_passes_of_long_files_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An hour-long file is encoded in bounded blocks and bounded passes of crops: shrunk
    here so that a short file needs many of both."""
    config = tiny_config("cpc_tiny")
    model = _seeded_model("cpc_tiny")
    crop, rate = crop_length(config), config.data.sample_rate
    waves = [_noise(20.0, rate, 4)]
    starts = plan_crops([waves[0].size], ["long"], crop, 60, seed=1, grid=embed_module.crop_grid(model))
    direct, _ = embed_crops(model, waves, starts, crop, "zc", batch_size=16, shared=False)
    monkeypatch.setattr(embed_module, "FRAME_BLOCK", 40)  # a crop is 100 frames: blocks cut runs
    monkeypatch.setattr(embed_module, "SHARED_CROPS_PER_PASS", 7)
    shared, used = embed_crops(model, waves, starts, crop, "zc", batch_size=16, shared=True)
    assert used
    np.testing.assert_allclose(shared, direct, atol=2e-5, rtol=1e-4)


def test_an_encoder_that_normalises_across_the_crop_is_embedded_crop_by_crop() -> None:
    """fsdd standardises log-mel bins over the whole crop: a frame depends on the crop it is
    in, so shared frames would change the numbers; the check notices and falls back."""
    config = tiny_config("fsdd")
    model = _seeded_model("fsdd")
    crop, rate = crop_length(config), config.data.sample_rate
    waves = [_noise(5.0, rate, 5)]
    starts = plan_crops([waves[0].size], ["x"], crop, 90, seed=0, grid=embed_module.crop_grid(model))
    forced, _ = embed_crops(model, waves, starts, crop, "zc", batch_size=8, shared=True)
    direct, _ = embed_crops(model, waves, starts, crop, "zc", batch_size=8, shared=False)
    assert np.abs(forced - direct).max() > 1e-3  # sharing would be wrong here
    automatic, used = embed_crops(model, waves, starts, crop, "zc", batch_size=8)
    assert not used and np.array_equal(automatic, direct)


def test_a_file_with_fewer_grid_positions_than_crops_keeps_the_grid() -> None:
    # the 1dconv_gru geometry: crops of 27 windows of 588 samples, a 5 s file at 4410 Hz
    window, crop, length = 588, 27 * 588, 5 * 4410
    starts = crop_starts(length, crop, 90, seed=0, key="song.wav", grid=window)
    positions = (length - crop) // window + 1
    assert positions == 11 and len(starts) == 90
    assert np.all(starts % window == 0) and starts.max() + crop <= length
    values, counts = np.unique(starts, return_counts=True)
    assert len(values) == positions  # every position, none off the grid
    assert counts.max() - counts.min() <= 1  # as evenly as the count allows
    assert np.array_equal(starts, crop_starts(length, crop, 90, seed=0, key="song.wav", grid=window))
    # with room enough, distinct starts as before
    assert len(np.unique(crop_starts(30 * 4410, crop, 90, 0, "long.wav", window))) == 90


def test_five_second_file_with_90_crops_shares_windows_and_equals_crop_by_crop(
        tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    """The case of issue 17: 90 crops of a 5 s file at the 1dconv_gru geometry offer 11
    window-aligned starts; the crops stay on the grid and the shared-window path stays on."""
    data = tmp_path / "data"
    data.mkdir()
    rate = 4410
    for i in range(2):
        sf.write(data / f"clip{i}.wav", _noise(5.0, rate, 10 + i), rate, subtype="FLOAT")
    result = embed_folder(tiny_exports["1dconv_gru"], data, "train", crops=90, out=tmp_path / "out",
                          progress=False)
    info = json.loads((result.folder / "train.json").read_text())
    assert info["shared_window_encoding"] is True and info["rows"] == 180
    assert info["distinct_crops"] == 22
    starts = np.round(result.start_seconds * rate).astype(np.int64)
    assert np.all(starts % 588 == 0)
    # the same rows as crop by crop, with the model the run folder holds
    from audiocpc.data.corpus import NO_JOIN
    from audiocpc.data.scan import scan_folder
    from audiocpc.training.restore import restore_run

    restored = restore_run(tiny_exports["1dconv_gru"], device="cpu")
    crop = 27 * 588
    corpus = scan_folder(data, restored.config.data, crop, progress=False, join=NO_JOIN).corpus()
    waves = [np.asarray(w) for w in corpus.waves()]  # as embedding reads them (standardised)
    assert [Path(p).name for p in corpus.paths] == sorted(set(result.files))
    per_file = [starts[[f == Path(p).name for f in result.files]] for p in corpus.paths]
    model = restored.model
    direct, used = embed_crops(model, waves, per_file, crop, info["kind"], shared=False, pool=info["pool"])
    assert not used
    np.testing.assert_allclose(result.embeddings, direct, atol=2e-5, rtol=1e-4)
    # a repeated crop is one row repeated
    first = per_file[0]
    same = np.flatnonzero(first == first[0])
    assert len(same) > 1 and np.array_equal(result.embeddings[same[0]], result.embeddings[same[-1]])
