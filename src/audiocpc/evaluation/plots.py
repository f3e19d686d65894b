"""Figures: confusion matrices, training curves and 2-D embedding scatter plots.

matplotlib is switched to the file-only Agg backend inside each function (never at
import), so plotting works on machines without a display.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from audiocpc.fileio import atomic_path
from audiocpc.training.run_folder import RunFolder


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, dpi: int) -> None:
    """Atomically: a figure killed mid-write never replaces the old one with half a file."""
    with atomic_path(path, suffix=path.suffix) as tmp:  # the suffix tells savefig the format
        fig.savefig(tmp, dpi=dpi)


def _not_grey(colour: tuple[float, float, float, float]) -> bool:
    """Grey is the plots' colour for 'other classes' and the train/test legend keys."""
    r, g, b = colour[:3]
    return max(r, g, b) - min(r, g, b) > 0.05


def class_colours(count: int) -> list[tuple[float, float, float, float]]:
    """Distinct colours for `count` classes, never grey: tab10 up to 9 (its grey left out),
    tab10 plus navy for 10, tab20 up to 18, then tab20 plus the dark and light halves of
    tab20b/tab20c, so that ~30+ classes stay distinguishable."""
    from matplotlib import colormaps

    tab10 = [c for c in (colormaps["tab10"](i) for i in range(10)) if _not_grey(c)]
    if count <= len(tab10):
        return tab10[:count]
    if count == len(tab10) + 1:
        return tab10 + [(0.0, 0.0, 0.5, 1.0)]
    palette = [colormaps["tab20"](i) for i in range(20)]
    palette += [colormaps["tab20b"](i) for i in range(0, 20, 2)]
    palette += [colormaps["tab20c"](i) for i in range(0, 20, 2)]
    palette += [colormaps["tab20b"](i) for i in range(1, 20, 2)]
    palette = [c for c in palette if _not_grey(c)]
    return [palette[i % len(palette)] for i in range(count)]


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def class_markers(count: int) -> list[str]:
    """Beyond 20 classes colours repeat shades, so the shape changes with each block of 10."""
    return ["o" if count <= 20 else MARKERS[(i // 10) % len(MARKERS)] for i in range(count)]


def confusion_matrix_plot(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: Path,
                          title: str) -> Path:
    """Row-normalised (each true class sums to 1) confusion matrix with class names."""
    plt = _pyplot()
    counts = np.asarray(confusion, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(classes)
    size = max(4.5, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    slanted = n > 4 and max(len(c) for c in classes) > 2  # long names would overlap
    ax.set_xticks(range(n), labels=list(classes), rotation=45 if slanted else 0,
                  ha="right" if slanted else "center")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                value = normalised[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8 if n > 10 else 9,
                        color="white" if value > 0.5 else "black")
    fig.tight_layout()
    _save(fig, path, 120)
    plt.close(fig)
    return path


def mlp_curves_plot(history: Sequence[dict[str, float]], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch of the MLP probe, training and validation part."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax, label in (("loss", loss_ax, "cross-entropy"), ("accuracy", acc_ax, "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train")
        if history and f"val_{key}" in history[0]:
            ax.plot(epochs, [h[f"val_{key}"] for h in history], label="validation (held-out files)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, 120)
    plt.close(fig)
    return path


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    path = RunFolder(Path(run_dir)).history_path
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def cpc_curves_plot(run_dir: str | Path, path: Path) -> Optional[Path]:
    """CPC loss and per-step accuracy per epoch from a run's history.csv (None if absent)."""
    history = read_history(run_dir)
    if not history:
        return None
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["loss"] for h in history], marker="o")
    loss_ax.set_ylabel("InfoNCE loss")
    for key in sorted(k for k in history[0] if k.startswith("acc_k")):
        acc_ax.plot(epochs, [h[key] for h in history], marker="o", label=f"k={key[5:]}")
    acc_ax.set_ylabel("CPC accuracy (positive ranked first)")
    acc_ax.legend()
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(f"CPC training: {Path(run_dir).name}")
    fig.tight_layout()
    _save(fig, path, 120)
    plt.close(fig)
    return path


def scatter_plot(points: np.ndarray, labels: Sequence[str], is_test: np.ndarray,
                 classes: Sequence[str], title: str, paths: Sequence[Path]) -> list[Path]:
    """All classes in one 2-D map: colour (and beyond 20 classes, shape) per class, filled
    dots for train and black-edged crosses for test; the legend sits outside the axes."""
    plt = _pyplot()
    colours, markers = class_colours(len(classes)), class_markers(len(classes))
    label_array = np.asarray(labels, dtype=object)
    size = 8 if len(points) > 5000 else 14
    fig, ax = plt.subplots(figsize=(11, 8))
    for i, name in enumerate(classes):
        mine = label_array == name
        for test, style in ((False, {"alpha": 0.55, "linewidths": 0}),
                            (True, {"alpha": 0.9, "linewidths": 0.5, "edgecolors": "black"})):
            chosen = mine & (is_test == test)
            if chosen.any():
                ax.scatter(points[chosen, 0], points[chosen, 1], s=size * (1.6 if test else 1),
                           color=colours[i], marker="X" if test else markers[i], **style)
    handles = [plt.Line2D([], [], linestyle="", marker=markers[i], color=colours[i], markersize=7,
                          label=name) for i, name in enumerate(classes)]
    if is_test.any() and not is_test.all():
        handles += [plt.Line2D([], [], linestyle="", marker="o", color="grey", label="train (dot)"),
                    plt.Line2D([], [], linestyle="", marker="X", color="grey",
                               markeredgecolor="black", label="test (cross)")]
    columns = 1 if len(handles) <= 18 else 2
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=columns,
              fontsize=9, frameon=False)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    written = []
    for path in paths:
        _save(fig, path, 120)
        written.append(path)
    plt.close(fig)
    return written


def class_comparison_plot(points: np.ndarray, labels: Sequence[str], is_test: np.ndarray,
                          name: str, path: Path, title: str) -> Path:
    """One class's train and test points over every other point in grey."""
    plt = _pyplot()
    mine = np.asarray(labels, dtype=object) == name
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(points[~mine, 0], points[~mine, 1], s=5, color="lightgrey", linewidths=0,
               label="other classes")
    for test, colour, marker, label in ((False, "tab:blue", "o", "train"), (True, "tab:red", "X", "test")):
        chosen = mine & (is_test == test)
        if chosen.any():
            ax.scatter(points[chosen, 0], points[chosen, 1], s=16, color=colour, marker=marker,
                       alpha=0.75, linewidths=0, label=f"{name} {label} ({int(chosen.sum())})")
    ax.legend(loc="best", fontsize=9)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path, 110)
    plt.close(fig)
    return path
