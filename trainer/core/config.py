"""Typed configuration: model shape, preprocessing and training schedule, each a dataclass.

Overrides come from a JSON file (`--config`) and from `--key value` pairs; both are checked
against the dataclass fields, so a typo or a wrong type is an error that lists the known keys.
Every field declares its allowed values (`metadata`), and `check_config` checks them all once the
overrides are applied and whenever a config is read back from an artifact, so a bad value is a
one-line ConfigError naming the key, never a torch error later. Every float must be finite.
No torch here: serving reads the same preprocessing config.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, get_type_hints

from trainer.core.errors import ConfigError
from trainer.core.jsonio import SYNTAX, JSONValueError, loads
from trainer.core.tasks import KINDS

TASKS = tuple(KINDS)  # trainer/core/tasks.py describes each
POOLINGS = ("last", "max")
SCHEDULES = ("linear", "cosine", "constant")  # the LR after warmup (trainer/batching.py lr_factor)
MIXED_PRECISION = ("", "no", "fp16", "bf16")
LEXICONS = ("", "wordnet")  # PreprocessConfig.lexicon: "" or a data set `python -m trainer fetch` knows
REPORT_TO = ("tensorboard", "mlflow", "wandb", "none")  # accelerate trackers for the metrics; none: metrics.jsonl only
INT_MAX = 2**31 - 1  # every int field's ceiling unless it declares one: larger values overflow numpy/torch's C ints
# Ceilings far above anything that trains on one machine, so that a typo or a crafted config.json cannot
# overflow torch's size arithmetic or spin up a million modules before a shape check could object.
DIM_MAX, LAYERS_MAX, THREADS_MAX = 65_536, 64, 1024
SHOWN = 60  # characters of a bad value or key quoted in a message
# Training keys that measured no gain and were removed (CHANGELOG.md 0.x "Removed"): a config file or command
# line that still sets one is a one-line error naming it, never silently a different run.
REMOVED_KEYS = {
    "average": "the moving average of the weights measured no gain (Rotten Tomatoes dev 78.23% with and without)",
    "init_embeddings": "`trainer pretrain` was removed: LM pretraining measured no clear gain (+0.4 dev, in the noise)",
}


def rule(default: Any, **limits: Any) -> Any:
    """A field whose value must satisfy `limits`: min/gt (lower bound), max/lt (upper bound), choices."""
    return field(default=default, metadata=limits)


@dataclass
class PreprocessConfig:
    lowercase: bool = True  # word ids only; the character encoder sees the original case
    digits_to_zero: bool = True
    min_count: int = rule(2, min=1)  # training-split word count below which a word is <unk>
    max_tokens: int = rule(512, min=1)  # longer inputs are truncated to this many tokens (and reported)
    max_word_len: int = rule(30, min=1)  # characters past this are not fed to the character encoder
    # Unknown words become the class of parts of speech this lexicon lists them under (trainer/core/lexicon.py);
    # "": all are <unk>. The train CLI's tagger schedule uses "wordnet" (trainer.train.TASK_PREPROCESS).
    lexicon: str = rule("", choices=LEXICONS)


@dataclass
class TaggerConfig:
    task: ClassVar[str] = "tagger"
    char_encoder: bool = True  # False gives the word-only LSTMTagger
    word_dim: int = rule(100, min=1, max=DIM_MAX)
    word_hidden: int = rule(128, min=1, max=DIM_MAX)  # per direction
    char_dim: int = rule(30, min=1, max=DIM_MAX)
    char_hidden: int = rule(50, min=1, max=DIM_MAX)  # per direction
    layers: int = rule(1, min=1, max=LAYERS_MAX)
    bidirectional: bool = True
    dropout: float = rule(0.3, min=0, lt=1)
    atol: float = rule(1e-4, gt=0)  # torch/onnxruntime parity tolerance used by export validation


@dataclass
class SentimentConfig:
    task: ClassVar[str] = "sentiment"
    embed_dim: int = rule(128, min=1, max=DIM_MAX)
    hidden: int = rule(128, min=1, max=DIM_MAX)  # per direction
    layers: int = rule(2, min=1, max=LAYERS_MAX)
    # Chosen by dev accuracy on rotten-tomatoes (docs/BENCHMARKS.md section 2): a BiLSTM with max pooling
    # beat the final state of a unidirectional LSTM.
    bidirectional: bool = True
    # "max": max over real positions of every state; "last": the final state
    pooling: str = rule("max", choices=POOLINGS)
    dropout: float = rule(0.5, min=0, lt=1)
    # Rows for hashed word bigrams in the n-gram head beside the LSTM (trainer/ngram.py); 0: no head.
    # The train CLI's sentiment schedule uses 2**18 (trainer.train.TASK_MODEL).
    ngram_buckets: int = rule(0, min=0, max=1 << 24)
    atol: float = rule(1e-4, gt=0)


ModelConfig = TaggerConfig | SentimentConfig
MODEL_CONFIGS: dict[str, type] = {"tagger": TaggerConfig, "sentiment": SentimentConfig}


@dataclass
class TrainConfig:
    epochs: int = rule(0, min=0)  # 0: the task's default (trainer.train.TASK_EPOCHS: tagger 6, sentiment 8)
    max_steps: int = rule(0, min=0)  # 0: no limit beyond epochs
    batch_size: int = rule(32, min=1)  # sentences per process per step
    grad_accum: int = rule(1, min=1)
    lr: float = rule(2e-3, gt=0)  # the sentiment schedule's is 4e-3 (trainer.train.TASK_TRAIN)
    weight_decay: float = rule(0.0, min=0)
    warmup_steps: int = rule(100, min=0)
    clip_grad_norm: float = rule(5.0, min=0)  # 0: no clipping
    seed: int = rule(1234, min=0)
    eval_every: int = rule(0, min=0)  # 0: evaluate at each epoch end
    save_every: int = rule(500, min=0)
    keep_checkpoints: int = rule(2, min=1)
    patience: int = rule(3, min=0)  # evaluations without dev improvement before stopping; 0: never stop early
    mixed_precision: str = rule("", choices=MIXED_PRECISION)  # "" = accelerate's default / ACCELERATE_MIXED_PRECISION
    max_bad_steps: int = rule(5, min=1)  # consecutive non-finite losses before training stops
    log_every: int = rule(20, min=1)
    schedule: str = rule("linear", choices=SCHEDULES)  # after warmup: "linear" or "cosine" decay to 0, or "constant"
    eval_batch_size: int = rule(128, min=1)
    session_steps: int = rule(
        0, min=0
    )  # >0: end this session after this many steps (checkpoint, no model); --resume auto goes on
    threads: int = rule(0, min=0, max=THREADS_MAX)  # CPU threads per process (torch.set_num_threads); 0: default
    # Word dropout (Kiperwasser & Goldberg 2016): in training only, a word id becomes <unk> with probability
    # alpha / (alpha + its train count), so the model (the tagger's character BiLSTM) learns to read
    # unknown words from what rare ones look like. 0: off; the tagger's schedule uses 1 (trainer.train.TASK_TRAIN).
    word_dropout: float = rule(0.0, min=0)
    # DropConnect on every LSTM's hidden-to-hidden weights, in training (the sentiment schedule's: 0.3)
    weight_drop: float = rule(0.0, min=0, lt=1)
    # Adversarial training (Miyato et al. 2017, trainer/adversarial.py): each step also trains on the batch with
    # every sentence's word embeddings moved by this L2 norm along its loss gradient; two passes a step. 0: off;
    # the sentiment schedule's: 2.
    adversarial: float = rule(0.0, min=0)
    report_to: str = rule(
        "tensorboard", choices=REPORT_TO
    )  # the tracker that also gets the metrics (docs/TRAINING.md "Trackers")
    # Seconds any rank waits in a collective (or at the start) before it ends with one line naming itself and what
    # it waited for, so that torchrun can restart the job (trainer/distributed.py); gloo's own default is 30 minutes.
    dist_timeout: float = rule(600.0, gt=0, max=86_400)
    # Off a terminal (stderr to a file or pipe), seconds between plain progress lines; on a terminal, a bar.
    progress_every: float = rule(30.0, min=0, max=86_400)


def show(value: Any) -> str:
    """repr of a value for a one-line message, cut short: it may come from a file the user did not write."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def _allowed(limits: dict[str, Any]) -> str:
    """The declared bounds as text: 'in [1, 64]', 'in [0, 1)', '>= 0' or '> 0'."""
    low = ("[", limits["min"]) if "min" in limits else ("(", limits["gt"]) if "gt" in limits else None
    high = (limits["max"], "]") if "max" in limits else (limits["lt"], ")") if "lt" in limits else None
    if low and high:
        return f"in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    return f"{'<=' if high[1] == ']' else '<'} {high[0]}"


