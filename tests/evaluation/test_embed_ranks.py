"""Embedding over several processes (`torchrun ... -m audiocpc embed`): each rank embeds a
consecutive share of the files, rank 0 gathers the rows and writes exactly what one process
writes. The fast tests check the share and gather rules in one process; the slow ones run
torchrun with 2 gloo processes on the CPU against one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from torchrun_launch import finish, start, torchrun_command
import soundfile as sf

from audiocpc import load_config
from audiocpc.cli import main
from audiocpc.evaluation import embed as embedding
from audiocpc.evaluation.store import EmbeddingSplit
from audiocpc.training.distributed import DistributedContext, contiguous_share
from audiocpc.training.restore import model_identity

LAUNCH_TIMEOUT_S = 180


# ---------------------------------------------------------------- the share rule


@pytest.mark.parametrize("world", [1, 2, 3, 5, 9])
def test_shares_cover_every_file_once_in_order(world: int) -> None:
    weights = [5, 0, 1, 7, 7, 2, 0, 3]
    shares = [contiguous_share(weights, rank, world) for rank in range(world)]
    assert [i for share in shares for i in share] == list(range(len(weights)))


def test_shares_balance_the_crops_not_the_files() -> None:
    weights = [90, 90, 5, 5, 5, 5, 5, 5, 5, 5]  # two long files, then eight short ones
    first, second = (contiguous_share(weights, rank, 2) for rank in range(2))
    assert list(first) == [0]  # 90 of 220 crops; [0, 1] would be 180
    assert list(second) == list(range(1, 10))
    assert list(contiguous_share([], 0, 2)) == [] and list(contiguous_share([0, 0], 1, 2)) == [1]


class _TwoRanksSeenFromRankZero(DistributedContext):
    """Rank 0 of 2 in one process: gather_to_main hands back rank 1's rows of each round."""

    def __init__(self, other_rows: np.ndarray, rows_per_round: int):
        super().__init__(rank=0, world_size=2, backend="fake")
        object.__setattr__(self, "other", other_rows)
        object.__setattr__(self, "per_round", rows_per_round)
        object.__setattr__(self, "rounds", [])

    def gather_to_main(self, value: Any) -> Optional[list[Any]]:
        number = len(self.rounds)
        self.rounds.append(len(value))
        return [value, self.other[number * self.per_round : (number + 1) * self.per_round]]


def test_rows_are_gathered_in_bounded_rounds_in_rank_then_row_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding, "GATHER_ROWS", 4)
    mine = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    other = -np.arange(1, 7 * 3 + 1, dtype=np.float32).reshape(7, 3)
    fake = _TwoRanksSeenFromRankZero(other, 4)
    rows = embedding._gather_rows(fake, mine, [10, 7])
    assert fake.rounds == [4, 4, 2]  # ceil(10 / 4) rounds, at most 4 rows each
    assert rows is not None and np.array_equal(rows, np.concatenate([mine, other]))


class _OneRankOfMany(DistributedContext):
    """One rank of `world` in this process, the others played from a one-process embedding of
    the same split: gather_to_main hands rank 0 the other ranks' rows of each round (their
    shares of `whole`), and the second broadcast gives the others the JSON rank 0 wrote."""

    def __init__(self, rank: int, world: int, whole: Optional[EmbeddingSplit] = None,
                 share_rows: Optional[list[int]] = None):
        super().__init__(rank=rank, world_size=world, backend="fake")
        object.__setattr__(self, "whole", whole)
        object.__setattr__(self, "share_rows", share_rows)
        object.__setattr__(self, "sent", [])
        object.__setattr__(self, "broadcasts", 0)

    def broadcast_from_main(self, value: Any) -> Any:
        object.__setattr__(self, "broadcasts", self.broadcasts + 1)
        if self.is_main or self.broadcasts == 1:  # the sharing decision: every rank decides alike
            return value
        assert self.whole is not None
        return self.whole.info

    def gather_to_main(self, value: Any) -> Optional[list[Any]]:
        number = len(self.sent)
        self.sent.append(np.array(value))
        if not self.is_main:
            return None
        assert self.whole is not None and self.share_rows is not None
        edges = np.cumsum([0, *self.share_rows])
        step = embedding.GATHER_ROWS
        parts = [self.whole.features[a:b][number * step : (number + 1) * step]
                 for a, b in zip(edges[:-1], edges[1:])]
        parts[self.rank] = value
        return parts


