"""The tokenizer an export serves with: its own tokenizer.json, or the built-in one for older exports.

model.json's `tokenizer.file` names the file (inside the export directory only) and `tokenizer.sha256`
its hash, which the graph's `seqlstm.tokenizer` metadata repeats. The file is read in full on load:
its steps compile (`trainer.core.tokenizer.Tokenizer`, which then tokenizes every input), and its
`encode` section must be what model.json's settings give (`trainer.core.portable.check_encode`).
Any failure is one `ArtifactError` line naming the file. An export written before the file existed
lists none and is tokenized with the committed description, exactly as it was then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serve.model_json import contained_file
from trainer.core.errors import ArtifactError, DataError
from trainer.core.fetch import sha256_file
from trainer.core.portable import check_encode
from trainer.core.tokenizer import Tokenizer, default_tokenizer, read_description


def load_tokenizer(export_dir: Path, meta: dict[str, Any]) -> Tokenizer:
    """The export's tokenizer, compiled (model.json already checked by serve.model_json)."""
    path = tokenizer_path(export_dir, meta)
    if path is None:
        return default_tokenizer()
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (model.json lists it; re-run `python -m export`)")
    entry = meta["tokenizer"]
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ArtifactError(
            f"{path}: sha256 {actual[:12]}... does not match model.json ({entry['sha256'][:12]}...); "
            "the file was changed after export, re-run `python -m export`"
        )
    try:
        return Tokenizer(read_description(path), str(path))
    except DataError as exc:
        raise ArtifactError(str(exc)) from None


def check_tokenizer(export_dir: Path, meta: dict[str, Any], tokenizer: Tokenizer) -> None:
    """tokenizer.json's `encode` section against model.json; run after the graph checks, whose messages
    say more when model.json was edited (the section is derived from it)."""
    path = tokenizer_path(export_dir, meta)
    if path is not None:
        try:
            check_encode(tokenizer.description, meta["preprocess"], meta["vocab"], str(path))
        except DataError as exc:
            raise ArtifactError(str(exc)) from None


def tokenizer_path(export_dir: Path, meta: dict[str, Any]) -> Path | None:
    entry = meta.get("tokenizer", {})
    if "file" not in entry:
        return None
    return contained_file(export_dir, entry["file"], f"{export_dir / 'model.json'}: tokenizer.file")
