"""Embedding crop starts are seeded by (seed, file name): files of equal length get different
crops, a file gets the same crops whatever else is in the folder, and another seed moves them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from audiocpc.evaluation.embed import crop_starts, embed_folder, plan_crops

LENGTH, CROP = 80_000, 6_000  # room for 75 distinct starts on a 1000-sample grid


def test_equal_length_files_get_different_crops() -> None:
    names = [f"speaker{i}/clip.wav" for i in range(6)]
    plans = plan_crops([LENGTH] * len(names), names, CROP, 5, seed=0, grid=1000)
    distinct = {tuple(starts) for starts in plans}
    assert len(distinct) == len(names), "files of one length share their crops"


def test_a_files_crops_depend_on_its_name_and_the_seed_only() -> None:
    alone = plan_crops([LENGTH], ["b.wav"], CROP, 5, seed=0, grid=1000)[0]
    among = plan_crops([LENGTH, 50_000, LENGTH], ["a.wav", "c.wav", "b.wav"], CROP, 5, seed=0,
                       grid=1000)[2]
    np.testing.assert_array_equal(alone, among)  # independent of the other files and their order
    np.testing.assert_array_equal(alone, crop_starts(LENGTH, CROP, 5, 0, "b.wav", 1000))
    assert not np.array_equal(alone, crop_starts(LENGTH, CROP, 5, 1, "b.wav", 1000))


def test_embedded_files_of_equal_length_get_different_crops(tiny_exports: dict[str, Path],
                                                            tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in ("hum_1.wav", "hum_2.wav", "buzz_1.wav"):  # 3 s each at the model's 8 kHz
        sf.write(data / name, (0.1 * rng.standard_normal(24_000)).astype(np.float32), 8000)
    result = embed_folder(tiny_exports["1dconv_tiny"], data, "test", folder=tmp_path / "emb",
                          crops=3, progress=False, device="cpu")
    starts = {name: tuple(result.start_seconds[[f == name for f in result.files]])
              for name in set(result.files)}
    assert len(starts) == 3 and all(len(s) == 3 for s in starts.values())
    assert len(set(starts.values())) == 3, f"equal-length files share their crops: {starts}"
