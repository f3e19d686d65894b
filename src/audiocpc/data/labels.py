"""Class labels for audio files, discovered from the data (never listed in code).

Only the path BELOW the data folder is used, so a data folder that happens to sit inside a
directory named `rock` does not label everything `rock`. Modes:

- `auto` (default): the name of the sub-folder a file sits in (`blues/x.wav` -> blues);
  for a file directly in the data folder, the leading word of its name
  (`blues.00000.wav` -> blues, `pop37.wav` -> pop, `7seven00032.wav` -> seven).
- `folder`: the name of the sub-folder only.
- `regex`: the named group `label` of a pattern searched in the file name.
- `csv`: a table of `file,label` rows, paths relative to the data folder.

A file without a label gets "" (unlabelled); the count is warned about once.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator, Literal, Optional, Sequence

from audiocpc.config import DataConfig
from audiocpc.errors import ConfigError

log = logging.getLogger("audiocpc")

LabelMode = Literal["auto", "folder", "regex", "csv"]
LABEL_MODES: tuple[str, ...] = ("auto", "folder", "regex", "csv")
UNLABELLED = ""

# Optional leading digits (`7seven00032`), then a word that may join letter runs with _ or -
# (`hip_hop.00001`); the digits and punctuation that follow are the file's number.
_NAME_LABEL = re.compile(r"^\d*([A-Za-z]+(?:[_-][A-Za-z]+)*)")


def label_from_name(file_name: str) -> str:
    """The label the `auto` mode reads from a file name, or "" if it has none."""
    match = _NAME_LABEL.match(PurePosixPath(file_name).name)
    return match.group(1) if match else UNLABELLED


@dataclass
class LabelRule:
    """A validated way of labelling files; build it with `label_rule`."""

    mode: LabelMode = "auto"
    pattern: Optional[re.Pattern[str]] = None
    table: dict[str, str] = field(default_factory=dict)
    group: str = "label"  # the named regex group that holds the label

    def label(self, relative: str) -> str:
        """The label of a file given by its posix path below the data folder."""
        path = PurePosixPath(relative)
        folder = path.parent.name  # "" for a file directly in the data folder
        if self.mode == "folder":
            return folder
        if self.mode == "auto":
            return folder or label_from_name(path.name)
        if self.mode == "regex":
            assert self.pattern is not None
            match = self.pattern.search(path.name)
            return (match.group(self.group) or UNLABELLED) if match else UNLABELLED
        return self.table.get(path.as_posix(), UNLABELLED)


def safe_relative_path(text: str, source: str) -> str:
    """A path from a label table, normalised to posix; refuses paths that leave the folder."""
    raw = text.strip().replace("\\", "/")
    if not raw:
        raise ConfigError(f"{source}: empty file name")
    if PurePosixPath(raw).is_absolute() or PureWindowsPath(text.strip()).drive:
        raise ConfigError(f"{source}: '{text.strip()}' is an absolute path; give paths relative "
                          "to the data folder (e.g. blues/blues.00000.wav)")
    parts = [p for p in PurePosixPath(raw).parts if p != "."]
    if ".." in parts:
        raise ConfigError(f"{source}: '{text.strip()}' leaves the data folder ('..'); give paths "
                          "relative to the data folder, inside it")
    if not parts:
        raise ConfigError(f"{source}: '{text.strip()}' is not a file name")
    return PurePosixPath(*parts).as_posix()


@dataclass(frozen=True)
class RuleOptions:
    """How the settings of one rule are named in messages (CLI flags or config keys) and
    which named regex group holds the value."""

    mode: str = "--label-mode"
    pattern: str = "--label-pattern"
    table: str = "--labels-csv"
    group: str = "label"
    example: str = "'^(?P<label>\\d)_'"


LABEL_OPTIONS = RuleOptions()
TRAINING_LABEL_OPTIONS = RuleOptions("data.labels", "data.label_pattern", "data.labels_csv")
JOIN_OPTIONS = RuleOptions("data.join_by", "data.join_pattern", "data.join_csv", "group",
                           "'_(?P<group>[a-z]+)_'")


_OTHER_ENCODINGS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def _table_text(csv_path: Path) -> str:
    """The table as text: UTF-8 (with or without a byte-order mark), else one clear error
    naming the line and the encoding to save it in."""
    raw = csv_path.read_bytes()
    def fix(source: str) -> str:
        return (f"save it as UTF-8 (iconv -f {source} -t UTF-8 {csv_path.name} > utf8.csv, or "
                "'CSV UTF-8' in a spreadsheet)")

    for mark, name in _OTHER_ENCODINGS:  # UTF-32 first: its LE mark starts like UTF-16's
        if raw.startswith(mark):
            raise ConfigError(f"{csv_path}:1: the file is {name} text; {fix(name)}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{csv_path}:{line}: byte 0x{raw[exc.start]:02x} is not UTF-8 (a Latin-1 "
                          f"or Windows-1252 file?); {fix('LATIN1')}") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ConfigError(f"{csv_path}:{line}: the file contains NUL bytes (UTF-16 or UTF-32 "
                          f"without a byte-order mark, or not text at all); {fix('UTF-16LE')}")
    return text


def _csv_rows(csv_path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) per row; a row csv cannot parse is one clear error."""
    reader = csv.reader(io.StringIO(_table_text(csv_path), newline=""))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over csv's limit of 131072 characters
            raise ConfigError(f"{csv_path}:{reader.line_num}: not a readable CSV row ({exc}: a "
                              f"field of more than {csv.field_size_limit()} characters, or a quote "
                              "never closed?); give one 'file,label' pair per line") from None
        yield reader.line_num, row


