"""Does every preset learn on real speech whatever its recording level?

FSDD's clips (../shared/data/fsdd) are joined per speaker into 5 s recordings, once at
their own level and once 30 dB lower. Each preset trains on each version for up to
`--steps` steps (batches of the preset's own size, its own learning rate and schedule) and
stops as soon as an epoch's mean loss is below 0.8 x chance (chance = ln(1 + negatives)),
printing the step at which it got there, or the loss it ended at.

    .venv/bin/python benchmarks/levels.py --fsdd ../shared/data/fsdd --out results/levels \\
        --presets 1dconv_gru 1dconv_lstm 1dconv_transformer cpc_tiny fsdd clips --threads 2

`--set data.standardize=false` shows the presets without the input standardisation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET = 0.8  # the loss must fall below this fraction of chance


def build_joined(fsdd: Path, out: Path, gain_db: float, seconds: float = 5.0) -> Path:
    """Each speaker's clips in file order, joined and cut into `seconds`-long files."""
    import soundfile as sf

    folder = out / f"fsdd_joined_{int(gain_db)}dB"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    speakers: dict[str, list[Path]] = {}
    for path in sorted(fsdd.glob("*.wav")):
        speakers.setdefault(path.stem.split("_")[1], []).append(path)
    gain = 10 ** (gain_db / 20)
    for speaker, paths in sorted(speakers.items()):
        audio = [sf.read(p, dtype="float32")[0] for p in paths]
        rate = sf.info(paths[0]).samplerate
        joined = np.concatenate(audio) * gain
        per_file = int(seconds * rate)
        for i in range(joined.size // per_file):
            sf.write(folder / f"{speaker}_{i:03d}.wav", joined[i * per_file:(i + 1) * per_file],
                     rate, subtype="FLOAT")
    (folder / ".complete").write_text("")
    return folder


class _Reached(Exception):
    pass


def train_until(preset: str, data: Path, out: Path, steps: int, threads: int,
                extra: list[str]) -> dict[str, Any]:
    from audiocpc import load_config
    from audiocpc.training.trainer import Trainer

    per_epoch = 25
    overrides = [f"output.dir={out}", f"output.name={preset}", f"train.threads={threads}",
                 f"train.epochs={max(1, steps // per_epoch)}", f"train.steps_per_epoch={per_epoch}",
                 f"train.checkpoint_every={steps}", "train.validation_fraction=0",
                 "train.dead_run_steps=0", *extra]
    config = load_config(preset, overrides)
    trainer = Trainer(config, data, force=True, progress=False)
    reached: dict[str, Any] = {}
    end_epoch = trainer._end_epoch

    def watch(epoch: int) -> None:  # stop at the first epoch below the target
        end_epoch(epoch)
        chance = math.log(trainer.candidates)
        loss = trainer.history[-1]["loss"]
        if loss < TARGET * chance:
            reached.update(step=trainer.step, loss=loss, chance=chance)
            raise _Reached

    trainer._end_epoch = watch  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        trainer.fit()
    except _Reached:
        pass
    minutes = (time.perf_counter() - started) / 60
    last = trainer.history[-1] if trainer.history else {"loss": float("nan")}
    chance = math.log(trainer.candidates) if trainer.candidates else float("nan")
    return {"preset": preset, "reached_at_step": reached.get("step"),
            "loss": reached.get("loss", last["loss"]), "chance": chance,
            "ratio": reached.get("loss", last["loss"]) / chance, "steps_run": trainer.step,
            "minutes": round(minutes, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsdd", default="../shared/data/fsdd")
    parser.add_argument("--out", default="results/levels")
    parser.add_argument("--presets", nargs="+", default=["1dconv_gru", "1dconv_lstm",
                        "1dconv_transformer", "1dconv_tiny", "cpc_tiny", "fsdd", "clips"])
    parser.add_argument("--levels", nargs="+", type=float, default=[0.0, -30.0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    fsdd = Path(args.fsdd)
    if not fsdd.is_dir():
        print(f"FSDD not found at {fsdd}: nothing to measure", file=sys.stderr)
        return 0
    out = Path(args.out)
    rows = []
    for level in args.levels:
        data = build_joined(fsdd, out / "data", level)
        for preset in args.presets:
            row = train_until(preset, data, out / f"runs_{int(level)}dB", args.steps, args.threads,
                              args.set)
            row["level_db"] = level
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"| preset | level | reached {TARGET} x chance at step | loss / chance | minutes |",
             "|---|---|---|---|---|"]
    for r in rows:
        reached = r["reached_at_step"] if r["reached_at_step"] is not None else f"not in {r['steps_run']}"
        lines.append(f"| {r['preset']} | {r['level_db']:+.0f} dB | {reached} | {r['ratio']:.3f} | "
                     f"{r['minutes']} |")
    table = "\n".join(lines) + "\n"
    (out / "levels.md").write_text(table)
    (out / "levels.json").write_text(json.dumps(rows, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