def _shares(split: EmbeddingSplit, world: int) -> list[int]:
    """Rows per rank: the files' crops split by contiguous_share on distinct crops, as embed does."""
    files = list(dict.fromkeys(split.files))
    counts = [split.files.count(name) for name in files]
    distinct = [len(np.unique(split.start_seconds[np.array(split.files) == name])) for name in files]
    return [sum(counts[i] for i in contiguous_share(distinct, rank, world)) for rank in range(world)]


@pytest.fixture(scope="module")
def one_process_split(tiny_run: Path, uneven_files: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> EmbeddingSplit:
    return embedding.embed_folder(tiny_run, uneven_files, "test", folder=tmp_path_factory.mktemp("one"),
                                  crops=6, batch_size=4, progress=False,
                                  dist=DistributedContext())


@pytest.mark.parametrize("world", [2, 3])
def test_each_rank_returns_its_share_of_the_one_process_split(
        world: int, tiny_run: Path, uneven_files: Path, one_process_split: EmbeddingSplit,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding, "GATHER_ROWS", 5)  # several rounds per share
    whole = one_process_split
    share_rows = _shares(whole, world)
    assert len(set(share_rows)) > 1  # uneven shares
    first = 0
    for rank in range(1, world):
        first = sum(share_rows[:rank])
        end = first + share_rows[rank]
        fake = _OneRankOfMany(rank, world, whole)
        got = embedding.embed_folder(tiny_run, uneven_files, "test", folder=tmp_path / "out",
                                     crops=6, batch_size=4, progress=False, dist=fake)
        assert not (tmp_path / "out").exists()  # only rank 0 writes
        np.testing.assert_array_equal(got.features, whole.features[first:end])
        assert got.files == whole.files[first:end] and got.labels == whole.labels[first:end]
        np.testing.assert_array_equal(got.start_seconds, whole.start_seconds[first:end])
        assert got.info["share"] == {"rank": rank, "world_size": world, "first_row": first,
                                     "end_row": end}
        assert {k: v for k, v in got.info.items() if k != "share"} == whole.info
        # what it sent rank 0: its rows, in as many rounds as the largest share needs
        assert len(fake.sent) == -(-max(share_rows) // 5)
        assert all(len(part) <= 5 for part in fake.sent)
        np.testing.assert_array_equal(np.concatenate(fake.sent), whole.features[first:end])


@pytest.mark.parametrize("world", [2, 3])
def test_rank_zero_writes_what_one_process_writes(
        world: int, tiny_run: Path, uneven_files: Path, one_process_split: EmbeddingSplit,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding, "GATHER_ROWS", 5)
    whole = one_process_split
    share_rows = _shares(whole, world)
    fake = _OneRankOfMany(0, world, whole, share_rows)
    got = embedding.embed_folder(tiny_run, uneven_files, "test", folder=tmp_path / "out",
                                 crops=6, batch_size=4, progress=False, dist=fake)
    written = EmbeddingSplit.read(tmp_path / "out", "test")
    for split in (got, written):
        np.testing.assert_array_equal(split.features, whole.features)
        assert split.files == whole.files and split.labels == whole.labels
        np.testing.assert_array_equal(split.start_seconds, whole.start_seconds)
        assert _without_content(split.info) == _without_content(whole.info)
    assert len(fake.sent) == -(-max(share_rows) // 5)
    np.testing.assert_array_equal(np.concatenate(fake.sent), whole.features[: share_rows[0]])


# ---------------------------------------------------------------- torchrun against one process


def _torchrun_embed(args: list[str]) -> tuple[int, str]:
    return finish(start(torchrun_command(2, "-m", "audiocpc", "embed", *args)), LAUNCH_TIMEOUT_S)


@pytest.fixture(scope="module")
def uneven_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven files of different lengths (so the shares differ in files and crops) and one too
    short to embed."""
    folder = tmp_path_factory.mktemp("uneven")
    rng = np.random.default_rng(0)
    for number, seconds in enumerate([2.0, 4.5, 1.6, 3.0, 2.2, 6.0, 1.7, 0.1]):
        t = np.arange(int(seconds * 8000)) / 8000
        wave = 0.5 * np.sin(2 * np.pi * rng.uniform(150, 2500) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(folder / f"clip{number}.wav", wave.astype(np.float32), 8000)
    return folder


@pytest.fixture(scope="module")
def frame_run(tmp_path_factory: pytest.TempPathFactory, uneven_files: Path) -> Path:
    """A frame-mode model (cpc_tiny: shared frame encoding), trained for 2 steps."""
    from audiocpc.training.trainer import train

    out = tmp_path_factory.mktemp("frame-run")
    config = load_config("cpc_tiny", [f"output.dir={out}", "output.name=frames", "data.N=4",
                                      "train.epochs=1", "train.steps_per_epoch=2"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUDIOCPC_CACHE", str(tmp_path_factory.getbasetemp() / "audio-cache"))
        return train(config, uneven_files, progress=False).run_dir


def _without_content(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k != "content"}  # hashes of the bytes, see below


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.slow  # two torchrun launches of 2 processes each
@pytest.mark.parametrize("model, crops", [("window", "20"), ("frame", "20")])
def test_two_processes_write_what_one_process_writes(model: str, crops: str, tiny_run: Path,
                                                     frame_run: Path, uneven_files: Path,
                                                     tmp_path: Path) -> None:
    run_dir = tiny_run if model == "window" else frame_run
    common = [str(run_dir), "--data", str(uneven_files), "--split", "test", "--crops", crops,
              "--batch-size", "4", "--quiet"]
    assert main(["embed", *common, "--out", str(tmp_path / "one")]) == 0
    code, output = _torchrun_embed([*common, "--out", str(tmp_path / "two")])
    assert code == 0, output[-4000:]
    assert output.count("wrote ") == 1  # rank 0 reports; rank 1 says nothing

    name = run_dir.name
    one_dir = tmp_path / "one" / "embeddings" / name
    two_dir = tmp_path / "two" / "embeddings" / name
    # the same files and nothing else (no temporary files, nothing from rank 1)
    assert _listing(tmp_path / "two") == _listing(tmp_path / "one")
    one, two = EmbeddingSplit.read(one_dir, "test"), EmbeddingSplit.read(two_dir, "test")
    assert one.features.shape == two.features.shape and len(one) > 7
    np.testing.assert_allclose(two.features, one.features, rtol=1e-4, atol=1e-5)
    assert (two_dir / "test.csv").read_bytes() == (one_dir / "test.csv").read_bytes()
    assert (two_dir / "test_data_report.json").read_bytes() == \
        (one_dir / "test_data_report.json").read_bytes()
    # the JSON, provenance included, is the one-process JSON: the same recompute rules apply
    assert _without_content(two.info) == _without_content(one.info)
    assert EmbeddingSplit.complete(two_dir, "test")
    # ... and they are the inputs computed now, so `audiocpc run` counts the split as done
    expected = embedding.embedding_inputs(
        model_identity(run_dir, False), uneven_files, load_config("1dconv_tiny").data.extensions,
        split="test", crops="all" if crops == "all" else int(crops), kind="context", seed=0)
    assert two.info["inputs"] == expected
    assert one.info["shared_frame_encoding" if model == "frame" else "shared_window_encoding"]
