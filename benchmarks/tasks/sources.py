"""The task builders: one generator of :class:`Clip` per task, and the registry.

Every source is either already on disk (FSDD in shared/) or a Debian package;
see README.md beside this file for the install line of each.
"""
from __future__ import annotations

import os
import random
import re
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import soundfile as sf

try:  # imported as benchmarks.tasks.sources
    from .common import REPO_ROOT, Clip, Requirement, TaskSpec, file_md5, load_audio, prepare, trim
except ImportError:  # run as a script from benchmarks/tasks/
    from common import REPO_ROOT, Clip, Requirement, TaskSpec, file_md5, load_audio, prepare, trim

# ------------------------------------------------------------------ 1. FSDD
FSDD_DIR = Path(os.environ.get("AUDIOCPC_FSDD", REPO_ROOT / "../shared/data/fsdd"))


def fsdd_digits() -> Iterator[Clip]:
    """Free Spoken Digit Dataset: ``{digit}_{speaker}_{index}.wav`` at 8 kHz."""
    for path in sorted(FSDD_DIR.glob("*.wav")):
        digit, speaker, index = path.stem.split("_")
        yield Clip(f"{speaker}/{path.stem}", digit, speaker, load_audio(path, max_seconds=2.0))


# ------------------------------------------------------- 2. GM instruments
SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
FLUIDSYNTH = Path("/usr/bin/fluidsynth")
#: GM families kept (program ranges) and the MIDI pitch range played on each.
#: Synth leads/pads/effects, ensembles, percussive and SFX banks are left out,
#: as are the two synth basses (38, 39): only sampled acoustic/electric instruments.
GM_FAMILIES: dict[str, tuple[list[int], tuple[int, int]]] = {
    "piano": (list(range(0, 8)), (45, 81)),
    "chromatic_percussion": (list(range(8, 16)), (60, 91)),
    "organ": (list(range(16, 24)), (45, 81)),
    "guitar": (list(range(24, 32)), (40, 76)),
    "bass": (list(range(32, 38)), (28, 55)),
    "strings": (list(range(40, 48)), (48, 81)),
    "brass": (list(range(56, 64)), (48, 77)),
    "reed": (list(range(64, 72)), (50, 81)),
    "pipe": (list(range(72, 80)), (60, 91)),
}
#: Low instruments whose FluidR3 samples stop below their family's range.
GM_REGISTER_OVERRIDES: dict[int, tuple[int, int]] = {42: (36, 72), 43: (28, 60), 58: (28, 58), 67: (36, 69)}
GM_CLIPS_PER_PROGRAM = 16
GM_SLOT_S = 3.0  # one melody every 3 s in the rendered file
GM_CLIP_S = 2.5  # 2 s of notes + 0.5 s release
SCALE = [0, 2, 4, 5, 7, 9, 11]  # major-scale steps for the random melodies


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, program: int, notes: list[tuple[float, float, int, int]]) -> None:
    """Tiny format-0 MIDI writer: ``notes`` = (start_s, dur_s, pitch, velocity), channel 0.

    Tempo 120 bpm with 480 ticks per beat, i.e. 960 ticks per second.
    """
    tps = 960
    events: list[tuple[int, bytes]] = [(0, bytes([0xC0, program]))]
    for start, dur, pitch, vel in notes:
        events.append((round(start * tps), bytes([0x90, pitch, vel])))
        events.append((round((start + dur) * tps), bytes([0x80, pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1][0] == 0x90))  # note-offs before note-ons
    track = bytearray(b"\x00\xff\x51\x03\x07\xa1\x20")  # tempo 500000 us/beat
    now = 0
    for tick, msg in events:
        track += _vlq(tick - now) + msg
        now = tick
    track += b"\x00\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
                     + b"MTrk" + struct.pack(">I", len(track)) + bytes(track))


