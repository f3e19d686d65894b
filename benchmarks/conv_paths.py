"""The conv encoder's two float32 paths, layer by layer: time-major matmul against nn.Conv1d.

    python benchmarks/conv_paths.py --presets 1dconv_gru,cpc_paper --threads 1 --json benchmarks/results_conv_paths.json

For every conv layer of each preset's encoder, with the shapes training feeds it (window
mode: N x (T+k) windows of the window's samples; frame mode: N crops), times forward +
backward of the layer alone on both paths, each in its own layout: the matmul path
(`audiocpc.models.encoders.time_major_conv`, activations [B, L, C]) and oneDNN's conv1d
(`nn.Conv1d`, [B, C, L]). Calls alternate (matmul, conv1d, matmul, conv1d, ...) so both see
the same contention; the median of `--repeats` calls is kept. The first layer's input is
the waveform, which needs no gradient; every other layer's input does (as in training).
Times are CPU-seconds of this process (wall time is recorded too). GFLOP/s counts 2*B*L'*C_out*C_in*k for the forward and the same for each of the two
backward products (one for the first layer) and is compared with a 2048x2048 float32
matmul peak measured in the same run, per CPU-second (torch.mm, before and after the layers: the
higher is kept), and with the same product as a 1x1 conv1d (oneDNN's kernels: on an AMD EPYC
torch.mm's MKL reaches about half of what oneDNN does, so conv1d can exceed "100 %").
The whole encoder (convs, norms, activations, head) is timed the same way, with every conv on
the matmul path, on conv1d, and on each layer's faster path (model.encoder.conv_path=auto). Outputs and
gradients of the two paths are compared on every layer (largest difference printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (the matmul peak and the CPU's name, measured as there)

from audiocpc import load_config  # noqa: E402
from audiocpc.fileio import atomic_write_json  # noqa: E402
from audiocpc.models.encoders import Conv1dEncoder, time_major_conv  # noqa: E402
from audiocpc.models.factory import build_cpc  # noqa: E402


def alternate(paths: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, tuple[float, float]]:
    """(median CPU seconds, median wall seconds) per call of each path, the calls interleaved.
    CPU time of this process is the measure: on a shared machine a call's wall time includes
    whatever else ran meanwhile."""
    for _ in range(warmup):
        for work in paths.values():
            work()
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    wall: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, work in paths.items():
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            work()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    return {name: (statistics.median(cpu[name]), statistics.median(wall[name])) for name in paths}


def matmul_peak_gflops(repeats: int, size: int = 2048) -> float:
    """GFLOP per CPU-second of a size x size float32 matmul (median of `repeats`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)

    def product() -> None:
        torch.mm(a, b)

    cpu, _ = alternate({"peak": product}, 1, repeats)["peak"]
    return 2 * size**3 / 1e9 / cpu


def onednn_peak_gflops(repeats: int, size: int = 2048) -> float:
    """The same product as a 1x1 conv1d ([1, size, size] by [size, size, 1]), which torch
    hands to oneDNN rather than to the BLAS torch.mm uses (MKL on x86): on CPUs where the
    BLAS does not use every vector unit (MKL on AMD) the two peaks differ."""
    x, weight = torch.randn(1, size, size), torch.randn(size, size, 1)

    def product() -> None:
        torch.nn.functional.conv1d(x, weight)

    cpu, _ = alternate({"peak": product}, 1, repeats)["peak"]
    return 2 * size**3 / 1e9 / cpu


def encoder_batch(preset: str, overrides: list[str]) -> tuple[Conv1dEncoder, int, int]:
    """The preset's encoder, the sequences per encoder call and the samples per sequence."""
    cfg = load_config(preset, overrides)
    torch.manual_seed(0)
    model = build_cpc(cfg)
    encoder = model.encoder
    if not isinstance(encoder, Conv1dEncoder):
        raise SystemExit(f"{preset}: the encoder is {type(encoder).__name__}, not conv1d")
    if model.window is not None:  # window mode: every window of every crop is one sequence
        windows = cfg.data.crop_samples // model.window
        return encoder, cfg.data.N * windows, model.window
    return encoder, cfg.data.N, cfg.data.crop_samples


