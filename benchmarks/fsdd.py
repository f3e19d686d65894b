"""An honest benchmark on the Free Spoken Digit Dataset (FSDD): CPC vs MFCC vs random-init.

    .venv/bin/python benchmarks/fsdd.py --data ../shared/data/fsdd --out results/fsdd \
        --budget-minutes 15 --threads 2 --docs docs

FSDD: `{digit}_{speaker}_{index}.wav`, 8 kHz, 6 speakers x 10 digits x 50 takes. Two splits:

- official: takes 0-4 are the test part, 5-49 the training part;
- held-out speaker: every file of `yweweler` is the test part, the other 5 speakers train.

Pretraining sees only audio that is in the training part of BOTH splits (takes 5-49 of the
five speakers other than `yweweler`), so one model is evaluated honestly on both; no label
is used until the probes. Every file is embedded whole (frame-level z and c, pooled over the
file). The probe is always standardised features + logistic regression (audiocpc.evaluation.probe).
Its hyperparameters (the pooling of the frames, the regularisation C) are chosen on a
validation part of the training part only: takes 5-9 for the official split (fit on
10-49), speaker `george` for the held-out-speaker split (fit on the other four). The chosen
settings are then refit on the whole training part and scored once on the test part.

Rows: CPC (trained), random-init (the same architecture and configuration, untrained) and
MFCC (13 coefficients, mean+std over the file = 26 dims, the issue's baseline; and MFCC
with the same pooling choices as CPC). Labels: digit (both splits) and speaker (official
split only: a held-out speaker cannot be classified).

Pretraining runs under a wall-clock budget (`--budget-minutes`, enforced through
`train.max_minutes`), in chunks ending at 25 %, 50 % and 100 % of it; the digit probes are
run after each chunk, so the report shows whether more training helps (`--steps` with
`--budget-minutes`: whichever is reached first). `--quick` runs a few hundred files for a
fixed number of steps (the test suite's mode).

    fsdd.py render OUT [--docs DIR] [--note NOTE.md] [--beside OUT2 TITLE]
    fsdd.py insert OUT2 TITLE --docs DIR [--headline NAME] [--short NAME] [--note NOTE.md]

`render` writes results.md again from OUT/results.json; `insert` adds a second run's section
(beside the page's headline table) to an existing DIR/results.md whose first run's
results.json is not at hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

log = logging.getLogger("audiocpc.fsdd")

HELD_OUT_SPEAKER = "yweweler"
VALIDATION_SPEAKER = "george"  # the held-out-speaker split's validation speaker (a training speaker)
FILE_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav$")
C_GRID = (0.01, 0.1, 1.0)
MFCC_COEFFICIENTS = 13
FRACTIONS = (0.25, 0.5, 1.0)
# Tasks: (split, label). Speaker identity cannot be probed on a held-out speaker.
TASKS = (("official", "digit"), ("speaker", "digit"), ("official", "speaker"))
SPLIT_TITLES = {"official": "official split (takes 0-4 test)",
                "speaker": f"held-out speaker ({HELD_OUT_SPEAKER})"}


# ---------------------------------------------------------------- data and splits


@dataclass(frozen=True)
class Clip:
    path: Path
    digit: str
    speaker: str
    index: int


def read_fsdd(folder: Path) -> list[Clip]:
    clips = []
    for path in sorted(folder.glob("*.wav")):
        match = FILE_NAME.match(path.name)
        if match:
            clips.append(Clip(path, match["digit"], match["speaker"], int(match["index"])))
    if not clips:
        raise SystemExit(f"no FSDD files ({{digit}}_{{speaker}}_{{index}}.wav) in {folder}")
    return clips


def quick_subset(clips: list[Clip]) -> list[Clip]:
    """240 files with every part of both splits: take 0 (test), 5 (validation), 10-11
    (probe fitting) of every speaker and digit."""
    return [c for c in clips if c.index in (0, 5, 10, 11)]


def split_parts(clips: Sequence[Clip], split: str) -> dict[str, np.ndarray]:
    """Boolean masks: train (= fit + validation) and test; fit and validation for choosing."""
    index = np.array([c.index for c in clips])
    speaker = np.array([c.speaker for c in clips])
    if split == "official":
        test = index < 5
        validation = (index >= 5) & (index < 10)
    else:
        test = speaker == HELD_OUT_SPEAKER
        validation = speaker == VALIDATION_SPEAKER
    train = ~test
    return {"train": train, "test": test, "validation": validation, "fit": train & ~validation}


def pretraining_clips(clips: Sequence[Clip]) -> list[Clip]:
    """Audio in the training part of both splits."""
    return [c for c in clips if c.index >= 5 and c.speaker != HELD_OUT_SPEAKER]


def link_folder(clips: Sequence[Clip], folder: Path) -> Path:
    """A folder of symbolic links to the pretraining files (no audio is copied)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for clip in clips:
        (folder / clip.path.name).symlink_to(clip.path.resolve())
    return folder