def check_value(name: str, value: Any, kind: Any, limits: dict[str, Any]) -> None:
    """One value against its type and limits; `name` says where it came from (config key or flag)."""
    if kind is bool or kind is str:
        ok = isinstance(value, kind)
    else:
        ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(f"{name} expects {kind.__name__}; got {show(value)}")
    if "choices" in limits and value not in limits["choices"]:
        choices = ", ".join(c if c else "''" for c in limits["choices"])
        raise ConfigError(f"{name} must be one of {choices}; got {show(value)}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {show(value)}")
    if kind is int and not {"max", "lt"} & limits.keys():
        limits = {**limits, "max": INT_MAX}
    low_ok = value >= limits["min"] if "min" in limits else value > limits["gt"] if "gt" in limits else True
    high_ok = value <= limits["max"] if "max" in limits else value < limits["lt"] if "lt" in limits else True
    if not (low_ok and high_ok):
        raise ConfigError(f"{name} must be {_allowed(limits)}; got {show(value)}")


def check_config(*configs: Any, source: str = "") -> None:
    """Every field of every config against its type and declared limits (see `rule`)."""
    prefix = f"{source}: " if source else ""
    for config in configs:
        kinds = field_types(type(config))
        for f in dataclasses.fields(config):
            check_value(f"{prefix}config key {f.name!r}", getattr(config, f.name), kinds[f.name], dict(f.metadata))


