"""Export acceptance: the same inputs through torch, onnxruntime and onnx's reference evaluator.

Like optimum's `validate_model_outputs`, checked in order (output names, then shapes, including
the shapes the graph declares, then values within the model config's `atol`), but stricter: every
case runs, all failures are collected into one report of `name: max abs diff X vs atol Y (...)`,
and any failure rejects the export. Tagger outputs are compared only at real positions
(t < lengths[b]); positions past a sentence's length are undefined by contract.

Inputs come from text through the shared `Encoder` (the path serving uses): built-in sentences,
unknown words, words of 1 to 30+ characters, words the tagger's char table holds and does not,
sentences of 1 to 230 tokens at batch sizes 1, 7 and 64, and real dev-split sentences when
`--data` names a data set; plus random id arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx.reference import ReferenceEvaluator

from export.onnx_export import declared_shapes
from export.reference import reference_evaluator
from trainer.artifact import Artifact
from trainer.core.data import Dataset, TaggedSentence, open_dataset
from trainer.core.errors import DataError, ValidationError
from trainer.core.lexicon import CLASS_PREFIX
from trainer.core.preprocess import Encoder, Vocabs, normalize_word, tokenize
from trainer.core.tasks import task_kind

# Padding invariance: a sentence's outputs alone and in a batch with longer ones (and longer words) differ
# by at most this in float32, in torch and in onnxruntime; a bidirectional LSTM must not read padding.
PADDING_TOL = 1e-5
REAL_POOL = 500  # dev examples read for the real-data cases
SAMPLE_SENTENCES = (
    "The committee approved the new budget on Tuesday after a long debate.",
    "She said that the results were better than anyone had expected.",
    "Prices rose 3.5 percent in March, the largest increase since 1990.",
    "Why would anybody want to leave such a quiet town?",
    "A surprisingly tender film, funny and sad, with two wonderful performances.",
    "It's the kind of movie that overstays its welcome by at least an hour.",
    "Visit https://example.com/news for the full report and the survey data.",
)
ALPHABET = "abcdefghijklmnopqrstuvwxyz"

Arrays = dict[str, np.ndarray]
Runner = Callable[[Arrays], Arrays]


@dataclass
class Case:
    name: str
    arrays: Arrays


class ExportValidationError(ValidationError):
    """A rejected export; `failures` holds one `name: ...` line per failed check."""

    def __init__(self, message: str, failures: list[str]) -> None:
        super().__init__(message)
        self.failures = failures


# ---- data ----------------------------------------------------------------------------------


def example_tokens(example: Any) -> list[str]:
    """Tagger sentences come tokenized; reviews go through the shared tokenizer, as in serving."""
    return list(example.words) if isinstance(example, TaggedSentence) else tokenize(example.text)


def open_eval_data(spec: str | None, task: str) -> tuple[Dataset | None, dict]:
    """The data set for the real-data cases and int8 scoring: only ever the user's `--data SPEC`.

    Nothing an artifact names is opened: metrics.json records the training `data` spec, but a crafted
    one could name any readable file, and a data error quotes the line it could not parse. Without
    --data the real-data cases are skipped and the note saying so goes into validation.json.
    """
    if spec is None:
        return None, {"used": False, "reason": "no --data given; pass --data SPEC to add dev-split sentences"}
    dataset = open_dataset(spec)
    if dataset.task != task:
        raise DataError(f"--data {spec!r} is {dataset.task} data, but the model is a {task}")
    if "dev" not in dataset.splits:
        raise DataError(f"--data {spec!r} has no dev split (splits: {', '.join(dataset.splits)})")
    return dataset, {"spec": spec, "split": "dev", "used": True}


def real_sentences(dataset: Dataset) -> list[list[str]]:
    """Up to REAL_POOL non-empty dev-split token lists."""
    tokens = (example_tokens(e) for e in dataset.examples("dev"))
    return list(islice((t for t in tokens if t), REAL_POOL))


# ---- inputs --------------------------------------------------------------------------------


def word_of_length(n: int) -> str:
    return "".join(ALPHABET[(n + i) % len(ALPHABET)] for i in range(n)).capitalize()


def unknown_words(vocabs: Vocabs, encoder: Encoder, count: int) -> list[str]:
    """Strings whose normalized form is not in the word vocabulary (some with unusual characters), and with a
    lexicon up to `count` more that take one of its classes (trainer/core/lexicon.py), inflected ones too."""
    candidates = ["Ωmega", "naïveté", "東京", "Zürich€"] + [f"qz{a}{b}xv" for a in ALPHABET for b in ALPHABET]
    found = [w for w in candidates if normalize_word(w, encoder.config) not in vocabs.words]
    return found[:count] + lexicon_words(vocabs, count)


def lexicon_words(vocabs: Vocabs, count: int) -> list[str]:
    """Unknown words of as many of the vocabulary's lexicon classes as `count` allows, one each: letters
    only, so that each stays one token."""
    if vocabs.lexicon is None:
        return []
    classes = sum(w.startswith(CLASS_PREFIX) for w in vocabs.words.itos)
    classed: dict[str, str] = {}
    for lemma in sorted(w for w in vocabs.lexicon.pos if w.isalpha()):
        for word in (lemma, lemma + "s", lemma + "ed"):
            token = vocabs.lexicon.class_token(word)
            if word not in vocabs.words and token in vocabs.words:
                classed.setdefault(token, word)
        if len(classed) == classes:
            break
    return sorted(classed.values())[:count]


def text_cases(encoder: Encoder, rng: np.random.Generator, real: Sequence[list[str]]) -> list[Case]:
    vocabs = encoder.vocabs
    sample = [tokenize(s) for s in SAMPLE_SENTENCES]
    unknown = unknown_words(vocabs, encoder, 12)
    long_words = [word_of_length(n) for n in range(1, 31)] + [word_of_length(35)]  # 35: cut at max_word_len
    # The 64 x 230 case leaves the longest words to the others: the character LSTM's cost in
    # torch grows with batch x time x word length, and word lengths 1..30 are covered below.
    pool = [t for s in sample for t in s] + unknown + vocabs.words.itos[2:200]

    def draw(n: int, extra: Sequence[str] = ()) -> list[str]:
        words = pool + list(extra)
        return [words[i] for i in rng.integers(0, len(words), n)]

    def batch(sentences: Sequence[Sequence[str]]) -> Arrays:
        return encoder.batch([encoder.encode(s) for s in sentences])

    cases = [
        Case("text-b1-t1", batch([["A"]])),
        Case("text-b1-t230", batch([draw(230, long_words)])),
        Case("text-b7-typical", batch(sample)),
        Case("text-b7-unknown-words", batch([s[:3] + unknown[i : i + 4] + s[3:] for i, s in enumerate(sample)])),
        Case("text-b64-t1-230", batch([draw(int(n)) for n in np.linspace(1, 230, 64)])),
    ]
    if vocabs.chars is not None:
        cases.append(Case("text-b7-wordlen-1-35", batch([long_words[i::7] for i in range(7)])))
        cases.append(Case("text-b3-char-table", batch(char_table_sentences(vocabs, unknown))))
    if real:
        cases.append(Case("data-b7", batch(real[:7])))
        picked = rng.choice(len(real), size=min(64, len(real)), replace=False)
        cases.append(Case(f"data-b{len(picked)}", batch([real[i] for i in picked])))
    return cases


def char_table_sentences(vocabs: Vocabs, unknown: Sequence[str]) -> list[list[str]]:
    """Frequent words as the char table holds them (as in the vocabulary and capitalized); spellings it
    mostly does not hold (the same words in capitals with an `x` added, unknown words); and the two
    mixed (export/tagger_graph.py)."""
    frequent = vocabs.words.itos[2:14]
    held = frequent + [w[:1].upper() + w[1:] for w in frequent]
    others = [w.upper() + "x" for w in frequent] + list(unknown[:6])
    return [held, others, [w for pair in zip(held, others) for w in pair]]


def random_case(name: str, vocabs: Vocabs, rng: np.random.Generator, batch: int, time: int, width: int) -> Case:
    """Random ids laid out as the encoder lays them out: right padding with 0, every length >= 1."""
    lengths = rng.integers(1, time + 1, batch)
    lengths[0] = time
    real = np.arange(time)[None, :] < lengths[:, None]  # (B, T)
    arrays = {"words": np.where(real, rng.integers(1, len(vocabs.words), (batch, time)), 0), "lengths": lengths}
    if vocabs.chars is not None:
        word_lengths = np.where(real, rng.integers(1, width + 1, (batch, time)), 0)  # (B, T)
        word_lengths[0, 0] = width
        in_word = np.arange(width)[None, None, :] < word_lengths[:, :, None]  # (B, T, W)
        arrays["chars"] = np.where(in_word, rng.integers(1, len(vocabs.chars), (batch, time, width)), 0)
        arrays["word_lengths"] = word_lengths
    return Case(name, {k: v.astype(np.int64) for k, v in arrays.items()})


# ---- running and comparing -----------------------------------------------------------------


# One intra-op thread for torch and onnxruntime alike: LSTM steps are small, and both runtimes' spinning
# thread pools slow these many small runs down badly on a busy machine (docs/BENCHMARKS.md section 9).
def ort_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_runner(model: torch.nn.Module) -> Runner:
    def run(arrays: Arrays) -> Arrays:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                out = model(**{k: torch.from_numpy(v) for k, v in arrays.items()})
        finally:
            torch.set_num_threads(threads)
        outs = out if isinstance(out, tuple) else (out,)
        return {name: o.numpy() for name, o in zip(model.output_names, outs)}

    return run


def session_runner(session: ort.InferenceSession | ReferenceEvaluator) -> Runner:
    """onnxruntime and the reference evaluator share `run(None, feeds)`; names in graph order."""
    if isinstance(session, ReferenceEvaluator):
        feeds_names, out_names = session.input_names, session.output_names
    else:
        feeds_names = [i.name for i in session.get_inputs()]
        out_names = [o.name for o in session.get_outputs()]

    def run(arrays: Arrays) -> Arrays:
        return dict(zip(out_names, session.run(None, {name: arrays[name] for name in feeds_names})))

    return run


def max_abs_diff(a: np.ndarray, b: np.ndarray, lengths: np.ndarray, task: str) -> float:
    """Over real positions only (per-token kinds); inf when either side is not finite."""
    real = task_kind(task).real(lengths, a.shape)  # (B, T), or None: every row is real
    if real is not None:
        a, b = a[real], b[real]
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(diff.max(initial=0.0)) if np.isfinite(diff).all() else float("inf")


def fits(declared: list[int | str], shape: tuple[int, ...]) -> bool:
    """What onnxruntime's VerifyOutputSizes checks: same rank, fixed dims equal."""
    return len(declared) == len(shape) and all(isinstance(d, str) or d == s for d, s in zip(declared, shape))


