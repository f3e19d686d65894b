"""Classifier probes on embedding arrays: split by file, fit, predict, score.

A probe sees only arrays: features [n, dim], one label and one source file per row. Every
transform (standardisation, PCA) is fit on the training rows only. Crops of one file never
fall on both sides of a split, so a file-level split measures generalisation to new files,
not to new crops of files already seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence

import numpy as np

from audiocpc.errors import AudiocpcError

log = logging.getLogger("audiocpc")

ProbeKind = Literal["logreg", "mlp", "knn"]
PROBE_KINDS: tuple[str, ...] = ("logreg", "mlp", "knn")


# ---------------------------------------------------------------- splits


def split_by_file(files: Sequence[str], labels: Sequence[str], test_fraction: float = 0.25,
                  seed: int = 0) -> np.ndarray:
    """A boolean mask over rows: True for the held-out side.

    Stratified by class over files (not crops): in each class, round(test_fraction * files)
    files (at least one when the class has two or more, never all of them) go to the
    held-out side with every one of their crops. Seeded, so the same call gives the same split.
    """
    row_files = np.asarray(files, dtype=object)
    file_label: dict[str, str] = {}
    for name, label in zip(row_files, np.asarray(labels, dtype=object)):
        if file_label.setdefault(name, label) != label:
            raise AudiocpcError(f"file {name} has crops with different labels "
                                f"({file_label[name]!r} and {label!r})")
    rng = np.random.default_rng(seed)
    held_out: set[str] = set()
    for label in sorted(set(file_label.values())):
        members = sorted(f for f, lab in file_label.items() if lab == label)
        if len(members) < 2:
            continue
        count = min(len(members) - 1, max(1, int(round(test_fraction * len(members)))))
        chosen = rng.permutation(len(members))[:count]
        held_out.update(members[i] for i in chosen)
    return np.array([name in held_out for name in row_files], dtype=bool)


# ---------------------------------------------------------------- probes


@dataclass
class ProbeSettings:
    kind: ProbeKind = "logreg"
    standardize: bool = True
    pca_dim: Optional[int] = None
    seed: int = 0
    # logistic regression
    c: float = 1.0
    # k nearest neighbours
    neighbours: int = 5
    # MLP
    hidden: int = 256
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 15
    validation_fraction: float = 0.15


@dataclass
class FittedProbe:
    settings: ProbeSettings
    classes: list[str]
    scaler: Any
    pca: Any
    model: Any
    history: list[dict[str, float]] = field(default_factory=list)  # MLP epochs only

    def transform(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        if self.scaler is not None:
            x = self.scaler.transform(x)
        if self.pca is not None:
            x = self.pca.transform(x)
        return np.asarray(x, dtype=np.float32)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """[n, classes] probabilities, columns in the order of `classes`."""
        x = self.transform(features)
        if self.settings.kind == "mlp":
            return _mlp_proba(self.model, x)
        return self.model.predict_proba(x)


def fit_probe(features: np.ndarray, labels: Sequence[str], settings: ProbeSettings,
              files: Optional[Sequence[str]] = None) -> FittedProbe:
    """Fit a probe; `files` lets the MLP hold out whole files for early stopping."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    if settings.kind not in PROBE_KINDS:
        raise AudiocpcError(f"unknown probe {settings.kind!r}; choose one of {', '.join(PROBE_KINDS)}")
    if settings.pca_dim is not None and settings.pca_dim < 1:
        raise AudiocpcError(f"--pca: expected a positive number of dimensions, got "
                            f"{settings.pca_dim} (leave out --pca to keep every dimension)")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise AudiocpcError(f"a classifier needs at least two classes; the training split has "
                            f"{len(classes)} ({', '.join(classes) or 'none'})")
    y = np.array([classes.index(label) for label in labels], dtype=np.int64)
    x = np.asarray(features, dtype=np.float32)
    scaler = StandardScaler().fit(x) if settings.standardize else None
    if scaler is not None:
        x = scaler.transform(x)
    pca = None
    if settings.pca_dim is not None:
        dim = min(settings.pca_dim, x.shape[0], x.shape[1])
        if dim < settings.pca_dim:
            log.warning("PCA to %d dimensions instead of %d (only %d rows x %d features)",
                        dim, settings.pca_dim, x.shape[0], x.shape[1])
        pca = PCA(n_components=dim, random_state=settings.seed).fit(x)
        x = pca.transform(x)
    x = np.asarray(x, dtype=np.float32)
    history: list[dict[str, float]] = []
    if settings.kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=settings.c, max_iter=2000, random_state=settings.seed).fit(x, y)
    elif settings.kind == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        model = KNeighborsClassifier(n_neighbors=min(settings.neighbours, len(y))).fit(x, y)
    else:
        model, history = _fit_mlp(x, y, len(classes), settings, files)
    return FittedProbe(settings, classes, scaler, pca, model, history)


