"""Damaged checkpoints give one clear line, never a traceback or a silently wrong model
(issue 14, item 11): entries of the wrong type, absurd sizes in the stored configuration,
flipped bytes (caught by the content hash stored beside the checkpoint) and NaN weights."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from audiocpc import load_config
from audiocpc.errors import CheckpointError
from audiocpc.training import checkpoint as checkpoint_module
from audiocpc.training.checkpoint import (CHECKPOINT_NAME, HASH_SUFFIX, load_checkpoint,
                                          save_checkpoint)
from audiocpc.training import restore as restore_module
from audiocpc.training.restore import restore_run
from audiocpc.training.trainer import train

BASE = ["output.name=run", "train.epochs=1", "train.steps_per_epoch=2", "train.checkpoint_every=2",
        "data.N=4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tone_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("damage-base")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUDIOCPC_CACHE", str(tmp_path_factory.getbasetemp() / "audio-cache"))
        train(load_config("1dconv_tiny", [f"output.dir={out}", *BASE]), tone_dir, progress=False)
    return out


@pytest.fixture
def out(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(trained, copy)
    return copy


def _run(out: Path) -> Path:
    return out / "cpc" / "run"


def _rewrite(run_dir: Path, **entries: object) -> None:
    """Change entries of the checkpoint, then store it with a matching hash (as the trainer
    would have written it), so only the damage itself is left to find."""
    payload = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    payload.update(entries)
    save_checkpoint(run_dir / CHECKPOINT_NAME, payload)


def _refused_everywhere(out: Path, tone_dir: Path, match: str) -> None:
    run_dir = _run(out)
    for attempt in (lambda: load_checkpoint(run_dir), lambda: restore_run(run_dir, device="cpu"),
                    lambda: train(load_config("1dconv_tiny", [f"output.dir={out}", *BASE,
                                                              "train.epochs=2"]),
                                  tone_dir, resume=True, progress=False)):
        with pytest.raises(CheckpointError, match=match) as err:
            attempt()
        message = str(err.value)
        assert "\n" not in message and str(run_dir) in message and len(message) < 500, message


@pytest.mark.parametrize("entry, value", [("config", "not a dict"), ("config", [1, 2]),
                                          ("model", "weights"), ("model", {"w": "not a tensor"}),
                                          ("step", "seven"), ("optimizer", 3)])
def test_entries_of_the_wrong_type(entry: str, value: object, out: Path, tone_dir: Path) -> None:
    _rewrite(_run(out), **{entry: value})
    _refused_everywhere(out, tone_dir, entry)


def test_absurd_size_in_the_stored_configuration(out: Path, tone_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    payload = torch.load(_run(out) / CHECKPOINT_NAME, weights_only=True)
    payload["config"]["model"]["z_dim"] = 10**7
    _rewrite(_run(out), config=payload["config"])

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built: the size must be refused first")

    # refused, not built (checked directly, not by a duration that varies with the load)
    monkeypatch.setattr(restore_module, "build_cpc", never)
    with pytest.raises(CheckpointError, match=r"model\.z_dim") as err:
        restore_run(_run(out), device="cpu")
    assert "\n" not in str(err.value)


def test_non_finite_weights_are_refused(out: Path, tone_dir: Path) -> None:
    payload = torch.load(_run(out) / CHECKPOINT_NAME, weights_only=True)
    name = next(k for k, v in payload["model"].items() if v.is_floating_point())
    payload["model"][name].view(-1)[0] = float("nan")
    _rewrite(_run(out), model=payload["model"])
    _refused_everywhere(out, tone_dir, "NaN or infinite")


def test_hash_is_written_beside_the_checkpoint(out: Path) -> None:
    run_dir = _run(out)
    hash_file = run_dir / (CHECKPOINT_NAME + HASH_SUFFIX)
    digest = hashlib.sha256((run_dir / CHECKPOINT_NAME).read_bytes()).hexdigest()
    assert hash_file.read_text() == f"{digest}  {CHECKPOINT_NAME}\n"  # sha256sum -c reads it


def test_flipped_bytes_are_caught_by_the_hash(out: Path, tone_dir: Path) -> None:
    path = _run(out) / CHECKPOINT_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside tensor data, which torch reads without complaint
    path.write_bytes(bytes(data))
    _refused_everywhere(out, tone_dir, "hash")


def test_a_checkpoint_without_a_hash_still_loads(out: Path) -> None:
    (_run(out) / (CHECKPOINT_NAME + HASH_SUFFIX)).unlink()
    assert load_checkpoint(_run(out))["step"] == 2  # runs written before the hash existed


def test_a_kill_between_the_two_renames_leaves_a_loadable_checkpoint(out: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run(out)
    payload = load_checkpoint(run_dir)
    real_replace = os.replace

    def die_before_the_checkpoint_rename(src: os.PathLike, dst: os.PathLike) -> None:
        if Path(dst).name == CHECKPOINT_NAME:
            raise SystemExit("killed")  # what kill -9 leaves: the hash already replaced
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", die_before_the_checkpoint_rename)
    with pytest.raises(SystemExit):
        save_checkpoint(run_dir / CHECKPOINT_NAME, {**payload, "step": 3})
    monkeypatch.setattr(checkpoint_module.os, "replace", real_replace)
    assert load_checkpoint(run_dir)["step"] == 2  # the old one, still accepted
    save_checkpoint(run_dir / CHECKPOINT_NAME, {**payload, "step": 4})
    assert load_checkpoint(run_dir)["step"] == 4
    assert len((run_dir / (CHECKPOINT_NAME + HASH_SUFFIX)).read_text().splitlines()) == 1
