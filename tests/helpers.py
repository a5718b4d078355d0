"""Plain helpers shared by several test modules: running the commands (`run_main`: `python -m ...` as a
child of a fork server that has done the imports, the way most tests do; `trainer`: a real `python -m`
subprocess), reading their errors, building tiny artifacts. Fixtures live in conftest.py; test modules
import from here and from servers.py (the `serve http` servers), never from each other.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import string
import subprocess
import sys
import tempfile
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from import_graph import module_files

from trainer.core.config import SentimentConfig, TaggerConfig

REPO = Path(__file__).resolve().parents[1]

# Inputs where the Treebank rules, or `regex` and `re`, are easiest to get wrong: every quote kind,
# clitics and MacIntyre contractions in any case, final periods before closing brackets and space
# runs, Unicode case folding (Kelvin sign, long s, dotted I), combining marks, odd whitespace.
TREEBANK_EDGE_CASES = [
    "\"Hello,\" she said. 'Don't!' (Really?) [yes] {no} <maybe>",
    "``quoted'' and ‘single’ “double” «chevrons» „low“ `tick`",
    "I CAN'T, we'll, they're, I'd, you've, she's, 'tis, 'TWAS, cannot, CANNOT, gonna, Wanna go",
    "d'ye gimme lemme gotta more'n whaddya whatcha",
    "Ends with a period.)\"'  ",
    "Ellipsis... and.. dots . . .",
    "U.S.A. e.g. etc.",
    "3,000 12:30 a:b, c,d ; @user #tag $5 50% R&D",
    "em—dash en–dash figure‒dash ― bar -- double",
    "KELVIN: Kannot ſtop İstanbul CAN\u0130T",
    "cafe\u0301's e\u0301'xyz \u0301'a",
    "tab\there\x1cfs\x85nel\u2028ls",
    "'",
    "''",
    '"',
    ".",
    "..",
    "'s",
    "n't",
    "' '",
    "",
    "   ",
    "a.'",
    "(.)",
    "*bold* *",
    "x?!?",
    "'hello' 'world'",
]


def env() -> dict[str, str]:
    """The environment for a subprocess that must import this checkout's packages."""
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def one_line_error(result: subprocess.CompletedProcess, *fragments: str, status: int = 2) -> str:
    """The single `error: ...` line of a failed run (exit 2 for bad input, 1 for a failed --verify),
    which holds every one of `fragments`."""
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    assert result.returncode == status, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# ---- the command lines, each a child process --------------------------------------------------

# What `python -m trainer|export|serve` imports, imported once into a fork server (multiprocessing's
# "forkserver": a fresh interpreter that never runs a model, so forking it is safe with torch's OpenMP).
# Each command is then a child forked from it: the real `main(argv)` and `run_cli` in a process of its own,
# with its own fds, environment, signals and exit status, without 1-3 s of starting Python and importing.
# What is read while importing (OMP_NUM_THREADS, by torch) is read once, from this process's environment.
PRELOAD = ["helpers", "torch", "onnx", "onnxruntime"] + [
    name
    for name in module_files(("trainer", "export", "serve"))
    if name != "serve.ray.data"  # imports Ray
]
FORKSERVER = multiprocessing.get_context("forkserver")
FORKSERVER.set_forkserver_preload(PRELOAD)


