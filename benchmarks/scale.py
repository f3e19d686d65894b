"""Data at scale: `audiocpc prepare` and training on prepared corpora of generated audio.

    .venv/bin/python benchmarks/scale.py --tiny-files 200000 --hours 10 --long-hours 10 \
        --work /tmp/scale --json benchmarks/results_scale.json

Three corpora, generated (never stored in the repository) under --work:

- tiny: --tiny-files clips of 0.3 s at 16 kHz (PCM_16 WAV), levels from -60 to -6 dBFS;
- hours: --hours of 60 s files at 44.1 kHz stereo (resampled and mixed down by prepare);
- long: one file of --long-hours at 44.1 kHz mono (streamed in blocks by prepare).

For each (0 skips one): the generation time, `prepare` time (its worker processes), disk
per audio hour of the shards against the float32 cache the folder path writes (4 bytes a
sample plus a 128-byte .npy header per file: computed, not written), peak RSS of prepare
(parent and workers), then a short `train` with the `clips` preset (16 kHz, 0.25 s crops,
N=32) on the prepared corpus: its peak RSS, the most files it held open (sampled every
20 ms from /proc/self/fd), training steps/s, and the crops/s the data pipeline alone
delivers (CropSampler batches of the same corpus) against the crops/s training consumes.
The int16 error of the tiny corpus is measured against the float32 decode of 200 files
(largest error relative to each file's peak, and the SNR against the file's RMS). Every
phase runs in a fresh process, so each peak RSS is its own; RSS is also split into its
anonymous part (what the process allocated) and its file-backed part (shard pages it has
read through the memory map: clean page cache, reclaimable).

--embed CORPORA embeds those corpora after training (`audiocpc embed`, --embed-crops crops
a file, default 90), with each count of --embed-processes (1: one process, 2: `torchrun
--nproc_per_node 2`): wall time, CPU-seconds of all processes, peak RSS, and the largest
difference between the process counts' rows. --hours-rate/--hours-channels set the hours
corpus's format (16000 and 1 make 100 h about 11.5 GB of WAV).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

TINY_SECONDS = 0.3
HOURS_FILE_SECONDS = 60.0


def _signal(rng: np.random.Generator, samples: int, rate: int, level: float) -> np.ndarray:
    t = np.arange(samples) / rate
    tone = np.sin(2 * np.pi * rng.uniform(100, 2000) * t + rng.uniform(0, 6.28))
    return (level * (0.7 * tone + 0.3 * rng.standard_normal(samples))).astype(np.float32)


def _wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    """A PCM_16 WAV file of float `wave` ([samples] or [samples, channels], within +-1)."""
    channels = 1 if wave.ndim == 1 else wave.shape[1]
    data = np.round(np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
            + b"data" + struct.pack("<I", len(data)) + data)


def _windows(rng: np.random.Generator, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten minutes of one signal (tones and noise, peak 1) and a second, different one: files
    are windows of it at distinct offsets, so 200,000 distinct files cost no synthesis each."""
    base = _signal(rng, 600 * rate, rate, 1.0)
    other = _signal(rng, 600 * rate, rate, 1.0)
    return base / np.abs(base).max(), other / np.abs(other).max()


