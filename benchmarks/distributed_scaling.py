"""Scaling of DistributedDataParallel training: 1 vs 2 processes on CPU (gloo, loopback).

    python benchmarks/distributed_scaling.py                       # FSDD if present, else tones
    python benchmarks/distributed_scaling.py --data DIR --steps 40 --set data.N=8

Each process count runs the real command, `torchrun --nproc-per-node=P -m audiocpc train`,
with OMP_NUM_THREADS=1 (one core per process), data.N per process fixed (weak scaling: the
global batch grows with P), for two epochs of --steps steps. The first epoch is warm-up;
the second epoch's loop time (history.csv `seconds`, measured by the trainer, without start-up
and corpus loading) gives steps/s and audio-seconds/s. Scaling efficiency =
(audio-s/s with 2 processes) / (2 x audio-s/s with 1 process): 100% is perfect scaling.
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from audiocpc import load_config

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tones(folder: Path, files: int = 32, seconds: float = 2.0, sample_rate: int = 8000) -> Path:
    """A synthetic data set (a noisy tone per file) when no recordings are given."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    for i, f0 in enumerate(np.geomspace(150, 2500, files)):
        wave = 0.5 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(folder / f"tone{i:03d}.wav", wave.astype(np.float32), sample_rate)
    return folder


def run(processes: int, data: Path, preset: str, overrides: list[str], steps: int,
        out: Path) -> dict[str, float]:
    name = f"scaling_{processes}"
    settings = overrides + ["train.device=cpu", "train.epochs=2", f"train.steps_per_epoch={steps}",
                            f"train.checkpoint_every={2 * steps}"]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}",
               "--master-addr=127.0.0.1", f"--master-port={_free_port()}", "-m", "audiocpc",
               "train", "--preset", preset, "--data", str(data), "--out", str(out),
               "--name", name, "--force", "--quiet"]
    command += [arg for item in settings for arg in ("--set", item)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        sys.exit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    with open(out / "cpc" / name / "history.csv") as handle:
        second_epoch = list(csv.DictReader(handle))[1]
    config = load_config(preset, overrides)
    seconds = float(second_epoch["seconds"])
    crops = steps * config.data.N * processes
    return {"steps_per_s": steps / seconds,
            "audio_s_per_s": crops * config.data.full_duration / seconds,
            "global_batch": config.data.N * processes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="audio folder (default: FSDD, else generated tones)")
    parser.add_argument("--preset", default="1dconv_tiny")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (after as many warm-up)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = list(args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None and FSDD.is_dir():
            data = FSDD
            if not any(o.startswith("data.full_duration=") for o in overrides):
                overrides.append("data.full_duration=0.4")  # spoken digits last ~0.4 s
        if data is None:
            data = _tones(Path(tmp) / "tones")
        print(f"data {data}; preset {args.preset} {' '.join(overrides)}; "
              f"{os.cpu_count()} CPU cores; gloo on loopback; OMP_NUM_THREADS=1 per process")
        results = {p: run(p, data, args.preset, overrides, args.steps, Path(tmp)) for p in (1, 2)}
    print(f"{'processes':>9} {'global batch':>12} {'steps/s':>8} {'audio s/s':>10}")
    for p, r in results.items():
        print(f"{p:>9} {r['global_batch']:>12} {r['steps_per_s']:>8.2f} {r['audio_s_per_s']:>10.1f}")
    efficiency = results[2]["audio_s_per_s"] / (2 * results[1]["audio_s_per_s"])
    print(f"scaling efficiency (2 processes vs 2 x 1): {100 * efficiency:.0f}%")


if __name__ == "__main__":
    main()
