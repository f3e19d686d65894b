"""benchmarks/compare.py with fake peers: tiny scripts that burn a known CPU time per step and
print progress the way each side does (Keras's bar for the reference, CPC_audio's `Update N`,
tqdm for audiocpc). Checks the alternation, the parsing and the arithmetic of the rates and
ratios against the fakes' known costs, the stop after --seconds, and the skipped peers."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark


def _load_tool():
    return load_benchmark("compare")


compare = _load_tool()

# --fake STYLE STEPS BURN PAUSE LOG: STEPS steps of BURN CPU-seconds and PAUSE s of sleep each,
# progress printed in STYLE, one line per run appended to LOG (which side, which preset).
FAKE = r'''
import signal, sys, time
args = sys.argv[sys.argv.index("--fake") + 1:]
style, steps, burn, pause, log = args[0], int(args[1]), float(args[2]), float(args[3]), args[4]
argv = sys.argv[1:]
preset = argv[argv.index("--preset") + 1] if "--preset" in argv else "-"
precision = next((a.split("=")[1] for a in argv if a.startswith("train.mixed_precision=")), "-")
with open(log, "a") as f:
    f.write(f"{style} {preset} {precision}\n")

def work():
    end = time.thread_time() + burn
    while time.thread_time() < end:
        pass
    time.sleep(pause)

if style == "keras":  # per-epoch numbering, redrawn with \r
    per_epoch = steps // 2
    for epoch in (1, 2):
        print(f"Epoch {epoch}/2", flush=True)
        for i in range(1, per_epoch + 1):
            work()
            sys.stdout.write(f"\r{i}/{per_epoch} [=====>....] - ETA: 1s - loss: 2.0794")
            sys.stdout.flush()
        print(flush=True)
elif style == "cpc_audio":
    per_epoch = steps // 2
    for epoch in (0, 1):
        print(f"Starting epoch {epoch}", flush=True)
        for i in range(1, per_epoch + 1):
            work()
            print(f"Update {i}\nelapsed: 0.1 s\n12.0 ms per batch, 1.5 ms / example", flush=True)
else:  # tqdm on stderr, numbered over the whole run
    for i in range(1, steps + 1):
        work()
        sys.stderr.write(f"\rtrain x:   0%|          | {i}/1000000 [00:01<10:00,  1.2step/s, loss=2.079]")
        sys.stderr.flush()
'''

REFERENCE_AUDIO = 8 * 4.0    # 1dconv_gru: N=8 crops of 4 s per step
PAPER_AUDIO = 8 * 20480 / 16000  # cpc_paper: N=8 crops of 1.28 s


def _fake_checkouts(tmp_path: Path) -> tuple[Path, Path, Path]:
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE)
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "train_cpc.py").write_text(FAKE)
    cpc_audio = tmp_path / "CPC_audio"
    (cpc_audio / "cpc").mkdir(parents=True)
    (cpc_audio / "cpc" / "train.py").write_text(FAKE)
    return fake, reference, cpc_audio


@pytest.mark.slow  # 8 short child processes
def test_peers_and_audiocpc_take_turns_and_their_rates_match_the_fakes(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    fake, reference, cpc_audio = _fake_checkouts(tmp_path)
    log = tmp_path / "runs.log"
    out = tmp_path / "compare.json"
    steps, pause = 12, 0.02
    code = compare.main([
        "--reference", str(reference), "--reference-args", f"--fake keras {steps} 0.06 {pause} {log}",
        "--cpc-audio", str(cpc_audio), "--cpc-audio-args", f"--fake cpc_audio {steps} 0.06 {pause} {log}",
        "--audiocpc-command", f"{sys.executable} {fake} --fake tqdm {steps} 0.03 {pause} {log}",
        "--data", str(tmp_path), "--workdir", str(tmp_path / "work"), "--rounds", "2", "--seconds", "60", "--warmup-steps", "2",
        "--json", str(out)])
    assert code == 0
    # peer, audiocpc on the matching preset, the other peer, audiocpc: twice
    order = log.read_text().split("\n")[:-1]
    assert order == ["keras - -", "tqdm 1dconv_gru none", "cpc_audio - -", "tqdm cpc_paper none"] * 2
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert [(r["name"], r["preset"], r["round"]) for r in runs] == [
        ("reference framework", "1dconv_gru", 1), ("audiocpc", "1dconv_gru", 1),
        ("CPC_audio", "cpc_paper", 1), ("audiocpc", "cpc_paper", 1)] * 1 + [
        ("reference framework", "1dconv_gru", 2), ("audiocpc", "1dconv_gru", 2),
        ("CPC_audio", "cpc_paper", 2), ("audiocpc", "cpc_paper", 2)]
    burns = [0.06, 0.03, 0.06, 0.03] * 2
    audio = [REFERENCE_AUDIO, REFERENCE_AUDIO, PAPER_AUDIO, PAPER_AUDIO] * 2
    for run, burn, per_step in zip(runs, burns, audio):
        assert run["problem"] is None, run
        assert run["steps"] == steps - 2  # the window: from step 2 to the last, across epochs
        assert run["audio_s"] == pytest.approx(run["steps"] * per_step)
        # the fake burns `burn` CPU-s a step: audio per CPU-second is known (Python's own
        # printing and /proc reads add a little)
        assert run["audio_per_cpu_second"] == pytest.approx(per_step / burn, rel=0.3)
        # wall time: positive (no upper bound: under load the parent sees the window's first
        # step late, which shortens the window, so a bound from burn + pause would be flaky)
        assert run["audio_per_second"] > 0
        assert run["audio_per_second"] == pytest.approx(run["audio_s"] / run["wall_s"])
        # a small Python process: not the parent's size, which wait4's max RSS would report
        assert 1 < run["peak_rss_mib"] < 100 and run["exit_status"] == 0
        assert 0 <= run["others_share"] <= 1
    ratio_gru, ratio_paper = report["ratios"]
    for ratio, peer_index in ((ratio_gru, 0), (ratio_paper, 2)):
        peer_runs = [runs[peer_index], runs[peer_index + 4]]
        ours_runs = [runs[peer_index + 1], runs[peer_index + 5]]
        for key in ("audio_per_second", "audio_per_cpu_second"):
            # the median of two rounds is their mean
            assert ratio[key] == pytest.approx(_mean(ours_runs, key) / _mean(peer_runs, key))
            assert ratio[f"{key}_per_round"] == pytest.approx(
                [o[key] / p[key] for o, p in zip(ours_runs, peer_runs)])
        assert ratio["audio_per_cpu_second"] == pytest.approx(2.0, rel=0.3)  # burns 0.06 vs 0.03
    printed = capsys.readouterr().out
    assert "machine: " in printed
    assert "audiocpc 1dconv_gru none / reference framework: audio-s/s" in printed
    assert "audiocpc cpc_paper none / CPC_audio: audio-s/s" in printed


def _mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def test_a_run_past_its_time_is_stopped_and_measured_up_to_then(tmp_path: Path) -> None:
    fake, _, _ = _fake_checkouts(tmp_path)
    side = compare.Peer("slow", "1dconv_gru", "none",
                        [sys.executable, str(fake), "--fake", "tqdm", "100000", "0.01", "0.04",
                         str(tmp_path / "log")], tmp_path, 32.0, compare.progress_bar_counter)
    result = compare.run_once(side, 1, seconds=1.5, warmup_steps=1, cores=2)
    assert result.exit_status == -15  # SIGTERM after --seconds
    assert result.problem is None and result.steps >= 2
    assert result.wall_s < 1.6


def test_a_side_that_cannot_start_is_reported_not_raised(tmp_path: Path) -> None:
    side = compare.Peer("reference framework", "1dconv_gru", "own",
                        [str(tmp_path / "no-python"), "train_cpc.py"], tmp_path, 32.0,
                        compare.progress_bar_counter)
    result = compare.run_once(side, 1, seconds=5, warmup_steps=1, cores=2)
    assert result.problem is not None and "could not start" in result.problem
    assert "no rate: could not start" in compare.format_run(result)


def test_the_rates_of_a_window_by_hand() -> None:
    first = compare.Sample(time=10.0, steps=2, child_cpu=5.0, machine_busy=100.0)
    last = compare.Sample(time=20.0, steps=12, child_cpu=9.0, machine_busy=115.0)
    rates = compare.summarize(first, last, audio_per_step=32.0, cores=2)
    assert rates["steps"] == 10 and rates["audio_s"] == 320.0
    assert rates["audio_per_second"] == 32.0        # 320 s of audio in 10 s
    assert rates["audio_per_cpu_second"] == 80.0    # in 4 CPU-s
    assert rates["others_cores"] == pytest.approx(1.1)   # 15 busy CPU-s - the child's 4, over 10 s
    assert rates["others_share"] == pytest.approx(0.55)  # of 2 cores


def test_progress_lines_are_counted_across_epochs_and_redraws() -> None:
    keras = io.BytesIO(b"Epoch 1/2\n\r1/3 [==>...] - ETA: 2s\r2/3 [====>.]\r3/3 [======]\n"
                       b"Epoch 2/2\n\r1/3 [==>...]\r2/3 [=====]\n")
    counter = compare.progress_bar_counter()
    totals = [counter.feed(line) for line in compare.output_lines(keras)]
    assert [t for t in totals if t is not None] == [1, 2, 3, 4, 5]
    counter = compare.cpc_audio_counter()
    lines = ["Starting epoch 0", "Update 1", "Update 2", "elapsed: 0.5 s", "Starting epoch 1",
             "Update 1"]
    assert [counter.feed(line) for line in lines] == [None, 1, 2, None, None, 3]
    tqdm = compare.progress_bar_counter()
    assert tqdm.feed("train x:   0%|    | 41/1000000 [00:10<5:00:00, 4.1step/s, loss=2.0]") == 41


def test_alternation_order_without_running_anything() -> None:
    def side(name: str, precision: str = "own") -> object:
        return compare.Peer(name, "p", precision, [], Path("."), 1.0, compare.progress_bar_counter)

    ref, ours_f32, ours_bf16 = side("ref"), side("ours", "none"), side("ours", "bf16")
    order = [(r, s.name, s.precision) for r, s in compare.alternate([(ref, [ours_f32, ours_bf16])], 2)]
    assert order == [(1, "ref", "own"), (1, "ours", "none"), (1, "ref", "own"), (1, "ours", "bf16"),
                     (2, "ref", "own"), (2, "ours", "none"), (2, "ref", "own"), (2, "ours", "bf16")]


def test_missing_peers_are_skipped_with_a_line_each(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert compare.main(["--reference", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("compare: skipping the reference framework: ")
    assert str(tmp_path / "nowhere" / "train_cpc.py") in lines[0]
    assert lines[1].startswith("compare: skipping CPC_audio: no checkout given; give --cpc-audio PATH")
    assert "nothing to compare" in captured.err


def test_audiocpc_runs_the_matching_preset_with_the_peers_threads(tmp_path: Path) -> None:
    args = compare.main.__globals__["argparse"].Namespace(
        audiocpc_command=None, device="cpu", threads=1, overrides=[], precisions="none")
    side = compare.ours("cpc_paper", "bf16", tmp_path / "data", tmp_path, args)
    assert side.command[1:5] == ["-m", "audiocpc", "train", "--preset"]
    assert "train.mixed_precision=bf16" in side.command and "train.threads=1" in side.command
    assert side.audio_seconds_per_step == pytest.approx(PAPER_AUDIO)
    assert side.env["OMP_NUM_THREADS"] == "1"
