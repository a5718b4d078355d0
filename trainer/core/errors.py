"""Small typed exceptions whose one-line message is what the user sees.

Every command runs through `trainer.core.cli.run_cli`, which prints `error: <message>` on stderr and
exits 1 for a `ValidationError` (then one indented line per failed check), 2 for any other
`SeqLSTMError` (bad input, or training that cannot go on), and 130 or 143 on SIGINT or SIGTERM.
Never a traceback.
"""


class SeqLSTMError(Exception):
    """Base class: the CLI prints `error: <message>` and exits 2 (1 for a ValidationError)."""


class DataError(SeqLSTMError):
    """Malformed, missing or unusable data: the message names the file, line and field."""


class FetchError(SeqLSTMError):
    """A registry download failed or its checksum did not match."""


class ConfigError(SeqLSTMError):
    """An unknown config key, a wrong type or a bad value."""


class ArtifactError(SeqLSTMError):
    """A missing, corrupt or mismatched model artifact or export directory."""


class ValidationError(SeqLSTMError):
    """A produced result failed its check, rather than the input being bad: an export that onnx.checker
    rejects, that disagrees with torch beyond the tolerance, or whose int8 copy cannot be made or loses
    too much dev accuracy; `serve predict --verify` finding the export is not its artifact's or differs
    from torch. `failures` (when set) lists the failed checks; the CLI prints the message, then one
    indented line per failure, and exits 1."""


class TrainingError(SeqLSTMError):
    """Training cannot go on (e.g. too many non-finite losses in a row); the last checkpoint is intact."""


class WriteError(SeqLSTMError):
    """A file could not be written (a full disk, a quota, a read-only mount): the message names the file,
    which the operating system's own message does not."""


class ClusterError(SeqLSTMError):
    """A Ray cluster (`serve ray --address`) cannot be joined, or the job made no progress on it for too long."""
