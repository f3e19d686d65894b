"""Probes, the split by file, classify and t-SNE on synthetic embedding folders."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from audiocpc.evaluation.classify import classify, load_split, train_test_splits
from audiocpc.evaluation.mfcc import mfcc, mfcc_summary
from audiocpc.evaluation.probe import ProbeSettings, fit_probe, score, split_by_file
from audiocpc.evaluation.tsne import stratified_subsample, tsne


def write_embeddings(folder: Path, split: str, features: np.ndarray, files: list[str],
                     labels: list[str]) -> None:
    """An embeddings folder in the format `audiocpc embed` writes."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{split}.npy", features.astype(np.float32))
    with open(folder / f"{split}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "file", "start_seconds", "duration_seconds", "label"])
        for i, (f, label) in enumerate(zip(files, labels)):
            writer.writerow([i, f, 0.5 * (i % 4), 1.0, label])
    (folder / f"{split}.json").write_text(json.dumps({"split": split, "rows": len(files)}))


def clustered(n_classes: int, files_per_class: int, crops: int, dim: int, spread: float,
              seed: int, prefix: str = "") -> tuple[np.ndarray, list[str], list[str]]:
    """Crops around a per-file centre, file centres around a per-class centre."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(n_classes, dim)) * 3
    features, files, labels = [], [], []
    for c in range(n_classes):
        for f in range(files_per_class):
            file_centre = centres[c] + rng.normal(size=dim) * spread
            for _ in range(crops):
                features.append(file_centre + rng.normal(size=dim) * 0.5)
                files.append(f"{prefix}class{c}/class{c}.{f:05d}.wav")
                labels.append(f"class{c}")
    return np.array(features), files, labels


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Every figure the plots module saves, by file name, so a test can read what was drawn."""
    from audiocpc.evaluation import plots

    figures: dict[str, object] = {}
    original = plots._save

    def keep(fig: object, path: Path, dpi: int) -> None:
        figures[path.name] = fig
        original(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _hex(colour: object) -> str:
    from matplotlib.colors import to_hex

    return to_hex(colour)  # type: ignore[arg-type]


def test_split_by_file_never_puts_one_file_on_both_sides() -> None:
    _, files, labels = clustered(4, 7, crops=5, dim=2, spread=1.0, seed=0)
    held = split_by_file(files, labels, test_fraction=0.3, seed=3)
    train_files = {f for f, h in zip(files, held) if not h}
    test_files = {f for f, h in zip(files, held) if h}
    assert train_files and test_files
    assert not train_files & test_files
    for c in range(4):  # stratified: every class on both sides, round(0.3 * 7) = 2 files held out
        assert sum(f.startswith(f"class{c}/") for f in test_files) == 2
    assert np.array_equal(held, split_by_file(files, labels, 0.3, seed=3))
    assert not np.array_equal(held, split_by_file(files, labels, 0.3, seed=4))


def test_split_by_file_keeps_single_file_classes_in_training() -> None:
    files = ["a1", "a1", "a2", "b1"]
    held = split_by_file(files, ["a", "a", "a", "b"], test_fraction=0.5, seed=0)
    assert not held[3]
    assert held[:3].sum() in (1, 2) and held[0] == held[1]


@pytest.mark.parametrize("kind", ["logreg", "mlp", "knn"])
def test_probes_separate_clusters_and_score_file_level(kind: str) -> None:
    x, files, labels = clustered(3, 6, crops=6, dim=8, spread=0.8, seed=1)
    held = split_by_file(files, labels, 0.34, seed=0)
    fitted = fit_probe(x[~held], [l for l, h in zip(labels, held) if not h],
                       ProbeSettings(kind=kind, pca_dim=4, max_epochs=60),
                       files=[f for f, h in zip(files, held) if not h])
    proba = fitted.predict_proba(x[held])
    assert proba.shape == (held.sum(), 3)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    metrics = score(proba, [l for l, h in zip(labels, held) if h], [f for f, h in zip(files, held) if h],
                    fitted.classes)
    assert metrics["crop_accuracy"] > 0.9
    assert metrics["files"] == 6 and metrics["crops"] == 36
    if kind == "mlp":
        assert fitted.history and "val_loss" in fitted.history[0]


def test_pca_and_scaler_are_fit_on_training_rows_only() -> None:
    x, files, labels = clustered(2, 4, crops=3, dim=5, spread=0.5, seed=2)
    fitted = fit_probe(x, labels, ProbeSettings(pca_dim=3))
    assert np.allclose(fitted.scaler.mean_, x.mean(axis=0))
    shifted = fitted.transform(x + 100.0)  # new data is transformed, never refit
    assert not np.allclose(shifted, fitted.transform(x))
    assert fitted.pca.n_components_ == 3


def test_file_accuracy_averages_probabilities_over_a_files_crops() -> None:
    # file f1 (class a): crops say a, a, b -> file-level a; crop-level 2/3
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.1, 0.9]])
    metrics = score(proba, ["a", "a", "a", "b"], ["f1", "f1", "f1", "f2"], ["a", "b"])
    assert metrics["crop_accuracy"] == pytest.approx(0.75)
    assert metrics["file_accuracy"] == pytest.approx(1.0)
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert metrics["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert metrics["confusion"] == [[2, 1], [0, 1]]


def test_the_confusion_matrices_have_a_row_and_column_for_a_class_the_test_side_lacks() -> None:
    # classes a, b, c come from the training side; the test side holds only a and b and nothing
    # predicts c: its row and column are still there (all zero), so the cells line up with
    # `classes` and with the confusion plot's axis labels
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # an undefined F1 (class c) is 0, without a warning
        metrics = score(proba, ["a", "b", "a", "b"], ["f1", "f2", "f3", "f4"], ["a", "b", "c"])
    assert metrics["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert metrics["file_confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert metrics["chance_accuracy"] == pytest.approx(0.5)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)


def test_the_logistic_probe_converges_on_unstandardised_features_of_very_different_scales() -> None:
    # --no-standardize: the one informative feature is 10^4 times smaller than the largest, so
    # lbfgs needs ~500 iterations (sklearn's default limit of 100 stops short, with a warning)
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(0)
    z = rng.normal(size=(100, 30))
    labels = ["up" if v > 0 else "down" for v in z[:, 0]]
    features = (z * np.logspace(-2, 2, 30)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fitted = fit_probe(features, labels, ProbeSettings(kind="logreg", standardize=False))
    assert fitted.scaler is None


def test_classify_without_test_split_holds_out_whole_files(tmp_path: Path, saved_figures) -> None:
    x, files, labels = clustered(3, 8, crops=4, dim=6, spread=0.6, seed=3)
    folder = tmp_path / "embeddings" / "run"
    write_embeddings(folder, "train", x, files, labels)
    report = classify(folder, tmp_path / "classifier" / "run", probes=["logreg", "mlp"],
                      settings=ProbeSettings(max_epochs=40))
    assert report["split"]["mode"] == "by file"
    with open(tmp_path / "classifier" / "run" / "split.csv") as handle:
        sides: dict[str, set[str]] = {}
        for row in csv.DictReader(handle):
            sides.setdefault(row["file"], set()).add(row["side"])
    assert all(len(s) == 1 for s in sides.values())
    assert report["split"]["test_files"] == 6  # round(0.25 * 8) = 2 per class
    written = json.loads((tmp_path / "classifier" / "run" / "metrics.json").read_text())
    assert written["probes"]["logreg"]["crop_accuracy"] > 0.9
    assert (tmp_path / "classifier" / "run" / "confusion_logreg.png").stat().st_size > 1000
    assert (tmp_path / "classifier" / "run" / "mlp_curves.png").is_file()
    # the drawn matrix: its rows are the held-out crops of each true class (from split.csv),
    # its diagonal the correctly predicted ones, each cell row-normalised and written in it
    with open(tmp_path / "classifier" / "run" / "split.csv") as handle:
        test_files = {row["file"] for row in csv.DictReader(handle) if row["side"] == "test"}
    logreg = written["probes"]["logreg"]
    counts = np.array(logreg["confusion"])
    per_class = [sum(f in test_files and label == c for f, label in zip(files, labels))
                 for c in written["classes"]]
    assert counts.sum(axis=1).tolist() == per_class
    assert np.trace(counts) / counts.sum() == pytest.approx(logreg["crop_accuracy"])
    axes = saved_figures["confusion_logreg.png"].axes[0]
    drawn = np.asarray(axes.images[0].get_array())
    assert np.allclose(drawn, counts / counts.sum(axis=1, keepdims=True))
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in axes.texts}
    assert cells == {(i, j): f"{drawn[i, j]:.2f}" for i in range(3) for j in range(3)}
    assert [t.get_text() for t in axes.get_yticklabels()] == written["classes"]


def test_the_confusion_plot_draws_each_cell_where_its_counts_are(tmp_path: Path, saved_figures) -> None:
    from audiocpc.evaluation.plots import confusion_matrix_plot

    # true a: predicted a twice, b once; true b: predicted b; true c: predicted a 3 times, c once
    confusion_matrix_plot([[2, 1, 0], [0, 1, 0], [3, 0, 1]], ["a", "b", "c"], tmp_path / "m.png", "t")
    axes = saved_figures["m.png"].axes[0]
    assert np.allclose(np.asarray(axes.images[0].get_array()),
                       [[2 / 3, 1 / 3, 0], [0, 1, 0], [0.75, 0, 0.25]])
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in axes.texts}
    assert cells[(0, 0)] == "0.67" and cells[(0, 1)] == "0.33" and cells[(2, 0)] == "0.75"
    assert cells[(2, 2)] == "0.25" and cells[(1, 0)] == "0.00"
    assert axes.get_xlabel() == "predicted class" and axes.get_ylabel() == "true class"
    assert [t.get_text() for t in axes.get_xticklabels()] == ["a", "b", "c"]


