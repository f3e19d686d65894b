"""Log-mel front end (computed in torch from the waveform) and the 2-D conv encoder on it.

The spectrogram is never stored: each batch of waveforms becomes log-mel frames on the
fly, standardised per mel bin over the frames the encoder sees (one window in window mode,
the whole crop in frame mode), optionally smoothed along time first.

Window mode (the reference's 2dconv models): each CPC window is one patch of
`n_mels x frames_per_window` frames; the hop is derived from the window length so that a
window gives exactly that many frames. Frame mode: the convolutions run over the whole
crop's spectrogram and give one z per 2^len(channels) frames (`hop_length` must be set).
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike
import torch
import torch.nn.functional as F
from torch import nn

from audiocpc.models.layers import ACTIVATION_TYPES, activation, norm2d
from audiocpc.models.registry import register

LOG_FLOOR = 1e-6  # added to mel power before the log: silence gives a finite floor
STANDARDISE_EPS = 1e-3  # added to the per-bin variance: a constant bin becomes 0, not noise


def hz_to_mel(hz: ArrayLike) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: Optional[float] = None) -> np.ndarray:
    """Triangular filters [n_mels, n_fft // 2 + 1] with peak 1, centres evenly spaced in mel.

    Raises ValueError when a filter falls between FFT bins (too many mels for this n_fft).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2 = {sample_rate / 2:g} Hz "
                         f"(got f_min {f_min:g}, f_max {f_max:g})")
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    empty = np.flatnonzero(bank.max(axis=1) <= 0)
    if empty.size:
        raise ValueError(f"n_mels {n_mels} is too many for n_fft {n_fft} at {sample_rate} Hz: "
                         f"{empty.size} mel filter(s) fall between FFT bins; raise n_fft or "
                         "lower n_mels")
    return bank.astype(np.float32)


