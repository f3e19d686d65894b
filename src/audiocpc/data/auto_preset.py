"""`--preset auto`: a preset chosen from the durations of the files, with the reason.

Reads only the files' headers (no decoding): folders of short clips get `clips`, folders of
long recordings get `recordings`. Both work at 16 kHz with each recording standardised, so
the rates and levels found need no other choice. When most files are shorter than the
chosen preset's crop (which would skip them), the clips are joined into sequences
(`data.join`): by group when the files' groups can be found by the rules of
`data.join_by: auto` (sub-folders, or the leading word of the names) or by a name pattern
like FSDD's `7_jackson_32.wav`, else the whole folder as one sequence."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from audiocpc.data.audio import audio_info, discover_audio_files
from audiocpc.data.labels import UNLABELLED, join_group_rule
from audiocpc.errors import AudioReadError, NoUsableAudioError
from audiocpc.presets import load_config

LONG_SECONDS = 3.0  # a median file longer than this is a folder of recordings
SAMPLED_FILES = 2000  # enough headers to know the durations of any folder
SHORT_FRACTION = 0.5  # join when more than this share of the files is shorter than a crop
# `{digit}_{speaker}_{n}.wav` (FSDD and its kind): the word between two underscores
NAME_GROUP_PATTERN = "_(?P<group>[A-Za-z]+)_"
GROUPED_FRACTION = 0.9  # groups are "found" when this share of the files has one ...
FILES_PER_GROUP = 2.0  # ... and a group holds at least this many files on average


@dataclass(frozen=True)
class AutoPreset:
    """What `--preset auto` chose: a preset, the `--set` overrides that go with it (put
    before the user's own, so those win) and one line saying why."""

    preset: str
    reason: str
    overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FoundGroups:
    overrides: list[str]  # the data.join settings that give these groups
    source: str  # how the groups were read, for the explanation
    count: int
    example: str


def find_groups(relative_paths: Sequence[str], preset: str) -> Optional[FoundGroups]:
    """The groups of the files (posix paths below the data folder) under the preset's
    data.join=group with data.join_by=auto (sub-folder, else the leading word of the name),
    else with the FSDD-like name pattern; None when neither gives most files a group shared
    with other files. The rules are the ones training then applies (join_group_rule)."""
    candidates = [(["data.join=group"], "sub-folder or leading word of the name"),
                  (["data.join=group", f"data.join_pattern={NAME_GROUP_PATTERN}"],
                   f"name pattern '{NAME_GROUP_PATTERN}'")]
    for overrides, source in candidates:
        rule = join_group_rule(load_config(preset, overrides).data)
        assert rule is not None
        groups = [rule.label(p) for p in relative_paths]
        named = [g for g in groups if g != UNLABELLED]
        distinct = sorted(set(named))
        if (named and len(named) >= GROUPED_FRACTION * len(groups)
                and len(named) >= FILES_PER_GROUP * len(distinct)):
            return FoundGroups(overrides, source, len(distinct), distinct[0])
    return None


def choose_preset(root: str | Path, extensions: Iterable[str] = ("wav", "flac", "ogg", "mp3")
                  ) -> AutoPreset:
    """The preset (and data.join settings) for the files below `root`, with the reason."""
    root = Path(root)
    paths = discover_audio_files(root, list(extensions))
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
    crop = load_config(name).data.full_duration
    reason = (f"--preset auto chose '{name}': the median file is {median:.2f} s "
              f"({len(durations)} of {len(paths)} files read), so {crop:g} s crops; "
              f"files of more than {LONG_SECONDS:g} s get 'recordings', shorter ones 'clips'")
    short = float(np.mean(np.asarray(durations) < crop))
    if short <= SHORT_FRACTION:
        return AutoPreset(name, reason + f"; no data.join: {short:.0%} of the files are shorter than a crop")
    groups = find_groups([p.relative_to(root).as_posix() for p in paths], name)
    why = f"; {short:.0%} of the files are shorter than a crop, so they are joined: "
    if groups is None:
        return AutoPreset(name, reason + why + "data.join=all (no groups found in the folders or "
                          "names: the folder is one sequence)", ["data.join=all"])
    return AutoPreset(name, reason + why + f"data.join=group ({groups.count} groups by "
                      f"{groups.source}, e.g. '{groups.example}')", groups.overrides)
