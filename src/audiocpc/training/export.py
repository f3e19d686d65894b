"""Self-contained models: a folder that other tools can load without audiocpc's checkpoints.

`export_run(run_dir, out_dir, formats)` writes, into `out_dir`:

- `config.json` + `model.safetensors` (the Hugging Face Hub layout): the resolved
  configuration as JSON and the weights as safetensors. `audiocpc.load(out_dir)` reads them
  and never unpickles anything.
- `model.torchscript.pt` (format `torchscript`): the embedder, traced: waveform [B, S]
  (float32 at the model's rate) -> (z [B, L, z_dim], c [B, L, c_dim]); `torch.jit.load` runs it
  without audiocpc installed.
- `model.onnx` (format `onnx`): the same embedder as an ONNX graph with dynamic batch and
  length (inputs `waveform`, outputs `z` and `c`), for onnxruntime and other runtimes.

Every file is written to a temporary name and renamed, so a crash leaves no half file.
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from audiocpc.data.audio import VARIANCE_FLOOR
from audiocpc.config import Config
from audiocpc.errors import ConfigError
from audiocpc.models import CPCModel
from audiocpc.models.context import TransformerContext
from audiocpc.models.layers import causal_mask
from audiocpc.training.exported import atomic_write, write_safetensors
from audiocpc.training.restore import restore_run

TORCHSCRIPT_NAME = "model.torchscript.pt"
ONNX_NAME = "model.onnx"
EXPORT_FORMATS: tuple[str, ...] = ("safetensors", "torchscript", "onnx")
ONNX_OPSET = 17


class TraceableTransformerContext(nn.Module):
    """The Transformer context with its attention written out in plain tensor operations on
    the same weights: nn.MultiheadAttention freezes the traced batch size into its reshapes."""

    def __init__(self, context: TransformerContext):
        super().__init__()
        self.context = context

    def _attention(self, attention: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        heads = attention.num_heads
        q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
        split = [x.shape[0], x.shape[1], heads, x.shape[2] // heads]
        q, k, v = (t.reshape(split).transpose(1, 2) for t in (q, k, v))  # [B, H, L, d]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + mask
        out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(x.shape)
        return attention.out_proj(out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        context = self.context
        x = context.embed_input(z)
        mask = causal_mask(z.shape[1], z.device)
        for layer in context.blocks.layers:  # eval mode: dropout is the identity
            if layer.norm_first:
                x = x + self._attention(layer.self_attn, layer.norm1(x), mask)
                x = x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))
            else:
                x = layer.norm1(x + self._attention(layer.self_attn, x, mask))
                x = layer.norm2(x + layer.linear2(layer.activation(layer.linear1(x))))
        if context.blocks.norm is not None:
            x = context.blocks.norm(x)
        return context.dense(x)


class WaveformEmbedder(nn.Module):
    """The part of a CPC model that embeds: waveform [B, S] -> (z [B, L, z_dim], c [B, L, c_dim]),
    written with shape operations that tracing keeps dynamic (any batch, any length). With
    `standardize` (the run's data.standardize) each row, one whole recording, is scaled to
    zero mean and unit variance first, as in training."""

    def __init__(self, model: CPCModel, standardize: bool = False):
        super().__init__()
        self.standardize = standardize
        self.encoder = model.encoder
        self.context = model.context
        if isinstance(model.context, TransformerContext):
            self.context = TraceableTransformerContext(model.context)
        self.window = model.window

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.standardize:
            mean = waveform.mean(dim=1, keepdim=True)
            var = (waveform - mean).pow(2).mean(dim=1, keepdim=True)
            waveform = (waveform - mean) / torch.sqrt(var + VARIANCE_FLOOR)
        if self.window is None:
            z = self.encoder(waveform)
        else:  # one z per whole window, as CPCModel.encode (the tracer records this arithmetic)
            whole = waveform.shape[1] // self.window * self.window
            frames = self.encoder(waveform[:, :whole].reshape(-1, self.window))
            z = frames.mean(dim=1).reshape(waveform.shape[0], -1, frames.shape[-1])
        return z, self.context(z)


@contextmanager
def _traceable() -> Iterator[None]:
    """No gradients, no tracer chatter, and no fused Transformer kernel (ONNX has no such op)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # tracer warnings about sizes (the parity tests check other lengths) and the
            # exporter's deprecation and RNN batch-size notes
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _example(model: CPCModel, config: Config) -> torch.Tensor:
    samples = config.data.crop_samples
    if model.window is not None:
        samples = max(samples // model.window, 2) * model.window
    generator = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(2, samples, generator=generator)


def export_torchscript(model: CPCModel, config: Config, path: str | Path) -> Path:
    """Trace the embedder and save it with torch.jit.save."""
    path = Path(path)
    embedder = WaveformEmbedder(model, config.data.standardize).eval().cpu()
    with _traceable():
        traced = torch.jit.trace(embedder, (_example(model, config),), check_trace=False)
    with _traceable():  # torch 2.13 marks torch.jit as deprecated; it still saves and loads
        atomic_write(path, lambda p: torch.jit.save(traced, str(p)))
    return path


def export_onnx(model: CPCModel, config: Config, path: str | Path) -> Path:
    """The embedder as ONNX (opset 17): input `waveform` [batch, samples], outputs `z`, `c`."""
    try:
        import onnx  # noqa: F401  (torch.onnx needs it)
    except ImportError:
        raise ConfigError("--format onnx needs the onnx package: pip install 'audiocpc[export]' "
                          "(or pip install onnx onnxruntime)") from None
    path = Path(path)
    embedder = WaveformEmbedder(model, config.data.standardize).eval().cpu()
    dynamic = {"waveform": {0: "batch", 1: "samples"}, "z": {0: "batch", 1: "frames"},
               "c": {0: "batch", 1: "frames"}}

    def write(tmp: Path) -> None:
        with _traceable():
            torch.onnx.export(embedder, (_example(model, config),), str(tmp), input_names=["waveform"],
                              output_names=["z", "c"], dynamic_axes=dynamic, opset_version=ONNX_OPSET,
                              dynamo=False)

    atomic_write(path, write)
    return path


def export_model(model: CPCModel, config: Config, out_dir: str | Path, name: str,
                 formats: Sequence[str] = ("safetensors",)) -> list[Path]:
    """Write the requested formats into `out_dir`; config.json + model.safetensors always."""
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown:
        raise ConfigError(f"--format: unknown format {unknown[0]!r}; choose {', '.join(EXPORT_FORMATS)}")
    model = model.eval()
    device = next(model.parameters()).device
    model.cpu()
    try:
        written = write_safetensors(model, config, out_dir, name)
        if "torchscript" in formats:
            written.append(export_torchscript(model, config, Path(out_dir) / TORCHSCRIPT_NAME))
        if "onnx" in formats:
            written.append(export_onnx(model, config, Path(out_dir) / ONNX_NAME))
    finally:
        model.to(device)
    return written


def export_run(run_dir: str | Path, out_dir: str | Path, formats: Sequence[str] = ("safetensors",),
               random_init: bool = False, name: Optional[str] = None) -> list[Path]:
    """Export the model of a run folder (or of an exported folder) into `out_dir`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and Path(os.path.abspath(out_dir)) == Path(os.path.abspath(run_dir)):
        raise ConfigError(f"--out: {out_dir} is the run folder itself; export into another folder")
    run = restore_run(run_dir, device="cpu", random_init=random_init)
    return export_model(run.model, run.config, out_dir, name or run.name, formats)