# ---------------------------------------------------------------- frame features and pooling

Frames = dict[str, np.ndarray]  # stream name ("z", "c", "mfcc") -> [frames, dim]


def load_waves(clips: Sequence[Clip], sample_rate: int) -> list[np.ndarray]:
    from audiocpc.data.cache import AudioCache

    cache = AudioCache(None)
    return [np.asarray(cache.load(c.path, sample_rate), dtype=np.float32) for c in clips]


def cpc_frames(embedder: Any, waves: Sequence[np.ndarray], batch_size: int = 64) -> list[Frames]:
    """Frame-level z and c of whole files (batched by length; padding frames dropped).
    Files shorter than the encoder's receptive field would be zero-padded up to it; every
    FSDD clip (>= 0.14 s) is far longer."""
    rate = embedder.sample_rate
    shortest = receptive_field(embedder.model.encoder)
    out: list[Optional[Frames]] = [None] * len(waves)
    order = np.argsort([w.size for w in waves])
    for first in range(0, len(order), batch_size):
        chunk = order[first : first + batch_size]
        batch = [w if w.size >= shortest else np.pad(w, (0, shortest - w.size))
                 for w in (waves[i] for i in chunk)]
        features = embedder.embed(batch, rate)
        for row, i in enumerate(chunk):
            length = max(1, int(features.lengths[row]))
            out[i] = {"z": features.z[row, :length].numpy(), "c": features.c[row, :length].numpy()}
    return out  # type: ignore[return-value]


def receptive_field(encoder: Any) -> int:
    kernels, strides = getattr(encoder, "kernels", [1]), getattr(encoder, "strides", [1])
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (k - 1) * jump
        jump *= s
    return field


def mfcc_frames(waves: Sequence[np.ndarray], sample_rate: int) -> list[Frames]:
    from audiocpc.evaluation.mfcc import mfcc

    return [{"mfcc": mfcc(w, sample_rate, n_mfcc=MFCC_COEFFICIENTS)} for w in waves]


def _statistics(frames: np.ndarray, stats: str) -> np.ndarray:
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    if stats == "mean":
        return mean
    if stats == "meanstd":
        return np.concatenate([mean, std])
    # meanstd_seg3: the means of the file's three thirds (the order of the sounds) + std
    thirds = np.array_split(np.arange(len(frames)), 3)
    parts = [frames[t].mean(axis=0) if len(t) else mean for t in thirds]
    return np.concatenate(parts + [std])


@dataclass(frozen=True)
class Pooling:
    streams: tuple[str, ...]
    stats: str  # mean | meanstd | meanstd_seg3

    @property
    def name(self) -> str:
        return "+".join(self.streams) + ":" + self.stats

    def __call__(self, files: Sequence[Frames]) -> np.ndarray:
        return np.stack([np.concatenate([_statistics(f[s], self.stats) for s in self.streams])
                         for f in files]).astype(np.float32)


# Wider poolings (z+c thirds, 1024 dims for 128-dim z and c) made logistic regression
# crawl (more dimensions than validation-fit files) without helping on validation.
CPC_POOLINGS = tuple(Pooling(streams, stats) for streams, stats in (
    (("c",), "mean"), (("c",), "meanstd"), (("z",), "meanstd"), (("z",), "meanstd_seg3"),
    (("z", "c"), "meanstd")))
MFCC_POOLINGS = (Pooling(("mfcc",), "meanstd"), Pooling(("mfcc",), "meanstd_seg3"))
MFCC_BASELINE = Pooling(("mfcc",), "meanstd")  # the 26-dim baseline


# ---------------------------------------------------------------- probes


def probe_accuracy(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray,
                   test_y: Sequence[str], c: float) -> tuple[float, Any]:
    from audiocpc.evaluation.probe import ProbeSettings, fit_probe

    probe = fit_probe(train_x, list(train_y), ProbeSettings(kind="logreg", c=c))
    predicted = np.array(probe.classes)[probe.predict_proba(test_x).argmax(axis=1)]
    return float((predicted == np.asarray(test_y)).mean()), predicted


