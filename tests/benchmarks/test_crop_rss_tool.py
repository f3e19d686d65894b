"""benchmarks/crop_rss.py on a small prepared corpus: a line per report point, each with the
peak RSS, RssFile and RssAnon, and crops/s after the first."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocpc import load_config
from audiocpc.data.prepared import prepare_corpus
from benchmark_scripts import load_benchmark


def test_crop_rss_reports_memory_and_crops_per_second(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("reads /proc/self/status (Linux)")
    source = tmp_path / "src"
    source.mkdir()
    sf.write(source / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(16000 * 3), 16000)
    data = load_config("clips", [f"data.cache_dir={tmp_path / 'cache'}"]).data
    prepare_corpus(source, tmp_path / "corpus", data, workers=1, progress=False)
    monkeypatch.setattr(sys, "argv", ["crop_rss.py", str(tmp_path / "corpus"), "--batches", "5,3"])
    load_benchmark("crop_rss").main()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["batch 1", "batch 3", "batch 5"]
    memory = r"peak \d+ MiB, RssFile \d+ MiB, RssAnon \d+ MiB"
    assert re.fullmatch(memory, lines[0].split(": ", 1)[1])
    assert re.fullmatch(memory + r", [\d,]+ crops/s \(batches 4\.\.5\)", lines[2].split(": ", 1)[1])
