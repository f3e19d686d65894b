"""HEAR-format tasks: write them from any labelled folder, and evaluate models on them.

A task folder (HEAR's layout):

    task_metadata.json      task_name, embedding_type (scene), prediction_type (multiclass or
                            multilabel), split_mode (trainvaltest, new_split_kfold or
                            presplit_kfold), nfolds, sample_duration, evaluation (metrics)
    labelvocabulary.csv     idx,label
    <split>.json            {file name: [labels]} per split (train/valid/test or fold00..)
    <rate>/<split>/*.wav    the audio of each split at each sample rate

`make_task` writes one from a folder labelled as `audiocpc embed` reads labels, with a
group-aware split: every file of a group (a speaker, a track; from a regex or a CSV) lands
in the same fold. `evaluate_task` embeds the task's audio through the HEAR API
(audiocpc.hear) with the model, its untrained twin and MFCCs, and trains HEAR's downstream
protocol on each fold - a grid of shallow MLPs (1 or 2 hidden layers of 1024, several
learning rates, early stopping on the validation split, the best on validation reported) -
and a linear probe (logistic regression, C chosen on validation). Folds: trainvaltest has
one; k-fold tasks test on each fold in turn, validate on the next one and train on the rest.
Timestamp-level (event) tasks are not supported yet.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import soundfile as sf

from audiocpc.fileio import atomic_path, atomic_write_json, atomic_write_text
from audiocpc.data.audio import discover_audio_files, read_audio, relative_name
from audiocpc.data.labels import UNLABELLED, assign_labels, label_rule, safe_relative_path
from audiocpc.errors import AudiocpcError, ConfigError

log = logging.getLogger("audiocpc")

TASK_METADATA = "task_metadata.json"
VOCABULARY = "labelvocabulary.csv"
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")
PREDICTION_TYPES = ("multiclass", "multilabel")
SPLIT_MODES = ("trainvaltest", "new_split_kfold", "presplit_kfold")
FEATURE_SETS = ("cpc", "random", "mfcc")
PROBES = ("mlp", "linear")


# ---------------------------------------------------------------- reading a task


@dataclass
class Task:
    folder: Path
    metadata: dict[str, Any]
    vocabulary: list[str]
    labels: dict[str, dict[str, list[str]]]  # split -> file name -> labels

    @property
    def name(self) -> str:
        return str(self.metadata.get("task_name") or self.folder.name)

    @property
    def prediction_type(self) -> str:
        return str(self.metadata["prediction_type"])

    @property
    def splits(self) -> list[str]:
        return list(self.labels)

    def sample_rates(self) -> list[int]:
        return sorted(int(p.name) for p in self.folder.iterdir() if p.is_dir() and p.name.isdigit())

    def audio_path(self, rate: int, split: str, name: str) -> Path:
        return self.folder / str(rate) / split / name

    def folds(self, seed: int = 0) -> list[tuple[list[str], str, str]]:
        """(training splits, validation split, test split) per evaluation fold."""
        mode = self.metadata.get("split_mode", "trainvaltest")
        if mode == "trainvaltest":
            return [(["train"], "valid", "test")]
        names = sorted(s for s in self.labels if re.fullmatch(r"fold\d+", s))
        if len(names) < 3:
            raise ConfigError(f"{self.folder / TASK_METADATA}: split_mode {mode} needs at least 3 "
                                f"fold files (fold00.json ...), found {len(names)}")
        return [([n for n in names if n not in (test, names[(i + 1) % len(names)])],
                 names[(i + 1) % len(names)], test) for i, test in enumerate(names)]


def read_task(folder: str | Path) -> Task:
    """Read and check a HEAR-format task folder; problems name the file and the fix."""
    folder = Path(folder)
    meta_path = folder / TASK_METADATA
    if not meta_path.is_file():
        raise ConfigError(f"{folder}: not a HEAR task ({TASK_METADATA} not found); write one with "
                          "`audiocpc make-task DATA_DIR --out TASK_DIR`")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{meta_path}: not valid JSON ({exc})") from None
    embedding_type = metadata.get("embedding_type", "scene")
    if embedding_type != "scene":
        raise ConfigError(f"{meta_path}: embedding_type {embedding_type!r}: only scene-level tasks "
                          "are supported so far (timestamp-level event detection is not)")
    if metadata.get("prediction_type") not in PREDICTION_TYPES:
        raise ConfigError(f"{meta_path}: prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
                          f"got {metadata.get('prediction_type')!r}")
    mode = metadata.get("split_mode", "trainvaltest")
    if mode not in SPLIT_MODES:
        raise ConfigError(f"{meta_path}: split_mode must be one of {', '.join(SPLIT_MODES)}, got {mode!r}")
    vocabulary_path = folder / VOCABULARY
    if not vocabulary_path.is_file():
        raise ConfigError(f"{folder}: {VOCABULARY} not found (rows idx,label)")
    with open(vocabulary_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "label" not in rows[0]:
        raise ConfigError(f"{vocabulary_path}: expected a header idx,label and one row per label")
    vocabulary = [row["label"] for row in sorted(rows, key=lambda r: int(r.get("idx") or 0))]
    if mode == "trainvaltest":
        wanted = ["train", "valid", "test"]
    else:
        wanted = sorted(p.stem for p in folder.glob("fold*.json"))
    labels: dict[str, dict[str, list[str]]] = {}
    for split in wanted:
        path = folder / f"{split}.json"
        if not path.is_file():
            if split == "valid":
                continue  # carved out of train when a task has none
            raise ConfigError(f"{folder}: {path.name} not found (split_mode {mode})")
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: expected {{file name: [labels]}}")
        unknown = sorted({lab for labs in table.values() for lab in labs} - set(vocabulary))
        if unknown:
            raise ConfigError(f"{path}: label(s) {', '.join(map(str, unknown[:5]))} are not in {VOCABULARY}")
        labels[split] = {str(k): [str(v) for v in vs] for k, vs in table.items()}
    return Task(folder, metadata, vocabulary, labels)


# ---------------------------------------------------------------- writing a task


def _write_json(path: Path, payload: Any) -> None:
    atomic_write_json(path, payload)


def _write_wav(path: Path, wave: np.ndarray, rate: int) -> None:
    with atomic_path(path, suffix=".wav") as tmp:  # soundfile picks the format from the name
        sf.write(tmp, wave, rate, subtype="PCM_16")


def read_group_table(csv_path: str | Path) -> dict[str, str]:
    """`file,group` rows (header optional), paths relative to the data folder."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ConfigError(f"--groups-csv: no such file: {csv_path}")
    table: dict[str, str] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if number == 1 and [c.strip().lower() for c in row] == ["file", "group"]:
                continue
            if len(row) != 2:
                raise ConfigError(f"{csv_path}:{number}: expected two columns 'file,group', got {len(row)}")
            table[safe_relative_path(row[0], f"{csv_path}:{number}")] = row[1].strip()
    return table


