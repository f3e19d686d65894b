"""Crops/s the data pipeline delivers from a WebDataset corpus (issue 13, item 4), without
a model: random access and streaming, from a file:// URL and through fsspec (memory://).

    .venv/bin/python benchmarks/streaming.py --files 600 --seconds 1 --work /tmp/stream-bench

Generates --files noise-and-tone clips of --seconds at 16 kHz (never stored), prepares them
with the `clips` preset (16 kHz, 0.25 s crops, N=32) as int16 .bin shards and as WebDataset
tars, then for --measure seconds each draws batches of N crops in one thread: CropSampler on
the .bin corpus, CropSampler on the tar corpus by file:// URL (memory-mapped), StreamSampler
on the same URL (shards read front to back, shuffle buffer of data.shuffle_buffer crops) and
StreamSampler on a copy in fsspec's memory:// file system (the code path of s3:// or gs://,
without the network). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf


def _generate(folder: Path, files: int, seconds: float, rate: int = 16000) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(files):
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / f"clip{i:05d}.wav", wave.astype(np.float32), rate)


def _rate(batch: Callable[[int], Any], crops_per_batch: int, seconds: float) -> float:
    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < seconds:
        batch(steps)
        steps += 1
    return steps * crops_per_batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--measure", type=float, default=3.0, help="seconds per mode")
    parser.add_argument("--work", type=Path, default=Path("/tmp/audiocpc-stream-bench"))
    args = parser.parse_args()

    import fsspec
    import torch

    torch.set_num_threads(1)
    from audiocpc import load_config
    from audiocpc.data.corpus import CropSampler
    from audiocpc.data.prepared import open_data, prepare_corpus
    from audiocpc.data.streaming import StreamSampler

    shutil.rmtree(args.work, ignore_errors=True)
    source = args.work / "audio"
    _generate(source, args.files, args.seconds)
    data = load_config("clips", [f"data.cache_dir={args.work / 'cache'}"]).data
    crop, n = data.crop_samples, data.N
    prepare_corpus(source, args.work / "bin", data, workers=1, progress=False)
    prepare_corpus(source, args.work / "wds", data, workers=1, progress=False,
                   shard_format="webdataset")
    url = (args.work / "wds").resolve().as_uri()
    memory = fsspec.filesystem("memory")
    memory.put(str(args.work / "wds"), "/bench-wds", recursive=True)

    plain = open_data(args.work / "bin", data).corpus()
    by_url = open_data(url, data).corpus()
    remote = open_data("memory://bench-wds", data).corpus()
    modes = {
        "random_access_bin": CropSampler(plain, crop, n, seed=0).batch,
        "random_access_tar_file_url": CropSampler(by_url, crop, n, seed=0).batch,
        "streaming_tar_file_url": StreamSampler(by_url, crop, n, seed=0,
                                                buffer=data.shuffle_buffer).batch,
        "streaming_tar_memory_fsspec": StreamSampler(remote, crop, n, seed=0,
                                                     buffer=data.shuffle_buffer).batch,
    }
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"load {os.getloadavg()[0]:.1f}",
        "files": args.files, "seconds_per_file": args.seconds, "preset": "clips",
        "crop_samples": crop, "batch": n, "threads": 1}
    for name, batch in modes.items():
        result[f"crops_per_s_{name}"] = round(_rate(batch, n, args.measure), 1)
    resume = StreamSampler(by_url, crop, n, seed=0, buffer=data.shuffle_buffer)
    start = time.perf_counter()
    resume.batch(200)  # replay 200 steps on the manifest, then read the buffer's files
    result["streaming_resume_at_step_200_s"] = round(time.perf_counter() - start, 3)
    result["load_after"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
