"""Sanity-check built tasks and give a quick MFCC + logistic-regression baseline.

    .venv/bin/python benchmarks/tasks/check.py --tasks results/tasks [--only NAME ...]

Per task: class counts per split, durations, silent / clipped files, that no
group is in both splits, and the test accuracy of a logistic regression on the
per-file mean+std of 20 MFCCs (single thread).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from scipy.fft import dct  # noqa: E402

try:
    from .common import SAMPLE_RATE, read_manifest
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import SAMPLE_RATE, read_manifest

N_FFT, HOP, WIN, N_MELS, N_MFCC = 512, 160, 400, 40, 20


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    mels = np.linspace(hz_to_mel(20.0), hz_to_mel(sr / 2), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((n_mels, bins.size))
    for i in range(n_mels):
        lo, mid, hi = hz[i], hz[i + 1], hz[i + 2]
        fb[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return fb


FB = mel_filterbank()


def mfcc(audio: np.ndarray) -> np.ndarray:
    """(frames, 20) MFCCs: 25 ms Hann window, 10 ms hop, 40 mel bands."""
    if audio.size < WIN:
        audio = np.pad(audio, (0, WIN - audio.size))
    n = 1 + (audio.size - WIN) // HOP
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    frames = audio[idx] * np.hanning(WIN)
    power = np.abs(np.fft.rfft(frames, N_FFT)) ** 2
    return dct(np.log(power @ FB.T + 1e-10), type=2, norm="ortho", axis=1)[:, :N_MFCC]


def check_task(task_dir: Path) -> dict:
    info = json.loads((task_dir / "task.json").read_text())
    rows = read_manifest(task_dir)
    groups = {s: {r["group"] for r in rows if r["split"] == s} for s in ("train", "test")}
    assert not groups["train"] & groups["test"], "a group is in both splits"
    feats, durs, silent, clipped = [], [], 0, 0
    for r in rows:
        audio, sr = sf.read(str(task_dir / r["file"]), dtype="float32")
        assert sr == SAMPLE_RATE and audio.ndim == 1, r["file"]
        durs.append(audio.size / sr)
        peak = float(np.abs(audio).max())
        silent += float(np.sqrt(np.mean(audio ** 2))) < 1e-3
        clipped += float(np.mean(np.abs(audio) >= 0.995 * peak)) > 0.005  # flat-topped
        m = mfcc(audio)
        feats.append(np.concatenate([m.mean(0), m.std(0)]))
    x = np.asarray(feats)
    y = np.asarray([r["label"] for r in rows], dtype=object)
    tr = np.asarray([r["split"] == "train" for r in rows])

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(x[tr], y[tr])
    acc = float(np.mean(clf.predict(x[~tr]) == y[~tr]))
    train_acc = float(np.mean(clf.predict(x[tr]) == y[tr]))
    majority = Counter(y[~tr]).most_common(1)[0][1] / (~tr).sum()
    return {
        "name": info["name"], "kind": info["kind"], "classes": info["num_classes"],
        "train": int(tr.sum()), "test": int((~tr).sum()),
        "groups": f"{len(groups['train'])}/{len(groups['test'])}",
        "minutes": round(sum(durs) / 60, 1),
        "dur_s": f"{min(durs):.2f}/{np.median(durs):.2f}/{max(durs):.2f}",
        "silent": silent, "clipped": clipped,
        "mfcc_lr_acc": round(acc, 3), "train_acc": round(train_acc, 3),
        "chance": round(1 / info["num_classes"], 3), "majority": round(float(majority), 3),
        "class_counts": {s: dict(sorted(Counter(y[tr if s == "train" else ~tr]).items())) for s in ("train", "test")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=Path, default=Path("results/tasks"))
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    names = args.only or sorted(p.name for p in args.tasks.iterdir() if (p / "task.json").exists())
    results = []
    for name in names:
        res = check_task(args.tasks / name)
        results.append(res)
        print(f"{name}: class counts {res['class_counts']}")
    cols = ["name", "kind", "classes", "train", "test", "groups", "minutes", "dur_s", "silent", "clipped",
            "mfcc_lr_acc", "train_acc", "chance", "majority"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in results)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in results:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
