"""A loaded artifact -> `model.onnx` with dynamic batch, sentence and word axes, and `model.json`.

Exporter: the TorchScript one (`dynamo=False`). Measured with torch 2.13 on these models:
it keeps every dynamic axis dynamic, including the output shapes the graph declares, and matches
torch to ~1e-7. The dynamo exporter (torch's default) freezes the time axis in the declared output
shape (pytorch issue 191855), so onnxruntime prints VerifyOutputSizes warnings at any other
sentence length. `validate` checks the declared output shapes against every case it runs, and
tests/test_export.py checks them and onnxruntime's log, so a regression in this choice fails loudly.

What is traced: the model itself (`--graph plain`), or by default the fast graph, which computes the
same values with less work: for a character tagger export/tagger_graph.py (a table of frequent words'
char states, one `LSTM` node per bidirectional layer), for a bidirectional sentiment model
export/sentiment_graph.py (one `LSTM` node per layer). Both forms take and return the same arrays.

Opset: 17 by default, well inside what the onnxruntime>=1.17 this project requires can run; any
opset from 12 (opset 11's Clip takes no int64, which the character encoder's length clamp needs)
up to the lower of what the TorchScript exporter (20) and the installed onnx can write. Both ends
were measured to export and validate.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from export.sentiment_graph import SentimentGraph, has_fast_form
from export.tagger_graph import TaggerGraph
from serve.model_json import EXPORT_FORMAT_VERSION
from serve.onnx_metadata import check_metadata_props, metadata_props, tokenizer_description
from trainer import __version__
from trainer.artifact import Artifact
from trainer.core import portable
from trainer.core.config import to_dict
from trainer.core.errors import ArtifactError, ConfigError, ValidationError
from trainer.core.fetch import sha256_file
from trainer.core.preprocess import Encoder
from trainer.core.tasks import task_kind
from trainer.models import DualLSTMTagger

EXPORTER = "torchscript"
# Character-tagger table rows (export/tagger_graph.py): Brown's whole vocabulary (23,917 words) fits. On it the
# table adds 25 MB to model.onnx, and 10,000 rows would give 11% less throughput for 15 MB less
# (docs/BENCHMARKS.md section 4b).
DEFAULT_CHAR_TABLE = 25_000
DEFAULT_OPSET = 17
MIN_OPSET = 12
# torch keeps this limit in a private module; 20 is its value in torch 2.2 to 2.13.
TORCHSCRIPT_MAX_OPSET = getattr(getattr(torch.onnx, "_constants", None), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)

INPUT_AXES = {
    "words": {0: "batch", 1: "time"},
    "lengths": {0: "batch"},
    "chars": {0: "batch", 1: "time", 2: "word"},
    "word_lengths": {0: "batch", 1: "time"},
}
# Traced at these shapes; validation runs at others (batch 1/7/64, length 1..230, word 1..30).
EXAMPLE_SENTENCES = (["The", "jury", "said", "it", "did"], ["Fulton", "County"])


def opset_range() -> tuple[int, int]:
    return MIN_OPSET, min(TORCHSCRIPT_MAX_OPSET, onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> None:
    low, high = opset_range()
    if not low <= opset <= high:
        raise ConfigError(
            f"--opset {opset}: not supported; expected {low}..{high} (the {EXPORTER} exporter writes up to "
            f"{TORCHSCRIPT_MAX_OPSET}, the installed onnx {onnx.__version__} knows up to "
            f"{onnx.defs.onnx_opset_version()}, "
            f"and these models need at least {MIN_OPSET})"
        )


def table_rows(artifact: Artifact, char_table: int | None) -> int | None:
    """Char table rows of the fast graph (`char_table` cut to the vocabulary; 0 when only <pad> and
    <unk> would be left), or None where the model is traced as it is: `char_table` None (the plain
    graph) or a model without a character encoder."""
    if char_table is None or not isinstance(artifact.model, DualLSTMTagger):
        return None
    rows = min(char_table, len(artifact.vocabs.words))
    return rows if rows > 2 else 0


def sentiment_fast(artifact: Artifact, char_table: int | None) -> bool:
    """The fast graph was asked for (`char_table` not None) and the model is a bidirectional sentiment model."""
    return char_table is not None and has_fast_form(artifact.model)


def graph_module(artifact: Artifact, encoder: Encoder, char_table: int | None) -> torch.nn.Module:
    """What is traced: the model itself, or the fast graph: for a character tagger with the char states
    of its most frequent words precomputed and one LSTM node per bidirectional layer
    (export/tagger_graph.py), for a bidirectional sentiment model one LSTM node per layer
    (export/sentiment_graph.py). Either way the graph's inputs and outputs are the model's."""
    model, rows = artifact.model.eval(), table_rows(artifact, char_table)
    if sentiment_fast(artifact, char_table):
        return SentimentGraph(model).eval()
    return model if rows is None else TaggerGraph(model, encoder, rows).eval()


def graph_description(artifact: Artifact, char_table: int | None) -> dict[str, Any]:
    """model.json's `graph`: which form was traced (informational; inputs and outputs do not depend on it)."""
    if sentiment_fast(artifact, char_table):
        return {"form": "fast"}
    rows = table_rows(artifact, char_table)
    return {"form": "plain"} if rows is None else {"form": "fast", "char_table_words": rows}