class LogMelSpectrogram(nn.Module):
    """waves [B, S] -> log-mel [B, n_mels, frames] (no centre padding), standardised per mel
    bin over the input (`norm="per_bin"`, cepstral mean and variance normalisation) or
    kept as log power (`norm="none"`: the spectral envelope, i.e. timbre, is kept, and the
    features of a crop do not depend on the rest of the input)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int = 64,
                 f_min: float = 0.0, f_max: Optional[float] = None, smoothing: int = 1,
                 norm: str = "per_bin"):
        super().__init__()
        if norm not in ("per_bin", "none"):
            raise ValueError(f"frontend_norm: 'per_bin' or 'none', got {norm!r}")
        self.norm = norm
        if smoothing < 1 or smoothing % 2 == 0:
            raise ValueError(f"smoothing must be an odd number of frames >= 1 (got {smoothing})")
        self.n_fft, self.hop_length, self.smoothing = n_fft, hop_length, smoothing
        self.window: torch.Tensor  # buffers, declared for the type checker
        self.filters: torch.Tensor
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self.register_buffer("filters", torch.from_numpy(
            mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)), persistent=False)

    def frames(self, samples: int) -> int:
        return 0 if samples < self.n_fft else 1 + (samples - self.n_fft) // self.hop_length

    def power_spectrum(self, waves: torch.Tensor) -> torch.Tensor:
        """|STFT|^2 [B, n_fft // 2 + 1, frames]. When traced for export (TorchScript, ONNX,
        which have no complex numbers) the same DFT is two real matmuls on framed audio."""
        if not torch.jit.is_tracing():
            spectrum = torch.stft(waves, self.n_fft, self.hop_length, window=self.window,
                                  center=False, return_complex=True)
            return spectrum.abs().square()
        # windowed DFT rows as convolution kernels [bins, 1, n_fft], one output per hop
        n = torch.arange(self.n_fft, dtype=torch.float64)
        angle = 2 * torch.pi * n[None, : self.n_fft // 2 + 1].T * n[None, :] / self.n_fft
        window = self.window.double().cpu()
        kernels = torch.cat([torch.cos(angle) * window, torch.sin(angle) * window])
        parts = F.conv1d(waves.unsqueeze(1), kernels.float().unsqueeze(1).to(waves.device),
                         stride=self.hop_length)  # [B, 2 * bins, frames]
        real, imag = parts.chunk(2, dim=1)
        return real.square() + imag.square()

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=waves.device.type, enabled=False):  # FFT in float32
            mel = self.filters @ self.power_spectrum(waves.float())  # [B, n_mels, frames]
            logmel = torch.log(mel + LOG_FLOOR)
            if self.smoothing > 1:  # moving average along time, edges repeated
                pad = self.smoothing // 2
                padded = F.pad(logmel, (pad, pad), mode="replicate")
                logmel = F.avg_pool1d(padded, self.smoothing, stride=1)
            if self.norm == "none":
                return logmel
            mean = logmel.mean(dim=-1, keepdim=True)
            var = logmel.var(dim=-1, keepdim=True, unbiased=False)
            return (logmel - mean) * torch.rsqrt(var + STANDARDISE_EPS)


def derived_hop(window_samples: int, n_fft: int, frames: int) -> int:
    """The largest hop for which a window of `window_samples` gives `frames` frames."""
    if frames < 2:
        raise ValueError(f"model.encoder.frames_per_window must be >= 2 (got {frames})")
    hop = (window_samples - n_fft) // (frames - 1)
    if hop < 1:
        raise ValueError(
            f"model.encoder.frames_per_window: a window of {window_samples} samples "
            f"(data.full_duration x data.sample_rate / (T+k)) cannot give {frames} frames of "
            f"n_fft {n_fft}: it needs at least {n_fft + frames - 1} samples. Lower "
            "model.encoder.n_fft or frames_per_window, or lengthen the windows "
            "(raise data.full_duration or data.sample_rate, or lower data.T + data.k)")
    return hop


@register("encoder", "logmel_conv2d")
class LogMelConv2dEncoder(nn.Module):
    """Log-mel front end, 3x3 stride-2 'same' convolutions, then a dense head to z_dim.

    Window mode: each window is one [n_mels x frames_per_window] patch; the whole conv map is
    flattened into the head, giving one z per window ([n, 1, z_dim]). Frame mode: frequency
    x channels are flattened per time step, giving one z per 2^len(channels) frames.
    """

    def __init__(
        self,
        z_dim: int,
        sample_rate: int = 16000,
        window_samples: Optional[int] = None,
        n_mels: int = 64,
        n_fft: int = 256,
        hop_length: Optional[int] = None,
        frames_per_window: int = 64,
        f_min: float = 0.0,
        f_max: Optional[float] = None,
        smoothing: int = 1,
        channels: Sequence[int] = (32, 64, 256, 512),
        dense_units: Sequence[int] = (512,),
        norm: Literal["none", "batch", "layer", "channel"] = "none",
        dropout: float = 0.0,
        activation_fn: Literal["leaky_relu", "relu", "gelu", "tanh"] = "leaky_relu",
        frontend_norm: Literal["per_bin", "none"] = "per_bin",
    ):
        super().__init__()
        if window_samples is not None:  # window mode: one patch per window
            if window_samples < n_fft:
                raise ValueError(f"model.encoder.n_fft: {n_fft} is longer than a window of "
                                 f"{window_samples} samples")
            if hop_length is None:
                hop_length = derived_hop(window_samples, n_fft, frames_per_window)
            available = 1 + (window_samples - n_fft) // hop_length
            if available < frames_per_window:
                raise ValueError(
                    f"model.encoder.hop_length: a window of {window_samples} samples gives "
                    f"{available} frames of n_fft {n_fft} at hop {hop_length}, fewer than "
                    f"frames_per_window {frames_per_window}; set hop_length: null to derive it")
        elif hop_length is None:
            raise ValueError("model.encoder.hop_length: frame mode needs an explicit hop "
                             "(e.g. 160 samples = 10 ms at 16 kHz)")
        if hop_length < 1:
            raise ValueError(f"model.encoder.hop_length must be >= 1 (got {hop_length})")
        self.window_samples = window_samples
        self.frames_per_window = frames_per_window
        self.hop_length = hop_length
        self.frontend = LogMelSpectrogram(sample_rate, n_fft, hop_length, n_mels, f_min, f_max,
                                          smoothing, frontend_norm)
        layers: list[nn.Module] = []
        in_ch = 1
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), norm2d(norm, out_ch),
                       activation(activation_fn)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_ch = out_ch
        self.convs = nn.Sequential(*layers)
        self.n_convs = len(channels)
        freq_out = self._conv_length(n_mels)
        flat = in_ch * freq_out
        if window_samples is not None:
            flat *= self._conv_length(frames_per_window)
        head: list[nn.Module] = []
        for units in dense_units:
            head += [nn.Linear(flat, units), activation(activation_fn)]
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            flat = units
        head.append(nn.Linear(flat, z_dim))
        self.head = nn.Sequential(*head)

    def _conv_length(self, length: int) -> int:
        for _ in range(self.n_convs):  # 3x3, stride 2, padding 1: ceil(n / 2)
            length = (length - 1) // 2 + 1
        return length

    def output_length(self, samples: int) -> int:
        frames = self.frontend.frames(samples)
        if self.window_samples is not None:
            return 1 if frames >= self.frames_per_window else 0
        return self._conv_length(frames) if frames > 0 else 0

    def layer_geometry(self) -> list[tuple[int, int, int]]:
        """Per layer (log-mel, then each conv block): (hop, first, span) in input samples;
        frame t reads the samples [hop * t + first, hop * t + first + span)."""
        reach = self.frontend.smoothing // 2  # the moving average reaches this many frames out
        hop, first = self.hop_length, -reach * self.hop_length
        span = self.frontend.n_fft + 2 * reach * self.hop_length
        out = [(hop, first, span)]
        for _ in range(self.n_convs):  # 3x3, stride 2, padding 1 along time
            hop, first, span = hop * 2, first - hop, span + 2 * hop
            out.append((hop, first, span))
        return out

    def layer_lengths(self, samples: int) -> list[int]:
        """Frames per layer (log-mel, then each conv block) for `samples` samples."""
        length = self.frontend.frames(samples)
        lengths = [length]
        for _ in range(self.n_convs):
            length = (length - 1) // 2 + 1 if length > 0 else 0
            lengths.append(length)
        return lengths

    def layer_outputs(self, waves: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """The standardised log-mel frames, every conv block's output (channels x
        frequencies per time step) and z, each [B, L_layer, dim]."""
        if self.window_samples is not None:
            waves = waves[:, : self.frontend.n_fft + (self.frames_per_window - 1) * self.hop_length]
        x = self.frontend(waves).unsqueeze(1)  # [B, 1, n_mels, frames]
        outputs = [("encoder.logmel", x[:, 0].transpose(1, 2))]
        block = 0
        for layer in self.convs:
            x = layer(x)
            if isinstance(layer, ACTIVATION_TYPES):
                block += 1
                outputs.append((f"encoder.conv{block}", x.permute(0, 3, 1, 2).flatten(2)))
        if self.window_samples is not None:
            z = self.head(x.flatten(1)).unsqueeze(1)
        else:
            z = self.head(x.permute(0, 3, 1, 2).flatten(2))
        outputs.append(("z", z))
        return outputs

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if self.window_samples is not None:  # exactly one patch: standardise over it alone
            waves = waves[:, : self.frontend.n_fft + (self.frames_per_window - 1) * self.hop_length]
        spec = self.frontend(waves)  # [B, n_mels, frames]
        features = self.convs(spec.unsqueeze(1))  # [B, C, F', T']
        if self.window_samples is not None:
            return self.head(features.flatten(1)).unsqueeze(1)  # [B, 1, z_dim]
        per_step = features.permute(0, 3, 1, 2).flatten(2)  # [B, T', C * F']
        return self.head(per_step)
