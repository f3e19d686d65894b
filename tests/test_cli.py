"""The command line itself: what a bare `audiocpc` says."""

from __future__ import annotations

import pytest

from audiocpc.cli import main


def test_no_arguments_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    text = capsys.readouterr().err
    for command in ("train", "embed", "classify", "tsne", "run", "demo", "check-data", "config"):
        assert command in text
