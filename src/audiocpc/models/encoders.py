"""Encoders: waveform [B, S] -> z [B, L, z_dim], one z per frame.

In window mode the model cuts a crop into windows and pools each window's frames into one
z; in frame mode it keeps every frame. Every encoder exposes `output_length(samples)`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from audiocpc.models.layers import ACTIVATION_TYPES, ChannelNorm, activation, norm1d
from audiocpc.models.registry import register

log = logging.getLogger("audiocpc")

NormKind = Literal["none", "batch", "layer", "channel"]
ConvPath = Literal["auto", "matmul", "conv1d"]
LayerPath = Literal["matmul", "conv1d"]
PATH_CODES = {"matmul": 1, "conv1d": 2}  # in the conv_paths buffer; 0 = not chosen yet (auto)
PATH_TIMINGS = 2  # timed calls per path and layer when choosing (after one warm-up); the fastest counts
clock = time.perf_counter  # what `auto` times the paths with (a module attribute: tests replace it)


def time_major_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """`conv` (kernel twice its stride s, integer padding, a bias) on time-major x [B, L, C]
    -> [B, L', out]: output t reads input steps [t*s, t*s + 2s), two consecutive blocks of s
    steps; folding each block into the channels (space to depth) makes every output one row
    of [block t, block t+1] @ W, a single large matmul."""
    stride, pad = conv.stride[0], conv.padding[0]
    assert isinstance(pad, int)  # the convs are built with integer padding
    if pad:
        x = F.pad(x, (0, 0, pad, pad))
    batch, length, channels = x.shape
    out_len = (length - 2 * stride) // stride + 1
    blocks = x[:, : (out_len + 1) * stride].reshape(batch, out_len + 1, stride * channels)
    patches = torch.cat([blocks[:, :-1], blocks[:, 1:]], dim=2)  # [B, L', 2s*C]
    # weight [out, C, k] -> [k*C, out], rows ordered (tap, channel) like the patches
    weight = conv.weight.permute(2, 1, 0).reshape(-1, conv.out_channels)
    assert conv.bias is not None  # the convs are built with a bias
    x = torch.addmm(conv.bias, patches.reshape(-1, patches.shape[-1]), weight)
    return x.view(batch, out_len, -1)


@register("encoder", "conv1d")
class Conv1dEncoder(nn.Module):
    """Strided 1-D convolutions on the raw waveform, then a per-frame linear map to z_dim.

    With the reference settings a 588-sample window yields exactly one frame, so the linear
    map equals the reference's dense head on the flattened output.
    """

    def __init__(
        self,
        z_dim: int,
        sample_rate: int = 16000,
        strides: Sequence[int] = (5, 4, 2, 2, 2),
        kernels: Sequence[int] = (10, 8, 4, 4, 4),
        filters: Union[int, list[int]] = 512,
        padding: Optional[list[int]] = None,
        activation_fn: Literal["leaky_relu", "relu", "gelu", "tanh"] = "leaky_relu",
        norm: NormKind = "none",
        dropout: float = 0.0,
        conv_path: Union[ConvPath, list[LayerPath]] = "matmul",
    ):
        super().__init__()
        strides, kernels = list(strides), list(kernels)
        if len(strides) != len(kernels):
            raise ValueError("strides and kernels must have the same length")
        channels = [filters] * len(strides) if isinstance(filters, int) else list(filters)
        if len(channels) != len(strides):
            raise ValueError("filters must be one number or one per conv layer")
        pads = [0] * len(strides) if padding is None else list(padding)
        self.strides, self.kernels, self.pads = strides, kernels, pads
        layers: list[nn.Module] = []
        in_ch = 1
        for out_ch, k, s, p in zip(channels, kernels, strides, pads):
            layers += [nn.Conv1d(in_ch, out_ch, k, stride=s, padding=p), norm1d(norm, out_ch),
                       activation(activation_fn)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_ch = out_ch
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch, z_dim)
        self.z_dim = z_dim
        # Kernels of twice the stride (the reference's and the CPC paper's) can run as matmuls
        # on time-major activations: 1.1-2x faster than oneDNN's conv1d on an Intel Xeon, but
        # per layer either way on an AMD EPYC (benchmarks/README.md). Same parameters, same
        # numbers to float rounding; batch/layer norm keep conv1d.
        self.time_major = norm in ("none", "channel") and all(k == 2 * st for k, st in zip(kernels, strides))
        # Each conv layer's path: `conv_path` for all, or for `auto` the faster one, timed on
        # the first call. A buffer, so the checkpoint keeps the choice: a resumed run (and an
        # embedding of the trained model) computes with the same paths, rounding included.
        if isinstance(conv_path, list):
            if len(conv_path) != len(strides) or any(p not in PATH_CODES for p in conv_path):
                raise ValueError(f"conv_path: one path per conv layer ({len(strides)}), each matmul or "
                                 f"conv1d; got {conv_path}")
        elif conv_path not in ("auto", *PATH_CODES):
            raise ValueError(f"conv_path: {conv_path!r} is not auto, matmul, conv1d or a list of matmul / "
                             f"conv1d, one per conv layer")
        if not self.time_major:  # nothing to choose
            conv_path = "conv1d"
        self.conv_path: Union[str, list[str]] = list(conv_path) if isinstance(conv_path, list) else conv_path
        codes = ([PATH_CODES[p] for p in conv_path] if isinstance(conv_path, list)
                 else [PATH_CODES.get(conv_path, 0)] * len(strides))
        self.conv_paths: torch.Tensor
        self.register_buffer("conv_paths", torch.tensor(codes, dtype=torch.int8))
        self._paths: Optional[list[str]] = None  # the buffer as names (read once: no device sync per call)

    @property
    def downsampling(self) -> int:
        total = 1
        for s in self.strides:
            total *= s
        return total

    def output_length(self, samples: int) -> int:
        length = samples
        for k, s, p in zip(self.kernels, self.strides, self.pads):
            length = (length + 2 * p - k) // s + 1
        return length

    def layer_geometry(self) -> list[tuple[int, int, int]]:
        """Per conv block: (hop, first, span) in input samples: block output t reads the
        samples [hop * t + first, hop * t + first + span) (padding makes `first` negative)."""
        hop, first, span, out = 1, 0, 1, []
        for k, s, p in zip(self.kernels, self.strides, self.pads):
            hop, first, span = hop * s, first - hop * p, span + hop * (k - 1)
            out.append((hop, first, span))
        return out

    def layer_lengths(self, samples: int) -> list[int]:
        """Frames per conv block for an input of `samples` samples."""
        lengths, length = [], samples
        for k, s, p in zip(self.kernels, self.strides, self.pads):
            length = (length + 2 * p - k) // s + 1
            lengths.append(length)
        return lengths

    def layer_outputs(self, waves: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """The output of every conv block (after its norm and activation) and z, each
        [B, L_layer, dim]: the per-layer features of `CPCModel.hidden_states`."""
        outputs: list[tuple[str, torch.Tensor]] = []
        x = waves.unsqueeze(1)
        block = 0
        for layer in self.convs:
            x = layer(x)
            if isinstance(layer, ACTIVATION_TYPES):  # a block ends with its activation
                block += 1
                outputs.append((f"encoder.conv{block}", x.transpose(1, 2)))
        outputs.append(("z", self.head(x.transpose(1, 2))))
        return outputs

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "conv_paths"
        incoming = state_dict.get(key)
        if incoming is None or self.conv_path != "auto" or bool((incoming == 0).any()):
            # a checkpoint from before the paths were recorded, a path set explicitly, or a
            # state saved before `auto` chose: the setting (or the choice made) counts; under
            # `auto` the paths a run chose come back with its checkpoint
            state_dict[key] = self.conv_paths.clone()
        self._paths = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def layer_paths(self) -> Optional[list[str]]:
        """Each conv layer's path ("matmul" or "conv1d"), or None while `auto` has not chosen."""
        if self._paths is None:
            names = {code: name for name, code in PATH_CODES.items()}
            codes = [int(c) for c in self.conv_paths.tolist()]
            if not self.time_major:  # set False by hand (tests, benchmarks): the conv1d reference
                codes = [PATH_CODES["conv1d"]] * len(codes)
            if 0 in codes:
                return None
            self._paths = [names[c] for c in codes]
        return self._paths

    def set_layer_paths(self, paths: Sequence[str]) -> None:
        """Fix each conv layer's path (what `auto` does after timing them)."""
        if len(paths) != len(self.strides) or any(p not in PATH_CODES for p in paths):
            raise ValueError(f"one of {', '.join(PATH_CODES)} per conv layer ({len(self.strides)}), got {list(paths)}")
        if not self.time_major and any(p == "matmul" for p in paths):
            raise ValueError("these convs have no matmul path (kernels twice the strides, norm none or channel)")
        with torch.inference_mode(False), torch.no_grad():
            self.conv_paths.copy_(torch.tensor([PATH_CODES[p] for p in paths], dtype=torch.int8))
        self._paths = list(paths)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        # Traced for export: plain convolutions, whose shapes follow any input length
        # (the matmul path's reshapes would freeze the traced length).
        if self.time_major and not torch.jit.is_tracing():
            paths = self.layer_paths()
            if paths is None:
                paths = self._choose_paths(waves)
            if any(p == "matmul" for p in paths):
                return self.head(self._time_major_features(waves, paths))
        features = self.convs(waves.unsqueeze(1))  # [B, C, L]
        return self.head(features.transpose(1, 2))  # [B, L, z_dim]

    def _time_major_features(self, waves: torch.Tensor, paths: Optional[Sequence[str]] = None) -> torch.Tensor:
        """The conv stack as [B, L, C] activations: each conv on its path, a matmul
        (`time_major_conv`) or conv1d (on the transposed activations); returns [B, L, C]."""
        x, time_major, index = waves.unsqueeze(-1), True, 0  # [B, S, 1]
        for layer in self.convs:
            if isinstance(layer, nn.Conv1d):
                matmul = paths is None or paths[index] == "matmul"
                x, time_major, index = _conv_in_layout(x, time_major, layer, matmul), matmul, index + 1
            elif isinstance(layer, ChannelNorm) and time_major:
                x = _time_major_norm(layer, x)
            else:  # activation, dropout, identity: elementwise; ChannelNorm on [B, C, L]
                x = layer(x)
        return x if time_major else x.transpose(1, 2)

    def _choose_paths(self, waves: torch.Tensor) -> list[str]:
        """`auto`: time both paths of each conv layer on this input (forward and backward when
        gradients are on, as in training; forward only in inference), from the layout the
        previous layer's choice leaves, keep the faster, and say so in one line."""
        backward = torch.is_grad_enabled()
        x, time_major, index = waves.detach().unsqueeze(-1), True, 0
        chosen: list[str] = []
        timings: list[str] = []
        for layer in self.convs:
            if isinstance(layer, nn.Conv1d):
                # the waveform needs no gradient; every later layer's input does in training
                inputs = x.detach().requires_grad_(backward and index > 0)
                seconds = {path: _fastest_call(inputs, time_major, layer, path == "matmul") for path in PATH_CODES}
                best = min(seconds, key=seconds.__getitem__)
                chosen.append(best)
                timings.append(f"{1e3 * seconds['matmul']:.1f}/{1e3 * seconds['conv1d']:.1f}")
                with torch.no_grad():
                    x = _conv_in_layout(x, time_major, layer, best == "matmul")
                time_major, index = best == "matmul", index + 1
            elif not isinstance(layer, nn.Dropout):  # dropout would draw random numbers
                with torch.no_grad():
                    x = (_time_major_norm(layer, x) if time_major and isinstance(layer, ChannelNorm)
                         else layer(x))
        self.set_layer_paths(chosen)
        log.info("model.encoder.conv_path=auto: %s (ms matmul/conv1d per layer, %s of %s samples: %s)",
                 ", ".join(f"conv{i + 1} {p}" for i, p in enumerate(chosen)),
                 "forward+backward" if backward else "forward", " x ".join(map(str, waves.shape)),
                 ", ".join(timings))
        return chosen


def _time_major_norm(layer: ChannelNorm, x: torch.Tensor) -> torch.Tensor:
    """ChannelNorm on [B, L, C]: each time step across its channels."""
    return F.layer_norm(x, (layer.channels,), layer.weight.view(-1), layer.bias.view(-1), layer.eps)


def _conv_in_layout(x: torch.Tensor, time_major: bool, conv: nn.Conv1d, matmul: bool) -> torch.Tensor:
    """`conv` on x ([B, L, C] if time_major else [B, C, L]) by one path; the result is in that
    path's layout ([B, L', out] for the matmul, [B, out, L'] for conv1d)."""
    if matmul:
        return time_major_conv(x if time_major else x.transpose(1, 2), conv)
    return conv(x.transpose(1, 2) if time_major else x)


def _fastest_call(x: torch.Tensor, time_major: bool, conv: nn.Conv1d, matmul: bool) -> float:
    """Seconds of the fastest of PATH_TIMINGS calls of one path (after one warm-up), with the
    backward to the conv's parameters (and to x when it requires a gradient) when gradients
    are on: the minimum, as the call least disturbed by other work on the machine."""
    backward = torch.is_grad_enabled()
    wrt = [conv.weight] + ([conv.bias] if conv.bias is not None else []) + ([x] if x.requires_grad else [])
    best = float("inf")
    for attempt in range(1 + PATH_TIMINGS):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = clock()
        out = _conv_in_layout(x, time_major, conv, matmul)
        if backward:
            torch.autograd.grad(out, wrt, torch.ones_like(out))
        if x.is_cuda:
            torch.cuda.synchronize()
        if attempt:
            best = min(best, clock() - start)
    return best
