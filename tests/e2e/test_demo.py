"""`make demo`, the README's first command, on its temporal-order classes: the command the
Makefile runs, in its own process, with the report's content checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _make_demo_command() -> list[str]:
    """What `make demo` runs after its set-up step, read from the Makefile (so the test follows
    it), with $(BIN) being this interpreter's environment."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text().splitlines()
    recipe = makefile[makefile.index("demo: $(STAMP)") + 1].strip()
    assert recipe == "$(BIN)/audiocpc demo --out results/demo", recipe
    script = Path(sys.executable).with_name("audiocpc")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "audiocpc"]
    return [*command, "demo", "--out"]


def _report_rows(report: str) -> dict[tuple[str, str], float]:
    """(features, probe) -> crop accuracy, read from the report's table."""
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[5].endswith("%"):
            rows[(cells[3], cells[4])] = float(cells[5].rstrip(" %")) / 100
    return rows


@pytest.mark.slow
def test_make_demo_runs_the_whole_pipeline_and_its_report_shows_cpc_ahead(tmp_path: Path) -> None:
    """The README's first command as it is run (the full 400 steps, in its own process): CPC's
    linear probe beats both baselines on the temporal-order classes, and the report says so.
    Measured once by the README: CPC 78.4 %, MFCC 46.6 %, untrained 44.4 % (chance 25 %)."""
    out = tmp_path / "results" / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([*_make_demo_command(), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"demo finished: report at {out / 'report.md'}"
    report = (out / "report.md").read_text()
    rows = _report_rows(report)
    metrics = {feature: json.loads((out / "classifier" / f"1dconv_tiny{suffix}" / "metrics.json").read_text())
               for feature, suffix in (("CPC", ""), ("MFCC mean+std", "_mfcc"),
                                       ("untrained (random init)", "_random"))}
    for feature, m in metrics.items():  # the table shows the numbers the classifiers wrote
        for probe in ("logreg", "mlp"):
            assert rows[(feature, probe)] == pytest.approx(m["probes"][probe]["crop_accuracy"], abs=6e-4)
    cpc = rows[("CPC", "logreg")]
    assert cpc > 0.6                                          # chance 0.25
    assert cpc > rows[("MFCC mean+std", "logreg")] + 0.15
    assert cpc > rows[("untrained (random init)", "logreg")] + 0.15
    assert metrics["CPC"]["classes"] == ["falling", "pluck", "rising", "swell"]
    assert "**What to look at.**" in report and "played backwards" in report
    assert report.index("What to look at") < report.index("| model |")
    # MFCC statistics tell the pairs apart but not the two classes of a pair
    assert metrics["MFCC mean+std"]["probes"]["logreg"]["crop_accuracy"] < 0.7
    assert metrics["CPC"]["split"]["mode"] == "test split"
    history = (out / "cpc" / "1dconv_tiny" / "history.csv").read_text().splitlines()
    assert len(history) > 1 and (out / "tsne" / "1dconv_tiny" / "tsne.png").is_file()
    for link in [line.split("](")[1].split(")")[0] for line in report.splitlines() if "](" in line]:
        assert (out / link).is_file(), link

    # the README: a second `make demo` finds every stage finished and only rewrites the report
    again = subprocess.run([*_make_demo_command(), str(out)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "train skipped, embed skipped, mfcc skipped, classify skipped, tsne skipped" in \
        (out / "report.md").read_text()
