"""`python -m export --model RUN_DIR/model --out EXPORT_DIR [--opset N] [--atol A] [--quantize int8]
[--data SPEC] [--graph fast|plain] [--char-table N] [--force]`.

Everything is written into a temporary directory next to EXPORT_DIR and renamed into place only
after validation passed, so EXPORT_DIR either holds a validated export or is left as it was; the
temporary is removed on any failure, and the temporaries of a killed (SIGKILLed) export are removed,
with a line, when the next export to EXPORT_DIR starts (`trainer.core.atomic`); a write error (a full
disk) is one line naming EXPORT_DIR. EXPORT_DIR may not overlap the model directory or its RUN_DIR
(nor hold the current directory), so --force can never delete what it exports.
Only data the user names with --data is read; nothing the artifact names is opened.

EXPORT_DIR gets model.onnx (its metadata_props describe it, serve/onnx_metadata.py), model.json,
test_vectors.json (export/vectors.py), validation.json and, with --quantize, model.int8.onnx.

With MLFLOW_TRACKING_URI set, a model trained with `--report_to mlflow` (its metrics.json names the run,
`mlflow_run_id`) gets the validated EXPORT_DIR logged into that run as the artifacts `export/`
(trainer/tracking.py); the run is looked up before the export starts, so a wrong URI is one line at once.

Exit status: 0 exported and validated; 1 validation failed (`error: ...` plus one line per failed
check; the attempt is kept in EXPORT_DIR.failed/ with its validation.json, model.onnx and
test_vectors.json, and has no model.json); 2 bad input (missing/corrupt artifact, unknown format version, non-empty
EXPORT_DIR without --force, EXPORT_DIR overlapping the model, unsupported opset, unusable --data):
one line `error: ...`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainer import __version__
from trainer.core import atomic
from trainer.core.cli import Parser, extra_needed, run_cli
from trainer.core.config import check_value
from trainer.core.errors import ArtifactError, ConfigError, DataError, WriteError
from trainer.core.fetch import sha256_file

if TYPE_CHECKING:  # torch comes in with export.onnx_export, imported by `run` once --atol and --out are checked
    from trainer.artifact import Artifact
    from trainer.core.data import Dataset


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m export",
        description="Export a trained model to ONNX and validate it against torch.",
        epilog="exit status: 0 ok, 1 validation failed (attempt kept in EXPORT_DIR.failed/), 2 bad input",
    )
    parser.add_argument("--model", required=True, type=Path, metavar="RUN_DIR/model")
    parser.add_argument("--out", required=True, type=Path, metavar="EXPORT_DIR")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.add_argument("--atol", type=float, default=None, help="parity tolerance (default: the model config's atol)")
    parser.add_argument("--quantize", choices=["int8"], help="also write model.int8.onnx, accepted by dev accuracy")
    parser.add_argument(
        "--data",
        metavar="SPEC",
        help="data for real-sentence cases and int8 scoring (without it those cases are skipped)",
    )
    parser.add_argument(
        "--graph",
        choices=["fast", "plain"],
        default="fast",
        help="fast (the default): one LSTM node per bidirectional layer, and for a character tagger a char table; "
        "plain: the model traced as it is (word-only taggers and unidirectional sentiment models always are)",
    )
    parser.add_argument(
        "--char-table",
        type=int,
        default=None,
        metavar="N",
        help="fast graph: precompute the char states of the N most frequent words into it "
        "(default 25000; 0: none, every word runs the char BiLSTM)",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty EXPORT_DIR")
    return parser


@dataclass
class Job:
    """One export, every part checked (`run`): the arguments, the loaded model and what comes of them."""

    args: argparse.Namespace
    artifact: Artifact
    opset: int
    atol: float
    dataset: Dataset | None  # --data, opened for the real-sentence cases and int8 scoring; None without it
    data_note: dict  # whether real data was used, and why not


def overlaps(a: Path, b: Path) -> bool:
    """Equal, or one inside the other (resolved paths)."""
    return a == b or a in b.parents or b in a.parents


def check_out_dir(out: Path, model: Path, force: bool) -> None:
    """EXPORT_DIR (and EXPORT_DIR.failed) must be replaceable without touching the model, its RUN_DIR,
    or the current directory; symlinks are resolved first."""
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"--out {out}: exists and is not a directory")
    model_dir = model.resolve()
    protected = {model_dir: "the model directory"}
    for named in (model_dir, model.absolute()):  # RUN_DIR/model, also when it is a link to elsewhere
        if named.name == "model":
            protected.setdefault(named.parent.resolve(), "the model's run directory")
    cwd = Path.cwd().resolve()
    for target in (out.resolve(), out.resolve().with_name(out.resolve().name + ".failed")):
        for path, what in protected.items():
            if overlaps(target, path):
                raise ArtifactError(f"--out {out}: {target} overlaps {what} {path}; export to a directory outside it")
        if target == cwd or target in cwd.parents:
            raise ArtifactError(f"--out {out}: {target} would replace a directory holding the current directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ArtifactError(f"--out {out}: directory exists and is not empty; pass --force to replace it")


def run(args: argparse.Namespace) -> int:
    if args.atol is not None:
        check_value("--atol", args.atol, float, {"gt": 0})
    if args.char_table is not None:
        check_value("--char-table", args.char_table, int, {"min": 0})  # cut to the vocabulary at export
        if args.graph == "plain":
            raise ConfigError("--char-table sizes the fast graph's table; --graph plain has none")
    check_out_dir(args.out, args.model, args.force)

    # Only now: importing torch takes seconds. The highest opset is the torch exporter's, so it is checked here.
    from export import onnx_export

    opset = onnx_export.DEFAULT_OPSET if args.opset is None else args.opset
    onnx_export.check_opset(opset)

    from export.validate import open_eval_data
    from trainer.artifact import load_artifact
    from trainer.runlock import note_training
    from trainer.tracking import export_run, log_export

    note_training(args.model, "export")  # a training run holds RUN_DIR: say which model/ this reads
    artifact = load_artifact(args.model)
    tracking = export_run(artifact.metrics, args.model)  # MLFLOW_TRACKING_URI: checked before the work
    atol = args.atol if args.atol is not None else artifact.config.atol
    dataset, data_note = open_eval_data(args.data, artifact.task)
    if args.quantize and dataset is None:
        raise DataError(f"--quantize int8 is accepted by dev-split accuracy and needs data: {data_note['reason']}")
    out = args.out = args.out.resolve()  # a name to put the temporary and .failed directories beside
    atomic.named(f"--out {out}", lambda: out.parent.mkdir(parents=True, exist_ok=True))
    for target in (out, out.with_name(out.name + ".failed")):
        atomic.remove_stale(target, "export")  # what a killed export left beside them
    with atomic.temp_dir(out) as tmp:
        try:
            export_into(tmp, Job(args, artifact, opset, atol, dataset, data_note))
        except OSError as exc:  # torch's and onnx's writes into tmp: a full disk, a quota
            if isinstance(exc, BrokenPipeError) or str(tmp) not in str(exc.filename or tmp):
                raise  # not a write into the export
            raise WriteError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    if tracking is not None:
        log_export(tracking, out)
    return 0


def export_into(tmp: Path, job: Job) -> None:
    """Export and check into `tmp`, then move it to --out (or to --out.failed)."""
    from export.validate import ExportValidationError
    from trainer.artifact import replace_dir, write_json

    args = job.args
    report, meta = export_and_check(tmp, job)
    write_json(tmp / "validation.json", report, nan_as_null=True)  # a NaN max diff is a failed check, written null
    out, failed = args.out, args.out.with_name(args.out.name + ".failed")
    if not report["passed"]:
        replace_dir(tmp, failed)
        state = "left unchanged" if out.exists() else "not created"
        raise ExportValidationError(
            f"{len(report['failures'])} of {report['checks'] + bool(args.quantize)} validation checks failed; "
            f"{out} {state}; the failed attempt is in {failed}/ (validation.json, model.onnx, test_vectors.json)",
            report["failures"],
        )
    write_json(tmp / "model.json", meta)
    replace_dir(tmp, out)
    if failed.exists():
        shutil.rmtree(failed)  # a stale failure next to a good export would only mislead
    print(
        f"exported {out / 'model.onnx'} (opset {job.opset}, {report['exporter']} exporter): "
        f"{report['checks']} checks passed, max abs diff {report['max_abs_diff']:.2g} vs atol {job.atol:g}; "
        f"{len(report['test_vectors'])} test vectors"
    )
    if not job.data_note["used"]:
        print(f"real-data cases skipped: {job.data_note['reason']}")
    if args.quantize:
        int8 = report["int8"]
        print(
            f"int8 {out / 'model.int8.onnx'}: dev accuracy {int8['int8_accuracy']:.4f} "
            f"(fp32 {int8['fp32_accuracy']:.4f}, agreement {int8['argmax_agreement']:.4f})"
        )


def export_and_check(tmp: Path, job: Job) -> tuple[dict, dict]:
    """model.onnx, test_vectors.json (and model.int8.onnx) in `tmp`; (validation report, model.json)."""
    from export import onnx_export
    from export.validate import real_sentences, validate
    from export.vectors import FILE, build_vectors
    from trainer.artifact import write_json
    from trainer.core.preprocess import Encoder

    args, artifact, opset, atol, dataset = job.args, job.artifact, job.opset, job.atol, job.dataset
    onnx_path = tmp / "model.onnx"
    char_table = None  # the plain graph
    if args.graph == "fast":
        char_table = onnx_export.DEFAULT_CHAR_TABLE if args.char_table is None else args.char_table
    onnx_export.export_onnx(artifact, onnx_path, opset, char_table)
    meta = onnx_export.model_json(artifact, onnx_path, opset, atol, char_table)
    # The bytes whose sha256 the graph's seqlstm.tokenizer already holds (export_onnx computed the same).
    atomic.write_text(tmp / meta["tokenizer"]["file"], onnx_export.tokenizer_document(artifact), mode=0o644)
    report = validate(artifact, onnx_path, atol, real_sentences(dataset) if dataset else [], job.data_note)
    report.update(exporter=onnx_export.EXPORTER, opset=opset, source=str(args.model), seqlstm_version=__version__)
    vectors, records, failures = build_vectors(artifact, onnx_path, dataset, atol)
    add_checks(report, records, failures)
    add_checks(report, *onnx_export.metadata_check(onnx_path, meta))
    write_json(tmp / FILE, vectors)
    report["test_vectors"] = [v["name"] for v in vectors["vectors"]]
    meta["test_vectors"] = {"file": FILE, "sha256": sha256_file(tmp / FILE)}
    if args.quantize:
        from export.quantize import compare_int8, quantize_int8

        int8_path = tmp / "model.int8.onnx"
        quantize_int8(onnx_path, int8_path)
        add_checks(report, *onnx_export.metadata_check(int8_path, meta))  # quantization keeps metadata_props
        report["int8"] = int8 = compare_int8(
            onnx_path, int8_path, artifact.task, Encoder(artifact.vocabs, artifact.preprocess), dataset.examples("dev")
        )
        if not int8["passed"]:
            report["passed"] = False
            report["failures"].append(int8["failure"])
        meta["int8"] = {"file": int8_path.name, "sha256": sha256_file(int8_path)}
    return report, meta


def add_checks(report: dict, records: list[dict], failures: list[str]) -> None:
    report.setdefault("cases", []).extend(records)
    report["failures"] = report["failures"] + failures
    report["checks"] = len(report["cases"])
    report["passed"] = not report["failures"]


def main(argv: list[str] | None = None) -> int:
    def export() -> int:
        args = build_parser().parse_args(argv)
        with extra_needed("train", "export"):  # torch, onnx: not in a `pip install .[serve]` environment
            return run(args)

    return run_cli(export)


if __name__ == "__main__":
    sys.exit(main())
