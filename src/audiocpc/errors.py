"""Exception types that carry a user-facing message.

The CLI turns every `AudiocpcError` into a clear message and exit code 2 instead of a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class AudiocpcError(Exception):
    """Base class for errors caused by the user's data or settings."""


class ConfigError(AudiocpcError):
    """One or more invalid settings. Each problem is one line that names the field."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class AudioReadError(AudiocpcError):
    """A single audio file that cannot be used, with the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NoUsableAudioError(AudiocpcError):
    """No file in a data folder can be used with the current settings."""


class CheckpointError(AudiocpcError):
    """A checkpoint that is missing, corrupt or refused by the safe loader."""


class RunExistsError(AudiocpcError):
    """A run folder already holds a run and neither --resume nor --force was given."""


class NonFiniteLossError(AudiocpcError):
    """Training produced a NaN or infinite loss and `train.on_nan` is `stop`."""


class DiskFullError(AudiocpcError):
    """A write failed because the file system is full (or over quota)."""


class RunInUseError(AudiocpcError):
    """Another live process holds the lock of a run folder."""
