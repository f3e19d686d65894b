"""The HEAR API (audiocpc.hear) against a validator written from HEAR's rules, on every
built-in preset: clip lengths, dtypes, shapes, timestamp spacing, hop and the last timestamp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import TINY_PRESETS

import audiocpc.hear as hear
from audiocpc.errors import ConfigError
from audiocpc.evaluation.hear import HEAR_SAMPLE_RATES, default_hear_rate

HEAR_LENGTHS_S = (1.07, 1.98, 2.74, 4.0)


def hear_rule_problems(module, model, lengths=HEAR_LENGTHS_S, n_sounds: int = 2,
                       max_hop_ms: float = 50.0) -> list[str]:
    """What HEAR's validator would complain about, as a list of lines (empty = passes)."""
    problems = []
    if not isinstance(model, torch.nn.Module):
        problems.append("load_model must return a torch.nn.Module")
    for attribute in ("sample_rate", "scene_embedding_size", "timestamp_embedding_size"):
        if not isinstance(getattr(model, attribute, None), int):
            problems.append(f"model.{attribute} must be an int")
    if model.sample_rate not in HEAR_SAMPLE_RATES:
        problems.append(f"sample_rate {model.sample_rate} is not one of {HEAR_SAMPLE_RATES}")
    rng = np.random.default_rng(0)
    for seconds in lengths:
        samples = int(round(seconds * model.sample_rate))
        audio = torch.from_numpy(rng.uniform(-1, 1, (n_sounds, samples)).astype(np.float32))
        embeddings, timestamps = module.get_timestamp_embeddings(audio, model)
        scene = module.get_scene_embeddings(audio, model)
        where = f"{seconds} s"
        if embeddings.dtype != torch.float32 or timestamps.dtype != torch.float32 or scene.dtype != torch.float32:
            problems.append(f"{where}: outputs must be float32 ({embeddings.dtype}, {timestamps.dtype}, {scene.dtype})")
        if embeddings.ndim != 3 or embeddings.shape[0] != n_sounds or embeddings.shape[2] != model.timestamp_embedding_size:
            problems.append(f"{where}: timestamp embeddings of shape {tuple(embeddings.shape)}")
            continue
        if tuple(timestamps.shape) != tuple(embeddings.shape[:2]):
            problems.append(f"{where}: timestamps {tuple(timestamps.shape)} do not match embeddings {tuple(embeddings.shape[:2])}")
            continue
        if tuple(scene.shape) != (n_sounds, model.scene_embedding_size):
            problems.append(f"{where}: scene embeddings of shape {tuple(scene.shape)}")
        if not (torch.isfinite(embeddings).all() and torch.isfinite(scene).all()):
            problems.append(f"{where}: embeddings are not finite")
        if embeddings.shape[1] < 2:
            problems.append(f"{where}: fewer than two timestamps")
            continue
        steps = np.diff(timestamps.numpy().astype(np.float64), axis=1)
        hop = float(np.median(steps))
        if np.abs(steps - hop).max() > 1.0:
            problems.append(f"{where}: timestamp spacing deviates by {np.abs(steps - hop).max():.3f} ms (> 1 ms)")
        if not np.allclose(timestamps.numpy(), timestamps.numpy()[:1]):
            problems.append(f"{where}: sounds of the same length got different timestamps")
        if hop > max_hop_ms:
            problems.append(f"{where}: hop {hop:.1f} ms exceeds {max_hop_ms} ms")
        if float(timestamps[0, 0]) < 0:
            problems.append(f"{where}: negative first timestamp")
        gap = 1000.0 * samples / model.sample_rate - float(timestamps[0, -1])
        if not -hop <= gap <= 2 * hop:
            problems.append(f"{where}: last timestamp {float(timestamps[0, -1]):.1f} ms is {gap:.1f} ms "
                            f"from the end (more than two hops of {hop:.1f} ms)")
    return problems


@pytest.mark.parametrize("preset", sorted(TINY_PRESETS))
def test_every_builtin_preset_passes_the_hear_rules(preset: str, tiny_exports: dict[str, Path]) -> None:
    model = hear.load_model(str(tiny_exports[preset]), device="cpu")
    assert hear_rule_problems(hear, model) == []