def compare(
    name: str,
    kind: str,
    expected: Arrays,
    actual: Arrays,
    lengths: np.ndarray,
    task: str,
    atol: float,
    declared: dict[str, list] | None = None,
) -> tuple[dict, list[str]]:
    """Names, then shapes (against torch and the graph's declared shapes), then values."""
    failures: list[str] = []
    outputs: dict[str, dict] = {}
    if list(actual) != list(expected):
        failures.append(f"{name}: output names {list(actual)} vs expected {list(expected)}")
    for out in expected if not failures else ():
        a, e = actual[out], expected[out]
        entry: dict[str, Any] = {"shape": list(a.shape), "atol": atol, "max_abs_diff": None}
        outputs[out] = entry
        if a.shape != e.shape:
            failures.append(f"{name}: {out} shape {list(a.shape)} vs torch {list(e.shape)}")
        elif declared is not None and not fits(declared[out], a.shape):
            failures.append(f"{name}: {out} shape {list(a.shape)} does not fit the declared {declared[out]}")
        else:
            diff = max_abs_diff(a, e, lengths, task)
            entry["max_abs_diff"] = diff if np.isfinite(diff) else None
            if not diff <= atol:
                failures.append(f"{name}: max abs diff {diff:.3g} vs atol {atol:g} ({out} shape {list(a.shape)})")
    return {"name": name, "kind": kind, "outputs": outputs, "passed": not failures}, failures