def check_out_path(path: Path, flag: str, *, directory: bool) -> None:
    """Fail before any work if `path` cannot become the directory (`directory`) or file an option names:
    the nearest existing one of it and its ancestors must be a writable directory."""
    if not directory and path.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory; expected a file path")
    existing = path.absolute() if directory else path.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        what = "exists and is not a directory" if existing == path.absolute() else f"{existing} is not a directory"
        raise ConfigError(f"{flag} {path}: {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable")


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """Check or convert one value to its field's type; strings come from the command line."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer from a JSON file, beyond a double's range
                raise ConfigError(f"config key {name!r} must be a finite number; got {show(value)}") from None
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"config key {name!r} expects {kind.__name__}; got {show(value)}")


def field_types(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(configs: list[Any], overrides: dict[str, Any], *, source: str) -> None:
    """Set each key on the one config that has it; reject keys no config knows."""
    known = {name: (cfg, kind) for cfg in configs for name, kind in field_types(type(cfg)).items()}
    for raw_key, value in overrides.items():
        key = raw_key.replace("-", "_")
        if key in REMOVED_KEYS and key not in known:
            raise ConfigError(f"{source}: config key {key!r} was removed: {REMOVED_KEYS[key]}; see CHANGELOG.md")
        if key not in known:
            raise ConfigError(f"{source}: unknown config key {show(raw_key)}; known keys: {', '.join(sorted(known))}")
        cfg, kind = known[key]
        try:
            setattr(cfg, key, _coerce(key, value, kind))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def parse_key_values(args: list[str]) -> dict[str, str]:
    """`--key value` pairs from the command line, in order."""
    out: dict[str, str] = {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--"):
            raise ConfigError(f"expected --key value, got {show(arg)}")
        value = next(it, None)
        if value is None:
            raise ConfigError(f"option {arg} needs a value")
        out[arg[2:]] = value
    return out


def read_json_config(path: Path) -> dict[str, Any]:
    try:
        data = loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path}: is a directory; expected a JSON file") from None
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except JSONValueError as exc:
        if exc.reason in SYNTAX:
            raise ConfigError(f"--config {path}: not valid JSON ({exc})") from None
        raise ConfigError(f"--config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of key: value")
    return data


def _from_dict(config: Any, data: Any, source: str) -> Any:
    """`config` with the keys of a JSON object applied, then checked whole."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object of config keys; got {type(data).__name__}")
    apply_overrides([config], data, source=source)
    check_config(config, source=source)
    return config


def model_config_from_dict(task: Any, data: Any, *, source: str) -> ModelConfig:
    if not isinstance(task, str) or task not in MODEL_CONFIGS:
        raise ConfigError(f"{source}: task must be one of {', '.join(TASKS)}; got {show(task)}")
    return _from_dict(MODEL_CONFIGS[task](), data, source)


def preprocess_config_from_dict(data: Any, *, source: str) -> PreprocessConfig:
    return _from_dict(PreprocessConfig(), data, source)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
