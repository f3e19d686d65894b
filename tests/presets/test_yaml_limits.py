"""YAML that expands without bound (a billion-laughs alias bomb) is refused before any of it
is built, and no error message echoes more than a short excerpt of the value it complains about.
"Before it is built" is checked by watching the loader's constructor, not a clock: a duration
bound fails on a loaded machine and passes on a fast one that expands the bomb anyway."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from audiocpc import load_config
from audiocpc.errors import ConfigError
from audiocpc.safe_yaml import BoundedSafeLoader


@pytest.fixture
def built_bombs(monkeypatch: pytest.MonkeyPatch) -> list[yaml.Node]:
    """The documents with a top-level `defs:` (the bombs here) the loader went on to build."""
    built: list[yaml.Node] = []
    original = BoundedSafeLoader.construct_document

    def watched(self: BoundedSafeLoader, node: yaml.Node) -> object:
        if isinstance(node, yaml.MappingNode) and any(key.value == "defs" for key, _ in node.value):
            built.append(node)
        return original(self, node)

    monkeypatch.setattr(BoundedSafeLoader, "construct_document", watched)
    return built


def _bomb(levels: int, width: int = 10) -> str:
    """YAML anchors where each level lists the previous one `width` times: width**levels leaves."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "\n".join(lines)


@pytest.mark.parametrize("setting", ["train.seed", "data.extensions", "loss.step_weights"])
def test_alias_bomb_in_a_setting_is_refused_with_a_short_message(setting: str, tmp_path: Path,
                                                                  built_bombs: list[yaml.Node]) -> None:
    section, key = setting.split(".")
    # 10**6 leaves: small enough that the old loader finished (with a message of megabytes)
    preset = tmp_path / "bomb.yaml"
    preset.write_text(f"defs:\n  {_bomb(6).replace(chr(10), chr(10) + '  ')}\n"
                      f"{section}:\n  {key}: *a5\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(preset))
    assert built_bombs == []   # refused from the node graph, before expanding a single alias
    message = str(err.value)
    assert len(message) < 2000, f"the message echoes {len(message)} characters"
    assert "bomb.yaml" in message and "alias" in message


def test_a_huge_bomb_is_refused_before_it_expands(tmp_path: Path, built_bombs: list[yaml.Node]) -> None:
    preset = tmp_path / "laughs.yaml"
    preset.write_text(f"defs:\n  {_bomb(12).replace(chr(10), chr(10) + '  ')}\n"
                      "train:\n  seed: *a11\n")  # 10**12 leaves if expanded
    with pytest.raises(ConfigError, match="laughs.yaml.*alias"):
        load_config(str(preset))
    assert built_bombs == []


def test_alias_bomb_in_a_set_override_is_refused() -> None:
    levels = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        levels.append(f"&a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    value = "[" + ", ".join(levels) + "]"
    with pytest.raises(ConfigError, match=r"--set.*train\.seed.*alias"):
        load_config("1dconv_tiny", [f"train.seed={value}"])


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    preset = tmp_path / "loop.yaml"
    preset.write_text("data:\n  extensions: &e [wav, *e]\n")
    with pytest.raises(ConfigError, match="loop.yaml.*alias"):
        load_config(str(preset))


def test_ordinary_anchors_still_work(tmp_path: Path) -> None:
    preset = tmp_path / "anchors.yaml"
    preset.write_text("preset_base: &ext [wav, flac]\ndata:\n  extensions: *ext\n")
    with pytest.raises(ConfigError, match="preset_base: unknown key"):  # the anchor itself is read
        load_config(str(preset))
    preset.write_text("data:\n  extensions: &ext [wav, flac]\n  sample_rate: 8000\n"
                      "  full_duration: 1.0\n  T: 7\n  k: 1\n")
    assert load_config(str(preset)).data.extensions == ["wav", "flac"]


def test_long_values_are_echoed_in_short() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("1dconv_tiny", ["train.seed=" + "x" * 100_000])
    assert len(str(err.value)) < 500 and "train.seed" in str(err.value)