def test_classify_uses_the_test_split_and_drops_unlabelled_and_unseen(tmp_path: Path) -> None:
    x, files, labels = clustered(2, 4, crops=3, dim=4, spread=0.5, seed=4)
    folder = tmp_path / "emb"
    write_embeddings(folder, "train", x, files, labels)
    tx, tfiles, tlabels = clustered(3, 2, crops=3, dim=4, spread=0.5, seed=5, prefix="t/")
    tlabels[0] = ""
    write_embeddings(folder, "test", tx, tfiles, tlabels)
    train, test, how = train_test_splits(folder)
    assert how["mode"] == "test split" and how["test_classes_left_out"] == ["class2"]
    assert len(test) == 2 * 2 * 3 - 1 and set(test.labels) == {"class0", "class1"}
    assert len(load_split(folder, "test")) == len(tfiles) - 1


def test_mfcc_matches_a_tone_and_has_mean_and_std() -> None:
    sr = 8000
    t = np.arange(sr) / sr
    low, high = np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 2500 * t)
    coefficients = mfcc(low, sr)
    assert coefficients.shape == (98, 20)
    summary_low, summary_high = mfcc_summary(low, sr), mfcc_summary(high, sr)
    assert summary_low.shape == (40,)
    assert np.linalg.norm(summary_low[:20] - summary_high[:20]) > 5  # different spectra
    assert np.all(summary_low[20:] < 1.0)  # a steady tone barely changes over time


