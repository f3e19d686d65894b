"""`--preset auto`: a preset chosen from the durations of the files, with the reason.

Reads only the files' headers (no decoding): folders of short clips get `clips`, folders of
long recordings get `recordings`. Both work at 16 kHz with each recording standardised, so
the rates and levels found need no other choice."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from audiocpc.data.audio import audio_info, discover_audio_files
from audiocpc.errors import AudioReadError, NoUsableAudioError

LONG_SECONDS = 3.0  # a median file longer than this is a folder of recordings
SAMPLED_FILES = 2000  # enough headers to know the durations of any folder


def choose_preset(root: str | Path, extensions: Iterable[str] = ("wav", "flac", "ogg", "mp3")
                  ) -> tuple[str, str]:
    """(preset name, one line saying why)."""
    paths = discover_audio_files(Path(root), list(extensions))
    if not paths:
        raise NoUsableAudioError(f"--preset auto: no audio files below {root} to choose a preset from")
    step = max(1, len(paths) // SAMPLED_FILES)
    durations = []
    for path in paths[::step]:
        try:
            info = audio_info(path)
        except AudioReadError:
            continue
        if info.samplerate > 0:
            durations.append(info.frames / info.samplerate)
    if not durations:
        raise NoUsableAudioError(f"--preset auto: none of the files below {root} can be read")
    median = float(np.median(durations))
    name = "recordings" if median > LONG_SECONDS else "clips"
    crop = "1.28 s crops" if name == "recordings" else "0.25 s crops"
    return name, (f"--preset auto chose '{name}': the median file is {median:.2f} s "
                  f"({len(durations)} of {len(paths)} files read), so {crop}; "
                  f"files of more than {LONG_SECONDS:g} s get 'recordings', shorter ones 'clips'")