def evaluate(files: Sequence[Frames], clips: Sequence[Clip], poolings: Sequence[Pooling],
             tasks: Sequence[tuple[str, str]] = TASKS, c_grid: Sequence[float] = C_GRID
             ) -> dict[str, dict[str, Any]]:
    """For each task: choose (pooling, C) on validation, refit on the training part, test."""
    pooled = {p.name: p(files) for p in poolings}
    results = {}
    for split, label in tasks:
        parts = split_parts(clips, split)
        y = np.array([getattr(c, label) for c in clips])
        scores = []
        for pooling in poolings:
            x = pooled[pooling.name]
            for c in c_grid:
                accuracy, _ = probe_accuracy(x[parts["fit"]], y[parts["fit"]],
                                             x[parts["validation"]], y[parts["validation"]], c)
                scores.append((accuracy, pooling.name, c))
        best = max(scores, key=lambda s: s[0])  # first of equals: the simpler pooling, smaller C
        x = pooled[best[1]]
        accuracy, predicted = probe_accuracy(x[parts["train"]], y[parts["train"]],
                                             x[parts["test"]], y[parts["test"]], best[2])
        results[f"{split}/{label}"] = {
            "split": split, "label": label, "test_accuracy": accuracy,
            "validation_accuracy": best[0], "pooling": best[1], "c": best[2],
            "dim": int(x.shape[1]), "train_files": int(parts["train"].sum()),
            "test_files": int(parts["test"].sum()),
            "truth": y[parts["test"]].tolist(), "predicted": predicted.tolist(),
            "validation_grid": [{"accuracy": a, "pooling": p, "c": c} for a, p, c in scores],
        }
    return results


# ---------------------------------------------------------------- pretraining


@dataclass
class Checkpoint:
    fraction: float
    steps: int
    train_seconds: float
    run_dir: Path


def pretrain(config: Any, audio: Path, out: Path, budget_minutes: Optional[float],
             total_steps: Optional[int], fractions: Sequence[float],
             on_checkpoint: Callable[[Checkpoint], None]) -> tuple[Path, float]:
    """Train in chunks that end at each fraction of the budget (minutes of training-call
    wall time, or steps); after each, the checkpoint is copied to `snapshots/` and handed
    to `on_checkpoint`. Returns (run folder, training seconds)."""
    from audiocpc.training.trainer import train

    trained_seconds = 0.0
    run_dir = None
    for fraction in fractions:
        overrides: dict[str, Any] = {}
        if total_steps is not None:
            epochs = fraction * total_steps / config.train.steps_per_epoch
            overrides["train.epochs"] = max(1, int(round(epochs)))
        if budget_minutes is not None:  # with steps too: whichever comes first
            remaining = fraction * budget_minutes - trained_seconds / 60
            overrides["train.max_minutes"] = max(remaining, 1e-3)
        chunk = config.model_copy(deep=True)
        for key, value in overrides.items():
            section, name = key.split(".")
            setattr(getattr(chunk, section), name, value)
        started = time.perf_counter()
        result = train(chunk, audio, resume=True, progress=False)
        trained_seconds += time.perf_counter() - started
        run_dir = result.run_dir
        snapshot = out / "snapshots" / f"p{int(round(fraction * 100)):03d}"
        snapshot.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / "checkpoint.pt", snapshot / "checkpoint.pt")
        log.info("pretraining: %d steps after %.1f min (%.0f %% of the budget)", result.steps,
                 trained_seconds / 60, fraction * 100)
        on_checkpoint(Checkpoint(fraction, result.steps, trained_seconds, snapshot))
    assert run_dir is not None
    return run_dir, trained_seconds


# ---------------------------------------------------------------- report


def machine_description(threads: int) -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores_visible": os.cpu_count(), "torch_threads": threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


ROWS = (("cpc", "CPC (trained)"), ("random", "random-init CPC"), ("mfcc_baseline", "MFCC mean+std (26 dims)"),
        ("mfcc_pooled", "MFCC, pooling chosen like CPC's"))