def group_rule(pattern: Optional[str] = None, csv_path: Optional[str | Path] = None) -> Callable[[str], str]:
    """File (posix path below the data folder) -> group; without a rule every file is its own."""
    if pattern is not None and csv_path is not None:
        raise ConfigError("give either --group-pattern or --groups-csv, not both")
    if pattern is not None:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"--group-pattern: not a valid regular expression: {exc}") from None
        if "group" not in compiled.groupindex:
            raise ConfigError("--group-pattern: the pattern needs a named group 'group', "
                              "e.g. '_(?P<group>[a-z]+)_'")

        def by_pattern(name: str) -> str:
            match = compiled.search(Path(name).name)
            return match.group("group") if match and match.group("group") else ""

        return by_pattern
    if csv_path is not None:
        table = read_group_table(csv_path)
        return lambda name: table.get(name, "")
    return lambda name: ""


def assign_folds(groups: Sequence[str], folds: int, seed: int = 0) -> list[int]:
    """A fold per file, whole groups together, folds as equal in files as the groups allow:
    the groups, largest first (ties in a seeded order), each go to the fold with fewest files."""
    sizes: dict[str, int] = {}
    for group in groups:
        sizes[group] = sizes.get(group, 0) + 1
    if len(sizes) < folds:
        raise ConfigError(f"--folds: {folds} folds need at least {folds} groups, but the files form "
                          f"{len(sizes)} ({', '.join(sorted(sizes)[:5])}); lower --folds or check --group-pattern")
    rng = np.random.default_rng(seed)
    names = sorted(sizes)
    order = sorted(rng.permutation(len(names)).tolist(), key=lambda i: -sizes[names[i]])
    filled = [0] * folds
    fold_of: dict[str, int] = {}
    for index in order:
        target = int(np.argmin(filled))
        fold_of[names[index]] = target
        filled[target] += sizes[names[index]]
    return [fold_of[g] for g in groups]


