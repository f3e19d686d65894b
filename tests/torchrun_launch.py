"""Launching torchrun from tests: one free port, one timeout that kills the whole process
group (launcher and workers) and fails the test with the end of its stderr."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(nproc: int, *target: str) -> list[str]:
    """`python -m torch.distributed.run` on localhost; `target` is a script or `-m module`
    and its arguments."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
            "--master-addr=127.0.0.1", f"--master-port={free_port()}", *target]


def start(command: list[str], **env: str) -> subprocess.Popen:
    """Start the launcher in its own session (so a timeout can kill its workers too), one
    torch thread per worker plus `env`."""
    return subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS="1", **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    """Wait for the launcher; past the timeout kill it and its workers and fail."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish within {timeout} s:\n{err[-3000:]}")
    return proc.returncode, out + err
