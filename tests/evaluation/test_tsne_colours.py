"""A 2-D map shows each point in its own class's colour: the colours and positions drawn
(read back from the figures) and the coordinates file agree with the labels of the crops.

The embeddings are three well-separated clusters, one per class, so any shift between
points and labels puts points of one class into another's cluster."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiocpc.evaluation import plots
from audiocpc.evaluation.store import EmbeddingSplit
from audiocpc.evaluation.tsne import tsne

CLASSES = ("bird", "car", "dog")


def _split(folder: Path, split: str, files_per_class: int, crops: int, seed: int) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    rows, files, labels = [], [], []
    for index, label in enumerate(CLASSES):
        centre = np.zeros(len(CLASSES))  # no noise-only dimensions: embed_2d scales each to unit variance
        centre[index] = 20.0
        for f in range(files_per_class):
            name = f"{label}/{split}_{f}.wav"
            for _ in range(crops):
                rows.append(centre + rng.normal(0, 0.5, len(CLASSES)))
                files.append(name)
                labels.append(label)
    order = rng.permutation(len(rows))  # classes interleaved, as real manifests may be
    EmbeddingSplit(np.asarray(rows, np.float32)[order], [files[i] for i in order],
                   [labels[i] for i in order], np.zeros(len(rows)), np.ones(len(rows)),
                   {}).write(folder, split)
    return dict(zip(files, labels))


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every figure the plots module would save, by file name (kept, not rendered: the
    drawn content is what is checked here, and rendering is most of the time)."""
    saved: dict[str, Any] = {}

    def keep(fig: Any, path: Path, dpi: int) -> None:
        saved[Path(path).name] = fig

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def _rgb(colour: Any) -> tuple[float, ...]:
    return tuple(round(float(v), 3) for v in np.asarray(colour).ravel()[:3])


def _drawn(ax: Any) -> list[tuple[tuple[float, ...], np.ndarray, Any]]:
    """(colour, [n, 2] offsets, collection) of each scatter layer with points."""
    layers = []
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets())
        colours = {_rgb(c) for c in collection.get_facecolors()}
        if len(offsets):
            assert len(colours) == 1, "one colour per scatter layer"
            layers.append((colours.pop(), offsets, collection))
    return layers


def _label_at(points: list[dict[str, str]], xy: np.ndarray) -> str:
    coordinates = np.array([[float(p["x"]), float(p["y"])] for p in points])
    nearest = int(np.argmin(np.abs(coordinates - xy).sum(axis=1)))
    assert np.abs(coordinates[nearest] - xy).max() < 1e-3, f"drawn point {xy} is not in the table"
    return points[nearest]["label"]


def test_map_points_are_drawn_in_their_own_class_colour(tmp_path: Path,
                                                        figures: dict[str, Any]) -> None:
    embed = tmp_path / "embeddings" / "model"
    truth = _split(embed, "train", files_per_class=4, crops=5, seed=0)
    truth |= _split(embed, "test", files_per_class=2, crops=3, seed=1)
    info = tsne(embed, tmp_path / "map", points=1000, method="pca", seed=0)
    assert info["classes"] == list(CLASSES)

    with open(tmp_path / "map" / "pca_points.csv", newline="", encoding="utf-8") as handle:
        points = list(csv.DictReader(handle))
    assert len(points) == 3 * (4 * 5 + 2 * 3)  # every crop
    # the table: each point's label is its file's, and sits in its own class's cluster
    for p in points:
        assert p["label"] == truth[p["file"]], p
    xy = np.array([[float(p["x"]), float(p["y"])] for p in points])
    labels = np.array([p["label"] for p in points])
    centres = {c: xy[labels == c].mean(axis=0) for c in CLASSES}
    spread = max(np.linalg.norm(xy[labels == c] - centres[c], axis=1).max() for c in CLASSES)
    gap = min(np.linalg.norm(centres[a] - centres[b]) for a in CLASSES for b in CLASSES if a < b)
    assert spread < gap / 3, "points of a class are not together: labels and points shifted"

    # the figure: the legend's colour of each class is the colour of all of its points
    ax = figures["pca.png"].axes[0]
    legend = {text.get_text(): _rgb(handle.get_color())
              for text, handle in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)
              if text.get_text() in CLASSES}
    assert set(legend) == set(CLASSES) and len(set(legend.values())) == len(CLASSES)
    colour_class = {colour: name for name, colour in legend.items()}
    drawn = 0
    for colour, offsets, _ in _drawn(ax):
        for point in offsets:
            assert _label_at(points, point) == colour_class[colour], f"{point} in the wrong colour"
        drawn += len(offsets)
    assert drawn == len(points)

    # each class's own map: its coloured (train, test) points are that class's points only
    for name in CLASSES:
        layers = [(colour, offsets) for colour, offsets, collection
                  in _drawn(figures[f"{name}.png"].axes[0])
                  if not collection.get_label().startswith("other")]
        assert sum(len(offsets) for _, offsets in layers) == int((labels == name).sum())
        for _, offsets in layers:
            assert {_label_at(points, point) for point in offsets} == {name}