MAKE_TASK_VERSION = "audiocpc-make-task-1"


def _clear_previous_task(out: Path) -> None:
    """A folder that a previous make-task wrote is replaced (its folds may differ); any other
    non-empty folder is refused rather than mixed with a task."""
    import shutil

    if not out.exists() or not any(out.iterdir()):
        return
    meta_path = out / TASK_METADATA
    try:
        version = json.loads(meta_path.read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        version = None
    if version != MAKE_TASK_VERSION:
        raise ConfigError(f"--out: {out} is not empty and is not a task written by make-task; "
                          "choose a new or empty folder")
    for entry in out.iterdir():
        if entry.is_dir() and entry.name.isdigit():
            shutil.rmtree(entry)
        elif re.fullmatch(r"fold\d+\.json", entry.name) or entry.name in (TASK_METADATA, VOCABULARY):
            entry.unlink()


def make_task(data_dir: str | Path, out: str | Path, *, label_mode: str = "auto",
              label_pattern: Optional[str] = None, labels_csv: Optional[str | Path] = None,
              group_pattern: Optional[str] = None, groups_csv: Optional[str | Path] = None,
              folds: int = 5, sample_rates: Sequence[int] = (16000,), name: Optional[str] = None,
              seed: int = 0) -> Task:
    """Write the labelled audio below `data_dir` as a HEAR-format scene task in `out`:
    multiclass, `folds` group-aware folds (split_mode new_split_kfold), mono 16-bit WAVs at each
    of `sample_rates`. Unlabelled and unreadable files are left out and counted."""
    from audiocpc.evaluation.hear import HEAR_SAMPLE_RATES

    if folds < 3:
        raise ConfigError(f"--folds: HEAR's k-fold protocol needs at least 3 folds (test, validation, "
                          f"training), got {folds}")
    bad_rates = [r for r in sample_rates if r not in HEAR_SAMPLE_RATES]
    if bad_rates:
        raise ConfigError(f"--sample-rate: {bad_rates[0]} is not a HEAR rate; choose from "
                          f"{', '.join(map(str, HEAR_SAMPLE_RATES))}")
    rule = label_rule(label_mode, label_pattern, labels_csv)
    grouping = group_rule(group_pattern, groups_csv)
    root, out = Path(data_dir), Path(out)
    paths = discover_audio_files(root, AUDIO_EXTENSIONS)
    names = [relative_name(p, root) for p in paths]
    labels = assign_labels(names, rule)
    kept = [(p, n, lab) for p, n, lab in zip(paths, names, labels) if lab != UNLABELLED]
    if not kept:
        raise ConfigError(f"{root}: no labelled audio files found (check --label-mode / --label-pattern)")
    groups = [grouping(n) or n for _, n, _ in kept]  # no group: the file is its own
    if group_pattern is not None or groups_csv is not None:
        ungrouped = sum(1 for (_, n, _), g in zip(kept, groups) if g == n)
        if ungrouped:
            log.warning("%d file(s) match no group and are each their own group", ungrouped)
    fold_of = assign_folds(groups, folds, seed)
    vocabulary = sorted({lab for _, _, lab in kept})
    if len(vocabulary) < 2:
        raise ConfigError(f"{root}: a classification task needs at least two labels, found "
                          f"{', '.join(vocabulary)}")
    _clear_previous_task(out)
    out.mkdir(parents=True, exist_ok=True)
    tables: list[dict[str, list[str]]] = [{} for _ in range(folds)]
    unreadable = 0
    durations = []
    # HEAR's split folders are flat: a/b.flac -> a__b.wav; names that would collide
    # (a.wav beside a.flac) keep their extension: a__wav.wav, a__flac.wav
    stems = [rel.replace("/", "__").rpartition(".") for _, rel, _ in kept]
    counts: dict[str, int] = {}
    for stem, _, _ in stems:
        counts[stem] = counts.get(stem, 0) + 1
    for ((path, rel, label), fold), (stem, _, extension) in zip(zip(kept, fold_of), stems):
        wav_name = f"{stem}.wav" if counts[stem] == 1 else f"{stem}__{extension}.wav"
        try:
            waves = {rate: read_audio(path, rate) for rate in sample_rates}
        except AudiocpcError as exc:
            unreadable += 1
            log.warning("left out: %s", exc)
            continue
        for rate, wave in waves.items():
            folder = out / str(rate) / f"fold{fold:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            _write_wav(folder / wav_name, np.clip(wave, -1.0, 1.0), rate)
        tables[fold][wav_name] = [label]
        durations.append(next(iter(waves.values())).size / sample_rates[0])
    for fold, table in enumerate(tables):
        _write_json(out / f"fold{fold:02d}.json", table)
    with atomic_path(out / VOCABULARY) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["idx", "label"])
            writer.writerows(enumerate(vocabulary))
    metadata = {
        "task_name": name or out.name, "version": MAKE_TASK_VERSION, "embedding_type": "scene",
        "prediction_type": "multiclass", "split_mode": "new_split_kfold", "nfolds": folds,
        "sample_duration": None, "evaluation": ["top1_acc", "macro_f1"],
        "sample_rates": list(sample_rates), "source": str(root.resolve()),
        "groups": "regex " + group_pattern if group_pattern else ("csv " + str(groups_csv) if groups_csv else "file"),
        "files": sum(len(t) for t in tables), "unreadable_files": unreadable,
        "unlabelled_files": len(paths) - len(kept),
        "max_duration_seconds": max(durations) if durations else 0.0,
    }
    _write_json(out / TASK_METADATA, metadata)
    return read_task(out)


