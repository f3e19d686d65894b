"""The CPC model family: presets, frame mode, negative policies, log-mel front end,
predictors, augmentation and the plug-in contract (issue 4)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from audiocpc import load_config
from audiocpc.presets import available_presets
from audiocpc.errors import ConfigError
from audiocpc.models import build_cpc
from audiocpc.models.negatives import _POLICIES, policies, sample_from_pool, sample_negatives, target_indices

REPO = Path(__file__).resolve().parents[2]

# Smaller batches / crops for the CPU test, same architecture and window as the preset
# (T+k = 6 windows of 588 samples = 0.8 s at 4410 Hz; cpc_paper: 16 frames).
SHRINK = {
    "1dconv_gru": ["data.T=3", "data.full_duration=0.8"],
    "1dconv_lstm": ["data.T=3", "data.full_duration=0.8"],
    "1dconv_transformer": ["data.T=3", "data.full_duration=0.8"],
    "2dconv_gru": ["data.T=3", "data.full_duration=0.8"],
    "2dconv_transformer": ["data.T=3", "data.full_duration=0.8"],
    "cpc_paper": ["data.full_duration=0.16"],
}


def _positive_scores(model: CPCModel, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """similarity(prediction from c_t for step j, z_{t+j}), pair by pair: [B, P, K]."""
    predictions = model.predictor(c)  # [B, C, K, D]
    context_length = c.shape[1]
    starts = [context_length - 1] if model.window is not None else list(range(context_length))
    steps = range(1, model.steps + 1)
    preds = torch.stack([predictions[:, t, j - 1] for t in starts for j in steps], dim=1)
    targets = torch.stack([z[:, t + j] for t in starts for j in steps], dim=1)  # [B, P*K, D]
    flat_p, flat_t = preds.reshape(-1, preds.shape[-1]), targets.reshape(-1, targets.shape[-1])
    pairs = model.similarity(flat_p, flat_t).diagonal()  # each prediction against its own target
    return pairs.view(z.shape[0], len(starts), model.steps)


@pytest.mark.parametrize("preset", available_presets())
def test_preset_builds_runs_forward_backward_with_positive_first(preset: str) -> None:
    config = load_config(preset, ["data.N=2"] + SHRINK.get(preset, []))
    torch.manual_seed(0)
    model = build_cpc(config)
    waves = torch.randn(2, config.data.crop_samples) * 0.1
    model.train()
    out = model(waves)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for part in (model.encoder, model.context, model.predictor):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(bool(g.abs().sum() > 0) for g in grads)

    # documented shape: [N, P, K, 1 + M]; P = 1 (window) or L - K (frame)
    negatives = config.loss.negatives
    m = config.data.N - 1 if negatives.count is None else negatives.count
    k = config.data.k
    if config.model.mode == "window":
        assert out.z.shape[1] == config.data.T + k
        assert out.logits.shape == (2, 1, k, 1 + m)
    else:
        length = model.encoder.output_length(config.data.crop_samples)
        assert out.z.shape[1] == length
        assert out.logits.shape == (2, length - k, k, 1 + m)

    model.eval()
    with torch.no_grad():
        out = model(waves)
        expected = _positive_scores(model, out.z, out.c)
    torch.testing.assert_close(out.logits[..., 0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", ["cpc_tiny", "1dconv_transformer"])   # frame and window mode
def test_the_forward_pass_makes_every_tensor_on_its_inputs_device(preset: str) -> None:
    """torch's default device set to meta while the model and its input stay on the CPU: a
    tensor made without `device=` (on a GPU run: a CPU tensor beside CUDA ones) lands on meta,
    which holds no data, so the forward pass fails, leaves the CPU, or reads garbage."""
    config = load_config(preset, ["data.N=2"] + SHRINK.get(preset, ["data.full_duration=0.25"]))
    torch.manual_seed(0)
    model = build_cpc(config).train()
    waves = torch.randn(2, config.data.crop_samples) * 0.1
    lengths = torch.tensor([config.data.crop_samples, config.data.crop_samples // 2])
    torch.manual_seed(1)
    expected = model(waves)
    torch.manual_seed(1)
    model.eval()
    layers = model.context.layer_outputs(expected.z.detach())
    model.train()
    torch.manual_seed(1)
    with torch.device("meta"):
        out = model(waves)
        _, c, frames = model.extract_features(waves, lengths)
        model.eval()
        meta_layers = model.context.layer_outputs(expected.z.detach())
    assert out.loss.device.type == "cpu" and c.device.type == "cpu"
    torch.testing.assert_close(out.logits, expected.logits)   # the same draws, the same scores
    for (name, value), (_, meta_value) in zip(layers, meta_layers):
        torch.testing.assert_close(meta_value, value, msg=name)
    assert frames is not None and frames.device.type == "cpu"


# ------------------------------------------------------------------ frame mode


@pytest.mark.slow  # real processes or a learning run: seconds, not milliseconds
def test_cpc_tiny_learns_every_step_in_frame_mode(demo_dir: Path, tmp_path: Path) -> None:
    from audiocpc.training.trainer import Trainer

    config = load_config("cpc_tiny", [f"output.dir={tmp_path}", "train.epochs=2",
                                      "train.steps_per_epoch=50"])
    assert config.model.mode == "frame"
    result = Trainer(config, demo_dir / "train", progress=False).fit()
    chance = 1 / (1 + config.loss.negatives.count)
    last = result.history[-1]
    accuracy = [last[f"acc_k{j}"] for j in range(1, config.data.k + 1)]
    assert all(a > 3 * chance for a in accuracy), (accuracy, chance)


def test_frame_mode_predicts_from_every_step() -> None:
    config = load_config("cpc_tiny", ["data.N=3"])
    model = build_cpc(config)
    out = model(torch.randn(3, config.data.crop_samples))
    length = config.data.crop_samples // 80  # 10 ms hops of the padded encoder
    assert out.z.shape == (3, length, config.model.z_dim)
    assert out.c.shape == (3, length - config.data.k, config.model.c_dim)
    assert out.step_accuracy.shape == (config.data.k,)


def test_frame_mode_problems_fail_at_load_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"data\.full_duration: .*gives 5 encoded steps.*data\.k = 5"):
        load_config("cpc_tiny", ["data.full_duration=0.05"])
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    with pytest.raises(ConfigError, match=r"model\.mode: frame mode needs an encoder with output_length"):
        load_config("cpc_tiny", ['model.encoder={type: "test_model_family:EncoderWithoutLength"}'])
    # the same encoder is fine in window mode
    load_config("1dconv_tiny", ['model.encoder={type: "test_model_family:EncoderWithoutLength"}'])


class EncoderWithoutLength(nn.Module):
    def __init__(self, z_dim: int):
        super().__init__()
        self.proj = nn.Conv1d(1, z_dim, 100, stride=100)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.proj(waves.unsqueeze(1)).transpose(1, 2)


# ------------------------------------------------------------------ negatives

B, L, K = 6, 20, 4
LABELS = torch.tensor([0, 0, 1, 1, 2, 0])


def _frame_targets() -> torch.Tensor:
    return target_indices(B, L, torch.arange(L - K), K)  # [B, L-K, K]


def test_same_sequence_never_draws_the_positives_time_index() -> None:
    torch.manual_seed(0)
    targets = _frame_targets()
    negatives = sample_negatives("same_sequence", targets, B, L, 64)
    assert negatives.shape == (*targets.shape, 64)
    assert torch.all(negatives // L == (targets // L).unsqueeze(-1))
    assert not torch.any(negatives % L == (targets % L).unsqueeze(-1))
    # every step of the sequence can be drawn (for some other positive)
    assert set(negatives[2].flatten().tolist()) == set(range(2 * L, 3 * L))


ALLOWED = {
    "other_sequences": lambda b, s: s != b,
    "same_sequence": lambda b, s: s == b,
    "batch": lambda b, s: True,
    "same_label": lambda b, s: bool(LABELS[s] == LABELS[b]),
    "other_label": lambda b, s: bool(LABELS[s] != LABELS[b]),
}


@pytest.mark.parametrize("policy", sorted(ALLOWED))
def test_each_policy_draws_only_from_its_pool(policy: str) -> None:
    torch.manual_seed(1)
    targets = _frame_targets()
    negatives = sample_negatives(policy, targets, B, L, 400, labels=LABELS)
    sequences = negatives // L
    for b in range(B):
        drawn = set(sequences[b].flatten().tolist())
        allowed = {s for s in range(B) if ALLOWED[policy](b, s)}
        assert drawn == allowed, (policy, b, drawn, allowed)  # inside the pool, and all of it
    assert not torch.any(negatives == targets.unsqueeze(-1))  # never the positive itself
    # roughly uniform over the pool's frames: no frame of the pool far above its share
    counts = torch.bincount(negatives[0].flatten(), minlength=B * L).float()
    pool = counts[counts > 0]
    assert pool.max() < 2.0 * pool.mean()


def test_the_positive_is_drawn_only_when_allowed() -> None:
    torch.manual_seed(2)
    targets = target_indices(2, 3, torch.tensor([0]), 2)
    plain = sample_negatives("batch", targets, 2, 3, 200)
    assert not torch.any(plain == targets.unsqueeze(-1))
    allowed = sample_negatives("batch", targets, 2, 3, 200, allow_positive=True)
    assert torch.any(allowed == targets.unsqueeze(-1))


def test_label_policies_need_labels_and_a_non_empty_pool() -> None:
    targets = _frame_targets()
    with pytest.raises(ConfigError, match="needs one label per sequence"):
        sample_negatives("same_label", targets, B, L, 8)
    # a batch of one class draws from the other sequences instead of stopping the run
    torch.manual_seed(0)
    one_class = sample_negatives("other_label", targets, B, L, 8, labels=torch.zeros(B, dtype=torch.long))
    assert not torch.any(one_class // L == (targets // L).unsqueeze(-1))
    # ... and only the sequence left alone falls back: the others still keep their rule
    labels = torch.tensor([0] * (B - 1) + [1])
    mixed = sample_negatives("other_label", targets, B, L, 64, labels=labels)
    source = labels[mixed // L]
    assert torch.all(source == torch.where(labels[targets // L] == 0, 1, 0).unsqueeze(-1))


def test_every_policy_mask_and_index_is_made_on_the_targets_device() -> None:
    # the meta device refuses to mix with CPU tensors, as CUDA does: a mask built on the CPU
    # beside CUDA targets would fail (or be copied every step) there
    meta = torch.device("meta")
    labels = LABELS.to(meta)
    for policy in policies():
        mask = _POLICIES[policy](B, labels, meta)
        assert mask.device == meta and mask.shape == (B, B) and mask.dtype == torch.bool, policy
    assert target_indices(B, L, torch.arange(L - K, device=meta), K).device == meta
    assert sample_negatives("other_sequences", _frame_targets().to(meta), B, L, None).device == meta


def test_an_empty_pool_names_the_sequences_that_have_none() -> None:
    allowed = torch.ones(3, 3, dtype=torch.bool)
    allowed[1] = False   # sequence 1 may draw from nobody
    with pytest.raises(ValueError, match=r"to sequence\(s\) \[1\] under"):
        sample_from_pool(target_indices(3, L, torch.tensor([0]), K), allowed, L, 4)


def test_the_pool_leaves_the_positive_out_unless_asked() -> None:
    torch.manual_seed(3)
    targets = target_indices(2, 3, torch.tensor([0]), 2)
    drawn = sample_from_pool(targets, torch.ones(2, 2, dtype=torch.bool), 3, 200)   # the default
    assert not torch.any(drawn == targets.unsqueeze(-1))


def test_a_batch_of_more_than_sixteen_sequences_never_draws_the_positive() -> None:
    # the pool lists the allowed sequences in index order, which the positive's exclusion
    # relies on; torch's CPU sort keeps ties in order for at most 16 elements unless stable=True
    torch.manual_seed(4)
    batch, length = 24, 5
    targets = target_indices(batch, length, torch.arange(length - 2), 2)
    labels = torch.arange(batch) % 3
    for policy in ("batch", "same_label"):
        negatives = sample_negatives(policy, targets, batch, length, 64, labels=labels)
        assert not torch.any(negatives == targets.unsqueeze(-1)), policy
        if policy == "same_label":
            assert torch.all(labels[negatives // length] == labels.view(-1, 1, 1, 1))


def test_training_with_a_label_policy_stops_before_any_work(
        tone_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from audiocpc.cli import main

    code = main(["train", "--preset", "cpc_tiny", "--data", str(tone_dir), "--out", str(tmp_path),
                 "--quiet", "--set", "loss.negatives.policy=same_label"])
    assert code == 2
    assert "loss.negatives.policy: 'same_label' needs a label per sequence: set data.labels" in capsys.readouterr().err
    assert not (tmp_path / "cpc" / "cpc_tiny" / "checkpoint.pt").exists()


def test_label_policy_through_the_model() -> None:
    config = load_config("cpc_tiny", ["data.N=4", "loss.negatives.policy=other_label",
                                      "data.labels=auto"])
    model = build_cpc(config)
    out = model(torch.randn(4, config.data.crop_samples), torch.tensor([0, 1, 0, 1]))
    assert torch.isfinite(out.loss)


# ------------------------------------------------------------------ log-mel front end


def _numpy_logmel(wave: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int,
                  smoothing: int) -> np.ndarray:
    """An independent float64 numpy log-mel: Slaney mel scale, triangular filters of peak 1,
    periodic Hann window, no centre padding; log, moving average, per-bin standardisation."""
    def to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000, 3 * f / 200, 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4))

    def to_hz(m):
        return np.where(m < 15, 200 * m / 3, 1000 * 6.4 ** ((m - 15) / 27))

    edges = to_hz(np.linspace(to_mel(0.0), to_mel(sr / 2), n_mels + 2))
    bins = np.arange(n_fft // 2 + 1) * sr / n_fft
    filters = np.zeros((n_mels, bins.size))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        filters[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    count = 1 + (wave.size - n_fft) // hop
    frames = np.stack([wave[i * hop: i * hop + n_fft] * window for i in range(count)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [frames, bins]
    logmel = np.log(filters @ power.T + 1e-6)  # [mels, frames]
    if smoothing > 1:
        half = smoothing // 2
        padded = np.pad(logmel, ((0, 0), (half, half)), mode="edge")
        logmel = np.stack([padded[:, i:i + smoothing].mean(axis=1) for i in range(count)], axis=1)
    mean = logmel.mean(axis=1, keepdims=True)
    return (logmel - mean) / np.sqrt(logmel.var(axis=1, keepdims=True) + 1e-3)


@pytest.mark.parametrize("smoothing", [1, 3])
def test_logmel_front_end_matches_a_numpy_reference(smoothing: int) -> None:
    from audiocpc.models.logmel import LogMelSpectrogram

    sr, n_fft, hop = 4410, 256, 5
    rng = np.random.default_rng(0)
    t = np.arange(588) / sr
    wave = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t ** 1.3) \
        + 0.05 * rng.standard_normal(t.size)
    front = LogMelSpectrogram(sr, n_fft, hop, n_mels=64, smoothing=smoothing)
    got = front(torch.from_numpy(wave.astype(np.float32)).unsqueeze(0))[0].numpy()
    want = _numpy_logmel(wave, sr, n_fft, hop, 64, smoothing)
    assert got.shape == want.shape == (64, 67)
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_logmel_patch_geometry_and_impossible_hops() -> None:
    config = load_config("2dconv_gru")
    model = build_cpc(config)
    encoder = model.encoder
    assert model.window == 588 and encoder.hop_length == (588 - 256) // 63
    patch = encoder.frontend(torch.randn(1, 256 + 63 * encoder.hop_length))
    assert patch.shape == (1, 64, 64)
    assert encoder(torch.randn(3, 588)).shape == (3, 1, config.model.z_dim)
    with pytest.raises(ConfigError, match=r"model\.encoder\.frames_per_window: a window of 588 samples"
                                          r".*cannot give 64 frames of n_fft 540"):
        load_config("2dconv_gru", ["model.encoder.n_fft=540"])
    with pytest.raises(ConfigError, match=r"model\.encoder\.hop_length: a window of 588 samples gives 34"):
        load_config("2dconv_gru", ["model.encoder.hop_length=10"])
    with pytest.raises(ConfigError, match=r"model\.encoder\.hop_length: frame mode needs an explicit hop"):
        load_config("2dconv_gru", ["model.mode=frame"])
    with pytest.raises(ConfigError, match=r"n_mels 64 is too many for n_fft 32"):
        load_config("2dconv_gru", ["model.encoder.n_fft=32"])


@pytest.mark.parametrize("norm", ["none", "batch", "layer", "channel"])
def test_logmel_encoder_in_frame_mode_with_each_norm(norm: str) -> None:
    encoder = {"type": "logmel_conv2d", "n_mels": 32, "n_fft": 128, "hop_length": 40,
               "channels": [8, 16], "dense_units": [32], "norm": norm, "dropout": 0.1}
    config = load_config("cpc_tiny", ["data.N=2", f"model.encoder={encoder}"])
    model = build_cpc(config)
    out = model(torch.randn(2, config.data.crop_samples))
    length = model.encoder.output_length(config.data.crop_samples)
    assert length == ((1 + (8000 - 128) // 40) + 3) // 4
    assert out.logits.shape == (2, length - 5, 5, 17)
    out.loss.backward()


# ------------------------------------------------------------------ predictors


@pytest.mark.parametrize("predictor", ["linear", "mlp", "transformer"])
def test_predictors_are_causal_and_shaped(predictor: str) -> None:
    config = load_config("cpc_tiny", [f"model.predictor.type={predictor}"])
    model = build_cpc(config).eval()
    c = torch.randn(2, 10, config.model.c_dim)
    out = model.predictor(c)
    assert out.shape == (2, 10, config.data.k, config.model.z_dim)
    changed = c.clone()
    changed[:, 6:] += 1.0
    again = model.predictor(changed)
    torch.testing.assert_close(out[:, :6], again[:, :6])
    assert not torch.allclose(out[:, 6:], again[:, 6:])


# ------------------------------------------------------------------ augmentation


def test_augmentation_is_seeded_and_does_what_it_says() -> None:
    from audiocpc.models.augment import WaveAugment

    waves = torch.sin(torch.linspace(0, 600, 8000)).repeat(4, 1)
    noisy = WaveAugment(apply_to="both", noise_snr_db=10.0)
    torch.manual_seed(3)
    first = noisy(waves)
    torch.manual_seed(3)
    assert torch.equal(first, noisy(waves))
    assert not torch.equal(first, noisy(waves))
    snr = 10 * torch.log10(waves.pow(2).mean(1) / (first - waves).pow(2).mean(1))
    assert torch.allclose(snr, torch.full_like(snr, 10.0), atol=0.3)

    gain = WaveAugment(apply_to="both", gain_db=6.0)(waves)
    ratio_db = 20 * torch.log10(gain.abs().amax(1) / waves.abs().amax(1))
    assert torch.all(ratio_db.abs() <= 6.0 + 1e-4) and ratio_db.std() > 0

    masked = WaveAugment(apply_to="both", time_masks=2, mask_samples=800)(waves)
    zeroed = (masked == 0) & (waves != 0)
    assert 0 < int(zeroed.sum(1).max()) <= 2 * 800
    assert torch.equal(masked[~zeroed], waves[~zeroed])


def test_augmentation_draws_its_random_numbers_on_the_device_of_the_batch() -> None:
    """Gains, noise and masks are made where the batch is (a meta tensor stands for a GPU
    here: anything drawn on the CPU instead fails to combine with it)."""
    from audiocpc.models.augment import WaveAugment

    every = WaveAugment(apply_to="both", gain_db=3.0, noise_snr_db=20.0, time_masks=1, mask_samples=5)
    out = every(torch.zeros(2, 100, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 100)


@pytest.mark.parametrize("settings, active", [
    ({}, False),
    ({"gain_db": 0.5}, True),              # any gain, however small, is a transform
    ({"noise_snr_db": 30.0}, True),
    ({"time_masks": 1, "mask_samples": 10}, True),
    ({"time_masks": 1, "mask_samples": 1}, True),    # one sample is a mask too
    ({"time_masks": 1, "mask_samples": 0}, False),   # masks of no length mask nothing
    ({"time_masks": 0, "mask_samples": 10}, False),
])
def test_augmentation_is_active_when_one_transform_is_on(settings: dict, active: bool) -> None:
    """`active` decides whether training augments at all (and whether augment.apply_to is
    refused as doing nothing): each transform alone turns it on."""
    from audiocpc.models.augment import WaveAugment

    assert WaveAugment(apply_to="both", **settings).active is active
    assert WaveAugment(apply_to="none", **settings).active is False


@pytest.mark.parametrize("preset,apply_to", [("1dconv_tiny", "past"), ("1dconv_tiny", "future"),
                                             ("cpc_tiny", "past"), ("cpc_tiny", "future")])
def test_augmentation_reaches_only_the_past_or_the_future(preset: str, apply_to: str) -> None:
    config = load_config(preset, ["data.N=2", f"augment.apply_to={apply_to}", "augment.noise_snr_db=0"])
    model = build_cpc(config)
    waves = torch.randn(2, config.data.crop_samples)
    with torch.no_grad():
        clean = model.encode(waves)
        model.train()
        z_past, z_future = model._encode_views(waves)
        model.eval()
        assert torch.equal(model._encode_views(waves)[0], clean)  # never at evaluation
    k = config.data.k
    if config.model.mode == "window":  # one encoding; the past is the first T windows
        assert torch.equal(z_past, z_future)
        augmented, kept = (slice(None, -k), slice(-k, None))
        if apply_to == "future":
            augmented, kept = kept, augmented
        assert torch.equal(z_past[:, kept], clean[:, kept])
        assert not torch.allclose(z_past[:, augmented], clean[:, augmented])
    else:  # two encodings: the context reads one, the targets come from the other
        view_clean, view_augmented = (z_future, z_past) if apply_to == "past" else (z_past, z_future)
        assert torch.equal(view_clean, clean)
        assert not torch.allclose(view_augmented, clean)


@pytest.mark.slow  # a training run of many steps: seconds, not milliseconds
def test_frame_mode_with_augmentation_and_sampled_negatives_resumes_exactly(
        tone_dir: Path, tmp_path: Path) -> None:
    """Augmentation and negatives draw from torch's generator, which the checkpoint saves."""
    from audiocpc.training.trainer import train

    # extended from 1 to 2 epochs: exact with a constant rate (a decay is planned over the run)
    common = ["data.N=2", "train.steps_per_epoch=2", "train.checkpoint_every=2",
              "train.lr_schedule=constant", "augment.apply_to=past", "augment.noise_snr_db=20", "augment.gain_db=6",
              "augment.time_masks=1"]

    def config(folder: str, epochs: int):
        return load_config("cpc_tiny", [f"output.dir={tmp_path / folder}", f"train.epochs={epochs}"]
                           + common)

    straight = train(config("a", 2), tone_dir, progress=False)
    train(config("b", 1), tone_dir, progress=False)
    resumed = train(config("b", 2), tone_dir, resume=True, progress=False)
    assert resumed.steps == 4
    assert resumed.step_losses == straight.step_losses


