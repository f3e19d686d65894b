"""One typed configuration tree: the schema and the checks that need only the settings.

Every setting lives here; nothing is read from module globals. This module imports nothing
of the project but `errors` (and no torch), so a bad value is reported at once. Loading
(YAML presets, dotted overrides, error text) is `audiocpc.presets`; checks that need the
model's components (their arguments, the encoder's geometry) are `audiocpc.models.checks`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator



class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated, and no float
    setting may be infinite or NaN."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def limited(default: Any, why: str, **bounds: Any) -> Any:
    """A Field with bounds and the reason for them, which a refusal quotes."""
    return Field(default, json_schema_extra={"limit_reason": why}, **bounds)


# The most float32 samples one batch of crops may hold before the model runs (4 GiB).
MAX_BATCH_SAMPLES = 2**30


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
    N: int = limited(8, "more sequences per batch than fit in memory (for a larger global "
                     "batch, add processes)", ge=2, le=4096,
                     description="sequences per batch (per process)")
    full_duration: float = limited(4.0, "a crop longer than an hour cannot be held in a batch",
                                   gt=0, le=3600, description="seconds per training crop")
    sample_rate: int = limited(4410, "audio sample rates lie between 1 kHz and 384 kHz; a higher "
                              "rate only multiplies the size of the decoded cache", ge=1000,
                              le=384_000, description="sample rate the model works at")
    original_sr: Optional[int] = limited(
        None, "a file's rate lies between 100 Hz and 2 MHz", ge=100, le=2_000_000,
        description="optional check: warn about files with another rate"
    )
    extensions: list[str] = Field(default_factory=lambda: ["wav", "flac", "ogg", "mp3"])
    cache_dir: Optional[str] = Field(
        None, description="decoded-audio cache; default ~/.cache/audiocpc/audio"
    )
    auto_prepare: bool = Field(
        False, description="a folder given to train, embed, check-data or run is prepared once "
        "into the cache (int16 shards, as `audiocpc prepare` writes) and read from there, reused "
        "while its files are unchanged; false: each file decoded into the float32 cache")
    num_workers: int = limited(0, "each worker is a process of its own", ge=0, le=256,
                               description="background batch-loading processes")
    standardize: bool = Field(
        True, description="scale each recording (a file, or a waveform given in Python) to "
        "zero mean and unit variance before it is cropped, as wav2vec 2.0 and HuBERT do per "
        "utterance, so that learning and embeddings do not depend on the recording level; "
        "false: the raw waveform (the reference)")
    on_bad_file: Literal["skip", "error"] = "skip"
    labels: Literal["none", "auto", "folder", "regex", "csv"] = Field(
        "none", description="labels for the label-aware negative policies (e.g. speaker); "
        "same modes as `audiocpc embed`; none = unlabelled training"
    )
    label_pattern: Optional[str] = Field(None, description="regex with a group 'label' (labels: regex)")
    labels_csv: Optional[str] = Field(None, description="file,label table (labels: csv)")
    join: Literal["none", "group", "all"] = Field(
        "none", description="join short clips into longer sequences that training crops are "
        "cut from: none = each file on its own; group = the files of one group (data.join_by) "
        "in file order; all = every file of the folder. Embedding always uses each file alone"
    )
    join_by: Literal["auto", "folder", "regex", "csv"] = Field(
        "auto", description="the group of a file for data.join=group, with the same modes as "
        "data.labels (a join_pattern implies regex, a join_csv implies csv)"
    )
    join_pattern: Optional[str] = Field(
        None, description="regex with a named group 'group' searched in the file name, "
        "e.g. '_(?P<group>[a-z]+)_' for 7_jackson_32.wav (join_by: regex)"
    )
    join_csv: Optional[str] = Field(None, description="file,group table (join_by: csv)")
    join_gap_seconds: float = Field(
        0.0, ge=0, description="silence inserted between joined clips, in seconds"
    )
    streaming: bool = Field(
        False, description="read a prepared corpus's shards front to back (one seeded shard "
        "order per pass, crops through a shuffle buffer) instead of drawing crops by random "
        "access: for object storage (data/streaming.py)")
    shuffle_buffer: int = limited(1000, "the buffer holds this many crops in memory", ge=1,
                                  le=1_000_000, description="crops in the streaming shuffle buffer")

    @model_validator(mode="after")
    def _check_streaming(self) -> "DataConfig":
        if self.streaming and self.join != "none":
            raise ValueError("data.streaming: streaming reads each file on its own; set "
                             "data.join=none, or data.streaming=false to join clips")
        return self

    @property
    def crop_samples(self) -> int:
        return int(round(self.full_duration * self.sample_rate))


_WIDTH_REASON = ("wider than any CPC model (256-1024 in the papers): its layers would need "
                 "gigabytes")


class ModelConfig(Section):
    mode: Literal["window", "frame"] = Field(
        "window",
        description="window: one z per window of the crop (reference); "
        "frame: convolutional encoder over the crop, predictions from every step (CPC paper)",
    )
    z_dim: int = limited(256, _WIDTH_REASON, gt=0, le=8192)
    c_dim: int = limited(512, _WIDTH_REASON, gt=0, le=8192)
    encoder: ComponentConfig = Field(default_factory=lambda: ComponentConfig(type="conv1d"))
    context: ComponentConfig = Field(default_factory=lambda: ComponentConfig(type="gru"))
    predictor: ComponentConfig = Field(default_factory=lambda: ComponentConfig(type="linear"))
    similarity: ComponentConfig = Field(default_factory=lambda: ComponentConfig(type="dot"))


class NegativesConfig(Section):
    policy: str = Field(
        "other_sequences", description="which candidates may serve as negatives"
    )
    count: Optional[int] = limited(
        None,
        "the logits hold N x positions x k x (1 + count) numbers",
        gt=0,
        le=65536,
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
    gain_db: float = limited(0.0, "120 dB spans the whole range of 24-bit audio", ge=0, le=120,
                             description="random gain, uniform in +-gain_db dB; 0 = off")
    noise_snr_db: Optional[float] = limited(
        None, "an SNR outside -100..300 dB is all noise or no noise", ge=-100, le=300,
        description="additive white noise at this SNR in dB (per sequence); null = off")
    time_masks: int = Field(0, ge=0, description="zeroed spans per sequence; 0 = off")
    time_mask_seconds: float = limited(0.05, "a mask longer than an hour masks every crop",
                                       ge=0, le=3600, description="longest zeroed span, in seconds")


class LossConfig(Section):
    # non-finite step weights are reported, with the reason, by step_weight_problems
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=True)

    step_weights: Union[Literal["uniform", "linear_decay"], list[float]] = "uniform"
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)


class TrainConfig(Section):
    epochs: int = Field(20, gt=0)
    steps_per_epoch: int = Field(100, gt=0)
    lr: float = Field(2e-4, gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: Optional[float] = Field(1.0, gt=0, description="max gradient norm; null = off")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "cosine", description="after warm-up: constant, or a cosine / linear decay over all "
        "epochs x steps_per_epoch steps down to min_lr_ratio x lr")
    warmup_steps: int = Field(100, ge=0, description="steps of linear learning-rate warm-up "
                              "(at most a tenth of epochs x steps_per_epoch)")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the decayed rate at the last step, "
                                "as a fraction of train.lr")
    accumulate: int = Field(1, ge=1, description="batches of data.N accumulated per optimizer "
                            "step (a batch of N x accumulate that fits the memory of N)")
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of the files kept out of training for the "
        "validation loss (at least one file, with 10 files or more; 0 = no validation)")
    validation_crops: int = Field(64, ge=0, description="fixed, seeded crops of the held-out "
                                  "files scored at the end of every epoch")
    dead_run_steps: int = Field(
        300, ge=0, description="from this step on, an epoch whose loss is within 1 % of chance "
        "(ln(1 + negatives)) or whose z has collapsed is reported (0 = never)")
    on_dead_run: Literal["warn", "stop"] = Field(
        "warn", description="what a run that does not learn does: warn (and go on) or stop")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:1")
    threads: Optional[int] = limited(
        None, "more threads than any machine has cores only slows torch down", gt=0, le=1024,
        description="CPU threads for torch; null = torch's default (all cores). "
        "Fewer threads than cores avoids slow-downs when other programs share the CPU"
    )
    mixed_precision: Literal["none", "bf16", "fp16", "auto"] = Field(
        "none", description="none (float32), bf16, fp16 (CUDA only, with loss scaling), or "
        "auto: time float32 and the reduced precisions this device supports on the run's "
        "model and first batch before step 1 and keep the fastest with a finite loss "
        "(recorded; a resume keeps it)")
    seed: int = limited(0, "numpy takes no negative seed, and the seeds of the other processes, "
                        "derived from it, must stay within torch's 64 bits", ge=0, le=2**32 - 1)
    checkpoint_every: int = Field(100, gt=0, description="steps between checkpoints")
    max_minutes: Optional[float] = Field(
        None, gt=0, description="wall-clock limit of one training call: stop at the first step "
        "boundary past it, save a checkpoint (resumable); null = train every step")
    on_nan: Literal["stop", "skip"] = "stop"
    distributed_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="under torchrun: auto = nccl with CUDA, gloo on CPU")
    distributed_timeout_s: float = limited(
        600.0, "a week is the longest wait that makes sense", gt=0, le=7 * 86400,
        description="under torchrun: longest wait for the other processes in any "
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
        problems = (crop_geometry_problems(self) + step_weight_problems(self)
                    + batch_size_problems(self))
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


def batch_size_problems(config: Config) -> list[str]:
    """A batch whose crops alone would not fit in memory, refused before any decoding."""
    data = config.data
    samples = data.N * data.crop_samples
    if samples <= MAX_BATCH_SAMPLES:
        return []
    return [f"data.N: a batch of {data.N} crops of {data.crop_samples} samples (data.full_duration "
            f"{data.full_duration:g} s at data.sample_rate {data.sample_rate} Hz) holds "
            f"{samples * 4 / 2**30:.1f} GiB of float32 before the model runs (at most "
            f"{MAX_BATCH_SAMPLES * 4 / 2**30:.0f} GiB); lower data.N or data.full_duration"]


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
    exact = data.full_duration * data.sample_rate
    # In window mode the crop must also split into T+k whole windows: suggest values on that grid.
    steps = data.T + data.k if config.model.mode == "window" else 1
    lower = math.floor(exact / steps + SAMPLE_TOLERANCE) * steps
    candidates = [m for m in (lower, lower + steps) if m > 0]
    nearest = " or ".join(duration_text(m, data.sample_rate) for m in candidates)
    if abs(exact - round(exact)) > SAMPLE_TOLERANCE:
        return [
            f"data.full_duration: {data.full_duration} s x data.sample_rate {data.sample_rate} Hz "
            f"= {exact:g} samples is not a whole number of samples; nearest valid "
            f"full_duration: {nearest}" + (" (whole windows of T+k)" if steps > 1 else "")
        ]
    samples = int(round(exact))
    if samples % steps == 0:
        return []
    return [
        f"data.full_duration: full_duration*sample_rate/(T+k) = {samples}/{steps} = "
        f"{samples / steps:.4f} is not a whole number of samples per window; "
        f"nearest valid full_duration: {nearest} (or change data.T, data.k or data.sample_rate)"
    ]


def step_weights(config: Config) -> list[float]:
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
        if any(w < 0 or not math.isfinite(w) for w in choice) or sum(choice) <= 0:
            return ["loss.step_weights: weights must be finite and >= 0 with a positive sum "
                    "(they are normalised to sum to 1)"]
    return []
