"""The throughput benchmark runs end to end in its quick mode (its numbers are not asserted:
speed targets live in the benchmark's output, not in tests)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from audiocpc import load_config
from audiocpc.training.flops import count_training_flops
from audiocpc.models import build_cpc

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_quick_mode_reports_every_number(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert _load("throughput").main(["--preset", "1dconv_tiny", "--quick", "--json", str(out)]) == 0
    numbers = json.loads(out.read_text())
    for key in ("train_steps_per_second", "train_audio_seconds_per_second", "model_gflop_per_step",
                "achieved_gflops", "matmul_peak_gflops", "data_crops_per_second",
                "embed_audio_seconds_per_second", "peak_rss_mib"):
        assert numbers[key] > 0, key
    assert numbers["achieved_gflops"] == numbers["model_gflop_per_step"] * numbers["train_steps_per_second"]


def test_flop_count_matches_the_layer_shapes() -> None:
    """The reference preset costs about 0.16 GFLOP per window forward (the issue's figure);
    counting forward+backward over N*(T+k) windows gives about 3x that per window."""
    cfg = load_config("1dconv_gru")
    model = build_cpc(cfg)
    waves = torch.randn(cfg.data.N, cfg.data.crop_samples)

    def step() -> None:
        model(waves).loss.backward()

    gflop = count_training_flops(model, step) / 1e9
    windows = cfg.data.N * (cfg.data.T + cfg.data.k)
    assert 0.15 < gflop / windows / 3 < 0.17


def test_embedding_speed_benchmark_reports_every_shape_against_training(tmp_path: Path) -> None:
    out = tmp_path / "embed.json"
    args = ["--presets", "cpc_tiny,1dconv_tiny", "--shapes", "0.5x1,5x1", "--crops", "6", "--warmup", "1",
            "--intervals", "1", "--steps", "1", "--json", str(out)]
    assert _load("embed_speed").main(args) == 0
    numbers = json.loads(out.read_text())
    assert numbers["machine"]["cpu"] and len(numbers["machine"]["load_1_5_15_at_end"]) == 3
    rows = {(r["preset"], r["seconds_per_file"]): r for r in numbers["rows"]}
    assert "skipped" in rows[("cpc_tiny", 0.5)]  # shorter than one 1 s crop
    for preset in ("cpc_tiny", "1dconv_tiny"):
        row = rows[(preset, 5.0)]
        assert row["rows"] == 6 and row["shared"] in (True, False)
        for key in ("embed_crop_audio_s_per_cpu_s", "train_audio_s_per_cpu_s", "embed_vs_train_cpu",
                    "speedup_over_crop_by_crop_cpu"):
            assert row[key] > 0, key
        assert row["max_abs_difference"] < 1e-4