def test_augmentation_without_a_transform_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="augment.apply_to: is 'both' but no transform is on"):
        load_config("cpc_tiny", ["augment.apply_to=both"])


# ------------------------------------------------------------------ plug-ins


def _readme_custom_encoder_command() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^PYTHONPATH=\. audiocpc train .*?--data path/to/audio .*?"
                      r"examples\.my_encoder:MyEncoder.*?$",
                      text.replace("\\\n", " "), flags=re.MULTILINE)
    assert match, "README lost its worked custom-encoder command"
    return shlex.split(match.group(0))


def test_readme_custom_encoder_trains_through_its_import_path(
        tone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from audiocpc.training.checkpoint import load_checkpoint
    from audiocpc.cli import main

    command = _readme_custom_encoder_command()
    assert command[:3] == ["PYTHONPATH=.", "audiocpc", "train"]
    monkeypatch.syspath_prepend(str(REPO))  # what PYTHONPATH=. does from the repository root
    args = [str(tone_dir) if a == "path/to/audio" else a for a in command[2:]]
    args += ["--out", str(tmp_path), "--quiet", "--set", "train.epochs=1",
             "--set", "train.steps_per_epoch=4", "--set", "data.N=4"]
    assert main(args) == 0
    run = next((tmp_path / "cpc").iterdir())
    payload = load_checkpoint(run / "checkpoint.pt")
    assert payload["config"]["model"]["encoder"]["type"] == "examples.my_encoder:MyEncoder"
    assert payload["step"] == 4 and all(np.isfinite(payload["step_losses"]))
    assert any(k.startswith("encoder.net.") for k in payload["model"])


def test_unknown_component_names_list_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"model\.predictor\.type: unknown predictor 'rnn'.*"
                                          r"Registered: linear, mlp, transformer"):
        load_config("cpc_tiny", ["model.predictor.type=rnn"])
    with pytest.raises(ConfigError, match=r"unknown encoder .*logmel_conv2d"):
        load_config("cpc_tiny", ["model.encoder.type=conv3d"])