def read_label_table(csv_path: str | Path, options: RuleOptions = LABEL_OPTIONS) -> dict[str, str]:
    """`file,label` rows (a header row `file,label` is optional) -> {relative path: label}."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ConfigError(f"{options.table}: no such file: {csv_path}")
    header = ["file", options.group]
    table: dict[str, str] = {}
    for line_number, row in _csv_rows(csv_path):
        if not row or all(not cell.strip() for cell in row):
            continue
        if line_number == 1 and [c.strip().lower() for c in row] in (header, ["file", "label"]):
            continue
        source = f"{csv_path}:{line_number}"
        if len(row) != 2:
            raise ConfigError(f"{source}: expected two columns '{','.join(header)}', got {len(row)}")
        name = safe_relative_path(row[0], source)
        label = row[1].strip()
        if table.get(name, label) != label:
            raise ConfigError(f"{source}: '{name}' is labelled both '{table[name]}' and '{label}'")
        table[name] = label
    return table


def label_rule(mode: str = "auto", pattern: Optional[str] = None,
               csv_path: Optional[str | Path] = None,
               options: RuleOptions = LABEL_OPTIONS) -> LabelRule:
    """Validate the label settings. A pattern implies `regex`, a CSV file implies `csv`.
    `options` names the settings in messages and the regex group to read."""
    o = options
    if pattern is not None and csv_path is not None:
        raise ConfigError(f"give either {o.pattern} or {o.table}, not both")
    if mode == "auto" and pattern is not None:
        mode = "regex"
    if mode == "auto" and csv_path is not None:
        mode = "csv"
    if mode not in LABEL_MODES:
        raise ConfigError(f"{o.mode}: unknown mode '{mode}'; choose {', '.join(LABEL_MODES)}")
    if mode == "regex":
        if pattern is None:
            raise ConfigError(f"{o.mode} regex needs {o.pattern}, e.g. {o.example}")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{o.pattern}: not a valid regular expression: {exc}") from None
        if o.group not in compiled.groupindex:
            raise ConfigError(f"{o.pattern}: the pattern needs a named group '{o.group}', "
                              f"e.g. {o.example}")
        return LabelRule("regex", pattern=compiled, group=o.group)
    if mode == "csv":
        if csv_path is None:
            raise ConfigError(f"{o.mode} csv needs {o.table} FILE (rows: file,{o.group})")
        return LabelRule("csv", table=read_label_table(csv_path, o))
    if pattern is not None or csv_path is not None:
        raise ConfigError(f"{o.mode} {mode} does not use {o.pattern} or {o.table}")
    return LabelRule(mode)  # type: ignore[arg-type]


def training_label_rule(data: DataConfig) -> Optional[LabelRule]:
    """The rule for the label-aware negatives (data.labels), or None for unlabelled training."""
    if data.labels == "none":
        return None
    return label_rule(data.labels, data.label_pattern, data.labels_csv, TRAINING_LABEL_OPTIONS)


def join_group_rule(data: DataConfig) -> Optional[LabelRule]:
    """The rule that gives each file its group for data.join=group, or None otherwise."""
    if data.join != "group":
        if data.join_pattern is not None or data.join_csv is not None:
            raise ConfigError(f"data.join={data.join} does not use data.join_pattern or "
                              "data.join_csv; set data.join=group to join clips by group")
        return None
    return label_rule(data.join_by, data.join_pattern, data.join_csv, JOIN_OPTIONS)


_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}


def _natural_key(name: str) -> tuple:
    """Digits compare as numbers (class2 < class10); a number word as its number."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p)


