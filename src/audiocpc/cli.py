"""The `audiocpc` command: thin argument parsing around the library's functions.

Errors caused by data or settings (AudiocpcError) print one line per problem and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from audiocpc.errors import AudiocpcError

Handler = Callable[[argparse.Namespace], int]


def _add_config_options(parser: argparse.ArgumentParser, preset_default: Optional[str] = "1dconv_gru") -> None:
    parser.add_argument("--preset", default=preset_default,
                        help="built-in preset name, a YAML file, or auto (chosen from the files' durations; "
                             "see `audiocpc config list`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set train.lr=2e-4 (repeatable)")


def _cmd_config_show(args: argparse.Namespace) -> int:
    from audiocpc.presets import load_config

    config = load_config(args.preset_name, args.overrides)  # settings first: no torch yet
    from audiocpc.models.checks import check_model_config

    print(check_model_config(config).to_yaml(), end="")
    return 0


def _cmd_config_list(args: argparse.Namespace) -> int:
    from audiocpc.presets import available_presets

    print("\n".join(available_presets()))
    return 0


def _train_config(args: argparse.Namespace):  # -> Config
    from audiocpc.presets import load_config

    overrides = list(args.overrides)
    if args.name:
        overrides.append(f"output.name={args.name}")
    if args.out:
        overrides.append(f"output.dir={args.out}")
    return load_config(*_resolve_preset(args.preset, args.data, overrides))


def _resolve_preset(preset: str, data: str | Path, overrides: list[str]) -> tuple[str, list[str]]:
    """--preset auto: the preset chosen from the files and its data.join settings (before
    the user's --set, which win), with the reason printed; any other preset unchanged."""
    if preset != "auto":
        return preset, overrides
    from audiocpc.data.auto_preset import choose_preset
    from audiocpc.data.prepared_shards import is_prepared

    if is_prepared(data):  # its rate was fixed by the preset it was prepared with
        from audiocpc.errors import ConfigError

        raise ConfigError(f"--preset auto: {data} is a prepared corpus; give the preset "
                          "it was prepared with (e.g. --preset clips or recordings)")
    from audiocpc.data.remote import data_location

    choice = choose_preset(data_location(data))  # a file:// URL of a folder is its path
    print(choice.reason, file=sys.stderr)
    return choice.preset, choice.overrides + overrides


def _cmd_train(args: argparse.Namespace) -> int:
    config = _train_config(args)
    _refuse_folder_without_audio(args.data, config.data.extensions)  # before torch loads
    from audiocpc.training.distributed import distributed_session
    from audiocpc.training.trainer import train

    # Under torchrun every process runs this; without it, the session is a single process.
    with distributed_session(config.train.distributed_backend, config.train.distributed_timeout_s,
                             config.train.device) as dist:
        result = train(config, args.data, resume=args.resume, force=args.force,
                       progress=not args.quiet, dist=dist)
    if result.interrupted:
        return 130
    if dist.is_main:
        from audiocpc.evaluation.plots import cpc_curves_plot
        from audiocpc.training.run_folder import RunFolder

        curves = cpc_curves_plot(result.run_dir, RunFolder(Path(result.run_dir)).training_curves_path)
        drawn = f"; curves in {curves}" if curves else ""
        print(f"run folder: {result.run_dir} ({result.steps} steps, final epoch loss "
              f"{result.final_loss:.4f}{drawn})")
    return 0


def _refuse_folder_without_audio(folder: str, extensions: Sequence[str]) -> None:
    from audiocpc.data.audio import any_audio_file
    from audiocpc.data.prepared_shards import is_prepared, url_problems
    from audiocpc.data.remote import data_location
    from audiocpc.errors import ConfigError, NoUsableAudioError

    location = data_location(folder)
    if isinstance(location, str):  # a URL: a prepared corpus, or one line saying why not
        problems = url_problems(location)
        if problems:
            raise ConfigError(problems[0])
        return
    folder = str(location)
    if not Path(folder).is_dir():
        raise ConfigError(f"--data: data folder not found: {folder} (give an existing folder of "
                          "audio files)")
    if not is_prepared(folder) and not any_audio_file(folder, extensions):
        raise NoUsableAudioError(
            f"no audio files with extensions {', '.join(extensions)} found below {folder} "
            "(set data.extensions to the formats you have)")


def _cmd_make_demo_data(args: argparse.Namespace) -> int:
    from audiocpc.data.synthetic import make_demo_dataset

    tutorial = args.layout == "tutorial"
    seconds = args.seconds if args.seconds is not None else (4.5 if tutorial else 5.0)
    rate = args.sample_rate if args.sample_rate is not None else (22050 if tutorial else 16000)
    out = make_demo_dataset(args.out, files_per_class=args.files_per_class,
                            test_files_per_class=args.test_files_per_class, seconds=seconds,
                            sample_rate=rate, seed=args.seed, classes=args.classes,
                            layout=args.layout)
    folders = ["custom_audio_dataset", "train", "test"] if tutorial else ["train", "test"]
    print(f"wrote synthetic data set ({args.classes} classes, {seconds:g} s at {rate} Hz) to "
          + ", ".join(f"{out}/{f}" for f in folders))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from audiocpc.experiments.pipeline import run_demo

    report = run_demo(args.out, args.overrides, force=args.force, progress=not args.quiet)
    print(f"demo finished: report at {report}")
    return 0


def _probe_settings(args: argparse.Namespace):  # -> ProbeSettings
    from audiocpc.evaluation.probe import ProbeSettings

    return ProbeSettings(standardize=not args.no_standardize, pca_dim=args.pca, seed=args.seed)


def _features(args: argparse.Namespace):  # -> experiments.layout.FeaturesTarget
    """The features `classify` and `tsne` work on; MFCCs are (re)made when not current."""
    from audiocpc.evaluation.store import EmbeddingSplit
    from audiocpc.experiments.layout import locate_features, missing_features_error
    from audiocpc.experiments.pipeline import refresh_mfcc

    target = locate_features(args.target, args.features, args.out)
    if target.feature == "mfcc":
        refresh_mfcc(target.layout, target.model)
    if not EmbeddingSplit.exists(target.embeddings, "train"):
        raise missing_features_error(target)
    return target


def _cmd_classify(args: argparse.Namespace) -> int:
    from audiocpc.evaluation.classify import classify

    target = _features(args)
    folder, out_dir = target.embeddings, target.classifier
    report = classify(folder, out_dir, args.probes or ["logreg"], _probe_settings(args),
                      args.test_fraction, args.seed)
    for probe, m in report["probes"].items():
        print(f"{folder.name} {probe}: crop accuracy {m['crop_accuracy']:.1%}, file accuracy "
              f"{m['file_accuracy']:.1%}, macro-F1 {m['macro_f1']:.3f} (chance {m['chance_accuracy']:.1%})")
    print(f"wrote {out_dir / 'metrics.json'}")
    return 0


def _cmd_tsne(args: argparse.Namespace) -> int:
    from audiocpc.evaluation.tsne import held_out_files, tsne

    target = _features(args)
    out_dir = target.tsne
    held_out = held_out_files(target.classifier / "split.csv")
    info = tsne(target.embeddings, out_dir, args.points, args.perplexity, args.seed, args.method,
                held_out)
    print(f"wrote {out_dir / info['png']} and {info['svg']} ({info['points']} points, "
          f"{info['seconds']:.1f} s)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from audiocpc.experiments.pipeline import RunOptions, run_experiments

    options = RunOptions(
        models=args.models, train_data=Path(args.train_data),
        embed_train=Path(args.embed_train) if args.embed_train else None,
        embed_test=Path(args.embed_test) if args.embed_test else None,
        overrides=args.overrides, out=Path(args.out), force=args.force,
        probes=args.probes or ["logreg"], standardize=not args.no_standardize, pca_dim=args.pca,
        test_fraction=args.test_fraction, baselines=args.baselines, crops_train=args.crops_train,
        crops_test=args.crops_test, embedding_kind=args.kind,
        # c at the last step is one vector: nothing to pool
        embedding_pool="mean" if args.kind == "context" else args.pool, label_mode=args.label_mode,
        label_pattern=args.label_pattern, labels_csv=args.labels_csv, tsne_points=args.points,
        perplexity=args.perplexity, tsne_method=args.method, seed=args.seed,
        progress=not args.quiet)
    report = run_experiments(options)
    print(f"report: {report}")
    return 0


def _add_probe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probe", dest="probes", action="append", choices=["logreg", "mlp", "knn"],
                        help="classifier(s): logreg (linear probe, default), mlp, knn (repeatable)")
    parser.add_argument("--no-standardize", action="store_true",
                        help="do not standardise features (fit on the training side) before the probe")
    parser.add_argument("--pca", type=_positive_int, metavar="DIM",
                        help="reduce to DIM dimensions with PCA fit on the training side")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="without a test split: share of each class's files held out (default 0.25)")


