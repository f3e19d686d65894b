"""A labels CSV in another encoding, with a NUL byte or with a huge field gives one line
naming the file, the line and the fix, never a raw decoding or csv traceback (issue 14, 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiocpc.cli import main
from audiocpc.data.labels import read_label_table
from audiocpc.errors import ConfigError


def _refusal(table: Path) -> str:
    with pytest.raises(ConfigError) as err:
        read_label_table(table)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_latin1_table_names_the_line_and_the_encoding(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_bytes("file,label\na.wav,rock\nb.wav,caf\u00e9\n".encode("latin-1"))
    message = _refusal(table)
    assert f"{table}:3" in message and "UTF-8" in message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_table_is_named_as_such(encoding: str, tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_bytes("file,label\na.wav,rock\n".encode(encoding))
    message = _refusal(table)
    assert str(table) in message and "UTF-8" in message
    assert "UTF-16" in message or "UTF-32" in message or "NUL" in message


def test_huge_field_names_the_line(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text('file,label\na.wav,rock\n"b.wav,' + "x" * 200_000 + '"\n')
    message = _refusal(table)
    assert f"{table}:3" in message and "characters" in message


def test_unterminated_quote_is_one_line(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text('file,label\n"a.wav,rock\n')
    message = _refusal(table)
    assert str(table) in message


def test_binary_file_named_as_a_table(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert str(table) in _refusal(table)


def test_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "audio"
    data.mkdir()
    table = tmp_path / "labels.csv"
    table.write_bytes("file,label\nb.wav,caf\u00e9\n".encode("latin-1"))
    code = main(["embed", str(tmp_path / "no-run"), "--data", str(data), "--split", "train",
                 "--labels-csv", str(table), "--label-mode", "csv", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err


def test_utf8_with_bom_still_reads(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_bytes("file,label\na.wav,caf\u00e9\n".encode("utf-8-sig"))
    assert read_label_table(table) == {"a.wav": "caf\u00e9"}