# ---------------------------------------------------------------- features


def _load_split_audio(task: Task, rate: int, split: str) -> tuple[list[str], list[np.ndarray]]:
    names = sorted(task.labels[split])
    waves = []
    for name in names:
        path = task.audio_path(rate, split, name)
        if not path.is_file():
            raise ConfigError(f"{path}: listed in {split}.json but not found")
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
        if file_rate != rate:
            raise ConfigError(f"{path}: {file_rate} Hz in a folder for {rate} Hz")
        waves.append(data.mean(axis=1))
    return names, waves


def _embed_scene(model: Any, waves: list[np.ndarray], batch: int = 16) -> np.ndarray:
    """Scene embeddings through the HEAR API, sounds of equal length batched together."""
    import torch

    from audiocpc.evaluation.hear import get_scene_embeddings

    out = np.zeros((len(waves), model.scene_embedding_size), dtype=np.float32)
    by_length: dict[int, list[int]] = {}
    for i, wave in enumerate(waves):
        by_length.setdefault(len(wave), []).append(i)
    for indices in by_length.values():
        for first in range(0, len(indices), batch):
            chunk = indices[first : first + batch]
            audio = torch.from_numpy(np.stack([waves[i] for i in chunk]).astype(np.float32))
            out[chunk] = get_scene_embeddings(audio, model).numpy()
    return out


def _mfcc_features(waves: list[np.ndarray], rate: int) -> np.ndarray:
    from audiocpc.evaluation.mfcc import mfcc_summary

    return np.stack([mfcc_summary(w, rate) for w in waves]).astype(np.float32)


# ---------------------------------------------------------------- downstream models


