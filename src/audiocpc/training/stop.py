"""Ctrl-C and SIGTERM as a request to stop at the next step boundary."""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any


class StopRequest:
    """Turns Ctrl-C / SIGTERM into a flag checked between steps, so the run stops at a step
    boundary with a consistent checkpoint instead of mid-update."""

    def __init__(self) -> None:
        self.requested = False
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        # A second Ctrl-C stops at once; one within a second of the first is the same
        # Ctrl-C again, as torchrun forwards it to workers that already received it.
        if self.requested and time.monotonic() - self._first_at > 1.0:
            raise KeyboardInterrupt
        if not self.requested:
            self._first_at = time.monotonic()
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
