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