@dataclass
class MLPGrid:
    """HEAR's downstream grid, on CPU-friendly terms: every combination is trained with early
    stopping on the validation split; the best on validation is scored on test."""

    hidden_layers: tuple[int, ...] = (1, 2)
    hidden_dim: int = 1024
    learning_rates: tuple[float, ...] = (1e-3, 3.2e-4, 1e-4)
    dropout: float = 0.1
    batch_size: int = 1024
    max_epochs: int = 500
    patience: int = 20


def _targets(task: Task, split: str, names: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(task.vocabulary)}
    if task.prediction_type == "multiclass":
        return np.array([index[task.labels[split][n][0]] for n in names], dtype=np.int64)
    y = np.zeros((len(names), len(task.vocabulary)), dtype=np.float32)
    for row, n in enumerate(names):
        for label in task.labels[split][n]:
            y[row, index[label]] = 1.0
    return y


def task_scores(prediction_type: str, scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """multiclass: top1_acc, macro_f1 (over the classes present); multilabel: mAP (macro
    average precision over classes with a positive), top1_acc (the top class is a true one)."""
    from sklearn.metrics import average_precision_score, f1_score

    if prediction_type == "multiclass":
        predicted = scores.argmax(axis=1)
        return {"top1_acc": float((predicted == y).mean()),
                "macro_f1": float(f1_score(y, predicted, average="macro", labels=np.unique(y),
                                           zero_division=0))}
    present = y.sum(axis=0) > 0
    mean_ap = float(average_precision_score(y[:, present], scores[:, present], average="macro"))
    top = scores.argmax(axis=1)
    return {"mAP": mean_ap, "top1_acc": float(y[np.arange(len(y)), top].mean())}


def metric_value(prediction_type: str, metric: str, scores: np.ndarray, y: np.ndarray) -> float:
    """One metric of `task_scores`; top-1 accuracy without sklearn (it runs every epoch)."""
    if prediction_type == "multiclass" and metric == "top1_acc":
        return float((scores.argmax(axis=1) == y).mean())
    return task_scores(prediction_type, scores, y)[metric]


def primary_metric(task: Task) -> str:
    supported = ("top1_acc", "macro_f1") if task.prediction_type == "multiclass" else ("mAP", "top1_acc")
    chosen = [m for m in task.metadata.get("evaluation", []) if m in supported]
    return chosen[0] if chosen else supported[0]


def _train_mlp(x: np.ndarray, y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, classes: int,
               multilabel: bool, layers: int, lr: float, grid: MLPGrid, metric: str,
               prediction_type: str, seed: int) -> tuple[Any, float, int]:
    """(model at its best validation epoch, that validation score, epochs run)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    blocks: list[nn.Module] = []
    width = x.shape[1]
    for _ in range(layers):
        blocks += [nn.Linear(width, grid.hidden_dim), nn.ReLU(), nn.Dropout(grid.dropout)]
        width = grid.hidden_dim
    blocks.append(nn.Linear(width, classes))
    model = nn.Sequential(*blocks)
    for module in model:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    loss_fn = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_x, train_y = torch.from_numpy(x), torch.from_numpy(y)
    held_x = torch.from_numpy(val_x)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, waited, epoch = -np.inf, None, 0, 0
    for epoch in range(1, grid.max_epochs + 1):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        for first in range(0, len(order), grid.batch_size):
            rows = order[first : first + grid.batch_size]
            loss = loss_fn(model(train_x[rows]), train_y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            value = metric_value(prediction_type, metric, model(held_x).numpy(), val_y)
        if value > best + 1e-6:
            best, waited = value, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= grid.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, float(best), epoch


def _mlp_probe(x: np.ndarray, y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, test_x: np.ndarray,
               task: Task, grid: MLPGrid, metric: str, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Every grid point trained with early stopping; the best on validation scores the test side."""
    import torch

    multilabel = task.prediction_type == "multilabel"
    chosen, trials = None, []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches this small run fastest on one thread
    try:
        for layers in grid.hidden_layers:
            for lr in grid.learning_rates:
                model, value, epochs = _train_mlp(x, y, val_x, val_y, len(task.vocabulary), multilabel,
                                                  layers, lr, grid, metric, task.prediction_type, seed)
                trials.append({"hidden_layers": layers, "lr": lr, "valid": value, "epochs": epochs})
                if chosen is None or value > chosen[1]:
                    chosen = (model, value, trials[-1])
        assert chosen is not None
        with torch.no_grad():
            scores = chosen[0](torch.from_numpy(test_x)).numpy()
    finally:
        torch.set_num_threads(threads)
    return scores, {"chosen": chosen[2], "grid": trials}


LINEAR_C = (0.01, 0.1, 1.0, 10.0)


def _linear_probe(x: np.ndarray, y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, test_x: np.ndarray,
                  task: Task, metric: str, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Logistic regression (one-vs-rest for multilabel), C chosen on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    def fit(c: float) -> Any:
        base = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        if task.prediction_type == "multilabel":
            return OneVsRestClassifier(base).fit(x, y)
        return base.fit(x, y)

    def full_scores(model: Any, features: np.ndarray) -> np.ndarray:
        if task.prediction_type == "multilabel":
            return model.predict_proba(features)
        out = np.full((len(features), len(task.vocabulary)), -np.inf)
        out[:, model.classes_] = model.predict_log_proba(features)
        return out

    best = None
    trials = []
    for c in LINEAR_C:
        model = fit(c)
        value = metric_value(task.prediction_type, metric, full_scores(model, val_x), val_y)
        trials.append({"C": c, "valid": value})
        if best is None or value > best[1]:
            best = (model, value, c)
    assert best is not None
    return full_scores(best[0], test_x), {"chosen": {"C": best[2], "valid": best[1]}, "grid": trials}


# ---------------------------------------------------------------- the runner


@dataclass
class EvaluateOptions:
    features: tuple[str, ...] = FEATURE_SETS
    probes: tuple[str, ...] = PROBES
    grid: MLPGrid = field(default_factory=MLPGrid)
    seed: int = 0
    device: str = "auto"
    hear_options: dict[str, Any] = field(default_factory=dict)  # load_model options


def _feature_matrices(task: Task, model_path: str | Path, options: EvaluateOptions,
                      ) -> tuple[int, dict[str, dict[str, np.ndarray]], dict[str, list[str]]]:
    """(HEAR rate used, {feature set: {split: [files, dim]}}, {split: file names})."""
    from audiocpc.evaluation.hear import load_model

    hear_options = dict(options.hear_options)
    models: dict[str, Any] = {}
    if "cpc" in options.features:
        models["cpc"] = load_model(model_path, device=options.device, **hear_options)
    if "random" in options.features:
        models["random"] = load_model(model_path, device=options.device, random_init=True, **hear_options)
    if models:
        rate = next(iter(models.values())).sample_rate
    else:  # MFCC alone: the task's first rate
        rate = task.sample_rates()[0] if task.sample_rates() else 16000
    available = task.sample_rates()
    if rate not in available:
        raise ConfigError(f"{task.folder}: the model takes {rate} Hz audio, but the task has "
                          f"{', '.join(map(str, available)) or 'no audio folders'}; rewrite it with "
                          f"`audiocpc make-task ... --sample-rate {rate}`, or pass --sample-rate "
                          "with one of the task's rates")
    matrices: dict[str, dict[str, np.ndarray]] = {f: {} for f in options.features}
    names: dict[str, list[str]] = {}
    for split in task.splits:
        names[split], waves = _load_split_audio(task, rate, split)
        for feature in options.features:
            if feature == "mfcc":
                matrices[feature][split] = _mfcc_features(waves, rate)
            else:
                matrices[feature][split] = _embed_scene(models[feature], waves)
        log.info("%s: embedded %s (%d files)", task.name, split, len(waves))
    return rate, matrices, names


def evaluate_task(task_dir: str | Path, model_path: str | Path, out: str | Path,
                  options: Optional[EvaluateOptions] = None) -> dict[str, Any]:
    """Run every fold of one task for every feature set and probe; write
    `<out>/<task>/results.json` and `results.md`; return the results."""
    from sklearn.preprocessing import StandardScaler

    options = options or EvaluateOptions()
    unknown = [f for f in options.features if f not in FEATURE_SETS] + [p for p in options.probes if p not in PROBES]
    if unknown:
        raise ConfigError(f"unknown feature set or probe {unknown[0]!r}; features: {', '.join(FEATURE_SETS)}; "
                          f"probes: {', '.join(PROBES)}")
    task = read_task(task_dir)
    metric = primary_metric(task)
    folds = task.folds(options.seed)
    rate, matrices, names = _feature_matrices(task, model_path, options)
    results: dict[str, Any] = {"task": task.name, "task_dir": str(Path(task_dir).resolve()),
                               "model": str(model_path), "sample_rate": rate, "metric": metric,
                               "prediction_type": task.prediction_type, "folds": len(folds),
                               "grid": asdict(options.grid), "hear_options": options.hear_options,
                               "scores": {}}
    rng = np.random.default_rng(options.seed)
    for feature in options.features:
        for probe in options.probes:
            per_fold = []
            for train_splits, valid_split, test_split in folds:
                x = np.concatenate([matrices[feature][s] for s in train_splits])
                y = np.concatenate([_targets(task, s, names[s]) for s in train_splits])
                if valid_split in matrices[feature]:
                    val_x = matrices[feature][valid_split]
                    val_y = _targets(task, valid_split, names[valid_split])
                else:  # a trainvaltest task without valid.json: 10 % of train, seeded
                    held = rng.permutation(len(x))[: max(1, len(x) // 10)]
                    mask = np.zeros(len(x), dtype=bool)
                    mask[held] = True
                    val_x, val_y, x, y = x[mask], y[mask], x[~mask], y[~mask]
                test_x = matrices[feature][test_split]
                test_y = _targets(task, test_split, names[test_split])
                scaler = StandardScaler().fit(x)  # fit on the training side only
                x, val_x, test_x = (scaler.transform(a).astype(np.float32) for a in (x, val_x, test_x))
                if probe == "mlp":
                    scores, detail = _mlp_probe(x, y, val_x, val_y, test_x, task, options.grid, metric,
                                                options.seed)
                else:
                    scores, detail = _linear_probe(x, y, val_x, val_y, test_x, task, metric, options.seed)
                per_fold.append({"test_split": test_split, "valid_split": valid_split,
                                 "train_files": int(len(x)), "test_files": int(len(test_x)),
                                 **{f"test_{k}": v for k, v in task_scores(task.prediction_type, scores, test_y).items()},
                                 **detail})
            values = [f[f"test_{metric}"] for f in per_fold]
            results["scores"][f"{feature}/{probe}"] = {
                "feature": feature, "probe": probe, "dim": int(matrices[feature][task.splits[0]].shape[1]),
                "mean": float(np.mean(values)), "std": float(np.std(values)), "folds": per_fold}
            log.info("%s %s/%s: %s %.4f", task.name, feature, probe, metric, float(np.mean(values)))
    folder = Path(out) / task.name
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "results.json", results)
    table = results_table(results)
    atomic_write_text(folder / "results.md", table + "\n")
    results["results_dir"] = str(folder)
    return results


FEATURE_NAMES = {"cpc": "CPC", "random": "random-init", "mfcc": "MFCC"}
PROBE_NAMES = {"mlp": "MLP grid (HEAR)", "linear": "linear probe"}


def results_table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per feature set, one column per probe, mean +- std over folds."""
    scores = results["scores"]
    features = list(dict.fromkeys(v["feature"] for v in scores.values()))
    probes = list(dict.fromkeys(v["probe"] for v in scores.values()))
    lines = [f"{results['task']}: {results['metric']} on the test folds ({results['folds']} fold(s), "
             f"{results['sample_rate']} Hz)", "",
             "| features | dim | " + " | ".join(PROBE_NAMES[p] for p in probes) + " |",
             "|---|---|" + "---|" * len(probes)]
    for feature in features:
        cells = []
        for probe in probes:
            entry = scores[f"{feature}/{probe}"]
            cells.append(f"{entry['mean']:.4f} ± {entry['std']:.4f}")
        dim = scores[f"{feature}/{probes[0]}"]["dim"]
        lines.append(f"| {FEATURE_NAMES[feature]} | {dim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