def generate(kind: str, folder: Path, amount: float, rate: int = 44100, channels: int = 2) -> float:
    """Write one corpus; seconds it took. `rate` and `channels`: the hours corpus's."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "tiny":
        base, _ = _windows(rng, 16000)
        n = int(TINY_SECONDS * 16000)
        for i in range(int(amount)):
            sub = folder / f"{i // 1000:04d}"
            if i % 1000 == 0:
                sub.mkdir(exist_ok=True)
            level = 10 ** (rng.uniform(-60, -6) / 20)
            first = (i * 7919) % (base.size - n)
            (sub / f"clip{i:07d}.wav").write_bytes(_wav_bytes(level * base[first : first + n], 16000))
    elif kind == "hours":
        base, other = _windows(rng, rate)
        n = int(HOURS_FILE_SECONDS * rate)
        for i in range(int(np.ceil(amount * 3600 / HOURS_FILE_SECONDS))):
            first = (i * 104_729) % (base.size - n)
            wave = 0.2 * base[first : first + n]
            if channels == 2:
                wave = np.stack([wave, 0.1 * other[first : first + n]], axis=1)
            (folder / f"rec{i:05d}.wav").write_bytes(_wav_bytes(wave, rate))
    else:  # one long file, written in blocks (never whole in memory)
        block = 44100 * 60
        with sf.SoundFile(folder / "long.wav", "w", 44100, 1, subtype="PCM_16") as out:
            for _ in range(int(np.ceil(amount * 60))):
                out.write(_signal(rng, block, 44100, 0.2))
    return time.perf_counter() - start


def _peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _rss_parts_mib(pid: str | int = "self") -> tuple[float, float]:
    """(anonymous, file-backed) resident memory of a process, MiB: the file-backed part is
    mapped shard pages it has read (clean page cache, reclaimable), the anonymous part is
    what it allocated."""
    parts = {"RssAnon:": 0.0, "RssFile:": 0.0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, *value = line.split()
            if key in parts:
                parts[key] = float(value[0]) / 1024
    except OSError:
        pass
    return parts["RssAnon:"], parts["RssFile:"]


def _family(pid: int) -> list[int]:
    """A process and its descendants (torchrun's workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


class OpenFiles:
    """The most file descriptors this process held, and its (or, with `pid`, a child's and
    its descendants') largest anonymous and file-backed RSS, sampled in a thread."""

    def __init__(self, pid: int | None = None) -> None:
        self.most, self._stop = 0, threading.Event()
        self.anon_mib = self.file_mib = 0.0
        self.pid = pid
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.pid is None:
                self.most = max(self.most, len(os.listdir("/proc/self/fd")))
                anon, backed = _rss_parts_mib()
                self.anon_mib, self.file_mib = max(self.anon_mib, anon), max(self.file_mib, backed)
            else:
                for pid in _family(self.pid):
                    anon, backed = _rss_parts_mib(pid)
                    self.anon_mib = max(self.anon_mib, anon)
                    self.file_mib = max(self.file_mib, backed)
            time.sleep(0.02)

    def __enter__(self) -> "OpenFiles":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def phase_prepare(source: Path, corpus: Path, workers: int) -> dict[str, Any]:
    from audiocpc import load_config
    from audiocpc.data.prepared import prepare_corpus, read_manifest

    data = load_config("clips").data
    start = time.perf_counter()
    report = prepare_corpus(source, corpus, data, workers=workers, force=True, progress=False)
    seconds = time.perf_counter() - start
    rows = read_manifest(corpus)[1]
    samples = sum(r["length"] for r in rows if r.get("shard") and r.get("duplicate_of") is None)
    hours = samples / data.sample_rate / 3600
    shard_bytes = sum(p.stat().st_size for p in (corpus / "shards").iterdir())
    files = sum(1 for r in rows if r.get("shard") and r.get("duplicate_of") is None)
    float32_bytes = 4 * samples + 128 * files
    return {"files": len(report.files), "audio_hours": hours, "prepare_seconds": seconds,
            "shards": len(list((corpus / "shards").iterdir())),
            "shard_mb_per_hour": shard_bytes / 1e6 / hours,
            "float32_cache_mb_per_hour": float32_bytes / 1e6 / hours,
            "manifest_mb": (corpus / "manifest.jsonl").stat().st_size / 1e6,
            "prepare_peak_rss_mib": _peak_rss_mib(),
            "worker_peak_rss_mib": _peak_rss_mib(resource.RUSAGE_CHILDREN)}


def phase_int16_error(source: Path, corpus: Path) -> dict[str, Any]:
    from audiocpc import load_config
    from audiocpc.data.audio import read_audio
    from audiocpc.data.prepared import open_data

    data = load_config("clips").data
    prepared = open_data(corpus, data).corpus()
    worst, snrs = 0.0, []
    for i in np.linspace(0, len(prepared) - 1, min(200, len(prepared))).astype(int):
        name = prepared.paths[i].relative_to(corpus)
        exact = read_audio(source / name, data.sample_rate)
        error = prepared.wave(int(i))[:] - exact
        worst = max(worst, float(np.abs(error).max() / np.abs(exact).max()))
        snrs.append(10 * np.log10(np.mean(exact.astype(np.float64) ** 2) / max(np.mean(error.astype(np.float64) ** 2), 1e-30)))
    return {"int16_max_error_of_peak": worst, "int16_snr_db_min": float(min(snrs)),
            "int16_snr_db_median": float(np.median(snrs))}


def phase_train(corpus: Path, out: Path, steps: int) -> dict[str, Any]:
    from audiocpc import load_config
    from audiocpc.data.corpus import CropSampler
    from audiocpc.data.prepared import open_data
    from audiocpc.training.trainer import train

    config = load_config("clips", [f"output.dir={out}", "output.name=scale", "train.epochs=1",
                                   f"train.steps_per_epoch={steps}", "train.validation_crops=8",
                                   "train.threads=1"])
    with OpenFiles() as fds:
        start = time.perf_counter()
        result = train(config, corpus, force=True, progress=False)
        train_seconds = time.perf_counter() - start
    step_seconds = float(result.history[-1]["seconds"]) / steps
    corpus_data = open_data(corpus, config.data).corpus()
    sampler = CropSampler(corpus_data, config.data.crop_samples, config.data.N, seed=0)
    start = time.perf_counter()
    sampler.batch(0)  # measures each file's standardisation statistics once (a long file: all of it)
    first_batch = time.perf_counter() - start
    start = time.perf_counter()
    batches = 1
    while time.perf_counter() - start < 3.0:
        sampler.batch(batches)
        batches += 1
    delivered = batches * config.data.N / (time.perf_counter() - start)
    consumed = config.data.N / step_seconds
    return {"run_dir": str(result.run_dir),
            "train_seconds_total": train_seconds, "train_step_seconds": step_seconds,
            "train_peak_rss_mib": _peak_rss_mib(), "train_peak_rss_anon_mib": fds.anon_mib,
            "train_peak_rss_file_mib": fds.file_mib, "train_max_open_files": fds.most,
            "sampler_first_batch_seconds": first_batch,
            "crops_per_s_delivered": delivered, "crops_per_s_consumed": consumed,
            "data_headroom": delivered / consumed}


def phase_embed(run_dir: Path, corpus: Path, out: Path, processes: int, split: str,
                crops: str = "") -> dict[str, Any]:
    """`audiocpc embed` of the corpus in a child process (`torchrun` for several): wall time,
    CPU-seconds of every process, the largest peak RSS among them, and what was written."""
    embed = ["-m", "audiocpc", "embed", str(run_dir), "--data", str(corpus), "--split", split,
             "--out", str(out), "--quiet", *(["--crops", crops] if crops else [])]
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    child = subprocess.Popen([*launcher, *embed], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    with OpenFiles(child.pid) as memory:
        _, errors = child.communicate()
    wall = time.perf_counter() - start
    if child.returncode:
        raise SystemExit(f"embed failed ({child.returncode}): {errors[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    folder = out / "embeddings" / run_dir.name
    info = json.loads((folder / f"{split}.json").read_text())
    rows = np.load(folder / f"{split}.npy", mmap_mode="r")
    return {"embed_processes": processes, "embed_wall_seconds": wall,
            "embed_cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "embed_peak_rss_mib": after.ru_maxrss / 1024, "embed_peak_rss_anon_mib": memory.anon_mib,
            "embed_peak_rss_file_mib": memory.file_mib, "embed_rows": int(rows.shape[0]),
            "embed_files": info["files"], "embed_crop_seconds": info["crop_seconds"],
            "embed_crop_audio_per_wall_s": rows.shape[0] * info["crop_seconds"] / wall,
            "embed_sha256": __import__("hashlib").sha256(np.ascontiguousarray(rows).tobytes()).hexdigest()}


def _phase(args: list[str]) -> dict[str, Any]:
    found = subprocess.run([sys.executable, __file__, "--phase", *args], check=True,
                           capture_output=True, text=True)
    return json.loads(found.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout
        except OSError:
            return ""
    model = next((line.split(":", 1)[1].strip() for line in run("lscpu").splitlines()
                  if line.startswith("Model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "uptime": run("uptime").strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-files", type=int, default=200_000)
    parser.add_argument("--hours", type=float, default=10.0)
    parser.add_argument("--long-hours", type=float, default=1.0)
    parser.add_argument("--hours-rate", type=int, default=44100,
                        help="sample rate of the hours corpus (16000 makes 100 h fit in ~12 GB)")
    parser.add_argument("--hours-channels", type=int, choices=(1, 2), default=2)
    parser.add_argument("--embed", default="long",
                        help="corpora (comma-separated: tiny,hours,long) embedded after training "
                        "with the default 90 crops a file: peak RSS, time")
    parser.add_argument("--embed-processes", default="1",
                        help="process counts to embed with, e.g. 1,2 (2: torchrun), same files")
    parser.add_argument("--embed-crops", default="",
                        help="crops per file to embed (default: embed's own, 90 for a train split)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="training steps per corpus")
    parser.add_argument("--work", default="/tmp/audiocpc-scale", help="where corpora are generated")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpora")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.phase:
        name, *rest = args.phase
        if name == "generate":
            out = {"generate_seconds": generate(rest[0], Path(rest[1]), float(rest[2]), int(rest[3]),
                                                int(rest[4]))}
        elif name == "prepare":
            out = phase_prepare(Path(rest[0]), Path(rest[1]), int(rest[2]))
        elif name == "error":
            out = phase_int16_error(Path(rest[0]), Path(rest[1]))
        elif name == "embed":
            out = phase_embed(Path(rest[0]), Path(rest[1]), Path(rest[2]), int(rest[3]), rest[4],
                              *rest[5:])
        else:
            out = phase_train(Path(rest[0]), Path(rest[1]), int(rest[2]))
        print(json.dumps(out))
        return
    work = Path(args.work)
    results: dict[str, Any] = {"machine_before": machine(), "settings": vars(args) | {"phase": None}}
    for kind, amount in (("tiny", args.tiny_files), ("hours", args.hours), ("long", args.long_hours)):
        if not amount:
            continue
        source, corpus = work / f"{kind}-source", work / f"{kind}-corpus"
        shutil.rmtree(source, ignore_errors=True)
        # generated in a process of its own: a child's ru_maxrss starts from its parent's at
        # the fork, so a parent that had held the generated signal would mask the phases' peaks
        row: dict[str, Any] = _phase(["generate", kind, str(source), str(amount),
                                      str(args.hours_rate), str(args.hours_channels)])
        row |= _phase(["prepare", str(source), str(corpus), str(args.workers)])
        if kind == "tiny":
            row |= _phase(["error", str(source), str(corpus)])
        row |= _phase(["train", str(corpus), str(work / f"{kind}-runs"), str(args.steps)])
        if kind in args.embed.split(","):
            for processes in args.embed_processes.split(","):
                measured = _phase(["embed", row["run_dir"], str(corpus),
                                   str(work / f"{kind}-embed-{processes}"), processes, "train",
                                   args.embed_crops])
                row[f"embed_{processes}"] = measured
                print(kind, "embed", json.dumps(measured), flush=True)
            counts = args.embed_processes.split(",")
            arrays = [np.load(work / f"{kind}-embed-{n}" / "embeddings" / Path(row["run_dir"]).name
                              / "train.npy") for n in counts]
            # equal to float rounding, not bit for bit: each process batches its own files
            row["embed_max_abs_difference"] = max(float(np.abs(a - arrays[0]).max()) for a in arrays)
        results[kind] = row
        print(kind, json.dumps(row, indent=1), flush=True)
        if not args.keep:
            shutil.rmtree(source, ignore_errors=True)
            shutil.rmtree(corpus, ignore_errors=True)
    results["machine_after"] = machine()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
