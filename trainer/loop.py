"""The training loop of `python -m trainer train` (trainer/runner.py builds what it needs and calls it).

`Trainer.fit` trains the way accelerate's examples do, top-down in one place: for each epoch, for each
batch: forward, backward, optimizer step, log, dev score, checkpoint, and the stop decision, taken by
`Trainer.stop_reason` alone; each save is one `checkpoint.save` call, which owns the write protocol.
`Trainer.finish` then runs the task's own last steps on the best weights (trainer/tasks.py) and scores
test. The loop's counters are `TrainState`; resuming (trainer/resume.py) returns a `Resumed` that
`Trainer.apply` takes over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, skip_first_batches
from accelerate.utils import gather_object
from torch.utils.data import DataLoader

from trainer import checkpoint
from trainer.adversarial import EmbeddingPerturbation
from trainer.batching import BucketBatchSampler, Schedule, word_drop_probabilities
from trainer.core.config import TrainConfig
from trainer.core.errors import TrainingError
from trainer.core.preprocess import Vocabs
from trainer.distributed import waiting
from trainer.evaluate import score
from trainer.eventlog import RunLog
from trainer.inputs import EncodedSplit
from trainer.metrics import summary
from trainer.models import word_embedding
from trainer.progress import StepProgress
from trainer.tasks import task_side


@dataclass
class TrainState:
    """The loop's counters: what a resumed run needs besides model, optimizer, scheduler and RNG (all in a
    checkpoint's trainer_state.json, trainer/checkpoint.py)."""

    step: int = 0  # optimizer steps
    epoch: int = 0
    batches_in_epoch: int = 0  # per-process batches of `epoch` already trained on, in the current layout
    global_batch: int = 0  # the layout's examples per global batch: batch_size x processes
    # This epoch's layouts before a resume changed it: [global batch, processes, batches trained on] each.
    earlier_layouts: list = field(default_factory=list)
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


@dataclass
class Resumed:
    """What trainer/resume.py restored from a checkpoint besides the weights, optimizer and RNG it loaded in
    place; `Trainer.apply` takes it over."""

    state: TrainState
    best: dict[str, torch.Tensor] | None
    planned_steps: int  # the schedule's total from where the checkpoint left off
    accelerator_step: int  # gradient accumulation's batch counter


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
        self.accelerator, self.parts, self.cfg, self.run_dir, self.identity, self.log = (
            accelerator,
            parts,
            cfg,
            run_dir,
            identity,
            log,
        )
        self.side = task_side(task)  # the task's loss, scores and last steps (trainer/tasks.py)
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

    def apply(self, resumed: Resumed) -> None:
        """Continue from a checkpoint (trainer/resume.py has restored weights, optimizer and RNG in place)."""
        self.state, self.best = resumed.state, resumed.best
        self.accelerator.step = resumed.accelerator_step
        self.parts.schedule.total = resumed.planned_steps
        self.window_seconds = resumed.state.train_seconds

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
        total, count = self.side.loss_sum(self.model(*inputs), batch)
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
            adversarial, _ = self.side.loss_sum(self.model(*inputs), batch)
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
            metrics = summary(self.score("dev"))
            improved = metrics[self.side.kind.select_by] > state.best_metric
            if improved:
                weights = self.accelerator.unwrap_model(self.model).state_dict()
                self.best = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()}
        state.last_eval_step = state.step
        if improved:
            state.best_metric, state.best_step, state.best_dev = metrics[self.side.kind.select_by], state.step, metrics
            state.evals_without_improvement = 0
        else:
            state.evals_without_improvement += 1
        self.log("eval", state.step, split="dev", improved=improved, **metrics)

    def score(self, split: str) -> dict[str, Any]:
        return score(self.model, self.parts.eval_loaders[split], self.accelerator, self.side, self.parts.vocabs)

    def save_checkpoint(self) -> None:
        """RUN_DIR/checkpoints/step-N, written whole or not at all (`checkpoint.save`)."""
        acc, state = self.accelerator, self.state
        with waiting(f"checkpoint step-{state.step}"):
            self.flush_window()
            state.last_save_step = state.step
            saved = {"trainer": dataclasses.asdict(state), **self.identity, "world_size": acc.num_processes}
            path = checkpoint.save(
                self.run_dir / "checkpoints",
                state.step,
                acc,
                acc.unwrap_model(self.model),
                self.optimizer,
                self.scheduler,
                self.best,
                saved | {"accelerator_step": acc.step},
                self.cfg.keep_checkpoints,
            )
            self.log("checkpoint", state.step, path=str(path))

    def finish(self, reason: str) -> dict[str, Any]:
        """Last dev score and checkpoint, then the best weights (left in the model) after the task's own last
        steps, and their test metrics."""
        state = self.state
        if state.last_eval_step != state.step:
            self.evaluate_dev()
        if state.last_save_step != state.step:
            self.save_checkpoint()
        model = self.accelerator.unwrap_model(self.model)
        checksums = gather_object([weights_sha256(model)])
        model.load_state_dict(self.best)
        # The task's own steps on the best weights (sentiment: its n-gram head), and dev scored again if they ran.
        dev, extra = self.side.finish(
            model, self.parts.data["train"], state.best_dev, lambda: summary(self.score("dev"))
        )
        for name, values in extra.items():
            self.log(name, state.step, **values)
        test = None
        if "test" in self.parts.eval_loaders:
            test = {k: v for k, v in self.score("test").items() if k != "confusion"}
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
        } | extra
