"""Embedding speed: shared window encoding versus crop by crop.

    python benchmarks/embed_speed.py --preset 1dconv_gru --files 4 --seconds 30 --crops 90

Generates noise "files" in memory at the preset's rate (speed does not depend on the
weights, so the model is the seeded, untrained one), draws the same crops `audiocpc embed`
draws, and times `embed_crops` both ways after a warm-up pass over the same workload (the
steady state of a long run). Prints files per second, the speed-up and the largest
difference between the two results.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from audiocpc import load_config
from audiocpc.evaluation.embed import crop_length, embed_crops, plan_crops
from audiocpc.models import build_cpc
from audiocpc.training.device import resolve_device


def timed(work, device: torch.device) -> tuple[float, np.ndarray]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    rows, _ = work()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="1dconv_gru")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each file")
    parser.add_argument("--crops", type=int, default=90)
    parser.add_argument("--kind", default="context")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    config = load_config(args.preset)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_cpc(config).to(device).eval()
    rate = config.data.sample_rate
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(int(args.seconds * rate)).astype(np.float32) * 0.3
             for _ in range(args.files)]
    crop = crop_length(config)
    starts = plan_crops([w.size for w in waves], [str(i) for i in range(len(waves))], crop,
                        args.crops, seed=0, grid=model.window or 1)

    def run(shared: bool):
        return lambda: embed_crops(model, waves, starts, crop, args.kind, args.batch_size, shared)

    # Warm-up with the whole workload: on a GPU each new batch shape costs a cuDNN plan once,
    # which a long run amortises; the timed pass measures the steady state.
    run(True)()
    run(False)()
    shared_s, shared_rows = timed(run(True), device)
    direct_s, direct_rows = timed(run(False), device)
    result = {
        "preset": args.preset, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "files": args.files, "seconds_per_file": args.seconds,
        "crops_per_file": args.crops, "kind": args.kind, "batch_size": args.batch_size,
        "shared_files_per_s": args.files / shared_s, "direct_files_per_s": args.files / direct_s,
        "speedup": direct_s / shared_s,
        "max_abs_difference": float(np.abs(shared_rows - direct_rows).max()),
    }
    for key, value in result.items():
        print(f"{key:>20}: {value:.4g}" if isinstance(value, float) else f"{key:>20}: {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