def _fit_mlp(x: np.ndarray, y: np.ndarray, n_classes: int, settings: ProbeSettings,
             files: Optional[Sequence[str]]) -> tuple[Any, list[dict[str, float]]]:
    """A one-hidden-layer MLP: shuffled mini-batches, Adam, early stopping on a validation
    part of the training rows (whole files when `files` is given); the best epoch is kept."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches this small run several times faster on one thread
    try:
        return _train_mlp(x, y, n_classes, settings, files)
    finally:
        torch.set_num_threads(threads)


def _train_mlp(x: np.ndarray, y: np.ndarray, n_classes: int, settings: ProbeSettings,
               files: Optional[Sequence[str]]) -> tuple[Any, list[dict[str, float]]]:
    import torch
    from torch import nn

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    if files is not None:
        label_names = [str(v) for v in y]
        held = split_by_file(files, label_names, settings.validation_fraction, settings.seed)
    else:
        held = rng.random(len(y)) < settings.validation_fraction
    if not held.any() or held.all():  # too few files to hold any out: use crops instead
        held = rng.random(len(y)) < settings.validation_fraction
    if not held.any() or held.all():
        held = np.zeros(len(y), dtype=bool)
    train_x, train_y = torch.from_numpy(x[~held]), torch.from_numpy(y[~held])
    val_x, val_y = torch.from_numpy(x[held]), torch.from_numpy(y[held])
    model = nn.Sequential(nn.Linear(x.shape[1], settings.hidden), nn.ReLU(),
                          nn.Dropout(settings.dropout), nn.Linear(settings.hidden, n_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(settings.seed)
    history: list[dict[str, float]] = []
    best_state, best_loss, waited = None, float("inf"), 0
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        total, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            logits = model(train_x[batch])
            loss = loss_fn(logits, train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            correct += int((logits.argmax(1) == train_y[batch]).sum())
            seen += len(batch)
        record = {"epoch": epoch, "train_loss": total / seen, "train_accuracy": correct / seen}
        monitored = record["train_loss"]
        if len(val_y):
            model.eval()
            with torch.no_grad():
                logits = model(val_x)
                record["val_loss"] = float(loss_fn(logits, val_y))
                record["val_accuracy"] = float((logits.argmax(1) == val_y).float().mean())
            monitored = record["val_loss"]
        history.append(record)
        if monitored < best_loss - 1e-4:
            best_loss, waited = monitored, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= settings.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


def _mlp_proba(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


# ---------------------------------------------------------------- scores


def file_level(proba: np.ndarray, labels: Sequence[str], files: Sequence[str]
               ) -> tuple[np.ndarray, list[str], list[str]]:
    """Average the crop probabilities of each file: (proba [files, classes], labels, names)."""
    names = sorted(set(files))
    index = {name: i for i, name in enumerate(names)}
    rows = np.array([index[f] for f in files])
    sums = np.zeros((len(names), proba.shape[1]))
    np.add.at(sums, rows, proba)
    counts = np.bincount(rows, minlength=len(names))[:, None]
    file_labels = [""] * len(names)
    for f, label in zip(files, labels):
        file_labels[index[f]] = label
    return sums / counts, file_labels, names


def score(proba: np.ndarray, labels: Sequence[str], files: Sequence[str],
          classes: Sequence[str]) -> dict[str, Any]:
    """Crop- and file-level accuracy, macro-F1, per-class precision/recall, confusion matrices."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    classes = list(classes)
    y = np.array([classes.index(label) for label in labels])
    predicted = proba.argmax(axis=1)
    ids = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=ids, zero_division=0)
    file_proba, file_labels, _ = file_level(proba, labels, files)
    file_y = np.array([classes.index(label) for label in file_labels])
    file_predicted = file_proba.argmax(axis=1)
    return {
        "crops": int(len(y)),
        "files": int(len(file_y)),
        "crop_accuracy": float((predicted == y).mean()),
        "file_accuracy": float((file_predicted == file_y).mean()),
        "macro_f1": float(f1_score(y, predicted, labels=ids, average="macro", zero_division=0)),
        "file_macro_f1": float(f1_score(file_y, file_predicted, labels=ids, average="macro",
                                        zero_division=0)),
        "chance_accuracy": float(np.bincount(y, minlength=len(classes)).max() / len(y)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion": confusion_matrix(y, predicted, labels=ids).tolist(),
        "file_confusion": confusion_matrix(file_y, file_predicted, labels=ids).tolist(),
    }
