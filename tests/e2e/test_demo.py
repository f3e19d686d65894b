"""`audiocpc demo` on its temporal-order classes, shortened to a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audiocpc.cli import main


@pytest.mark.slow
def test_demo_report_says_what_to_look_at(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", "--set", "train.epochs=1",
                 "--set", "train.steps_per_epoch=10"]) == 0
    report = (out / "report.md").read_text()
    assert "**What to look at.**" in report and "played backwards" in report
    assert report.index("What to look at") < report.index("| model |")
    metrics = json.loads((out / "classifier" / "1dconv_tiny_mfcc" / "metrics.json").read_text())
    assert metrics["classes"] == ["falling", "pluck", "rising", "swell"]
    # the MFCC baseline can tell the pairs apart but not the two classes of a pair
    assert metrics["probes"]["logreg"]["crop_accuracy"] < 0.7