def export_onnx(artifact: Artifact, path: Path, opset: int, char_table: int | None = None) -> None:
    """Trace the model on a small encoded batch and write `path` with named, dynamic axes and the
    `seqlstm.*` metadata_props."""
    encoder = Encoder(artifact.vocabs, artifact.preprocess)
    model = graph_module(artifact, encoder, char_table)
    arrays = encoder.batch([encoder.encode(s) for s in EXAMPLE_SENTENCES])
    names = list(model.input_names)
    args = tuple(torch.from_numpy(arrays[name]) for name in names)
    axes = {name: INPUT_AXES[name] for name in names}
    axes.update({name: task_kind(artifact.task).decoder.axes for name in model.output_names})
    with warnings.catch_warnings():
        # The legacy exporter is deprecated, but it is the one whose output shapes stay dynamic (see above).
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        # This warns about LSTMs whose h0/c0 are graph inputs sized at export time; ours pass none, so
        # the initial state is built from the runtime batch (validation proves it at batch 1, 7 and 64).
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other than 1", UserWarning)
        with torch.no_grad():
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=list(model.output_names),
                dynamic_axes=axes,
            )
    set_metadata(path, metadata_props(description(artifact)))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ValidationError(
            f"{path.name}: the exported graph fails onnx.checker ({str(exc).splitlines()[0]})"
        ) from None


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Replace the graph's metadata_props with `props`, in place.

    The graph is read without its external data and written back the same way: a model over 2 GB,
    which torch writes with its weights in files beside it, keeps those files and references as they
    are (onnx.save writes external tensors only when their data is loaded).
    """
    model = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def metadata_check(path: Path, meta: dict[str, Any]) -> tuple[list[dict], list[str]]:
    """A validation record: the graph's `seqlstm.*` metadata_props are exactly those model.json gives."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    name = f"metadata-{path.name}"
    try:
        check_metadata_props(Path("model.json"), path.name, meta, props)
    except ArtifactError as exc:
        failures = [f"{name}: {exc}"]
    else:
        failures = []
    return [{"name": name, "kind": "metadata", "keys": sorted(props), "passed": not failures}], failures


def declared_shapes(graph_values: Any) -> dict[str, list[int | str]]:
    """Name -> declared shape (ints for fixed dims, the dim_param string for dynamic ones)."""
    return {
        value.name: [d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in graph_values
    }


def signature(path: Path) -> tuple[list[dict], list[dict]]:
    """model.json's `inputs` and `outputs`: name, dtype and declared shape, in graph order."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values: Any) -> list[dict]:
        shapes = declared_shapes(values)
        return [
            {
                "name": v.name,
                "dtype": str(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)),
                "shape": shapes[v.name],
            }
            for v in values
        ]

    return describe(graph.input), describe(graph.output)


def tokenizer_document(artifact: Artifact) -> str:
    """The export's tokenizer.json (trainer.core.portable), from the artifact's preprocessing and vocabularies."""
    return portable.document(to_dict(artifact.preprocess), artifact.vocabs.to_json())


def description(artifact: Artifact) -> dict[str, Any]:
    """The part of model.json that the graph's metadata_props are derived from."""
    return {
        "export_format_version": EXPORT_FORMAT_VERSION,
        "seqlstm_version": __version__,
        "task": artifact.task,
        "preprocess": to_dict(artifact.preprocess),
        "tokenizer": tokenizer_description(portable.sha256(tokenizer_document(artifact))),
        "vocab": artifact.vocabs.to_json(),
    }


def model_json(
    artifact: Artifact, onnx_path: Path, opset: int, atol: float, char_table: int | None = None
) -> dict[str, Any]:
    """Everything serving needs besides the ONNX file (docs/DESIGN.md), so it never reads the run dir."""
    inputs, outputs = signature(onnx_path)
    return {
        **description(artifact),
        "source_format_version": artifact.format_version,
        "model": to_dict(artifact.config),
        "inputs": inputs,
        "outputs": outputs,
        "onnx": {"file": onnx_path.name, "sha256": sha256_file(onnx_path), "opset": opset, "exporter": EXPORTER},
        "atol": atol,
        "graph": graph_description(artifact, char_table),
    }