def random_melody(rng: random.Random, low: int, high: int, t0: float) -> list[tuple[float, float, int, int]]:
    """4-7 notes on a random major scale, a random walk inside [low, high], <= 2 s."""
    tonic = rng.randrange(low, high - 12)
    degree = rng.randrange(0, 7)
    velocity = rng.randrange(60, 121)
    notes, t = [], 0.0
    for _ in range(rng.randint(4, 7)):
        dur = rng.choice([0.25, 0.25, 0.375, 0.5])
        if t + dur > 2.0:
            break
        pitch = tonic + 12 * (degree // 7) + SCALE[degree % 7]
        notes.append((t0 + t, dur, min(max(pitch, low), high), max(30, min(127, velocity + rng.randint(-10, 10)))))
        t += dur
        degree = max(0, min(13, degree + rng.choice([-2, -1, -1, 1, 1, 2, 3])))
    return notes


def gm_instruments() -> Iterator[Clip]:
    """Render random melodies with FluidSynth, one long file per GM program, then slice."""
    with tempfile.TemporaryDirectory() as tmp:
        for family, (programs, register) in GM_FAMILIES.items():
            for program in programs:
                low, high = GM_REGISTER_OVERRIDES.get(program, register)
                rng = random.Random(f"gm:{program}")
                notes: list[tuple[float, float, int, int]] = []
                for k in range(GM_CLIPS_PER_PROGRAM):
                    notes += random_melody(rng, low, high, k * GM_SLOT_S)
                mid, wav = Path(tmp) / f"p{program}.mid", Path(tmp) / f"p{program}.wav"
                write_midi(mid, program, notes)
                subprocess.run([str(FLUIDSYNTH), "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5",
                                "-r", "16000", "-T", "wav", "-F", str(wav), str(SF2), str(mid)],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
                mono = data.mean(axis=1)
                for k in range(GM_CLIPS_PER_PROGRAM):
                    seg = mono[int(k * GM_SLOT_S * sr): int((k * GM_SLOT_S + GM_CLIP_S) * sr)]
                    yield Clip(f"{family}/p{program:03d}_{k:02d}", family, f"program{program:03d}",
                               prepare(seg, sr))


# ------------------------------------------------------------- 3. drum kits
DRUMKITS = Path("/usr/share/hydrogen/data/drumkits")
#: Name patterns -> drum class, tried in this order (first match wins).
DRUM_CLASSES: list[tuple[str, str]] = [
    ("hihat", r"hat|\bhh\b|hi-?hat"),
    ("cymbal", r"crash|ride|splash|china|cymbal"),
    ("kick", r"kick|bass ?drum"),
    ("snare", r"snare"),
    ("tom", r"tom"),
]
#: Electronic kits are left out: we want recordings of acoustic drums.
DRUMKITS_EXCLUDED = {"HardElectro1", "ElectricEmpireKit"}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def drum_class(name: str) -> str | None:
    low = name.lower()
    if "bell" in low and "ride" not in low:  # cowbells, ride-bell-less bells
        return None
    for cls, pattern in DRUM_CLASSES:
        if re.search(pattern, low):
            return cls
    return None


def drum_kits() -> Iterator[Clip]:
    """Every velocity layer of every kick/snare/tom/hi-hat/cymbal of the acoustic kits."""
    seen: set[str] = set()
    for kit_dir in sorted(p for p in DRUMKITS.iterdir() if p.is_dir()):
        if kit_dir.name in DRUMKITS_EXCLUDED or not (kit_dir / "drumkit.xml").exists():
            continue
        kit = re.sub(r"[^A-Za-z0-9]+", "_", kit_dir.name).strip("_")
        group = "Millo" if kit.startswith("Millo") else kit  # the Millo kits share a drum set
        root = ET.parse(kit_dir / "drumkit.xml").getroot()
        for inst in root.iter():
            if _local(inst.tag) != "instrument":
                continue
            name = next((c.text or "" for c in inst if _local(c.tag) == "name"), "")
            cls = drum_class(name)
            if cls is None:
                continue
            files = [e.text for e in inst.iter() if _local(e.tag) == "filename" and e.text]
            for fname in dict.fromkeys(files):
                path = kit_dir / fname
                if not path.exists():
                    continue
                digest = file_md5(path)
                if digest in seen:  # same sample reused by another instrument/kit
                    continue
                seen.add(digest)
                audio = trim(load_audio(path), threshold_db=-50)[: 2 * 16000]
                stem = re.sub(r"[^A-Za-z0-9]+", "_", Path(fname).stem).strip("_")
                yield Clip(f"{kit}/{cls}_{stem}", cls, group, prepare(audio, 16000))


# ---------------------------------------------- 4. Tux Paint spoken language
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
TUXPAINT_LANGS = ["be", "bg", "ca", "da", "el", "es", "fr", "ro", "ru"]
TUXPAINT_STAMPS = 150  # stamps (groups) kept, each spoken in every language


def tuxpaint_language() -> Iterator[Clip]:
    """Stamp descriptions spoken by volunteers; keep stamps voiced in all 9 languages."""
    by_stamp: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in TUXPAINT.rglob("*_desc_*.ogg"):
        stem, lang = path.stem.rsplit("_desc_", 1)
        if lang in TUXPAINT_LANGS:
            by_stamp[str(path.parent.relative_to(TUXPAINT) / stem)][lang] = path
    complete = sorted(s for s, langs in by_stamp.items() if len(langs) == len(TUXPAINT_LANGS))
    stamps = sorted(random.Random("tuxpaint").sample(complete, min(TUXPAINT_STAMPS, len(complete))))
    for stamp in stamps:
        group = re.sub(r"[^A-Za-z0-9]+", "_", stamp).strip("_")
        for lang in TUXPAINT_LANGS:
            audio = trim(load_audio(by_stamp[stamp][lang]), threshold_db=-45)
            yield Clip(f"{lang}/{group}", lang, group, prepare(audio, 16000, max_seconds=4.0))


# ------------------------------------------------- 5. KLettres vowel of a syllable
KLETTRES = Path("/usr/share/klettres")
#: Consonant(s)+vowel syllables whose vowel is one of the five cardinal vowels
#: (ru/uk names are transliterated; "y" = Cyrillic yery is left out).
_CYR = r"^(b|d|k|l|m|n|p|r|s|t|v|z|zh|sh|ch|h|g)[aeiou]$"
KLETTRES_SYLLABLES = {"es": r"^[bcdfghjklmnprstvwxyz][aeiou]$", "it": r"^[bcdfglmnprstvz][aeiou]$",
                      "pt_BR": r"^[bcdfgjlmnprstvxz][aeiou]$", "ru": _CYR, "uk": _CYR}
#: Languages whose letter names for a/e/i/o/u are the bare vowels: file stem -> vowel.
KLETTRES_LETTERS = {lang: {v: v for v in "aeiou"} for lang in ("de", "es", "it", "nds", "pt_BR")}
KLETTRES_LETTERS["nb"] = {f"U{ord(v):04X}": v for v in "aeiou"}
KLETTRES_TEST = frozenset({"it", "uk", "nb"})  # ~30 % of the clips, all five vowels


def klettres_vowels() -> Iterator[Clip]:
    """Vowel (a/e/i/o/u) of spoken CV syllables and vowel letters; one speaker per language."""
    for lang, pattern in KLETTRES_SYLLABLES.items():
        for path in sorted((KLETTRES / lang / "syllab").glob("*.ogg")):
            if re.match(pattern, path.stem):
                audio = trim(load_audio(path), threshold_db=-40)
                yield Clip(f"{lang}/syllab_{path.stem}", path.stem[-1], lang, prepare(audio, 16000, 2.0))
    for lang, stems in KLETTRES_LETTERS.items():
        for stem, vowel in stems.items():
            path = KLETTRES / lang / "alpha" / f"{stem}.ogg"
            if path.exists():
                audio = trim(load_audio(path), threshold_db=-40)
                yield Clip(f"{lang}/letter_{vowel}", vowel, lang, prepare(audio, 16000, 2.0))


# ------------------------------------------------------------------ registry
APT = "apt-get install -y --no-install-recommends"
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec(
            name="fsdd_digits", kind="speech/keyword", group_name="speaker",
            description="Spoken digit 0-9 (English), unseen speakers in test.",
            source="Free Spoken Digit Dataset (shared/data/fsdd)", licence="CC-BY-SA-4.0",
            requirements=[Requirement(FSDD_DIR / "0_george_0.wav",
                                      "put the FSDD wav files in ../shared/data/fsdd (or set AUDIOCPC_FSDD)")],
            builder=fsdd_digits, test_fraction=1 / 3),
        TaskSpec(
            name="gm_instruments", kind="music/instrument-family", group_name="GM program",
            description="GM instrument family of a short random melody rendered by FluidSynth from the "
                        "sampled FluidR3 soundfont; test programs (2 per family) are never heard in training.",
            source="Debian fluidsynth + fluid-soundfont-gm (FluidR3_GM.sf2)", licence="MIT (FluidR3 GM)",
            requirements=[Requirement(FLUIDSYNTH, f"{APT} fluidsynth"),
                          Requirement(SF2, f"{APT} fluid-soundfont-gm")],
            builder=gm_instruments, test_fraction=0.25, groups_nested_in_labels=True),
        TaskSpec(
            name="drum_kits", kind="percussion/drum-type", group_name="drum kit",
            description="Drum type (kick, snare, tom, hi-hat, cymbal) of one-shot samples of recorded "
                        "acoustic kits; test kits are never heard in training.",
            source="Debian hydrogen-drumkits", licence="GPL-2+, CC-BY-3.0, CC-BY-SA-3.0, CC0 (per kit)",
            requirements=[Requirement(DRUMKITS / "ForzeeStereo" / "drumkit.xml", f"{APT} hydrogen-drumkits")],
            builder=drum_kits, test_fraction=0.3),
        TaskSpec(
            name="tuxpaint_language", kind="speech/language-id", group_name="stamp (spoken text)",
            description="Language of a short spoken word/phrase (9 languages, volunteer recordings); "
                        "test stamps (texts) are never heard in training, in any language.",
            source="Debian tuxpaint-stamps-default (descriptive sounds)", licence="GPL-2",
            requirements=[Requirement(TUXPAINT / "animals", f"{APT} tuxpaint-stamps-default")],
            builder=tuxpaint_language, test_fraction=0.3, default=False,
            extra={"note": "near-trivial for an MFCC baseline: each language is one or two "
                           "speakers, so it is speaker/channel identification; opt-in only"}),
        TaskSpec(
            name="klettres_vowels", kind="speech/phonetic-vowel", group_name="language (= speaker)",
            description="Which of a/e/i/o/u is the vowel of a spoken consonant-vowel syllable (or vowel "
                        "letter); test speakers/languages (it, uk, nb) are never heard in training.",
            source="Debian klettres-data", licence="GPL-2+ (KLettres sounds)",
            requirements=[Requirement(KLETTRES / "es" / "syllab" / "ba.ogg", f"{APT} klettres-data")],
            builder=klettres_vowels, test_groups=KLETTRES_TEST),
    ]
}
