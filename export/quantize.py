"""`--quantize int8`: onnxruntime dynamic quantization, accepted by the task metric, not by atol.

`quantize_dynamic` stores the LSTM (as com.microsoft DynamicQuantizeLSTM), MatMul (the output
layer) and Gather (embedding table) weights as int8 and quantizes activations on the fly. Gather
is included because the embedding table is most of these models' weights; all three were checked
to load and run in onnxruntime. int8 logits differ from fp32 by far more than any sensible atol,
so the acceptance test is the dev-split accuracy: the export fails when the int8 model is more
than MAX_ACCURACY_DROP (2 points, absolute) below the fp32 model on the same examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

from export.validate import example_tokens, ort_session
from trainer.core.data import TaggedSentence
from trainer.core.errors import ValidationError
from trainer.core.preprocess import Encoded, Encoder
from trainer.core.tasks import task_kind

OP_TYPES = ["LSTM", "MatMul", "Gather"]
MAX_ACCURACY_DROP = 0.02
MAX_EXAMPLES = 2000  # dev examples scored (the first ones, in split order), enough for +-1 point
BATCH_SIZE = 64


def quantize_int8(src: Path, dst: Path) -> None:
    """`src` -> int8 `dst`, after the shape inference and graph clean-up onnxruntime asks for first."""
    prepared = dst.with_name(f"{dst.stem}.prepared.onnx")
    try:
        # Symbolic shape inference cannot size the tagger's `Unique` output, and dynamic quantization
        # of weights needs no activation shapes; onnx's own shape inference still runs.
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(dst), op_types_to_quantize=OP_TYPES, weight_type=QuantType.QInt8)
    except Exception as exc:  # onnxruntime's tools raise bare Exceptions; name the step, keep one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValidationError(f"int8: onnxruntime's quantization of {src.name} failed ({first})") from exc
    finally:
        prepared.unlink(missing_ok=True)


def labelled_batches(encoder: Encoder, examples: Iterable[Any]) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """(model inputs, gold label ids per real token or per review), BATCH_SIZE examples at a time.

    Examples are sorted by length first: accuracy does not depend on order, and batches of similar
    lengths carry little padding through the LSTMs.
    """
    encoded: list[tuple[Encoded, np.ndarray]] = []
    for example in examples:
        tokens = encoder.truncate(example_tokens(example))
        if tokens:
            gold = example.tags[: len(tokens)] if isinstance(example, TaggedSentence) else [example.label]
            encoded.append((encoder.encode(tokens), encoder.labels(gold)))
    encoded.sort(key=lambda pair: len(pair[0].words))
    for start in range(0, len(encoded), BATCH_SIZE):
        chunk = encoded[start : start + BATCH_SIZE]
        yield encoder.batch([item for item, _ in chunk]), np.concatenate([gold for _, gold in chunk])


def predict(session: ort.InferenceSession, arrays: dict[str, np.ndarray], encoder: Encoder, task: str) -> np.ndarray:
    """Label ids at real positions, as the task's decoder picks them (trainer/core/tasks.py)."""
    names = [i.name for i in session.get_inputs()]
    logits = session.run(None, {n: arrays[n] for n in names})[0]
    kind = task_kind(task)
    ids = kind.decoder.label_ids(logits, encoder.vocabs.labels.itos)
    real = kind.real(arrays["lengths"], logits.shape)
    return ids if real is None else ids[real]


def compare_int8(fp32: Path, int8: Path, task: str, encoder: Encoder, examples: Iterable[Any]) -> dict[str, Any]:
    """Dev accuracy of both models and how often their predictions agree; `passed` per the rule above."""
    sessions = [ort_session(p) for p in (fp32, int8)]
    count = correct_fp32 = correct_int8 = agree = n_examples = 0
    for arrays, gold in labelled_batches(encoder, islice(examples, MAX_EXAMPLES)):
        pred_fp32, pred_int8 = (predict(s, arrays, encoder, task) for s in sessions)
        count += len(gold)
        n_examples += len(arrays["lengths"])
        correct_fp32 += int((pred_fp32 == gold).sum())
        correct_int8 += int((pred_int8 == gold).sum())
        agree += int((pred_fp32 == pred_int8).sum())
    if count == 0:
        return {"passed": False, "failure": "int8: no non-empty dev examples to score it on"}
    acc_fp32, acc_int8 = correct_fp32 / count, correct_int8 / count
    passed = acc_int8 >= acc_fp32 - MAX_ACCURACY_DROP
    unit = task_kind(task).count_unit
    result = {
        "file": int8.name,
        "op_types": OP_TYPES,
        "weight_type": "int8",
        "split": "dev",
        "examples": n_examples,
        "scored": count,
        "unit": unit,
        "fp32_accuracy": acc_fp32,
        "int8_accuracy": acc_int8,
        "argmax_agreement": agree / count,
        "max_accuracy_drop": MAX_ACCURACY_DROP,
        "passed": passed,
    }
    if not passed:
        result["failure"] = (
            f"int8: dev accuracy {acc_int8:.4f} vs fp32 {acc_fp32:.4f}, more than the allowed "
            f"drop of {MAX_ACCURACY_DROP:g} ({count} dev {unit})"
        )
    return result
