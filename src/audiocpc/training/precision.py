"""The precision a run computes in (`train.mixed_precision`), and `auto`: chosen by measurement.

`none` (float32), `bf16` (bfloat16 autocast) and `fp16` (float16 autocast with the GradScaler)
name it. `auto` times, before step 1, a few forward/backward passes of the run's own model on
its own first batch in float32 and in every reduced precision this device supports (bf16
where autocast supports bfloat16; fp16 only on CUDA), taking turns after one warm-up pass
each, and keeps the fastest one whose loss was finite. A reduced precision must be at least `AUTO_MARGIN` faster than float32 to be chosen:
within timing noise float32's numbers win. The probe changes nothing the run depends on (no
optimizer step; weights, buffers, gradients and every random generator are put back), so an
`auto` run trains exactly like a run given the chosen precision with the same seed.

The choice is said in one log line, kept in the checkpoint (`precision` entry) and in the run
folder's precision.json, and a resumed run reuses it without measuring again.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from audiocpc.training.state import capture_rng, restore_rng

# A reduced precision must beat float32 by this fraction of its step time to be chosen.
AUTO_MARGIN = 0.05
# Steps per precision: the first pays for allocations and kernel choices and is not timed.
PROBE_WARMUP_STEPS = 1
PROBE_TIMED_STEPS = 2

# Read at call time, so a test can replace it with a fake clock.
clock: Callable[[], float] = time.perf_counter

PRECISION_NAMES = {"none": "float32", "bf16": "bf16", "fp16": "fp16"}


def autocast_context(device: torch.device, mixed_precision: str) -> contextlib.AbstractContextManager:
    """The autocast of a resolved precision (none, bf16, fp16) on `device`."""
    if mixed_precision == "none":
        return contextlib.nullcontext()
    if mixed_precision not in ("bf16", "fp16"):
        # `auto` is resolved by the trainer before any step runs
        raise ValueError(f"autocast_context: '{mixed_precision}' is not a resolved precision "
                         "(none, bf16, fp16)")
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def autocast_supports(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's autocast runs `dtype` on this device (it warns and switches itself
    off where it does not)."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if not torch.amp.is_autocast_available(device.type):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(torch.autocast(device_type=device.type, dtype=dtype)._enabled)


def auto_candidates(device: torch.device) -> list[str]:
    """What `auto` measures on this device, float32 first: bf16 where autocast supports it,
    fp16 only on CUDA (with the GradScaler; on a CPU it has no fast kernels)."""
    candidates = ["none"]
    if autocast_supports(device, torch.bfloat16):
        candidates.append("bf16")
    if device.type == "cuda" and autocast_supports(device, torch.float16):
        candidates.append("fp16")
    return candidates


@dataclass(frozen=True)
class ProbeResult:
    """One precision's probe: seconds per timed step, and whether every loss was finite."""

    precision: str
    seconds_per_step: float
    finite: bool


def choose_precision(results: Sequence[ProbeResult], margin: float = AUTO_MARGIN) -> str:
    """The fastest precision with finite losses; float32 unless another one is more than
    `margin` faster, or float32 when none had finite losses (training then reports it)."""
    safe = [r for r in results if r.finite]
    if not safe:
        return "none"
    fastest = min(safe, key=lambda r: r.seconds_per_step)
    float32 = next((r for r in safe if r.precision == "none"), None)
    if float32 is not None and fastest.seconds_per_step > (1 - margin) * float32.seconds_per_step:
        return "none"
    return fastest.precision


def measure_precisions(model: torch.nn.Module, crops: torch.Tensor, labels: Optional[torch.Tensor],
                       device: torch.device, candidates: Sequence[str], *,
                       warmup: int = PROBE_WARMUP_STEPS, timed: int = PROBE_TIMED_STEPS
                       ) -> list[ProbeResult]:
    """Time forward + backward of `model` on one batch in each candidate precision (no
    optimizer step): `warmup` untimed steps each, then `timed` rounds in which the
    candidates take turns (a change in machine load hits all alike); a precision's time is
    its fastest step (the least disturbed by other programs). Afterwards its weights,
    buffers and gradients and every random generator are put back, so the run continues as
    if the probe had not happened. Every step runs even after a non-finite loss: in a
    distributed run each rank makes the same calls (collectives stay matched)."""
    saved_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    saved_grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    saved_rng = capture_rng()
    was_training = model.training
    finite = {precision: True for precision in candidates}
    seconds: dict[str, list[float]] = {precision: [] for precision in candidates}

    def step(precision: str) -> None:
        with autocast_context(device, precision):
            loss = model(crops, labels).loss
        finite[precision] = finite[precision] and bool(torch.isfinite(loss.detach()).item())
        model.zero_grad(set_to_none=True)
        loss.backward()

    model.train()
    try:
        for precision in candidates:
            for _ in range(warmup):  # allocations and kernel choices, not timed
                step(precision)
        for _ in range(timed):
            for precision in candidates:
                _synchronize(device)
                started = clock()
                step(precision)
                _synchronize(device)
                seconds[precision].append(clock() - started)
    finally:
        with torch.no_grad():
            model.load_state_dict(saved_state)
        for parameter, grad in zip(model.parameters(), saved_grads):
            parameter.grad = grad
        restore_rng(saved_rng)
        model.train(was_training)
    return [ProbeResult(precision, min(seconds[precision], default=math.inf), finite[precision])
            for precision in candidates]


def combine_ranks(per_rank: Sequence[Sequence[ProbeResult]]) -> list[ProbeResult]:
    """One result per precision from every rank's: the slowest rank's time, finite only if
    finite on every rank (each rank gets the same list, so all choose alike)."""
    combined = []
    for same in zip(*per_rank):
        combined.append(ProbeResult(same[0].precision, max(r.seconds_per_step for r in same),
                                    all(r.finite for r in same)))
    return combined


def precision_record(results: Sequence[ProbeResult], chosen: str, device: torch.device,
                     batch_audio_seconds: float) -> dict[str, Any]:
    """The choice as plain data: the checkpoint's `precision` entry and precision.json."""
    return {
        "setting": "auto",
        "chosen": chosen,
        "device": device.type,
        "warmup_steps": PROBE_WARMUP_STEPS,
        "timed_steps": PROBE_TIMED_STEPS,
        "batch_audio_seconds": batch_audio_seconds,
        "measured": {r.precision: {"seconds_per_step": r.seconds_per_step, "finite": r.finite,
                                   "audio_seconds_per_second": _rate(r, batch_audio_seconds)}
                     for r in results},
    }


def _rate(result: ProbeResult, batch_audio_seconds: float) -> float:
    if result.seconds_per_step <= 0:
        return math.inf
    return batch_audio_seconds / result.seconds_per_step


def describe_choice(record: dict[str, Any], kept: bool = False) -> str:
    """The one log line of `auto`: the choice and every measured speed."""
    speeds = []
    for precision, measured in record["measured"].items():
        name = PRECISION_NAMES.get(precision, precision)
        if measured["finite"]:
            speeds.append(f"{name} {measured['audio_seconds_per_second']:.1f}")
        else:
            speeds.append(f"{name} ruled out (non-finite loss)")
    chosen = PRECISION_NAMES.get(record["chosen"], record["chosen"])
    how = ("kept from the run's start (not measured again)" if kept else
           f"fastest of {record['timed_steps']} timed step(s) each, after "
           f"{record['warmup_steps']} warm-up")
    return (f"train.mixed_precision=auto: {chosen} on {record['device']} ({', '.join(speeds)} "
            f"audio-s/s; {how})")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
