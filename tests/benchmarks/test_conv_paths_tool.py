"""benchmarks/conv_paths.py on a shrunken reference encoder: every conv layer is timed on both
paths, the FLOP count is the layer's, both paths compute the same numbers, and the JSON holds
the table's rows."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_scripts import load_benchmark


def _load_tool():
    return load_benchmark("conv_paths")


def test_every_conv_layer_is_timed_on_both_paths_with_equal_numbers(tmp_path: Path, capsys) -> None:
    tool = _load_tool()
    out = tmp_path / "paths.json"
    assert tool.main(["--presets", "1dconv_gru", "--set", "model.encoder.filters=8", "--set", "data.N=2",
                      "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "conv3", "conv4", "conv5", "encoder"]
    assert len(rows[-1]["per_layer_paths"]) == 5 and rows[-1]["per_layer_cpu_ms"] > 0
    # 2 crops x 30 windows of 588 samples; conv2: 8 -> 8 channels, kernel 8, 28 outputs;
    # forward, input gradient and weight gradient: 3 products of 2 * B * L' * C_out * C_in * k
    assert rows[1]["shape"].startswith("60 x 8 x 116 -> 8 x 28")
    assert rows[1]["gflop_per_call"] == 3 * 2 * 60 * 28 * 8 * 8 * 8 / 1e9
    assert rows[0]["gflop_per_call"] == 2 * 2 * 60 * 116 * 8 * 1 * 10 / 1e9  # no input gradient
    for row in rows[:-1]:
        assert row["max_relative_difference"] < 1e-4
    for row in rows:
        assert row["matmul_cpu_ms"] > 0 and row["conv1d_cpu_ms"] > 0
        assert row["conv1d_over_matmul_time"] == row["conv1d_cpu_ms"] / row["matmul_cpu_ms"]
        assert row["matmul_of_peak"] == row["matmul_gflops"] / row["matmul_peak_gflops"]
        assert row["onednn_1x1_conv_peak_gflops"] > 0
    assert "| `1dconv_gru`, 1 | conv2 |" in capsys.readouterr().out
