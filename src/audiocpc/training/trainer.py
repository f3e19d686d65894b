"""The one training loop, used by the CLI, the Python API and distributed runs.

A run lives in `<output.dir>/cpc/<name>/`: config.yaml (the resolved configuration),
checkpoint.pt (everything needed to resume exactly), losses.npy (mean loss per epoch) and
history.csv (one row per epoch), and with train.mixed_precision=auto precision.json (the
precision chosen by measurement, see precision.py). A run resumed from its checkpoint continues with the same
batches, negatives and dropout masks as a run that never stopped.

The jobs around the loop live beside it: state.py (TrainState: step, epoch records, the
generators of every rank), device.py (resolve_device), run_folder.py (the files),
resume_rules.py (what --resume may change), stop.py (Ctrl-C and SIGTERM) and
distributed.py (the process group).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, cast

import torch
from tqdm.auto import tqdm

from audiocpc.training.checkpoint import save_checkpoint
from audiocpc.config import Config
from audiocpc.data.corpus import AudioCorpus, CropSampler
from audiocpc.data.labels import training_label_rule
from audiocpc.data.prepared import open_data
from audiocpc.data.remote import data_location
from audiocpc.data.streaming import StreamSampler, training_sampler
from audiocpc.training.distributed import (SINGLE_PROCESS, DistributedContext, DistributedRunError,
                                  distributed_session, effective_lr, is_collective_failure)
from audiocpc.training.device import resolve_device
from audiocpc.errors import (AudiocpcError, CheckpointError, ConfigError, DeadRunError,
                             NonFiniteLossError)
from audiocpc.fileio import atomic_write_text, disk_full_as
from audiocpc.models import build_cpc
from audiocpc.models.checks import check_model_config
from audiocpc.models.negatives import needs_labels
from audiocpc.training.health import dead_run_problem
from audiocpc.training.preflight import check_training_setup
from audiocpc.training.precision import (auto_candidates, autocast_context, choose_precision,
                                         combine_ranks, describe_choice, measure_precisions,
                                         precision_record)
from audiocpc.training.stop import StopRequest
from audiocpc.training.run_folder import RunFolder
from audiocpc.training.schedule import learning_rate
from audiocpc.training.state import EpochMeter, TrainState, capture_rng, rank_seed
from audiocpc.training.validation import ValidationSet, split_corpus
from audiocpc.training import resume_rules

log = logging.getLogger("audiocpc")


def build_optimizer(model: torch.nn.Module, config: Config,
                    lr: Optional[float] = None) -> torch.optim.Optimizer:
    """The optimizer at `lr` (default train.lr; distributed runs pass the scaled rate)."""
    t = config.train
    lr = t.lr if lr is None else lr
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=t.weight_decay)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    history: list[dict[str, float]]
    step_losses: list[float]
    interrupted: bool = False
    time_limited: bool = False  # stopped by train.max_minutes (checkpoint saved, resumable)
    health: Optional[str] = None  # why the run looks dead (train.dead_run_steps), or None

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


class Trainer:
    """Owns the model, optimizer and run folder; `fit()` runs the loop."""

    def __init__(self, config: Config, data_dir: str | Path, *, resume: bool = False,
                 force: bool = False, progress: bool = True,
                 dist: DistributedContext = SINGLE_PROCESS):
        config = check_model_config(config)  # components resolved, so config.yaml is complete
        self.config = config
        self.data_dir = data_location(data_dir)  # a Path, or a URL (s3://...) of a prepared corpus
        self.folder = RunFolder.for_config(config)
        self.run_dir = self.folder.path
        self.progress = progress
        self.force = force
        self.dist = dist
        self.device = resolve_device(config.train.device, local_rank=dist.local_rank,
                                     setting="train.device")
        self._resume_changes: list[resume_rules.Change] = []  # safe changes, found on rank 0
        self._resume_payload = self._read_resume_payload(resume, force)

        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        torch.manual_seed(config.train.seed)
        self.model = build_cpc(config, self._negative_bank()).to(self.device)  # never DDP-wrapped
        check_training_setup(config, self.data_dir, self.model, dist.world_size)
        if dist.rank:  # other dropout masks and sampled negatives than rank 0's
            torch.manual_seed(rank_seed(config.train.seed, dist.rank))
        self.lr = effective_lr(config.train.lr, config.train.lr_scaling, dist.world_size)
        self.optimizer = build_optimizer(self.model, config, lr=self.lr)
        # train.mixed_precision resolved (auto: from the checkpoint, else measured before step 1)
        self.precision_record: Optional[dict[str, Any]] = None
        self.precision: Optional[str] = self._recorded_precision()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.state = TrainState(config.train.steps_per_epoch)
        self.last_saved_step: Optional[int] = None
        self.validation: Optional[ValidationSet] = None
        self.candidates = 0  # 1 + negatives per prediction, seen in the last step
        self.z_spread = float("nan")  # std of z across the batch in the last step
        self.health: Optional[str] = None
        if self._resume_payload is not None:
            self._restore(self._resume_payload)
            self.last_saved_step = self.state.step
        self.network = self._wrap_for_distributed()

    # ------------------------------------------------------------------ set-up

    def _read_resume_payload(self, resume: bool, force: bool) -> Optional[dict[str, Any]]:
        """Rank 0 reads the checkpoint (or refuses); every rank gets the same outcome, so all
        ranks resume from the same state even without a shared file system."""
        outcome: tuple[Optional[dict[str, Any]], Optional[AudiocpcError]] = (None, None)
        if self.dist.is_main:
            try:
                payload, self._resume_changes = resume_rules.read_for_resume(
                    self.folder, self.config.to_dict(), self.dist.world_size, resume, force)
                outcome = (payload, None)
            except AudiocpcError as exc:
                outcome = (None, exc)
        payload, error = self.dist.broadcast_from_main(outcome)
        if error is not None:
            raise error
        return payload

    def _recorded_precision(self) -> Optional[str]:
        """The precision named by train.mixed_precision, or for `auto` the one a resumed run
        chose at its start (None: to be measured)."""
        setting = self.config.train.mixed_precision
        if setting != "auto":
            return setting
        record = (self._resume_payload or {}).get("precision") or {}
        if record.get("chosen") not in ("none", "bf16", "fp16"):
            return None
        if record.get("device") != self.device.type:  # measured on another kind of device
            if self.dist.is_main:
                log.info("train.mixed_precision=auto: the run chose %s on %s; this resume runs "
                         "on %s, so it measures again", record.get("chosen"), record.get("device"),
                         self.device.type)
            return None
        self.precision_record = record
        if self.dist.is_main:
            log.info(describe_choice(record, kept=True))
        return str(record["chosen"])

    def resolve_precision(self, crops: torch.Tensor, labels: Optional[torch.Tensor] = None) -> str:
        """For train.mixed_precision=auto: time the candidates on this batch (one micro-batch
        of data.N crops), keep the fastest safe one, say it in one line and record it (the
        checkpoint and precision.json). Every rank measures; all choose alike."""
        if self.precision is not None:
            return self.precision
        rows = slice(0, self.config.data.N)
        crops = crops[rows].to(self.device)
        labels = None if labels is None else labels[rows].to(self.device)
        results = measure_precisions(self.model, crops, labels, self.device,
                                     auto_candidates(self.device))
        if self.dist.enabled:
            results = combine_ranks(self.dist.gather_objects(results))
        chosen = choose_precision(results)
        data = self.config.data
        self.precision_record = precision_record(results, chosen, self.device,
                                                 data.N * data.crop_samples / data.sample_rate)
        self.precision = chosen
        if chosen == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=True)
        if self.dist.is_main:
            log.info(describe_choice(self.precision_record))
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.folder.write_precision(self.precision_record)
        return chosen

    def _wrap_for_distributed(self) -> torch.nn.Module:
        """The module the loop calls: DDP around the model under torchrun, else the model."""
        if not self.dist.enabled:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=device_ids)

    def _negative_bank(self) -> Any:
        """Negatives from every process's batch (loss.negatives.across_ranks), else None."""
        if not (self.dist.enabled and self.config.loss.negatives.across_ranks):
            return None
        # Its own process group: its backward collectives never interleave with DDP's.
        group = torch.distributed.new_group(backend=self.dist.backend)
        return functools.partial(self.dist.gather_negative_bank, group=group)

    @property
    def total_steps(self) -> int:
        return self.config.train.epochs * self.config.train.steps_per_epoch

    @property
    def step(self) -> int:
        """Steps done so far (self.state.step)."""
        return self.state.step

    @property
    def history(self) -> list[dict[str, float]]:
        """One record per finished epoch (self.state.history)."""
        return self.state.history

    def _restore(self, payload: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            resume_rules.restore_learning_rate(self.optimizer, payload["config"],
                                               int(payload.get("world_size", 1)), self.lr)
            if payload.get("scaler"):
                self.scaler.load_state_dict(payload["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{self.folder.checkpoint_path} does not match this configuration ({exc}). "
                "Resume with the run's own config.yaml, or start over with --force.") from None
        saved_world = int(payload.get("world_size", 1))
        saved_global = saved_world * int(payload["config"]["data"]["N"])
        global_batch = self.dist.world_size * self.config.data.N
        if saved_global != global_batch:
            log.warning("resuming a run trained with a global batch of %d (%d process(es)) with "
                        "%d (%d): the batches differ from those of an uninterrupted run",
                        saved_global, saved_world, global_batch, self.dist.world_size)
        self.state.load_state_dict(payload, rank=self.dist.rank, seed=self.config.train.seed)
        self.state.settings_changes = resume_rules.recorded_changes(payload, self.state.step,
                                                                    self._resume_changes)
        log.info("resumed %s at step %d", self.run_dir, self.state.step)

    def _payload(self, finished: bool, rank_rng: Optional[list[dict[str, Any]]]) -> dict[str, Any]:
        model: torch.nn.Module = getattr(self.model, "module", self.model)
        return {
            "config": self.config.to_dict(),
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            **({"precision": self.precision_record} if self.precision_record else {}),
            **self.state.state_dict(rank_rng),
            "finished": finished,
            "world_size": self.dist.world_size,
        }

    def save(self, finished: bool = False) -> None:
        """Called on every rank at the same step; only rank 0 writes."""
        # each rank's generators, so every rank resumes exactly
        rank_rng = self.dist.gather_objects(capture_rng()) if self.dist.enabled else None
        if self.dist.is_main:
            save_checkpoint(self.folder.checkpoint_path, self._payload(finished, rank_rng))
        self.last_saved_step = self.state.step

    # ------------------------------------------------------------------ loop

    def _batches(self, sampler: CropSampler | StreamSampler
                 ) -> Iterator[tuple[int, torch.Tensor, Optional[torch.Tensor]]]:
        from audiocpc.data.corpus import batch_stream

        return batch_stream(sampler, self.state.step, self.total_steps,
                            num_workers=self.config.data.num_workers,
                            pin_memory=self.device.type == "cuda")

    def train_step(self, crops: torch.Tensor, labels: Optional[torch.Tensor] = None
                   ) -> Optional[tuple[float, list[float]]]:
        """One optimisation step; returns (loss, per-step accuracy), or None if skipped.
        `labels` (one class index per crop) feed the label-aware negative policies."""
        cfg = self.config.train
        precision = self.resolve_precision(crops, labels)
        crops = crops.to(self.device, non_blocking=True)
        if labels is not None:
            labels = labels.to(self.device, non_blocking=True)
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        # train.accumulate batches of data.N: gradients add up, one optimizer step
        parts = cfg.accumulate
        losses, accuracies = [], []
        for part in range(parts):
            rows = slice(part * self.config.data.N, (part + 1) * self.config.data.N)
            sync = (cast("torch.nn.parallel.DistributedDataParallel", self.network).no_sync()
                    if self.dist.enabled and part < parts - 1
                    else contextlib.nullcontext())
            with sync:
                with autocast_context(self.device, precision):
                    out = self.network(crops[rows], None if labels is None else labels[rows])
                loss = out.loss  # computed in float32 by info_nce
                # averaged over processes first, so every rank agrees to go on or to stop
                losses.append(self.dist.mean(loss.detach()))
                if not torch.isfinite(losses[-1]):
                    break
                self.scaler.scale(loss / parts).backward()
            accuracies.append(out.step_accuracy.detach())
        self.candidates = int(out.logits.shape[-1])
        self.z_spread = float(out.z.detach().float().std(dim=0).mean())
        loss_value = float(torch.stack(losses).mean().item())
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            if cfg.on_nan == "skip":
                self.state.meter.skipped += 1
                log.warning("step %d: non-finite loss (%s) skipped (%d skipped this epoch)",
                            self.state.step + 1, loss_value, self.state.meter.skipped)
                return None
            advice = ("lower train.lr, set train.grad_clip, or use mixed_precision=bf16 instead of fp16"
                      if precision == "fp16" else
                      "lower train.lr or set train.grad_clip (e.g. 1.0)")
            saved = (f"No checkpoint was written yet (train.checkpoint_every = {cfg.checkpoint_every}): "
                     "run the command again after the change" if self.last_saved_step is None else
                     f"The last checkpoint (step {self.last_saved_step}) in {self.run_dir} is "
                     "intact: --resume continues from it with a new train.lr (other changes "
                     "need --force)")
            raise NonFiniteLossError(
                f"loss became {loss_value} at step {self.state.step + 1} (last finite loss "
                f"{self.state.last_finite_loss:.4f}). Try: {advice}. {saved}; set train.on_nan=skip "
                "to skip such steps instead.")
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.state.step, self.lr, self.total_steps, cfg.lr_schedule,
                                        cfg.warmup_steps, cfg.min_lr_ratio)
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.last_finite_loss = loss_value
        accuracy = self.dist.mean(torch.stack(accuracies).mean(dim=0)).tolist()
        return loss_value, accuracy

    def _end_epoch(self, epoch: int) -> None:
        m = self.state.meter
        steps = max(m.steps, 1)
        record: dict[str, float] = {"epoch": epoch, "loss": m.loss_sum / steps if m.steps else float("nan")}
        for j, total in enumerate(m.accuracy_sums, start=1):
            record[f"acc_k{j}"] = total / steps
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["seconds"] = m.seconds
        record["skipped_steps"] = m.skipped
        record["z_spread"] = self.z_spread
        if self.validation is not None:
            autocast = autocast_context(self.device, self.precision or "none")
            val_loss, val_accuracy = self.validation.score(self.model, self.device, autocast)
            record["val_loss"] = val_loss
            for j, value in enumerate(val_accuracy, start=1):
                record[f"val_acc_k{j}"] = value
        self.state.history.append(record)
        self.state.meter = EpochMeter()
        if self.dist.is_main:
            self._write_history()
        self._check_health(record)

    def _check_health(self, record: dict[str, float]) -> None:
        """After train.dead_run_steps: warn (once) or stop when the run does not learn."""
        cfg = self.config
        if not cfg.train.dead_run_steps or self.state.step < cfg.train.dead_run_steps or self.health:
            return
        problem = dead_run_problem(self.state.step, record["loss"], self.candidates, self.z_spread,
                                   cfg.data.standardize, cfg.model.encoder.params.get("norm"),
                                   self.lr)
        if problem is None:
            return
        self.health = problem
        if cfg.train.on_dead_run == "stop":
            self.save()
            raise DeadRunError(f"{problem} The checkpoint (step {self.state.step}) in {self.run_dir} "
                               "is saved.")
        log.warning(problem)

    def _write_history(self) -> None:
        with disk_full_as(self.folder.losses_path,
                          "no checkpoint was written yet; free space and run the command again"
                          if self.last_saved_step is None else
                          f"the last checkpoint (step {self.last_saved_step}) in {self.run_dir} is "
                          "intact; free space and run the same command with --resume"):
            self.folder.write_history(self.state.history)

    def _load_data(self) -> AudioCorpus:
        """The one data path: scan the folder (cached), write data_report.json, stop if
        nothing is usable, and make the corpus (labels and joined sequences) from the scan."""
        data = self.config.data
        report = open_data(self.data_dir, data, progress=self.progress and self.dist.is_main)
        if self.dist.is_main:
            path = report.write(self.folder.data_report_path)
            lines = report.summary_lines()
            log.info("data: %s (details in %s)", lines[0], path)
            for line in lines[1:]:
                if line.startswith("joined"):
                    log.info("data: %s", line)
            if report.silent:
                log.info("data: %d silent file(s), still used", len(report.silent))
        report.check(data.on_bad_file, advice=self._crop_advice)
        readable = [f for f in report.files if f.readable]
        # per-file advice: with data.join the sequences, not the files, must hold a crop
        if (self.dist.is_main and data.join == "none"
                and len(report.too_short) > 0.1 * len(readable)):
            log.warning("data: %d of %d readable files are shorter than the %.3f s crop and are "
                        "left out. %s", len(report.too_short), len(readable), report.crop_seconds,
                        self._crop_advice(report))
        corpus = report.corpus(labels=training_label_rule(data))
        policy = self.config.loss.negatives.policy
        if needs_labels(policy) and corpus.label_ids is not None and len(set(corpus.label_ids.tolist())) < 2:
            raise ConfigError(f"loss.negatives.policy: '{policy}' needs at least 2 labels among the "
                              f"training files, found {len(set(corpus.label_ids.tolist()))}; check "
                              "data.labels (or data.label_pattern) or use policy 'batch'")
        return corpus

    def _crop_advice(self, report: Any) -> str:
        from audiocpc.training.preflight import crop_advice

        return crop_advice(self.config, [f.samples for f in report.files if f.readable])

    def fit(self) -> TrainResult:
        cfg = self.config
        if self.state.step >= self.total_steps:  # a finished run: its folder is left as it is
            log.info("%s has already finished %d steps", self.run_dir, self.state.step)
            return TrainResult(self.run_dir, self.state.step, self.state.history, self.state.step_losses)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.force and self._resume_payload is None:
                self.folder.clear()  # nothing of the old run is left to resume
            atomic_write_text(self.folder.config_path, cfg.to_yaml())
        corpus = self._load_data()
        if self.dist.is_main:
            joined = (f" joined into {len(corpus.sequence_lengths)} sequences (data.join="
                      f"{corpus.join})" if corpus.join != "none" else "")
            log.info("training on %d files%s (%.1f min of audio) from %s", len(corpus), joined,
                     corpus.total_seconds / 60, self.data_dir)
            log.info(self.batch_summary())
        corpus, held_out = split_corpus(corpus, cfg.train.validation_fraction, cfg.train.seed)
        if held_out is not None and cfg.train.validation_crops > 0:
            self.validation = ValidationSet.draw(held_out, cfg.data.crop_samples,
                                                 cfg.train.validation_crops, cfg.data.N,
                                                 cfg.train.seed)
            if self.dist.is_main:
                log.info("validation: %d held-out file(s), %d fixed crops scored every epoch",
                         len(held_out), len(self.validation.crops))
        sampler = training_sampler(corpus, cfg.data.crop_samples, cfg.data.N * cfg.train.accumulate,
                                   cfg.train.seed, self.dist.rank, self.dist.world_size,
                                   cfg.data.streaming, cfg.data.shuffle_buffer)
        if self.precision is None:  # auto: measured on this step's own batch, before it runs
            first_crops, first_labels = sampler.batch_with_labels(self.state.step)
            self.resolve_precision(torch.from_numpy(first_crops),
                                   None if first_labels is None else torch.from_numpy(first_labels))
        writer = self._tensorboard()
        steps_per_epoch = cfg.train.steps_per_epoch
        bar = tqdm(total=self.total_steps, initial=self.state.step, desc=f"train {cfg.run_name}",
                   unit="step", disable=not (self.progress and self.dist.is_main), dynamic_ncols=True)
        interrupted = time_limited = False
        with StopRequest() as stop, self._collective_failures_explained():
            tick = time.perf_counter()
            deadline = (None if cfg.train.max_minutes is None
                        else tick + 60.0 * cfg.train.max_minutes)
            for step, crops, labels in self._batches(sampler):
                assert step == self.state.step, f"batch for step {step} arrived at step {self.state.step}"
                result = self.train_step(crops, labels)
                self.state.step += 1
                now = time.perf_counter()
                self.state.meter.seconds += now - tick
                tick = now
                if result is not None:
                    loss, accuracy = result
                    self.state.meter.add(loss, accuracy)
                    self.state.step_losses.append(loss)
                    bar.set_postfix(loss=f"{loss:.3f}", acc="/".join(f"{a:.2f}" for a in accuracy),
                                    refresh=False)
                    if writer is not None:
                        writer.add_scalar("loss/train", loss, self.state.step)
                bar.update(1)
                if self.state.step % steps_per_epoch == 0:
                    self._end_epoch(self.state.step // steps_per_epoch)
                    last = self.state.history[-1]
                    if "val_loss" in last:
                        bar.set_postfix(loss=f"{last['loss']:.3f}", val=f"{last['val_loss']:.3f}",
                                        refresh=False)
                    if writer is not None:
                        for key in ("val_loss", "z_spread"):
                            if key in last:
                                writer.add_scalar(f"epoch/{key}", last[key], self.state.step)
                if self.state.step % cfg.train.checkpoint_every == 0 or self.state.step == self.total_steps:
                    self.save(finished=self.state.step == self.total_steps)
                time_up = deadline is not None and now >= deadline and self.state.step < self.total_steps
                if self.dist.any(stop.requested or time_up, self.device):  # every rank stops here
                    if self.state.step % cfg.train.checkpoint_every:
                        self.save()
                    if stop.requested:
                        interrupted = True
                        log.warning("stopped at step %d; checkpoint saved. Continue with --resume.",
                                    self.state.step)
                    else:
                        time_limited = True
                        log.info("train.max_minutes reached at step %d; checkpoint saved. Continue "
                                 "with --resume.", self.state.step)
                    break
        bar.close()
        if writer is not None:
            writer.close()
        return TrainResult(self.run_dir, self.state.step, self.state.history, self.state.step_losses, interrupted,
                           time_limited, self.health)

    def batch_summary(self) -> str:
        """The batch and learning-rate rule of this run, printed at start."""
        cfg, world = self.config, self.dist.world_size
        if not self.dist.enabled:
            return f"batch: {cfg.data.N} sequences per step; lr {self.lr:g}"
        pool = ("the global batch (loss.negatives.across_ranks)" if cfg.loss.negatives.across_ranks
                else "each process's own batch")
        return (f"distributed: {world} processes ({self.dist.backend}); data.N = {cfg.data.N} "
                f"sequences per process, global batch {cfg.data.N * world}; lr {self.lr:g} "
                f"(train.lr {cfg.train.lr:g}, train.lr_scaling={cfg.train.lr_scaling}); "
                f"negatives from {pool}")

    @contextlib.contextmanager
    def _collective_failures_explained(self) -> Iterator[None]:
        """Turn a failed collective (another rank died, the network broke, a timeout) into
        one clear message that says where the intact checkpoint is."""
        try:
            yield
        except Exception as exc:
            if not (self.dist.enabled and is_collective_failure(exc)):
                raise
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            # gloo's text starts with a source location and ends with advice: keep the cause
            first_line = re.sub(r"^\[[^\]]*\]\s*", "", first_line).split(". ")[0].rstrip(".")
            if self.last_saved_step is None:
                saved = (f"no checkpoint was written yet (train.checkpoint_every = "
                         f"{self.config.train.checkpoint_every}); run the command again to start over")
            else:
                saved = (f"the last checkpoint (step {self.last_saved_step}) in {self.run_dir} is "
                         "intact; run the same command with --resume to continue from it")
            raise DistributedRunError(
                f"rank {self.dist.rank}: lost contact with the other processes during step "
                f"{self.state.step + 1} ({first_line}). Another rank probably stopped or was killed "
                f"(the launcher's summary names it); {saved}.") from None

    def _tensorboard(self) -> Any:
        if not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional `tensorboard` extra is not installed
            return None
        return SummaryWriter(str(self.folder.tensorboard_dir))


def train(config: Config, data_dir: str | Path, *, resume: bool = False, force: bool = False,
          progress: bool = True, dist: Optional[DistributedContext] = None) -> TrainResult:
    """Train (or resume) a CPC model on the audio below `data_dir`. Under torchrun (and
    `dist` not given) the processes join one DistributedDataParallel run."""
    if dist is not None:
        with _run_folder_lock(config, dist):
            return Trainer(config, data_dir, resume=resume, force=force, progress=progress,
                           dist=dist).fit()
    with distributed_session(config.train.distributed_backend, config.train.distributed_timeout_s,
                             config.train.device) as session, _run_folder_lock(config, session):
        return Trainer(config, data_dir, resume=resume, force=force, progress=progress,
                       dist=session).fit()


def _run_folder_lock(config: Config, dist: DistributedContext) -> contextlib.AbstractContextManager:
    """Held by rank 0 for the whole training: a second process on the same run folder is
    refused before it reads or removes anything."""
    if not dist.is_main:
        return contextlib.nullcontext()
    return RunFolder.for_config(config).lock("training")
