"""Exception types that carry a user-facing message.

The CLI turns every `AudiocpcError` into a clear message and exit code 2 instead of a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any


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


class DeadRunError(AudiocpcError):
    """Training is not learning (loss at chance or collapsed z) and `train.on_dead_run` is `stop`."""


class DiskFullError(AudiocpcError):
    """A write failed because the file system is full (or over quota)."""


class RunInUseError(AudiocpcError):
    """Another live process holds the lock of a run folder."""


# Values echoed in messages are cut short: a huge or deeply nested value (a YAML bomb's
# expansion) must not become a huge message.
_SHORT = reprlib.Repr()
_SHORT.maxstring = 60
_SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT.maxlevel = 3
SHOWN_CHARS = 120


def short_repr(value: Any) -> str:
    """A repr of at most about SHOWN_CHARS characters, whatever the size or depth of `value`
    (it never walks more than a few elements of it)."""
    text = _SHORT.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
