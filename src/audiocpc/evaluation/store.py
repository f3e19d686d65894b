"""The one reader and writer of embedding files: one split of an embeddings folder.

    <folder>/<split>.npy    float32 [rows, dim], one row per crop
    <folder>/<split>.csv    row,file,start_seconds,duration_seconds,label (file: posix path
                            below the data folder; label "" = unlabelled)
    <folder>/<split>.json   what was embedded and how, `inputs` (the identity of what it was
                            made from) and `content` (the sha256 of the .npy and .csv)

Every file is replaced atomically. The JSON is removed first and written last, so it is the
set's commit mark: a set whose JSON is missing, or whose recorded `content` differs from the
files on disk (a writer killed between two files), is incomplete and `complete()` says so.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from audiocpc.errors import AudiocpcError
from audiocpc.fileio import atomic_save_npy, atomic_write_json, atomic_write_text, read_json, sha256_file

log = logging.getLogger("audiocpc")

MANIFEST_COLUMNS: tuple[str, ...] = ("row", "file", "start_seconds", "duration_seconds", "label")
SUFFIXES: tuple[str, ...] = ("npy", "csv", "json")


@dataclass
class EmbeddingSplit:
    """One split's embeddings, the crop each row came from, and its metadata."""

    features: np.ndarray  # float32 [rows, dim]
    files: list[str]  # per row: posix path below the data folder
    labels: list[str]  # per row; "" = unlabelled
    start_seconds: np.ndarray
    duration_seconds: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    folder: Optional[Path] = None
    split: str = ""

    # ------------------------------------------------------------ names

    @staticmethod
    def path(folder: str | Path, split: str, suffix: str) -> Path:
        return Path(folder) / f"{split}.{suffix}"

    @property
    def array_path(self) -> Path:
        assert self.folder is not None
        return self.path(self.folder, self.split, "npy")

    @property
    def manifest_path(self) -> Path:
        assert self.folder is not None
        return self.path(self.folder, self.split, "csv")

    @property
    def info_path(self) -> Path:
        assert self.folder is not None
        return self.path(self.folder, self.split, "json")

    @property
    def embeddings(self) -> np.ndarray:  # the name `embed_folder`'s result had
        return self.features

    @property
    def meta(self) -> dict[str, Any]:  # the name classify's loader had
        return self.info

    def __len__(self) -> int:
        return len(self.files)

    # ------------------------------------------------------------ on disk

    @classmethod
    def exists(cls, folder: str | Path, split: str) -> bool:
        """Whether the folder holds this split's array and manifest."""
        return cls.path(folder, split, "npy").is_file() and cls.path(folder, split, "csv").is_file()

    @classmethod
    def content(cls, folder: str | Path, split: str) -> dict[str, str]:
        """The sha256 of the split's array and manifest as they are on disk now."""
        return {"npy": sha256_file(cls.path(folder, split, "npy")),
                "csv": sha256_file(cls.path(folder, split, "csv"))}

    @classmethod
    def read_info(cls, folder: str | Path, split: str) -> dict[str, Any]:
        """The split's JSON, or {} when it is missing or damaged."""
        return read_json(cls.path(folder, split, "json"))

    @classmethod
    def complete(cls, folder: str | Path, split: str) -> bool:
        """Whether all three files are there and belong together (the JSON's recorded
        content hashes are those of the array and manifest on disk)."""
        if not cls.exists(folder, split):
            return False
        recorded = cls.read_info(folder, split).get("content")
        return bool(recorded) and recorded == cls.content(folder, split)

    @classmethod
    def remove(cls, folder: str | Path, split: str) -> None:
        for suffix in ("json", "npy", "csv"):  # the commit mark first
            cls.path(folder, split, suffix).unlink(missing_ok=True)

    @classmethod
    def read(cls, folder: str | Path, split: str) -> "EmbeddingSplit":
        """Every row of `<folder>/<split>.npy/.csv/.json` (labelled or not)."""
        folder = Path(folder)
        if not cls.exists(folder, split):
            raise AudiocpcError(f"no {split} embeddings in {folder} (expected {split}.npy and "
                                f"{split}.csv; run `audiocpc embed` first)")
        try:
            features = np.load(cls.path(folder, split, "npy"), mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise AudiocpcError(f"{cls.path(folder, split, 'npy')}: not a readable array ({exc}); "
                                "embed again") from None
        with open(cls.path(folder, split, "csv"), newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if features.ndim != 2 or len(rows) != features.shape[0]:
            raise AudiocpcError(f"{folder}: {split}.csv lists {len(rows)} crops but {split}.npy holds "
                                f"{features.shape[0] if features.ndim else 0} rows; embed again")
        try:
            starts = np.array([float(r["start_seconds"]) for r in rows], dtype=np.float64)
            durations = np.array([float(r["duration_seconds"]) for r in rows], dtype=np.float64)
            files = [r["file"] for r in rows]
        except (KeyError, TypeError, ValueError):
            raise AudiocpcError(f"{cls.path(folder, split, 'csv')}: expected the columns "
                                f"{','.join(MANIFEST_COLUMNS)}; embed again") from None
        return cls(np.asarray(features, dtype=np.float32), files,
                   [r.get("label") or "" for r in rows], starts, durations,
                   cls.read_info(folder, split), folder, split)

    def write(self, folder: str | Path, split: str) -> "EmbeddingSplit":
        """Write the three files (atomically, the JSON last, with the content hashes);
        returns this split, now located at `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path(folder, split, "json").unlink(missing_ok=True)  # incomplete until written again
        atomic_save_npy(self.path(folder, split, "npy"), np.asarray(self.features, dtype=np.float32))
        atomic_write_text(self.path(folder, split, "csv"), self.manifest_text())
        self.info = {**self.info, "content": self.content(folder, split)}
        atomic_write_json(self.path(folder, split, "json"), self.info)
        self.folder, self.split = folder, split
        return self

    def manifest_text(self) -> str:
        handle = io.StringIO(newline="")
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for row, (name, start, duration, label) in enumerate(
                zip(self.files, self.start_seconds, self.duration_seconds, self.labels)):
            writer.writerow([row, name, f"{start:.6f}", f"{duration:.6f}", label])
        return handle.getvalue()

    # ------------------------------------------------------------ rows

    def subset(self, mask: np.ndarray) -> "EmbeddingSplit":
        keep = np.flatnonzero(mask)
        return EmbeddingSplit(self.features[keep], [self.files[i] for i in keep],
                              [self.labels[i] for i in keep], self.start_seconds[keep],
                              self.duration_seconds[keep], self.info, self.folder, self.split)

    def labelled(self) -> "EmbeddingSplit":
        """The rows with a label (stripped); one warning counts the others."""
        labels = [label.strip() for label in self.labels]
        mask = np.array([bool(label) for label in labels], dtype=bool)
        where = f"{self.folder}/{self.split}.csv" if self.folder else f"the {self.split} split"
        if not mask.any():
            raise AudiocpcError(f"{where}: no crop has a label, so there is nothing to classify "
                                "(labels come from the file names; see `audiocpc embed`)")
        if not mask.all():
            log.warning("%s: %d of %d crops have no label and are left out", where,
                        int((~mask).sum()), len(mask))
        stripped = EmbeddingSplit(self.features, self.files, labels, self.start_seconds,
                                  self.duration_seconds, self.info, self.folder, self.split)
        return stripped.subset(mask)
