"""The training loop of `python -m trainer train` (trainer/runner.py builds what it needs and calls it).

`Trainer.fit` trains the way accelerate's examples do, top-down in one place: for each epoch, for each
batch: forward, backward, optimizer step, log, dev score, checkpoint, and the stop decision, taken by
`Trainer.stop_reason` alone. `Trainer.finish` then scores the best weights on test. Resuming from a
checkpoint (loop state, elastic re-layout) is trainer/resume.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator, skip_first_batches
from accelerate.utils import gather_object
from torch.utils.data import DataLoader

from trainer.adversarial import EmbeddingPerturbation
from trainer.batching import BucketBatchSampler, Schedule, word_drop_probabilities
from trainer.checkpoint import (
    discard,
    list_checkpoints,
    publish,
    remove_stale,
    write_manifest,
    write_rng,
    write_training_state,
)
from trainer.core.atomic import write_error
from trainer.core.config import TrainConfig
from trainer.core.errors import TrainingError
from trainer.core.jsonio import dumps
from trainer.core.preprocess import Vocabs
from trainer.distributed import waiting
from trainer.evaluate import EncodedSplit, score, summary
from trainer.models import word_embedding
from trainer.ngram import fit as fit_ngram
from trainer.plots import end_torn_line
from trainer.progress import StepProgress
from trainer.resume import TrainState


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


def drop_words(words: torch.Tensor, prob: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """`words` with each id turned into its unknown form `unknown[id]` (`<unk>` or its lexicon class) at its
    chance `prob[id]` (word dropout, TrainConfig.word_dropout).
    The draw is from the global torch RNG, as dropout's, which checkpoints save and restore, so a resumed run
    draws the same masks as an uninterrupted one."""
    drop = torch.rand(words.shape, device=words.device) < prob[words]
    return torch.where(drop, unknown[words], words)


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class RunLog:
    """RUN_DIR/logs/metrics.jsonl (one JSON object per event) and the tracker's scalars; main process only."""

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
        line = dumps({"event": event, "step": step, "time": round(time.time(), 3), **values}, nan_as_null=True)
        try:  # a non-finite loss or gradient norm is a fact to record: null
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            raise write_error(self.path, exc) from None
        prefix = values.get("split", event)
        scalars = {f"{prefix}/{k}": v for k, v in values.items() if type(v) in (int, float)}
        if scalars:
            self.accelerator.log(scalars, step=step)