def test_the_validator_catches_a_hop_over_50_ms(tiny_exports: dict[str, Path]) -> None:
    native = hear.load_model(tiny_exports["1dconv_gru"], device="cpu", hop_ms=None)  # 588 / 4410 Hz windows
    assert native.hop_ms == pytest.approx(1000 * 588 / 4410)
    assert any("exceeds 50" in p for p in hear_rule_problems(hear, native, lengths=(1.98,)))


def test_audio_at_another_rate_is_refused_naming_both_rates(tiny_exports: dict[str, Path]) -> None:
    model = hear.load_model(tiny_exports["cpc_tiny"], device="cpu")
    audio = torch.zeros(1, 22050)
    with pytest.raises(ConfigError, match=r"audio at 22050 Hz, but this HEAR model takes 16000 Hz"):
        hear.get_timestamp_embeddings(audio, model, sample_rate=22050)
    with pytest.raises(ConfigError, match=r"22050 Hz.*16000 Hz"):
        hear.get_scene_embeddings(audio, model, sample_rate=22050)
    assert hear.get_scene_embeddings(audio, model, sample_rate=16000).shape == (1, 16)
    with pytest.raises(ConfigError, match=r"8000 Hz is not a HEAR rate; choose one of 16000, 22050, 44100, 48000"):
        hear.load_model(tiny_exports["cpc_tiny"], sample_rate=8000)


def test_models_at_other_rates_are_wrapped_at_the_nearest_hear_rate_above() -> None:
    assert [default_hear_rate(r) for r in (4410, 8000, 16000, 16001, 22050, 32000, 96000)] == \
        [16000, 16000, 16000, 22050, 22050, 44100, 48000]


def test_a_chosen_hear_rate_resamples_to_the_models_rate(tiny_exports: dict[str, Path]) -> None:
    at_16k = hear.load_model(tiny_exports["cpc_tiny"], device="cpu")
    at_48k = hear.load_model(tiny_exports["cpc_tiny"], device="cpu", sample_rate=48000)
    t = np.arange(48000) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    e16, t16 = hear.get_timestamp_embeddings(torch.from_numpy(tone[::3].copy())[None], at_16k)
    e48, t48 = hear.get_timestamp_embeddings(torch.from_numpy(tone)[None], at_48k)
    assert torch.equal(t16, t48)  # timestamps are in real time, whatever the input rate
    assert torch.allclose(e16[:, 5:-5], e48[:, 5:-5], atol=2e-3)  # both become the same 8 kHz tone


def test_timestamp_embeddings_are_the_models_own_frames(tiny_exports: dict[str, Path]) -> None:
    import audiocpc

    model = hear.load_model(tiny_exports["cpc_paper"], device="cpu")  # 16 kHz: no resampling
    audio = torch.from_numpy(np.random.default_rng(1).uniform(-0.5, 0.5, (2, 16000)).astype(np.float32))
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    c = audiocpc.load(tiny_exports["cpc_paper"], device="cpu").embed(list(audio.numpy()), 16000).c
    inside = c.shape[1] - 3  # the last frames read the zeros padded at the end
    assert torch.allclose(embeddings[:, :inside], c[:, :inside], atol=1e-5)
    # frame t of the conv stack (strides 5,4,2,2,2, padding 3,2,1,1,1) reads samples [160 t - 153, 160 t + 312): centred at 160 t + 79
    assert torch.allclose(timestamps[0, :4], (160 * torch.arange(4) + 79) / 16, atol=1e-3)


def test_a_finer_hop_interleaves_shifted_windows(tiny_exports: dict[str, Path]) -> None:
    native = hear.load_model(tiny_exports["1dconv_tiny"], device="cpu", hop_ms=None)  # 500 samples at 8 kHz
    fine = hear.load_model(tiny_exports["1dconv_tiny"], device="cpu")
    assert native.hop_ms == 62.5 and fine.hop_ms == 31.25 and fine.shifts == [0, 250]
    audio = torch.from_numpy(np.random.default_rng(2).uniform(-0.5, 0.5, (1, 32000)).astype(np.float32))
    coarse_e, coarse_t = hear.get_timestamp_embeddings(audio, native)
    fine_e, fine_t = hear.get_timestamp_embeddings(audio, fine)
    assert coarse_t[0, 0] == pytest.approx(1000 * 249.5 / 8000)  # the centre of the first window
    # the unshifted run is every other frame of the fine one
    assert torch.equal(fine_t[:, 0::2], coarse_t[:, : fine_t[:, 0::2].shape[1]])
    assert torch.allclose(fine_e[:, 0::2], coarse_e[:, : fine_e[:, 0::2].shape[1]], atol=1e-6)


