"""Bad input files: each gives a clear one-line reason and never stops a run.

Every case writes a folder of good files plus one bad input (generated here, never stored),
then checks the reason the data scan reports and that the training corpus keeps exactly
the good files. `test_training_runs_past_every_bad_input_at_once` trains on all of them.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiocpc.data.audio import read_audio
from audiocpc import load_config
from audiocpc.errors import AudioReadError, NoUsableAudioError
from audiocpc.data.scan import scan_folder

SR = 8000
GOOD = ("good_a.wav", "good_b.wav", "good_c.wav")


def _tone(seconds: float = 2.0, sr: int = SR, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav_header(channels: int, rate: int, bits: int, data_bytes: int, fmt_tag: int = 1) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + 16 + 8 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes))


def _good_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(GOOD):
        sf.write(root / name, _tone(freq=300.0 + 200 * i), SR)
    return root


def _data_config(tmp: Path, *overrides: str):
    return load_config("1dconv_tiny", [f"data.cache_dir={tmp / 'cache'}", *overrides]).data


# Each maker writes one bad input into the folder and returns its name below the folder.
Maker = Callable[[Path], str]


def _empty(d: Path) -> str:
    (d / "empty.wav").write_bytes(b"")
    return "empty.wav"


def _truncated(d: Path) -> str:
    sf.write(d / "whole.tmp", _tone(), SR, format="WAV", subtype="PCM_16")
    data = (d / "whole.tmp").read_bytes()
    (d / "whole.tmp").unlink()
    (d / "truncated.wav").write_bytes(data[: len(data) // 2])  # an interrupted copy
    return "truncated.wav"


def _corrupt(d: Path) -> str:
    # a RIFF/WAVE file whose format chunk names an encoding that does not exist
    payload = np.zeros(SR, "<i2").tobytes()
    (d / "corrupt.wav").write_bytes(_wav_header(1, SR, 16, len(payload), fmt_tag=0x7A7A) + payload)
    return "corrupt.wav"


def _text(d: Path) -> str:
    (d / "notes.wav").write_text("these are my notes, not audio\n" * 50)
    return "notes.wav"


def _unsupported(d: Path) -> str:
    # an MP4/AAC container, which libsndfile does not read
    (d / "song.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A mp42isom" + bytes(4000))
    return "song.m4a"


def _nan(d: Path) -> str:
    wave = _tone()
    wave[1234] = np.nan
    sf.write(d / "nan.wav", wave, SR, subtype="FLOAT")
    return "nan.wav"


def _inf(d: Path) -> str:
    wave = _tone()
    wave[99] = np.inf
    sf.write(d / "inf.wav", wave, SR, subtype="FLOAT")
    return "inf.wav"


def _zero_channels(d: Path) -> str:
    payload = np.zeros(SR, "<i2").tobytes()
    (d / "zero_channels.wav").write_bytes(_wav_header(0, SR, 16, len(payload)) + payload)
    return "zero_channels.wav"


def _broken_link(d: Path) -> str:
    os.symlink(d / "gone.wav", d / "broken_link.wav")
    return "broken_link.wav"


def _link_loop(d: Path) -> str:
    os.symlink(d / "loop_b.wav", d / "loop_a.wav")
    os.symlink(d / "loop_a.wav", d / "loop_b.wav")
    return "loop_a.wav"


def _fifo(d: Path) -> str:
    os.mkfifo(d / "pipe.wav")  # opening it for reading would block forever
    return "pipe.wav"


BAD_INPUTS: dict[str, tuple[Maker, str]] = {
    "empty file": (_empty, "empty file (0 bytes)"),
    "truncated wav": (_truncated, "truncated WAV: the header promises 2.000 s of audio but the "
                                  "file holds 0.999 s"),
    "corrupt wav": (_corrupt, "cannot decode audio"),
    "text file named .wav": (_text, "not a supported audio format (or not audio at all)"),
    "unsupported format": (_unsupported, "not a supported audio format (or not audio at all)"),
    "nan samples": (_nan, "the file contains NaN or infinite samples"),
    "inf samples": (_inf, "the file contains NaN or infinite samples"),
    "zero channels": (_zero_channels, "the file has no audio channels"),
    "broken symlink": (_broken_link, "broken symbolic link (its target does not exist)"),
    "symlink loop": (_link_loop, "symbolic link loop (the link points back to itself)"),
    "fifo named .wav": (_fifo, "not a regular file"),
}


def _check_skipped(folder: Path, tmp: Path, bad: list[str], reason: str) -> None:
    """The scan gives `reason` for every file in `bad`, and the corpus is the good files."""
    data = _data_config(tmp, "data.extensions=[wav, m4a]")
    report = scan_folder(folder, data, progress=False)
    by_name = {f.file: f for f in report.files}
    for name in bad:
        assert not by_name[name].readable and not by_name[name].usable
        assert by_name[name].reason.startswith(reason), by_name[name].reason
        assert "\n" not in by_name[name].reason
    assert sorted(f.file for f in report.usable) == list(GOOD)
    assert report.summary()["unreadable"] == len(bad)
    corpus = scan_folder(folder, data, progress=False).corpus()
    assert sorted(p.name for p in corpus.paths) == list(GOOD)
    assert sorted(p.name for p, _ in corpus.bad_files) == sorted(Path(b).name for b in bad)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_reported_and_skipped(case: str, tmp_path: Path) -> None:
    make, reason = BAD_INPUTS[case]
    folder = _good_folder(tmp_path / "data")
    name = make(folder)
    bad = [name, "loop_b.wav"] if case == "symlink loop" else [name]
    _check_skipped(folder, tmp_path, bad, reason)


def _usable_report(folder: Path, tmp: Path, name: str):
    data = _data_config(tmp)
    report = scan_folder(folder, data, progress=False)
    entry = {f.file: f for f in report.files}[name]
    assert entry.readable and entry.usable and entry.reason is None
    corpus = scan_folder(folder, data, progress=False).corpus()
    assert len(corpus) == len(GOOD) + 1 and not corpus.bad_files
    return report, entry, corpus


def test_silent_file_is_used_and_counted(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path / "data")
    sf.write(folder / "silence.wav", np.zeros(2 * SR, np.float32), SR)
    report, entry, _ = _usable_report(folder, tmp_path, "silence.wav")
    assert entry.silent and report.summary()["silent"] == 1
    assert not any(f.silent for f in report.files if f.file != "silence.wav")
    assert any("silent" in line and "silence.wav" in line for line in report.summary_lines())


def test_six_channels_are_averaged(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path / "data")
    channels = np.stack([_tone(freq=200.0 * (c + 1)) for c in range(6)], axis=1)
    sf.write(folder / "surround.wav", channels, SR, subtype="FLOAT")
    report, entry, corpus = _usable_report(folder, tmp_path, "surround.wav")
    assert entry.channels == 6 and report.summary()["channels"] == {"1": 3, "6": 1}
    wave = corpus.wave([p.name for p in corpus.paths].index("surround.wav"))
    np.testing.assert_allclose(wave, channels.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("subtype", ["PCM_U8", "FLOAT"])
def test_8_bit_and_32_bit_float_files_are_read(subtype: str, tmp_path: Path) -> None:
    folder = _good_folder(tmp_path / "data")
    sf.write(folder / "odd.wav", _tone(), SR, subtype=subtype)
    _, entry, corpus = _usable_report(folder, tmp_path, "odd.wav")
    assert entry.format == f"WAV {subtype}"
    wave = corpus.wave([p.name for p in corpus.paths].index("odd.wav"))
    tolerance = 1 / 64 if subtype == "PCM_U8" else 1e-7  # 8 bits: about 2 decimal digits
    np.testing.assert_allclose(wave, _tone(), atol=tolerance)


def test_96_khz_file_is_resampled(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path / "data")
    sf.write(folder / "hires.wav", _tone(sr=96000), 96000, subtype="PCM_24")
    report, entry, corpus = _usable_report(folder, tmp_path, "hires.wav")
    assert entry.sample_rate == 96000 and entry.samples == 2 * SR
    assert report.summary()["sample_rates"] == {"8000": 3, "96000": 1}
    wave = corpus.wave([p.name for p in corpus.paths].index("hires.wav"))
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * SR / wave.size - 440.0) < 1.0  # the tone, at the new rate


def test_non_utf8_file_name_is_read_and_reported(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path / "data")
    raw_name = os.fsencode(folder) + b"/caf\xe9-\xff.wav"  # Latin-1 bytes: not valid UTF-8
    with open(raw_name, "wb") as handle:
        handle.write((folder / "good_a.wav").read_bytes())
    report, entry, corpus = _usable_report(folder, tmp_path, "caf\\xe9-\\xff.wav")
    assert entry.sample_rate == SR
    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")  # valid text throughout
    assert os.fsencode(sorted(corpus.paths)[0]) == raw_name


def test_very_long_file_name_is_read(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path / "data")
    name = "x" * 251 + ".wav"  # 255 bytes: the longest name most file systems allow
    deep = folder / ("d" * 200) / ("e" * 200) / ("f" * 200)
    deep.mkdir(parents=True)
    shutil.copy(folder / "good_a.wav", deep / name)
    data = _data_config(tmp_path)
    report = scan_folder(folder, data, progress=False)
    assert len(report.usable) == len(GOOD) + 1
    corpus = scan_folder(folder, data, progress=False).corpus()
    assert (deep / name) in corpus.paths


def test_file_deleted_between_scan_and_use(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path / "data")
    sf.write(folder / "vanishing.wav", _tone(), SR)
    data = _data_config(tmp_path)
    assert len(scan_folder(folder, data, progress=False).usable) == len(GOOD) + 1
    (folder / "vanishing.wav").unlink()  # after the scan, before training decodes it
    corpus = scan_folder(folder, data, progress=False).corpus()
    assert sorted(p.name for p in corpus.paths) == list(GOOD)
    # the scan found it (discovery happened before), so it is reported, not silently lost
    with pytest.raises(AudioReadError, match="file not found"):
        read_audio(folder / "vanishing.wav", SR)
    # a cached scan result must not hide that it is gone
    again = scan_folder(folder, data, progress=False)
    assert "vanishing.wav" not in {f.file for f in again.files}


def test_decoded_copy_removed_during_training_is_decoded_again(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path / "data")
    data = _data_config(tmp_path)
    corpus = scan_folder(folder, data, progress=False).corpus()
    expected = [np.array(corpus.wave(i)) for i in range(len(corpus))]
    fresh = scan_folder(folder, data, progress=False).corpus()  # nothing opened yet
    for entry in fresh.entries:
        entry.unlink()  # someone clears the cache mid-run
    for i, wave in enumerate(expected):
        np.testing.assert_array_equal(fresh.wave(i), wave)

    gone = scan_folder(folder, data, progress=False).corpus()
    gone.entries[1].unlink()
    (folder / GOOD[1]).unlink()  # and the source is gone too: a clear error, not a traceback
    with pytest.raises(NoUsableAudioError, match=r"good_b.wav: its decoded copy .* vanished.*"
                                                 r"file not found"):
        gone.wave(1)  # files are opened on demand: the error comes when it is needed


def test_a_changed_file_is_scanned_again(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path / "data")
    data = _data_config(tmp_path)
    first = scan_folder(folder, data, progress=False)
    assert all(f.usable for f in first.files)
    before = (folder / "good_b.wav").stat()
    sf.write(folder / "good_b.wav", _tone(seconds=0.5), SR)  # now shorter than a crop
    # a later modification time whatever the file system's clock resolution (no sleep)
    os.utime(folder / "good_b.wav", ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    second = scan_folder(folder, data, progress=False)
    entry = {f.file: f for f in second.files}["good_b.wav"]
    assert not entry.usable and abs(entry.duration - 0.5) < 1e-9


def test_unreadable_file_permission_denied(tmp_path: Path) -> None:
    """Root ignores file permissions, so as root the check runs in a forked child that gives
    up root for the `nobody` user; as any other user it runs here."""
    base = Path(tempfile.mkdtemp(prefix="audiocpc-perm-"))  # outside pytest's private tmp
    try:
        os.chmod(base, 0o755)
        folder = _good_folder(base / "data")
        os.chmod(folder, 0o755)
        sf.write(folder / "locked.wav", _tone(), SR)
        os.chmod(folder / "locked.wav", 0)
        cache = base / "cache"
        cache.mkdir(mode=0o777)
        os.chmod(cache, 0o777)
        result = _run_as_unprivileged(lambda: _permission_probe(folder, cache))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert result["reason"] == "permission denied (the file is not readable by this user)"
    assert result["usable"] == list(GOOD)
    assert result["corpus"] == list(GOOD)


def _permission_probe(folder: Path, cache: Path) -> dict:
    data = load_config("1dconv_tiny", [f"data.cache_dir={cache}"]).data
    report = scan_folder(folder, data, progress=False)
    corpus = scan_folder(folder, data, progress=False).corpus()
    return {"reason": {f.file: f.reason for f in report.files}["locked.wav"],
            "usable": sorted(f.file for f in report.usable),
            "corpus": sorted(p.name for p in corpus.paths)}


def _run_as_unprivileged(probe: Callable[[], dict]) -> dict:
    if os.geteuid() != 0:
        return probe()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: give up root for good, run the probe, report through the pipe
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            payload = json.dumps(probe()).encode()
            status = 0
        except BaseException as exc:  # noqa: BLE001 - the child reports every failure
            payload = json.dumps({"child_error": repr(exc)}).encode()
        os.write(write_end, payload)
        os._exit(status)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + 60
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    result = json.loads(b"".join(chunks) or b"{}")
    assert "child_error" not in result, result
    return result


def test_training_runs_past_every_bad_input_at_once(tmp_path: Path) -> None:
    from audiocpc.training.trainer import train

    folder = _good_folder(tmp_path / "data")
    names = [make(folder) for make, _ in BAD_INPUTS.values()]
    sf.write(folder / "silence.wav", np.zeros(2 * SR, np.float32), SR)
    config = load_config("1dconv_tiny", [
        f"output.dir={tmp_path / 'results'}", "output.name=bad", "train.epochs=1",
        "train.steps_per_epoch=3", "train.checkpoint_every=3", "data.N=4",
        "data.extensions=[wav, m4a]"])
    result = train(config, folder, progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    report = json.loads((result.run_dir / "data_report.json").read_text())
    reasons = {f["file"]: f["reason"] for f in report["files"] if not f["readable"]}
    assert set(reasons) == set(names) | {"loop_b.wav"}
    for (_, reason), name in zip(BAD_INPUTS.values(), names):
        assert reasons[name].startswith(reason)
    assert report["summary"]["usable"] == len(GOOD) + 1 and report["summary"]["silent"] == 1


# ---------------------------------------------------------------- fuzzing the reader


def _read_or_refuse(payload: bytes, suffix: str = ".wav") -> Optional[np.ndarray]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(payload)
        try:
            wave = read_audio(path, SR)
        except AudioReadError as exc:  # the one documented error
            assert exc.reason and "\n" not in exc.reason
            return None
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.all(np.isfinite(wave))
    return wave


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=3000), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3"]))
def test_fuzz_random_bytes_only_raise_audio_read_error(payload: bytes, suffix: str) -> None:
    _read_or_refuse(payload, suffix)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt_tag=st.sampled_from([1, 3, 6, 7, 0x11, 0xFFFE, 0, 0x7A7A]),
       channels=st.integers(0, 70000 // 1000) | st.integers(0, 65535),
       rate=st.sampled_from([1, 8000, 44100, 96000, 384000]) | st.integers(0, 2**32 - 1),
       bits=st.sampled_from([0, 4, 8, 16, 24, 32, 64, 7]),
       declared=st.integers(0, 2**32 - 1) | st.integers(0, 4000),
       payload=st.binary(max_size=4000))
def test_fuzz_wav_headers_only_raise_audio_read_error(fmt_tag: int, channels: int, rate: int,
                                                      bits: int, declared: int,
                                                      payload: bytes) -> None:
    block = (channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    header = (b"RIFF" + struct.pack("<I", (36 + declared) & 0xFFFFFFFF) + b"WAVE" + b"fmt "
              + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", declared))
    _read_or_refuse(header + payload)
