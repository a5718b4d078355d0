"""Typed configuration: model shape, preprocessing and training schedule, each a dataclass.

Overrides come from a JSON file (`--config`) and from `--key value` pairs; both are checked
against the dataclass fields, so a typo or a wrong type is an error that lists the known keys.
No torch here: serving reads the same preprocessing config.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, get_type_hints

from trainer.errors import ConfigError

TASKS = ("tagger", "sentiment")


@dataclass
class PreprocessConfig:
    lowercase: bool = True  # word ids only; the character encoder sees the original case
    digits_to_zero: bool = True
    min_count: int = 2  # training-split word count below which a word is <unk>
    max_tokens: int = 512  # longer inputs are truncated to this many tokens (and reported)
    max_word_len: int = 30  # characters past this are not fed to the character encoder


@dataclass
class TaggerConfig:
    task: ClassVar[str] = "tagger"
    char_encoder: bool = True  # False gives the word-only LSTMTagger
    word_dim: int = 100
    word_hidden: int = 128  # per direction
    char_dim: int = 30
    char_hidden: int = 50  # per direction
    layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.3
    atol: float = 1e-4  # torch/onnxruntime parity tolerance used by export validation


@dataclass
class SentimentConfig:
    task: ClassVar[str] = "sentiment"
    embed_dim: int = 128
    hidden: int = 128  # per direction
    layers: int = 2
    # Chosen by dev accuracy on rotten-tomatoes (docs/BENCHMARKS.md): a BiLSTM with max pooling
    # beat the final state of a unidirectional LSTM, and N-gram LM pretrained embeddings did not help.
    bidirectional: bool = True
    pooling: str = "max"  # "max": max over real positions of every state; "last": the final state
    dropout: float = 0.5
    atol: float = 1e-4


ModelConfig = TaggerConfig | SentimentConfig
MODEL_CONFIGS: dict[str, type] = {"tagger": TaggerConfig, "sentiment": SentimentConfig}


@dataclass
class TrainConfig:
    epochs: int = 0  # 0: the task's default (trainer.train.TASK_EPOCHS: tagger 4, sentiment 10)
    max_steps: int = 0  # 0: no limit beyond epochs
    batch_size: int = 32  # sentences per process per step
    grad_accum: int = 1
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    clip_grad_norm: float = 5.0
    seed: int = 1234
    eval_every: int = 0  # 0: evaluate at each epoch end
    save_every: int = 500
    keep_checkpoints: int = 2
    patience: int = 3  # evaluations without dev improvement before stopping
    mixed_precision: str = ""  # "" = accelerate's default / ACCELERATE_MIXED_PRECISION
    max_bad_steps: int = 5  # consecutive non-finite losses before training stops
    log_every: int = 20
    schedule: str = "linear"  # after warmup: "linear" or "cosine" decay to 0, or "constant"
    eval_batch_size: int = 128
    session_steps: int = 0  # >0: end this session after this many steps (checkpoint, no model); --resume auto goes on
    threads: int = 0  # CPU threads per process (torch.set_num_threads); 0: torch's default
    init_embeddings: str = ""  # RUN_DIR/embeddings from `python -m trainer pretrain`: initial word vectors


@dataclass
class PretrainConfig:
    """The N-gram language model of `python -m trainer pretrain` (embeddings from next-word prediction)."""

    embed_dim: int = 128  # must equal the model's embed_dim (sentiment) or word_dim (tagger) to initialize it
    context: int = 2  # previous words the model sees
    hidden: int = 256
    output_words: int = 8000  # softmax over the most frequent words; rarer targets are <unk>
    min_count: int = 3  # words below this count get no vector of their own
    epochs: int = 2
    batch_size: int = 512
    lr: float = 2e-3
    seed: int = 1234
    threads: int = 0  # CPU threads per process; 0: torch's default
    max_steps: int = 0  # 0: no limit beyond epochs


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
            return float(value)
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
    raise ConfigError(f"config key {name!r} expects {kind.__name__}; got {value!r}")


def field_types(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(configs: list[Any], overrides: dict[str, Any], *, source: str) -> None:
    """Set each key on the one config that has it; reject keys no config knows."""
    known = {name: (cfg, kind) for cfg in configs for name, kind in field_types(type(cfg)).items()}
    for raw_key, value in overrides.items():
        key = raw_key.replace("-", "_")
        if key not in known:
            raise ConfigError(f"{source}: unknown config key {raw_key!r}; known keys: {', '.join(sorted(known))}")
        cfg, kind = known[key]
        setattr(cfg, key, _coerce(key, value, kind))


def parse_key_values(args: list[str]) -> dict[str, str]:
    """`--key value` pairs from the command line, in order."""
    out: dict[str, str] = {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--"):
            raise ConfigError(f"expected --key value, got {arg!r}")
        value = next(it, None)
        if value is None:
            raise ConfigError(f"option {arg} needs a value")
        out[arg[2:]] = value
    return out


def read_json_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of key: value")
    return data


def model_config_from_dict(task: str, data: dict[str, Any], *, source: str) -> ModelConfig:
    if task not in MODEL_CONFIGS:
        raise ConfigError(f"{source}: task must be one of {', '.join(TASKS)}; got {task!r}")
    config = MODEL_CONFIGS[task]()
    apply_overrides([config], data, source=source)
    return config


def preprocess_config_from_dict(data: dict[str, Any], *, source: str) -> PreprocessConfig:
    config = PreprocessConfig()
    apply_overrides([config], data, source=source)
    return config


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
