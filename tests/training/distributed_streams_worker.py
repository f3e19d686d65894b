"""Test helper run by torchrun (tests/training/test_distributed_labels.py): the real
`audiocpc train`, observed from inside each rank. Records, for every training step of this
rank, the labels the model was given, the mean of each crop, the label bank gathered from every rank for the
negatives, and the first dropout mask drawn; writes them to
`$AUDIOCPC_TEST_DUMP/rank{r}.records.pt` after training. Nothing here changes what training does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

import audiocpc.training.trainer as train_module
from audiocpc.cli import main
from audiocpc.training.distributed import DistributedContext


def _instrument(dump: Path, rank: int) -> None:
    records: dict[str, list[torch.Tensor]] = {"labels": [], "crop_means": [], "bank_labels": [],
                                              "dropout_masks": []}
    real_step = train_module.Trainer.train_step
    real_gather = DistributedContext.gather_negative_bank
    real_fit = train_module.Trainer.fit

    def recorded_step(self: Any, crops: torch.Tensor, labels: Any = None) -> Any:
        records["labels"].append(labels.detach().cpu().clone())
        records["crop_means"].append(crops.detach().double().mean(dim=1).cpu())
        self._mask_pending = True
        return real_step(self, crops, labels)

    def recorded_gather(self: Any, z: torch.Tensor, labels: Any, group: Any = None) -> Any:
        bank, bank_labels, first = real_gather(self, z, labels, group=group)
        records["bank_labels"].append(bank_labels.detach().cpu().clone())
        return bank, bank_labels, first

    def fit_then_dump(self: Any) -> Any:
        dropout = next(m for m in self.model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0)

        def first_mask(module: Any, args: Any, out: torch.Tensor) -> None:
            if getattr(self, "_mask_pending", False):
                records["dropout_masks"].append((out == 0).detach().cpu().clone())
                self._mask_pending = False

        dropout.register_forward_hook(first_mask)
        result = real_fit(self)
        torch.save(records, dump / f"rank{rank}.records.pt")
        return result

    train_module.Trainer.train_step = recorded_step
    train_module.Trainer.fit = fit_then_dump
    DistributedContext.gather_negative_bank = recorded_gather  # type: ignore[method-assign]


if __name__ == "__main__":
    _instrument(Path(os.environ["AUDIOCPC_TEST_DUMP"]), int(os.environ["RANK"]))
    sys.exit(main(sys.argv[1:]))
