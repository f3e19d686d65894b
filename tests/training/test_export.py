"""`audiocpc export`: config.json + model.safetensors that load without unpickling, and
TorchScript / ONNX embedders that give the eager model's z and c, for every preset family."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import TINY_PRESETS

import audiocpc
from audiocpc.data.audio import standardize
from audiocpc.cli import main
from audiocpc.errors import CheckpointError
from audiocpc.training.export import export_model, export_run

TOLERANCE = 1e-4


def _waves(samples: int, batch: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, samples, generator=generator)


def _other_length(model) -> int:
    """A length the export was not traced with (3 sounds, not 2; a partial window at the end)."""
    config = model.config
    return config.data.crop_samples + 777


def test_an_exported_folder_loads_without_unpickling(tiny_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "exported"
    written = export_run(tiny_run, out)
    assert sorted(p.name for p in written) == ["config.json", "model.safetensors"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "audiocpc-export" and meta["sample_rate"] == 8000 and meta["z_dim"] == 64
    assert meta["config"]["model"]["mode"] == "window"

    def refuse(*args, **kwargs):
        raise AssertionError("an exported folder must load without torch.load or pickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    exported = audiocpc.load(out, device="cpu")
    monkeypatch.undo()
    original = audiocpc.load(tiny_run, device="cpu")
    for key, value in original.model.state_dict().items():
        assert torch.equal(exported.model.state_dict()[key], value), key
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 9000).astype(np.float32)
    assert torch.equal(exported.embed(wave, 8000).c, original.embed(wave, 8000).c)
    assert exported.run.name == "exported"
    from audiocpc.training.checkpoint import load_checkpoint

    payload = load_checkpoint(out / "model.safetensors")  # the weights file stands for a checkpoint
    assert set(payload) >= {"config", "model"} and payload["config"] == meta["config"]


def test_a_broken_export_is_refused_in_one_line(tmp_path: Path, tiny_exports: dict[str, Path]) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_exports["cpc_tiny"] / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        audiocpc.load(broken)
    (broken / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(CheckpointError, match="not an audiocpc export"):
        audiocpc.load(broken)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("preset", ["1dconv_gru", "1dconv_lstm", "1dconv_transformer", "2dconv_gru",
                                    "2dconv_transformer", "cpc_tiny", "fsdd"])
def test_torchscript_and_onnx_give_the_eager_embeddings(preset: str, tmp_path: Path,
                                                        tiny_exports: dict[str, Path]) -> None:
    """Every family: window and frame mode, conv1d and log-mel encoders, GRU / LSTM /
    Transformer contexts; another batch size and length than the trace saw."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    eager = audiocpc.load(tiny_exports[preset], device="cpu")
    export_model(eager.model, eager.config, tmp_path, preset, ["safetensors", "torchscript", "onnx"])
    waves = _waves(_other_length(eager))
    assert eager.config.data.standardize  # the exported graphs standardise each row as training did
    prepared = torch.stack([torch.from_numpy(standardize(w.numpy())) for w in waves])
    z, c, _ = eager.model.extract_features(prepared)
    scripted = torch.jit.load(str(tmp_path / "model.torchscript.pt"))
    with torch.no_grad():
        script_z, script_c = scripted(waves)
    assert torch.allclose(script_z, z, atol=TOLERANCE) and torch.allclose(script_c, c, atol=TOLERANCE)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    onnx_z, onnx_c = session.run(["z", "c"], {"waveform": waves.numpy()})
    assert onnx_z.shape == tuple(z.shape) and onnx_c.shape == tuple(c.shape)
    assert np.abs(onnx_z - z.numpy()).max() < TOLERANCE and np.abs(onnx_c - c.numpy()).max() < TOLERANCE


def test_the_export_command_writes_every_format(tiny_run: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    out = tmp_path / "tiny-export"
    assert main(["export", str(tiny_run), "--out", str(out), "--format", "torchscript",
                 "--format", "onnx"]) == 0
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors",
                                               "model.torchscript.pt", "model.onnx"}
    assert "model.onnx" in capsys.readouterr().out
    assert main(["export", str(tiny_run), "--out", str(tiny_run)]) == 2
    assert "is the run folder itself" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--out", str(out)]) == 2


@pytest.mark.parametrize("position", ["sinusoidal", "none", "conv"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("scale_input", [True, False])
def test_the_traceable_transformer_is_the_eager_one_for_every_variant(scale_input: bool,
                                                                       norm_first: bool,
                                                                       position: str) -> None:
    """The exported graphs rewrite the Transformer context: its input scaling, position
    information and layer-norm placement must be the configured ones (not the reference's alone)."""
    from audiocpc import load_config
    from audiocpc.models import build_cpc
    from audiocpc.training.export import TraceableTransformerContext

    config = load_config("1dconv_transformer", TINY_PRESETS["1dconv_transformer"] + [
        f"model.context.scale_input={str(scale_input).lower()}",
        f"model.context.norm_first={str(norm_first).lower()}", f"model.context.position={position}"])
    torch.manual_seed(0)
    context = build_cpc(config).context.eval()
    z = torch.randn(3, 11, config.model.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(TraceableTransformerContext(context)(z), context(z),
                                   atol=1e-5, rtol=1e-5)
