"""`python -m trainer train`: one Accelerate loop for the tagger and the sentiment model.

The same script runs as one process or as N processes under torchrun (`./launch.sh train --nproc N`);
Accelerator picks the world up from the environment (gloo on CPU, nccl on GPUs). In order:
  1. check the config and read the data: unusable data fails here, before any process group starts;
  2. build vocabularies from the training split and encode every split once (main process first);
  3. train: length-bucketed batches, gradient accumulation, clipping, warmup + decay, dev scoring,
     best weights kept, early stopping, checkpoints every `save_every` steps and at each epoch end;
  4. score the best weights on test and write RUN_DIR/model once, from the main process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator, skip_first_batches
from accelerate.utils import gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from trainer.artifact import save_artifact
from trainer.batching import BucketBatchSampler, lr_factor
from trainer.checkpoint import (
    STATE_FILE,
    conform,
    discard,
    list_checkpoints,
    publish,
    read_checkpoint,
    remove_stale,
    restore,
    write_manifest,
    write_rng,
    write_training_state,
)
from trainer.config import (
    MODEL_CONFIGS,
    TASKS,
    PreprocessConfig,
    TrainConfig,
    apply_overrides,
    check_config,
    check_out_path,
    field_types,
    parse_key_values,
    read_json_config,
    to_dict,
)
from trainer.data import open_dataset
from trainer.errors import ArtifactError, ConfigError, DataError, TrainingError
from trainer.evaluate import Collate, EncodedSplit, Parser, Split, eval_loader, read_split, score, summary
from trainer.models import build_model, run_lstms_in_float32
from trainer.plots import end_torn_line, plot_curves
from trainer.precision import resolve_precision
from trainer.preprocess import SENTIMENT_LABELS, UNIVERSAL_TAGS, Encoder, build_vocabs
from trainer.pretrain import copy_vectors, extend_vocab, load_embeddings

# Measured on 2 busy CPU cores: the tagger reaches ~97.6% dev accuracy in 3 epochs (~1,440 steps each,
# 3-8k tokens/s), while sentiment keeps improving up to ~10 short epochs (~320 steps, ~10k tokens/s).
TASK_EPOCHS = {"tagger": 4, "sentiment": 10}


# ---- command line and config ----------------------------------------------------------------

def parse_args(argv: list[str]) -> tuple[Any, Any, PreprocessConfig, TrainConfig]:
    keys = {name: sorted(field_types(cls)) for name, cls in
            [*MODEL_CONFIGS.items(), ("preprocess", PreprocessConfig), ("train", TrainConfig)]}
    parser = Parser(prog="python -m trainer train", allow_abbrev=False,
                    description="Train a tagger or sentiment model; any config key can follow as --key value.",
                    epilog="config keys: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in keys.items()))
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--data", required=True, metavar="SPEC")
    parser.add_argument("--out", required=True, type=Path, metavar="RUN_DIR")
    parser.add_argument("--config", type=Path, metavar="FILE", help="JSON object of config keys (before --key value)")
    parser.add_argument("--resume", metavar="auto|PATH", help="continue from the latest or a given checkpoint")
    parser.add_argument("--skip-bad-lines", "--skip_bad_lines", action="store_true",
                        help="skip malformed fasttext lines (counted)")
    args, rest = parser.parse_known_args(argv)
    check_out_path(args.out, "--out", directory=True)
    model, preprocess, train = MODEL_CONFIGS[args.task](), PreprocessConfig(), TrainConfig()
    if args.config is not None:
        apply_overrides([model, preprocess, train], read_json_config(args.config), source=f"--config {args.config}")
    apply_overrides([model, preprocess, train], parse_key_values(rest), source="command line")
    train.epochs = train.epochs or TASK_EPOCHS[args.task]
    check_config(model, preprocess, train)
    return args, model, preprocess, train


def find_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: `--resume PATH` if it is whole; with `auto` the newest whole one,
    passing over damaged newer ones with one line on stderr; None to start afresh."""
    existing = list_checkpoints(run_dir / "checkpoints")
    if resume is None:
        if existing:
            raise ConfigError(f"{run_dir} already has checkpoints ({existing[-1].name}); "
                              "continue with --resume auto, or train into a new --out")
        return None
    if resume == "auto":
        return newest_whole_checkpoint(existing, run_dir / "checkpoints")
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"--resume {resume}: not a checkpoint "
                          f"(expected RUN_DIR/checkpoints/step-N with {STATE_FILE}, or auto)")
    try:
        read_checkpoint(path)
    except ArtifactError as exc:
        raise ArtifactError(f"--resume {resume}: {exc}") from None
    return path


