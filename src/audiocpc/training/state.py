"""The per-run state of training: what a checkpoint must hold besides the model, the
optimizer and the configuration for a resumed run to continue exactly as one that never
stopped (the step, the epoch records, the running sums of the current epoch, and every
process's random generators: Python's, NumPy's, torch's and CUDA's).

`TrainState.state_dict()` is plain data (tensors, numbers, lists, dicts), so the
weights-only loader reads it back; its keys are the checkpoint's own top-level entries
(`step`, `epoch`, `history`, `step_losses`, `meter`, `last_finite_loss`,
`settings_changes`, `rng`), so checkpoints written before this module existed load too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Optional, cast

import numpy as np
import torch


@dataclass
class EpochMeter:
    """Running sums for the current epoch (saved in checkpoints so resume is exact)."""

    loss_sum: float = 0.0
    accuracy_sums: list[float] = field(default_factory=list)
    steps: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def add(self, loss: float, accuracy: list[float]) -> None:
        if not self.accuracy_sums:
            self.accuracy_sums = [0.0] * len(accuracy)
        self.loss_sum += loss
        self.accuracy_sums = [s + a for s, a in zip(self.accuracy_sums, accuracy)]
        self.steps += 1

    def as_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "accuracy_sums": list(self.accuracy_sums),
                "steps": self.steps, "skipped": self.skipped, "seconds": self.seconds}


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The torch seed of a process other than rank 0 (other dropout masks and sampled
    negatives than rank 0's); `step` > 0 for a rank that resumes without a saved state."""
    return seed * 1_000_003 + rank + step


def capture_rng() -> dict[str, Any]:
    """This process's generators as plain data (no numpy arrays: the weights-only loader
    refuses them)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    version, internal, gauss = random.getstate()
    state["python"] = {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                       "gauss": gauss}
    name, key, position, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float],
                                                  np.random.get_state(legacy=True))
    state["numpy"] = {"bit_generator": name, "key": torch.from_numpy(key.astype(np.int64)),
                      "pos": int(position), "has_gauss": int(has_gauss), "gauss": float(cached)}
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set this process's generators to a `capture_rng()` state. Generators the state does
    not hold (checkpoints written before Python's and NumPy's were saved) are left as
    they are."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    if "python" in state:
        saved = state["python"]
        random.setstate((int(saved["version"]), tuple(int(x) for x in saved["state"].tolist()),
                         saved["gauss"]))
    if "numpy" in state:
        saved = state["numpy"]
        np.random.set_state((saved["bit_generator"], saved["key"].numpy().astype(np.uint32),
                             int(saved["pos"]), int(saved["has_gauss"]), float(saved["gauss"])))


@dataclass
class TrainState:
    """Where a run stands: step, epoch records, the current epoch's sums, and the
    generators (captured by `state_dict`, set again by `load_state_dict`)."""

    steps_per_epoch: int
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one record per epoch
    step_losses: list[float] = field(default_factory=list)  # one per step that was not skipped
    meter: EpochMeter = field(default_factory=EpochMeter)
    last_finite_loss: float = float("nan")
    settings_changes: list[dict[str, Any]] = field(default_factory=list)  # safe resume changes

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self.step // self.steps_per_epoch

    def state_dict(self, rank_rng: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
        """The checkpoint entries of this state, with this process's generators now;
        `rank_rng` (every rank's `capture_rng()`, in rank order) for distributed runs."""
        rng = capture_rng()
        if rank_rng is not None:
            rng["ranks"] = rank_rng
        return {"step": self.step, "epoch": self.epoch, "history": self.history,
                "step_losses": self.step_losses, "meter": self.meter.as_dict(),
                "last_finite_loss": self.last_finite_loss,
                "settings_changes": self.settings_changes, "rng": rng}

    def load_state_dict(self, payload: dict[str, Any], *, rank: int = 0, seed: int = 0) -> None:
        """Continue from `payload` (a checkpoint, of this or an older version): rank `rank`
        takes its own saved generators; a rank the checkpoint has none for (the run had
        fewer processes) is seeded from `seed`, its rank and the step."""
        self.step = int(payload["step"])
        self.history = list(payload.get("history", []))
        self.step_losses = [float(x) for x in payload.get("step_losses", [])]
        meter = payload.get("meter") or {}
        self.meter = EpochMeter(**meter) if meter else EpochMeter()
        self.last_finite_loss = float(payload.get("last_finite_loss", float("nan")))
        self.settings_changes = list(payload.get("settings_changes") or [])
        rng: dict[str, Any] = payload.get("rng", {})
        per_rank = rng.get("ranks") or []
        if rank < len(per_rank):  # this rank's own generator state
            rng = per_rank[rank]
        elif rank:  # no saved state for this rank: derive one from the step
            rng = {}
            torch.manual_seed(rank_seed(seed, rank, self.step))
        restore_rng(rng)
