"""Label discovery: file names, folders, regex, CSV tables; only the path below the data folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from audiocpc.data.audio import relative_name
from audiocpc.errors import ConfigError
from audiocpc.data.labels import assign_labels, label_from_name, label_rule


@pytest.mark.parametrize("name, label", [
    ("blues.00000.wav", "blues"),
    ("pop37.wav", "pop"),
    ("7seven00032.wav", "seven"),
    ("hum.00003.wav", "hum"),
    ("hip_hop.00012.wav", "hip_hop"),
    ("00017.wav", ""),          # only a number: unlabelled
    ("0_jackson_1.wav", ""),    # digit class names need --label-pattern
])
def test_auto_reads_the_leading_word_of_the_file_name(name: str, label: str) -> None:
    assert label_from_name(name) == label
    assert label_rule().label(name) == label


def test_auto_prefers_the_folder_a_file_sits_in() -> None:
    rule = label_rule("auto")
    assert rule.label("blues/x.wav") == "blues"
    assert rule.label("blues/pop37.wav") == "blues"
    assert rule.label("genres/metal/x.wav") == "metal"  # the folder the file is in


def test_folder_mode_uses_only_folders() -> None:
    rule = label_rule("folder")
    assert rule.label("jazz/blues.00000.wav") == "jazz"
    assert rule.label("blues.00000.wav") == ""


def test_regex_mode_takes_the_named_group_from_the_file_name() -> None:
    rule = label_rule(pattern=r"^(?P<label>\d)_")  # a pattern implies regex mode
    assert rule.mode == "regex"
    assert rule.label("7_jackson_32.wav") == "7"
    assert rule.label("speakers/0_theo_1.wav") == "0"
    assert rule.label("jackson_7.wav") == ""


@pytest.mark.parametrize("pattern, message", [
    (r"^(\d)_", "named group 'label'"),
    (r"^(?P<label>\d", "not a valid regular expression"),
])
def test_bad_patterns_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        label_rule("regex", pattern)


def test_csv_mode_reads_file_label_rows(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("file,label\nblues/a.wav,rock\n./b.wav, jazz \nsub\\c.wav,pop\n")
    rule = label_rule(csv_path=table)
    assert rule.mode == "csv"
    assert [rule.label(p) for p in ("blues/a.wav", "b.wav", "sub/c.wav", "d.wav")] == \
        ["rock", "jazz", "pop", ""]


@pytest.mark.parametrize("entry, message", [
    ("../outside.wav", "leaves the data folder"),
    ("a/../../outside.wav", "leaves the data folder"),
    ("/etc/passwd", "absolute path"),
    ("C:\\music\\x.wav", "absolute path"),
])
def test_csv_paths_may_not_escape_the_data_folder(tmp_path: Path, entry: str, message: str) -> None:
    table = tmp_path / "labels.csv"
    table.write_text(f"file,label\nok.wav,a\n\"{entry}\",b\n")
    with pytest.raises(ConfigError, match=message) as info:
        label_rule("csv", csv_path=table)
    assert "labels.csv:3" in str(info.value)  # names the line


def test_csv_conflicting_rows_and_wrong_columns_are_refused(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("a.wav,x\na.wav,y\n")
    with pytest.raises(ConfigError, match="labelled both"):
        label_rule(csv_path=table)
    table.write_text("a.wav,x,extra\n")
    with pytest.raises(ConfigError, match="two columns"):
        label_rule(csv_path=table)


def test_options_that_do_not_fit_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        label_rule(pattern="(?P<label>x)", csv_path=tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="needs --label-pattern"):
        label_rule("regex")
    with pytest.raises(ConfigError, match="unknown mode"):
        label_rule("filename")


def test_a_parent_folder_named_like_a_class_does_not_leak_into_labels(tmp_path: Path) -> None:
    root = tmp_path / "rock" / "data"
    paths = [root / "blues.00000.wav", root / "7seven00032.wav", root / "00001.wav",
             root / "jazz" / "take1.wav"]
    names = [relative_name(p, root) for p in paths]
    assert names[-1] == "jazz/take1.wav"
    assert assign_labels(names, label_rule("auto")) == ["blues", "seven", "", "jazz"]
    assert assign_labels(names, label_rule("folder")) == ["", "", "", "jazz"]


def test_unlabelled_files_are_counted_in_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="audiocpc"):
        labels = assign_labels(["1.wav", "2.wav", "a.01.wav"], label_rule())
    assert labels == ["", "", "a"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("2 of 3 file(s) have no label")


FSDD_STYLE = [f"{d}{w}_{s}_{i}.wav"
              for d, w in enumerate("zero one two three four five six seven eight nine".split())
              for s in ("jackson", "nicolas", "theo", "yweweler", "george", "lucas") for i in range(3)]


def _label_warnings(names: list[str], rule=None) -> tuple[list[str], list[str]]:
    """(info lines, warning lines) that assign_labels logs for these file names."""
    logger = logging.getLogger("audiocpc")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assign_labels(names, rule or label_rule())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return ([r.getMessage() for r in records if r.levelno == logging.INFO],
            [r.getMessage() for r in records if r.levelno == logging.WARNING])


def test_joined_fields_are_warned_about_with_the_pattern_that_fixes_them() -> None:
    # 7seven_jackson_3.wav became 'seven_jackson': 60 classes instead of 10, without a word
    infos, warnings = _label_warnings(FSDD_STYLE)
    assert any("60 class(es) in 180 file(s)" in line for line in infos)
    assert len(warnings) == 1 and "10 first words x 6 second words" in warnings[0]
    pattern = warnings[0].split("--label-pattern '")[1].split("'")[0]
    fixed = [label_rule(pattern=pattern).label(n) for n in FSDD_STYLE]
    assert sorted(set(fixed)) == sorted("zero one two three four five six seven eight nine".split())
    assert _label_warnings(FSDD_STYLE, label_rule(pattern=pattern))[1] == []


def test_one_class_from_numbered_names_is_warned_about() -> None:
    # class1.wav and class2.wav both became 'class'
    infos, warnings = _label_warnings(["class1.wav", "class2.wav", "class2_b.wav"])
    assert any("1 class(es) in 3 file(s)" in line and "class (3)" in line for line in infos)
    assert len(warnings) == 1 and "one label 'class'" in warnings[0]
    pattern = warnings[0].split("--label-pattern '")[1].split("'")[0]
    assert [label_rule(pattern=pattern).label(n) for n in ("class1.wav", "class2.wav")] == ["class1", "class2"]


def test_plausible_labels_are_listed_without_a_warning() -> None:
    names = [f"blues.{i:05d}.wav" for i in range(3)] + [f"hip_hop.{i:05d}.wav" for i in range(3)]
    infos, warnings = _label_warnings(names)
    assert warnings == [] and any("2 class(es) in 6 file(s)" in line and "blues (3), hip_hop (3)" in line
                                  for line in infos)
