"""Multi-process training under torchrun, on CPU with gloo, on loopback only.

Each test launches `python -m torch.distributed.run --nproc-per-node=2` in its own session,
bounded by a timeout after which the whole process group is killed.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from torchrun_launch import finish, start, torchrun_command
import torch

from audiocpc.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from audiocpc import load_config
from audiocpc.presets import config_from_dict
from audiocpc.training.distributed import SINGLE_PROCESS, choose_backend, effective_lr, init_from_env
from audiocpc.errors import ConfigError
from audiocpc.models import build_cpc
from audiocpc.training.trainer import train

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not torch.distributed.is_available()
                                or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")]

WORKER = Path(__file__).with_name("distributed_worker.py")
LAUNCH_TIMEOUT_S = 120
# 1dconv_tiny on the CPU (gloo even where CUDA exists), 3 steps per epoch, a checkpoint each.
SHORT = ["train.device=cpu", "train.steps_per_epoch=3", "train.checkpoint_every=3"]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def _torchrun(entry: list[str], args: list[str]) -> list[str]:
    return torchrun_command(2, *entry, "train", "--preset", "1dconv_tiny", "--quiet", *args)


def _start(command: list[str], dump: Path) -> subprocess.Popen:
    return start(command, AUDIOCPC_TEST_DUMP=str(dump))


def _finish(proc: subprocess.Popen, timeout: float = LAUNCH_TIMEOUT_S) -> tuple[int, str]:
    return finish(proc, timeout)


def _single_process_model(run_dir: Path) -> CPCModel:
    """The checkpoint as a single-process user loads it (strictly: no `module.` prefixes)."""
    try:
        from audiocpc.api import load
    except ImportError:  # the public loader is not in this tree: load it by hand
        payload = load_checkpoint(run_dir)
        model = build_cpc(config_from_dict(payload["config"]))
        model.load_state_dict(payload["model"])
        return model
    loaded = load(run_dir)
    return getattr(loaded, "model", loaded)


def _assert_same_parameters(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key].cpu(), second[key].cpu()), key


# Tolerance of the loss-curve comparisons. Two processes with data.N=8 and negatives from the
# global batch see the same 16 crops per step as one process with data.N=16 (the sampler
# deals slices of one global batch) and compute the same loss and, after DDP's averaging,
# the same gradient, but sum in another order; float32 rounding grows a little through six
# Adam steps. Measured differences are ~1e-6; 1e-4 still fails for any real divergence
# (a wrong negative bank or gradient changes the loss by > 1e-2 within three steps).
LOSS_TOLERANCE = 1e-4


def test_two_processes_train_like_one_process_with_the_same_global_batch(tone_dir: Path,
                                                                        tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    overrides = SHORT + ["train.epochs=2", "data.N=8", "loss.negatives.across_ranks=true"]
    args = ["--data", str(tone_dir), "--out", str(tmp_path / "ddp"), "--name", "run", *_sets(overrides)]
    code, output = _finish(_start(_torchrun([str(WORKER)], args), dump))
    assert code == 0, output[-4000:]
    assert "global batch 16" in output and "lr 0.002" in output

    # Both ranks end with identical parameters; they are the checkpoint's, and they moved.
    rank0 = torch.load(dump / "rank0.pt", weights_only=True)
    rank1 = torch.load(dump / "rank1.pt", weights_only=True)
    _assert_same_parameters(rank0, rank1)
    run_dir = tmp_path / "ddp" / "cpc" / "run"
    payload = load_checkpoint(run_dir)
    assert not any(key.startswith("module.") for key in payload["model"])
    _assert_same_parameters(payload["model"], rank0)
    torch.manual_seed(0)  # the runs' seed (train.seed)
    initial = build_cpc(config_from_dict(payload["config"])).state_dict()
    # every weight trained (integer buffers, such as the encoder's recorded conv paths, do not)
    assert not any(torch.equal(initial[k], rank0[k]) for k in rank0 if rank0[k].is_floating_point())

    # Only rank 0 wrote: two checkpoints (steps 3 and 6) into the one file.
    assert (dump / "rank0.saves").read_text() == "2"
    assert (dump / "rank1.saves").read_text() == "0"
    assert sorted(p.name for p in run_dir.iterdir() if "checkpoint" in p.name) == [
        CHECKPOINT_NAME, CHECKPOINT_NAME + ".sha256"]  # and its hash; no temporary left
    assert payload["step"] == 6 and payload["world_size"] == 2 and payload["finished"]

    # One process with the same seed and global batch: the same loss curve and metrics.
    config = load_config("1dconv_tiny", SHORT + ["train.epochs=2", "data.N=16",
                                                 f"output.dir={tmp_path / 'one'}", "output.name=run"])
    single = train(config, tone_dir, progress=False)
    np.testing.assert_allclose(payload["step_losses"], single.step_losses, rtol=0, atol=LOSS_TOLERANCE)
    assert single.step_losses[-1] < single.step_losses[0] - 0.1  # the curve is not flat
    for ddp_epoch, one_epoch in zip(payload["history"], single.history, strict=True):
        assert ddp_epoch["loss"] == pytest.approx(one_epoch["loss"], abs=LOSS_TOLERANCE)
        # accuracy is averaged over ranks: a rounding-level difference may flip one of the
        # 3 steps x 16 predictions per epoch (1/48), nothing more
        for key in ("acc_k1", "acc_k4"):
            assert ddp_epoch[key] == pytest.approx(one_epoch[key], abs=1 / 48 + 1e-6)

    # The checkpoint is an ordinary single-process checkpoint.
    model = _single_process_model(run_dir)
    _assert_same_parameters(model.state_dict(), rank0)


def test_single_process_checkpoint_continues_exactly_on_two_processes(tone_dir: Path,
                                                                      tmp_path: Path) -> None:
    # a constant rate: with a decaying schedule, a run extended from 3 to 6 steps differs
    # from one planned for 6 by design (the first 3 steps decayed towards step 3)
    one = ["data.N=16", f"output.dir={tmp_path}", "train.lr_schedule=constant"]
    reference = train(load_config("1dconv_tiny", SHORT + one + ["train.epochs=2", "output.name=ref"]),
                      tone_dir, progress=False)
    first_half = train(load_config("1dconv_tiny", SHORT + one + ["train.epochs=1", "output.name=run"]),
                       tone_dir, progress=False)
    assert first_half.steps == 3

    # The README's command: `torchrun ... -m audiocpc train ... --resume`.
    args = ["--data", str(tone_dir), "--out", str(tmp_path), "--name", "run", "--resume",
            *_sets(SHORT + ["train.epochs=2", "data.N=8", "loss.negatives.across_ranks=true",
                            "train.lr_schedule=constant"])]
    code, output = _finish(_start(_torchrun(["-m", "audiocpc"], args), tmp_path))
    assert code == 0, output[-4000:]
    payload = load_checkpoint(tmp_path / "cpc" / "run")
    assert payload["step"] == 6 and payload["world_size"] == 2
    np.testing.assert_allclose(payload["step_losses"], reference.step_losses, rtol=0,
                               atol=LOSS_TOLERANCE)


def test_killed_rank_stops_the_run_cleanly_and_it_resumes(tone_dir: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    run_dir = tmp_path / "cpc" / "run"
    base = ["--data", str(tone_dir), "--out", str(tmp_path), "--name", "run"]
    long_run = ["train.device=cpu", "data.N=8", "train.steps_per_epoch=5",
                "train.checkpoint_every=5", "train.epochs=400"]
    proc = _start(_torchrun([str(WORKER)], base + _sets(long_run)), dump)
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while not (run_dir / CHECKPOINT_NAME).exists() and proc.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no checkpoint appeared")
        time.sleep(0.1)
    assert proc.poll() is None, _finish(proc)[1][-3000:]
    os.kill(int((dump / "rank1.pid").read_text()), signal.SIGKILL)
    code, output = _finish(proc, timeout=LAUNCH_TIMEOUT_S)

    assert code != 0
    assert "audiocpc: error (rank 0): rank 0: lost contact with the other processes" in output
    # gloo saw the closed connection, rather than waiting out train.distributed_timeout_s (a
    # cause read from the message, not a duration: durations fail under load)
    cause = output.split("lost contact with the other processes")[1].split("Another rank")[0]
    assert "timed out" not in cause.lower() and "timeout" not in cause.lower(), cause
    assert "run the same command with --resume" in output
    assert "Traceback" not in output.split("audiocpc: error")[0]  # no worker traceback first
    saved = load_checkpoint(run_dir)
    step = saved["step"]
    assert step % 5 == 0 and 0 < step < 2000 and len(saved["step_losses"]) == step
    # Negatives come from each process's own batch by default: 7 per prediction, so an
    # untrained model starts near log(8), not log(16).
    assert abs(saved["step_losses"][0] - math.log(8)) < 0.1

    # Resume with the README's command and finish one more epoch.
    resume = base + ["--resume"] + _sets(long_run[:-1] + [f"train.epochs={step // 5 + 1}"])
    code, output = _finish(_start(_torchrun(["-m", "audiocpc"], resume), dump))
    assert code == 0, output[-4000:]
    finished = load_checkpoint(run_dir)
    assert finished["step"] == step + 5 and finished["finished"]
    assert finished["step_losses"][:step] == saved["step_losses"]
    model = _single_process_model(run_dir)
    with torch.no_grad():
        z, c, _ = model.extract_features(torch.zeros(1, 8000, device=next(model.parameters()).device))
    assert torch.isfinite(c).all()


def test_without_a_launcher_training_is_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert init_from_env("auto") is SINGLE_PROCESS
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    assert init_from_env("auto") is SINGLE_PROCESS  # torchrun with one process


def test_nccl_with_more_processes_than_gpus_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name, value in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="nccl needs one GPU per process, but 2 processes share 1"):
        init_from_env("auto")


def test_backend_and_learning_rate_rules() -> None:
    expected = "nccl" if torch.cuda.is_available() else "gloo"
    assert choose_backend("auto") == expected
    assert choose_backend("auto", "cpu") == "gloo"  # a CPU model never gets NCCL
    assert choose_backend("gloo") == "gloo"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.distributed_backend"):
            choose_backend("nccl")
    assert effective_lr(2e-4, "none", 4) == 2e-4
    assert effective_lr(2e-4, "linear", 4) == pytest.approx(8e-4)
    with pytest.raises(ConfigError, match="train.lr_scaling"):
        load_config("1dconv_tiny", ["train.lr_scaling=sqrt"])
