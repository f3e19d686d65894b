"""One typed configuration tree, loaded from YAML presets with dotted overrides.

Every setting lives here; nothing is read from module globals. A configuration is
validated once, when it is loaded, so that a bad value fails before any work starts, with
one message per problem that names the field (and the nearest valid key or value).
"""

from __future__ import annotations

import difflib
import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from audiocpc.errors import ConfigError


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ComponentConfig(BaseModel):
    """A pluggable component: `type` names a registered component or `module:attr`;
    the other keys are its keyword arguments, checked against its signature at load time."""

    model_config = ConfigDict(extra="allow")

    type: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(Section):
    T: int = Field(27, gt=0, description="context steps (windows seen before predicting)")
    k: int = Field(3, gt=0, description="future steps to predict")
    N: int = Field(8, ge=2, description="sequences per batch (per process)")
    full_duration: float = Field(4.0, gt=0, description="seconds per training crop")
    desired_sr: int = Field(4410, gt=0, description="sample rate the model works at")
    original_sr: Optional[int] = Field(
        None, gt=0, description="optional check: warn about files with another rate"
    )
    extensions: list[str] = Field(default_factory=lambda: ["wav", "flac", "ogg", "mp3"])
    cache_dir: Optional[str] = Field(
        None, description="decoded-audio cache; default ~/.cache/audiocpc/audio"
    )
    num_workers: int = Field(0, ge=0, description="background batch-loading processes")
    on_bad_file: Literal["skip", "error"] = "skip"
    labels: Literal["none", "auto", "folder", "regex", "csv"] = Field(
        "none", description="labels for the label-aware negative policies (e.g. speaker); "
        "same modes as `audiocpc embed`; none = unlabelled training"
    )
    label_pattern: Optional[str] = Field(None, description="regex with a group 'label' (labels: regex)")
    labels_csv: Optional[str] = Field(None, description="file,label table (labels: csv)")

    @property
    def crop_samples(self) -> int:
        return int(round(self.full_duration * self.desired_sr))


class ModelConfig(Section):
    mode: Literal["window", "frame"] = Field(
        "window",
        description="window: one z per window of the crop (reference); "
        "frame: convolutional encoder over the crop, predictions from every step (CPC paper)",
    )
    z_dim: int = Field(256, gt=0)
    c_dim: int = Field(512, gt=0)
    encoder: ComponentConfig = Field(default_factory=lambda: ComponentConfig(type="conv1d"))
    context: ComponentConfig = Field(default_factory=lambda: ComponentConfig(type="gru"))
    predictor: ComponentConfig = Field(default_factory=lambda: ComponentConfig(type="linear"))
    similarity: ComponentConfig = Field(default_factory=lambda: ComponentConfig(type="dot"))


class NegativesConfig(Section):
    policy: str = Field(
        "other_sequences", description="which candidates may serve as negatives"
    )
    count: Optional[int] = Field(
        None,
        gt=0,
        description="negatives per prediction; null = every sequence of the batch "
        "but the positive's, at the target's step (the reference: N-1)",
    )
    across_ranks: bool = Field(
        False,
        description="distributed runs: draw negatives from the z of every process's batch "
        "(a differentiable all_gather) instead of this process's own batch",
    )
    allow_positive: bool = Field(
        False, description="sampled policies: let the positive itself be drawn as a negative "
        "(off: it never is)")


class AugmentConfig(Section):
    """Waveform augmentation during training (off unless apply_to is set), as in CPC_v2."""

    apply_to: Literal["none", "past", "future", "both"] = Field(
        "none", description="past: what the context network reads; future: the predicted "
        "targets and their negatives; both: the whole crop")
    gain_db: float = Field(0.0, ge=0, description="random gain, uniform in +-gain_db dB; 0 = off")
    noise_snr_db: Optional[float] = Field(
        None, description="additive white noise at this SNR in dB (per sequence); null = off")
    time_masks: int = Field(0, ge=0, description="zeroed spans per sequence; 0 = off")
    time_mask_seconds: float = Field(0.05, ge=0, description="longest zeroed span, in seconds")


