"""Side-by-side training speed against the peers: alternating runs on the same data.

    python benchmarks/compare.py --reference ~/src/cpc-reference --cpc-audio ~/src/CPC_audio \
        --rounds 3 --seconds 120 --json compare.json

Runs, in one invocation and taking turns (peer, audiocpc, peer, audiocpc, ...), each peer's
own training script and `audiocpc train` on the matching preset, on the same folder of audio
(`--data`, or 30 s files at 16 kHz generated into results/compare/data/train):

    the reference framework   its own train_cpc.py     against the 1dconv_gru preset
    CPC_audio                 its own cpc/train.py     against cpc_paper (128 negatives)

Each run is a child process, stopped after `--seconds` (or when it ends). Progress lines are
read as they come (Keras's and tqdm's `12/500 [`, CPC_audio's `Update 12`) and the
measurement window runs from the first line at or past `--warmup-steps` steps to the last
one, so start-up (imports, data loading, the first steps) counts for nobody. Per run:

    audio-s/s                 steps in the window x audio per step / wall seconds
    audio-s per CPU-second    the same audio / the CPU time of the child and its descendants
                              in the window (/proc/<pid>/stat at the window's first and last
                              line; where /proc is missing, the child's whole rusage)
    peak RSS                  the child's own high-water mark (VmHWM in /proc/<pid>/status,
                              polled), or the resident memory of it and its descendants
                              when that is larger (wait4's max RSS starts, on Linux, at the
                              parent's: it is used only where /proc is missing)
    others' CPU               the machine's busy CPU time in the window (/proc/stat) minus
                              the child's, in cores and as a share of all cores

and the ratios audiocpc / peer (ratio of the medians over rounds, and each adjacent pair's).
The machine (lscpu's model name, cores, load average) is printed with the table.

Getting the peers (never vendored or installed by audiocpc; give their paths):

  - The reference framework: the TensorFlow 2 CPC framework whose tutorial edits params.py
    and runs run_experiment.sh (see the README's "Coming from the TensorFlow CPC framework").
    Clone it and install its own requirements into an environment of its own (give that
    Python with --reference-python). It takes its settings from params.py, not from the
    command line: set path_data_cpc to the data folder this script prints, modelname to
    1dconv_gru, T=27, k=3, N=8, full_duration=4, desired_sr=4410 and original_sr to the
    data's rate (16000 for the generated data), and enough epochs to outlast --seconds.
    Arguments after --reference-args are passed to train_cpc.py as they are.
  - CPC_audio: `git clone https://github.com/facebookresearch/CPC_audio`, install its
    environment (its README) and give --cpc-audio-python. It is run as
    `python cpc/train.py --pathDB DATA --file_extension .wav --batchSizeGPU N
    --negativeSamplingExt 128 --sizeWindow 20480 --logging_step 1 ...` with the checkout on
    PYTHONPATH. As published it trains on CUDA only (it moves batches with .cuda() and its
    batch is nGPU x batchSizeGPU): run the comparison on a GPU machine with --device cuda,
    or on a CPU with a checkout you have made CPU-capable yourself.

A peer whose path is not given or lacks its script is skipped with one line saying why.
Without a peer there is nothing to compare: the script says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")

# ------------------------------------------------------------------ reading progress


class StepCounter:
    """Total steps so far from a child's progress lines. `progress` finds the step number
    (its first group); `new_segment` marks the start of an epoch whose numbering starts
    again (Keras's `Epoch 2/20`, CPC_audio's `Starting epoch 1`)."""

    def __init__(self, progress: str, new_segment: Optional[str] = None):
        self.progress = re.compile(progress)
        self.new_segment = re.compile(new_segment) if new_segment else None
        self.done_before = 0  # steps of the finished segments
        self.current = 0

    def feed(self, line: str) -> Optional[int]:
        """The total after this line when it reports progress, else None."""
        if self.new_segment is not None and self.new_segment.search(line):
            self.done_before += self.current
            self.current = 0
            return None
        match = self.progress.search(line)
        if match is None:
            return None
        self.current = max(self.current, int(match.group(1)))
        return self.done_before + self.current


def progress_bar_counter() -> StepCounter:
    """Keras's progress bar (`12/500 [====>...]`, numbered per epoch under `Epoch e/E`) and
    tqdm's (`12/100000 [00:10<...]`, audiocpc's, numbered over the whole run)."""
    return StepCounter(r"(?:^|\s|\|)(\d+)/\d+ \[", r"^\s*Epoch \d+/\d+")


def cpc_audio_counter() -> StepCounter:
    """CPC_audio's trainStep prints `Update N` every logging_step batches of each epoch."""
    return StepCounter(r"^\s*Update (\d+)\b", r"^\s*Starting epoch \d+")


