"""Loading configurations: built-in YAML presets or a YAML file, dotted `--set` overrides,
and the error text that names each bad field (with the nearest valid key).

`load_config` validates the settings themselves (types, ranges, the crop's geometry) and
imports no torch, so a typo is answered at once. The checks that need the model's
components run when the model is built (`audiocpc.models.checks.check_model_config`);
`audiocpc.load_config` does both.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from audiocpc.config import Config
from audiocpc.errors import ConfigError
from audiocpc.safe_yaml import YAMLExpansionError, load_yaml, short_repr


def available_presets() -> list[str]:
    folder = resources.files("audiocpc") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        loaded = load_yaml(text)
    except YAMLExpansionError as exc:
        raise ConfigError(f"{source}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def preset_dict(name_or_path: str) -> dict[str, Any]:
    """The raw settings of a built-in preset, or of a YAML file given by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"--preset: no such configuration file: {path}")
        raw = _read_yaml(path.read_text(encoding="utf-8"), str(path))
        raw.setdefault("preset", path.stem)
        return raw
    names = available_presets()
    if name_or_path not in names:
        close = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"--preset: unknown preset '{name_or_path}'.{hint} Available: {', '.join(names)}"
            " (or give the path of a YAML file)."
        )
    text = (resources.files("audiocpc") / "presets" / f"{name_or_path}.yaml").read_text("utf-8")
    raw = _read_yaml(text, f"preset {name_or_path}")
    raw["preset"] = name_or_path
    return raw


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.lr=2e-4` -> (['train', 'lr'], 0.0002). Values are parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {short_repr(item)}: expected KEY=VALUE, e.g. --set train.lr=2e-4")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {short_repr(item)}: the key must be dotted names, e.g. train.lr")
    try:
        value = load_yaml(text) if text.strip() else None
    except YAMLExpansionError as exc:
        raise ConfigError(f"--set {key}: refused: {exc}") from None
    except yaml.YAMLError:
        value = text
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {short_repr(item)}: '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _section_at(loc: tuple[Any, ...]) -> Optional[type[BaseModel]]:
    """The pydantic model class that holds the key at `loc` (for suggestions)."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def _describe(error: ErrorDetails) -> str:
    loc = tuple(part for part in error["loc"] if part not in ("function-after",))
    dotted = ".".join(str(p) for p in loc) or "config"
    if error["type"] == "extra_forbidden":
        section = _section_at(loc)
        names = _field_names(section) if section else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.5)
        hint = f"; did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?" if close else ""
        valid = f" Valid keys here: {', '.join(names)}." if names else ""
        return f"{dotted}: unknown key{hint or '.'}{valid}"
    if error["type"] == "value_error" and not loc:
        return str(error["ctx"]["error"])
    given = error.get("input")
    shown = f" (got {short_repr(given)})" if not isinstance(given, dict) else ""
    reason = _limit_reason(loc) if error["type"] in _BOUND_ERRORS else ""
    return f"{dotted}: {error['msg']}{shown}{reason}"


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _limit_reason(loc: tuple[Any, ...]) -> str:
    """'; <why>' for a field declared with `config.limited`, else ''."""
    section = _section_at(loc)
    field = section.model_fields.get(str(loc[-1])) if section and loc else None
    extra = field.json_schema_extra if field is not None else None
    return f"; {extra['limit_reason']}" if isinstance(extra, dict) and "limit_reason" in extra else ""


# Keys that were renamed: the old name is still read (from YAML files, --set and saved runs)
# so configurations written for the reference framework or an older audiocpc keep working.
RENAMED = {
    ("data", "desired_sr"): "sample_rate",
}


def rename_old_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with each old key under its current name; an old key given beside the new one
    was an override on top of a preset (`--set data.desired_sr=...`), so it wins."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for (section, old), new in RENAMED.items():
        node = raw.get(section)
        if isinstance(node, dict) and old in node:
            node[new] = node.pop(old)
    return raw


def validate_config(raw: dict[str, Any]) -> Config:
    """Validate a settings mapping into a Config, or raise ConfigError listing every problem."""
    raw = rename_old_keys(raw)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors():
            for line in _describe(error).split("\n"):
                if line not in problems:
                    problems.append(line)
        raise ConfigError(problems) from None


def load_config(preset: str = "1dconv_gru", overrides: Optional[list[str]] = None) -> Config:
    """Load a built-in preset (or a YAML file) and apply dotted `--set` overrides."""
    raw = preset_dict(preset)
    apply_overrides(raw, list(overrides or []))
    return validate_config(raw)


# Settings added after runs were already saved, with the value that reproduces how those
# runs were trained: a stored configuration without the key gets this value, not the new
# default, so an old checkpoint loads (and resumes) as the model it was.
STORED_BEFORE = {
    ("data", "standardize"): False,
    ("data", "auto_prepare"): False,
    ("train", "lr_schedule"): "constant",
    ("train", "warmup_steps"): 0,
    ("train", "validation_fraction"): 0.0,
}


def upgrade_stored(raw: dict[str, Any]) -> dict[str, Any]:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for (section, key), value in STORED_BEFORE.items():
        if isinstance(raw.get(section), dict):
            raw[section].setdefault(key, value)
    return raw


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a Config from the plain data stored in a run folder or checkpoint."""
    return validate_config(upgrade_stored(raw))


def config_from_yaml_file(path: str | Path) -> Config:
    """A configuration stored in a run folder (its config.yaml)."""
    return config_from_dict(_read_yaml(Path(path).read_text(encoding="utf-8"), str(path)))