class LossConfig(Section):
    step_weights: Union[Literal["uniform", "linear_decay"], list[float]] = "uniform"
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)


class TrainConfig(Section):
    epochs: int = Field(20, gt=0)
    steps_per_epoch: int = Field(100, gt=0)
    lr: float = Field(2e-4, gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: Optional[float] = Field(1.0, gt=0, description="max gradient norm; null = off")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:1")
    threads: Optional[int] = Field(
        None, gt=0, description="CPU threads for torch; null = torch's default (all cores). "
        "Fewer threads than cores avoids slow-downs when other programs share the CPU"
    )
    mixed_precision: Literal["none", "bf16", "fp16"] = "none"
    seed: int = 0
    checkpoint_every: int = Field(100, gt=0, description="steps between checkpoints")
    max_minutes: Optional[float] = Field(
        None, gt=0, description="wall-clock limit of one training call: stop at the first step "
        "boundary past it, save a checkpoint (resumable); null = train every step")
    on_nan: Literal["stop", "skip"] = "stop"
    distributed_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="under torchrun: auto = nccl with CUDA, gloo on CPU")
    distributed_timeout_s: float = Field(
        600.0, gt=0, description="under torchrun: longest wait for the other processes in any "
        "collective before the run stops with an error (e.g. when one rank died)")
    lr_scaling: Literal["none", "linear"] = Field(
        "none", description="under torchrun: none = train.lr as given; linear = train.lr x "
        "number of processes (data.N is per process, so the global batch is N x processes)")


class OutputConfig(Section):
    dir: str = "results"
    name: Optional[str] = Field(None, description="run name; default: the preset's name")


class Config(Section):
    preset: Optional[str] = Field(None, description="the preset this config came from")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _check_cross_field(self) -> "Config":
        problems = crop_geometry_problems(self) + step_weight_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def run_name(self) -> str:
        return self.output.name or self.preset or "cpc"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def window_samples(config: Config) -> int:
    """Samples per CPC window in window mode: the crop cut into T+k equal windows."""
    data = config.data
    return data.crop_samples // (data.T + data.k)


# A duration is accepted as `n` samples when duration x rate is within this of n: a value
# printed to six decimals (4.095238 s at 4410 Hz = 18059.9996 samples) then passes as pasted.
SAMPLE_TOLERANCE = 1e-3


def duration_text(samples: int, sample_rate: int) -> str:
    """The shortest decimal text for `samples / sample_rate` seconds that the configuration
    reads back as exactly `samples` samples (so a printed suggestion passes when pasted)."""
    exact = samples / sample_rate
    for decimals in range(1, 16):
        text = f"{exact:.{decimals}f}"
        if abs(float(text) * sample_rate - samples) < SAMPLE_TOLERANCE / 2:
            return text.rstrip("0").rstrip(".") if "." in text else text
    return repr(exact)


def crop_geometry_problems(config: Config) -> list[str]:
    data = config.data
    exact = data.full_duration * data.desired_sr
    # In window mode the crop must also split into T+k whole windows: suggest values on that grid.
    steps = data.T + data.k if config.model.mode == "window" else 1
    lower = math.floor(exact / steps + SAMPLE_TOLERANCE) * steps
    candidates = [m for m in (lower, lower + steps) if m > 0]
    nearest = " or ".join(duration_text(m, data.desired_sr) for m in candidates)
    if abs(exact - round(exact)) > SAMPLE_TOLERANCE:
        return [
            f"data.full_duration: {data.full_duration} s x data.desired_sr {data.desired_sr} Hz "
            f"= {exact:g} samples is not a whole number of samples; nearest valid "
            f"full_duration: {nearest}" + (" (whole windows of T+k)" if steps > 1 else "")
        ]
    samples = int(round(exact))
    if samples % steps == 0:
        return []
    return [
        f"data.full_duration: full_duration*desired_sr/(T+k) = {samples}/{steps} = "
        f"{samples / steps:.4f} is not a whole number of samples per window; "
        f"nearest valid full_duration: {nearest} (or change data.T, data.k or data.desired_sr)"
    ]