def sort_classes(names: Sequence[str]) -> list[str]:
    """Class names in natural order: zero, one, two ... when they are all number words,
    otherwise alphabetical with numbers compared as numbers (class2 before class10)."""
    unique = sorted(set(names))
    if unique and all(n.lower() in _NUMBER_WORDS for n in unique):
        return sorted(unique, key=lambda n: _NUMBER_WORDS[n.lower()])
    return sorted(unique, key=lambda n: (_natural_key(n), n))


SHOWN_CLASSES = 8  # class names a summary lists


def describe_classes(labels: Sequence[str], source: str = "") -> str:
    """'10 classes in 3000 files (auto labels): zero (300), one (300), ...' for one label per
    file ("" = unlabelled, not counted as a class)."""
    counts: dict[str, int] = {}
    for label in labels:
        if label:
            counts[label] = counts.get(label, 0) + 1
    names = sort_classes(list(counts))
    shown = ", ".join(f"{n} ({counts[n]})" for n in names[:SHOWN_CLASSES])
    more = f", ... (+{len(names) - SHOWN_CLASSES} more)" if len(names) > SHOWN_CLASSES else ""
    where = f" ({source})" if source else ""
    return f"{len(names)} class(es) in {len(labels)} file(s){where}: {shown or 'none'}{more}"


FIRST_WORD_PATTERN = "^\\d*(?P<label>[A-Za-z]+)"
WORD_AND_NUMBER_PATTERN = "^(?P<label>[A-Za-z]+\\d+)"


def implausible_labels(labels: Sequence[str], names: Sequence[str], mode: str) -> Optional[str]:
    """A warning when the classes found look like a wrong guess, with the option that fixes
    it, or None. Cases: every file in one class although the names differ by a number
    (`class1.wav`, `class2.wav`); labels that join two fields (`7seven_jackson_3.wav` ->
    seven_jackson: 10 digits x 6 speakers = 57 classes); most classes with a single file."""
    counts: dict[str, int] = {}
    for label in labels:
        if label:
            counts[label] = counts.get(label, 0) + 1
    if not counts or mode not in ("auto", "folder"):
        return None
    option = "--label-pattern, --label-mode folder or --labels-csv"
    if len(counts) == 1 and len(labels) >= 2:
        only = next(iter(counts))
        numbered = sum(1 for n in names if re.match(rf"^\d*{re.escape(only)}\d", PurePosixPath(n).name))
        if numbered >= 2:
            return (f"every file got the one label '{only}' (the digits after it are read as the "
                    f"file's number); if they are the class, give --label-pattern "
                    f"'{WORD_AND_NUMBER_PATTERN}'")
        return None
    joined = [c for c in counts if re.search(r"[_-]", c)]
    if len(joined) == len(counts) and len(counts) >= 4:
        firsts = {re.split(r"[_-]", c)[0] for c in counts}
        rests = {re.split(r"[_-]", c, maxsplit=1)[1] for c in counts}
        if len(firsts) * len(rests) >= len(counts) > max(len(firsts), len(rests)):
            return (f"{len(counts)} classes look like two fields joined (e.g. '{sort_classes(joined)[0]}'): "
                    f"{len(firsts)} first words x {len(rests)} second words. To label by the first "
                    f"word give --label-pattern '{FIRST_WORD_PATTERN}' (or --label-mode folder / --labels-csv)")
    single = sum(1 for n in counts.values() if n == 1)
    if len(counts) >= 3 and single > len(counts) / 2:
        return (f"{single} of {len(counts)} classes have a single file: the label probably holds a "
                f"per-file part of the name; give {option}")
    return None


def assign_labels(relative_paths: Sequence[str], rule: LabelRule, source: str = "") -> list[str]:
    """One label per file ("" = unlabelled): logs the classes found, warns once about
    unlabelled files, an implausible guess and table rows that name no file."""
    labels = [rule.label(p) for p in relative_paths]
    log.info("classes found: %s", describe_classes(labels, source or f"{rule.mode} labels"))
    doubt = implausible_labels(labels, relative_paths, rule.mode)
    if doubt:
        log.warning("labels (%s mode) look wrong: %s", rule.mode, doubt)
    missing = [p for p, label in zip(relative_paths, labels) if label == UNLABELLED]
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        log.warning("%d of %d file(s) have no label (%s mode) and are kept as unlabelled: %s",
                    len(missing), len(labels), rule.mode, shown)
    if rule.mode == "csv":
        unused = len(set(rule.table) - set(relative_paths))
        if unused:
            log.warning("%d row(s) of the label table name files that are not embedded "
                        "(not found, unreadable or too short)", unused)
    return labels
