"""train.mixed_precision runs the model in the dtype it names (bf16 = bfloat16, fp16 =
float16, refused on the CPU), and train.grad_clip bounds the norm of the gradient the
optimizer applies."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from audiocpc import load_config
from audiocpc.errors import ConfigError
from audiocpc.training.trainer import Trainer, autocast_context

TINY = ["model.z_dim=16", "model.c_dim=16", "model.encoder.filters=8", "data.N=4",
        "train.device=cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: one thread is faster


def _trainer(tmp_path: Path, data: Path, *overrides: str) -> Trainer:
    config = load_config("1dconv_tiny", [f"output.dir={tmp_path}", *TINY, *overrides])
    return Trainer(config, data, progress=False)


def _crops(trainer: Trainer) -> torch.Tensor:
    data = trainer.config.data
    t = torch.arange(data.crop_samples) / data.sample_rate
    pitches = torch.linspace(200, 1500, data.N)[:, None]
    generator = torch.Generator().manual_seed(0)
    return (torch.sin(2 * math.pi * pitches * t)
            + 0.1 * torch.randn(data.N, data.crop_samples, generator=generator)).float()


# ---------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("setting, dtype", [("none", torch.float32), ("bf16", torch.bfloat16)])
def test_autocast_on_the_cpu_computes_in_the_named_dtype(setting: str, dtype: torch.dtype) -> None:
    layer = torch.nn.Linear(4, 4)
    with autocast_context(torch.device("cpu"), setting):
        assert layer(torch.randn(2, 4)).dtype == dtype


@pytest.mark.parametrize("setting, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_on_cuda_is_asked_for_the_named_dtype(setting: str, dtype: torch.dtype) -> None:
    with warnings.catch_warnings():  # without CUDA torch warns and disables it; the dtype stays
        warnings.simplefilter("ignore")
        context = autocast_context(torch.device("cuda"), setting)
    assert isinstance(context, torch.autocast) and context.fast_dtype == dtype


def _encoder_dtypes(trainer: Trainer) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    trainer.model.encoder.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    return seen


def test_bf16_training_step_runs_the_model_in_bfloat16(tmp_path: Path, tone_dir: Path) -> None:
    trainer = _trainer(tmp_path, tone_dir, "train.mixed_precision=bf16")
    seen = _encoder_dtypes(trainer)
    result = trainer.train_step(_crops(trainer))
    assert result is not None and math.isfinite(result[0])
    assert seen and set(seen) == {torch.bfloat16}
    assert not trainer.scaler.is_enabled()  # loss scaling is for float16 only
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # weights stay float32


def test_full_precision_training_step_stays_float32(tmp_path: Path, tone_dir: Path) -> None:
    trainer = _trainer(tmp_path, tone_dir)
    seen = _encoder_dtypes(trainer)
    trainer.train_step(_crops(trainer))
    assert seen and set(seen) == {torch.float32}


def test_fp16_on_the_cpu_is_refused_naming_the_setting(tmp_path: Path, tone_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _trainer(tmp_path, tone_dir, "train.mixed_precision=fp16")
    message = str(caught.value)
    assert "train.mixed_precision" in message and "fp16" in message
    assert len(message.strip().splitlines()) == 1


# ---------------------------------------------------------------- gradient clipping


def _applied_gradient_norms(trainer: Trainer) -> list[float]:
    """The total gradient norm at each optimizer step, as the optimizer sees it."""
    norms: list[float] = []

    def record(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.register_step_pre_hook(record)
    return norms


def test_gradient_is_clipped_to_train_grad_clip(tmp_path: Path, tone_dir: Path) -> None:
    clip = 1e-3
    unclipped = _trainer(tmp_path / "a", tone_dir, "train.grad_clip=null")
    raw = _applied_gradient_norms(unclipped)
    unclipped.train_step(_crops(unclipped))
    assert raw[0] > 10 * clip  # the raw gradient is far above the limit: clipping must act

    clipped = _trainer(tmp_path / "b", tone_dir, f"train.grad_clip={clip}")
    applied = _applied_gradient_norms(clipped)
    for _ in range(2):
        clipped.train_step(_crops(clipped))
    assert len(applied) == 2
    assert applied == pytest.approx([clip, clip], rel=1e-3)


def test_gradient_below_the_limit_is_left_alone(tmp_path: Path, tone_dir: Path) -> None:
    free = _trainer(tmp_path / "a", tone_dir, "train.grad_clip=null")
    raw = _applied_gradient_norms(free)
    free.train_step(_crops(free))
    loose = _trainer(tmp_path / "b", tone_dir, f"train.grad_clip={raw[0] * 10}")
    applied = _applied_gradient_norms(loose)
    loose.train_step(_crops(loose))
    assert applied == pytest.approx(raw, rel=1e-5)  # same seed, same batch: the same gradient
