"""The synthetic data sets: deterministic, labelled, and (the demo's) built so that frame
statistics cannot separate the classes of a pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from audiocpc.data.labels import label_rule
from audiocpc.data.synthetic import TEMPORAL_CLASSES, make_demo_dataset, synth_clip
from audiocpc.evaluation.mfcc import mfcc


def test_each_pair_is_the_same_clip_reversed() -> None:
    t = np.arange(8000) / 8000
    for forward, backward in (("rising", "falling"), ("pluck", "swell")):
        a = TEMPORAL_CLASSES[forward](np.random.default_rng(3), t, 8000)
        b = TEMPORAL_CLASSES[backward](np.random.default_rng(3), t, 8000)
        np.testing.assert_allclose(a[::-1], b, atol=1e-9)


def test_frame_statistics_do_not_see_the_order() -> None:
    # MFCC mean and std of a clip and of its reverse agree: the demo's MFCC baseline can
    # only tell the pairs apart, so what CPC scores above it comes from temporal structure
    clip = synth_clip("rising", 2.0, 8000, np.random.default_rng(0))
    forward, backward = mfcc(clip, 8000), mfcc(clip[::-1].copy(), 8000)
    for statistic in (np.mean, np.std):
        a, b = statistic(forward, axis=0), statistic(backward, axis=0)
        assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
    other = mfcc(synth_clip("pluck", 2.0, 8000, np.random.default_rng(0)), 8000)
    assert np.abs(forward.mean(0) - other.mean(0)).max() > 0.2 * np.abs(forward.mean(0)).max()


def test_tutorial_layout_has_three_folders_and_labels_in_the_names(tmp_path: Path) -> None:
    out = make_demo_dataset(tmp_path, files_per_class=2, test_files_per_class=1, seconds=0.5,
                            sample_rate=22050, layout="tutorial")
    assert sorted(p.name for p in out.iterdir()) == ["custom_audio_dataset", "test", "train"]
    names = sorted(p.name for p in (out / "train").iterdir())
    assert names[0] == "0rising00000.wav" and len(names) == 2 * len(TEMPORAL_CLASSES)
    assert {label_rule().label(n) for n in names} == set(TEMPORAL_CLASSES)
    assert sf.info(str(out / "train" / names[0])).samplerate == 22050
    again = make_demo_dataset(tmp_path / "again", files_per_class=2, test_files_per_class=1,
                              seconds=0.5, sample_rate=22050, layout="tutorial")
    assert (again / "train" / names[0]).read_bytes() == (out / "train" / names[0]).read_bytes()


def test_writing_the_demo_data_again_leaves_identical_files_untouched(tmp_path: Path) -> None:
    """A second `make demo` found embed and MFCC out of date: the data was rewritten with new
    modification times. Files with the same content now keep theirs; a changed one is rewritten."""
    import os

    from audiocpc.data.synthetic import make_demo_dataset

    make_demo_dataset(tmp_path, files_per_class=1, test_files_per_class=1, seconds=0.5)
    files = sorted(tmp_path.rglob("*.wav"))
    for f in files:
        os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    files[0].write_bytes(files[0].read_bytes()[:-10])   # a damaged file is written again
    content = {f: f.read_bytes() for f in files[1:]}
    make_demo_dataset(tmp_path, files_per_class=1, test_files_per_class=1, seconds=0.5)
    assert [f.stat().st_mtime_ns for f in files[1:]] == [1_000_000_000] * (len(files) - 1)
    assert {f: f.read_bytes() for f in files[1:]} == content
    assert files[0].stat().st_mtime_ns != 1_000_000_000 and sf.info(str(files[0])).frames == 8000