def newest_whole_checkpoint(existing: list[Path], root: Path) -> Path | None:
    damaged = []
    for path in reversed(existing):
        try:
            read_checkpoint(path)
        except ArtifactError as exc:
            damaged.append(str(exc))
            continue
        # No process group exists yet, so the rank comes from the launcher's environment: one line, not one each.
        if damaged and os.environ.get("RANK", "0") == "0":
            print(f"train: {'; '.join(damaged)}; resuming from {path.name}", file=sys.stderr)
        return path
    if damaged:
        raise ArtifactError(f"--resume auto: no whole checkpoint in {root}: {'; '.join(damaged)}; "
                            "train into a new --out")
    return None


def load_splits(spec: str, task: str, skip_bad_lines: bool) -> tuple[dict[str, Split], dict[str, int]]:
    """Every split as tokens and targets, with what was skipped; no usable train or dev data is an error."""
    dataset = open_dataset(spec, skip_bad_lines=skip_bad_lines)
    if dataset.task != task:
        raise ConfigError(f"--task {task} does not fit --data {spec}, which holds {dataset.task} data")
    splits = {name: read_split(dataset, name) for name in ("train", "dev", "test") if name in dataset.splits}
    unit = "sentences" if task == "tagger" else "reviews"
    for name in ("train", "dev"):
        if name not in splits or not splits[name].tokens:
            empty = splits[name].empty if name in splits else 0
            raise DataError(f"--data {spec}: no usable {name} examples ({empty} empty {unit} skipped)")
    skipped = dict(dataset.skipped) | {f"empty {unit} ({name})": s.empty for name, s in splits.items() if s.empty}
    return splits, skipped


