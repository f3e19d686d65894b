"""Float files whose samples are finite but absurdly large (3e38) are flagged by the scan
with a one-line reason and skipped, instead of reaching training and its advice to lower
the learning rate (issue 14, item 9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocpc.cli import main
from audiocpc import load_config
from audiocpc.data.scan import scan_folder

RATE = 8000


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "audio"
    root.mkdir()
    t = np.arange(2 * RATE) / RATE
    for i in range(3):
        sf.write(root / f"good{i}.wav", (0.5 * np.sin(2 * np.pi * (300 + 200 * i) * t)).astype(np.float32),
                 RATE, subtype="FLOAT")
    sf.write(root / "huge.wav", np.full(t.size, 3e38, dtype=np.float32), RATE, subtype="FLOAT")
    sf.write(root / "loud.wav", (4.0 * np.sin(2 * np.pi * 500 * t)).astype(np.float32), RATE,
             subtype="FLOAT")  # above full scale, but plausible audio: kept
    return root


def test_scan_flags_absurd_magnitudes(folder: Path) -> None:
    report = scan_folder(folder, load_config("1dconv_tiny").data, progress=False)
    by_name = {f.file: f for f in report.files}
    huge = by_name["huge.wav"]
    assert not huge.readable and not huge.usable
    assert "3e+38" in huge.reason and "\n" not in huge.reason
    assert by_name["loud.wav"].usable and by_name["good0.wav"].usable


def test_training_corpus_skips_the_file(folder: Path) -> None:
    data = load_config("1dconv_tiny").data
    report = scan_folder(folder, data, progress=False)
    report.check(data.on_bad_file)
    corpus = report.corpus()
    assert sorted(p.name for p in corpus.paths) == ["good0.wav", "good1.wav", "good2.wav", "loud.wav"]
    assert [p.name for p, _ in corpus.bad_files] == ["huge.wav"]


def test_check_data_names_it_in_one_line(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-data", str(folder), "--preset", "1dconv_tiny", "--quiet", "--all"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("huge.wav"))
    assert "unreadable" in line and "3e+38" in line