def test_stratified_subsample_keeps_every_stratum() -> None:
    strata = np.array(["a"] * 900 + ["b"] * 90 + ["c"] * 10)
    chosen = stratified_subsample(strata, 100, seed=0)
    kept = strata[chosen]
    assert abs(len(chosen) - 100) <= 2
    assert (kept == "a").sum() == 90 and (kept == "b").sum() == 9 and (kept == "c").sum() == 1


def test_tsne_puts_train_and_test_in_one_space(tmp_path: Path, saved_figures) -> None:
    x, files, labels = clustered(3, 5, crops=10, dim=16, spread=0.3, seed=6)
    tx, tfiles, tlabels = clustered(3, 2, crops=10, dim=16, spread=0.3, seed=7, prefix="t/")
    folder = tmp_path / "emb"
    write_embeddings(folder, "train", x, files, labels)
    write_embeddings(folder, "test", tx, tfiles, tlabels)
    info = tsne(folder, tmp_path / "tsne", points=120, perplexity=15, seed=0)
    assert info["points"] == 120
    assert (tmp_path / "tsne" / "tsne.png").stat().st_size > 1000
    assert (tmp_path / "tsne" / "tsne.svg").read_text().lstrip().startswith("<?xml")
    assert len(info["per_class"]) == 3
    with open(tmp_path / "tsne" / "tsne_points.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["split"] for r in rows} == {"train", "test"}
    # each row's label is the class of its file (clustered() names files by class)
    assert all(r["file"].split("/")[-2] == r["label"] for r in rows)
    # the map keeps the classes apart: a point's nearest neighbour in 2-D is of its class
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    names = np.array([r["label"] for r in rows])
    distances = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 1e9
    assert (names[distances.argmin(axis=1)] == names).mean() > 0.9
    # the drawn points: every point sits in the colour of its own class (and the legend says so)
    from audiocpc.evaluation.plots import class_colours

    axes = saved_figures["tsne.png"].axes[0]
    colour_of = dict(zip(info["classes"], map(_hex, class_colours(len(info["classes"])))))
    offsets = np.concatenate([np.asarray(c.get_offsets()) for c in axes.collections])
    colours = [_hex(c.get_facecolor()[0]) for c in axes.collections for _ in c.get_offsets()]
    assert len(offsets) == len(rows)
    for point, r in zip(xy, rows):  # the csv keeps 4 decimals
        nearest = int(np.linalg.norm(offsets - point, axis=1).argmin())
        assert np.abs(offsets[nearest] - point).max() < 1e-3, r
        assert colours[nearest] == colour_of[r["label"]], r
    legend = {t.get_text(): _hex(h.get_color()) for t, h in zip(axes.get_legend().get_texts(),
                                                                 axes.get_legend().legend_handles)}
    assert all(legend[name] == colour for name, colour in colour_of.items())
    points = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    names = np.array([r["label"] for r in rows])
    # the map keeps the clusters: each point's nearest neighbour is of its own class
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert (names[distances.argmin(axis=1)] == names).mean() > 0.9


def test_tsne_shares_points_between_splits_by_files_not_crops(tmp_path: Path) -> None:
    # 90 crops per train file and 5 per test file left 79 of 2999 points to the test split.
    x, files, labels = clustered(3, 9, crops=90, dim=8, spread=0.3, seed=8)
    tx, tfiles, tlabels = clustered(3, 1, crops=5, dim=8, spread=0.3, seed=9, prefix="t/")
    folder = tmp_path / "emb"
    write_embeddings(folder, "train", x, files, labels)
    write_embeddings(folder, "test", tx, tfiles, tlabels)
    tsne(folder, tmp_path / "tsne", points=300, perplexity=10, seed=0, method="pca")
    with open(tmp_path / "tsne" / "pca_points.csv") as handle:
        splits = [r["split"] for r in csv.DictReader(handle)]
    # 27 train files and 3 test files: a tenth of the map is test (15 crops exist, all shown)
    assert splits.count("test") == 15 and abs(len(splits) - 300) <= 3


def test_tsne_orders_classes_naturally_and_never_colours_one_grey() -> None:
    from audiocpc.data.labels import sort_classes
    from audiocpc.evaluation.plots import class_colours

    words = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]
    assert sort_classes(words) == ["zero", "one", "two", "three", "four", "five", "six", "seven",
                                   "eight", "nine"]
    assert sort_classes(["class10", "class2", "class1"]) == ["class1", "class2", "class10"]
    for count in (8, 10, 12, 25):
        colours = class_colours(count)
        assert len(set(colours)) == count
        assert all(max(c[:3]) - min(c[:3]) > 0.05 for c in colours), count  # no grey


