"""Bad settings and an empty or missing data folder are answered before torch is imported
(so in a fraction of a second after start-up, however slow the machine's torch import is)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = ("import sys; from audiocpc.cli import main; code = main({args!r}); "
         "print('torch loaded' if 'torch' in sys.modules else 'no torch', code)")


def _answer(args: list[str]) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True,
                          text=True, timeout=120)
    return done.stdout.strip(), done.stderr


@pytest.mark.parametrize("args", [
    ["config", "show", "1dconv_tiny", "--set", "train.epochs=three"],
    ["train", "--preset", "1dconv_tiny", "--data", "{empty}"],
    ["train", "--preset", "1dconv_tiny", "--data", "{missing}"],
])
def test_refusals_come_before_torch_is_imported(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    args = [a.format(empty=tmp_path / "empty", missing=tmp_path / "missing") for a in args]
    out, err = _answer(args + (["--out", str(tmp_path / "out")] if args[0] == "train" else []))
    assert out == "no torch 2", err
    errors = [line for line in err.splitlines() if line.startswith("audiocpc: error")]
    assert len(errors) == 1
    assert not (tmp_path / "out").exists()


def test_audio_only_below_a_linked_folder_is_found(tmp_path: Path) -> None:
    from audiocpc.data.audio import any_audio_file, discover_audio_files

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.wav").write_bytes(b"")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    # the quick check agrees with discovery: both follow links, neither loops forever
    assert any_audio_file(tmp_path / "data", ["wav"]) and discover_audio_files(tmp_path / "data", ["wav"])
    assert not any_audio_file(tmp_path / "data", ["flac"])
