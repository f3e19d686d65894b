"""`audiocpc classify`: probes trained on one split's embeddings, scored on the other's.

Reads an embeddings folder (`<split>.npy` + `<split>.csv`, evaluation/store.py),
trains each probe on the train split and evaluates on the test split; without a test split
it holds out whole files (seeded, stratified by class). Writes `metrics.json`, a
row-normalised confusion matrix per probe, the MLP's curves and the split it used.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional, Sequence, cast

import numpy as np

from audiocpc.data.labels import describe_classes
from audiocpc.errors import AudiocpcError
from audiocpc.evaluation.probe import ProbeKind, ProbeSettings, fit_probe, score, split_by_file
from audiocpc.evaluation.store import EmbeddingSplit
from audiocpc.fileio import atomic_write_json, atomic_write_text, normalised_json

SPLITS = ("train", "test")

log = logging.getLogger("audiocpc")


def feature_kind(meta: dict[str, Any], name: str) -> str:
    """cpc, random (the untrained model) or mfcc, from an embeddings folder's metadata."""
    if meta.get("features") == "mfcc":
        return "mfcc"
    return "random" if meta.get("random_init") or name.endswith("_random") else "cpc"


def has_split(folder: str | Path, split: str) -> bool:
    return EmbeddingSplit.exists(folder, split)


def load_split(folder: str | Path, split: str) -> EmbeddingSplit:
    """The labelled rows of one split (the others are dropped with one warning); NaN or
    infinite embeddings are refused in one line."""
    rows = EmbeddingSplit.read(folder, split)
    _check_finite(rows.features, EmbeddingSplit.path(folder, split, "npy"))
    return rows.labelled()


def embeddings_identity(folder: str | Path) -> dict[str, Any]:
    """The content hashes of every split present in an embeddings folder: what a
    classifier or a map made from it records, and is redone when it changes."""
    return {split: EmbeddingSplit.content(folder, split) for split in SPLITS
            if EmbeddingSplit.exists(folder, split)}


def classify_inputs(embed_dir: str | Path, probes: Sequence[str], settings: ProbeSettings,
                    test_fraction: float, seed: int) -> dict[str, Any]:
    """What `classify` makes its metrics from, as recorded in metrics.json (`inputs`)."""
    present = embeddings_identity(embed_dir)
    split: dict[str, Any] = {"mode": "test split" if "test" in present else "by file"}
    if "test" not in present:
        split.update(test_fraction=test_fraction, seed=seed)
    return normalised_json({
        "embeddings": present,
        "settings": {"probes": list(probes), "probe": _settings_record(settings), "split": split},
    })


def _settings_record(settings: ProbeSettings) -> dict[str, Any]:
    return {k: v for k, v in asdict(settings).items() if k != "kind"}


def _check_finite(features: np.ndarray, path: Path) -> None:
    """NaN or infinite embeddings mean the model (or the file) is broken: say so, once."""
    bad = 0
    for start in range(0, features.shape[0], 65536):  # in blocks: the array is memory-mapped
        block = np.asarray(features[start : start + 65536], dtype=np.float32)
        bad += int((~np.isfinite(block)).any(axis=tuple(range(1, block.ndim))).sum())
    if bad:
        raise AudiocpcError(
            f"{path}: {bad} of {features.shape[0]} rows hold NaN or infinite values (a model "
            "whose weights or inputs are not finite?); embed again with a sound checkpoint")


def train_test_splits(folder: str | Path, test_fraction: float = 0.25, seed: int = 0
                      ) -> tuple[EmbeddingSplit, EmbeddingSplit, dict[str, Any]]:
    """The train and test sides, and a description of how they were made."""
    train = load_split(folder, "train")
    if has_split(folder, "test"):
        test = load_split(folder, "test")
        check_same_embedding(folder, train, test)
        how: dict[str, Any] = {"mode": "test split", "note": "trained on the train split, evaluated on the test split"}
    else:
        held_out = split_by_file(train.files, train.labels, test_fraction, seed)
        if not held_out.any():
            raise AudiocpcError(f"{folder}: no test split and too few files to hold any out "
                                "(every class needs at least two files)")
        train, test = train.subset(~held_out), train.subset(held_out)
        how = {"mode": "by file", "test_fraction": test_fraction, "seed": seed,
               "note": "no test split: whole files held out, stratified by class"}
    unseen = sorted(set(test.labels) - set(train.labels))
    if unseen and not set(test.labels) - set(unseen):
        raise AudiocpcError(
            f"{folder}: no test class occurs in the train split (test: {', '.join(unseen)}; "
            f"train: {', '.join(sorted(set(train.labels)))}), so nothing can be scored; embed "
            "labelled test audio of the training classes (or leave out the test split)")
    if unseen:
        log.warning("classes only in the test split are left out: %s", ", ".join(unseen))
        test = test.subset(np.array([label not in unseen for label in test.labels], dtype=bool))
    how.update({"train_crops": len(train), "test_crops": len(test),
                "train_files": len(set(train.files)), "test_files": len(set(test.files)),
                "test_classes_left_out": unseen})
    return train, test, how


