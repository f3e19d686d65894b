"""The log-mel front end's two ways to the power spectrum: torch.stft (eager) and, when traced
for export (TorchScript and ONNX have no complex numbers), a windowed DFT as two real
convolutions. They must give the same spectrum."""

from __future__ import annotations

import pytest
import torch

from audiocpc.models import logmel
from audiocpc.models.logmel import LogMelSpectrogram


@pytest.mark.parametrize("n_fft, hop", [(256, 64), (400, 160)])
def test_the_traced_power_spectrum_is_the_stft_one(n_fft: int, hop: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    frontend = LogMelSpectrogram(sample_rate=16000, n_fft=n_fft, hop_length=hop, n_mels=32)
    waves = torch.randn(2, 4000)
    with torch.no_grad():
        eager = frontend.power_spectrum(waves)
        monkeypatch.setattr(logmel.torch.jit, "is_tracing", lambda: True)
        traced = frontend.power_spectrum(waves)
    assert traced.shape == eager.shape == (2, n_fft // 2 + 1, (4000 - n_fft) // hop + 1)
    torch.testing.assert_close(traced, eager, rtol=1e-3, atol=1e-3 * float(eager.max()))


@pytest.mark.parametrize("window, n_fft, frames", [(588, 256, 64), (4000, 400, 10), (1000, 256, 2)])
def test_derived_hop_is_the_largest_that_gives_the_frames(window: int, n_fft: int, frames: int) -> None:
    hop = logmel.derived_hop(window, n_fft, frames)
    assert (window - n_fft) // hop + 1 >= frames  # this hop gives the frames
    assert (window - n_fft) // (hop + 1) + 1 < frames  # a longer one would not


def test_the_log_mel_encoder_defaults_and_its_layer_lengths() -> None:
    """Built without parameters: conv channels (32, 64, 256, 512); layer_lengths are the
    frames each layer really gives, down to a single frame."""
    encoder = logmel.LogMelConv2dEncoder(z_dim=8, hop_length=64)  # frame mode needs a hop
    assert [layer.out_channels for layer in encoder.modules()
            if isinstance(layer, torch.nn.Conv2d)] == [32, 64, 256, 512]
    for samples in (256 + 64 * 3, 4000):
        with torch.no_grad():
            outputs = encoder.layer_outputs(torch.randn(1, samples))
        assert encoder.layer_lengths(samples) == [x.shape[1] for _, x in outputs[:-1]]
