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


def test_throughput_reports_what_auto_chose_and_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert _load("throughput").main(["--preset", "1dconv_tiny", "--quick", "--precisions", "auto",
                                     "--json", str(out), "--data", str(_tiny_folder(tmp_path))]) == 0
    numbers = json.loads(out.read_text())
    assert numbers["precision"] == "auto" and numbers["computed_in"] in ("none", "bf16")
    assert numbers["cpu"] and numbers["train_steps_per_second"] > 0


def test_throughput_derives_its_rates_from_the_measurements(tmp_path: Path, monkeypatch) -> None:
    """The derived columns, with the measurements replaced by known numbers and the expected
    values worked out by hand (1dconv_tiny: 16 crops of 8000 samples at 8 kHz = 16 s a step)."""
    throughput = _load("throughput")
    monkeypatch.setattr(throughput, "matmul_peak_gflops", lambda dtype: 40.0 if dtype == torch.float32 else 20.0)
    monkeypatch.setattr(throughput, "bench_data", lambda corpus, cfg, intervals: 3200.0)
    monkeypatch.setattr(throughput, "bench_training", lambda *args: (2.5, 4.0))
    monkeypatch.setattr(throughput, "bench_embedding", lambda *args: (120.0, True))
    out = tmp_path / "bench.json"
    assert throughput.main(["--preset", "1dconv_tiny", "--quick", "--json", str(out),
                            "--data", str(_tiny_folder(tmp_path))]) == 0
    numbers = json.loads(out.read_text())
    assert numbers["batch"] == 16
    assert numbers["train_audio_seconds_per_second"] == 40.0   # 2.5 steps/s x 16 s
    assert numbers["achieved_gflops"] == 10.0                   # 4 GFLOP x 2.5 steps/s
    assert numbers["fraction_of_matmul_peak"] == 0.25           # 10 of 40
    assert numbers["data_headroom"] == 80.0                     # 3200 crops/s for 40 a second
    assert numbers["embed_vs_train_speed"] == 3.0               # 120 audio s/s against 40


def _tiny_folder(tmp_path: Path) -> Path:
    import numpy as np
    import soundfile as sf

    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"tone{i}.wav", np.sin(np.arange(16000) * (0.05 + 0.01 * i)).astype(np.float32), 8000)
    return folder


def test_flop_count_of_a_linear_layer_by_hand() -> None:
    """y = x W^T + b with x [5, 8], W [4, 8]: the forward matmul is 2*5*8*4 = 320 FLOPs; the
    backward adds the weight gradient (320) and, when x needs one, the input gradient (320)."""
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(5, 8)
    assert count_training_flops(layer, lambda: layer(x).sum().backward()) == 640
    x.requires_grad_(True)
    assert count_training_flops(layer, lambda: layer(x).sum().backward()) == 960


def test_a_recurrent_layer_the_counter_sees_is_counted_once() -> None:
    """On the CPU a GRU runs as matmuls that FlopCounterMode counts itself (forward and
    backward, about the shape estimate): nothing is added on top. A fused kernel it cannot
    see (cuDNN) gets the shape estimate instead."""
    from torch.utils.flop_counter import FlopCounterMode

    from audiocpc.training.flops import recurrent_training_flops

    gru = torch.nn.GRU(16, 32, batch_first=True)
    x = torch.randn(4, 10, 16)

    def step() -> None:
        gru(x)[0].sum().backward()

    with FlopCounterMode(display=False) as counter:
        step()
    counted = count_training_flops(gru, step)
    assert counted == counter.get_total_flops() > 0
    estimate = recurrent_training_flops(gru, 4, 10)
    assert estimate == 3 * 2 * 3 * (16 + 32) * 32 * 4 * 10
    assert 0.5 < counted / estimate < 1.5  # the counter and the shape estimate agree roughly
    lstm = torch.nn.LSTM(16, 32, num_layers=2)
    assert recurrent_training_flops(lstm, 4, 10) == 3 * 2 * 4 * ((16 + 32) + (32 + 32)) * 32 * 4 * 10


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


def test_preset_cost_turns_rates_into_minutes_per_audio_hour(tmp_path: Path, monkeypatch) -> None:
    """The cost table from known rates: 40 audio-s/s of training is 1.5 minutes per audio
    hour, 120 audio-s/s of embedding 0.5."""
    throughput = _load("throughput")
    monkeypatch.setattr(throughput, "matmul_peak_gflops", lambda dtype: 40.0)
    monkeypatch.setattr(throughput, "bench_data", lambda corpus, cfg, intervals: 3200.0)
    monkeypatch.setattr(throughput, "bench_training", lambda *args: (2.5, 4.0))
    monkeypatch.setattr(throughput, "bench_embedding", lambda *args: (120.0, True))
    monkeypatch.setitem(__import__("sys").modules, "throughput", throughput)
    cost = _load("preset_cost")
    out = tmp_path / "cost.json"
    assert cost.main(["--presets", "1dconv_tiny", "--quick", "--json", str(out),
                      "--data", str(_tiny_folder(tmp_path))]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["train_minutes_per_audio_hour"] == 1.5
    assert row["embed_minutes_per_audio_hour"] == 0.5
    assert "load average" in report["machine"]
