"""The FSDD benchmark's quick mode runs end to end on the real recordings (skipped when the
dataset is absent). Its headline numbers live in
docs/results.md. What is checked: the table's shape, every cell computed on the right
files and well above chance, and that no test audio reached pretraining."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("fsdd_benchmark", BENCHMARKS / "fsdd.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_splits_keep_test_audio_out_of_pretraining(fsdd_dir: Path) -> None:
    fsdd = _load_benchmark()
    clips = fsdd.read_fsdd(fsdd_dir)
    assert len(clips) == 3000
    pretraining = set(fsdd.pretraining_clips(clips))
    for split in ("official", "speaker"):
        parts = fsdd.split_parts(clips, split)
        test = {c for c, t in zip(clips, parts["test"]) if t}
        assert test and not test & pretraining
        assert not (parts["fit"] & parts["validation"]).any()
        assert ((parts["fit"] | parts["validation"]) == parts["train"]).all()
        assert not (parts["train"] & parts["test"]).any()
    assert {c.speaker for c in pretraining} == {c.speaker for c in clips} - {fsdd.HELD_OUT_SPEAKER}
    assert min(c.index for c in pretraining) == 5


def test_quick_mode_computes_every_row(fsdd_dir: Path, tmp_path: Path) -> None:
    fsdd = _load_benchmark()
    out = tmp_path / "fsdd"
    report = fsdd.main(["--data", str(fsdd_dir), "--out", str(out), "--quick", "--threads", "2"])
    rows = report["table"]
    assert [(r["features"], r["label"]) for r in rows] == [
        (key, label) for label in ("digit", "speaker") for key, _ in fsdd.ROWS]
    # Every feature set tells digits and speakers apart well above chance even after 30 steps
    # (digits 1/10, speakers 1/6). Measured once (2 shared cores): digits 67-95 % official,
    # 35-78 % held-out speaker; speakers 77-95 %. Shuffled labels, a probe scored on the wrong
    # rows or features of the wrong files would sit near chance.
    for row in rows:
        if row["label"] == "digit":
            assert row["official"] > 0.4 and row["speaker"] > 0.2, row
        else:  # a held-out speaker cannot be classified by speaker
            assert row["official"] > 0.4, row
            assert row["speaker"] is None
    mfcc = {r["label"]: r for r in rows if r["features"] == "mfcc_baseline"}
    assert mfcc["digit"]["official"] > 0.7 and mfcc["speaker"]["official"] > 0.7
    # each accuracy is the fraction of its own predictions that match the truth
    for features, cells in report["results"].items():
        for cell in cells.values():
            hits = [p == t for p, t in zip(cell["predicted"], cell["truth"], strict=True)]
            assert cell["test_accuracy"] == pytest.approx(sum(hits) / len(hits)), features
    cpc = report["results"]["cpc"]
    # quick subset: 6 speakers x 10 digits x takes {0, 5, 10, 11}; take 0 is the official test
    assert cpc["official/digit"]["test_files"] == 60
    assert cpc["speaker/digit"]["test_files"] == 40  # yweweler's 10 digits x 4 takes
    assert len(cpc["official/digit"]["predicted"]) == 60
    # three snapshots of a 30-step run, each probed on both splits
    assert [p["fraction"] for p in report["progress"]] == [0.25, 0.5, 1.0]
    assert report["progress"][-1]["steps"] == 30
    assert report["progress"][0]["steps"] < report["progress"][-1]["steps"]
    assert all(math.isfinite(h["loss"]) for h in report["history"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["table"] == rows
    text = (out / "results.md").read_text()
    assert "| CPC (trained) | digit |" in text and "held-out speaker" in text
    # pretraining saw only links to takes 5-49 of speakers other than the held-out one
    linked = sorted(p.name for p in (out / "pretrain_audio").iterdir())
    assert linked and all(int(n.split("_")[2][:-4]) >= 5 and "yweweler" not in n for n in linked)


def test_a_joined_run_uses_every_file_and_is_inserted_beside_the_headline(
        fsdd_dir: Path, tmp_path: Path) -> None:
    fsdd = _load_benchmark()
    out = tmp_path / "joined"
    report = fsdd.main(["--data", str(fsdd_dir), "--out", str(out), "--quick", "--threads", "1",
                        "--preset", "cpc_tiny", "--steps", "10", "--set", "data.join=group",
                        "--set", "data.join_pattern=_(?P<group>[a-z]+)_"])
    # 1 s crops: without joining most FSDD clips would be skipped; joined, every one is used
    assert report["pretraining_used"] == report["pretraining_files"] == 150
    assert report["skipped_short"] == 0 and report["sequences"]["count"] == 5
    docs = tmp_path / "docs"
    docs.mkdir()
    page = (BENCHMARKS.parent / "docs" / "results.md").read_text()
    (docs / "results.md").write_text(page)
    for _ in range(2):  # a second insert replaces the section instead of adding another
        fsdd.insert([str(out), "Joined", "--docs", str(docs), "--short", "joined"])
    text = (docs / "results.md").read_text()
    assert text.count("\n## Joined\n") == 1 and text.index("## Joined") < text.index("## Closing note")
    headline = fsdd.page_headline(page)[("CPC (trained)", "digit")]
    cpc = report["results"]["cpc"]
    assert (f"| CPC (trained) | digit | {headline[0]} | {headline[1]} | "
            f"{fsdd.percent(cpc['official/digit']['test_accuracy'])} | "
            f"{fsdd.percent(cpc['speaker/digit']['test_accuracy'])} |") in text
    assert "150 files used, 0 skipped" in text
