"""How long one 2-D t-SNE map takes: `python benchmarks/tsne_speed.py --points 90000`.

Target: 90,000 points of 256-dimensional embeddings (the reference's GTZAN train set:
1,000 files x 90 crops) in under 2 minutes on a 2-core machine. The data are clustered
Gaussians, 10 classes, so the map has real structure to find.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from audiocpc.evaluation.tsne import embed_2d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=90_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.classes, args.dim)) * 2
    labels = rng.integers(0, args.classes, size=args.points)
    features = (centres[labels] + rng.normal(size=(args.points, args.dim))).astype(np.float32)
    started = time.perf_counter()
    coordinates = embed_2d(features, "tsne", perplexity=30, seed=0)
    seconds = time.perf_counter() - started
    print(f"t-SNE of {args.points} x {args.dim} points: {seconds:.1f} s "
          f"(target for 90,000: < 120 s); output {coordinates.shape}")


if __name__ == "__main__":
    main()