@dataclass
class Parts:
    """Everything `build` makes: model, optimizer and loaders are prepared by the Accelerator."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    schedule: Schedule  # the scheduler's LR factor; its `total` is the steps the run plans to take
    train_loader: DataLoader
    sampler: BucketBatchSampler  # the train loader's; `start_epoch` picks the batch order
    eval_loaders: dict[str, DataLoader]  # dev, and test where the data has it
    labels: list[str]
    epoch_batches: int  # per-process batches in a whole epoch
    vocabs: Vocabs
    data: dict[str, EncodedSplit]  # every non-empty split, encoded


class Trainer:
    def __init__(
        self,
        accelerator: Accelerator,
        parts: Parts,
        cfg: TrainConfig,
        task: str,
        run_dir: Path,
        identity: dict[str, Any],
        log: RunLog,
    ) -> None:
        self.accelerator, self.parts, self.cfg, self.task, self.run_dir, self.identity, self.log = (
            accelerator,
            parts,
            cfg,
            task,
            run_dir,
            identity,
            log,
        )
        self.model, self.optimizer, self.scheduler = parts.model, parts.optimizer, parts.scheduler
        self.input_names = accelerator.unwrap_model(self.model).input_names
        self.state = TrainState(global_batch=cfg.batch_size * accelerator.num_processes)
        self.best: dict[str, torch.Tensor] | None = None  # CPU copy of the best weights, on every process
        self.window = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss sum, count, tokens
        self.window_seconds = 0.0
        self.grad_norm = torch.zeros(())
        self.drop_prob = self.unknown_ids = None  # (V,) word dropout's chance per word id, and what it becomes
        if cfg.word_dropout > 0:
            unknown = parts.vocabs.unknown_ids
            prob = word_drop_probabilities(
                [item.words for item in parts.data["train"].items], unknown, cfg.word_dropout
            )
            self.drop_prob = torch.from_numpy(prob).to(accelerator.device)
            self.unknown_ids = torch.from_numpy(unknown).to(accelerator.device)
        self.perturbation = None  # adversarial training's hook on the word embeddings; None when off
        if cfg.adversarial > 0:
            embedding = word_embedding(accelerator.unwrap_model(self.model))
            self.perturbation = EmbeddingPerturbation(embedding, cfg.adversarial)

    def fit(self) -> str:
        """Train until a stop condition holds; return which."""
        acc, cfg, state, parts = self.accelerator, self.cfg, self.state, self.parts
        session_start = state.step
        bar = StepProgress(
            "train", parts.schedule.total, session_start, every=cfg.progress_every, quiet=not acc.is_main_process
        )
        try:
            reason = self.stop_reason(session_start)  # a resumed run may have nothing left to do
            while reason is None:  # one epoch
                parts.sampler.start_epoch(state.epoch, state.earlier_layouts)
                loader, epoch_batches = parts.train_loader, len(parts.train_loader)
                if state.batches_in_epoch:  # resumed mid-epoch: the same batch order, minus what was trained on
                    loader = skip_first_batches(loader, state.batches_in_epoch)
                clock = time.perf_counter()
                for batch in loader:
                    with acc.accumulate(self.model), waiting(f"training step {state.step + 1}"):
                        total, count = self.train_batch(batch)
                        if acc.sync_gradients:  # the last batch of an accumulation
                            self.optimizer_step()
                    self.window += torch.stack(
                        [total.detach().double(), count.double(), batch["lengths"].sum().double()]
                    )
                    state.batches_in_epoch += 1
                    state.train_seconds += time.perf_counter() - clock
                    if acc.sync_gradients:
                        epoch_end = state.batches_in_epoch == epoch_batches
                        if epoch_end:
                            state.epoch, state.batches_in_epoch, state.earlier_layouts = state.epoch + 1, 0, []
                        loss = tokens_per_s = None
                        if state.step % cfg.log_every == 0:
                            with waiting(f"the log of step {state.step}"):
                                loss, tokens_per_s = self.flush_window()
                            self.log(
                                "train",
                                state.step,
                                epoch=state.epoch,
                                loss=loss,
                                lr=self.scheduler.get_last_lr()[0],
                                grad_norm=float(self.grad_norm),
                                tokens_per_s=tokens_per_s,
                            )
                        bar.step(state.step, loss, tokens_per_s)
                        if (cfg.eval_every and state.step % cfg.eval_every == 0) or (not cfg.eval_every and epoch_end):
                            self.evaluate_dev()
                        if (cfg.save_every and state.step % cfg.save_every == 0) or epoch_end:
                            self.save_checkpoint()
                        if (reason := self.stop_reason(session_start)) is not None:
                            break
                    clock = time.perf_counter()
        finally:
            bar.close()
        return reason

    def train_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward on one batch (twice with adversarial training); its clean loss sum and count."""
        acc = self.accelerator
        words = batch["words"]  # word dropout: training only, evaluation never passes here
        words = words if self.drop_prob is None else drop_words(words, self.drop_prob, self.unknown_ids)
        inputs = [words if n == "words" else batch[n] for n in self.input_names]
        total, count = loss_sum(self.model(*inputs), batch, self.task)
        # Normalised by the count over all processes (DDP then averages gradients), so a step's
        # loss is the mean over the global batch however the tokens fall across processes.
        share = count
        if acc.num_processes > 1:
            share = acc.reduce(count.double(), "sum") / acc.num_processes
        if self.perturbation is None:
            acc.backward(total / share)
            return total, count
        with acc.no_sync(self.model):  # gradients are exchanged once, after the adversarial pass
            acc.backward(total / share)
        with self.perturbation.adversarial():
            adversarial, _ = loss_sum(self.model(*inputs), batch, self.task)
            acc.backward(adversarial / share)
        return total, count

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

    def optimizer_step(self) -> None:
        """Clip, then step, or skip a step whose gradients are not finite (too many in a row is an error)."""
        state, cfg = self.state, self.cfg
        self.grad_norm = self.accelerator.clip_grad_norm_(
            self.model.parameters(), cfg.clip_grad_norm if cfg.clip_grad_norm > 0 else float("inf")
        )
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
                    f"{self.run_dir / 'checkpoints'} is intact"
                )
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1

    def flush_window(self) -> tuple[float, float]:
        """Mean loss and tokens/s since the last call, summed over processes (all call it at the same steps)."""
        loss_sum_, count, tokens = self.accelerator.reduce(self.window.clone(), "sum").tolist()
        self.window.zero_()
        seconds, self.window_seconds = self.state.train_seconds - self.window_seconds, self.state.train_seconds
        self.state.tokens += int(tokens)
        return loss_sum_ / max(count, 1.0), tokens / seconds if seconds > 0 else 0.0

    def evaluate_dev(self) -> None:
        state = self.state
        with waiting(f"the dev evaluation at step {state.step}"):
            metrics = summary(
                score(self.model, self.parts.eval_loaders["dev"], self.accelerator, self.task, self.parts.vocabs)
            )
            improved = metrics["accuracy"] > state.best_metric
            if improved:
                weights = self.accelerator.unwrap_model(self.model).state_dict()
                self.best = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()}
        state.last_eval_step = state.step
        if improved:
            state.best_metric, state.best_step, state.best_dev = metrics["accuracy"], state.step, metrics
            state.evals_without_improvement = 0
        else:
            state.evals_without_improvement += 1
        self.log("eval", state.step, split="dev", improved=improved, **metrics)

    def save_checkpoint(self) -> None:
        """Every file into a hidden temporary folder, the manifest last, then renamed into place."""
        with waiting(f"checkpoint step-{self.state.step}"):
            self._save_checkpoint()

    def _save_checkpoint(self) -> None:
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
                write_training_state(
                    tmp, acc.unwrap_model(self.model), self.optimizer, self.scheduler, acc.scaler, self.best
                )
            acc.wait_for_everyone()  # every process's RNG file is in before the manifest is taken
            if acc.is_main_process:
                write_manifest(
                    tmp,
                    {
                        "trainer": dataclasses.asdict(state),
                        **self.identity,
                        "world_size": acc.num_processes,
                        "accelerator_step": acc.step,
                    },
                )
                publish(tmp, final)
                for old in list_checkpoints(root)[: -self.cfg.keep_checkpoints]:
                    discard(old)
        except BaseException:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        acc.wait_for_everyone()
        self.log("checkpoint", state.step, path=str(final))

    def finish(self, reason: str) -> dict[str, Any]:
        """Last dev score and checkpoint, then the best weights (left in the model), with sentiment's n-gram head fitted
        beside them where the model has one, and their test metrics."""
        state = self.state
        if state.last_eval_step != state.step:
            self.evaluate_dev()
        if state.last_save_step != state.step:
            self.save_checkpoint()
        model = self.accelerator.unwrap_model(self.model)
        checksums = gather_object([weights_sha256(model)])
        model.load_state_dict(self.best)
        dev, ngram = state.best_dev, None
        if getattr(model, "ngram", None) is not None:  # sentiment's n-gram head, fitted beside the trained LSTM
            train = self.parts.data["train"]
            ngram = fit_ngram(model.ngram, [item.words for item in train.items], train.targets)
            dev = summary(
                score(self.model, self.parts.eval_loaders["dev"], self.accelerator, self.task, self.parts.vocabs)
            )
            ngram |= {"lstm_dev_accuracy": state.best_dev["accuracy"], "dev_accuracy": dev["accuracy"]}
            self.log("ngram", state.step, **ngram)
        test = None
        if "test" in self.parts.eval_loaders:
            test = score(self.model, self.parts.eval_loaders["test"], self.accelerator, self.task, self.parts.vocabs)
            test = {k: v for k, v in test.items() if k != "confusion"}
            self.log("eval", state.step, split="test", **summary(test))
        self.log("end", state.step, reason=reason, weights_sha256_per_process=checksums)
        return {
            "steps": state.step,
            "epochs_completed": state.epoch,
            "stopped": reason,
            "best_step": state.best_step,
            "train_tokens": state.tokens,
            "train_seconds": round(state.train_seconds, 2),
            "train_tokens_per_s": round(state.tokens / max(state.train_seconds, 1e-9), 1),
            "skipped_steps": state.skipped_steps,
            "dev": dev,
            "test": test,
        } | ({} if ngram is None else {"ngram": ngram})
