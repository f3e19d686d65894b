"""`audiocpc run` and `audiocpc demo`: train -> embed -> classify -> t-SNE per model, then
one report.

Every output records the identity of what it was made from (`inputs` in its JSON: the
checkpoint's step and sha256, the data folder's files, the embeddings' sha256, the stage's
settings). A stage is skipped only when those equal what is on disk now, unless `force`; so
a changed input redoes exactly the stages that depend on it, and a run killed at any point
is finished correctly by the same command. A finished training run is skipped when its
checkpoint (which holds its own configuration) was made with the same settings. The
baselines (the same architecture untrained, and MFCC statistics) are computed on the very
crops the trained model embedded and go through the same probes and splits.

The folders under `out` are those of experiments/layout.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from audiocpc.errors import AudiocpcError
from audiocpc.evaluation.probe import ProbeSettings
from audiocpc.experiments.layout import SPLITS, ResultsLayout
from audiocpc.fileio import atomic_write_json, atomic_write_text, read_json, sha256_file

log = logging.getLogger("audiocpc")

FEATURE_TITLES = {"cpc": "CPC", "random": "untrained (random init)", "mfcc": "MFCC mean+std"}


@dataclass
class RunOptions:
    models: list[str]
    train_data: Path
    embed_train: Optional[Path] = None  # default: train_data
    embed_test: Optional[Path] = None  # none: hold out whole files of embed_train
    overrides: list[str] = field(default_factory=list)
    out: Path = Path("results")
    force: bool = False
    probes: list[str] = field(default_factory=lambda: ["logreg"])
    standardize: bool = True
    pca_dim: Optional[int] = None
    test_fraction: float = 0.25
    baselines: list[str] = field(default_factory=lambda: ["random", "mfcc"])
    crops_train: Optional[int | str] = None  # default: embed's (90)
    crops_test: Optional[int | str] = None  # default: embed's (5)
    # z and c side by side, mean and standard deviation over each crop: the best pooling on
    # the real-audio suite (docs/suite.md); `audiocpc embed` keeps the reference's context
    embedding_kind: str = "zc"
    embedding_pool: str = "meanstd"
    label_mode: str = "auto"
    label_pattern: Optional[str] = None
    labels_csv: Optional[str] = None
    tsne_points: int = 3000
    perplexity: float = 30.0
    tsne_method: str = "tsne"
    seed: int = 0
    progress: bool = True
    report_notes: list[str] = field(default_factory=list)  # paragraphs placed above the table


@dataclass
class ModelOutcome:
    model: str
    run_dir: Path
    stages: dict[str, str] = field(default_factory=dict)  # stage -> "ran" | "skipped"
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, stage: str, since: float) -> float:
        """Record the seconds since `since` for `stage` (when it ran); returns now."""
        now = time.perf_counter()
        if self.stages.get(stage) == "ran":
            self.stages[stage] = f"ran ({now - since:.0f} s)"
        return now


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


class Experiment:
    """One `audiocpc run`: its options, and the stages of each model in order."""

    def __init__(self, options: RunOptions):
        self.options = options
        self.out = Path(options.out)
        self.layout = ResultsLayout(self.out)
        self.embed_train = Path(options.embed_train or options.train_data)
        self.embed_test = Path(options.embed_test) if options.embed_test else None
        unknown = [b for b in options.baselines if b not in ("random", "mfcc")]
        if unknown:
            raise AudiocpcError(f"--baselines: unknown {', '.join(unknown)}; choose random, mfcc")
        for folder in [Path(options.train_data), self.embed_train] + ([self.embed_test] if self.embed_test else []):
            if not folder.is_dir():
                raise AudiocpcError(f"data folder not found: {folder}")

    def check_labels(self, config: Any) -> None:
        """Before any training: the probes need two classes among the usable files of the
        embedding folder, labelled as `embed` will label them (the one data path: the scan
        decodes into the cache that embedding then reads)."""
        from audiocpc.data.corpus import NO_JOIN
        from audiocpc.data.labels import label_rule
        from audiocpc.data.prepared import open_data
        from audiocpc.evaluation.embed import crop_length

        opts = self.options
        rule = label_rule(opts.label_mode, opts.label_pattern, opts.labels_csv)
        report = open_data(self.embed_train, config.data, crop_length(config),
                             progress=opts.progress, join=NO_JOIN)
        report.check(config.data.on_bad_file)
        # printed (with a warning for an implausible guess) before hours of training
        classes = set(report.corpus(labels=rule, label_source=f"{opts.label_mode} labels of {self.embed_train}").labels) - {""}
        if len(classes) < 2:
            found = f"only {', '.join(sorted(classes))}" if classes else "no label"
            raise AudiocpcError(
                f"{self.embed_train}: {found} found in the file names ({opts.label_mode} labels), "
                "but the classifiers need at least two classes. Give --label-pattern (e.g. "
                "'^(?P<label>\\d)_' for 7_jackson_32.wav), --label-mode folder or --labels-csv")

    # ------------------------------------------------------------------ plan

    def _file_lengths(self, folder: Path, config: Any) -> tuple[list[str], list[int]]:
        """Names and lengths (samples at the model's rate, from the file headers only)."""
        from audiocpc.data.audio import audio_info, discover_audio_files, relative_name
        from audiocpc.data.prepared import is_prepared, prepared_lengths
        from audiocpc.errors import AudioReadError

        if is_prepared(folder):
            return prepared_lengths(folder)
        names, lengths = [], []
        for path in discover_audio_files(folder, config.data.extensions):
            try:
                info = audio_info(path)
            except AudioReadError:
                continue
            names.append(relative_name(path, folder))
            lengths.append(int(info.frames * config.data.sample_rate / max(info.samplerate, 1)))
        return names, lengths

    def plan(self, configs: Sequence[Any]) -> list[str]:
        """What this run will do and about how long each stage takes, from a quick
        measurement per model (one training step, one batch of crops, one small probe fit);
        the last line per model warns when the embedding defaults dwarf training."""
        import numpy as np
        import torch

        from audiocpc.evaluation.embed import (crop_grid, crop_length, default_crops, embedding_dim,
                                               faster_crops_hint, measure_embed_seconds, plan_crops)
        from audiocpc.evaluation.mfcc import mfcc_summary
        from audiocpc.models import build_cpc
        from audiocpc.training.device import resolve_device
        from audiocpc.training.estimate import format_duration, time_train_step

        opts = self.options
        device = resolve_device("auto")
        lines: list[str] = []
        splits = [("train", self.embed_train, opts.crops_train), ("test", self.embed_test, opts.crops_test)]
        for config in configs:
            steps = config.train.epochs * config.train.steps_per_epoch
            train_s = steps * time_train_step(config, device)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.train.seed)
                model = build_cpc(config).to(device).eval()
            crop, sample_rate = crop_length(config), config.data.sample_rate
            stage_lines, embed_s, rows_total, slow_hints = [], 0.0, 0, []
            rng = np.random.default_rng(0)
            for split, folder, crops in splits:
                if folder is None:
                    continue
                crops = default_crops(split) if crops is None else crops
                names, lengths = self._file_lengths(folder, config)
                starts = plan_crops(lengths, names, crop, crops, opts.seed, crop_grid(model))
                usable = [i for i, s in enumerate(starts) if len(s)]
                rows = sum(len(s) for s in starts)
                # random audio of the files' lengths: the measurement needs shapes, not sounds
                waves = [(0.1 * rng.standard_normal(lengths[i])).astype(np.float32)
                         if i in usable[:64] else np.zeros(0, np.float32) for i in range(len(lengths))]
                probe_starts = [s if i in usable[:64] else np.zeros(0, np.int64) for i, s in enumerate(starts)]
                seconds = measure_embed_seconds(model, waves, probe_starts, crop, opts.embedding_kind,
                                                pool=opts.embedding_pool)
                seconds *= rows / max(1, sum(len(s) for s in probe_starts))
                seconds *= 2 if "random" in opts.baselines else 1  # the untrained model embeds them too
                embed_s += seconds
                rows_total += rows
                per_file = f"{crops} crop(s) per file" if crops != "all" else "every crop the files hold"
                stage_lines.append(f"  embed {split}: {len(usable)} of {len(lengths)} file(s) x {per_file} "
                                   f"= {rows} crops of {crop / sample_rate:.3f} s: about {format_duration(seconds)}"
                                   + (" (with the untrained baseline)" if "random" in opts.baselines else ""))
                option = "--crops-train" if split == "train" else "--crops-test"
                slow_hints.append((split, seconds, crops, lengths, option))
            mfcc_s = 0.0
            if "mfcc" in opts.baselines and rows_total:
                sample = (0.1 * rng.standard_normal(crop)).astype(np.float32)
                started = time.perf_counter()
                for _ in range(10):
                    mfcc_summary(sample, sample_rate)
                mfcc_s = (time.perf_counter() - started) / 10 * rows_total
                embed_s += mfcc_s
                stage_lines.append(f"  MFCC baseline of the same {rows_total} crops: about {format_duration(mfcc_s)}")
            classify_s = self._classify_seconds(rows_total, embedding_dim(config, opts.embedding_kind,
                                                                           opts.embedding_pool))
            stage_lines.append(f"  classify ({', '.join(opts.probes)} on {1 + len(opts.baselines)} feature "
                               f"set(s)): about {format_duration(classify_s)}; t-SNE of "
                               f"{opts.tsne_points} points: about a minute")
            lines.append(f"plan for {config.run_name}: train {steps} steps: about {format_duration(train_s)} "
                         f"({train_s / max(steps, 1):.2f} s per step, measured on {device.type})")
            lines += stage_lines
            later = embed_s + classify_s
            slow = later > max(60.0, 2 * train_s)  # "far longer than training"
            hint_lines = [f"{split}: {hint}" for split, seconds, crops, lengths, option in slow_hints
                          if (hint := faster_crops_hint(seconds, crops, lengths, crop, option, slow))]
            if hint_lines:
                lines.append(f"  note: embedding and classifying (about {format_duration(later)}) take far "
                             f"longer than training (about {format_duration(train_s)}); to make them fast: "
                             + " | ".join(hint_lines))
        return lines

    def _classify_seconds(self, rows: int, dim: int) -> float:
        """A linear probe's fit time on random features of this size, from a fit on up to
        2000 rows scaled linearly, for every probe and feature set."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        if rows == 0:
            return 0.0
        import warnings

        sample = min(rows, 2000)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((sample, dim)).astype(np.float32)
        y = rng.integers(0, 10, size=sample)
        # 20 L-BFGS iterations timed, scaled to rows and to the ~300 iterations real
        # embeddings need (random features converge far sooner, so their fit would mislead)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            LogisticRegression(max_iter=20, tol=0.0).fit(x, y)
        per_fit = (time.perf_counter() - started) / 20 * 300 * rows / sample
        return per_fit * len(self.options.probes) * (1 + len(self.options.baselines))

    # ------------------------------------------------------------------ stages

    def configs(self) -> list[Any]:
        from audiocpc.models.checks import check_model_config
        from audiocpc.presets import load_config

        models = list(self.options.models)
        extra: list[list[str]] = [[] for _ in models]  # auto's data.join settings, if any
        if "auto" in models:  # chosen from the training files' durations
            from audiocpc.data.auto_preset import choose_preset

            choice = choose_preset(self.options.train_data)
            log.info(choice.reason)
            extra = [choice.overrides if m == "auto" else [] for m in models]
            models = [choice.preset if m == "auto" else m for m in models]
        configs = []
        for model, auto_overrides in zip(models, extra):
            config = check_model_config(load_config(model, [*auto_overrides,
                                                            *self.options.overrides,
                                                            f"output.dir={self.out}"]))
            if config.output.name is None and Path(model).suffix in (".yaml", ".yml"):
                # A YAML file is named after itself: two edited copies of `config show 1dconv_gru`
                # both say `preset: 1dconv_gru`, which must not make them one run.
                path = Path(model)  # a run folder's own config.yaml keeps that run's name
                config.output.name = path.parent.name if path.stem == "config" else path.stem
            configs.append(config)
        names = [c.run_name for c in configs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            clashing = [m for m, n in zip(self.options.models, names) if n in twice]
            raise AudiocpcError(
                f"--models: {', '.join(clashing)} would share the run name {', '.join(twice)}; "
                "give each model once, and give YAML files distinct names or a distinct "
                "output.name inside each (e.g. `output: {name: gru_small}`)")
        return configs

    def train_stage(self, config: Any, outcome: ModelOutcome) -> bool:
        """Train, resume, or skip a finished run. What the folder holds is read from its
        checkpoint, which carries its own configuration: config.yaml is only for people (an
        empty, damaged or missing one changes nothing)."""
        from audiocpc.presets import config_from_dict
        from audiocpc.training.checkpoint import load_checkpoint
        from audiocpc.training.trainer import train

        run = self.layout.run(outcome.model)
        resume = False
        if run.holds_run() and not self.options.force:
            try:
                payload = load_checkpoint(run.checkpoint_path)
                stored = config_from_dict(payload["config"]).to_dict()
            except (AudiocpcError, TypeError, ValueError) as exc:
                raise AudiocpcError(f"{exc}; add --force to retrain {run.path}, or use another "
                                    "--out folder") from None
            changed = [k for k in _changed_keys(stored, config.to_dict())
                       if k != "train.epochs" and not k.startswith("output.")]
            if changed:
                raise AudiocpcError(
                    f"{run.path} was trained with other settings ({', '.join(changed)}); "
                    "add --force to retrain it, or use another --out folder")
            wanted_steps = config.train.epochs * config.train.steps_per_epoch
            if payload.get("finished") and int(payload.get("step", 0)) >= wanted_steps:
                outcome.stages["train"] = "skipped"
                return False
            resume = True  # unfinished, or more epochs asked for: continue where it stopped
        log.info("[%s] training on %s", outcome.model, self.options.train_data)
        result = train(config, self.options.train_data, resume=resume, force=self.options.force,
                       progress=self.options.progress)
        if result.interrupted:
            raise KeyboardInterrupt
        outcome.stages["train"] = "ran"
        return True

    # Every later stage is current when the `inputs` its output recorded equal the inputs
    # computed now from what is on disk (the checkpoint's content, the data folder's files,
    # the embeddings' content, the settings): no rule depends on which stage ran before,
    # so a run killed anywhere is finished correctly by running it again.

    def _redo(self, recorded: dict[str, Any], expected: dict[str, Any]) -> bool:
        return self.options.force or recorded.get("inputs") != expected

    def embed_stage(self, config: Any, outcome: ModelOutcome) -> None:
        """Embeds the splits with the trained model and the random baseline."""
        from audiocpc.evaluation.embed import default_crops, embed_folder, embedding_inputs
        from audiocpc.evaluation.store import EmbeddingSplit
        from audiocpc.training.restore import model_identity

        opts = self.options
        variants = [("cpc", False)] + ([("random", True)] if "random" in opts.baselines else [])
        ran = False
        for split, data in (("train", self.embed_train), ("test", self.embed_test)):
            for feature, random_init in variants:
                folder = self.layout.embeddings(outcome.model, feature)
                if data is None:  # no test folder: an old run's test split must not be used
                    EmbeddingSplit.remove(folder, split)
                    continue
                crops = opts.crops_train if split == "train" else opts.crops_test
                crops = default_crops(split) if crops is None else crops
                expected = embedding_inputs(
                    model_identity(outcome.run_dir, random_init), data, config.data.extensions,
                    split=split, crops=crops, kind=opts.embedding_kind, seed=opts.seed,
                    label_mode=opts.label_mode, label_pattern=opts.label_pattern,
                    labels_csv=opts.labels_csv, pool=opts.embedding_pool)
                if EmbeddingSplit.complete(folder, split) and not self._redo(
                        EmbeddingSplit.read_info(folder, split), expected):
                    continue
                log.info("[%s] embedding %s (%s) from %s", outcome.model, split, feature, data)
                embed_folder(outcome.run_dir, data, split, folder=folder, crops=crops,
                             kind=opts.embedding_kind, seed=opts.seed, label_mode=opts.label_mode,
                             label_pattern=opts.label_pattern, labels_csv=opts.labels_csv,
                             random_init=random_init, progress=opts.progress,
                             pool=opts.embedding_pool)
                ran = True
        outcome.stages["embed"] = "ran" if ran else "skipped"

    def mfcc_stage(self, outcome: ModelOutcome) -> None:
        ran = refresh_mfcc(self.layout, outcome.model, force=self.options.force,
                           progress=self.options.progress)
        outcome.stages["mfcc"] = "ran" if ran else "skipped"

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(standardize=self.options.standardize, pca_dim=self.options.pca_dim,
                             seed=self.options.seed)

    def classify_stage(self, outcome: ModelOutcome) -> None:
        from audiocpc.evaluation.classify import classify, classify_inputs

        opts = self.options
        ran = False
        for feature in ["cpc", *opts.baselines]:
            embed_dir = self.layout.embeddings(outcome.model, feature)
            out_dir = self.layout.classifier(outcome.model, feature)
            expected = classify_inputs(embed_dir, opts.probes, self.probe_settings(),
                                       opts.test_fraction, opts.seed)
            if not self._redo(read_json(out_dir / "metrics.json"), expected):
                continue
            log.info("[%s] classifying %s features (%s)", outcome.model, feature, ", ".join(opts.probes))
            classify(embed_dir, out_dir, opts.probes, self.probe_settings(), opts.test_fraction, opts.seed)
            ran = True
        outcome.stages["classify"] = "ran" if ran else "skipped"

    def tsne_stage(self, outcome: ModelOutcome) -> None:
        from audiocpc.evaluation.tsne import held_out_files, tsne, tsne_inputs

        opts = self.options
        embed_dir = self.layout.embeddings(outcome.model)
        out_dir = self.layout.tsne(outcome.model)
        # without a test folder the map marks the classifier's held-out files
        held_out = held_out_files(self.layout.classifier(outcome.model) / "split.csv")
        expected = tsne_inputs(embed_dir, opts.tsne_points, opts.perplexity, opts.seed,
                               opts.tsne_method, held_out)
        if not self._redo(read_json(out_dir / f"{opts.tsne_method}.json"), expected):
            outcome.stages["tsne"] = "skipped"
            return
        log.info("[%s] %s map of the embeddings", outcome.model, opts.tsne_method)
        tsne(embed_dir, out_dir, opts.tsne_points, opts.perplexity, opts.seed,
             opts.tsne_method, held_out)  # type: ignore[arg-type]
        outcome.stages["tsne"] = "ran"

    # ------------------------------------------------------------------ all of it

    def run(self) -> Path:
        from audiocpc.evaluation.plots import cpc_curves_plot

        started = time.perf_counter()
        outcomes = []
        configs = self.configs()
        self.check_labels(configs[0])
        if self.options.progress:
            try:
                plan = self.plan(configs)
            except (RuntimeError, ValueError, OSError) as exc:  # an estimate must not stop the run
                plan = [f"plan: no estimate ({type(exc).__name__}: {str(exc).splitlines()[0]})"]
            for line in plan:
                log.info("%s", line)
        for config in configs:
            run = self.layout.run(config.run_name)
            outcome = ModelOutcome(config.run_name, run.path)
            tick = time.perf_counter()
            self.train_stage(config, outcome)
            cpc_curves_plot(run.path, run.training_curves_path)
            tick = outcome.timed("train", tick)
            self.embed_stage(config, outcome)
            tick = outcome.timed("embed", tick)
            if "mfcc" in self.options.baselines:
                self.mfcc_stage(outcome)
                tick = outcome.timed("mfcc", tick)
            self.classify_stage(outcome)
            tick = outcome.timed("classify", tick)
            self.tsne_stage(outcome)
            outcome.timed("tsne", tick)
            log.info("[%s] stages: %s", outcome.model,
                     ", ".join(f"{k} {v}" for k, v in outcome.stages.items()))
            outcomes.append(outcome)
        report = write_report(self, outcomes, time.perf_counter() - started)
        return report


def refresh_mfcc(layout: ResultsLayout, model: str, force: bool = False,
                 progress: bool = False) -> bool:
    """Make the MFCC baseline of each split's CPC crops unless it is current (its recorded
    inputs, the crops and their audio files, equal those on disk now); a split without CPC
    embeddings loses its MFCC features too. Returns whether any split was (re)made."""
    from audiocpc.evaluation.mfcc import mfcc_inputs, write_mfcc_embeddings
    from audiocpc.evaluation.store import EmbeddingSplit

    source, target = layout.embeddings(model, "cpc"), layout.embeddings(model, "mfcc")
    ran = False
    for split in SPLITS:
        if not EmbeddingSplit.exists(source, split):
            EmbeddingSplit.remove(target, split)
            continue
        expected = mfcc_inputs(source, split)
        if (not force and EmbeddingSplit.complete(target, split)
                and EmbeddingSplit.read_info(target, split).get("inputs") == expected):
            continue
        log.info("[%s] MFCC baseline for the %s crops", model, split)
        write_mfcc_embeddings(source, target, split, progress=progress)
        ran = True
    return ran


def run_experiments(options: RunOptions) -> Path:
    """Run every stage for every model; returns the path of `report.md`."""
    return Experiment(options).run()


# ---------------------------------------------------------------- report


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _cpc_summary(run_dir: Path) -> tuple[str, str, str]:
    from audiocpc.evaluation.plots import read_history

    history = read_history(run_dir)
    if not history:
        return "-", "-", "-"
    last = history[-1]
    accuracies = [v for k, v in sorted(last.items()) if k.startswith("acc_k")]
    mean_acc = _percent(sum(accuracies) / len(accuracies)) if accuracies else "-"
    steps = int(last["epoch"])
    return f"{last['loss']:.3f}", mean_acc, str(steps)


def _sha256_or_none(path: Path) -> Optional[str]:
    return sha256_file(path) if path.is_file() else None


def write_report(experiment: Experiment, outcomes: Sequence[ModelOutcome], seconds: float) -> Path:
    """report.md, and report.json with the identity of everything the report shows (the
    checkpoint, and the content of each metrics.json and map JSON it was written from)."""
    from audiocpc.training.restore import model_identity

    opts, out, layout = experiment.options, experiment.out, experiment.layout
    identities: dict[str, Any] = {}
    lines = ["# audiocpc experiment report", ""]
    split_text = (f"tested on `{experiment.embed_test}`" if experiment.embed_test else
                  f"no test folder: {opts.test_fraction:.0%} of the files of each class held out "
                  f"(whole files, seed {opts.seed})")
    lines += [
        f"- CPC trained on `{opts.train_data}`; probes trained on the embeddings of "
        f"`{experiment.embed_train}`, {split_text}.",
        f"- Probes: {', '.join(opts.probes)} (standardised: {'yes' if opts.standardize else 'no'}"
        f"{f', PCA to {opts.pca_dim} dimensions' if opts.pca_dim else ''}; fit on the training side only).",
        "- Baselines on the same crops, splits and probes: "
        + (", ".join(FEATURE_TITLES[b] for b in opts.baselines) or "none") + ".",
        "- *crop* accuracy scores each embedded crop; *file* accuracy averages the class "
        "probabilities of a file's crops. Chance = the largest class's share of the test crops.",
        f"- Settings overridden: {', '.join(f'`{o}`' for o in opts.overrides) or 'none'}. "
        f"Wall time of this run: {seconds / 60:.1f} min.",
        "",
        *[line for note in opts.report_notes for line in (note, "")],
        "| model | CPC loss | CPC acc | features | probe | crop acc | file acc | macro-F1 | chance | classes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sections = []
    for outcome in outcomes:
        loss, cpc_acc, epochs = _cpc_summary(outcome.run_dir)
        first = True
        links = []
        identities[outcome.model] = {
            "model": model_identity(outcome.run_dir),
            "metrics": {feature: _sha256_or_none(layout.classifier(outcome.model, feature) / "metrics.json")
                        for feature in ["cpc", *opts.baselines]},
            "map": _sha256_or_none(layout.tsne(outcome.model) / f"{opts.tsne_method}.json"),
        }
        for feature in ["cpc", *opts.baselines]:
            folder = layout.classifier(outcome.model, feature)
            metrics = read_json(folder / "metrics.json")
            for probe, m in metrics.get("probes", {}).items():
                lead = (f"{outcome.model} | {loss} | {cpc_acc}" if first else " | | ")
                lines.append(f"| {lead} | {FEATURE_TITLES[feature]} | {probe} | "
                             f"{_percent(m['crop_accuracy'])} | {_percent(m['file_accuracy'])} | "
                             f"{m['macro_f1']:.3f} | {_percent(m['chance_accuracy'])} | "
                             f"{len(metrics['classes'])} |")
                first = False
                rel = (folder / m["confusion_png"]).relative_to(out).as_posix()
                links.append(f"[{FEATURE_TITLES[feature]}, {probe}]({rel})")
                if "curves_png" in m:
                    links.append(f"[{FEATURE_TITLES[feature]}, MLP curves]"
                                 f"({(folder / m['curves_png']).relative_to(out).as_posix()})")
        tsne_dir = layout.tsne(outcome.model)
        tsne_info = read_json(tsne_dir / f"{opts.tsne_method}.json")
        section = [f"## {outcome.model}", ""]
        curves = layout.run(outcome.model).training_curves_path
        if curves.is_file():
            section += [f"CPC training ({epochs} epochs; final-epoch InfoNCE loss {loss}, "
                        f"mean accuracy over the k predicted steps {cpc_acc}):", "",
                        f"![CPC training curves]({curves.relative_to(out).as_posix()})", ""]
        if tsne_info:
            png = (tsne_dir / tsne_info["png"]).relative_to(out).as_posix()
            svg = (tsne_dir / tsne_info["svg"]).relative_to(out).as_posix()
            method = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}.get(tsne_info["method"], "map")
            section += [f"{method} of {tsne_info['points']} crops "
                        f"([SVG]({svg})):", "", f"![{tsne_info['method']}]({png})", ""]
            if tsne_info.get("per_class"):
                section.append("Train vs test per class: " + ", ".join(
                    f"[{Path(p).stem}]({(tsne_dir / p).relative_to(out).as_posix()})"
                    for p in tsne_info["per_class"]))
                section.append("")
        cpc_metrics = read_json(layout.classifier(outcome.model) / "metrics.json")
        if cpc_metrics.get("probes"):
            probe, m = next(iter(cpc_metrics["probes"].items()))
            confusion = (layout.classifier(outcome.model) / m["confusion_png"])
            section += [f"Confusion matrix (CPC, {probe}, rows = true class, normalised):", "",
                        f"![confusion]({confusion.relative_to(out).as_posix()})", "",
                        "Per-class precision / recall (CPC, " + probe + "):", "",
                        "| class | precision | recall | test crops |", "|---|---|---|---|"]
            section += [f"| {name} | {v['precision']:.2f} | {v['recall']:.2f} | {v['support']} |"
                        for name, v in m["per_class"].items()]
            section.append("")
        if links:
            section += ["All confusion matrices: " + ", ".join(links) + ".", ""]
        section += [f"Stages this time: {', '.join(f'{k} {v}' for k, v in outcome.stages.items())}.", ""]
        sections += section
    lines += [""] + sections
    atomic_write_json(layout.report_json, {"inputs": identities,
                                           "stages": {o.model: o.stages for o in outcomes}})
    return atomic_write_text(layout.report, "\n".join(lines))


# ---------------------------------------------------------------- demo


# Every synthetic file has its own gain and noise level, and nothing else identifies a crop's
# file so cheaply: without augmentation CPC learns these (useless for the classes) and its
# embeddings score below an untrained model's. Random gain and noise on the past close
# that shortcut (as CPC_v2's augmentation does).
DEMO_OVERRIDES = ("augment.apply_to=past", "augment.gain_db=6", "augment.noise_snr_db=15",
                  "train.epochs=8")


DEMO_NOTES = (
    "**What to look at.** The demo's four classes come in two pairs, and each pair is the same "
    "sounds in the opposite temporal order: `rising` arpeggios and `falling` ones (the same "
    "clips played backwards), struck `pluck` notes and `swell`s (plucks played backwards). "
    "MFCC mean and standard deviation summarise short frames without their order, and "
    "reversing a clip changes neither, so the MFCC rows can only tell the pairs apart: expect "
    "about 50 % (chance is 25 %), with each pair confused in its confusion matrix. Anything "
    "above that comes from temporal structure. Compare the CPC rows with the MFCC rows (what "
    "order adds) and with the untrained model's (what CPC training adds to an architecture "
    "that already reads the windows in order).",
)


def run_demo(out: str | Path, overrides: Sequence[str] = (), force: bool = False,
             progress: bool = True) -> Path:
    """The synthetic five-class data set through the whole pipeline with the tiny preset."""
    import torch

    from audiocpc.data.synthetic import make_demo_dataset

    out = Path(out)
    data = make_demo_dataset(out / "data")
    # The tiny model's batches are too small to gain from more threads, and a single thread
    # keeps its speed when other programs hold the cores (two threads were 10x slower then).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = RunOptions(models=["1dconv_tiny"], train_data=data / "train",
                             embed_test=data / "test", overrides=[*DEMO_OVERRIDES, *overrides],
                             out=out, force=force,
                             probes=["logreg", "mlp"], crops_train=20, crops_test=10,
                             progress=progress, report_notes=list(DEMO_NOTES))
        return run_experiments(options)
    finally:
        torch.set_num_threads(threads)