def table(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (features, label): accuracy on each split (None where not defined)."""
    rows = []
    for label in ("digit", "speaker"):
        for key, title in ROWS:
            cells = {split: results[key].get(f"{split}/{label}", {}).get("test_accuracy")
                     for split in ("official", "speaker")}
            rows.append({"features": key, "title": title, "label": label, **cells})
    return rows


def table_text(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'features':34} {'label':8} {'official':>10} {'held-out spk':>13}"]
    for row in rows:
        lines.append(f"{row['title']:34} {row['label']:8} {percent(row['official']):>10} "
                     f"{percent(row['speaker']):>13}")
    return "\n".join(lines)


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| features | label | official split | held-out speaker |", "|---|---|---:|---:|"]
    for row in rows:
        speaker = percent(row["speaker"]) if row["label"] == "digit" else "n/a (unseen speaker)"
        lines.append(f"| {row['title']} | {row['label']} | {percent(row['official'])} | {speaker} |")
    return "\n".join(lines)


def verdicts(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    cpc, mfcc, rnd = results["cpc"], results["mfcc_baseline"], results["random"]
    off = cpc["official/digit"]["test_accuracy"]
    held = cpc["speaker/digit"]["test_accuracy"]
    checks = [
        ("official split, digits: CPC >= 95 %", off >= 0.95, f"CPC {percent(off)}"),
        ("official split, digits: CPC above MFCC mean+std", off > mfcc["official/digit"]["test_accuracy"],
         f"CPC {percent(off)} vs MFCC {percent(mfcc['official/digit']['test_accuracy'])}"),
        ("official split, digits: CPC above the peer CPC_audio (85-91 %)", off > 0.907,
         f"CPC {percent(off)}"),
        ("held-out speaker, digits: CPC >= 70 %", held >= 0.70, f"CPC {percent(held)}"),
        ("held-out speaker, digits: CPC above MFCC mean+std", held > mfcc["speaker/digit"]["test_accuracy"],
         f"CPC {percent(held)} vs MFCC {percent(mfcc['speaker/digit']['test_accuracy'])}"),
    ]
    for key in ("official/digit", "speaker/digit", "official/speaker"):
        gap = cpc[key]["test_accuracy"] - rnd[key]["test_accuracy"]
        checks.append((f"{key}: CPC beats random-init by >= 20 points", gap >= 0.20,
                        f"{100 * gap:+.1f} points ({percent(cpc[key]['test_accuracy'])} vs "
                        f"{percent(rnd[key]['test_accuracy'])})"))
    return checks


def plots(report: dict[str, Any], frames: dict[str, list[Frames]], clips: Sequence[Clip],
          run_dir: Path, folder: Path) -> dict[str, str]:
    """Loss/accuracy curves, probe accuracy over training, confusion matrices, t-SNE."""
    from audiocpc.evaluation.plots import _pyplot, confusion_matrix_plot, cpc_curves_plot, scatter_plot
    from audiocpc.evaluation.tsne import embed_2d
    from sklearn.metrics import confusion_matrix

    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    if cpc_curves_plot(run_dir, folder / "fsdd_cpc_training.png"):
        written["training"] = "fsdd_cpc_training.png"
    plt = _pyplot()
    progress = report["progress"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, title in (("official/digit", "digits, official split"),
                       ("speaker/digit", f"digits, held-out speaker")):
        ax.plot([p["minutes"] for p in progress], [100 * p["cpc"][key] for p in progress],
                marker="o", label=f"CPC, {title}")
        ax.axhline(100 * report["results"]["mfcc_baseline"][key]["test_accuracy"], linestyle="--",
                   color=ax.lines[-1].get_color(), alpha=0.6, label=f"MFCC, {title}")
    ax.set_xlabel("pretraining minutes")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "fsdd_probe_vs_training.png", dpi=100)
    plt.close(fig)
    written["progress"] = "fsdd_probe_vs_training.png"
    digits = [str(d) for d in range(10)]
    for key, name in (("official/digit", "official"), ("speaker/digit", "heldout")):
        cell = report["results"]["cpc"][key]
        matrix = confusion_matrix(cell["truth"], cell["predicted"], labels=digits)
        confusion_matrix_plot(matrix, digits, folder / f"fsdd_confusion_{name}.png",
                              f"CPC digits, {SPLIT_TITLES[cell['split']]}: "
                              f"{percent(cell['test_accuracy'])}")
        written[f"confusion_{name}"] = f"fsdd_confusion_{name}.png"
    test = split_parts(clips, "official")["test"]
    digit = np.array([c.digit for c in clips])[test]
    for key in ("cpc", "mfcc_baseline"):
        cell = report["results"][key]["official/digit"]
        pooling = next(p for p in CPC_POOLINGS + MFCC_POOLINGS if p.name == cell["pooling"])
        source = frames["mfcc" if key.startswith("mfcc") else key]
        x = pooling([f for f, t in zip(source, test) if t])
        points = embed_2d(x, "tsne", perplexity=30.0, seed=0)
        title = (f"{dict(ROWS)[key]} ({cell['pooling']}): t-SNE of the {len(x)} official "
                 "test files, by digit")
        scatter_plot(points, digit, np.ones(len(x), dtype=bool), digits, title,  # all test: large marks
                     [folder / f"fsdd_tsne_{key}.png"])
        written[f"tsne_{key}"] = f"fsdd_tsne_{key}.png"
    return written


def data_use(r: dict[str, Any]) -> str:
    """How many pretraining files were used: skipped as too short, or joined (data.join)."""
    q = r.get("sequences")
    if q:
        return (f"joined (`data.join={q['join']}`, gap {q['gap_seconds']:g} s) into {q['count']} "
                f"sequences of {q['shortest_seconds']:.1f}-{q['longest_seconds']:.1f} s: "
                f"{r['pretraining_used']} files used, {r['skipped_short']} skipped")
    return (f"{r['skipped_short']} of which are shorter than the {r['crop_seconds']} s crop and "
            "skipped from pretraining")


def markdown(report: dict[str, Any], images: dict[str, str]) -> str:
    r = report
    rows = table_markdown(table(r["results"]))
    progress = "\n".join(
        f"| {p['fraction'] * 100:.0f} % | {p['steps']} | {p['minutes']:.1f} | "
        f"{percent(p['cpc']['official/digit'])} | {percent(p['cpc']['speaker/digit'])} |"
        for p in r["progress"])
    chosen = "\n".join(
        f"| {dict(ROWS)[key]} | {cell['split']} / {cell['label']} | `{cell['pooling']}` | "
        f"{cell['c']} | {cell['dim']} | {percent(cell['validation_accuracy'])} |"
        for key in ("cpc", "random", "mfcc_pooled") for cell in r["results"][key].values())
    checks = "\n".join(f"| {name} | {'met' if ok else '**missed**'} | {detail} |"
                       for name, ok, detail in verdicts(r["results"]))
    load = r["load_average"]
    h = r["history"][-1] if r["history"] else {}
    acc = ", ".join(f"k={k[5:]}: {v:.2f}" for k, v in h.items() if k.startswith("acc_k"))
    return f"""# FSDD benchmark: CPC vs MFCC vs random-init

Generated by `benchmarks/fsdd.py` on {r['date']}. Command (from the repository root):

```bash
{r['command']}
```

- **Machine:** {r['machine']['cpu']}, {r['machine']['cores_visible']} cores visible, torch
  {r['machine']['torch']} with {r['machine']['torch_threads']} threads, {r['machine']['system']}.
  Load average (1 min) at start {load['start']:.1f}, at the end {load['end']:.1f}
  ({'other processes were competing for the cores' if load['start'] > 1.0 or load['end'] > r['machine']['torch_threads'] + 1.0 else 'no significant load besides this run'}).
- **Wall time:** {r['seconds']['total'] / 60:.1f} min in all: pretraining {r['seconds']['pretraining'] / 60:.1f} min
  ({r['steps']} steps, budget {r['budget']}), embedding and probes the rest.
- **Data:** {r['files']} files of `{r['data']}`; pretraining on {r['pretraining_files']} of them
  (takes 5-49 of the five speakers other than `{HELD_OUT_SPEAKER}`: the training part of both
  splits), {data_use(r)}. Every file is embedded whole for the probes.
- **Model:** preset `{r['preset']}` (`src/audiocpc/presets/{r['preset']}.yaml`){', overrides ' + ', '.join(f'`{o}`' for o in r['overrides']) if r['overrides'] else ''}.
  Final CPC loss {h.get('loss', float('nan')):.3f}, per-step accuracy {acc}.

## Results (test accuracy, standardised features + logistic regression)

{rows}

Speaker identity is probed on the official split only (6 speakers); on the held-out-speaker
split the test speaker is not among the classes. Chance: 10 % (digits), 16.7 % (speakers).

## Targets

| target | verdict | numbers |
|---|---|---|
{checks}

## Does more pretraining help?

Digit probes (CPC, the same selection on validation) after each part of the budget:

| budget | steps | minutes | official split | held-out speaker |
|---:|---:|---:|---:|---:|
{progress}

![probe accuracy vs pretraining time]({images.get('progress', '')})

![CPC loss and per-step accuracy]({images.get('training', '')})

## Plots

![confusion matrix, held-out speaker]({images.get('confusion_heldout', '')})
![confusion matrix, official split]({images.get('confusion_official', '')})

![t-SNE of CPC test embeddings]({images.get('tsne_cpc', '')})
![t-SNE of MFCC test embeddings]({images.get('tsne_mfcc_baseline', '')})

## How the numbers were obtained

- Splits: official = takes 0-4 test, 5-49 train; held-out speaker = all of `{HELD_OUT_SPEAKER}` test,
  the other five speakers train. Pretraining used only takes 5-49 of the five other speakers.
- Hyperparameters of each probe (frame pooling and logistic-regression C in {list(C_GRID)}) were
  chosen on validation inside the training part: takes 5-9 (fit on 10-49) for the official split,
  speaker `{VALIDATION_SPEAKER}` (fit on the other four) for the held-out-speaker split; then
  refit on the whole training part and scored once on the test part. Poolings: mean or
  mean+std over the file of z (encoder), c (context) or both, or the means of the file's three
  thirds plus std (`:meanstd_seg3`, which keeps the order of the sounds). MFCC gets the same
  choice in the row "MFCC, pooling chosen like CPC's"; "MFCC mean+std" is the fixed 26-dim baseline.
- Random-init: the same architecture and configuration with the seeded initial weights of the run.
- The model configuration (preset `{r['preset']}`) was chosen by comparing a few short runs on
  the same validation parts (see the closing note); the test parts were only used for this report.

Chosen probe settings:

| features | split / label | pooling | C | dims | validation accuracy |
|---|---|---|---:|---:|---:|
{chosen}

{r.get('beside', '')}
{r.get('note', '')}
"""


# ---------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="the FSDD recordings folder")
    parser.add_argument("--out", required=True, type=Path, help="folder for the run, snapshots, results")
    parser.add_argument("--preset", default="fsdd")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="wall-clock limit of pretraining (default 15 without --steps; "
                        "with --steps, whichever is reached first)")
    parser.add_argument("--steps", type=int, default=None,
                        help="pretrain for this many steps (default: until the time budget)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--fractions", default=",".join(f"{f:g}" for f in FRACTIONS),
                        help="parts of the budget after which the digit probes run, e.g. 1 "
                        "for the end only (each costs one embedding of every file; default "
                        "0.25,0.5,1)")
    parser.add_argument("--quick", action="store_true",
                        help="240 files, 30 steps, plots only with --docs (the test suite's mode)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="also write results.md and the plots into this folder (e.g. docs)")
    parser.add_argument("--note", type=Path, default=None,
                        help="a Markdown file appended to results.md as the closing note")
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier pretraining run in OUT (needed to run again)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    from audiocpc import load_config

    clips = read_fsdd(args.data)
    if args.quick:
        clips = quick_subset(clips)
        args.steps = args.steps or 30
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(args.preset, args.overrides + [f"output.dir={out}", "output.name=cpc",
                                                        "train.epochs=100000"])
    if args.quick:  # a smaller batch: tens of steps in seconds
        config.train.steps_per_epoch = 5
        config.train.checkpoint_every = 5
        config.data.N = 8
        config.loss.negatives.count = 16
    previous = out / "cpc" / "cpc"
    if previous.exists() and not args.force:  # its steps would not count against the budget
        raise SystemExit(f"{previous} holds an earlier pretraining run; pass --force to start over")
    shutil.rmtree(previous, ignore_errors=True)
    audio = link_folder(pretraining_clips(clips), out / "pretrain_audio")
    sr = config.data.sample_rate
    waves = load_waves(clips, sr)
    pretraining = set(pretraining_clips(clips))

    from audiocpc.api import load

    progress: list[dict[str, Any]] = []
    last_frames: dict[str, list[Frames]] = {}

    poolings = CPC_POOLINGS[1:3] if args.quick else CPC_POOLINGS  # quick: c:meanstd, z:meanstd
    c_grid = (0.1,) if args.quick else C_GRID
    final: dict[str, dict[str, Any]] = {}

    def probe_snapshot(checkpoint: Checkpoint) -> None:
        embedder = load(checkpoint.run_dir, device="cpu")
        last_frames["cpc"] = cpc_frames(embedder, waves)
        last = checkpoint.fraction == fractions[-1]  # the last: every task, reported in the table
        scores = evaluate(last_frames["cpc"], clips, poolings, TASKS if last else TASKS[:2], c_grid)
        if last:
            final.update(scores)
        progress.append({"fraction": checkpoint.fraction, "steps": checkpoint.steps,
                         "minutes": checkpoint.train_seconds / 60,
                         "cpc": {k: v["test_accuracy"] for k, v in scores.items()},
                         "pooling": {k: v["pooling"] for k, v in scores.items()}})
        log.info("after %d steps: digits %s official, %s held-out speaker", checkpoint.steps,
                 percent(progress[-1]["cpc"]["official/digit"]),
                 percent(progress[-1]["cpc"]["speaker/digit"]))

    fractions = sorted(float(f) for f in args.fractions.split(","))
    if not fractions or fractions[-1] != 1.0 or fractions[0] <= 0:
        raise SystemExit(f"--fractions {args.fractions}: give parts of the budget in (0, 1] ending with 1")
    if args.steps is None and args.budget_minutes is None:
        args.budget_minutes = 15.0
    budget = args.budget_minutes
    run_dir, train_seconds = pretrain(config, audio, out, budget, args.steps,
                                      fractions, probe_snapshot)
    frames = {"cpc": last_frames["cpc"],
              "random": cpc_frames(load(run_dir, device="cpu", random_init=True), waves),
              "mfcc": mfcc_frames(waves, sr)}
    results = {"cpc": final,
               "random": evaluate(frames["random"], clips, poolings, c_grid=c_grid),
               "mfcc_baseline": evaluate(frames["mfcc"], clips, (MFCC_BASELINE,), c_grid=c_grid),
               "mfcc_pooled": evaluate(frames["mfcc"], clips, MFCC_POOLINGS, c_grid=c_grid)}
    from audiocpc.evaluation.plots import read_history

    # what pretraining used, from the run's own data report (with data.join, short clips
    # are joined instead of skipped)
    used = json.loads((run_dir / "data_report.json").read_text())["summary"]
    skipped = used["too_short"]

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": shlex.join(["python", "benchmarks/fsdd.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_description(args.threads),
        "data": str(args.data), "files": len(clips),
        "pretraining_files": len(pretraining), "skipped_short": skipped,
        "pretraining_used": used["usable"], "sequences": used.get("sequences"),
        "crop_seconds": config.data.full_duration, "preset": args.preset,
        "overrides": args.overrides,
        "budget": " or ".join(([f"{args.steps} steps"] if args.steps else [])
                              + ([f"{budget:g} min"] if budget is not None else [])),
        "steps": progress[-1]["steps"], "progress": progress,
        "history": read_history(run_dir), "results": results, "table": table(results),
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
    }
    if args.note is not None:
        report["note"] = args.note.read_text(encoding="utf-8")
    report["seconds"] = {"pretraining": train_seconds, "total": time.perf_counter() - started}
    print(table_text(report["table"]))
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    images: dict[str, str] = {}
    if not args.quick or args.docs is not None:  # quick mode draws only when asked to
        images = plots(report, frames, clips, run_dir, args.docs or out)
    report["images"] = images
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    write_markdown(report, out, args.docs)
    return report


def write_markdown(report: dict[str, Any], out: Path, docs: Optional[Path]) -> None:
    text = markdown(report, report.get("images", {}))
    (out / "results.md").write_text(text)
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        (docs / "results.md").write_text(text)


def beside_section(other: dict[str, Any], title: str, images: dict[str, str]) -> str:
    """A second run's table, targets and training progress, for the same page."""
    checks = "\n".join(f"| {name} | {'met' if ok else '**missed**'} | {detail} |"
                       for name, ok, detail in verdicts(other["results"]))
    progress = "\n".join(
        f"| {p['fraction'] * 100:.0f} % | {p['steps']} | {p['minutes']:.1f} | "
        f"{percent(p['cpc']['official/digit'])} | {percent(p['cpc']['speaker/digit'])} |"
        for p in other["progress"])
    pictures = "\n".join(f"![{name}]({path})" for name, path in images.items())
    return f"""## {title}

```bash
{other['command']}
```

Pretraining {other['seconds']['pretraining'] / 60:.1f} min ({other['steps']} steps), {other['seconds']['total'] / 60:.1f} min
in all without plots; load average (1 min) {other['load_average']['start']:.1f} at the start, {other['load_average']['end']:.1f} at the end.
Pretraining data: {other['pretraining_files']} files, {data_use(other)}.

{table_markdown(table(other['results']))}

| target | verdict | numbers |
|---|---|---|
{checks}

| budget | steps | minutes | official split | held-out speaker |
|---:|---:|---:|---:|---:|
{progress}

{pictures}
"""


def render(argv: Sequence[str]) -> None:
    """`fsdd.py render OUT [--docs DIR] [--note NOTE.md] [--beside OUT2 TITLE]`: write
    results.md again from OUT/results.json (e.g. with a new closing note, or with a second
    run's results appended) without running anything."""
    parser = argparse.ArgumentParser(prog="fsdd.py render")
    parser.add_argument("out", type=Path)
    parser.add_argument("--docs", type=Path, default=None)
    parser.add_argument("--note", type=Path, default=None)
    parser.add_argument("--beside", nargs=2, metavar=("OUT2", "TITLE"), default=None)
    args = parser.parse_args(argv)
    report = json.loads((args.out / "results.json").read_text())
    if args.beside is not None:
        other_dir, title = Path(args.beside[0]), args.beside[1]
        other = json.loads((other_dir / "results.json").read_text())
        copied = {}
        for name, caption in (("fsdd_cpc_training.png", "CPC loss and per-step accuracy"),
                              ("fsdd_confusion_heldout.png", "confusion matrix, held-out speaker")):
            if (other_dir / name).is_file() and args.docs is not None:
                target = f"{other_dir.name}_{name}"
                shutil.copy2(other_dir / name, args.docs / target)
                copied[f"{caption} ({other_dir.name})"] = target
        report["beside"] = beside_section(other, title, copied)
    if not report.get("images"):  # a report written before images were recorded in it
        names = {"training": "fsdd_cpc_training.png", "progress": "fsdd_probe_vs_training.png",
                 "confusion_official": "fsdd_confusion_official.png",
                 "confusion_heldout": "fsdd_confusion_heldout.png",
                 "tsne_cpc": "fsdd_tsne_cpc.png", "tsne_mfcc_baseline": "fsdd_tsne_mfcc_baseline.png"}
        folder = args.docs or args.out
        report["images"] = {k: v for k, v in names.items() if (folder / v).is_file()}
    if args.note is not None:
        report["note"] = args.note.read_text(encoding="utf-8")
    write_markdown(report, args.out, args.docs)


def page_headline(page: str) -> dict[tuple[str, str], tuple[str, str]]:
    """The headline results table of a results.md: (features title, label) -> (official,
    held-out speaker) as printed, read from the first table under '## Results'."""
    section = page.split("\n## Results", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1] in ("digit", "speaker"):
            rows[(cells[0], cells[1])] = (cells[2], cells[3])
    if not rows:
        raise SystemExit("no results table under '## Results' in the page")
    return rows


def side_by_side(page: str, other: dict[str, Any], headline: str, title: str) -> str:
    """The page's headline table and a second run's, one row per (features, label)."""
    first = page_headline(page)
    lines = [f"| features | label | {headline}: official | {headline}: held-out speaker | "
             f"{title}: official | {title}: held-out speaker |", "|---|---|---:|---:|---:|---:|"]
    for row in table(other["results"]):
        speaker = percent(row["speaker"]) if row["label"] == "digit" else "n/a"
        before = first.get((row["title"], row["label"]), ("-", "-"))
        lines.append(f"| {row['title']} | {row['label']} | {before[0]} | "
                     f"{'n/a' if before[1].startswith('n/a') else before[1]} | "
                     f"{percent(row['official'])} | {speaker} |")
    return "\n".join(lines)


def insert(argv: Sequence[str]) -> None:
    """`fsdd.py insert OUT2 TITLE --docs DIR [--headline NAME]`: add a second run's section
    (a table beside the page's headline results, then its own tables) to an existing
    DIR/results.md whose first run's results.json is not at hand; a section of the same
    title is replaced. It goes before the closing note."""
    parser = argparse.ArgumentParser(prog="fsdd.py insert")
    parser.add_argument("other", type=Path)
    parser.add_argument("title")
    parser.add_argument("--docs", type=Path, required=True)
    parser.add_argument("--headline", default="`fsdd` preset",
                        help="what the page's headline run is called in the side-by-side table")
    parser.add_argument("--short", default="this run",
                        help="what the new run is called in the side-by-side table")
    parser.add_argument("--note", type=Path, default=None,
                        help="a Markdown file put under the side-by-side table")
    args = parser.parse_args(argv)
    page_path = args.docs / "results.md"
    page = page_path.read_text(encoding="utf-8")
    other = json.loads((args.other / "results.json").read_text())
    copied = {}
    for name, caption in (("fsdd_cpc_training.png", "CPC loss and per-step accuracy"),
                          ("fsdd_confusion_heldout.png", "confusion matrix, held-out speaker")):
        if (args.other / name).is_file():
            target = f"{args.other.name}_{name}"
            shutil.copy2(args.other / name, args.docs / target)
            copied[f"{caption} ({args.other.name})"] = target
    section = beside_section(other, args.title, copied)
    heading, body = section.split("\n", 1)
    note = f"\n{args.note.read_text(encoding='utf-8').strip()}\n" if args.note else ""
    section = (f"{heading}\n\n{side_by_side(page, other, args.headline, args.short)}\n{note}"
               f"\nIts own tables, from `{args.other.name}/results.json`:\n{body}")
    marker = f"\n{heading}\n"
    if marker in page:  # replace the earlier version of this section
        before, rest = page.split(marker, 1)
        after = rest.split("\n## ", 1)[1] if "\n## " in rest else ""
        page = f"{before}\n{section}\n## {after}" if after else f"{before}\n{section}"
    elif "\n## Closing note" in page:
        before, after = page.split("\n## Closing note", 1)
        page = f"{before}\n{section}\n## Closing note{after}"
    else:
        page = f"{page.rstrip()}\n\n{section}"
    from audiocpc.fileio import atomic_write_text

    atomic_write_text(page_path, page)


if __name__ == "__main__":
    if sys.argv[1:2] == ["render"]:
        render(sys.argv[2:])
    elif sys.argv[1:2] == ["insert"]:
        insert(sys.argv[2:])
    else:
        main()
