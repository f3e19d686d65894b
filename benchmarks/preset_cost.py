"""Cost per audio hour of every preset on this machine: training and embedding.

    python benchmarks/preset_cost.py --threads 2 --json benchmarks/results_preset_cost.json
    python benchmarks/preset_cost.py --presets clips recordings --device cuda   # on a GPU

For each preset, `benchmarks/throughput.py`'s measurement (the CLI's own `train_step` and
embedding path, after warm-up, median of several intervals, on generated 30 s files) turns
into the numbers a user plans with:

- **train min / audio h**: minutes of this machine for training to consume one hour of
  audio (crops x crop length); one pass over an hour-long data set is one such hour;
- **embed min / audio h**: minutes to embed one hour of crop audio with `audiocpc run`'s
  default crops per file (90), frames shared between a file's crops where the model allows.

Prints a Markdown table with the CPU's model name (`lscpu`) and the load average, so that
numbers from a shared machine say so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (the measurement this table is made from)

PRESETS = ["clips", "recordings", "fsdd", "cpc_tiny", "cpc_paper", "1dconv_tiny", "1dconv_gru",
           "1dconv_lstm", "1dconv_transformer", "2dconv_gru", "2dconv_transformer"]


def cost_row(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    bench = argparse.Namespace(
        preset=preset, data=args.data, overrides=[], precisions="none", device=args.device,
        threads=args.threads, warmup=args.warmup, intervals=args.intervals, steps=args.steps,
        embed_crops=90 if not args.quick else 5)
    row = throughput.run(bench)[0]
    train_rate = row["train_audio_seconds_per_second"]
    embed_rate = row["embed_audio_seconds_per_second"]
    return {"preset": preset, "device": row["device"], "threads": args.threads,
            "train_audio_seconds_per_second": train_rate,
            "train_minutes_per_audio_hour": 60.0 / train_rate,
            "embed_audio_seconds_per_second": embed_rate,
            "embed_minutes_per_audio_hour": 60.0 / embed_rate,
            "peak_rss_mib": row["peak_rss_mib"]}


def table(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| preset | train min / audio h | embed min / audio h | train audio-s/s |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['preset']}` | {r['train_minutes_per_audio_hour']:.1f} | "
                     f"{r['embed_minutes_per_audio_hour']:.2f} | "
                     f"{r['train_audio_seconds_per_second']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--data", help="folder of audio (default: generated 30 s files)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--intervals", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed interval")
    parser.add_argument("--quick", action="store_true", help="a few steps only (for tests)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.intervals, args.steps = 1, 1, 1
    load_before = os.getloadavg()
    rows = [cost_row(preset, args) for preset in args.presets]
    load_after = os.getloadavg()
    header = (f"{throughput.cpu_model_name()}, {os.cpu_count()} cores, {args.threads} torch thread(s), "
              f"device {rows[0]['device']}; load average (1 min) {load_before[0]:.1f} before, "
              f"{load_after[0]:.1f} after")
    print(table(rows, header))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": header, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