def _command(
    module: str, argv: list[str], streams: list[str], environment: dict[str, str], cwd: str, patches: dict[str, Any]
) -> None:
    """The child: `patches` applied, fds 0-2 on the files `streams`, then `python -m MODULE ARGV`'s `main`;
    its return value is the exit status (multiprocessing's child exits through SystemExit as Python does)."""
    for name, value in patches.items():  # "package.module.attribute": a fault injected into this child only
        owner, attribute = name.rsplit(".", 1)
        setattr(importlib.import_module(owner), attribute, value)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environment)
    for fd, path in enumerate(streams):
        opened = os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        os.dup2(opened, fd)
        os.close(opened)
    errors = sys.__stdout__.errors if sys.__stdout__ else "strict"
    sys.stdin = open(0, encoding="utf-8", errors=errors, closefd=False)  # noqa: SIM115 (the process's own)
    sys.stdout = open(1, "w", encoding="utf-8", errors=errors, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.argv = [module, *argv]
    main = importlib.import_module(f"{module}.__main__").main
    try:
        sys.exit(main(argv))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def run_main(
    module: str,
    *args: object,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: int = 120,
    text: bool = True,
    patches: dict[str, Any] | None = None,
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` (trainer, export or serve) as a child process forked from the fork server,
    `env` added to this environment, from this directory, `patches` (module attributes, the values
    picklable: module-level functions of a test module) set in the child; what
    `subprocess.run(..., capture_output=True)` returns. What only the interpreter itself does (`python -m`
    through runpy, a torch-free interpreter, the start-up time) is tested with real `python -m` subprocesses."""
    argv = [str(a) for a in args]
    with tempfile.TemporaryDirectory(prefix="command-") as tmp:
        streams = [os.path.join(tmp, name) for name in ("stdin", "stdout", "stderr")]
        for path, content in zip(streams, (input or b"", b"", b"")):
            Path(path).write_bytes(content)
        child = FORKSERVER.Process(
            target=_command, args=(module, argv, streams, {**os.environ, **(env or {})}, os.getcwd(), patches or {})
        )
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            pytest.fail(f"python -m {module} {' '.join(argv)} ran past {timeout} s")
        stdout, stderr = (Path(path).read_bytes() for path in streams[1:])
    if text:
        stdout, stderr = stdout.decode(), stderr.decode()
    return subprocess.CompletedProcess([sys.executable, "-m", module, *argv], child.exitcode, stdout, stderr)


def run_stats(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m trainer stats ARGS` (`run_main`)."""
    return run_main("trainer", "stats", *args, env=env)


# ---- tiny random-weight artifacts (no corpus) -------------------------------------------------

TINY_MAX_TOKENS = 20
TINY_WORDS = ["<pad>", "<unk>"] + (
    "the a cat dog sat on mat . , ! good bad movie film great awful is was not".split()  # noqa: SIM905
)
TINY_CHARS = ["<pad>", "<unk>"] + list(string.ascii_letters + string.digits + ".,'!")
# The tiny tagger's lexicon (trainer/core/lexicon.py) and the classes its vocabulary ends with, so that
# everything downstream of an artifact (export, parity, serving, the Node client) meets unknown words
# that take a class: in LINES, "zyzzyva" <unk:n>, "words" <unk:n+>, "ending" <unk:nv+>.
TINY_LEXICON = {"noun": ["ending", "word", "zyzzyva"], "verb": ["end", "sit"], "adj": ["naive"], "adv": []}
TINY_CLASSES = ["<unk:n+>", "<unk:n>", "<unk:nv+>"]
TINY_CONFIGS = {
    "tagger": TaggerConfig(word_dim=8, word_hidden=6, char_dim=4, char_hidden=3),
    "sentiment": SentimentConfig(embed_dim=8, hidden=6, layers=2, ngram_buckets=32),
}


def random_ngram_head(model: Any) -> None:
    """Non-zero weights for a sentiment model's n-gram head (zeros until fitted), so that exports and
    serving are tested with it doing something."""
    import torch

    if getattr(model, "ngram", None) is not None:
        with torch.no_grad():
            model.ngram.weight.normal_(0.0, 0.1)
            model.ngram.bias.fill_(0.05)


def write_tiny_artifact(path: Path, task: str, seed: int = 0) -> Path:
    """A tiny tagger (word + char) or sentiment model with random weights, saved as RUN_DIR/model."""
    import torch

    from trainer.artifact import save_artifact
    from trainer.core.config import PreprocessConfig
    from trainer.core.lexicon import Lexicon
    from trainer.core.preprocess import Vocab, Vocabs
    from trainer.core.tasks import SENTIMENT_LABELS, UNIVERSAL_TAGS
    from trainer.models import build_model

    torch.manual_seed(seed)
    if task == "tagger":
        labels, lexicon = Vocab.labels(UNIVERSAL_TAGS), Lexicon(TINY_LEXICON, "a tiny test lexicon")
        vocabs = Vocabs(Vocab(TINY_WORDS + TINY_CLASSES), labels, Vocab(TINY_CHARS), lexicon)
    else:
        vocabs = Vocabs(Vocab(TINY_WORDS), Vocab.labels(SENTIMENT_LABELS))
    preprocess = PreprocessConfig(max_tokens=TINY_MAX_TOKENS, lexicon="wordnet" if task == "tagger" else "")
    model = build_model(TINY_CONFIGS[task], vocabs)
    random_ngram_head(model)
    save_artifact(path, model, TINY_CONFIGS[task], preprocess, vocabs, {"task": task})
    return path


# ---- python -m export --------------------------------------------------------------------------

# Artifacts whose vocabularies come from a few hundred real training examples (the `artifacts` fixture).
EXPORT_KINDS = {
    "dual-tagger": ("brown", TaggerConfig(word_dim=12, word_hidden=10, char_dim=8, char_hidden=6)),
    "word-tagger": ("brown", TaggerConfig(char_encoder=False, word_dim=12, word_hidden=10, layers=2)),
    "sentiment": ("rotten-tomatoes", SentimentConfig(embed_dim=12, hidden=10, layers=2)),
    "sentiment-bi-max": (
        "rotten-tomatoes",
        SentimentConfig(embed_dim=12, hidden=10, layers=2, bidirectional=True, pooling="max", ngram_buckets=64),
    ),
}


def write_corpus_artifact(path: Path, kind: str, data_dir: Path) -> Path:
    """A random-weight artifact of one of EXPORT_KINDS, its vocabulary built from 300 real training examples."""
    import torch

    from trainer.artifact import save_artifact
    from trainer.core.config import PreprocessConfig
    from trainer.core.data import open_dataset
    from trainer.core.lexicon import open_lexicon
    from trainer.core.preprocess import build_vocabs, tokenize
    from trainer.core.tasks import SENTIMENT_LABELS, UNIVERSAL_TAGS
    from trainer.models import build_model

    spec, config = EXPORT_KINDS[kind]
    examples = list(islice(open_dataset(spec, data_dir).examples("train"), 300))
    tokens = [list(e.words) if spec == "brown" else tokenize(e.text) for e in examples]
    labels = UNIVERSAL_TAGS if spec == "brown" else SENTIMENT_LABELS
    # The dual tagger classes unknown words as the tagger's schedule does, with the real WordNet lexicon.
    lexicon = "wordnet" if kind == "dual-tagger" else ""
    preprocess = PreprocessConfig(min_count=1, lexicon=lexicon)
    chars = getattr(config, "char_encoder", False)
    vocabs = build_vocabs(tokens, labels, preprocess, chars=chars, lexicon=open_lexicon(lexicon, data_dir))
    torch.manual_seed(0)
    model = build_model(config, vocabs)
    random_ngram_head(model)
    save_artifact(path, model, config, preprocess, vocabs, {"task": config.task, "data": spec})
    return path


def run_export(
    data_dir: Path, *args: str, patches: dict[str, Any] | None = None, code: str | None = None
) -> subprocess.CompletedProcess:
    """`python -m export ARGS` (`run_main`) with `DATA_DIR` set and `patches` in the child, or the plain
    subprocess `python -c CODE ARGS` (a fresh interpreter: what it has imported can be seen)."""
    if code is None:
        return run_main("export", *args, env={"DATA_DIR": str(data_dir)}, timeout=300, patches=patches)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**os.environ, "DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def export(artifact: Path, out: Path) -> Path:
    """`python -m export` without --data (`run_main`); fails the test unless it succeeds."""
    result = run_main("export", "--model", artifact, "--out", out, "--force", timeout=300)
    assert result.returncode == 0, result.stderr
    return out


# ---- python -m serve ---------------------------------------------------------------------------

# Mixed lengths, blank lines, a line past max_tokens, unknown words and characters (the `lines_file` fixture).
LINES = [
    "The cat sat on the mat.",
    "",
    "A good movie, not bad at all!",
    "   ",
    " ".join(["the dog"] * 15),
    "Zyzzyva? 42 ÜBER-naïve words",
    "bad",
    "Great film. Awful ending, but great.",
    "",
]


def serve(*args: object, input: bytes | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """`python -m serve ARGS` with bytes in and out (`run_main`)."""
    return run_main("serve", *args, input=input, timeout=timeout, text=False)


# ---- python -m trainer on small real data ------------------------------------------------------

TINY_TAGGER = ["--word_dim", "16", "--word_hidden", "16", "--char_dim", "8", "--char_hidden", "8"]


def tiny_tagger(data_spec: str) -> list[str]:
    """`--task tagger --data SPEC` and the tiny tagger's sizes: the start of most training argvs here."""
    return ["--task", "tagger", "--data", data_spec, *TINY_TAGGER]


TINY_SENTIMENT = ["--embed_dim", "16", "--hidden", "16", "--layers", "1"]
TO_UPOS = {
    "NOUN": "NOUN",
    "VERB": "VERB",
    "ADJ": "ADJ",
    "ADV": "ADV",
    "ADP": "ADP",
    "CONJ": "CCONJ",
    "DET": "DET",
    "NUM": "NUM",
    "PRON": "PRON",
    "PRT": "PART",
    ".": "PUNCT",
    "X": "X",
}


def write_small_data(data_dir: Path, out: Path) -> dict[str, str]:
    """`--data` specs for slices of the real corpora: Brown as CoNLL-U, Rotten Tomatoes as fasttext."""
    from trainer.core.data import open_dataset

    out.mkdir(parents=True, exist_ok=True)
    brown = open_dataset("brown", data_dir)
    paths = []
    for split, count in (("train", 400), ("dev", 100), ("test", 100)):
        path = out / f"{split}.conllu"
        with path.open("w", encoding="utf-8") as f:
            for _, sentence in zip(range(count), brown.examples(split), strict=False):
                for i, (word, tag) in enumerate(zip(sentence.words, sentence.tags, strict=True), 1):
                    f.write(f"{i}\t{word}\t_\t{TO_UPOS[tag]}\t_\t_\t_\t_\t_\t_\n")
                f.write("\n")
        paths.append(str(path))
    reviews = open_dataset("rotten-tomatoes", data_dir)
    # fasttext carves dev out of train by the same text hash as rotten-tomatoes, so train + dev go in one file.
    for name, parts in (("train", (("train", 800), ("dev", 200))), ("test", (("test", 200),))):
        with (out / f"{name}.fasttext").open("w", encoding="utf-8") as f:
            for split, count in parts:
                for _, review in zip(range(count), reviews.examples(split), strict=False):
                    text = " ".join(review.text.split())  # one review per line
                    f.write(f"__label__{2 if review.label == 'positive' else 1} {text}\n")
    return {
        "tagger": "conllu:" + ",".join(paths),
        "sentiment": f"fasttext:{out / 'train.fasttext'},{out / 'test.fasttext'}",
    }


def trainer(
    *args: str, env: dict[str, str] | None = None, check: bool = True, module: str | None = "trainer"
) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` (or another module, e.g. torch.distributed.run; None: `python ARGS`) from the
    repository root, with one OpenMP thread: tiny models gain nothing from more on a busy machine."""
    proc = subprocess.run(
        [sys.executable, *(["-m", module] if module else []), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{module} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def events(run: Path, kind: str) -> list[dict]:
    """The `kind` events of RUN_DIR/logs/metrics.jsonl, in order."""
    lines = (run / "logs" / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def default_sigint() -> None:
    """`preexec_fn` for a child that a test will send SIGINT: a shell's background job (and so a test run
    started with `&`) has SIGINT ignored, the child would inherit that, and Python would then never raise
    KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
