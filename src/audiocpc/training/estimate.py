"""Quick measurements for time estimates printed before long work starts: one training
step of a configuration on random audio, timed after a warm-up step."""

from __future__ import annotations

import time

import torch

from audiocpc.config import Config
from audiocpc.models import build_cpc
from audiocpc.training.precision import autocast_context
from audiocpc.training.trainer import build_optimizer


def format_duration(seconds: float) -> str:
    """'under 1 s', '45 s', '12 min', '3.5 h'."""
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def time_train_step(config: Config, device: torch.device | str = "cpu", repeats: int = 1) -> float:
    """Seconds per optimisation step of this configuration (random weights, random crops of
    the training shape), measured after one warm-up step (float32 for
    train.mixed_precision=auto). The global RNG is left as it was."""
    device = torch.device(device)
    # auto is measured at the start of training; float32, its fallback, bounds the estimate
    precision = "none" if config.train.mixed_precision == "auto" else config.train.mixed_precision
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_cpc(config).to(device)
        optimizer = build_optimizer(model, config)
        crops = 0.1 * torch.randn(config.data.N, config.data.crop_samples, device=device)
        labels = (torch.arange(config.data.N, device=device) % 2
                  if config.data.labels != "none" else None)
        elapsed = 0.0
        for attempt in range(1 + repeats):
            started = time.perf_counter()
            with autocast_context(device, precision):
                loss = model(crops, labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if attempt:  # the first step pays for allocations and kernel choices
                elapsed += time.perf_counter() - started
    return elapsed / repeats