def run_case(
    case: Case,
    expected: Runner,
    actual: Runner,
    task: str,
    atol: float,
    declared: dict[str, list] | None = None,
    kind: str = "parity",
) -> tuple[dict, list[str]]:
    try:
        got = actual(case.arrays)
    except Exception as exc:  # onnxruntime raises untyped errors; a crash is a failed case, not a traceback
        record = {"name": case.name, "kind": kind, "outputs": {}, "passed": False}
        failures = [f"{case.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
    else:
        record, failures = compare(
            case.name, kind, expected(case.arrays), got, case.arrays["lengths"], task, atol, declared
        )
    record["inputs"] = {k: list(v.shape) for k, v in case.arrays.items()}
    return record, failures


def padding_check(label: str, run: Runner, encoder: Encoder, task: str) -> tuple[dict, list[str]]:
    """Each sentence alone vs in a batch with longer ones (and longer words): equal within PADDING_TOL."""
    sample = [tokenize(s) for s in SAMPLE_SENTENCES]
    longer = [(sample[1] * 20)[:229] + [word_of_length(30)], sample[2]]
    name, worst, shapes = f"padding-{label}", 0.0, []
    try:
        for tokens in (["A"], sample[0], sample[3]):
            alone = encoder.batch([encoder.encode(tokens)])
            together = encoder.batch([encoder.encode(t) for t in (longer[0], tokens, longer[1])])
            shapes.append({k: list(v.shape) for k, v in together.items()})
            a, b = next(iter(run(alone).values()))[0:1], next(iter(run(together).values()))[1:2]
            if task_kind(task).per_token:  # the alone run's positions only
                a, b = a[:, : len(tokens)], b[:, : len(tokens)]
            worst = max(worst, max_abs_diff(a, b, alone["lengths"], task))
    except Exception as exc:  # as in run_case: a runtime that cannot run the batch fails the check
        record = {"name": name, "kind": "padding", "inputs": shapes, "outputs": {}, "passed": False}
        return record, [f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
    passed = worst <= PADDING_TOL
    record = {
        "name": name,
        "kind": "padding",
        "inputs": shapes,
        "passed": passed,
        "outputs": {"logits": {"max_abs_diff": worst if np.isfinite(worst) else None, "atol": PADDING_TOL}},
    }
    return record, [] if passed else [f"{name}: max abs diff {worst:.3g} vs atol {PADDING_TOL:g} (alone vs batched)"]


def reference_checks(
    path: Path, cases: list[Case], runners: dict[str, Runner], task: str, atol: float
) -> tuple[list[dict], list[str]]:
    """onnx's ReferenceEvaluator, an independent reading of the graph, against onnxruntime and torch."""
    reference = session_runner(reference_evaluator(path))
    records, failures = [], []
    for case in cases:
        for label, run in runners.items():
            named = Case(f"reference-vs-{label}-{case.name}", case.arrays)
            record, found = run_case(named, run, reference, task, atol, kind="reference")
            records.append(record)
            failures += found
    return records, failures


def validate(artifact: Artifact, path: Path, atol: float, real: Sequence[list[str]], data_note: dict) -> dict:
    """Every check on the exported graph at `path`; the returned report is validation.json."""
    task, model = artifact.task, artifact.model.eval()
    encoder = Encoder(artifact.vocabs, artifact.preprocess)
    rng = np.random.default_rng(0)
    declared = declared_shapes(onnx.load(str(path)).graph.output)
    torch_run = torch_runner(model)
    ort_run = session_runner(ort_session(path))
    cases = text_cases(encoder, rng, real) + [
        random_case("random-b7", artifact.vocabs, rng, 7, 23, 12),
        random_case("random-b64-t230", artifact.vocabs, rng, 64, 230, 8),
    ]
    records, failures = [], []
    for case in cases:
        record, found = run_case(case, torch_run, ort_run, task, atol, declared)
        records.append(record)
        failures += found
    for label, run in (("onnxruntime", ort_run), ("torch", torch_run)):
        record, found = padding_check(label, run, encoder, task)
        records.append(record)
        failures += found
    small = [
        cases[0],
        Case("text-b3-t8", encoder.batch([encoder.encode(tokenize(s)[:8]) for s in SAMPLE_SENTENCES[:3]])),
    ]
    found_records, found = reference_checks(path, small, {"onnxruntime": ort_run, "torch": torch_run}, task, atol)
    records += found_records
    failures += found
    diffs = [o["max_abs_diff"] for r in records if r["kind"] == "parity" for o in r["outputs"].values()]
    return {
        "passed": not failures,
        "atol": atol,
        "max_abs_diff": max((d for d in diffs if d is not None), default=None),
        "real_data": data_note,
        "checks": len(records),
        "cases": records,
        "failures": failures,
    }
