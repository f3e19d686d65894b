"""Embedding speed on every shape of data, against training speed, in one run.

    python benchmarks/embed_speed.py --presets 1dconv_gru,cpc_paper,clips \\
        --shapes 0.5x32,5x8,30x2,3600x1 --crops 90 --json benchmarks/results_embed_shapes.json

For each preset: training is timed first through the trainer's own `train_step` (median of
intervals after warm-up), then, for each shape (`SECONDSxFILES`: 0.5 s clips, 5 s clips,
30 s tracks, a 1-hour recording), noise "files" are generated in memory at the preset's
rate (speed does not depend on the weights, so the model is the seeded, untrained one),
the crops `audiocpc run` draws are planned (`--crops`, default 90 as for the train split,
on the `crop_grid`) and `embed_crops` is timed with the kind and pooling `audiocpc run`
embeds (zc, meanstd), after a warm-up on the first file. Crop by crop (no sharing) is timed
on the first file only and compared, and the largest difference between the two printed.

With `--bound`, one training step and one inference forward (encode, context, pooling) of
the same training batch are timed in turn (CPU-seconds, medians): their ratio is the most
embedding can reach, in crop audio per second against training, where crops share no work
(a 1-hour recording's 90 crops).

Throughput is audio-seconds per second: for training, the crop audio of its batches; for
embedding, the crop audio of its rows (`crop audio/s`, the issue's measure) and the
duration of the files embedded (`file audio/s`). Both wall-clock and per CPU-second of this
process (steadier on a shared machine); the machine's load and CPU model are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf
import torch

from audiocpc import load_config
from audiocpc.data.corpus import CropSampler
from audiocpc.data.scan import scan_folder
from audiocpc.evaluation.embed import (crop_grid, crop_length, distinct_crops, embed_crops, plan_crops,
                                       pool_steps, sharing_reuse)
from audiocpc.training.trainer import Trainer, autocast_context


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def training_rate(trainer: Trainer, corpus: Any, warmup: int, intervals: int, steps: int) -> dict[str, float]:
    """Crop audio-seconds trained per wall second and per CPU-second (medians of intervals)."""
    cfg = trainer.config
    sampler = CropSampler(corpus, cfg.data.crop_samples, cfg.data.N, seed=0)
    batches = [torch.from_numpy(sampler.batch(i)) for i in range(4)]
    for i in range(warmup):
        trainer.train_step(batches[i % len(batches)])
    audio = steps * cfg.data.N * cfg.data.crop_samples / cfg.data.sample_rate
    walls, cpus = [], []
    for interval in range(intervals):
        wall, cpu, _ = timed(lambda: [trainer.train_step(batches[(interval + j) % len(batches)])
                                      for j in range(steps)])
        walls.append(audio / wall)
        cpus.append(audio / cpu)
    return {"train_audio_s_per_s": statistics.median(walls), "train_audio_s_per_cpu_s": statistics.median(cpus)}


def forward_only_bound(trainer: Trainer, corpus: Any, kind: str, pool: str, repeats: int) -> dict[str, float]:
    """The bound where crops share no work: CPU-seconds of one training step over those of one
    inference forward (encode, context, pooling) of the same batch, interleaved, medians."""
    cfg, model = trainer.config, trainer.model
    batch = torch.from_numpy(CropSampler(corpus, cfg.data.crop_samples, cfg.data.N, seed=0).batch(0))

    @torch.inference_mode()
    def forward() -> None:
        model.eval()
        with autocast_context(trainer.device, cfg.train.mixed_precision):
            z = model.encode(batch)
            pool_steps(z, None if kind == "z_mean" else model.contextualize(z), kind, pool)

    train_cpu, forward_cpu = [], []
    forward()
    for _ in range(repeats):
        train_cpu.append(timed(lambda: trainer.train_step(batch))[1])
        forward_cpu.append(timed(forward)[1])
    model.train()
    audio = cfg.data.N * cfg.data.crop_samples / cfg.data.sample_rate
    train_s, forward_s = statistics.median(train_cpu), statistics.median(forward_cpu)
    return {"bound_train_step_cpu_s": train_s, "bound_forward_cpu_s": forward_s,
            "forward_only_audio_s_per_cpu_s": audio / forward_s, "no_sharing_bound_x": train_s / forward_s}


def embed_shape(trainer: Trainer, seconds: float, files: int, crops: int, kind: str, pool: str,
                batch_size: int, direct: bool) -> dict[str, Any]:
    cfg, model = trainer.config, trainer.model
    rate = cfg.data.sample_rate
    crop = crop_length(cfg)
    rng = np.random.default_rng(0)
    waves = [(rng.standard_normal(int(seconds * rate)) * 0.3).astype(np.float32) for _ in range(files)]
    starts = plan_crops([w.size for w in waves], [f"f{i}" for i in range(files)], crop, crops, 0, crop_grid(model))
    row = {"shape": f"{seconds:g} s x {files}", "seconds_per_file": seconds, "files": files, "crops_per_file": crops}
    rows = sum(len(s) for s in starts)
    if not rows:
        row["skipped"] = f"shorter than one crop ({crop / rate:.3f} s): `audiocpc embed` skips such files"
        return row
    precision = cfg.train.mixed_precision

    def embed(subset: list[np.ndarray], shared: bool | None) -> tuple[np.ndarray, bool]:
        with autocast_context(trainer.device, precision):
            return embed_crops(model, waves, subset, crop, kind, batch_size, shared, pool=pool)

    first = [s if i == 0 else np.zeros(0, np.int64) for i, s in enumerate(starts)]
    embed(first, None)  # warm-up
    wall, cpu, (rows_shared, used) = timed(lambda: embed(starts, None))
    crop_audio = rows * crop / rate
    file_audio = sum(w.size for w, s in zip(waves, starts) if len(s)) / rate
    row.update({
        "rows": rows, "distinct_crops": sum(map(len, distinct_crops(starts)[0])),
        "shared": used, "reuse": sharing_reuse(model, distinct_crops(starts)[0], crop),
        "embed_wall_s": wall, "embed_cpu_s": cpu,
        "embed_crop_audio_s_per_s": crop_audio / wall, "embed_crop_audio_s_per_cpu_s": crop_audio / cpu,
        "embed_file_audio_s_per_s": file_audio / wall, "embed_file_audio_s_per_cpu_s": file_audio / cpu,
    })
    if direct:  # crop by crop, on the first file: the old cost of this shape
        one_rows = len(starts[0])
        wall_d, cpu_d, (rows_direct, _) = timed(lambda: embed(first, False))
        row["direct_crop_audio_s_per_cpu_s"] = one_rows * crop / rate / cpu_d
        row["speedup_over_crop_by_crop_cpu"] = row["embed_crop_audio_s_per_cpu_s"] / row["direct_crop_audio_s_per_cpu_s"]
        row["max_abs_difference"] = float(np.abs(rows_shared[:one_rows] - rows_direct).max())
    return row


def bench_preset(preset: str, shapes: list[tuple[float, int]], args: argparse.Namespace, workdir: Path
                 ) -> list[dict[str, Any]]:
    overrides = [f"output.dir={workdir / 'runs'}", f"output.name=bench_{preset}",
                 f"train.device={args.device}", *args.overrides]
    cfg = load_config(preset, overrides)
    data = workdir / f"data_{preset}"  # a few files for the trainer's crops
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    seconds = max(5.0, 2 * cfg.data.crop_samples / cfg.data.sample_rate)
    for i in range(4):
        sf.write(data / f"noise{i}.wav", (rng.standard_normal(int(seconds * cfg.data.sample_rate)) * 0.3)
                 .astype(np.float32), cfg.data.sample_rate, subtype="FLOAT")
    corpus = scan_folder(data, cfg.data, progress=False).corpus()
    torch.manual_seed(0)
    trainer = Trainer(cfg, data, force=True, progress=False)
    train = training_rate(trainer, corpus, args.warmup, args.intervals, args.steps)
    print(f"{preset}: training {train['train_audio_s_per_s']:.2f} audio-s/s "
          f"({train['train_audio_s_per_cpu_s']:.2f} per CPU-s)", flush=True)
    if args.bound:
        train.update(forward_only_bound(trainer, corpus, args.kind, args.pool, args.intervals))
        print(f"{preset}: one training step {train['bound_train_step_cpu_s']:.3f} CPU-s, one inference "
              f"forward of the same batch {train['bound_forward_cpu_s']:.3f} CPU-s: without shared work "
              f"embedding is at most {train['no_sharing_bound_x']:.1f}x training", flush=True)
    out = []
    for seconds_per_file, files in shapes:
        load_before = os.getloadavg()[0]
        row = embed_shape(trainer, seconds_per_file, files, args.crops, args.kind, args.pool,
                          args.batch_size, not args.no_direct)
        trainer.model.train()
        row.update({"preset": preset, "mode": cfg.model.mode, "precision": cfg.train.mixed_precision, **train,
                    "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]})
        if "embed_crop_audio_s_per_s" in row:
            row["embed_vs_train_wall"] = row["embed_crop_audio_s_per_s"] / train["train_audio_s_per_s"]
            row["embed_vs_train_cpu"] = row["embed_crop_audio_s_per_cpu_s"] / train["train_audio_s_per_cpu_s"]
        print_row(row)
        out.append(row)
    return out


def print_row(row: dict[str, Any]) -> None:
    if "skipped" in row:
        print(f"  {row['shape']:>14}: skipped ({row['skipped']})", flush=True)
        return
    extra = ""
    if "speedup_over_crop_by_crop_cpu" in row:
        extra = (f", {row['speedup_over_crop_by_crop_cpu']:.1f}x crop by crop "
                 f"(max diff {row['max_abs_difference']:.1e})")
    print(f"  {row['shape']:>14}: {row['rows']} rows ({row['distinct_crops']} distinct), shared={row['shared']}, "
          f"crop audio {row['embed_crop_audio_s_per_s']:.1f}/s ({row['embed_crop_audio_s_per_cpu_s']:.1f} per CPU-s) "
          f"= {row['embed_vs_train_wall']:.1f}x training ({row['embed_vs_train_cpu']:.1f}x per CPU-s), "
          f"file audio {row['embed_file_audio_s_per_cpu_s']:.1f} per CPU-s{extra}; "
          f"load {row['load_1min_before']:.1f}-{row['load_1min_after']:.1f}", flush=True)


def parse_shapes(text: str) -> list[tuple[float, int]]:
    shapes = []
    for item in text.split(","):
        seconds, _, files = item.partition("x")
        shapes.append((float(seconds), int(files or 1)))
    return shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="1dconv_gru,cpc_paper,clips")
    parser.add_argument("--shapes", default="0.5x32,5x8,30x2,3600x1",
                        help="comma list of SECONDSxFILES (default: 0.5 s clips, 5 s clips, 30 s tracks, 1 hour)")
    parser.add_argument("--crops", type=int, default=90, help="crops per file (audiocpc run's train split: 90)")
    parser.add_argument("--kind", default="zc")
    parser.add_argument("--pool", default="meanstd")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--intervals", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed interval")
    parser.add_argument("--no-direct", action="store_true", help="skip the crop-by-crop comparison")
    parser.add_argument("--bound", action="store_true",
                        help="also time one inference forward of a training batch against one training step "
                             "(the most embedding can reach where crops share no work)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = {"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__,
               "load_1_5_15_at_start": list(os.getloadavg()), "cores": os.cpu_count()}
    print(f"{machine['cpu']}, {args.threads} thread(s), torch {torch.__version__}, "
          f"load {machine['load_1_5_15_at_start']}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="audiocpc-embed-bench-") as workdir:
        for preset in args.presets.split(","):
            rows += bench_preset(preset, parse_shapes(args.shapes), args, Path(workdir))
    machine["load_1_5_15_at_end"] = list(os.getloadavg())
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