def loss_sum(logits: torch.Tensor, batch: dict[str, torch.Tensor], task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss over real tokens (tagger) or reviews (sentiment), and how many there were.

    Computed on logits.float(): under autocast the LSTMs and linear layers may run in bf16/fp16 (weights
    and optimizer state stay fp32), but log-sum-exp and sigmoid in reduced precision lose the small
    differences between large logits, so the loss is fp32 whatever the mixed precision.
    """
    targets = batch["targets"]
    if task == "tagger":
        steps = torch.arange(logits.shape[1], device=logits.device)
        real = steps.unsqueeze(0) < batch["lengths"].unsqueeze(1)  # (B, T): positions past a length are padding
        return F.cross_entropy(logits.float()[real], targets[real], reduction="sum"), real.sum()
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum")
    return loss, targets.new_tensor(len(targets))


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---- logging --------------------------------------------------------------------------------

class RunLog:
    """RUN_DIR/logs/metrics.jsonl (one JSON object per event) and TensorBoard scalars; main process only."""

    def __init__(self, accelerator: Accelerator, path: Path, fresh: bool) -> None:
        self.accelerator, self.path = accelerator, path
        if accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                path.write_text("", encoding="utf-8")
            else:  # a run killed mid-write may have left half a line: the next event must not join it
                end_torn_line(path)

    def __call__(self, event: str, step: int, **values: Any) -> None:
        if not self.accelerator.is_main_process:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "step": step, "time": round(time.time(), 3), **values}) + "\n")
        prefix = values.get("split", event)
        scalars = {f"{prefix}/{k}": v for k, v in values.items() if type(v) in (int, float)}
        if scalars:
            self.accelerator.log(scalars, step=step)


# ---- the loop -------------------------------------------------------------------------------

@dataclass
class TrainState:
    """What a resumed run needs besides model, optimizer, scheduler and RNG (trainer/checkpoint.py)."""

    step: int = 0  # optimizer steps
    epoch: int = 0
    batches_in_epoch: int = 0  # per-process batches of `epoch` already trained on
    best_metric: float = -1.0
    best_step: int = 0
    best_dev: dict = field(default_factory=dict)
    evals_without_improvement: int = 0
    bad_in_a_row: int = 0
    skipped_steps: int = 0
    tokens: int = 0  # real tokens trained on, all processes
    train_seconds: float = 0.0  # main process, excluding evaluation and checkpoints
    last_eval_step: int = -1
    last_save_step: int = -1


class Trainer:
    def __init__(self, accelerator: Accelerator, parts: dict[str, Any], cfg: TrainConfig, task: str,
                 run_dir: Path, identity: dict[str, Any], log: RunLog) -> None:
        self.accelerator, self.cfg, self.task, self.run_dir, self.identity, self.log = (
            accelerator, cfg, task, run_dir, identity, log)
        self.model, self.optimizer, self.scheduler = parts["model"], parts["optimizer"], parts["scheduler"]
        self.train_loader, self.sampler, self.eval_loaders = parts["train"], parts["sampler"], parts["eval"]
        self.labels, self.total_steps = parts["labels"], parts["total_steps"]
        self.batches_per_epoch = len(self.train_loader)
        self.input_names = accelerator.unwrap_model(self.model).input_names
        self.state = TrainState()
        self.best: dict[str, torch.Tensor] | None = None  # CPU copy of the best weights, on every process
        self.window = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss sum, count, tokens
        self.window_seconds = 0.0
        self.grad_norm = torch.zeros(())

    def fit(self) -> str:
        """Train until a stop condition holds; return which."""
        start = self.state.step
        bar = tqdm(total=self.total_steps, initial=start, unit="step", dynamic_ncols=True, mininterval=1.0,
                   disable=not self.accelerator.is_main_process)
        try:
            while (reason := self.stop_reason(start)) is None:
                self.run_epoch(start, bar)
        finally:
            bar.close()
        return reason

    def stop_reason(self, session_start: int) -> str | None:
        state, cfg = self.state, self.cfg
        if cfg.patience > 0 and state.evals_without_improvement >= cfg.patience:
            return "early_stopping"
        if cfg.max_steps and state.step >= cfg.max_steps:
            return "max_steps"
        if state.epoch >= cfg.epochs:
            return "epochs"
        if cfg.session_steps and state.step - session_start >= cfg.session_steps:
            return "session_steps"
        return None

    def run_epoch(self, session_start: int, bar: tqdm) -> None:
        state = self.state
        self.sampler.epoch = state.epoch
        loader = self.train_loader
        if state.batches_in_epoch:  # resumed mid-epoch: the same batch order, minus what was trained on
            loader = skip_first_batches(loader, state.batches_in_epoch)
        clock = time.perf_counter()
        for batch in loader:
            self.train_step(batch)
            state.batches_in_epoch += 1
            state.train_seconds += time.perf_counter() - clock
            if self.accelerator.sync_gradients:
                epoch_end = state.batches_in_epoch == self.batches_per_epoch
                if epoch_end:
                    state.epoch, state.batches_in_epoch = state.epoch + 1, 0
                bar.update(1)
                self.after_step(epoch_end, bar)
                if self.stop_reason(session_start) is not None:
                    return
            clock = time.perf_counter()

    def train_step(self, batch: dict[str, torch.Tensor]) -> None:
        """Forward and backward of one batch; the last batch of an accumulation also steps the optimizer."""
        acc = self.accelerator
        with acc.accumulate(self.model):
            logits = self.model(*(batch[name] for name in self.input_names))
            total, count = loss_sum(logits, batch, self.task)
            # Normalised by the count over all processes (DDP then averages gradients), so a step's loss
            # is the mean over the global batch however the tokens fall across processes.
            share = acc.reduce(count.double(), "sum") / acc.num_processes if acc.num_processes > 1 else count
            loss = total / share
            acc.backward(loss)
            if acc.sync_gradients:
                self.optimizer_step()
        self.window += torch.stack([total.detach().double(), count.double(), batch["lengths"].sum().double()])

    def optimizer_step(self) -> None:
        state, cfg = self.state, self.cfg
        self.grad_norm = self.accelerator.clip_grad_norm_(
            self.model.parameters(), cfg.clip_grad_norm if cfg.clip_grad_norm > 0 else float("inf"))
        # Gradients were all-reduced before this, so every process sees the same norm and decides alike.
        if self.accelerator.mixed_precision == "fp16" or torch.isfinite(self.grad_norm):
            self.optimizer.step()  # under fp16 the GradScaler itself skips steps whose gradients overflowed
            state.bad_in_a_row = 0
        else:
            state.skipped_steps += 1
            state.bad_in_a_row += 1
            self.log("skipped_step", state.step + 1, reason="non-finite loss or gradients", in_a_row=state.bad_in_a_row)
            if state.bad_in_a_row >= cfg.max_bad_steps:
                raise TrainingError(
                    f"{state.bad_in_a_row} steps in a row had a non-finite loss (max_bad_steps={cfg.max_bad_steps}), "
                    f"the last at step {state.step + 1}; lower --lr or check the data; the last checkpoint in "
                    f"{self.run_dir / 'checkpoints'} is intact")
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1

    def after_step(self, epoch_end: bool, bar: tqdm) -> None:
        state, cfg = self.state, self.cfg
        if state.step % cfg.log_every == 0:
            loss, tokens_per_s = self.flush_window()
            self.log("train", state.step, epoch=state.epoch, loss=loss, lr=self.scheduler.get_last_lr()[0],
                     grad_norm=float(self.grad_norm), tokens_per_s=tokens_per_s)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
        if (cfg.eval_every and state.step % cfg.eval_every == 0) or (not cfg.eval_every and epoch_end):
            self.evaluate_dev()
        if (cfg.save_every and state.step % cfg.save_every == 0) or epoch_end:
            self.save_checkpoint()

    def flush_window(self) -> tuple[float, float]:
        """Mean loss and tokens/s since the last call, summed over processes (all call it at the same steps)."""
        loss_sum_, count, tokens = self.accelerator.reduce(self.window.clone(), "sum").tolist()
        self.window.zero_()
        seconds, self.window_seconds = self.state.train_seconds - self.window_seconds, self.state.train_seconds
        self.state.tokens += int(tokens)
        return loss_sum_ / max(count, 1.0), tokens / seconds if seconds > 0 else 0.0

    def evaluate_dev(self) -> None:
        state = self.state
        metrics = summary(score(self.model, self.eval_loaders["dev"], self.accelerator, self.task, self.labels))
        state.last_eval_step = state.step
        improved = metrics["accuracy"] > state.best_metric
        if improved:
            state.best_metric, state.best_step, state.best_dev = metrics["accuracy"], state.step, metrics
            state.evals_without_improvement = 0
            weights = self.accelerator.unwrap_model(self.model).state_dict()
            self.best = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()}
        else:
            state.evals_without_improvement += 1
        self.log("eval", state.step, split="dev", improved=improved, **metrics)

    def save_checkpoint(self) -> None:
        """Every file into a hidden temporary folder, the manifest last, then renamed into place."""
        acc, state = self.accelerator, self.state
        self.flush_window()
        root = self.run_dir / "checkpoints"
        final, tmp = root / f"step-{state.step}", root / f".tmp-step-{state.step}"
        state.last_save_step = state.step
        try:
            if acc.is_main_process:
                root.mkdir(parents=True, exist_ok=True)
                remove_stale(root)
                tmp.mkdir()
            acc.wait_for_everyone()
            write_rng(tmp, acc.process_index)
            if acc.is_main_process:
                write_training_state(tmp, acc.unwrap_model(self.model), self.optimizer, self.scheduler, acc.scaler,
                                     self.best)
            acc.wait_for_everyone()  # every process's RNG file is in before the manifest is taken
            if acc.is_main_process:
                write_manifest(tmp, {"trainer": dataclasses.asdict(state), **self.identity,
                                     "accelerator_step": acc.step})
                publish(tmp, final)
                for old in list_checkpoints(root)[: -self.cfg.keep_checkpoints]:
                    discard(old)
        except BaseException:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        acc.wait_for_everyone()
        self.log("checkpoint", state.step, path=str(final))

    def load_checkpoint(self, path: Path) -> None:
        checkpoint = read_checkpoint(path)
        saved = checkpoint.state
        for key, value in self.identity.items():
            if saved.get(key) != value:
                raise ConfigError(f"--resume {path}: the checkpoint's {key} is {saved.get(key)!r} but this run's is "
                                  f"{value!r}; resume with the same settings, or train into a new --out")
        trainer = conform(dataclasses.asdict(TrainState()), saved["trainer"], f"{path / STATE_FILE} 'trainer'")
        acc = self.accelerator
        restore(checkpoint, acc.unwrap_model(self.model), self.optimizer, self.scheduler, acc.scaler,
                acc.process_index)
        acc.step = saved["accelerator_step"]  # gradient accumulation's batch counter, as load_state set it
        self.state = TrainState(**trainer)
        self.window_seconds = self.state.train_seconds
        self.best = checkpoint.best

    def finish(self, reason: str) -> dict[str, Any]:
        """Last dev score and checkpoint, then test metrics of the best weights (left in the model)."""
        state = self.state
        if state.last_eval_step != state.step:
            self.evaluate_dev()
        if state.last_save_step != state.step:
            self.save_checkpoint()
        model = self.accelerator.unwrap_model(self.model)
        checksums = gather_object([weights_sha256(model)])
        model.load_state_dict(self.best)
        test = None
        if "test" in self.eval_loaders:
            test = score(self.model, self.eval_loaders["test"], self.accelerator, self.task, self.labels)
            test = {k: v for k, v in test.items() if k != "confusion"}
            self.log("eval", state.step, split="test", **summary(test))
        self.log("end", state.step, reason=reason, weights_sha256_per_process=checksums)
        return {
            "steps": state.step, "epochs_completed": state.epoch, "stopped": reason, "best_step": state.best_step,
            "train_tokens": state.tokens, "train_seconds": round(state.train_seconds, 2),
            "train_tokens_per_s": round(state.tokens / max(state.train_seconds, 1e-9), 1),
            "skipped_steps": state.skipped_steps, "dev": state.best_dev, "test": test,
        }


# ---- putting it together --------------------------------------------------------------------

def build(accelerator: Accelerator, task: str, model_config: Any, preprocess: PreprocessConfig,
          cfg: TrainConfig, splits: dict[str, Split]) -> tuple[dict[str, Any], Any]:
    """Vocabularies, encoded splits, model, optimizer, schedule and loaders, prepared."""
    labels = list(UNIVERSAL_TAGS if task == "tagger" else SENTIMENT_LABELS)
    # Accelerate's idiom for preprocessing. Encoding is deterministic, so every rank builds the same ids;
    # taking turns keeps N processes on one small machine from peaking in memory together.
    with accelerator.main_process_first():
        chars = task == "tagger" and model_config.char_encoder
        vocabs = build_vocabs(splits["train"].tokens, labels, preprocess, chars=chars)
        if cfg.init_embeddings:  # pretrained words join the vocabulary (after the corpus's, whose ids stay)
            dim_key = "embed_dim" if task == "sentiment" else "word_dim"
            pretrained = load_embeddings(Path(cfg.init_embeddings), getattr(model_config, dim_key), dim_key, preprocess)
            vocabs = extend_vocab(vocabs, pretrained[0])
        encoder = Encoder(vocabs, preprocess)
        data = {name: EncodedSplit(split, encoder, task) for name, split in splits.items() if split.tokens}
    model = build_model(model_config, vocabs)
    if cfg.init_embeddings:
        copied = copy_vectors(model, vocabs, *pretrained)
        accelerator.print(f"train: {copied} of {len(vocabs.words)} word vectors from {cfg.init_embeddings}")
    try:  # the fused kernel is several times faster on CPU, where torch < 2.4 lacks it
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except RuntimeError:
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    collate = Collate(encoder, task)
    sampler = BucketBatchSampler(data["train"].lengths, cfg.batch_size, accelerator.num_processes, cfg.seed)
    if len(sampler) == 0:
        raise DataError(f"{len(data['train'])} training examples cannot feed {accelerator.num_processes} processes")
    # Its own generator: starting an epoch then draws nothing from the global (dropout) RNG, so a
    # resumed run's random stream matches an uninterrupted one.
    train = DataLoader(data["train"], batch_sampler=sampler, collate_fn=collate, generator=torch.Generator())
    steps_per_epoch = math.ceil(len(sampler) // accelerator.num_processes / cfg.grad_accum)
    total_steps = min(cfg.epochs * steps_per_epoch, cfg.max_steps or cfg.epochs * steps_per_epoch)
    # Stepped by hand once per optimizer step rather than prepared: a prepared scheduler steps once per
    # process, which would bend the schedule with the world size. trainer.checkpoint saves its counters.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, warmup=cfg.warmup_steps, total=total_steps, schedule=cfg.schedule))
    names = [name for name in ("dev", "test") if name in data]
    model, optimizer, train, *loaders = accelerator.prepare(
        model, optimizer, train, *(eval_loader(data[n], collate, cfg.eval_batch_size) for n in names))
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "train": train, "sampler": sampler,
             "eval": dict(zip(names, loaders, strict=True)), "labels": labels, "total_steps": total_steps, "data": data}
    return parts, vocabs


def main(argv: list[str]) -> int:
    args, model_config, preprocess, cfg = parse_args(argv)
    precision = resolve_precision(cfg.mixed_precision, cuda=torch.cuda.is_available())
    run_dir = args.out
    checkpoint = find_checkpoint(args.resume, run_dir)
    splits, skipped = load_splits(args.data, args.task, args.skip_bad_lines)  # before any process group

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision.mode,
                              gradient_accumulation_steps=cfg.grad_accum, log_with="tensorboard",
                              project_dir=str(run_dir / "logs"))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Per-process seeds (seed + rank) so that dropout masks differ across processes; the initial
    # weights still agree, because preparing the model broadcasts rank 0's.
    set_seed(cfg.seed, device_specific=True)
    parts, vocabs = build(accelerator, args.task, model_config, preprocess, cfg, splits)
    if precision.lstm_in_float32:
        run_lstms_in_float32(accelerator.unwrap_model(parts["model"]))
        accelerator.print(f"train: {precision.note}")
    identity = {"task": args.task, "model": to_dict(model_config), "preprocess": to_dict(preprocess),
                "vocab_sha256": hashlib.sha256(json.dumps(vocabs.to_json()).encode()).hexdigest(),
                "world_size": accelerator.num_processes}
    log = RunLog(accelerator, run_dir / "logs" / "metrics.jsonl", fresh=checkpoint is None)
    trainer = Trainer(accelerator, parts, cfg, args.task, run_dir, identity, log)
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint)
    examples = {name: len(d) for name, d in parts["data"].items()}
    skipped |= {f"truncated to {preprocess.max_tokens} tokens ({name})": d.truncated
                for name, d in parts["data"].items() if d.truncated}
    accelerator.init_trackers("tensorboard", config=to_dict(cfg) | to_dict(model_config))
    accelerator.print(f"train: {args.task} on {args.data}, world size {accelerator.num_processes} "
                      f"({accelerator.distributed_type.value} on {accelerator.device}), mixed precision "
                      f"{precision.mode}, examples {examples}, skipped {skipped or 'none'}, "
                      f"{parts['total_steps']} steps"
                      + (f", resuming at step {trainer.state.step}" if checkpoint else ""))
    log("start", trainer.state.step, task=args.task, data=args.data, world_size=accelerator.num_processes,
        mixed_precision=precision.mode, lstm_precision=precision.lstm, examples=examples, skipped=skipped,
        resumed_from=str(checkpoint) if checkpoint else None,
        config={"model": to_dict(model_config), "preprocess": to_dict(preprocess), "train": to_dict(cfg)})

    reason = trainer.fit()
    if reason == "session_steps":
        if trainer.state.last_save_step != trainer.state.step:
            trainer.save_checkpoint()
        accelerator.print(f"train: stopped after session_steps={cfg.session_steps} at step {trainer.state.step}; "
                          "continue with --resume auto (no model written yet)")
    else:
        metrics = {"task": args.task, "data": args.data, "world_size": accelerator.num_processes,
                   "mixed_precision": precision.mode,
                   "lstm_precision": precision.lstm, **trainer.finish(reason), "examples": examples,
                   "skipped": skipped}
        # The release model: written once, by the main process, after every process is done with it.
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(trainer.model)
            save_artifact(run_dir / "model", model, model_config, preprocess, vocabs, metrics)
            accelerator.print(json.dumps({k: metrics[k] for k in ("steps", "stopped", "train_tokens_per_s")} | {
                "dev_accuracy": metrics["dev"].get("accuracy"),
                "test_accuracy": (metrics["test"] or {}).get("accuracy"), "model": str(run_dir / "model")}))
    if accelerator.is_main_process:
        plot_curves(log.path, run_dir / "plots" / "curves.png")
    accelerator.end_training()
    return 0
