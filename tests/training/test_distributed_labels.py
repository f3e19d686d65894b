"""Under DDP with label-aware negatives every rank trains on its own slice of the global batch
with the labels of ITS crops, and every rank draws its own random numbers.

The per-rank batch and label selection (CropSampler with a rank and world size) is checked
in this process; the rest (labels through the real training loop, the gathered label bank
and each rank's random stream) by a slow test with 2 gloo ranks under torchrun."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torchrun_launch import finish, start, torchrun_command
import soundfile as sf
import torch

from audiocpc import load_config
from audiocpc.data.corpus import AudioCorpus, CropSampler
from audiocpc.data.labels import training_label_rule
from audiocpc.data.scan import scan_folder

RATE, N, WORLD = 8000, 3, 2
WORKER = Path(__file__).with_name("distributed_streams_worker.py")
LAUNCH_TIMEOUT_S = 180
TINY = ["model.z_dim=16", "model.c_dim=16", "model.encoder.filters=8", f"data.N={N}",
        "data.labels=auto", "data.standardize=false", "train.validation_fraction=0"]


@pytest.fixture
def offset_files(tmp_path: Path) -> Path:
    """Eight files, file i a little noise around the level i (so a crop tells its file), two
    labels in no pattern of the file order."""
    folder = tmp_path / "audio"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, label in enumerate(["ant", "bee", "bee", "ant", "bee", "ant", "ant", "bee"]):
        wave = i + 0.01 * rng.standard_normal(2 * RATE)
        sf.write(folder / f"{label}_{i}.wav", wave.astype(np.float32), RATE, subtype="FLOAT")
    return folder


def _corpus(folder: Path, tmp_path: Path) -> AudioCorpus:
    data = load_config("1dconv_tiny", [f"data.cache_dir={tmp_path / 'cache'}", *TINY]).data
    return scan_folder(folder, data, progress=False).corpus(labels=training_label_rule(data))


def test_each_rank_gets_the_labels_of_its_own_crops(offset_files: Path, tmp_path: Path) -> None:
    corpus = _corpus(offset_files, tmp_path)
    assert corpus.label_ids is not None
    # corpus index of the file at each level (the corpus lists files by name, not by level)
    by_level = {int(path.stem.split("_")[1]): index for index, path in enumerate(corpus.paths)}
    for step in range(6):
        whole, whole_labels = CropSampler(corpus, RATE, N * WORLD, seed=1).batch_with_labels(step)
        for rank in range(WORLD):
            crops, labels = CropSampler(corpus, RATE, N, seed=1, rank=rank,
                                        world_size=WORLD).batch_with_labels(step)
            assert labels is not None
            files = [by_level[level] for level in np.rint(crops.mean(axis=1)).astype(int)]
            np.testing.assert_array_equal(labels, corpus.label_ids[files],
                                          err_msg=f"rank {rank}, step {step}: labels of other crops")
            # rank r holds rows r*N.. of the one global batch a single process would draw
            np.testing.assert_array_equal(crops, whole[rank * N : (rank + 1) * N])
            np.testing.assert_array_equal(labels, whole_labels[rank * N : (rank + 1) * N])
    # the check has teeth: the two ranks' labels differ at some step
    rank_labels = [[CropSampler(corpus, RATE, N, seed=1, rank=r, world_size=WORLD)
                    .batch_with_labels(s)[1].tolist() for s in range(6)] for r in range(WORLD)]
    assert rank_labels[0] != rank_labels[1]


# ---------------------------------------------------------------- two processes


@pytest.mark.slow  # two processes under torchrun
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_ranks_train_on_their_own_labels_with_their_own_random_streams(offset_files: Path,
                                                                       tmp_path: Path) -> None:
    steps = 3
    overrides = [*TINY, f"output.dir={tmp_path / 'out'}", "output.name=ddp", "train.device=cpu",
                 f"data.cache_dir={tmp_path / 'cache'}", "train.epochs=1",
                 f"train.steps_per_epoch={steps}", "train.seed=1", "model.encoder.dropout=0.2",
                 "loss.negatives.policy=same_label", "loss.negatives.count=4",
                 "loss.negatives.across_ranks=true"]
    command = torchrun_command(WORLD, str(WORKER), "train",
                               "--preset", "1dconv_tiny", "--data", str(offset_files), "--quiet",
                               *[arg for item in overrides for arg in ("--set", item)])
    dump = tmp_path / "dump"
    dump.mkdir()
    code, output = finish(start(command, AUDIOCPC_TEST_DUMP=str(dump)), LAUNCH_TIMEOUT_S)
    assert code == 0, output[-3000:]
    records = [torch.load(dump / f"rank{r}.records.pt", weights_only=True) for r in range(WORLD)]

    corpus = _corpus(offset_files, tmp_path)
    by_level = {int(path.stem.split("_")[1]): index for index, path in enumerate(corpus.paths)}
    assert corpus.label_ids is not None
    for rank, record in enumerate(records):
        assert len(record["labels"]) == steps
        for step, labels in enumerate(record["labels"]):
            files = [by_level[level] for level in np.rint(record["crop_means"][step].numpy()).astype(int)]
            np.testing.assert_array_equal(labels.numpy(), corpus.label_ids[files],
                                          err_msg=f"rank {rank}, step {step}: not its crops' labels")
            expected = CropSampler(corpus, RATE, N, seed=1, rank=rank,
                                   world_size=WORLD).batch_with_labels(step)[1]
            np.testing.assert_array_equal(labels.numpy(), expected)  # its slice of the global batch
    for step in range(steps):
        both = torch.cat([records[0]["labels"][step], records[1]["labels"][step]])
        for rank in range(WORLD):  # the label bank of the global batch, in rank order
            assert torch.equal(records[rank]["bank_labels"][step], both), (rank, step)
        # another random stream per rank: other dropout masks for inputs of the same shape
        assert not torch.equal(records[0]["dropout_masks"][step], records[1]["dropout_masks"][step]), \
            f"step {step}: both ranks drew the same dropout mask"