def output_lines(stream: Any) -> Iterator[str]:
    """Lines of a byte stream, split at \\n, \\r (progress bars redraw with it) and \\b."""
    pending = b""
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            break
        pending += chunk
        parts = re.split(rb"[\r\n\b]+", pending)
        pending = parts.pop()
        for part in parts:
            if part.strip():
                yield part.decode("utf-8", "replace")
    if pending.strip():
        yield pending.decode("utf-8", "replace")


# ------------------------------------------------------------------ measuring a run


@dataclass(frozen=True)
class Sample:
    """The state at a progress line: when, total steps, the child's CPU seconds so far and
    the machine's busy CPU seconds (all cores) so far."""

    time: float
    steps: int
    child_cpu: float
    machine_busy: float


@dataclass
class Peer:
    """One side of a comparison: a command, where it runs, and how to read its progress."""

    name: str
    preset: str  # the audiocpc preset it is compared with
    precision: str  # what it computes in (peers: as configured, "own")
    command: list[str]
    cwd: Path
    audio_seconds_per_step: float
    counter: Callable[[], StepCounter]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    name: str
    preset: str
    precision: str
    round: int
    steps: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    audio_s: float = 0.0
    audio_per_second: float = float("nan")
    audio_per_cpu_second: float = float("nan")
    others_cores: float = float("nan")
    others_share: float = float("nan")
    peak_rss_mib: float = float("nan")
    total_cpu_s: float = float("nan")
    exit_status: Optional[int] = None
    problem: Optional[str] = None  # why no rate was measured
    output_tail: list[str] = field(default_factory=list)


def summarize(first: Sample, last: Sample, audio_per_step: float, cores: int) -> dict[str, float]:
    """The rates of a measurement window (two samples)."""
    steps = last.steps - first.steps
    wall = last.time - first.time
    cpu = last.child_cpu - first.child_cpu
    audio = steps * audio_per_step
    others = max(0.0, (last.machine_busy - first.machine_busy) - cpu)
    return {
        "steps": steps, "wall_s": wall, "cpu_s": cpu, "audio_s": audio,
        "audio_per_second": audio / wall if wall > 0 else float("nan"),
        "audio_per_cpu_second": audio / cpu if cpu > 0 else float("nan"),
        "others_cores": others / wall if wall > 0 else float("nan"),
        "others_share": others / (wall * cores) if wall > 0 else float("nan"),
    }


def machine_busy_seconds() -> float:
    """Busy CPU time of all cores since boot (/proc/stat: all but idle and iowait)."""
    try:
        fields = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