def test_layers_and_scene_pooling_are_options(tiny_exports: dict[str, Path]) -> None:
    joined = hear.load_model(tiny_exports["fsdd"], device="cpu", layer="z,c", scene_pool="meanstd")
    assert joined.timestamp_embedding_size == 32 and joined.scene_embedding_size == 64
    audio = torch.zeros(3, 16000)
    embeddings, _ = hear.get_timestamp_embeddings(audio, joined)
    scene = hear.get_scene_embeddings(audio, joined)
    assert embeddings.shape[2] == 32 and scene.shape == (3, 64)
    assert torch.allclose(scene[:, :32], embeddings.mean(dim=1), atol=1e-6)
    with pytest.raises(ConfigError, match=r"no layer named nope; this model's layers are: encoder.logmel, "
                                          r"encoder.conv1, z, c"):
        hear.load_model(tiny_exports["fsdd"], layer="nope")
    with pytest.raises(ConfigError, match="different frame rates"):
        hear.load_model(tiny_exports["fsdd"], layer="encoder.logmel,c")
    with pytest.raises(ConfigError, match="unknown option 'hop'"):
        hear.load_model(tiny_exports["fsdd"], hop=10)
    with pytest.raises(ConfigError, match="give model_file_path"):
        hear.load_model()


def test_random_init_is_the_untrained_model(tiny_run: Path) -> None:
    trained = hear.load_model(tiny_run, device="cpu")
    untrained = hear.load_model(tiny_run, device="cpu", random_init=True)
    audio = torch.from_numpy(np.random.default_rng(3).uniform(-0.5, 0.5, (1, 16000)).astype(np.float32))
    assert not torch.allclose(hear.get_scene_embeddings(audio, trained), hear.get_scene_embeddings(audio, untrained))


@pytest.mark.parametrize("preset", ["1dconv_gru", "cpc_paper"])
def test_a_sound_shorter_than_a_frame_still_gets_one(preset: str, tiny_exports: dict[str, Path]) -> None:
    model = hear.load_model(tiny_exports[preset], device="cpu")
    for samples in (160, 800):  # 10 ms and 50 ms at 16 kHz: shorter than one 133 ms window
        embeddings, timestamps = hear.get_timestamp_embeddings(torch.zeros(2, samples), model)
        assert embeddings.shape[:2] == timestamps.shape and timestamps.shape[1] >= 1
        assert torch.isfinite(embeddings).all()


def test_sounds_are_prepared_like_training_recordings(tiny_exports: dict[str, Path]) -> None:
    """A model trained on standardised recordings (data.standardize) sees standardised sounds."""
    import types

    from audiocpc.evaluation.hear import HearModel, recording_preparation

    loaded = hear.load_model(tiny_exports["cpc_tiny"], device="cpu")
    plain = HearModel(loaded.model, "raw")  # no preparation: the level passes through
    scaled = types.SimpleNamespace(data=types.SimpleNamespace(standardize=True))
    from audiocpc.data import audio as audio_io

    if hasattr(audio_io, "standardize"):  # trees with data.standardize
        prepare = recording_preparation(scaled)
    else:
        prepare = lambda w: (w - w.mean()) / (w.std() + 1e-8)  # noqa: E731
    model = HearModel(loaded.model, "standardised", prepare=prepare)
    audio = torch.from_numpy(np.random.default_rng(4).uniform(-0.1, 0.1, (2, 16000)).astype(np.float32))
    quiet, _ = hear.get_timestamp_embeddings(audio, model)
    loud, _ = hear.get_timestamp_embeddings(8 * audio, model)
    assert torch.allclose(quiet, loud, atol=1e-4)  # each sound scaled as a whole first
    assert not torch.allclose(*(hear.get_timestamp_embeddings(a, plain)[0] for a in (audio, 8 * audio)), atol=1e-4)
