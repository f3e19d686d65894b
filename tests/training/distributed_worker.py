"""Test helper run by torchrun: the real `audiocpc` CLI, observed from inside each rank.

`python -m torch.distributed.run --nproc-per-node=2 tests/distributed_worker.py train ...`
runs exactly `audiocpc train ...` in every process, and additionally writes, into the
folder named by AUDIOCPC_TEST_DUMP: `rank{r}.pid` at start (so a test can kill one rank),
`rank{r}.saves` (how many checkpoints this rank wrote) and `rank{r}.pt` (this rank's
parameters after training). Nothing here changes what training does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import audiocpc.training.trainer as train_module
from audiocpc.cli import main


def _instrument(dump: Path, rank: int) -> None:
    (dump / f"rank{rank}.pid").write_text(str(os.getpid()))
    saves = dump / f"rank{rank}.saves"
    saves.write_text("0")
    real_save = train_module.save_checkpoint

    def counting_save(path, payload):  # type: ignore[no-untyped-def]
        saves.write_text(str(int(saves.read_text()) + 1))
        real_save(path, payload)

    real_fit = train_module.Trainer.fit

    def fit_then_dump(self):  # type: ignore[no-untyped-def]
        result = real_fit(self)
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                   dump / f"rank{rank}.pt")
        return result

    train_module.save_checkpoint = counting_save
    train_module.Trainer.fit = fit_then_dump


if __name__ == "__main__":
    _instrument(Path(os.environ["AUDIOCPC_TEST_DUMP"]), int(os.environ["RANK"]))
    sys.exit(main(sys.argv[1:]))