def _add_tsne_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--points", type=int, default=3000,
                        help="stratified random subsample of crops to plot (default 3000)")
    parser.add_argument("--perplexity", type=float, default=30.0)
    parser.add_argument("--method", default="tsne", choices=["tsne", "pca", "umap"],
                        help="tsne (openTSNE when installed), pca, or umap (needs umap-learn)")



def _positive_int(text: str, expected: str = "a positive number") -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _crops_arg(text: str):  # -> int | "all"
    return text if text == "all" else _positive_int(text, "a positive number or 'all'")


def _local_data(data: str, command: str) -> str:
    """--data as a local path (a file:// URL is one); another URL is refused with the fix."""
    from audiocpc.data.remote import data_location
    from audiocpc.errors import ConfigError

    location = data_location(data)
    if isinstance(location, str):
        raise ConfigError(f"--data: {command} reads local data; {location} is a remote URL (train "
                          "reads those): copy the corpus to a local folder and give its path")
    return str(location)


def _cmd_embed(args: argparse.Namespace) -> int:
    from audiocpc.api import embed_folder

    args.data = _local_data(args.data, "embed")
    result = embed_folder(args.run_dir, args.data, args.split, crops=args.crops, kind=args.kind,
                          out=args.out, seed=args.seed, batch_size=args.batch_size,
                          label_mode=args.label_mode, label_pattern=args.label_pattern,
                          labels_csv=args.labels_csv, random_init=args.random_init,
                          device=args.device, progress=not args.quiet, layer=args.layer,
                          pool=args.pool)
    info = result.info
    if "share" in info:  # under torchrun: another rank's share; rank 0 wrote the files and says so
        return 0
    print(f"wrote {result.array_path} ({info['rows']} x {info['dim']}, {info['files']} files, "
          f"{info['skipped_short']} too short) and {result.manifest_path.name}")
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    from audiocpc.errors import ConfigError
    from audiocpc.presets import load_config

    config = load_config(*_resolve_preset(args.preset, args.data_dir, args.overrides))
    from audiocpc.data.prepared import open_data
    from audiocpc.data.remote import data_location

    args.data_dir = data_location(args.data_dir)  # a file:// URL is its path
    from audiocpc.training.preflight import data_folder_problems

    problems = data_folder_problems(args.data_dir)
    if problems:
        raise ConfigError(problems)
    report = open_data(args.data_dir, config.data, progress=not args.quiet)
    if args.all:
        for f in report.files:
            state = ("usable" if f.usable else "too short") if f.readable else f"unreadable: {f.reason}"
            if f.duplicate_of is not None:
                state = f"duplicate of {f.duplicate_of} (counted once)"
            facts = (f"{f.sample_rate} Hz, {f.channels} ch, {f.duration:.3f} s, "
                     if f.readable else "")
            print(f"{f.file}: {facts}{state}{', silent' if f.silent else ''}")
    print("\n".join(report.summary_lines()))
    if args.report:
        print(f"report: {report.write(args.report)}")
    from audiocpc.training.preflight import crop_advice

    report.check(config.data.on_bad_file,
                 advice=lambda r: crop_advice(config, [f.samples for f in r.files if f.readable]))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from audiocpc.data.prepared import prepare_corpus
    from audiocpc.errors import ConfigError
    from audiocpc.presets import load_config
    from audiocpc.training.preflight import data_folder_problems

    config = load_config(args.preset, args.overrides)
    problems = data_folder_problems(args.data_dir)
    if problems:
        raise ConfigError(problems)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers: {args.workers}; give 1 or more processes")
    report = prepare_corpus(args.data_dir, args.out, config.data, workers=args.workers,
                            force=args.force, progress=not args.quiet, shard_format=args.format)
    print("\n".join(report.summary_lines()))
    report.check(config.data.on_bad_file)
    kind = "WebDataset tar" if args.format == "webdataset" else "int16"
    print(f"prepared corpus: {args.out} ({config.data.sample_rate} Hz {kind} shards; give it as "
          "--data to train, embed and run)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from audiocpc.training.export import export_run

    formats = ["safetensors"] + [f for f in (args.formats or []) if f != "safetensors"]
    written = export_run(args.run_dir, args.out, formats, random_init=args.random_init)
    print(f"exported to {args.out}: {', '.join(p.name for p in written)}")
    return 0


def _cmd_make_task(args: argparse.Namespace) -> int:
    from audiocpc.evaluation.tasks import make_task

    task = make_task(args.data_dir, args.out, label_mode=args.label_mode, label_pattern=args.label_pattern,
                     labels_csv=args.labels_csv, group_pattern=args.group_pattern,
                     groups_csv=args.groups_csv, folds=args.folds,
                     sample_rates=args.sample_rates or [16000], name=args.name, seed=args.seed)
    sizes = ", ".join(f"{split} {len(files)}" for split, files in task.labels.items())
    print(f"wrote HEAR task {task.name!r} to {args.out}: {len(task.vocabulary)} labels, "
          f"{task.metadata['files']} files ({sizes}); groups: {task.metadata['groups']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from audiocpc.evaluation.tasks import EvaluateOptions, MLPGrid, evaluate_task, results_table

    grid = MLPGrid(hidden_layers=tuple(args.hidden_layers), learning_rates=tuple(args.lrs),
                   max_epochs=args.max_epochs, patience=args.patience)
    hear_options = {"layer": args.layer, "scene_pool": args.scene_pool}
    if args.sample_rate:
        hear_options["sample_rate"] = args.sample_rate
    features = ("cpc", *args.baselines)
    options = EvaluateOptions(features=features, probes=tuple(args.probes or ["mlp", "linear"]),
                              grid=grid, seed=args.seed, device=args.device, hear_options=hear_options)
    for task_dir in args.task_dirs:
        results = evaluate_task(task_dir, args.model, args.out, options)
        print(results_table(results))
        print(f"wrote {Path(results['results_dir']) / 'results.json'}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiocpc", description=(
        "Contrastive Predictive Coding on folders of raw audio: train, embed, classify, plot."))
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a CPC model on a folder of audio")
    _add_config_options(p)
    p.add_argument("--data", required=True, help="folder of audio files (searched recursively)")
    p.add_argument("--name", help="run name (default: the preset's name)")
    p.add_argument("--out", help="results folder (default: results)")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    p.add_argument("--force", action="store_true", help="start over even if the run folder holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("embed", help="embed a folder of audio with a trained model")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder, e.g. results/cpc/<name>")
    p.add_argument("--data", required=True, help="this split's folder of audio (searched recursively)")
    p.add_argument("--split", required=True, help="split name for the output files, e.g. train or test")
    p.add_argument("--crops", type=_crops_arg, default=None, metavar="M|all",
                   help="random crops per file (default 90 for train, 5 otherwise) or 'all'")
    p.add_argument("--kind", default="context", choices=["context", "context_mean", "z_mean", "zc"],
                   help="c at the crop's last step (the reference's), mean of c, mean of z, or "
                        "z and c side by side (with --pool)")
    p.add_argument("--layer", metavar="NAME",
                   help="embed one layer instead of --kind: z, c, encoder.conv1, ... (a wrong name lists them)")
    p.add_argument("--pool", default="mean", choices=["mean", "meanstd", "meanmax", "last"],
                   help="pooling of a crop's frames for --layer, context_mean and z_mean (default mean)")
    p.add_argument("--out", default="results", help="results folder (writes <out>/embeddings/<name>/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crop positions")
    p.add_argument("--batch-size", type=int, default=64, help="crops per inference batch")
    p.add_argument("--label-mode", default="auto", choices=["auto", "folder", "regex", "csv"])
    p.add_argument("--label-pattern", help="regex with a named group 'label', searched in file names")
    p.add_argument("--labels-csv", help="CSV of file,label rows (paths relative to --data)")
    p.add_argument("--random-init", action="store_true",
                   help="embed with the untrained model (baseline; written as <name>_random)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_embed)

    p = sub.add_parser("export", help="write a self-contained model: safetensors, TorchScript, ONNX")
    p.add_argument("run_dir", metavar="RUN", help="run folder (results/cpc/<name>) or an exported folder")
    p.add_argument("--out", required=True, help="folder to write config.json, model.safetensors and the formats to")
    p.add_argument("--format", dest="formats", action="append", choices=["safetensors", "torchscript", "onnx"],
                   help="also write model.torchscript.pt / model.onnx (repeatable; safetensors always)")
    p.add_argument("--random-init", action="store_true", help="export the untrained model (baseline)")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("make-task", help="write a labelled folder as a HEAR-format task (group-aware folds)")
    p.add_argument("data_dir", metavar="DATA_DIR", help="labelled audio (labels as in `audiocpc embed`)")
    p.add_argument("--out", required=True, help="task folder to write")
    p.add_argument("--label-mode", default="auto", choices=["auto", "folder", "regex", "csv"])
    p.add_argument("--label-pattern", help="regex with a named group 'label', searched in file names")
    p.add_argument("--labels-csv", help="CSV of file,label rows (paths relative to DATA_DIR)")
    p.add_argument("--group-pattern", help="regex with a named group 'group' (speaker, track): a group "
                   "stays in one fold, e.g. '_(?P<group>[a-z]+)_'")
    p.add_argument("--groups-csv", help="CSV of file,group rows (paths relative to DATA_DIR)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--sample-rate", dest="sample_rates", type=int, action="append",
                   help="HEAR rate(s) to write the audio at (default 16000; repeatable)")
    p.add_argument("--name", help="task name (default: the --out folder's name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.set_defaults(handler=_cmd_make_task)

    p = sub.add_parser("evaluate", help="HEAR-format tasks: MLP grid and linear probe vs MFCC and random-init")
    p.add_argument("task_dirs", nargs="+", metavar="TASK_DIR", help="HEAR-format task folder(s)")
    p.add_argument("--model", required=True, help="run folder (results/cpc/<name>) or exported folder")
    p.add_argument("--out", default="results/hear", help="results folder (writes <out>/<task>/results.json)")
    p.add_argument("--baselines", nargs="*", default=["random", "mfcc"], choices=["random", "mfcc"],
                   help="baselines beside the model (default: random mfcc)")
    p.add_argument("--probe", dest="probes", action="append", choices=["mlp", "linear"],
                   help="downstream model(s): mlp (HEAR's grid), linear (repeatable; default both)")
    p.add_argument("--layer", default="c", help="layer(s) of the model, e.g. c, z or 'z,c' (default c)")
    p.add_argument("--scene-pool", default="mean", choices=["mean", "meanstd", "meanmax", "last"],
                   help="pooling of the frames into one embedding per sound (default mean)")
    p.add_argument("--sample-rate", type=int, help="HEAR rate to feed the model (default: nearest above its own)")
    p.add_argument("--hidden-layers", type=int, nargs="+", default=[1, 2], help="MLP depths of the grid")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3.2e-4, 1e-4], help="MLP learning rates")
    p.add_argument("--max-epochs", type=int, default=500)
    p.add_argument("--patience", type=int, default=20, help="epochs without a better validation score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("check-data", help="scan a data folder: what can be read and used for training")
    p.add_argument("data_dir", metavar="DIR", help="folder of audio files (searched recursively)")
    _add_config_options(p)
    p.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--all", action="store_true", help="list every file, not only the summary")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_check_data)

    p = sub.add_parser("prepare", help="decode a data folder once into a sharded corpus (int16 shards + manifest)")
    p.add_argument("data_dir", metavar="DIR", help="folder of audio files (searched recursively)")
    _add_config_options(p)
    p.add_argument("--out", required=True, metavar="CORPUS", help="folder to write the prepared corpus to")
    p.add_argument("--workers", type=int, help="decoding processes (default: CPU cores, at most 8)")
    p.add_argument("--format", choices=["int16", "webdataset"], default="int16",
                   help="shards: raw int16 .bin (default) or WebDataset tars of key.npy + key.json "
                   "(for object storage and data.streaming)")
    p.add_argument("--force", action="store_true", help="replace a prepared corpus already at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_prepare)

    p = sub.add_parser("config", help="show presets and resolved configurations")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", help="print the resolved YAML of a preset")
    show.add_argument("preset_name", metavar="PRESET", help="preset name or YAML file")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show.set_defaults(handler=_cmd_config_show)
    listing = config_sub.add_parser("list", help="list the built-in presets")
    listing.set_defaults(handler=_cmd_config_list)

    p = sub.add_parser("make-demo-data", help="write the synthetic labelled demo data set")
    p.add_argument("out", help="output folder (gets train/ and test/)")
    p.add_argument("--files-per-class", type=int, default=24)
    p.add_argument("--test-files-per-class", type=int, default=8)
    p.add_argument("--seconds", type=float, default=None,
                   help="length of every clip (default 5; 4.5 in the tutorial layout)")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="rate of the files (default 16000; 22050 in the tutorial layout)")
    p.add_argument("--classes", default="temporal", choices=["temporal", "timbre"],
                   help="temporal: pairs of classes that differ only in temporal order (the "
                   "demo's); timbre: five classes that differ in spectrum")
    p.add_argument("--layout", default="plain", choices=["plain", "tutorial"],
                   help="plain: train/ and test/, labels as rising.00003.wav; tutorial: also "
                   "custom_audio_dataset/ (audio to train CPC on), labels as 0rising00003.wav, "
                   "as the TensorFlow CPC framework's tutorial lays data out")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_cmd_make_demo_data)

    p = sub.add_parser("demo", help="run the whole pipeline on the built-in synthetic data set")
    p.add_argument("--out", default="results/demo", help="folder for the demo's data and results")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="redo every stage, even finished ones")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_demo)

    for name, handler, text in (
            ("classify", _cmd_classify, "train probes on train embeddings, score them on the test split"),
            ("tsne", _cmd_tsne, "2-D map of train and test embeddings, coloured by class")):
        p = sub.add_parser(name, help=text)
        p.add_argument("target", metavar="RUN",
                       help="run folder (results/cpc/<name>), embeddings folder, or run name")
        p.add_argument("--features", default="cpc", choices=["cpc", "random", "mfcc"],
                       help="the trained model's embeddings (default), the untrained model's, or MFCCs "
                       "of the same crops")
        p.add_argument("--out", help="results folder (default: the one holding RUN, else results)")
        p.add_argument("--seed", type=int, default=0)
        (_add_probe_options if name == "classify" else _add_tsne_options)(p)
        p.set_defaults(handler=handler)

    p = sub.add_parser("run", help="train -> embed -> classify -> t-SNE for several models, one report")
    p.add_argument("--models", nargs="+", required=True, metavar="PRESET",
                   help="presets or YAML files, e.g. 1dconv_gru 1dconv_transformer")
    p.add_argument("--train-data", required=True, help="audio folder for CPC training")
    p.add_argument("--embed-train", help="labelled audio for the probes' training side (default: --train-data)")
    p.add_argument("--embed-test", help="labelled test audio (default: hold out whole files of --embed-train)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of every model, e.g. --set train.epochs=50")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--force", action="store_true", help="redo every stage, even finished ones")
    p.add_argument("--baselines", nargs="*", default=["random", "mfcc"], choices=["random", "mfcc"],
                   help="baseline features on the same crops (default: random mfcc)")
    p.add_argument("--crops-train", type=_crops_arg, default=None, metavar="M|all",
                   help="crops per train file (default 90)")
    p.add_argument("--crops-test", type=_crops_arg, default=None, metavar="M|all",
                   help="crops per test file (default 5)")
    p.add_argument("--kind", default="zc", choices=["context", "context_mean", "z_mean", "zc"],
                   help="embedding: z and c side by side (default), c at the crop's last step, "
                        "c's frames or z's frames, pooled by --pool")
    p.add_argument("--pool", default="meanstd", choices=["mean", "meanstd", "meanmax", "last"],
                   help="pooling of a crop's frames (default meanstd: mean and standard deviation)")
    p.add_argument("--label-mode", default="auto", choices=["auto", "folder", "regex", "csv"])
    p.add_argument("--label-pattern", help="regex with a named group 'label', searched in file names")
    p.add_argument("--labels-csv", help="CSV of file,label rows")
    p.add_argument("--seed", type=int, default=0, help="seed of crops, splits, probes and t-SNE")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_probe_options(p)
    _add_tsne_options(p)
    p.set_defaults(handler=_cmd_run)
    return parser


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("audiocpc %(levelname)s: %(message)s"))
    logger = logging.getLogger("audiocpc")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # a bare `audiocpc`: list the commands rather than only "COMMAND is required"
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.handler(args)
    except AudiocpcError as exc:
        import os  # under torchrun, say which process speaks

        who = f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"audiocpc: error{who}: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("audiocpc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