def test_lstm_forget_bias_sets_each_layers_forget_gates_only() -> None:
    """PyTorch stacks the gates input, forget, cell, output and adds two biases: the forget
    gates' sum is `forget_bias`, every other bias keeps its random initialisation."""
    from audiocpc.models.registry import build

    torch.manual_seed(0)  # torch's own LSTM, its biases as drawn (not our code with bias 0)
    plain = torch.nn.LSTM(6, 4, num_layers=2, batch_first=True)
    torch.manual_seed(0)
    lstm = build("context", "lstm", {"num_layers": 2, "forget_bias": 1.0}, in_dim=6, out_dim=4,
                 max_len=5)
    for index in range(2):
        ih, hh = (getattr(lstm.rnn, f"bias_{kind}_l{index}") for kind in ("ih", "hh"))
        torch.testing.assert_close(ih[4:8] + hh[4:8], torch.ones(4))
        for name in ("bias_ih", "bias_hh"):
            mine, theirs = getattr(lstm.rnn, f"{name}_l{index}"), getattr(plain, f"{name}_l{index}")
            torch.testing.assert_close(torch.cat([mine[:4], mine[8:]]), torch.cat([theirs[:4], theirs[8:]]))


def test_recurrent_contexts_built_without_parameters_have_one_layer_and_no_forget_bias() -> None:
    """The defaults a plug-in or a direct build gets: one layer, PyTorch's forget gates (sum 0),
    no dropout."""
    from audiocpc.models.registry import build

    lstm = build("context", "lstm", {}, in_dim=6, out_dim=4, max_len=5)
    assert lstm.rnn.num_layers == 1
    torch.testing.assert_close(lstm.rnn.bias_ih_l0[4:8] + lstm.rnn.bias_hh_l0[4:8], torch.zeros(4))
    assert build("context", "gru", {}, in_dim=6, out_dim=4, max_len=5).rnn.num_layers == 1
    for name in ("gru", "lstm"):  # and no dropout between stacked layers unless asked for
        assert build("context", name, {"num_layers": 2}, in_dim=6, out_dim=4, max_len=5).rnn.dropout == 0.0