def test_classify_again_says_it_replaces_the_earlier_metrics(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    x, files, labels = clustered(2, 4, crops=3, dim=4, spread=0.5, seed=4)
    folder = tmp_path / "emb"
    write_embeddings(folder, "train", x, files, labels)
    classify(folder, tmp_path / "out", ["logreg"])
    with caplog.at_level("WARNING", logger="audiocpc"):
        classify(folder, tmp_path / "out", ["knn"])
    assert any("replacing" in r.getMessage() and "metrics.json" in r.getMessage()
               and "logreg" in r.getMessage() for r in caplog.records)


def test_tsne_of_fewer_points_than_pca_dimensions(tmp_path: Path) -> None:
    # a map of 32 crops of 512-dimensional embeddings failed in the PCA to 50 dimensions
    x, files, labels = clustered(4, 2, crops=4, dim=512, spread=0.3, seed=10)
    write_embeddings(tmp_path / "emb", "train", x, files, labels)
    info = tsne(tmp_path / "emb", tmp_path / "tsne", points=100, perplexity=30, seed=0)
    assert info["points"] == 32


def test_a_probe_reads_features_as_float32_whatever_dtype_it_is_given() -> None:
    # fitted on float32 rows; float64 rows of the same values must meet the same transforms
    x, _, labels = clustered(2, 4, crops=3, dim=5, spread=0.5, seed=3)
    fitted = fit_probe(x.astype(np.float32), labels, ProbeSettings(pca_dim=3))
    np.testing.assert_array_equal(fitted.transform(x), fitted.transform(x.astype(np.float32)))


def test_the_mlp_history_reports_the_mean_training_loss_and_accuracy_per_row() -> None:
    # lr 0 and no dropout: the model never changes, so each epoch's training loss is the
    # initial model's cross-entropy averaged over the training rows (no validation here)
    x, _, _ = clustered(2, 4, crops=5, dim=4, spread=0.5, seed=4)
    labels = ["ab"[i % 3 == 0] for i in range(len(x))]   # not the clusters: some rows come out wrong
    settings = ProbeSettings(kind="mlp", hidden=8, lr=0.0, weight_decay=0.0, dropout=0.0, batch_size=7,
                             max_epochs=3, validation_fraction=0.0, standardize=False)
    fitted = fit_probe(x, labels, settings)
    assert len(fitted.history) == 3 and "val_loss" not in fitted.history[0]
    proba = fitted.predict_proba(x)
    y = np.array([fitted.classes.index(label) for label in labels])
    expected = float(-np.log(proba[np.arange(len(y)), y]).mean())
    assert [epoch["train_loss"] for epoch in fitted.history] == pytest.approx([expected] * 3, rel=1e-5)
    accuracy = float((proba.argmax(axis=1) == y).mean())
    assert 0 < accuracy < 1   # neither all right nor all wrong, so the average is what is checked
    assert [epoch["train_accuracy"] for epoch in fitted.history] == pytest.approx([accuracy] * 3)


def test_the_readme_states_the_probes_defaults() -> None:
    import re

    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    found = re.search(r"`mlp` \(one hidden layer of (\d+), shuffled batches of (\d+), Adam, early "
                      r"stopping on (\d+) % of the training side's files held out: it stops after "
                      r"(\d+) epochs without a lower validation loss and keeps the best epoch\) and "
                      r"`knn` \(k = (\d+)\)", readme)
    assert found, "the README's sentence on the probes changed: update this test with it"
    defaults = ProbeSettings()
    assert [int(n) for n in found.groups()] == [defaults.hidden, defaults.batch_size,
                                                round(100 * defaults.validation_fraction),
                                                defaults.patience, defaults.neighbours]