def layer_steps(conv: nn.Conv1d, batch: int, length: int, first: bool
                ) -> tuple[dict[str, Callable[[], None]], float, float]:
    """fwd+bwd of one layer on each path, its GFLOP per call and the paths' largest difference."""
    x_cm = torch.randn(batch, conv.in_channels, length)  # conv1d's layout
    x_tm = x_cm.transpose(1, 2).contiguous()  # the matmul path's
    x_cm.requires_grad_(not first)
    x_tm.requires_grad_(not first)
    out_len = (length + 2 * int(conv.padding[0]) - conv.kernel_size[0]) // conv.stride[0] + 1
    grad_cm = torch.randn(batch, conv.out_channels, out_len)
    grad_tm = grad_cm.transpose(1, 2).contiguous()

    def run(x: torch.Tensor, grad: torch.Tensor, matmul: bool) -> list[torch.Tensor]:
        conv.weight.grad = conv.bias.grad = None  # type: ignore[union-attr]  # zero_grad(set_to_none)
        if x.grad is not None:
            x.grad = None
        out = time_major_conv(x, conv) if matmul else conv(x)
        out.backward(grad)
        return [out.detach(), conv.weight.grad, x.grad if x.grad is not None else out.new_zeros(0)]

    a, b = run(x_tm, grad_tm, True), run(x_cm, grad_cm, False)
    b = [b[0].transpose(1, 2), b[1], b[2].transpose(1, 2) if b[2].numel() else b[2]]
    difference = max(float((p - q).abs().max() / q.abs().max().clamp_min(1e-30)) for p, q in zip(a, b) if q.numel())
    products = 2 if first else 3
    gflop = products * 2 * batch * out_len * conv.out_channels * conv.in_channels * conv.kernel_size[0] / 1e9
    steps: dict[str, Callable[[], None]] = {"matmul": lambda: None if run(x_tm, grad_tm, True) else None,
                                            "conv1d": lambda: None if run(x_cm, grad_cm, False) else None}
    return steps, gflop, difference


def whole_encoder(encoder: Conv1dEncoder, batch: int, samples: int, best: list[str]
                  ) -> dict[str, Callable[[], None]]:
    """fwd+bwd of the whole encoder with every conv on the matmul path, on conv1d, and on
    the per-layer faster path (what model.encoder.conv_path=auto would keep here)."""
    waves = torch.randn(batch, samples)

    def step(paths: list[str]) -> None:
        encoder.set_layer_paths(paths)
        encoder.zero_grad(set_to_none=True)
        encoder(waves).square().mean().backward()

    layers = len(best)
    return {"matmul": lambda: step(["matmul"] * layers), "conv1d": lambda: step(["conv1d"] * layers),
            "per_layer": lambda: step(best)}


def timings(seconds: dict[str, tuple[float, float]], gflop: float) -> dict[str, float]:
    out = {}
    for name, (cpu, wall) in seconds.items():
        out.update({f"{name}_cpu_ms": 1e3 * cpu, f"{name}_wall_ms": 1e3 * wall, f"{name}_gflops": gflop / cpu})
    return out