def _embedding_identity(split: EmbeddingSplit) -> dict[str, Any]:
    meta = split.meta
    return {"kind": meta.get("features") or meta.get("kind"), "model": meta.get("run_dir"),
            "untrained": bool(meta.get("random_init")), "dimensions": int(split.features.shape[1])}


def check_same_embedding(folder: str | Path, train: EmbeddingSplit, test: EmbeddingSplit) -> None:
    """Train and test rows must come from the same model and embedding kind; otherwise the
    probes would fail deep in scikit-learn (128 vs 256 features) or score nonsense."""
    mine, theirs = _embedding_identity(train), _embedding_identity(test)
    differ = [k for k in mine if mine[k] is not None and theirs[k] is not None and mine[k] != theirs[k]]
    if not differ:
        return
    shown = "; ".join(f"{k}: train {mine[k]!r}, test {theirs[k]!r}" for k in differ)
    meta = train.meta
    fix = ""
    if meta.get("kind") and meta.get("run_dir") and not meta.get("features"):
        fix = (f": audiocpc embed {meta['run_dir']} --data {test.meta.get('data_dir', 'TEST_DIR')} "
               f"--split test --kind {meta['kind']}" + (" --random-init" if mine["untrained"] else ""))
    raise AudiocpcError(f"{folder}: the train and test embeddings were made differently ({shown}); "
                        f"re-embed the test split like the train split{fix}")


def _write_split(path: Path, train: EmbeddingSplit, test: EmbeddingSplit) -> None:
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(["file", "label", "side", "crops"])
    for side, part in (("train", train), ("test", test)):
        counts: dict[tuple[str, str], int] = {}
        for f, label in zip(part.files, part.labels):
            counts[(f, label)] = counts.get((f, label), 0) + 1
        for (f, label), n in sorted(counts.items()):
            writer.writerow([f, label, side, n])
    atomic_write_text(path, handle.getvalue())


def classify(embed_dir: str | Path, out_dir: str | Path, probes: Sequence[str] = ("logreg",),
             settings: Optional[ProbeSettings] = None, test_fraction: float = 0.25,
             seed: int = 0) -> dict[str, Any]:
    """Fit and score each probe; write metrics.json and plots to `out_dir`; return the metrics."""
    from audiocpc.evaluation.plots import confusion_matrix_plot, mlp_curves_plot

    embed_dir, out_dir = Path(embed_dir), Path(out_dir)
    base = settings or ProbeSettings(seed=seed)
    inputs = classify_inputs(embed_dir, probes, base, test_fraction, seed)  # before reading
    train, test, how = train_test_splits(embed_dir, test_fraction, seed)
    for side, part in (("train", train), ("test", test)):
        per_file = dict(zip(part.files, part.labels))
        log.info("%s: %s side: %s", embed_dir.name, side, describe_classes(list(per_file.values())))
    metrics_path = out_dir / "metrics.json"
    if metrics_path.is_file():  # say so: an earlier result (other probes or settings) is replaced
        old = _read_json_file(metrics_path)
        earlier = ", ".join(f"{p} {m.get('crop_accuracy', float('nan')):.1%}"
                            for p, m in old.get("probes", {}).items()) or "unreadable"
        log.warning("replacing %s (earlier crop accuracy: %s); copy it first to keep it",
                    metrics_path, earlier)
    metrics_path.unlink(missing_ok=True)  # the commit mark: written last
    _write_split(out_dir / "split.csv", train, test)
    name = embed_dir.name
    results: dict[str, Any] = {}
    classes: list[str] = []
    for kind in probes:
        # fit_probe refuses an unknown kind with a clear error
        probe_settings = replace(base, kind=cast(ProbeKind, kind))
        fitted = fit_probe(train.features, train.labels, probe_settings, files=train.files)
        classes = fitted.classes
        metrics = score(fitted.predict_proba(test.features), test.labels, test.files, classes)
        metrics["train_crop_accuracy"] = score(fitted.predict_proba(train.features), train.labels,
                                               train.files, classes)["crop_accuracy"]
        confusion_matrix_plot(metrics["confusion"], classes, out_dir / f"confusion_{kind}.png",
                              f"{name} - {kind}: crop accuracy {metrics['crop_accuracy']:.1%}, "
                              f"file accuracy {metrics['file_accuracy']:.1%}")
        metrics["confusion_png"] = f"confusion_{kind}.png"
        if fitted.history:
            mlp_curves_plot(fitted.history, out_dir / "mlp_curves.png", f"{name} - MLP probe")
            metrics["curves_png"] = "mlp_curves.png"
            metrics["history"] = fitted.history
            metrics["epochs"] = len(fitted.history)
        results[kind] = metrics
        log.info("%s %s: crop accuracy %.3f, file accuracy %.3f, macro-F1 %.3f", name, kind,
                 metrics["crop_accuracy"], metrics["file_accuracy"], metrics["macro_f1"])
    meta = train.meta
    report = {
        "features": name,
        "kind": feature_kind(meta, name),
        "embeddings": str(embed_dir),
        "dim": int(train.features.shape[1]),
        "classes": classes,
        "split": how,
        "probe_settings": _settings_record(base),
        "probes": results,
        "inputs": inputs,
    }
    atomic_write_json(out_dir / "metrics.json", report)
    return report


def _read_json_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