# ---------------------------------------------------------------- loading


def available_presets() -> list[str]:
    folder = resources.files("audiocpc") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
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
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=2e-4")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: the key must be dotted names, e.g. train.lr")
    try:
        value = yaml.safe_load(text) if text.strip() else None
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
                raise ConfigError(f"--set {item!r}: '{part}' is a value, not a section")
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


def _describe(error: dict[str, Any]) -> str:
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
    shown = f" (got {given!r})" if not isinstance(given, dict) else ""
    return f"{dotted}: {error['msg']}{shown}"


def _component_problems(raw: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Check each model component against the registry, straight from the raw settings, so
    its problems are reported together with those of the other sections."""
    # Imported late: the registry imports torch.
    from audiocpc.models.registry import resolve_component_params

    model_raw = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    defaults = ModelConfig()
    problems: list[str] = []
    resolved: dict[str, dict[str, Any]] = {}
    for kind in ("encoder", "context", "predictor", "similarity"):
        spec = model_raw.get(kind, getattr(defaults, kind).model_dump())
        if not isinstance(spec, dict) or not isinstance(spec.get("type", ""), str):
            continue  # reported by the schema check
        spec = dict(spec)
        type_name = spec.pop("type", getattr(defaults, kind).type)
        try:
            resolved[kind] = {"type": type_name, **resolve_component_params(kind, type_name, spec)}
        except ConfigError as exc:
            problems.extend(f"model.{kind}.{p}" for p in exc.problems)
    return problems, resolved


def validate_config(raw: dict[str, Any]) -> Config:
    """Validate a settings mapping into a Config, or raise ConfigError listing every problem."""
    problems, components = _component_problems(raw)
    config: Optional[Config] = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            for line in _describe(error).split("\n"):
                if line not in problems:
                    problems.append(line)
    if config is not None and not problems:
        for kind, spec in components.items():
            setattr(config.model, kind, ComponentConfig(**spec))
        from audiocpc.models.negatives import negative_policy_problems

        problems.extend(negative_policy_problems(config))
        if not problems:
            from audiocpc.models.checks import model_geometry_problems

            problems.extend(model_geometry_problems(config))
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def load_config(preset: str = "1dconv_gru", overrides: Optional[list[str]] = None) -> Config:
    """Load a built-in preset (or a YAML file) and apply dotted `--set` overrides."""
    raw = preset_dict(preset)
    apply_overrides(raw, list(overrides or []))
    return validate_config(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a Config from the plain data stored in a run folder or checkpoint."""
    return validate_config(dict(raw))


def config_from_yaml_file(path: str | Path) -> Config:
    raw = _read_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    return validate_config(raw)


def steps_weights(config: Config) -> list[float]:
    """Per-step loss weights for k = 1..K, normalised to sum to 1."""
    steps = config.data.k
    choice = config.loss.step_weights
    if choice == "uniform":
        weights = [1.0] * steps
    elif choice == "linear_decay":
        weights = [float(steps - j) for j in range(steps)]
    else:
        weights = [float(w) for w in choice]
    total = sum(weights)
    return [w / total for w in weights]


def step_weight_problems(config: Config) -> list[str]:
    choice = config.loss.step_weights
    if isinstance(choice, list):
        if len(choice) != config.data.k:
            return [
                f"loss.step_weights: {len(choice)} weights given but data.k = {config.data.k} "
                "steps are predicted; give one weight per step"
            ]
        if any(w < 0 or math.isnan(w) for w in choice) or sum(choice) <= 0:
            return ["loss.step_weights: weights must be >= 0 with a positive sum"]
    return []