def bench(preset: str, threads: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    encoder, batch, samples = encoder_batch(preset, args.overrides)
    if not encoder.time_major:
        raise SystemExit(f"{preset}: its encoder has no matmul path (kernels must be twice the strides)")
    peak_before = matmul_peak_gflops(args.repeats)
    convs = [m for m in encoder.convs if isinstance(m, nn.Conv1d)]
    lengths = [samples, *encoder.layer_lengths(samples)]
    rows = []
    for index, conv in enumerate(convs):
        load = os.getloadavg()[0]
        steps, gflop, difference = layer_steps(conv, batch, lengths[index], first=index == 0)
        seconds = alternate(steps, args.warmup, args.repeats)
        print(f"  {preset} conv{index + 1}: matmul {1e3 * seconds['matmul'][0]:.0f} CPU-ms, conv1d {1e3 * seconds['conv1d'][0]:.0f}", flush=True)
        rows.append({"preset": preset, "threads": threads, "layer": f"conv{index + 1}",
                     "shape": f"{batch} x {conv.in_channels} x {lengths[index]} -> {conv.out_channels} x "
                              f"{lengths[index + 1]} (k {conv.kernel_size[0]}, s {conv.stride[0]})",
                     "gflop_per_call": gflop, "max_relative_difference": difference,
                     **timings(seconds, gflop), "load_1min": load})
    best = ["matmul" if r["matmul_cpu_ms"] <= r["conv1d_cpu_ms"] else "conv1d" for r in rows]
    seconds = alternate(whole_encoder(encoder, batch, samples, best), max(1, args.warmup // 2),
                        max(3, args.repeats // 3))
    rows.append({"preset": preset, "threads": threads, "layer": "encoder", "shape": f"{batch} x {samples} samples",
                 "per_layer_paths": best,
                 "gflop_per_call": sum(r["gflop_per_call"] for r in rows),
                 "load_1min": os.getloadavg()[0]})
    rows[-1].update(timings(seconds, rows[-1]["gflop_per_call"]))
    peak = max(peak_before, matmul_peak_gflops(args.repeats))  # the less disturbed of the two
    onednn_peak = onednn_peak_gflops(args.repeats)
    for row in rows:
        row["matmul_peak_gflops"] = peak
        row["onednn_1x1_conv_peak_gflops"] = onednn_peak
        for name in ("matmul", "conv1d"):
            row[f"{name}_of_peak"] = row[f"{name}_gflops"] / peak
        row["conv1d_over_matmul_time"] = row["conv1d_cpu_ms"] / row["matmul_cpu_ms"]
        if "per_layer_cpu_ms" in row:
            row["per_layer_of_peak"] = row["per_layer_gflops"] / peak
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| preset, threads | layer | shape (B x C x L) | GFLOP fwd+bwd | matmul path CPU-ms, GFLOP/s (of peak) "
          "| conv1d CPU-ms, GFLOP/s (of peak) | conv1d time / matmul time | max rel. difference |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        diff = f"{r['max_relative_difference']:.0e}" if "max_relative_difference" in r else ""
        print(f"| `{r['preset']}`, {r['threads']} | {r['layer']} | {r['shape']} | {r['gflop_per_call']:.2f} | "
              f"{r['matmul_cpu_ms']:.1f}, {r['matmul_gflops']:.0f} ({100 * r['matmul_of_peak']:.0f} %) | "
              f"{r['conv1d_cpu_ms']:.1f}, {r['conv1d_gflops']:.0f} ({100 * r['conv1d_of_peak']:.0f} %) | "
              f"{r['conv1d_over_matmul_time']:.2f} | {diff} |")
        if "per_layer_cpu_ms" in r:
            print(f"| `{r['preset']}`, {r['threads']} | encoder, per-layer faster path "
                  f"({', '.join(r['per_layer_paths'])}) | | | {r['per_layer_cpu_ms']:.1f}, {r['per_layer_gflops']:.0f} "
                  f"({100 * r['per_layer_of_peak']:.0f} %) | | {r['conv1d_cpu_ms'] / r['per_layer_cpu_ms']:.2f} "
                  f"(conv1d / per layer); {r['matmul_cpu_ms'] / r['per_layer_cpu_ms']:.2f} (matmul / per layer) | |")
    peaks = sorted({(r["preset"], r["threads"], r["matmul_peak_gflops"], r["onednn_1x1_conv_peak_gflops"])
                    for r in rows})
    print("peaks (2048x2048 float32, GFLOP per CPU-second; 'of peak' is of torch.mm's): " + ", ".join(
        f"{p} {t} thread(s): torch.mm {g:.0f}, oneDNN 1x1 conv1d {o:.0f}" for p, t, g, o in peaks))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="1dconv_gru,cpc_paper")
    parser.add_argument("--threads", default="1", help="comma list of torch thread counts (e.g. 1,2)")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls per path and layer (median kept)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="preset overrides, as for audiocpc train")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    machine = {"cpu": throughput.cpu_model_name(), "cores": os.cpu_count(), "torch": torch.__version__,
               "load_1_5_15_at_start": list(os.getloadavg())}
    print(f"{machine['cpu']}, torch {torch.__version__}, load {machine['load_1_5_15_at_start']}", flush=True)
    rows: list[dict[str, Any]] = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for preset in args.presets.split(","):
            rows += bench(preset, threads, args)
    machine["load_1_5_15_at_end"] = list(os.getloadavg())
    print_table(rows)
    print(f"load at start {machine['load_1_5_15_at_start']}, at end {machine['load_1_5_15_at_end']}")
    if args.json:
        atomic_write_json(args.json, {"machine": machine, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
