"""The one owner of the results folder's layout (the README promises these paths):

    <results>/cpc/<model>/                      a training run (training/run_folder.py)
    <results>/embeddings/<model><suffix>/       <split>.npy/.csv/.json (evaluation/store.py)
    <results>/classifier/<model><suffix>/       metrics.json, split.csv, confusion_*.png
    <results>/tsne/<model><suffix>/             <method>.png/.svg/.json, <method>_points.csv
    <results>/report.md, report.json            `audiocpc run`'s report

with the suffix "" for the trained model's features, "_random" for the untrained model's and
"_mfcc" for the MFCC baseline of the same crops. The lower layers (training, evaluation) are
given these folders; only the command line, the Python API and the pipeline compute them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from audiocpc.errors import AudiocpcError
from audiocpc.evaluation.store import EmbeddingSplit
from audiocpc.training.run_folder import RunFolder

FEATURES: tuple[str, ...] = ("cpc", "random", "mfcc")
FEATURE_SUFFIXES = {"cpc": "", "random": "_random", "mfcc": "_mfcc"}
SPLITS = ("train", "test")


def split_feature_name(name: str) -> tuple[str, str]:
    """A features folder's name -> (model, feature): 'gru_mfcc' -> ('gru', 'mfcc')."""
    for feature, suffix in FEATURE_SUFFIXES.items():
        if suffix and name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], feature
    return name, "cpc"


@dataclass(frozen=True)
class ResultsLayout:
    root: Path

    def __init__(self, root: str | os.PathLike[str] = "results"):
        object.__setattr__(self, "root", Path(root))

    def run(self, model: str) -> RunFolder:
        return RunFolder.under(self.root, model)

    def run_dir(self, model: str) -> Path:
        return self.run(model).path

    def features_name(self, model: str, feature: str = "cpc") -> str:
        if feature not in FEATURE_SUFFIXES:
            raise AudiocpcError(f"--features: unknown {feature!r}; choose {', '.join(FEATURES)}")
        return f"{model}{FEATURE_SUFFIXES[feature]}"

    def embeddings(self, model: str, feature: str = "cpc") -> Path:
        return self.root / "embeddings" / self.features_name(model, feature)

    def classifier(self, model: str, feature: str = "cpc") -> Path:
        return self.root / "classifier" / self.features_name(model, feature)

    def tsne(self, model: str, feature: str = "cpc") -> Path:
        return self.root / "tsne" / self.features_name(model, feature)

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"


@dataclass(frozen=True)
class FeaturesTarget:
    """What `audiocpc classify|tsne RUN --features F` points at."""

    layout: ResultsLayout
    model: str
    feature: str

    @property
    def embeddings(self) -> Path:
        return self.layout.embeddings(self.model, self.feature)

    @property
    def classifier(self) -> Path:
        return self.layout.classifier(self.model, self.feature)

    @property
    def tsne(self) -> Path:
        return self.layout.tsne(self.model, self.feature)


def locate_features(target: str | Path, features: str = "cpc",
                    out: Optional[str | Path] = None) -> FeaturesTarget:
    """The model and results folder of a run folder (`results/cpc/<name>`), an embeddings
    folder (`results/embeddings/<name>`, a baseline's `<name>_random` or `<name>_mfcc` too)
    or a bare run name under `out` (default `results`)."""
    if features not in FEATURE_SUFFIXES:
        raise AudiocpcError(f"--features: unknown {features!r}; choose {', '.join(FEATURES)}")
    path = Path(target)
    holds_embeddings = path.is_dir() and any(EmbeddingSplit.exists(path, s) for s in SPLITS)
    holds_run = path.is_dir() and (RunFolder(path).holds_run() or RunFolder(path).config_path.exists())
    if holds_embeddings or holds_run:
        root, name = Path(out) if out else path.parent.parent, path.name
    else:
        root, name = Path(out or "results"), str(target)
    model, own = split_feature_name(name)
    if own != "cpc" and features == "cpc":  # the baseline's own folder was given
        features = own
    elif own != "cpc":
        model = name
    return FeaturesTarget(ResultsLayout(root), model, features)


def missing_features_error(target: FeaturesTarget) -> AudiocpcError:
    """The message for features that have not been made yet, with the command that makes them."""
    folder = target.embeddings
    if target.feature == "random":
        info = EmbeddingSplit.read_info(target.layout.embeddings(target.model), "train")
        data = info.get("data_dir", "DATA")
        run_dir = info.get("run_dir", target.layout.run_dir(target.model))
        return AudiocpcError(f"no random-init embeddings in {folder}; make them with: audiocpc embed "
                             f"{run_dir} --data {data} --split train --random-init (and --split test "
                             "for a test folder)")
    return AudiocpcError(f"no train embeddings in {folder} (run `audiocpc embed RUN_DIR --data DIR "
                         "--split train` first)")