def session_processes(leader: int) -> list[int]:
    """The child and its descendants (from /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [leader]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for children in (PROC / str(pid) / "task").glob("*/children"):
            try:
                todo += [int(c) for c in children.read_text().split()]
            except OSError:  # gone meanwhile
                pass
    return found


def session_cpu_seconds(leader: int) -> float:
    """CPU seconds of the child and its live descendants, with the children each has already
    reaped (a child that has ended but is not reaped yet still reports its own)."""
    total = 0
    for pid in session_processes(leader):
        try:
            text = (PROC / str(pid) / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def session_rss_mib(leader: int) -> float:
    """Peak RSS so far: the child's own high-water mark (VmHWM) or, when larger, the resident
    memory of the child and its descendants now. (wait4's ru_maxrss cannot serve: on Linux
    a child starts with its parent's high-water mark, kept across exec.)"""
    peak = resident = 0
    for pid in session_processes(leader):
        try:
            status = (PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" in values:
            resident += int(values["VmRSS"].split()[0])
        if pid == leader and "VmHWM" in values:
            peak = int(values["VmHWM"].split()[0])
    return max(peak, resident) / 1024


def run_once(peer: Peer, round_index: int, seconds: float, warmup_steps: int, cores: int,
             tail_lines: int = 12) -> RunResult:
    """Run one child to its end or for `seconds`, sampling at each progress line."""
    result = RunResult(peer.name, peer.preset, peer.precision, round_index)
    env = {**os.environ, **peer.env}
    try:
        child = subprocess.Popen(peer.command, cwd=peer.cwd, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:  # a wrong --reference-python, say
        result.problem = f"could not start {shlex.join(peer.command[:2])} in {peer.cwd}: {exc}"
        return result
    counter = peer.counter()
    samples: list[Sample] = []
    tail: list[str] = []
    have_proc = (PROC / str(child.pid) / "stat").exists()

    def read() -> None:
        assert child.stdout is not None
        for line in output_lines(child.stdout):
            tail.append(line)
            del tail[:-tail_lines]
            steps = counter.feed(line)
            if steps is not None and steps >= warmup_steps and (not samples or steps > samples[-1].steps):
                cpu = session_cpu_seconds(child.pid) if have_proc else float("nan")
                samples.append(Sample(time.perf_counter(), steps, cpu, machine_busy_seconds()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + seconds
    peak_rss = 0.0
    while not _exited(child.pid) and time.monotonic() < deadline:
        if have_proc:
            peak_rss = max(peak_rss, session_rss_mib(child.pid))
        time.sleep(0.25)
    if not _exited(child.pid):
        _stop(child.pid)
    reader.join(timeout=10)  # its last lines are sampled before the child is reaped
    _, status, usage = os.wait4(child.pid, 0)  # reaps it, with its rusage
    child.returncode = result.exit_status = os.waitstatus_to_exitcode(status)
    result.peak_rss_mib = peak_rss if have_proc else (
        usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20)
    result.total_cpu_s = usage.ru_utime + usage.ru_stime
    result.output_tail = list(tail)
    if len(samples) < 2:
        result.problem = (f"fewer than 2 progress lines at or past step {warmup_steps} "
                          f"(exit status {result.exit_status}); its last output is below")
        return result
    first, last = samples[0], samples[-1]
    if not have_proc:  # no /proc: the child's whole CPU time, start-up included
        first = Sample(first.time, first.steps, 0.0, first.machine_busy)
        last = Sample(last.time, last.steps, result.total_cpu_s, last.machine_busy)
    for key, value in summarize(first, last, peer.audio_seconds_per_step, cores).items():
        setattr(result, key, value)
    return result


def _stop(pid: int) -> None:
    """SIGTERM to the child's whole session, SIGKILL if it has not ended after 10 s. The
    caller reaps it (wait4, for its rusage)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if _exited(pid):
                return
            time.sleep(0.05)


def _exited(pid: int) -> bool:
    """Whether the child has ended, without reaping it (its rusage is read by wait4)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


# ------------------------------------------------------------------ the comparison


def alternate(pairs: list[tuple[Peer, list[Peer]]], rounds: int) -> Iterator[tuple[int, Peer]]:
    """The run order: every round, for each peer and each of its audiocpc runs, the peer
    then audiocpc (peer, ours, peer, ours, ...)."""
    for round_index in range(1, rounds + 1):
        for peer, ours_runs in pairs:
            for ours in ours_runs:
                yield round_index, peer
                yield round_index, ours


def ratios(results: list[RunResult], peer: Peer, ours: Peer) -> dict[str, Any]:
    """ours / peer for both rates: the ratio of the medians over rounds, and each round's
    ratio of the runs taken side by side (a peer run and the audiocpc run after it)."""
    def same(result: RunResult, side: Peer) -> bool:
        return (result.name, result.preset, result.precision) == (side.name, side.preset, side.precision)

    out: dict[str, Any] = {"peer": peer.name, "ours": ours.name, "preset": ours.preset,
                           "precision": ours.precision}
    peer_runs = [r for r in results if same(r, peer) and r.problem is None]
    ours_at = [i for i, r in enumerate(results) if same(r, ours) and r.problem is None]
    for key in ("audio_per_second", "audio_per_cpu_second"):
        out[key] = float("nan")
        out[f"{key}_per_round"] = []
        if not peer_runs or not ours_at:
            continue
        out[key] = (statistics.median(getattr(results[i], key) for i in ours_at)
                    / statistics.median(getattr(r, key) for r in peer_runs))
        for i in ours_at:  # the peer run just before this one
            before = results[i - 1] if i else None
            if before is not None and same(before, peer) and before.problem is None:
                out[f"{key}_per_round"].append(getattr(results[i], key) / getattr(before, key))
    return out


def compare(pairs: list[tuple[Peer, list[Peer]]], rounds: int, seconds: float,
            warmup_steps: int, cores: int, report: Callable[[str], None] = print
            ) -> tuple[list[RunResult], list[dict[str, Any]]]:
    """Run every pair `rounds` times, alternating; each run's line as it ends, then the ratios."""
    results: list[RunResult] = []
    for round_index, side in alternate(pairs, rounds):
        result = run_once(side, round_index, seconds, warmup_steps, cores)
        results.append(result)
        report(format_run(result))
    summary = []
    for peer, ours_runs in pairs:
        for ours in ours_runs:
            summary.append(ratios(results, peer, ours))
            report(format_ratio(summary[-1], rounds))
    return results, summary


def format_run(r: RunResult) -> str:
    head = f"round {r.round}  {r.name:<24} {r.preset:<11} {r.precision:<5}"
    if r.problem:
        return f"{head} no rate: {r.problem}\n" + "\n".join(f"    | {line}" for line in r.output_tail)
    return (f"{head} {r.audio_per_second:8.2f} audio-s/s  {r.audio_per_cpu_second:8.2f} audio-s "
            f"per CPU-s  peak RSS {r.peak_rss_mib / 1024:5.2f} GiB  others {r.others_cores:4.2f} "
            f"cores ({100 * r.others_share:3.0f} %)  [{r.steps} steps in {r.wall_s:.1f} s]")


def format_ratio(s: dict[str, Any], rounds: int) -> str:
    def one(key: str) -> str:
        per_round = " ".join(f"{x:.2f}x" for x in s[f"{key}_per_round"])
        return f"{s[key]:.2f}x (side by side: {per_round or '-'})"

    return (f"{s['ours']} {s['preset']} {s['precision']} / {s['peer']}: audio-s/s {one('audio_per_second')}; "
            f"audio-s per CPU-s {one('audio_per_cpu_second')}; medians of {rounds} round(s)")


# ------------------------------------------------------------------ the sides


def audio_seconds_per_step(preset: str, overrides: list[str]) -> tuple[float, int, int]:
    """(seconds of audio per step, crops per step, samples per crop) of a preset."""
    from audiocpc import load_config

    cfg = load_config(preset, overrides)
    return cfg.data.N * cfg.data.crop_samples / cfg.data.sample_rate, cfg.data.N, cfg.data.crop_samples


def thread_env(threads: int) -> dict[str, str]:
    """One thread count for every side: torch/OpenMP/MKL and TensorFlow."""
    return {"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": "1"}


def ours(preset: str, precision: str, data: Path, workdir: Path, args: argparse.Namespace) -> Peer:
    """`audiocpc train` on `preset`: one long epoch, no checkpoint or validation inside the
    window, the same threads as the peers."""
    base = shlex.split(args.audiocpc_command) if args.audiocpc_command else [sys.executable, "-m", "audiocpc"]
    never = 10**6
    overrides = [f"train.mixed_precision={precision}", f"train.device={args.device}",
                 f"train.threads={args.threads}", "train.epochs=1", f"train.steps_per_epoch={never}",
                 f"train.checkpoint_every={never}", "train.validation_fraction=0",
                 "data.num_workers=0", *args.overrides]
    per_step, _, _ = audio_seconds_per_step(preset, overrides)
    command = [*base, "train", "--preset", preset, "--data", str(data), "--out", str(workdir / "runs"),
               "--name", f"compare_{preset}_{precision}", "--force"]
    for item in overrides:
        command += ["--set", item]
    return Peer("audiocpc", preset, precision, command, Path.cwd(), per_step, progress_bar_counter,
                {**thread_env(args.threads), "TQDM_MININTERVAL": "0"})


def reference_peer(checkout: Path, data: Path, args: argparse.Namespace) -> Peer:
    per_step, _, _ = audio_seconds_per_step("1dconv_gru", [])
    command = [args.reference_python, "train_cpc.py", *shlex.split(args.reference_args)]
    return Peer("reference framework", "1dconv_gru", "own", command, checkout, per_step,
                progress_bar_counter, thread_env(args.threads))


def cpc_audio_peer(checkout: Path, data: Path, workdir: Path, args: argparse.Namespace) -> Peer:
    per_step, batch, crop = audio_seconds_per_step("cpc_paper", [])
    command = [args.cpc_audio_python, "cpc/train.py", "--pathDB", str(data), "--file_extension", ".wav",
               "--pathCheckpoint", str(workdir / "cpc_audio_checkpoint"), "--restart",
               "--nEpoch", "1000", "--batchSizeGPU", str(batch), "--negativeSamplingExt", "128",
               "--sizeWindow", str(crop), "--logging_step", "1", "--n_process_loader", "1",
               "--ignore_cache", *shlex.split(args.cpc_audio_args)]
    env = {**thread_env(args.threads),
           "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return Peer("CPC_audio", "cpc_paper", "own", command, checkout, per_step, cpc_audio_counter, env)


PEERS = (("reference", "the reference framework", "train_cpc.py",
          "--reference PATH (a checkout of the TensorFlow CPC framework; see this script's docstring)"),
         ("cpc_audio", "CPC_audio", "cpc/train.py",
          "--cpc-audio PATH (git clone https://github.com/facebookresearch/CPC_audio)"))


def available_peers(args: argparse.Namespace, report: Callable[[str], None] = print) -> dict[str, Path]:
    """The peers' checkouts that hold their training script; each missing one is skipped
    with one line saying why and how to get it."""
    found = {}
    for key, name, script, how in PEERS:
        path = getattr(args, key)
        if not path:
            report(f"compare: skipping {name}: no checkout given; give {how}")
            continue
        checkout = Path(path).expanduser()
        if not (checkout / script).is_file():
            report(f"compare: skipping {name}: {checkout / script} does not exist; give {how}")
            continue
        found[key] = checkout
    return found


def build_pairs(checkouts: dict[str, Path], data: Path, workdir: Path, args: argparse.Namespace
                ) -> list[tuple[Peer, list[Peer]]]:
    """Each peer with audiocpc's runs on its matching preset, one per precision."""
    precisions = args.precisions.split(",")
    pairs = []
    if "reference" in checkouts:
        pairs.append((reference_peer(checkouts["reference"], data, args),
                      [ours("1dconv_gru", p, data, workdir, args) for p in precisions]))
    if "cpc_audio" in checkouts:
        pairs.append((cpc_audio_peer(checkouts["cpc_audio"], data, workdir, args),
                      [ours("cpc_paper", p, data, workdir, args) for p in precisions]))
    return pairs


def cpu_model_name() -> str:
    """lscpu's "Model name" (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"machine: {cpu_model_name()}, {os.cpu_count()} cores, load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def make_data(workdir: Path) -> Path:
    """Eight 30 s files at 16 kHz in WORKDIR/data/train (both peers read 16 kHz wav; the
    reference resamples); files already there with the same content are kept."""
    from audiocpc.data.synthetic import make_demo_dataset

    return make_demo_dataset(workdir / "data", files_per_class=2, test_files_per_class=1,
                             seconds=30.0, sample_rate=16000) / "train"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--reference", help="a checkout of the reference framework (its train_cpc.py)")
    parser.add_argument("--cpc-audio", help="a checkout of CPC_audio (its cpc/train.py)")
    parser.add_argument("--reference-python", default=sys.executable,
                        help="the Python of the reference's own environment")
    parser.add_argument("--cpc-audio-python", default=sys.executable,
                        help="the Python of CPC_audio's own environment")
    parser.add_argument("--reference-args", default="", help="more arguments for train_cpc.py")
    parser.add_argument("--cpc-audio-args", default="", help="more arguments for cpc/train.py")
    parser.add_argument("--data", help="folder of audio (default: 30 s files at 16 kHz generated "
                        "into WORKDIR/data/train, the same path every time)")
    parser.add_argument("--workdir", default="results/compare",
                        help="where the generated data, audiocpc's runs and CPC_audio's checkpoints go")
    parser.add_argument("--precisions", default="none",
                        help="audiocpc's train.mixed_precision values, comma-separated (none,bf16,auto)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="more settings for audiocpc's runs")
    parser.add_argument("--device", default="cpu", help="audiocpc's train.device")
    parser.add_argument("--threads", type=int, default=1, help="threads for every side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=120.0, help="wall-clock limit of each run")
    parser.add_argument("--warmup-steps", type=int, default=3,
                        help="the window starts at the first progress line at or past this step")
    parser.add_argument("--audiocpc-command", help=argparse.SUPPRESS)  # tests: a fake in its place
    parser.add_argument("--json", help="write every run and the ratios to this file")
    args = parser.parse_args(argv)

    checkouts = available_peers(args)
    if not checkouts:
        print("compare: nothing to compare: give --reference PATH and/or --cpc-audio PATH "
              "(see python benchmarks/compare.py --help)", file=sys.stderr)
        return 2
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else make_data(workdir)
    pairs = build_pairs(checkouts, data, workdir, args)
    cores = os.cpu_count() or 1
    print(machine_line())
    print(f"data: {data}  (the reference reads its path from params.py: path_data_cpc)")
    results, summary = compare(pairs, args.rounds, args.seconds, args.warmup_steps, cores)
    print(machine_line())
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": cpu_model_name(), "cores": cores,
                                               "runs": [asdict(r) for r in results],
                                               "ratios": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
