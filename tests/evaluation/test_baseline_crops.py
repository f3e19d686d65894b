"""The MFCC baseline describes the very crops the CPC model embedded: each of its rows is the
MFCC summary of the manifest row's crop (file, start, duration), not of the file's start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from audiocpc.data.cache import AudioCache
from audiocpc.evaluation.mfcc import mfcc_summary, write_mfcc_embeddings
from audiocpc.evaluation.store import EmbeddingSplit

RATE = 8000


def _audio(folder: Path) -> Path:
    """Two files whose sound changes over time: a low tone, then noise, then a high tone."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    low, high = 0.5 * np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 2500 * t)
    noise = 0.3 * rng.standard_normal(RATE)
    sf.write(folder / "a.wav", np.concatenate([low, noise, high]).astype(np.float32), RATE)
    sf.write(folder / "b.wav", np.concatenate([high, low]).astype(np.float32), RATE)
    return folder


def test_mfcc_rows_are_those_of_the_embedded_crops(tmp_path: Path) -> None:
    data = _audio(tmp_path / "data")
    files = ["a.wav", "a.wav", "a.wav", "b.wav", "b.wav"]
    starts = np.array([0.0, 1.25, 2.5, 0.1, 1.5])
    durations = np.full(len(files), 0.5)
    source = tmp_path / "cpc"
    EmbeddingSplit(np.zeros((len(files), 3), np.float32), files, ["a", "a", "a", "b", "b"], starts,
                   durations, {"data_dir": str(data), "sample_rate": RATE}).write(source, "test")

    write_mfcc_embeddings(source, tmp_path / "mfcc", "test")
    mfcc = EmbeddingSplit.read(tmp_path / "mfcc", "test")

    assert mfcc.files == files  # the same rows, in the same order
    np.testing.assert_allclose(mfcc.start_seconds, starts)
    cache = AudioCache()
    for row, (name, start) in enumerate(zip(files, starts)):
        wave = np.asarray(cache.load(data / name, RATE))
        first = int(round(start * RATE))
        expected = mfcc_summary(wave[first : first + RATE // 2], RATE)
        np.testing.assert_allclose(mfcc.features[row], expected, rtol=1e-4, atol=1e-4,
                                   err_msg=f"row {row}: {name} from {start} s")
    # crops of one file at other times are other sounds: the rows must differ
    for a, b in [(0, 1), (1, 2), (0, 2), (3, 4)]:
        assert np.abs(mfcc.features[a] - mfcc.features[b]).max() > 1.0, (a, b)
