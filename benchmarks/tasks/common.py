"""Shared machinery for the real-audio benchmark tasks.

A task builder only yields :class:`Clip` objects (16 kHz mono audio + label +
group).  Everything else lives here: checking that the source packages are
installed, writing the wav files, the deterministic group-aware train/test
split, ``manifest.csv`` and ``task.json``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
#: Repository root (benchmarks/tasks/common.py -> repo).
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Clip:
    """One example: ``rel`` is its path under ``audio/`` (without ``.wav``)."""

    rel: str
    label: str
    group: str
    audio: np.ndarray  # float32, mono, SAMPLE_RATE


@dataclass(frozen=True)
class Requirement:
    """Something that must exist on disk, and how to get it when it does not."""

    path: Path
    install: str  # exact command (or instruction) that provides ``path``

    def ok(self) -> bool:
        return self.path.exists()


@dataclass
class TaskSpec:
    """Static description of a task plus the function that yields its clips."""

    name: str
    kind: str
    description: str
    source: str  # package(s) the audio comes from
    licence: str
    requirements: list[Requirement]
    builder: Callable[[], Iterator[Clip]]
    group_name: str  # what a group is (speaker, kit, ...)
    test_fraction: float = 0.3
    #: True when every group belongs to one label (e.g. group = GM program
    #: inside label = family): then the split is drawn per label, so every
    #: class has unseen groups in test.
    groups_nested_in_labels: bool = False
    seed: int = 0
    #: Fixed test groups (overrides the seeded draw) for tasks with few, unequal groups.
    test_groups: frozenset[str] | None = None
    #: False: built only when asked for by name (``--only``) or with ``--all``.
    default: bool = True
    extra: dict = field(default_factory=dict)

    def missing(self) -> list[Requirement]:
        return [r for r in self.requirements if not r.ok()]


class MissingSource(RuntimeError):
    """Raised when a task's source files/packages are not installed."""


# --------------------------------------------------------------------- audio
def load_audio(path: Path | str, max_seconds: float | None = None) -> np.ndarray:
    """Read any libsndfile format, mix to mono, resample to 16 kHz (soxr HQ)."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return prepare(data.mean(axis=1), sr, max_seconds)


def prepare(audio: np.ndarray, sr: int, max_seconds: float | None = None) -> np.ndarray:
    """Resample to 16 kHz, crop to ``max_seconds`` and peak-normalise to 0.9."""
    audio = np.asarray(audio, dtype=np.float32)
    if sr != SAMPLE_RATE:
        audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    if max_seconds is not None:
        audio = audio[: int(max_seconds * SAMPLE_RATE)]
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        audio = audio * (0.9 / peak)
    return audio


def trim(audio: np.ndarray, threshold_db: float = -40.0, pad_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing parts quieter than ``threshold_db`` below the peak."""
    if audio.size == 0:
        return audio
    env = np.abs(audio)
    thr = env.max() * 10 ** (threshold_db / 20)
    idx = np.flatnonzero(env > thr)
    if idx.size == 0:
        return audio[:0]
    pad = int(pad_s * SAMPLE_RATE)
    return audio[max(0, idx[0] - pad): idx[-1] + pad + 1]


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------- split
def group_split(labels: list[str], groups: list[str], test_fraction: float, seed: int,
                nested: bool) -> dict[str, str]:
    """Map each group to ``train``/``test`` deterministically from ``seed``.

    ``nested``: draw test groups per label (each group must carry one label).
    Otherwise draw groups globally, retrying with derived seeds until every
    label occurs in both splits.
    """
    label_groups: dict[str, set[str]] = defaultdict(set)
    for lab, grp in zip(labels, groups):
        label_groups[lab].add(grp)

    def pick(items: list[str], rng: random.Random) -> set[str]:
        items = sorted(items)
        rng.shuffle(items)
        n_test = min(len(items) - 1, max(1, round(test_fraction * len(items))))
        return set(items[:n_test])

    if nested:
        owner = defaultdict(set)
        for lab, grp in zip(labels, groups):
            owner[grp].add(lab)
        assert all(len(v) == 1 for v in owner.values()), "groups span several labels"
        test: set[str] = set()
        for lab in sorted(label_groups):
            test |= pick(list(label_groups[lab]), random.Random(f"{seed}:{lab}"))
        return {g: ("test" if g in test else "train") for g in owner}

    all_groups = sorted(set(groups))
    for attempt in range(1000):
        test = pick(all_groups, random.Random(f"{seed}:{attempt}"))
        if all(gs & test and gs - test for gs in label_groups.values()):
            return {g: ("test" if g in test else "train") for g in all_groups}
    raise RuntimeError("no group split puts every label in both train and test")


# --------------------------------------------------------------------- build
def build(spec: TaskSpec, out_dir: Path) -> dict:
    """Build ``spec`` into ``out_dir`` (wiped first); return the task.json dict."""
    missing = spec.missing()
    if missing:
        raise MissingSource("; ".join(sorted({f"{r.path} missing -> {r.install}" for r in missing})))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "audio").mkdir(parents=True)

    rows: list[dict] = []
    for clip in spec.builder():
        if clip.audio.size < SAMPLE_RATE // 10 or float(np.max(np.abs(clip.audio))) < 1e-4:
            continue  # shorter than 0.1 s or silent
        dest = out_dir / "audio" / f"{clip.rel}.wav"
        dest.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(dest), clip.audio, SAMPLE_RATE, subtype="PCM_16")
        rows.append({"file": f"audio/{clip.rel}.wav", "label": clip.label, "group": clip.group,
                     "seconds": clip.audio.size / SAMPLE_RATE})
    if not rows:
        raise RuntimeError(f"{spec.name}: builder produced no clips")

    if spec.test_groups is not None:
        split = {r["group"]: ("test" if r["group"] in spec.test_groups else "train") for r in rows}
    else:
        split = group_split([r["label"] for r in rows], [r["group"] for r in rows],
                            spec.test_fraction, spec.seed, spec.groups_nested_in_labels)
    rows.sort(key=lambda r: r["file"])
    with open(out_dir / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label", "group", "split"])
        for r in rows:
            r["split"] = split[r["group"]]
            writer.writerow([r["file"], r["label"], r["group"], r["split"]])

    def per_split(fn: Callable[[list[dict]], object]) -> dict:
        return {s: fn([r for r in rows if r["split"] == s]) for s in ("train", "test")}

    info = {
        "name": spec.name,
        "kind": spec.kind,
        "description": spec.description,
        "source": spec.source,
        "licence": spec.licence,
        "sample_rate": SAMPLE_RATE,
        "group": spec.group_name,
        "split_seed": spec.seed,
        "classes": sorted({r["label"] for r in rows}),
        "num_classes": len({r["label"] for r in rows}),
        "files": per_split(len),
        "groups": per_split(lambda rs: sorted({r["group"] for r in rs})),
        "num_groups": per_split(lambda rs: len({r["group"] for r in rs})),
        "class_counts": per_split(lambda rs: dict(sorted(Counter(r["label"] for r in rs).items()))),
        "total_seconds": round(sum(r["seconds"] for r in rows), 1),
        "seconds_per_split": per_split(lambda rs: round(sum(r["seconds"] for r in rs), 1)),
        **spec.extra,
    }
    (out_dir / "task.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def read_manifest(task_dir: Path) -> list[dict[str, str]]:
    with open(task_dir / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))
