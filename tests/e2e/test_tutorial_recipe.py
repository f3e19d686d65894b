"""The README's recipe for users of the TensorFlow CPC framework, run as written: every
command of its section, on a folder laid out as that framework's tutorial asks, with a few
training steps and crops each (the only changes made to the commands)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from audiocpc.cli import main

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Coming from the TensorFlow CPC framework"
FEW_STEPS = ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=2", "--quiet"]


def recipe_commands() -> list[list[str]]:
    """The `audiocpc` command lines of the README section, in order, as argument lists."""
    text = (REPO / "README.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["PYTHONPATH=."]:  # the repository root on the path: see below
                words = words[1:]
            if words[:1] == ["audiocpc"]:
                commands.append(words[1:])
    return commands


def with_few_steps(command: list[str]) -> list[str]:
    if command[0] == "make-demo-data":
        return [*command, "--files-per-class", "3", "--test-files-per-class", "2"]
    if command[0] == "run":
        return [*command, *FEW_STEPS, "--crops-train", "2", "--crops-test", "1", "--points", "40"]
    if command[0] == "train":
        return [*command, *FEW_STEPS]
    return command


@pytest.mark.slow
def test_the_readme_recipe_runs_as_written_on_a_tutorial_layout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # the commands use relative paths, as a user would
    monkeypatch.syspath_prepend(str(REPO))  # what PYTHONPATH=. does from the repository root
    commands = recipe_commands()
    kinds = [c[0] for c in commands]
    assert kinds[:2] == ["make-demo-data", "run"] and kinds.count("train") >= 6 and "tsne" in kinds
    for command in commands:
        assert main(with_few_steps(command)) == 0, command

    data = tmp_path / "tutorial_data"
    assert {p.name for p in data.iterdir()} == {"custom_audio_dataset", "train", "test"}
    assert (data / "train" / "0rising00000.wav").is_file()
    results = tmp_path / "results"
    for model in ("1dconv_gru", "1dconv_transformer", "2dconv_gru"):
        assert (results / "cpc" / model / "losses.npy").is_file()
        metrics = json.loads((results / "classifier" / model / "metrics.json").read_text())
        assert metrics["classes"] == ["falling", "pluck", "rising", "swell"]
        assert set(metrics["probes"]) == {"logreg", "mlp"}
    assert (results / "tsne" / "1dconv_gru" / "tsne.png").is_file()
    assert (results / "tsne" / "1dconv_gru_mfcc" / "pca.png").is_file()
    expected = {"three_layers": ("model", "encoder", "strides", [5, 4, 2]),
                "my_encoder": ("model", "encoder", "type", "examples.my_encoder:MyEncoder"),
                "lstm": ("model", "context", "type", "lstm"),
                "mlp_predictor": ("model", "predictor", "type", "mlp"),
                "cosine": ("model", "similarity", "type", "cosine"),
                "weighted": ("loss", "step_weights", None, [0.5, 0.3, 0.2])}
    for name, (section, key, field, value) in expected.items():
        assert (results / "cpc" / name / "checkpoint.pt").is_file(), name
        config = yaml.safe_load((results / "cpc" / name / "config.yaml").read_text())
        found = config[section][key] if field is None else config[section][key][field]
        assert found == value, name
    report = (results / "report.md").read_text()
    assert "| 1dconv_gru |" in report and "| 2dconv_gru |" in report