def test_a_transformer_context_built_without_parameters_is_the_reference_one() -> None:
    """The defaults a plug-in or a direct build gets: the reference's Transformer (2 post-LN
    blocks of 2 heads, dff 100, dropout 0.1, z x sqrt(dim) plus sinusoidal codes)."""
    from audiocpc.models.registry import build

    network = build("context", "transformer", {}, in_dim=8, out_dim=4, max_len=5)
    assert len(network.blocks.layers) == 2 and network.blocks.norm is None
    layer = network.blocks.layers[0]
    assert layer.self_attn.num_heads == 2 and layer.linear1.out_features == 100
    assert not layer.norm_first and layer.dropout.p == 0.1 and network.dropout.p == 0.1
    assert network.input_scale == 8 ** 0.5 and network.position == "sinusoidal"
    assert network.position_conv is None


def test_predictors_built_without_parameters_have_their_documented_defaults() -> None:
    """linear: no bias unless asked for;
    mlp: 512 hidden ReLU units, no dropout; transformer: 4 heads, dff 4 x c_dim, no dropout
    (torch's own layer would add 0.1), so in training mode it is deterministic."""
    from audiocpc.models.registry import build

    linear = build("predictor", "linear", {}, c_dim=8, z_dim=4, steps=3)
    assert linear.proj.bias is None
    assert build("predictor", "linear", {"bias": True}, c_dim=8, z_dim=4, steps=3).proj.bias is not None
    mlp = build("predictor", "mlp", {}, c_dim=8, z_dim=4, steps=3)
    assert mlp.net[0].out_features == 512 and isinstance(mlp.net[1], torch.nn.ReLU)
    assert mlp.net[2].p == 0.0
    transformer = build("predictor", "transformer", {}, c_dim=8, z_dim=4, steps=3).train()
    assert transformer.block.self_attn.num_heads == 4 and transformer.block.linear1.out_features == 32
    assert transformer.block.dropout.p == 0.0
    c = torch.randn(2, 5, 8)
    torch.testing.assert_close(transformer(c), transformer(c), rtol=0, atol=0)


def test_one_context_step_is_enough_and_none_is_refused() -> None:
    model = build_cpc(load_config("1dconv_tiny", ["data.N=2"])).eval()
    window, steps = model.window, model.steps
    assert window is not None
    with torch.no_grad():
        out = model(torch.randn(2, (1 + steps) * window) * 0.1)   # c from a single step
        assert out.logits.shape[:3] == (2, 1, steps) and bool(torch.isfinite(out.loss))
        with pytest.raises(ValueError, match=f"{steps} encoded steps leave no context"):
            model(torch.randn(2, steps * window) * 0.1)
