"""`audiocpc tsne`: train and test embeddings in one fitted 2-D map, coloured by class.

A stratified random subsample (per split and class, proportional) keeps small classes
visible; t-SNE uses openTSNE's FFT-accelerated gradients when installed (tens of thousands
of points in a minute or two on a laptop), scikit-learn's Barnes-Hut t-SNE otherwise.
`pca` is a fast linear alternative and `umap` is used when umap-learn is installed.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from audiocpc.data.labels import sort_classes
from audiocpc.errors import AudiocpcError
from audiocpc.evaluation.classify import embeddings_identity
from audiocpc.evaluation.store import EmbeddingSplit
from audiocpc.fileio import atomic_write_json, atomic_write_text, normalised_json, sha256_json

log = logging.getLogger("audiocpc")

Method = Literal["tsne", "pca", "umap"]
FFT_FROM_POINTS = 10_000
SPLITS = ("train", "test")


def stratified_subsample(strata: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices: about `count` rows, each stratum sampled in proportion to its size
    but never below one row (or all of it, if smaller)."""
    strata = np.asarray(strata, dtype=object)
    if count >= len(strata):
        return np.arange(len(strata))
    rng = np.random.default_rng(seed)
    chosen = []
    for value in sorted(set(strata.tolist())):
        members = np.flatnonzero(strata == value)
        take = min(len(members), max(1, int(round(count * len(members) / len(strata)))))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def split_balanced_subsample(split_names: np.ndarray, labels: np.ndarray, files: list[str],
                            count: int, seed: int = 0) -> np.ndarray:
    """About `count` rows, shared between the splits in proportion to their FILES (not
    crops: 90 crops per train file and 5 per test file left ~3 % of a map to the test
    split), then stratified by class within each split."""
    split_names = np.asarray(split_names, dtype=object)
    if count >= len(split_names):
        return np.arange(len(split_names))
    names = [s for s in SPLITS if (split_names == s).any()]
    names += sorted(set(split_names.tolist()) - set(names))
    rows = {s: np.flatnonzero(split_names == s) for s in names}
    file_counts = {s: len({files[i] for i in rows[s]}) for s in names}
    total_files = sum(file_counts.values())
    budget = {s: min(len(rows[s]), max(1, int(round(count * file_counts[s] / total_files))))
              for s in names}
    spare = count - sum(budget.values())  # a split smaller than its share lends the rest
    for s in names:
        extra = min(spare, len(rows[s]) - budget[s])
        budget[s] += max(extra, 0)
        spare -= max(extra, 0)
    chosen = [rows[s][stratified_subsample(np.asarray(labels, dtype=object)[rows[s]], budget[s], seed)]
              for s in names]
    return np.sort(np.concatenate(chosen))


def embed_2d(features: np.ndarray, method: Method = "tsne", perplexity: float = 30.0,
             seed: int = 0, n_jobs: int = -1) -> np.ndarray:
    """[n, 2] coordinates of `features` [n, dim]."""
    x = np.asarray(features, dtype=np.float32)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)  # one scale for every dimension
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise AudiocpcError("--method umap needs umap-learn (pip install umap-learn); "
                                "use --method tsne or pca") from None
        return umap.UMAP(random_state=seed).fit_transform(x)
    perplexity = float(min(perplexity, max(2.0, (len(x) - 1) / 3.0)))
    if x.shape[1] > 50 and len(x) > 50:  # the usual t-SNE recipe: PCA to 50 dimensions first
        from sklearn.decomposition import PCA

        x = PCA(n_components=50, random_state=seed).fit_transform(x).astype(np.float32)
    try:
        from openTSNE import TSNE as OpenTSNE
        from openTSNE import affinity, initialization
    except ImportError:
        from sklearn.manifold import TSNE

        log.info("openTSNE not installed: using scikit-learn's slower t-SNE")
        return TSNE(perplexity=perplexity, random_state=seed, init="pca",
                    n_jobs=n_jobs).fit_transform(x)
    if len(x) < FFT_FROM_POINTS:  # Barnes-Hut in one thread: fastest for a few thousand points
        fitted = OpenTSNE(perplexity=perplexity, random_state=seed, n_jobs=1,
                          negative_gradient_method="bh", verbose=False).fit(x)
        return np.asarray(fitted)
    # Large sets: FFT gradients, 2*perplexity neighbours instead of 3*perplexity and
    # 150 + 350 iterations instead of 250 + 500 (openTSNE's learning rate of n/12 converges
    # sooner): 90,000 points take under two minutes on two cores.
    neighbours = affinity.PerplexityBasedNN(x, perplexity=perplexity, n_jobs=n_jobs,
                                            random_state=seed, method="annoy",
                                            k_neighbors=min(len(x) - 1, int(2 * perplexity)))
    start = initialization.pca(x, random_state=seed)
    fitted = OpenTSNE(n_jobs=n_jobs, negative_gradient_method="fft", early_exaggeration_iter=150,
                      n_iter=350, random_state=seed, verbose=False).fit(affinities=neighbours,
                                                                       initialization=start)
    return np.asarray(fitted)


