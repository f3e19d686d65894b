"""Peak RSS and crops/s of `CropSampler` batches from a prepared corpus (issue 13): whether
the file-backed part of RSS (the memory-mapped shards' pages) stays bounded however much of
the corpus is read.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/crop_rss.py CORPUS

CORPUS is a folder written by `audiocpc prepare DATA --out CORPUS`.
Draws batches of the `clips` preset (N=32 crops of 0.25 s) in one thread and prints, after
the first batch and after --batches (200 and 2000 by default), the process's peak RSS
(ru_maxrss), its current RssFile and RssAnon (/proc/self/status) and the crops/s since the
previous line. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import resource
import time


def _status(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _report(name: str, crops_per_second: str = "") -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name}: peak {peak:.0f} MiB, RssFile {_status('RssFile'):.0f} MiB, "
          f"RssAnon {_status('RssAnon'):.0f} MiB{crops_per_second}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", help="a prepared corpus folder")
    parser.add_argument("--batches", default="200,2000", help="report after these many batches")
    args = parser.parse_args()
    from audiocpc import load_config
    from audiocpc.data.corpus import CropSampler
    from audiocpc.data.prepared import open_data

    config = load_config("clips")
    corpus = open_data(args.corpus, config.data).corpus()
    sampler = CropSampler(corpus, config.data.crop_samples, config.data.N, seed=0)
    sampler.batch(0)
    _report("batch 1")
    done = 1
    for total in sorted(int(b) for b in args.batches.split(",")):
        began = time.perf_counter()
        for step in range(done, total):
            sampler.batch(step)
        rate = (total - done) * config.data.N / (time.perf_counter() - began)
        _report(f"batch {total}", f", {rate:,.0f} crops/s (batches {done + 1}..{total})")
        done = total


if __name__ == "__main__":
    main()
