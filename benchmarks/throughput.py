"""Throughput benchmark: data pipeline, training, embedding, FLOPs and memory.

    python benchmarks/throughput.py --preset 1dconv_gru --precisions none,bf16 --json out.json

Prints a table and (with --json) writes the numbers. Without --data, ten synthetic 30 s
files are generated (the length of a GTZAN clip). Training is timed through the same
`Trainer.train_step` the CLI uses, after warm-up, as the median of several intervals.
Model FLOPs are counted from the layers' shapes (see audiocpc.training.flops) and compared with a
matmul peak measured in the same run. Without --data, a synthetic data set is generated.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from audiocpc import load_config
from audiocpc.data.corpus import CropSampler, batch_stream
from audiocpc.data.scan import scan_folder
from audiocpc.data.synthetic import make_demo_dataset
from audiocpc.evaluation.embed import crop_grid, crop_length, crop_starts, embed_crops
from audiocpc.training.flops import count_training_flops
from audiocpc.training.trainer import Trainer, autocast_context


def median_rate(work: Callable[[], None], units: float, intervals: int, per_interval: int) -> float:
    """Median over `intervals` of (units x per_interval) / seconds."""
    rates = []
    for _ in range(intervals):
        start = time.perf_counter()
        for _ in range(per_interval):
            work()
        rates.append(units * per_interval / (time.perf_counter() - start))
    return statistics.median(rates)


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    return median_rate(lambda: a @ b, 2 * size**3 / 1e9, repeats, 2)


def peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def bench_data(corpus: Any, cfg: Any, intervals: int) -> float:
    sampler = CropSampler(corpus, cfg.data.crop_samples, cfg.data.N, seed=0)
    steps = iter(range(10**9))
    rate = median_rate(lambda: sampler.batch(next(steps)), cfg.data.N, intervals, 20)
    if cfg.data.num_workers:  # the loader with its worker processes, as training uses it
        stream = batch_stream(sampler, 0, 10**9, num_workers=cfg.data.num_workers)
        next(stream)
        rate = median_rate(lambda: next(stream), cfg.data.N, intervals, 20)
    return rate


def bench_training(trainer: Trainer, corpus: Any, warmup: int, intervals: int, per_interval: int
                   ) -> tuple[float, float]:
    cfg = trainer.config
    sampler = CropSampler(corpus, cfg.data.crop_samples, cfg.data.N, seed=0)
    batches = [torch.from_numpy(sampler.batch(i)) for i in range(4)]
    counter = iter(range(10**9))

    def step() -> None:
        trainer.train_step(batches[next(counter) % len(batches)])

    for _ in range(warmup):
        step()
    steps_per_second = median_rate(step, 1, intervals, per_interval)

    model = trainer.model

    def one_step() -> None:
        with autocast_context(trainer.device, trainer.precision or "none"):  # auto: as chosen
            out = model(batches[0].to(trainer.device))
        out.loss.backward()
        model.zero_grad(set_to_none=True)

    flops = count_training_flops(model, one_step)
    return steps_per_second, flops / 1e9


def bench_embedding(trainer: Trainer, corpus: Any, crops_per_file: int, intervals: int
                    ) -> tuple[float, bool]:
    """Seconds of crop audio embedded per second by the `audiocpc embed` path: `crops_per_file`
    seeded crops of every file (the reference's 90 per training file), batched, with the
    shared-window encoding where it applies. Returns (rate, whether windows were shared)."""
    cfg, model = trainer.config, trainer.model
    crop = crop_length(cfg)
    waves = [np.asarray(corpus.wave(i)) for i in range(len(corpus))]
    grid = crop_grid(model)
    starts = [crop_starts(len(w), crop, crops_per_file, 0, str(i), grid) for i, w in enumerate(waves)]
    seconds = sum(len(s) for s in starts) * crop / cfg.data.sample_rate
    used_shared = False

    def embed() -> None:
        nonlocal used_shared
        with autocast_context(trainer.device, trainer.precision or "none"):
            used_shared = embed_crops(model, waves, starts, crop, "context")[1]

    embed()
    rate = median_rate(embed, seconds, intervals, 1)
    model.train()
    return rate, used_shared


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="audiocpc-bench-"))
    data_dir = Path(args.data) if args.data else make_demo_dataset(
        workdir / "data", files_per_class=2, test_files_per_class=1, seconds=30.0) / "train"
    peaks = {"none": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    rows = []
    for precision in args.precisions.split(","):
        overrides = [f"output.dir={workdir / 'runs'}", f"output.name=bench_{precision}",
                     f"train.mixed_precision={precision}", f"train.device={args.device}",
                     *args.overrides]
        cfg = load_config(args.preset, overrides)
        corpus = scan_folder(data_dir, cfg.data, progress=False).corpus()
        trainer = Trainer(cfg, data_dir, force=True, progress=False)
        data_rate = bench_data(corpus, cfg, args.intervals)
        steps, gflop = bench_training(trainer, corpus, args.warmup, args.intervals, args.steps)
        embed_rate, shared = bench_embedding(trainer, corpus, args.embed_crops, args.intervals)
        crop_seconds = cfg.data.crop_samples / cfg.data.sample_rate
        peak = peaks["bf16" if trainer.precision == "bf16" else "none"]
        rows.append({
            "preset": args.preset, "precision": precision, "device": str(trainer.device),
            "computed_in": trainer.precision,  # what `auto` chose; else the precision itself
            "cpu": cpu_model_name(),
            "threads": args.threads, "batch": cfg.data.N,
            "train_steps_per_second": steps,
            "train_audio_seconds_per_second": steps * cfg.data.N * crop_seconds,
            "model_gflop_per_step": gflop,
            "achieved_gflops": gflop * steps,
            "matmul_peak_gflops": peak,
            "fraction_of_matmul_peak": gflop * steps / peak,
            "matmul_peak_gflops_fp32": peaks["none"], "matmul_peak_gflops_bf16": peaks["bf16"],
            "data_crops_per_second": data_rate,
            "data_headroom": data_rate / (steps * cfg.data.N),
            "embed_audio_seconds_per_second": embed_rate,
            "embed_crops_per_file": args.embed_crops, "embed_shared_windows": shared,
            "embed_vs_train_speed": embed_rate / (steps * cfg.data.N * crop_seconds),
            "peak_rss_mib": peak_rss_mib(),
        })
    return rows


def cpu_model_name() -> str:
    """lscpu's "Model name" (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(rows: list[dict[str, Any]]) -> None:
    keys = [k for k in rows[0] if k not in ("preset", "cpu")]
    print(f"preset: {rows[0]['preset']}  ({rows[0]['cpu']}, torch {torch.__version__})")
    width = max(len(k) for k in keys)
    for key in keys:
        cells = []
        for row in rows:
            value = row[key]
            cells.append(f"{value:>14.3f}" if isinstance(value, float) else f"{value!s:>14}")
        print(f"{key:<{width}} " + " ".join(cells))
    if len(rows) > 1:
        base = rows[0]["train_steps_per_second"]
        for row in rows[1:]:
            print(f"speed-up of {row['precision']} over {rows[0]['precision']}: "
                  f"{row['train_steps_per_second'] / base:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="1dconv_gru")
    parser.add_argument("--data", help="folder of audio (default: generated synthetic data)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--precisions", default="none",
                        help="comma list of none,bf16,fp16,auto (auto: the trainer's own choice)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--intervals", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed interval")
    parser.add_argument("--embed-crops", type=int, default=90,
                        help="crops per file when timing embedding (the reference's 90)")
    parser.add_argument("--quick", action="store_true", help="a few steps only (for tests)")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.intervals, args.steps, args.embed_crops = 1, 2, 1, 5
    rows = run(args)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
