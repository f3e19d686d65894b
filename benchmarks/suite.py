"""Multi-task benchmark on real audio: does CPC pretrained on a task's own training audio
beat MFCC and the untrained model on held-out groups?

For every task built by `benchmarks/tasks/build.py` (spoken digits with held-out speakers,
instrument families with held-out GM programs, drum types with held-out kits, vowels with
held-out speakers/languages), this script
1. pretrains CPC on the task's training audio only (a link farm of the train files; no
   labels are used) for a fixed number of steps, printing steps and minutes;
2. embeds every file whole (the trained model and the same model at its seeded
   initialisation) and pools the frames of z, c or both by mean, mean+std or mean+max;
3. computes MFCC baselines (20 MFCCs per 25 ms frame, the same three poolings);
4. probes each feature set with a standardised logistic regression (the linear probe) and a
   HEAR-style MLP (one hidden layer of 1024, Adam, early stopping): the pooling, C and the
   learning rate are chosen by group-aware cross-validation on the training side only;
5. reports file-level accuracy on the test groups, and writes JSON + a Markdown table.

    .venv/bin/python benchmarks/suite.py --tasks results/tasks --out results/suite \\
        --preset clips --steps 600 --threads 2

Nothing is tuned on the test groups; the same preset and settings serve every task.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

POOLINGS = ("mean", "meanstd", "meanmax")
SOURCES = ("z", "c", "zc")


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def read_task(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def link_training_audio(task: Path, rows: list[dict[str, str]], target: Path) -> Path:
    """A folder of links to the training files only: what CPC may see."""
    target.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if row["split"] != "train":
            continue
        link = target / row["file"].replace("/", "__")
        if not link.exists():
            link.symlink_to((task / row["file"]).resolve())
    return target


def pool(frames: np.ndarray, how: str) -> np.ndarray:
    """[L, D] -> one row."""
    mean = frames.mean(axis=0)
    if how == "mean":
        return mean
    if how == "meanstd":
        return np.concatenate([mean, frames.std(axis=0)])
    return np.concatenate([mean, frames.max(axis=0)])


def model_features(run_dir: Path, waves: list[np.ndarray], sample_rate: int,
                   random_init: bool) -> dict[str, np.ndarray]:
    """{'z:mean': [files, D], ...} for every source x pooling, each file embedded whole."""
    import torch

    import audiocpc

    model = audiocpc.load(run_dir, device="cpu", random_init=random_init)
    minimum = model.crop_samples
    out: dict[str, list[np.ndarray]] = {f"{s}:{p}": [] for s in SOURCES for p in POOLINGS}
    with torch.inference_mode():
        for wave in waves:
            if wave.size < minimum:  # too short for the encoder: pad with silence
                wave = np.pad(wave, (0, minimum - wave.size))
            features = model.embed(wave, sample_rate)
            n = int(features.lengths[0])
            z, c = features.z[0, :n].numpy(), features.c[0, :n].numpy()
            frames = {"z": z, "c": c, "zc": np.concatenate([z, c], axis=1)}
            for source in SOURCES:
                for how in POOLINGS:
                    out[f"{source}:{how}"].append(pool(frames[source], how))
    return {key: np.stack(rows).astype(np.float32) for key, rows in out.items()}


def mfcc_features(waves: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
    from audiocpc.evaluation.mfcc import mfcc

    out: dict[str, list[np.ndarray]] = {f"mfcc:{p}": [] for p in POOLINGS}
    for wave in waves:
        frames = mfcc(np.pad(wave, (0, max(0, 800 - wave.size))), sample_rate)
        for how in POOLINGS:
            out[f"mfcc:{how}"].append(pool(frames, how))
    return {key: np.stack(rows).astype(np.float32) for key, rows in out.items()}


# ---------------------------------------------------------------- probes


def _linear(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))


def _mlp(lr: float, seed: int) -> Any:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # HEAR's downstream protocol: a shallow MLP of 1024 units, Adam, early stopping
    return make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(1024,), learning_rate_init=lr, early_stopping=True,
        validation_fraction=0.15, n_iter_no_change=15, max_iter=300, random_state=seed))


PROBES: dict[str, tuple[Callable[[float, int], Any], tuple[float, ...]]] = {
    "linear": (_linear, (0.1, 1.0)),
    "mlp": (_mlp, (1e-3, 1e-4)),
}


def group_cv_score(make: Callable[[float, int], Any], setting: float, x: np.ndarray, y: np.ndarray,
                   groups: np.ndarray, folds: int = 3) -> float:
    from sklearn.model_selection import GroupKFold

    folds = min(folds, len(set(groups)))
    scores = []
    for train, valid in GroupKFold(n_splits=folds).split(x, y, groups):
        if len(set(y[train])) < 2:
            continue
        model = make(setting, 0).fit(x[train], y[train])
        scores.append(float((model.predict(x[valid]) == y[valid]).mean()))
    return float(np.mean(scores)) if scores else 0.0


def probe(features: dict[str, np.ndarray], prefix: str, train: np.ndarray, test: np.ndarray,
          y: np.ndarray, groups: np.ndarray, probes: list[str]) -> dict[str, dict[str, Any]]:
    """The linear probe chooses the pooling (and source) and C by group-aware cross-validation
    on the training groups; the MLP probe takes that pooling and chooses its learning rate the
    same way. Each chosen probe is then scored once on the test groups."""
    make, settings = PROBES["linear"]
    best: tuple[float, str, float] = (-1.0, "", 0.0)
    for key in sorted(k for k in features if k.startswith(prefix)):
        for setting in settings:
            score = group_cv_score(make, setting, features[key][train], y[train], groups[train])
            if score > best[0]:
                best = (score, key, setting)
    key = best[1]
    out: dict[str, dict[str, Any]] = {}
    for name in probes:
        make, settings = PROBES[name]
        if name == "linear":
            score, setting = best[0], best[2]
        else:
            score, setting = max((group_cv_score(make, s, features[key][train], y[train],
                                                 groups[train]), s) for s in settings)
        model = make(setting, 0).fit(features[key][train], y[train])
        accuracy = float((model.predict(features[key][test]) == y[test]).mean())
        out[name] = {"chosen": key, "setting": setting, "cv_accuracy": score,
                     "test_accuracy": accuracy}
    return out


# ---------------------------------------------------------------- main


def pretrain(preset: str, data: Path, out: Path, name: str, steps: int, threads: int,
             extra: list[str]) -> tuple[Path, float, dict[str, Any]]:
    from audiocpc import load_config
    from audiocpc.training.trainer import train

    per_epoch = 25
    overrides = [f"output.dir={out}", f"output.name={name}", f"train.threads={threads}",
                 f"train.epochs={max(1, steps // per_epoch)}", f"train.steps_per_epoch={per_epoch}",
                 f"train.checkpoint_every={per_epoch}", *extra]
    config = load_config(preset, overrides)
    started = time.perf_counter()
    result = train(config, data, resume=True, progress=False)
    minutes = (time.perf_counter() - started) / 60
    history = result.history
    summary = {"steps": result.steps, "minutes_this_call": round(minutes, 2),
               "first_epoch_loss": history[0]["loss"] if history else None,
               "last_epoch_loss": history[-1]["loss"] if history else None,
               "last_val_loss": history[-1].get("val_loss") if history else None,
               "health": result.health}
    return result.run_dir, minutes, summary


def pretrain_pooled(tasks: list[Path], args: argparse.Namespace) -> tuple[Path, float, dict[str, Any]]:
    """One model pretrained on the training audio of every task at once (no test file of
    any task is seen): does more audio of other kinds help a small task?"""
    pooled = Path(args.out) / "pooled"
    files = 0
    for task in tasks:
        rows = read_task(task)
        files += sum(r["split"] == "train" for r in rows)
        link_training_audio(task, rows, pooled / "train_audio" / task.name)
    print(f"[pooled] pretraining {args.preset} for {args.steps} steps on {files} training files "
          f"of {len(tasks)} tasks", flush=True)
    run_dir, minutes, training = pretrain(args.preset, pooled / "train_audio", pooled, "cpc",
                                          args.steps, args.threads, args.set)
    print(f"[pooled] trained: {training}", flush=True)
    return run_dir, minutes, training


def run_task(task: Path, args: argparse.Namespace,
             pretrained: tuple[Path, float, dict[str, Any]] | None = None) -> dict[str, Any]:
    """`pretrained`: a model already trained (on every task's training audio) instead of
    pretraining on this task's own."""
    import soundfile as sf

    rows = read_task(task)
    info = json.loads((task / "task.json").read_text())
    sample_rate = int(info.get("sample_rate", 16000))
    name = task.name
    work = Path(args.out) / name
    if pretrained is None:
        train_audio = link_training_audio(task, rows, work / "train_audio")
        print(f"[{name}] pretraining {args.preset} for {args.steps} steps on "
              f"{sum(r['split'] == 'train' for r in rows)} training files", flush=True)
        run_dir, minutes, training = pretrain(args.preset, train_audio, work, "cpc", args.steps,
                                              args.threads, args.set)
        print(f"[{name}] trained: {training}", flush=True)
    else:
        run_dir, minutes, training = pretrained
    waves = [sf.read(task / r["file"], dtype="float32", always_2d=True)[0].mean(axis=1)
             for r in rows]
    classes = sorted({r["label"] for r in rows})
    y = np.array([classes.index(r["label"]) for r in rows])
    groups = np.array([r["group"] for r in rows])
    train = np.array([r["split"] == "train" for r in rows])
    test = ~train
    started = time.perf_counter()
    features: dict[str, np.ndarray] = {}
    features.update({f"cpc/{k}": v for k, v in model_features(run_dir, waves, sample_rate, False).items()})
    features.update({f"random/{k}": v for k, v in model_features(run_dir, waves, sample_rate, True).items()})
    features.update({f"mfcc/{k}": v for k, v in mfcc_features(waves, sample_rate).items()})
    embed_minutes = (time.perf_counter() - started) / 60
    results: dict[str, Any] = {}
    for family in ("cpc", "random", "mfcc"):
        chosen = probe(features, f"{family}/", train, test, y, groups, args.probes)
        for probe_name, result in chosen.items():
            results[f"{family}/{probe_name}"] = result
            print(f"[{name}] {family:6s} {probe_name:6s} {result}", flush=True)
    # every pooling of every family on the test groups with the linear probe at C = 0.1: the
    # evidence for the default pooling, not a choice made on the test set
    per_pooling = {}
    for key, x in features.items():
        model = _linear(0.1, 0).fit(x[train], y[train])
        per_pooling[key] = float((model.predict(x[test]) == y[test]).mean())
    return {"task": name, "kind": info.get("kind"), "classes": len(classes),
            "chance": float(np.bincount(y[test]).max() / test.sum()),
            "files": {"train": int(train.sum()), "test": int(test.sum())},
            "training": training, "pretrain_minutes": round(minutes, 2),
            "embed_minutes": round(embed_minutes, 2), "probes": results,
            "per_pooling_linear_C0.1": per_pooling}


def markdown(results: list[dict[str, Any]], args: argparse.Namespace, cpu: str) -> str:
    lines = [f"Preset `{args.preset}`, {args.steps} pretraining steps per task "
             f"(`{' '.join(sys.argv[1:])}`), {cpu}, torch threads {args.threads}.", "",
             "| task | kind | classes | chance | probe | CPC | random-init | MFCC | CPC - MFCC | CPC - random |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for probe_name in args.probes:
            cpc = r["probes"][f"cpc/{probe_name}"]["test_accuracy"]
            rnd = r["probes"][f"random/{probe_name}"]["test_accuracy"]
            mf = r["probes"][f"mfcc/{probe_name}"]["test_accuracy"]
            lines.append(f"| {r['task']} | {r['kind']} | {r['classes']} | {r['chance']:.2f} | "
                         f"{probe_name} | {cpc:.3f} | {rnd:.3f} | {mf:.3f} | {cpc - mf:+.3f} | "
                         f"{cpc - rnd:+.3f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], probes: list[str], path: Path) -> Path:
    """Grouped bars: test accuracy of CPC, random-init and MFCC per task and probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = [("cpc", "CPC", "#1f77b4"), ("random", "random-init", "#aaaaaa"), ("mfcc", "MFCC", "#ff7f0e")]
    labels = [f"{r['task']}\n{p}" for r in results for p in probes]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(labels)), 4))
    for i, (key, name, colour) in enumerate(families):
        values = [r["probes"][f"{key}/{p}"]["test_accuracy"] for r in results for p in probes]
        ax.bar(x + (i - 1) * 0.27, values, 0.27, label=name, color=colour)
    chance = [r["chance"] for r in results for _ in probes]
    ax.scatter(x, chance, marker="_", s=300, color="black", label="chance (largest class)")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("test accuracy (held-out groups)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="results/tasks", help="folder of built tasks")
    parser.add_argument("--only", nargs="*", default=None, help="task names (default: all)")
    parser.add_argument("--out", default="results/suite")
    parser.add_argument("--preset", default="clips")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probes", nargs="*", default=["linear", "mlp"], choices=list(PROBES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the preset (repeatable)")
    parser.add_argument("--pretrain-on", choices=["task", "all"], default="task",
                        help="task: each task's own training audio (default); all: one model on "
                        "the training audio of every built task (never a test file)")
    parser.add_argument("--plot", metavar="SUITE_JSON",
                        help="only draw the plot of an earlier run's suite.json (next to it)")
    args = parser.parse_args(argv)
    if args.plot:
        report = json.loads(Path(args.plot).read_text())
        print(plot(report["results"], args.probes, Path(args.plot).with_name("suite.png")))
        return 0
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    threadpool_limits(args.threads)
    every_task = sorted(p.parent for p in Path(args.tasks).glob("*/manifest.csv"))
    tasks = [t for t in every_task if t.name in args.only] if args.only else every_task
    if not tasks:
        print(f"no tasks in {args.tasks}: build them with benchmarks/tasks/build.py", file=sys.stderr)
        return 2
    cpu = _cpu_name()
    pretrained = pretrain_pooled(every_task, args) if args.pretrain_on == "all" else None
    results = [run_task(task, args, pretrained) for task in tasks]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"preset": args.preset, "steps": args.steps, "pretrain_on": args.pretrain_on,
              "cpu": cpu, "argv": sys.argv[1:],
              "results": results}
    (out / "suite.json").write_text(json.dumps(report, indent=2))
    table = markdown(results, args, cpu)
    (out / "suite.md").write_text(table)
    plot(results, args.probes, out / "suite.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