def held_out_files(split_csv: str | Path) -> set[str]:
    """The files a classifier held out (`split.csv` of `audiocpc classify`), or none."""
    path = Path(split_csv)
    if not path.is_file():
        return set()
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["file"] for row in csv.DictReader(handle) if row.get("side") == "test"}


def tsne_inputs(embed_dir: str | Path, points: int, perplexity: float, seed: int, method: str,
                held_out: Optional[set[str]] = None) -> dict[str, Any]:
    """What a map is made from, as recorded in its JSON (`inputs`): the embeddings' content,
    the files shown as held out (without a test split) and the settings."""
    present = embeddings_identity(embed_dir)
    shown_held_out = sorted(held_out) if held_out and "test" not in present else []
    return normalised_json({
        "embeddings": present,
        "held_out_sha256": sha256_json(shown_held_out) if shown_held_out else None,
        "settings": {"method": method, "points": points, "perplexity": perplexity, "seed": seed},
    })


def tsne(embed_dir: str | Path, out_dir: str | Path, points: int = 3000, perplexity: float = 30.0,
         seed: int = 0, method: Method = "tsne", held_out: Optional[set[str]] = None) -> dict[str, Any]:
    """Fit one 2-D map of the train (and test, if present) embeddings; write the plots.
    Without a test split, the train files in `held_out` (the classifier's held-out files)
    are shown as test."""
    from audiocpc.evaluation.plots import class_comparison_plot, scatter_plot

    embed_dir, out_dir = Path(embed_dir), Path(out_dir)
    inputs = tsne_inputs(embed_dir, points, perplexity, seed, method, held_out)  # before reading
    (out_dir / f"{method}.json").unlink(missing_ok=True)  # the commit mark: written last
    parts = [(split, EmbeddingSplit.read(embed_dir, split).labelled()) for split in SPLITS
             if EmbeddingSplit.exists(embed_dir, split)]
    if not parts:
        raise AudiocpcError(f"no embeddings in {embed_dir} (run `audiocpc embed` first)")
    features = np.concatenate([part.features for _, part in parts])
    labels = np.array([label for _, part in parts for label in part.labels], dtype=object)
    files = [f for _, part in parts for f in part.files]
    split_names = np.array([split for split, part in parts for _ in range(len(part))], dtype=object)
    if held_out and not EmbeddingSplit.exists(embed_dir, "test"):
        split_names[np.array([f in held_out for f in files], dtype=bool)] = "test"
    chosen = split_balanced_subsample(split_names, labels, files, points, seed)
    started = time.perf_counter()
    coordinates = embed_2d(features[chosen], method, perplexity, seed)
    seconds = time.perf_counter() - started
    labels, split_names = labels[chosen], split_names[chosen]
    is_test = split_names == "test"
    classes = sort_classes(labels.tolist())
    name = embed_dir.name
    method_name = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}[method]
    title = (f"{name}: {method_name} of {len(chosen)} crops "
             f"({', '.join(f'{int((split_names == s).sum())} {s}' for s in SPLITS if (split_names == s).any())})")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = method
    scatter_plot(coordinates, labels, is_test, classes, title,
                 [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"])
    per_class = []
    if is_test.any():
        for label in classes:
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
            per_class.append(class_comparison_plot(
                coordinates, labels, is_test, label, out_dir / "classes" / f"{safe}.png",
                f"{name}: {label}, train vs test").name)
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["x", "y", "label", "split", "file"])
    for i, row in enumerate(chosen):
        x, y = coordinates[i]
        writer.writerow([f"{x:.4f}", f"{y:.4f}", labels[i], split_names[i], files[row]])
    atomic_write_text(out_dir / f"{stem}_points.csv", table.getvalue())
    info = {"features": name, "method": method, "points": int(len(chosen)), "requested_points": points,
            "perplexity": perplexity,
            "seed": seed, "seconds": round(seconds, 2), "classes": classes,
            "png": f"{stem}.png", "svg": f"{stem}.svg",
            "per_class": [f"classes/{p}" for p in per_class], "inputs": inputs}
    atomic_write_json(out_dir / f"{stem}.json", info)
    log.info("%s: %s of %d points in %.1f s -> %s", name, method_name, len(chosen), seconds,
             out_dir / f"{stem}.png")
    return info
